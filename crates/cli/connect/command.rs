//! The interactive prompt's commands: `/ping`, `/close [code] [reason]`,
//! `/binary <hex|@file>` and friends. A line that is not a command is sent
//! as a text message; `//` at the start sends a literal `/`.

use bytes::Bytes;
use duplex::{CloseCode, CloseFrame, Message};

use crate::conversation::input::Outgoing;

/// The help shown by `/help`.
pub const HELP: &str = "\
commands:
  /ping [text]              send a ping (the pong shows the round trip time)
  /pong [text]              send an unsolicited pong
  /binary <hex|@file>       send a binary message: hex digits, or a file's bytes
  /text <text>              send text verbatim (also: start a line with //)
  /close [code] [reason]    close the connection (default 1000)
  /quit                     close normally and exit (also Ctrl-D)
  /help                     this help
any other line is sent as a text message";

/// What a typed line asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// Send this.
    Send(Outgoing),
    /// Show the help.
    Help,
    /// Nothing to do (an empty line).
    Nothing,
    /// A mistake, explained.
    Invalid(String),
}

impl PartialEq for Outgoing {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Message(a), Self::Message(b)) => a == b,
            (Self::Close(a), Self::Close(b)) => a == b,
            _ => false,
        }
    }
}

/// Parses one line typed at the prompt.
pub fn parse(line: &str) -> Command {
    if line.is_empty() {
        return Command::Nothing;
    }
    if let Some(literal) = line.strip_prefix("//") {
        return send(Message::text(format!("/{literal}")));
    }
    let Some(rest) = line.strip_prefix('/') else {
        return send(Message::text(line));
    };
    let (name, arg) = match rest.split_once(char::is_whitespace) {
        Some((n, a)) => (n, a.trim_start()),
        None => (rest, ""),
    };
    match name {
        "ping" => match control_payload(arg) {
            Ok(p) => send(Message::Ping(p)),
            Err(e) => Command::Invalid(e),
        },
        "pong" => match control_payload(arg) {
            Ok(p) => send(Message::Pong(p)),
            Err(e) => Command::Invalid(e),
        },
        "text" => send(Message::text(arg)),
        "binary" | "bin" => match binary(arg) {
            Ok(bytes) => send(Message::binary(bytes)),
            Err(e) => Command::Invalid(e),
        },
        "close" => match close(arg) {
            Ok(frame) => Command::Send(Outgoing::Close(frame)),
            Err(e) => Command::Invalid(e),
        },
        "quit" | "exit" | "q" => Command::Send(Outgoing::Close(Some(CloseFrame::new(
            CloseCode::NORMAL,
            "",
        )))),
        "help" | "h" | "?" => Command::Help,
        other => Command::Invalid(format!(
            "unknown command /{other}: type /help for the list (start the line with // to send a text beginning with /)"
        )),
    }
}

fn send(msg: Message) -> Command {
    Command::Send(Outgoing::Message(msg))
}

/// A ping or pong payload: at most 125 bytes.
fn control_payload(arg: &str) -> Result<Bytes, String> {
    if arg.len() > 125 {
        return Err(format!(
            "a ping or pong carries at most 125 bytes; this one has {}",
            arg.len()
        ));
    }
    Ok(Bytes::copy_from_slice(arg.as_bytes()))
}

/// `/binary` argument: `@path` for a file's bytes, else hex digits
/// (spaces, `:` and a `0x` prefix allowed).
fn binary(arg: &str) -> Result<Vec<u8>, String> {
    if let Some(path) = arg.strip_prefix('@') {
        return std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"));
    }
    if arg.is_empty() {
        return Err("usage: /binary <hex digits> or /binary @file".into());
    }
    let digits: String = arg
        .trim_start_matches("0x")
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    hex::decode(&digits)
        .map_err(|e| format!("not hex ({e}); write e.g. /binary 48 65 6c 6c 6f, or /binary @file"))
}

/// `/close` arguments: `[code] [reason]`.
fn close(arg: &str) -> Result<Option<CloseFrame>, String> {
    if arg.is_empty() {
        return Ok(Some(CloseFrame::new(CloseCode::NORMAL, "")));
    }
    let (code, reason) = match arg.split_once(char::is_whitespace) {
        Some((c, r)) => (c, r.trim_start()),
        None => (arg, ""),
    };
    let code: u16 = code
        .parse()
        .map_err(|_| format!("{code:?} is not a close code; usage: /close [code] [reason]"))?;
    let code = CloseCode(code);
    if !code.is_sendable() {
        return Err(format!(
            "close code {code} may not be sent; use 1000-1003, 1007-1014 or 3000-4999"
        ));
    }
    if reason.len() > duplex::proto::close::MAX_REASON_LEN {
        return Err(format!(
            "the reason is {} bytes; a close frame carries at most {}",
            reason.len(),
            duplex::proto::close::MAX_REASON_LEN
        ));
    }
    Ok(Some(CloseFrame::new(code, reason)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_and_escapes_are_text() {
        assert_eq!(parse("hello"), send(Message::text("hello")));
        assert_eq!(parse("//ping"), send(Message::text("/ping")));
        assert_eq!(parse("/text /x y"), send(Message::text("/x y")));
        assert_eq!(parse(""), Command::Nothing);
    }

    #[test]
    fn ping_binary_and_close() {
        assert_eq!(parse("/ping"), send(Message::Ping(Bytes::new())));
        assert_eq!(
            parse("/ping hi"),
            send(Message::Ping(Bytes::from_static(b"hi")))
        );
        assert_eq!(
            parse("/binary 0x01 ff"),
            send(Message::binary(vec![1u8, 255]))
        );
        assert_eq!(
            parse("/close 4000 bye now"),
            Command::Send(Outgoing::Close(Some(CloseFrame::new(
                CloseCode(4000),
                "bye now"
            ))))
        );
        assert_eq!(
            parse("/close"),
            Command::Send(Outgoing::Close(Some(CloseFrame::new(
                CloseCode::NORMAL,
                ""
            ))))
        );
    }

    #[test]
    fn mistakes_are_explained() {
        for bad in [
            "/close 1006",
            "/close abc",
            "/binary zz",
            "/binary",
            "/nope",
        ] {
            assert!(matches!(parse(bad), Command::Invalid(_)), "{bad}");
        }
        let long = format!("/ping {}", "x".repeat(126));
        assert!(matches!(parse(&long), Command::Invalid(_)));
    }
}
