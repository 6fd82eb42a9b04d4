//! The browser pages' copy of these definitions: `crates/server/ui/
//! transfer-protocol.js` is generated from the Rust ones by [`module`],
//! and a test fails when the committed file differs (run
//! `DUPLEX_REGENERATE=1 cargo test -p duplex-transfer` to rewrite it).

use std::fmt::Write;

use crate::RelayClose;
use crate::chunk::{CHUNK_HEADER, DATA_PREFIX};
use crate::digest::FILE_LABEL;
use crate::limits::{FRAME_SLACK, MAX_CHUNK, MAX_FRAME, MAX_RECEIVER_FRAME, MIN_CHUNK};
use crate::peer_frame::{CHUNK_OVERHEAD, Kind, PEER_HEADER};
use crate::relay_message::RelayMessage;
use crate::seal::{IDENTITY, KEY_INFO, PROTOCOL, Space, TAG};

/// The source of `transfer-protocol.js`.
pub fn module() -> String {
    let mut js = String::from(
        "// GENERATED from crates/transfer (duplex-transfer) by `DUPLEX_REGENERATE=1 cargo test\n\
         // -p duplex-transfer`: do not edit. The relay protocol's facts, shared with the\n\
         // relay and the CLI; the protocol is in docs/transfer.md.\n\n",
    );
    js.push_str("/** Peer message kinds (the byte after the relay's 4-byte peer number). */\n");
    for kind in Kind::ALL {
        let _ = writeln!(js, "export const {} = {};", kind.name(), kind as u8);
    }
    let _ = writeln!(
        js,
        "/** Bytes of the peer number in front of every binary frame. */"
    );
    let _ = writeln!(js, "export const PEER_HEADER = {PEER_HEADER};");
    let _ = writeln!(
        js,
        "/** Bytes a data frame adds to the chunk: peer, kind, seq, file, index, tag. */"
    );
    let _ = writeln!(js, "export const CHUNK_OVERHEAD = {CHUNK_OVERHEAD};");
    end_to_end(&mut js);
    close_codes(&mut js);
    js.push_str("/** The relay's control messages (the `type` of each JSON text frame). */\n");
    js.push_str("export const RELAY_MESSAGES = Object.freeze([");
    let types: Vec<String> = example_messages()
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_str(&m.to_json()).expect("json");
            json_string(v["type"].as_str().expect("tagged"))
        })
        .collect();
    js.push_str(&types.join(", "));
    js.push_str("]);\n");
    js
}

/// The end-to-end layer's constants and the frame limits.
fn end_to_end(js: &mut String) {
    js.push_str(
        "/** The end-to-end layer (crates/transfer/src/seal.rs, chunk.rs, digest.rs). */
",
    );
    let _ = writeln!(js, "export const PROTOCOL = {PROTOCOL};");
    let _ = writeln!(
        js,
        "export const IDENTITY = {};",
        json_string(std::str::from_utf8(IDENTITY).expect("ASCII"))
    );
    let _ = writeln!(
        js,
        "export const KEY_INFO = {};",
        json_string(std::str::from_utf8(KEY_INFO).expect("ASCII"))
    );
    let _ = writeln!(
        js,
        "export const FILE_LABEL = {};",
        json_string(std::str::from_utf8(FILE_LABEL).expect("ASCII"))
    );
    let _ = writeln!(js, "export const TAG = {TAG};");
    let _ = writeln!(js, "export const CHUNK_HEADER = {CHUNK_HEADER};");
    let _ = writeln!(js, "export const DATA_PREFIX = {DATA_PREFIX};");
    let _ = writeln!(js, "export const SPACE_CONTROL = {};", Space::Control as u8);
    let _ = writeln!(js, "export const SPACE_DATA = {};", Space::Data as u8);
    let _ = writeln!(js, "export const MAX_CHUNK = {MAX_CHUNK};");
    let _ = writeln!(js, "export const MIN_CHUNK = {MIN_CHUNK};");
    let _ = writeln!(js, "export const FRAME_SLACK = {FRAME_SLACK};");
    let _ = writeln!(js, "/** Largest frame a receiver may send. */");
    let _ = writeln!(
        js,
        "export const MAX_RECEIVER_FRAME = {MAX_RECEIVER_FRAME};"
    );
    let _ = writeln!(js, "/** Largest binary frame the relay allows. */");
    let _ = writeln!(js, "export const MAX_FRAME = {MAX_FRAME};");
}

/// `CLOSE`, `FINAL_CLOSE_CODES` and `CLOSE_MEANING`.
fn close_codes(js: &mut String) {
    js.push_str("/** The relay's close codes. */\n");
    js.push_str("export const CLOSE = Object.freeze({\n");
    for c in RelayClose::ALL {
        let _ = writeln!(js, "  {}: {},", c.name(), c.code());
    }
    js.push_str("});\n");
    js.push_str("/** Close codes after which a client gives up instead of reconnecting. */\n");
    js.push_str("export const FINAL_CLOSE_CODES = Object.freeze([");
    let finals: Vec<String> = RelayClose::ALL
        .into_iter()
        .filter(|c| c.is_final())
        .map(|c| format!("CLOSE.{}", c.name()))
        .collect();
    js.push_str(&finals.join(", "));
    js.push_str("]);\n");
    js.push_str("/** What each close code means, for a user. */\n");
    js.push_str("export const CLOSE_MEANING = Object.freeze({\n");
    for c in RelayClose::ALL {
        let _ = writeln!(js, "  {}: {},", c.code(), json_string(c.meaning()));
    }
    js.push_str("});\n");
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// One message of each variant (the match makes adding a variant without
/// listing it here a compile error).
fn example_messages() -> Vec<RelayMessage> {
    use RelayMessage as M;
    let all = vec![
        M::Create {
            size: 0,
            nameplate: None,
            token: None,
        },
        M::Reattach {
            nameplate: 0,
            token: String::new(),
        },
        M::Join { nameplate: 0 },
        M::Created {
            nameplate: 0,
            token: String::new(),
            window: 0,
            max_frame: 0,
        },
        M::Joined {
            peer: 0,
            max_frame: 0,
        },
        M::PeerJoined { peer: 0 },
        M::PeerLeft { peer: 0 },
        M::Credit { peer: 0, bytes: 0 },
        M::Accept { peer: 0 },
        M::Drop {
            peer: 0,
            reason: String::new(),
        },
        M::Error {
            code: 0,
            message: String::new(),
        },
    ];
    for m in &all {
        match m {
            M::Create { .. }
            | M::Reattach { .. }
            | M::Join { .. }
            | M::Created { .. }
            | M::Joined { .. }
            | M::PeerJoined { .. }
            | M::PeerLeft { .. }
            | M::Credit { .. }
            | M::Accept { .. }
            | M::Drop { .. }
            | M::Error { .. } => {}
        }
    }
    all
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_browser_copy_is_up_to_date() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../server/ui/transfer-protocol.js"
        );
        let want = super::module();
        if std::env::var_os("DUPLEX_REGENERATE").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "{path} is out of date with crates/transfer: run `DUPLEX_REGENERATE=1 cargo test -p duplex-transfer`"
        );
    }
}
