//! Where events go and how they look: plain lines on stdout for pipes,
//! one JSON object per line with `--json`, timestamped lines with
//! direction markers in interactive mode, or raw bytes into a command's
//! stdin (`listen --exec`). Diagnostics go to stderr, or above the prompt
//! when a line editor owns the terminal.

use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use duplex::Message;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::conversation::event::{Direction, Event, Opened, Side};
use crate::exit::Failure;

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Received messages only, one per line (or raw bytes).
    Plain,
    /// One JSON object per event.
    Json,
    /// Human-readable lines with timestamps and direction markers.
    Interactive,
}

/// How binary messages are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// As they are (in `--json` and interactive mode: base64 and hex).
    Raw,
    /// Base64.
    Base64,
    /// Lower-case hex.
    Hex,
}

impl Encoding {
    /// What `--base64` and `--hex` ask for (`--base64` wins; the flags
    /// conflict anyway).
    pub fn chosen(base64: bool, hex: bool) -> Self {
        if base64 {
            Encoding::Base64
        } else if hex {
            Encoding::Hex
        } else {
            Encoding::Raw
        }
    }
}

/// Output settings shared by everything a command prints.
#[derive(Debug, Clone, Copy)]
pub struct Format {
    /// Plain, JSON or interactive.
    pub mode: Mode,
    /// `--binary`: messages are a byte stream, written with no separator.
    pub raw_stream: bool,
    /// How binary messages are shown.
    pub encoding: Encoding,
    /// `-v`: control frames and lifecycle on stderr in plain mode.
    pub verbose: bool,
}

/// A function that prints a line above an active line editor.
pub type TerminalPrinter = Box<dyn FnMut(String) + Send>;

/// The terminal: stdout, stderr, and the line editor when there is one.
pub struct Console {
    editor: Option<Mutex<TerminalPrinter>>,
    color: bool,
    quiet: bool,
}

impl Console {
    /// A console for plain or JSON output.
    pub fn new(quiet: bool) -> Self {
        Self {
            editor: None,
            color: false,
            quiet,
        }
    }

    /// A console whose lines go through a line editor's printer.
    pub fn with_editor(printer: TerminalPrinter, quiet: bool) -> Self {
        let color =
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && io::stdout().is_terminal();
        Self {
            editor: Some(Mutex::new(printer)),
            color,
            quiet,
        }
    }

    /// Writes bytes to stdout and flushes them (so pipes see each message
    /// at once). Exits quietly if stdout was closed (`| head -1`).
    pub fn stdout(&self, bytes: &[u8]) {
        let mut out = io::stdout().lock();
        if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
            if e.kind() == io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }

    /// Prints a human-readable line: above the prompt, or on stdout.
    pub fn line(&self, mut line: String) {
        line.push('\n');
        match &self.editor {
            Some(editor) => (editor.lock().unwrap_or_else(|e| e.into_inner()))(line),
            None => self.stdout(line.as_bytes()),
        }
    }

    /// A diagnostic: on stderr, or (dimmed) above the prompt.
    pub fn diag(&self, line: &str) {
        self.to_stderr("2", line);
    }

    fn to_stderr(&self, sgr: &str, line: &str) {
        match &self.editor {
            Some(editor) => {
                let line = self.paint(sgr, line);
                (editor.lock().unwrap_or_else(|e| e.into_inner()))(format!("{line}\n"));
            }
            None => {
                let mut err = io::stderr().lock();
                let _ = writeln!(err, "{line}");
            }
        }
    }

    /// A `duplex: ...` notice, unless `--quiet`.
    pub fn notice(&self, message: &str) {
        if !self.quiet {
            self.diag(&format!("duplex: {message}"));
        }
    }

    /// An error: always shown, in red on a terminal.
    pub fn error(&self, message: &str) {
        self.to_stderr("31", &format!("duplex: {message}"));
    }

    /// Whether the line editor owns the terminal.
    pub fn is_interactive(&self) -> bool {
        self.editor.is_some()
    }

    /// Wraps `text` in an SGR color when colors are on.
    pub fn paint(&self, sgr: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{sgr}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// Which connection an event belongs to, when there are several (`listen`).
#[derive(Debug, Clone)]
pub struct Tag {
    /// Connection number, from 1.
    pub id: u64,
    /// The client's address.
    pub peer: std::net::SocketAddr,
}

/// Where one connection's events go.
#[derive(Clone)]
pub struct Sink {
    target: Target,
    format: Format,
    console: Arc<Console>,
    tag: Option<Arc<Tag>>,
    /// What this end is called: "client" (`connect`) or "server" (`listen`).
    local: &'static str,
    remote: &'static str,
    lifecycle: bool,
}

#[derive(Clone)]
enum Target {
    Console,
    Pipe(mpsc::Sender<Bytes>),
}

impl Sink {
    /// Events printed on the console.
    pub fn console(console: Arc<Console>, format: Format, local: &'static str) -> Self {
        Self {
            target: Target::Console,
            format,
            console,
            tag: None,
            local,
            remote: if local == "client" {
                "server"
            } else {
                "client"
            },
            lifecycle: false,
        }
    }

    /// Received messages written into a pipe (a command's stdin), as plain
    /// output would print them; the rest goes to stderr with `-v`.
    pub fn pipe(&self, tx: mpsc::Sender<Bytes>) -> Self {
        Self {
            target: Target::Pipe(tx),
            format: Format {
                mode: Mode::Plain,
                ..self.format
            },
            ..self.clone()
        }
    }

    /// The same sink, for the connection `tag`.
    pub fn tagged(&self, tag: Tag) -> Self {
        Self {
            tag: Some(Arc::new(tag)),
            ..self.clone()
        }
    }

    /// The console.
    pub fn console_ref(&self) -> &Arc<Console> {
        &self.console
    }

    /// What the other end is called ("server" or "client").
    pub fn remote_name(&self) -> &'static str {
        self.remote
    }

    /// Reports a failure: on stderr (unless interactive) and, with `--json`
    /// or interactively, as an `error` event.
    pub async fn fail(&self, failure: &Failure) {
        if self.format.mode != Mode::Interactive || matches!(self.target, Target::Pipe(_)) {
            self.console
                .error(&format!("{}{}", self.who(), failure.message));
        }
        if matches!(self.target, Target::Console) && self.format.mode != Mode::Plain {
            self.emit(&Event::Error(failure)).await;
        }
    }

    /// `[id peer] ` for a connection of `listen`, else nothing.
    pub fn who(&self) -> String {
        self.tag
            .as_ref()
            .map(|t| format!("[{} {}] ", t.id, t.peer))
            .unwrap_or_default()
    }

    /// Reports one event. Waits if the pipe it writes to is full.
    pub async fn emit(&self, event: &Event<'_>) {
        match (&self.target, self.format.mode) {
            (Target::Pipe(tx), _) => {
                if let Some(bytes) = self.plain(event) {
                    let _ = tx.send(bytes).await;
                } else {
                    self.side_note(event);
                }
            }
            (Target::Console, Mode::Plain) => {
                if let Some(bytes) = self.plain(event) {
                    self.console.stdout(&bytes);
                } else {
                    self.side_note(event);
                }
            }
            (Target::Console, Mode::Json) => {
                let mut line = self.json(event).to_string();
                line.push('\n');
                self.console.stdout(line.as_bytes());
            }
            (Target::Console, Mode::Interactive) => {
                if let Event::Message { typed: true, .. } = event {
                    return;
                }
                let time = chrono::Local::now().format("%H:%M:%S%.3f").to_string();
                let line = format!(
                    "{} {}",
                    self.console.paint("2", &time),
                    self.human_colored(event)
                );
                self.console.line(line);
            }
        }
    }

    /// In plain mode, what is not a received message goes to stderr: with
    /// `-v` everything, else reconnects and (for `listen`) connections
    /// opening and closing.
    fn side_note(&self, event: &Event<'_>) {
        if self.format.verbose {
            self.console.diag(&format!("* {}", self.human(event)));
        } else if matches!(event, Event::Reconnect { .. })
            || (self.lifecycle && matches!(event, Event::Open(_) | Event::Close { .. }))
        {
            self.console.notice(&self.human(event));
        }
    }

    /// Also note connections opening and closing on stderr in plain mode.
    pub fn with_lifecycle_notices(mut self) -> Self {
        self.lifecycle = true;
        self
    }

    /// The bytes plain output writes for a received data message.
    fn plain(&self, event: &Event<'_>) -> Option<Bytes> {
        let Event::Message {
            dir: Direction::In,
            msg,
            ..
        } = event
        else {
            return None;
        };
        let sep: &[u8] = if self.format.raw_stream { b"" } else { b"\n" };
        let mut out = Vec::new();
        match msg {
            Message::Text(t) => out.extend_from_slice(t.as_bytes()),
            Message::Binary(b) => match self.format.encoding {
                Encoding::Raw => out.extend_from_slice(b),
                Encoding::Base64 => {
                    out.extend_from_slice(
                        base64::engine::general_purpose::STANDARD
                            .encode(b)
                            .as_bytes(),
                    );
                    out.extend_from_slice(b"\n");
                    return Some(out.into());
                }
                Encoding::Hex => {
                    out.extend_from_slice(hex::encode(b).as_bytes());
                    out.extend_from_slice(b"\n");
                    return Some(out.into());
                }
            },
            _ => return None,
        }
        out.extend_from_slice(sep);
        Some(out.into())
    }

    fn human_colored(&self, event: &Event<'_>) -> String {
        let c = &self.console;
        let line = self.human(event);
        match event {
            Event::Message { dir, msg, .. } => {
                let (marker, rest) = line.split_at(1);
                let marker = c.paint(if *dir == Direction::In { "32" } else { "34" }, marker);
                let rest = if msg.is_data() {
                    rest.to_owned()
                } else {
                    c.paint("36", rest)
                };
                format!("{marker}{rest}")
            }
            Event::Open(_) | Event::Reconnect { .. } => c.paint("33", &line),
            Event::Close {
                code: 1000 | 1001 | 1005,
                ..
            } => c.paint("33", &line),
            Event::Close { .. } | Event::Error(_) => c.paint("31", &line),
        }
    }

    /// A human-readable description of an event (no timestamp).
    fn human(&self, event: &Event<'_>) -> String {
        let who = self.who();
        let body = match event {
            Event::Open(o) => open_line(o, self.local),
            Event::Message { dir, msg, rtt, .. } => {
                format!("{} {}", dir.marker(), self.describe(msg, *rtt))
            }
            Event::Close {
                code,
                reason,
                initiator,
                clean,
            } => {
                let by = match initiator {
                    Side::Local => self.local,
                    Side::Remote => self.remote,
                };
                let reason = if reason.is_empty() {
                    String::new()
                } else {
                    format!(" {reason}")
                };
                let how = if *clean {
                    ""
                } else {
                    " (no closing handshake)"
                };
                format!("closed by the {by}: {code}{reason}{how}")
            }
            Event::Error(f) => format!("error: {f}"),
            Event::Reconnect { attempt, delay } => format!(
                "reconnecting in {} (attempt {attempt})",
                humantime::format_duration(*delay)
            ),
        };
        format!("{who}{body}")
    }

    fn describe(&self, msg: &Message, rtt: Option<Duration>) -> String {
        match msg {
            Message::Text(t) => t.to_string(),
            Message::Binary(b) => {
                let shown = match self.format.encoding {
                    Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(b),
                    Encoding::Hex | Encoding::Raw => hex_preview(b),
                };
                format!("[binary, {} bytes] {shown}", b.len())
            }
            Message::Ping(p) => format!("ping{}", payload_suffix(p)),
            Message::Pong(p) => {
                let rtt = rtt
                    .map(|d| format!(" ({:.1} ms)", d.as_secs_f64() * 1000.0))
                    .unwrap_or_default();
                format!("pong{}{rtt}", payload_suffix(p))
            }
            Message::Close(f) => match f {
                Some(f) => format!("close {} {}", f.code, f.reason),
                None => "close".into(),
            },
        }
    }

    /// One `--json` object.
    fn json(&self, event: &Event<'_>) -> Value {
        let mut obj = Map::new();
        obj.insert(
            "time".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .into(),
        );
        let fields = match event {
            Event::Open(o) => json!({
                "event": "open",
                "url": o.url,
                "peer": o.peer.map(|p| p.to_string()),
                "protocol": o.protocol,
                "extensions": o.extensions,
                "compressed": o.compressed,
            }),
            Event::Message { dir, msg, rtt, .. } => self.json_message(*dir, msg, *rtt),
            Event::Close {
                code,
                reason,
                initiator,
                clean,
            } => json!({
                "event": "close",
                "code": code,
                "reason": reason,
                "initiator": match initiator { Side::Local => self.local, Side::Remote => self.remote },
                "clean": clean,
            }),
            Event::Error(f) => json!({
                "event": "error",
                "kind": f.status.kind(),
                "message": f.message,
                "exit_code": f.status.code(),
            }),
            Event::Reconnect { attempt, delay } => json!({
                "event": "reconnect",
                "attempt": attempt,
                "delay_ms": delay.as_millis() as u64,
            }),
        };
        if let Value::Object(fields) = fields {
            obj.extend(fields);
        }
        if let Some(tag) = &self.tag {
            obj.insert("client".into(), tag.id.into());
            obj.insert("peer".into(), tag.peer.to_string().into());
        }
        Value::Object(obj)
    }

    fn json_message(&self, dir: Direction, msg: &Message, rtt: Option<Duration>) -> Value {
        let (event, kind, payload): (&str, Option<&str>, &[u8]) = match msg {
            Message::Text(t) => ("message", Some("text"), t.as_bytes()),
            Message::Binary(b) => ("message", Some("binary"), b),
            Message::Ping(p) => ("ping", None, p),
            Message::Pong(p) => ("pong", None, p),
            Message::Close(_) => ("close", None, b""),
        };
        let mut v = json!({ "event": event, "direction": dir.name() });
        let obj = v.as_object_mut().expect("an object");
        if let Some(kind) = kind {
            obj.insert("type".into(), kind.into());
        }
        let binary = matches!(msg, Message::Binary(_));
        match std::str::from_utf8(payload) {
            Ok(text) if !binary => {
                obj.insert("data".into(), text.into());
            }
            _ => {
                let (enc, data) = if self.format.encoding == Encoding::Hex {
                    ("hex", hex::encode(payload))
                } else {
                    (
                        "base64",
                        base64::engine::general_purpose::STANDARD.encode(payload),
                    )
                };
                obj.insert("data".into(), data.into());
                obj.insert("encoding".into(), enc.into());
            }
        }
        obj.insert("length".into(), payload.len().into());
        if let Some(rtt) = rtt {
            obj.insert("rtt_ms".into(), (rtt.as_secs_f64() * 1000.0).into());
        }
        v
    }
}

fn open_line(o: &Opened, local: &str) -> String {
    let mut extras = Vec::new();
    if o.compressed {
        extras.push("permessage-deflate".to_owned());
    }
    if let Some(p) = &o.protocol {
        extras.push(format!("subprotocol {p}"));
    }
    let extras = if extras.is_empty() {
        String::new()
    } else {
        format!(" ({})", extras.join(", "))
    };
    match o.peer {
        Some(peer) if local == "server" => format!("connection from {peer} for {}{extras}", o.url),
        Some(peer) => format!("connected to {} at {peer}{extras}", o.url),
        None => format!("connected to {}{extras}", o.url),
    }
}

fn payload_suffix(p: &[u8]) -> String {
    if p.is_empty() {
        return String::new();
    }
    match std::str::from_utf8(p) {
        Ok(s) => format!(" {s:?}"),
        Err(_) => format!(" 0x{}", hex::encode(p)),
    }
}

/// Hex of at most the first 1 KiB.
fn hex_preview(b: &[u8]) -> String {
    const MAX: usize = 1024;
    if b.len() <= MAX {
        hex::encode(b)
    } else {
        format!("{}… ({} more bytes)", hex::encode(&b[..MAX]), b.len() - MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(mode: Mode, raw_stream: bool, encoding: Encoding) -> Sink {
        Sink::console(
            Arc::new(Console::new(true)),
            Format {
                mode,
                raw_stream,
                encoding,
                verbose: false,
            },
            "client",
        )
    }

    fn incoming(msg: &Message) -> Event<'_> {
        Event::Message {
            dir: Direction::In,
            msg,
            typed: false,
            rtt: None,
        }
    }

    #[test]
    fn plain_lines_and_raw_streams() {
        let text = Message::text("a");
        let bin = Message::binary(vec![0u8, 255]);
        let lines = sink(Mode::Plain, false, Encoding::Raw);
        assert_eq!(lines.plain(&incoming(&text)).unwrap(), &b"a\n"[..]);
        assert_eq!(lines.plain(&incoming(&bin)).unwrap(), &b"\x00\xff\n"[..]);
        let raw = sink(Mode::Plain, true, Encoding::Raw);
        assert_eq!(raw.plain(&incoming(&bin)).unwrap(), &b"\x00\xff"[..]);
        let hex = sink(Mode::Plain, true, Encoding::Hex);
        assert_eq!(hex.plain(&incoming(&bin)).unwrap(), &b"00ff\n"[..]);
        let b64 = sink(Mode::Plain, false, Encoding::Base64);
        assert_eq!(b64.plain(&incoming(&bin)).unwrap(), &b"AP8=\n"[..]);
    }

    #[test]
    fn json_messages_carry_direction_type_and_data() {
        let s = sink(Mode::Json, false, Encoding::Raw);
        let v = s.json(&incoming(&Message::text("hé")));
        assert_eq!(v["event"], "message");
        assert_eq!(v["direction"], "in");
        assert_eq!(v["type"], "text");
        assert_eq!(v["data"], "hé");
        let v = s.json(&incoming(&Message::binary(vec![1u8, 2])));
        assert_eq!(
            (v["type"].as_str(), v["data"].as_str()),
            (Some("binary"), Some("AQI="))
        );
        assert_eq!(v["encoding"], "base64");
        let v = s.json(&Event::Close {
            code: 4000,
            reason: "bye",
            initiator: Side::Local,
            clean: true,
        });
        assert_eq!(
            (v["code"].as_u64(), v["reason"].as_str()),
            (Some(4000), Some("bye"))
        );
        assert_eq!(v["initiator"], "client");
    }
}
