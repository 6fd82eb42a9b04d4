//! The browser's copy of the hub protocol's facts: `crates/server/ui/
//! hub-protocol.js` is generated from the Rust definitions by [`module`],
//! and its TypeScript declarations, `hub-protocol.d.ts`, by
//! [`declarations`]; a test of duplex-server fails when a committed file
//! differs (run `DUPLEX_REGENERATE=1 cargo test -p duplex-server --lib
//! hub_protocol_js` to rewrite them). `duplex.js`, the JavaScript hub
//! client, imports it.

use std::fmt::Write;

use super::{
    CHANNEL_MAX_LEN, CHANNEL_PUNCTUATION, Command, ErrorCode, HISTORY_DEFAULT_LIMIT,
    HISTORY_MAX_LIMIT, HubClose, NAME_MAX_CHARS, PushKind, SESSION_MAX_LEN, SESSION_MIN_LEN, Since,
};

/// The source of `hub-protocol.js`.
pub fn module() -> String {
    let mut js = String::from(
        "// GENERATED from crates/hub (duplex-hub) by `DUPLEX_REGENERATE=1\n\
         // cargo test -p duplex-server --lib hub_protocol_js`: do not edit. The hub protocol's\n\
         // facts (docs/protocol.md), shared with the server and the CLI.\n\n",
    );
    let commands: Vec<&str> = example_commands().iter().map(Command::name).collect();
    names(
        &mut js,
        "The commands: the `cmd` of each.",
        "COMMANDS",
        commands,
    );
    let pushes = PushKind::ALL.map(PushKind::name);
    let doc = "The pushes: the `push` field of what the server sends unasked.";
    names(&mut js, doc, "PUSHES", pushes);
    let codes = ErrorCode::ALL.map(ErrorCode::name);
    names(
        &mut js,
        "The `code` of error replies.",
        "ERROR_CODES",
        codes,
    );
    let transient = ErrorCode::ALL
        .into_iter()
        .filter(|c| c.is_transient())
        .map(|c| format!("ERROR_CODES.{}", c.name().to_uppercase()));
    let doc = "Error codes after which the same command may succeed later, unchanged.";
    list(&mut js, doc, "TRANSIENT_ERROR_CODES", transient);
    close_codes(&mut js);
    limits(&mut js);
    js
}

/// `export const NAME = Object.freeze({ WIRE_NAME: "wire_name", ... });`
fn names<'a>(js: &mut String, doc: &str, name: &str, wire: impl IntoIterator<Item = &'a str>) {
    let _ = writeln!(js, "/** {doc} */");
    let _ = writeln!(js, "export const {name} = Object.freeze({{");
    for w in wire {
        let _ = writeln!(js, "  {}: {},", w.to_uppercase(), json_string(w));
    }
    js.push_str("});\n");
}

/// `export const NAME = Object.freeze([A, B]);`
fn list(js: &mut String, doc: &str, name: &str, items: impl Iterator<Item = String>) {
    let items: Vec<String> = items.collect();
    let _ = writeln!(js, "/** {doc} */");
    let _ = writeln!(
        js,
        "export const {name} = Object.freeze([{}]);",
        items.join(", ")
    );
}

/// `CLOSE`, `FINAL_CLOSE_CODES` and `CLOSE_MEANING`.
fn close_codes(js: &mut String) {
    js.push_str("/** The close codes the server ends a hub connection with. */\n");
    js.push_str("export const CLOSE = Object.freeze({\n");
    for c in HubClose::ALL {
        let _ = writeln!(js, "  {}: {},", c.name(), c.code().0);
    }
    js.push_str("});\n");
    let finals = HubClose::ALL
        .into_iter()
        .filter(|c| c.is_final())
        .map(|c| format!("CLOSE.{}", c.name()));
    let doc = "Close codes after which a client stops instead of reconnecting.";
    list(js, doc, "FINAL_CLOSE_CODES", finals);
    js.push_str("/** What each close code means, for a person. */\n");
    js.push_str("export const CLOSE_MEANING = Object.freeze({\n");
    for c in HubClose::ALL {
        let _ = writeln!(js, "  {}: {},", c.code().0, json_string(c.meaning()));
    }
    js.push_str("});\n");
}

/// The limits a client checks before it sends.
fn limits(js: &mut String) {
    js.push_str("/** `history`: publications returned without a `limit`, and at most. */\n");
    let _ = writeln!(
        js,
        "export const HISTORY_DEFAULT_LIMIT = {HISTORY_DEFAULT_LIMIT};"
    );
    let _ = writeln!(js, "export const HISTORY_MAX_LIMIT = {HISTORY_MAX_LIMIT};");
    js.push_str("/** Channel names: 1 to this many ASCII letters, digits or punctuation. */\n");
    let _ = writeln!(js, "export const CHANNEL_MAX_LENGTH = {CHANNEL_MAX_LEN};");
    let _ = writeln!(
        js,
        "export const CHANNEL_PUNCTUATION = {};",
        json_string(CHANNEL_PUNCTUATION)
    );
    js.push_str("/** The longest nickname, in characters (code points). */\n");
    let _ = writeln!(js, "export const NAME_MAX_CHARS = {NAME_MAX_CHARS};");
    js.push_str("/** `connect`'s `session` secret: this many letters, digits, `-` or `_`. */\n");
    let _ = writeln!(js, "export const SESSION_MIN_LENGTH = {SESSION_MIN_LEN};");
    let _ = writeln!(js, "export const SESSION_MAX_LENGTH = {SESSION_MAX_LEN};");
}

/// The source of `hub-protocol.d.ts`: the same facts as types.
pub fn declarations() -> String {
    let mut ts = String::from(
        "// GENERATED from crates/hub (duplex-hub) by `DUPLEX_REGENERATE=1\n\
         // cargo test -p duplex-server --lib hub_protocol_js`: do not edit. The types of\n\
         // hub-protocol.js.\n\n",
    );
    let commands: Vec<&str> = example_commands().iter().map(Command::name).collect();
    let pushes: Vec<&str> = PushKind::ALL.into_iter().map(PushKind::name).collect();
    let codes: Vec<&str> = ErrorCode::ALL.into_iter().map(ErrorCode::name).collect();
    for (doc, type_name, constant, names) in [
        ("A command's `cmd`.", "CommandName", "COMMANDS", &commands),
        ("A push's `push`.", "PushKind", "PUSHES", &pushes),
        (
            "An error reply's `code`.",
            "ServerErrorCode",
            "ERROR_CODES",
            &codes,
        ),
    ] {
        let union: Vec<String> = names.iter().map(|n| json_string(n)).collect();
        let _ = writeln!(ts, "/** {doc} */");
        let _ = writeln!(ts, "export type {type_name} = {};", union.join(" | "));
        let _ = writeln!(ts, "export declare const {constant}: Readonly<{{");
        for name in names.iter() {
            let _ = writeln!(ts, "  {}: {};", name.to_uppercase(), json_string(name));
        }
        ts.push_str("}>;\n");
    }
    ts.push_str("export declare const TRANSIENT_ERROR_CODES: readonly ServerErrorCode[];\n");
    ts.push_str("export declare const CLOSE: Readonly<{\n");
    for c in HubClose::ALL {
        let _ = writeln!(ts, "  {}: {};", c.name(), c.code().0);
    }
    ts.push_str("}>;\n");
    ts.push_str("export declare const FINAL_CLOSE_CODES: readonly number[];\n");
    ts.push_str("export declare const CLOSE_MEANING: Readonly<Record<number, string>>;\n");
    for constant in [
        "HISTORY_DEFAULT_LIMIT",
        "HISTORY_MAX_LIMIT",
        "CHANNEL_MAX_LENGTH",
        "NAME_MAX_CHARS",
        "SESSION_MIN_LENGTH",
        "SESSION_MAX_LENGTH",
    ] {
        let _ = writeln!(ts, "export declare const {constant}: number;");
    }
    ts.push_str("export declare const CHANNEL_PUNCTUATION: string;\n");
    ts
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// One command of each variant (the match makes adding a variant without
/// listing it here a compile error).
fn example_commands() -> Vec<Command> {
    use Command as C;
    let channel = String::new;
    let all = vec![
        C::Connect {
            token: None,
            name: None,
            session: None,
        },
        C::Subscribe {
            channel: channel(),
            since: Some(Since {
                epoch: String::new(),
                offset: 0,
            }),
            presence: None,
        },
        C::Unsubscribe { channel: channel() },
        C::Publish {
            channel: channel(),
            data: serde_json::Value::Null,
        },
        C::History {
            channel: channel(),
            limit: None,
            before: None,
            after: None,
        },
        C::Presence { channel: channel() },
        C::Typing { channel: channel() },
        C::Kick {
            channel: channel(),
            name: String::new(),
            ban: false,
        },
        C::Ping,
    ];
    for c in &all {
        match c {
            C::Connect { .. }
            | C::Subscribe { .. }
            | C::Unsubscribe { .. }
            | C::Publish { .. }
            | C::History { .. }
            | C::Presence { .. }
            | C::Typing { .. }
            | C::Kick { .. }
            | C::Ping => {}
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_protocol_js_names_are_the_wire_names() {
        for command in example_commands() {
            let encoded: serde_json::Value =
                serde_json::from_str(&crate::Request::new(1, command.clone()).encode()).unwrap();
            assert_eq!(encoded["cmd"], command.name());
        }
        let pushes: Vec<&str> = PushKind::ALL.into_iter().map(PushKind::name).collect();
        assert_eq!(
            pushes.len(),
            pushes
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len()
        );
    }
}
