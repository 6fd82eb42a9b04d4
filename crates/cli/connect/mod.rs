//! `duplex connect URL`: a WebSocket client for people and scripts.
//!
//! On a terminal it is interactive (line editing, history, `/commands`,
//! timestamps and direction markers). With pipes it sends one message per
//! line of stdin and prints one received message per line, so it composes
//! with shell tools; `--json` reports every event as a JSON object. It can
//! reconnect with backoff, re-sending `--init` each time, and its exit
//! status says how it ended (see `exit.rs`).

mod client;
mod command;
mod interactive;
mod verbose;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use duplex::{CloseCode, CloseFrame, HandshakeInfo, MaybeTlsStream, Message, WebSocket};

use crate::conversation::event::{Event, Opened};
use crate::conversation::input;
use crate::conversation::output::{Console, Encoding, Format, Mode, Sink};
use crate::conversation::session::{self, End, Progress, Rules};
use crate::conversation::signal::Interrupt;
use crate::conversation::units::{self, Wait};
use crate::exit::{self, Failure, Status};

const EXAMPLES: &str = "\
Examples:
  duplex connect ws://127.0.0.1:8080/echo                  interactive (on a terminal)
  printf 'a\\nb\\n' | duplex connect ws://127.0.0.1:8080/echo --count 2
  duplex connect wss://example.com/feed --init '{\"subscribe\":\"ticks\"}' --reconnect --json
  duplex connect -v --compress -H 'Authorization: Bearer abc' wss://example.com/ws
  duplex connect --proxy socks5h://127.0.0.1:1080 wss://example.com/ws
  head -c 1M /dev/urandom | duplex connect --binary ws://127.0.0.1:8080/echo > copy

Exit status:
  0 closed normally, --count reached, or input ended    5 TLS failed (certificate, name, not TLS)
  1 other error                                          6 handshake refused (e.g. 404, 401)
  2 bad options                                          7 protocol error from the server
  3 cannot connect (refused, unknown host)               8 timeout (connect, handshake, keepalive)
  4 proxy failed or refused                              9 closed by the server with an error code, or lost
  130 interrupted (Ctrl-C)";

/// Options of `duplex connect`.
#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct ConnectArgs {
    /// The server: ws://host[:port]/path or wss://host[:port]/path
    /// (http:// and https:// are taken as ws:// and wss://).
    pub url: String,

    /// Add a request header, curl style: -H 'Authorization: Bearer abc'.
    /// Repeatable.
    #[arg(
        short = 'H',
        long,
        value_name = "NAME: VALUE",
        help_heading = "Handshake"
    )]
    pub header: Vec<String>,
    /// Offer a subprotocol (Sec-WebSocket-Protocol). Repeat it or separate
    /// names with commas, most preferred first.
    #[arg(long, value_name = "NAME", help_heading = "Handshake")]
    pub subprotocol: Vec<String>,
    /// Send an Origin header (some servers check it).
    #[arg(long, value_name = "URL", help_heading = "Handshake")]
    pub origin: Option<String>,
    /// HTTP Basic credentials, sent as an Authorization header.
    #[arg(
        short = 'u',
        long,
        value_name = "USER:PASSWORD",
        help_heading = "Handshake"
    )]
    pub user: Option<String>,
    /// Offer permessage-deflate compression (RFC 7692). -v or --json shows
    /// whether the server accepted it.
    #[arg(long, help_heading = "Handshake")]
    pub compress: bool,

    /// Open the WebSocket over HTTP/2 (RFC 8441): auto (for wss://, when
    /// TLS chooses HTTP/2 and the server enables WebSockets on it, as
    /// browsers do), always (or fail saying why), never (HTTP/1.1).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "never",
        help_heading = "Handshake"
    )]
    pub http2: duplex::http2::Http2Mode,

    /// Send stdin as binary messages (each read of up to 64 KiB is one
    /// message) and write received messages as raw bytes with no separator:
    /// a byte pipe.
    #[arg(long, help_heading = "Messages")]
    pub binary: bool,
    /// Print received binary messages as base64, one per line.
    #[arg(long, conflicts_with = "hex", help_heading = "Messages")]
    pub base64: bool,
    /// Print received binary messages as hex, one per line.
    #[arg(long, help_heading = "Messages")]
    pub hex: bool,
    /// A text message to send first, on every connection (a login or a
    /// subscription). Repeatable; sent in order. With --reconnect it is sent
    /// again after each reconnect.
    #[arg(long, value_name = "TEXT", help_heading = "Messages")]
    pub init: Vec<String>,
    /// Close and exit 0 once N messages have arrived. Until then the
    /// connection stays open even after stdin ends.
    #[arg(long, value_name = "N", help_heading = "Messages")]
    pub count: Option<u64>,
    /// Once stdin has ended, keep the connection open until SECS pass
    /// without traffic, then close (default: close as soon as stdin ends).
    /// `inf` keeps it open until the server closes.
    #[arg(long, value_name = "SECS", value_parser = units::wait, help_heading = "Messages")]
    pub wait: Option<Wait>,
    /// The largest message accepted (e.g. 65536, 64K, 16M); a bigger one
    /// closes the connection with 1009 (exit 7).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = units::size, help_heading = "Messages")]
    pub max_message_size: usize,
    /// Send a ping after SECS without traffic; if no pong comes back within
    /// 20 s, close with 1011 and exit 8.
    #[arg(long, value_name = "SECS", value_parser = units::duration, help_heading = "Messages")]
    pub ping_interval: Option<Duration>,

    /// The proxy: http://[user:pass@]host:port (HTTP CONNECT),
    /// socks5://[user:pass@]host:port (names resolved here) or socks5h://
    /// (resolved by the proxy). Default: https_proxy (wss://) or http_proxy
    /// (ws://), then all_proxy, skipping hosts listed in no_proxy.
    #[arg(long, value_name = "URL", help_heading = "Connection")]
    pub proxy: Option<String>,
    /// Ignore the *_proxy environment variables: connect directly.
    #[arg(long, conflicts_with = "proxy", help_heading = "Connection")]
    pub no_proxy: bool,
    /// For wss://, trust only the CA certificates in this PEM file instead
    /// of the system's (curl's --cacert).
    #[arg(long, value_name = "FILE", help_heading = "Connection")]
    pub cacert: Option<PathBuf>,
    /// INSECURE: do not verify the server's TLS certificate. The traffic is
    /// encrypted but anyone on the path can read and change it. For tests
    /// against self-signed servers only.
    #[arg(short = 'k', long, help_heading = "Connection")]
    pub insecure: bool,
    /// How long the TCP connect, proxy tunnel and TLS together, and then the
    /// WebSocket handshake, may each take (exit 8 past it).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = units::duration, help_heading = "Connection")]
    pub connect_timeout: Duration,
    /// When the server closes or the connection fails, connect again with
    /// exponential backoff and re-send the --init messages. Not after we
    /// close (stdin ended, --count, /close, Ctrl-C), nor after errors that
    /// retrying cannot fix (bad URL, TLS, 4xx).
    #[arg(long, help_heading = "Connection")]
    pub reconnect: bool,
    /// The first --reconnect delay; it doubles after each failed attempt,
    /// up to 30 s, and starts over once a connection opens.
    #[arg(long, value_name = "SECS", default_value = "0.5", value_parser = units::duration, help_heading = "Connection")]
    pub reconnect_delay: Duration,
    /// With --reconnect: give up after N failed attempts in a row
    /// (default: never).
    #[arg(long, value_name = "N", help_heading = "Connection")]
    pub max_reconnects: Option<u32>,

    /// Print every event as one JSON object per line on stdout: open,
    /// message (direction in/out, type text/binary, data; binary data in
    /// base64, or hex with --hex), ping, pong, close (code, reason,
    /// initiator), error (kind, message, exit_code), reconnect.
    #[arg(long, help_heading = "Output")]
    pub json: bool,
    /// Show the connection, TLS and the handshake request and response
    /// headers on stderr the way curl -v does, and control frames.
    #[arg(short = 'v', long, help_heading = "Output")]
    pub verbose: bool,
    /// No notices on stderr (errors are still printed).
    #[arg(short = 'q', long, help_heading = "Output")]
    pub quiet: bool,
}

/// The longest pause between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Runs `duplex connect`.
pub fn run(args: ConnectArgs) -> Status {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("duplex: cannot start: {e}");
            return Status::Failure;
        }
    };
    runtime.block_on(connect(args))
}

async fn connect(args: ConnectArgs) -> Status {
    let interactive =
        !args.json && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let format = Format {
        mode: if args.json {
            Mode::Json
        } else if interactive {
            Mode::Interactive
        } else {
            Mode::Plain
        },
        raw_stream: args.binary,
        encoding: Encoding::chosen(args.base64, args.hex),
        verbose: args.verbose,
    };
    let plain_console = Arc::new(Console::new(args.quiet));
    let plain_sink = Sink::console(
        plain_console.clone(),
        Format {
            mode: if args.json { Mode::Json } else { Mode::Plain },
            ..format
        },
        "client",
    );
    let client = match client::build(&args) {
        Ok(c) => c,
        Err(f) => {
            plain_sink.fail(&f).await;
            return f.status;
        }
    };
    if args.insecure {
        warn_insecure();
    }
    let (mut input, sink, prompt) = if interactive {
        match interactive::start(args.quiet) {
            Ok((input, p)) => {
                let sink = Sink::console(p.console.clone(), format, "client");
                (input, sink, Some(p))
            }
            Err(f) => {
                plain_sink.fail(&f).await;
                return f.status;
            }
        }
    } else {
        (input::stdin(args.binary), plain_sink, None)
    };
    let status = converse(&args, &client, &mut input, &sink).await;
    if let Some(p) = prompt {
        p.finish();
    }
    status
}

/// Connects (and reconnects) and runs conversations until one ends for good.
async fn converse(
    args: &ConnectArgs,
    client: &duplex::ClientBuilder,
    input: &mut input::Input,
    sink: &Sink,
) -> Status {
    let console = sink.console_ref().clone();
    let rules = rules_of(args);
    let proxy = client::proxy(args).unwrap_or_default();
    let mut interrupt = Interrupt::watch();
    let mut progress = Progress::default();
    let mut failures: u32 = 0;
    let mut greeted = false;
    loop {
        if args.verbose {
            verbose::connecting(&console, &args.url, &proxy);
        }
        let attempt = tokio::select! {
            r = client.connect_with_info(&args.url) => r,
            () = interrupt.wait() => return Status::Interrupted,
        };
        let failure = match attempt {
            Ok((ws, info)) => {
                failures = 0;
                if args.verbose {
                    verbose::opened(&console, &ws, &info, args.insecure);
                }
                sink.emit(&Event::Open(&opened(&args.url, &ws, &info)))
                    .await;
                if console.is_interactive() && !greeted {
                    greeted = true;
                    console.notice("type a message and press Enter to send it; /help lists commands, Ctrl-D quits");
                }
                let end =
                    session::run(ws, input, sink, &rules, &mut progress, &mut interrupt).await;
                let outcome = session::report(&end, sink).await;
                if matches!(end, End::Local { .. }) || !args.reconnect {
                    return outcome.status;
                }
                outcome
            }
            Err(e) => {
                let f = exit::connecting(&e);
                sink.fail(&f).await;
                failures += 1;
                if let Some(status) = gives_up(args, &f, failures, &console) {
                    return status;
                }
                f
            }
        };
        if !failure.transient {
            return failure.status;
        }
        let delay = backoff(args.reconnect_delay, failures);
        sink.emit(&Event::Reconnect {
            attempt: failures + 1,
            delay,
        })
        .await;
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = interrupt.wait() => return Status::Interrupted,
        }
    }
}

/// What a conversation does besides relaying: `--count`, `--wait`,
/// `--init`, and a normal close on Ctrl-C.
fn rules_of(args: &ConnectArgs) -> Rules {
    Rules {
        count: args.count,
        wait: args.wait,
        init: args
            .init
            .iter()
            .map(|t| Message::text(t.as_str()))
            .collect(),
        on_interrupt: CloseFrame::new(CloseCode::NORMAL, ""),
    }
}

/// The connection as the output shows it.
fn opened(url: &str, ws: &WebSocket<MaybeTlsStream>, info: &HandshakeInfo) -> Opened {
    Opened {
        url: url.to_owned(),
        peer: ws.get_ref().peer_addr(),
        protocol: ws.protocol().map(str::to_owned),
        extensions: info
            .response
            .headers()
            .get("sec-websocket-extensions")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        compressed: ws.is_compressed(),
    }
}

/// After a failed connection attempt (`failures` in a row): the exit
/// status, if we stop trying.
fn gives_up(args: &ConnectArgs, f: &Failure, failures: u32, console: &Console) -> Option<Status> {
    if !args.reconnect || !f.transient {
        return Some(f.status);
    }
    if args.max_reconnects.is_some_and(|max| failures > max) {
        console.error(&format!(
            "giving up after {failures} failed attempts in a row"
        ));
        return Some(f.status);
    }
    None
}

/// The delay before the next attempt after `failures` failed ones in a row.
fn backoff(first: Duration, failures: u32) -> Duration {
    first
        .saturating_mul(
            1u32.checked_shl(failures.saturating_sub(1).min(16))
                .unwrap_or(u32::MAX),
        )
        .min(MAX_BACKOFF.max(first))
}

/// `--insecure` is said loudly, every time.
fn warn_insecure() {
    let text = "WARNING: --insecure: the server's TLS certificate is NOT verified. \
                Anyone on the network path can read and change this connection. Use it for tests only.";
    if std::io::stderr().is_terminal() {
        eprintln!("duplex: \x1b[1;31m{text}\x1b[0m");
    } else {
        eprintln!("duplex: {text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_thirty_seconds() {
        let first = Duration::from_millis(500);
        let delays: Vec<u64> = (0..9)
            .map(|n| backoff(first, n).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [500, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]
        );
    }
}
