//! The exit statuses `duplex connect` and `duplex listen` promise to
//! scripts, and the sorting of every error into one of them with a message
//! that says what went wrong and what to try.

use std::fmt;
use std::io;

use duplex::{CloseCode, Error, HandshakeError, ResponseError, TlsErrorKind};

/// How `duplex connect` / `duplex listen` ended. The numbers are part of
/// the command-line interface: scripts rely on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Closed normally (by either side), `--count` reached, or input ended.
    Ok,
    /// Anything not covered below.
    Failure,
    /// Bad options: an invalid URL, header, file or value.
    Usage,
    /// The server could not be reached (name not found, connection
    /// refused, unreachable), or `listen` could not bind its address.
    Connect,
    /// The proxy could not be reached, or refused the tunnel.
    Proxy,
    /// TLS failed: certificate not trusted, wrong name, expired, not TLS.
    Tls,
    /// The server answered, but did not accept the WebSocket upgrade.
    Handshake,
    /// The peer broke the WebSocket protocol or sent a message over
    /// `--max-message-size`.
    Protocol,
    /// A timeout: connecting, the handshake, or a keepalive pong.
    Timeout,
    /// The peer closed with an error code (not 1000/1001), or the
    /// connection was lost without a closing handshake (1006).
    Closed,
    /// Interrupted by Ctrl-C (SIGINT) or SIGTERM.
    Interrupted,
}

impl Status {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Failure => 1,
            Self::Usage => 2,
            Self::Connect => 3,
            Self::Proxy => 4,
            Self::Tls => 5,
            Self::Handshake => 6,
            Self::Protocol => 7,
            Self::Timeout => 8,
            Self::Closed => 9,
            Self::Interrupted => 130,
        }
    }

    /// A one-word name, used as `kind` in `--json` error events.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failure => "error",
            Self::Usage => "usage",
            Self::Connect => "connect",
            Self::Proxy => "proxy",
            Self::Tls => "tls",
            Self::Handshake => "handshake",
            Self::Protocol => "protocol",
            Self::Timeout => "timeout",
            Self::Closed => "closed",
            Self::Interrupted => "interrupted",
        }
    }
}

impl From<Status> for std::process::ExitCode {
    fn from(status: Status) -> Self {
        Self::from(status.code())
    }
}

/// An error sorted into its exit status, with the message to show.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The exit status it leads to.
    pub status: Status,
    /// What went wrong and what to try, without the `duplex:` prefix.
    pub message: String,
    /// Whether trying again later may succeed (`--reconnect` does).
    pub transient: bool,
}

impl Failure {
    /// A failure with this status and message; transient if the status
    /// usually is.
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        let transient = matches!(
            status,
            Status::Connect | Status::Timeout | Status::Closed | Status::Protocol | Status::Proxy
        );
        Self {
            status,
            message: message.into(),
            transient,
        }
    }

    /// A usage error (exit status 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Status::Usage, message)
    }

    fn permanent(mut self) -> Self {
        self.transient = false;
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Sorts an error from opening a connection (TCP, proxy, TLS, handshake).
pub fn connecting(err: &Error) -> Failure {
    match err {
        Error::Url(e) => Failure::usage(e.to_string()),
        Error::Io(e) => io_connecting(e),
        Error::Proxy(e) => {
            let f = Failure::new(Status::Proxy, format!("proxy: {e}"));
            if e.is_transient() { f } else { f.permanent() }
        }
        Error::Tls(e) => Failure::new(Status::Tls, format!("TLS: {e}{}", tls_hint(e.kind()))),
        Error::Resolve { .. } => {
            Failure::new(Status::Connect, format!("{err} — check the host name"))
        }
        Error::Handshake(h) => handshake(h),
        Error::HandshakeTimeout(d) => Failure::new(
            Status::Timeout,
            format!(
                "the server did not complete the WebSocket handshake within {} — is it overloaded, or not a WebSocket server?",
                humantime::format_duration(*d)
            ),
        ),
        other => Failure::new(Status::Failure, other.to_string()),
    }
}

fn io_connecting(e: &io::Error) -> Failure {
    let text = e.to_string();
    match e.kind() {
        io::ErrorKind::TimedOut => Failure::new(
            Status::Timeout,
            format!("{text} — check the address, or allow more time with --connect-timeout"),
        ),
        io::ErrorKind::ConnectionRefused => Failure::new(
            Status::Connect,
            format!("{text} — is the server running? check the host and port"),
        ),
        _ => Failure::new(Status::Connect, text),
    }
}

fn tls_hint(kind: TlsErrorKind) -> &'static str {
    match kind {
        TlsErrorKind::NameMismatch => {
            " — the certificate does not name this host: connect with a host name it lists, or skip verification with --insecure (unsafe)"
        }
        TlsErrorKind::UnknownIssuer => {
            " — the certificate's issuer is not trusted: trust its CA with --cacert FILE, or skip verification with --insecure (unsafe)"
        }
        TlsErrorKind::Expired => {
            " — the certificate has expired (or this machine's clock is wrong)"
        }
        TlsErrorKind::NotTls => {
            " — the server does not speak TLS on this port: for a plain server use ws://"
        }
        _ => "",
    }
}

fn handshake(h: &HandshakeError) -> Failure {
    match h {
        HandshakeError::Response { error, body } => {
            let said = body
                .trim()
                .lines()
                .next()
                .filter(|l| !l.is_empty())
                .map(|l| format!("\n  the server said: {l}"))
                .unwrap_or_default();
            match error {
                ResponseError::Status(status) => {
                    let code = status.as_u16();
                    let how = match code {
                        401 | 403 => " with --user USER:PASS or -H 'Authorization: ...'",
                        400 => " (see the request with -v)",
                        _ => "",
                    };
                    let f = Failure::new(
                        Status::Handshake,
                        format!("the server answered {status} — {}{how}{said}", duplex::status_hint(*status)),
                    );
                    Failure {
                        transient: matches!(code, 408 | 429 | 500..=599),
                        ..f
                    }
                }
                ResponseError::UnexpectedProtocol(p) => Failure::new(
                    Status::Handshake,
                    format!("the server chose subprotocol {p:?}, which was not offered — offer it with --subprotocol {p}"),
                )
                .permanent(),
                other => Failure::new(
                    Status::Handshake,
                    format!("{other} — is this a WebSocket endpoint?{said}"),
                )
                .permanent(),
            }
        }
        HandshakeError::Eof => Failure {
            transient: true,
            ..Failure::new(
                Status::Handshake,
                "the server closed the connection during the handshake — is it a WebSocket server? (for a TLS server use wss://)",
            )
        },
        HandshakeError::Head(e) => Failure::new(
            Status::Handshake,
            format!("unreadable handshake response: {e} — is this an HTTP server? (for a TLS server use wss://)"),
        )
        .permanent(),
        other => Failure::new(Status::Handshake, format!("handshake failed: {other}")),
    }
}

/// Sorts an error that ended an open connection; `peer` names the other
/// end ("server" or "client").
pub fn open(err: &Error, peer: &str) -> Failure {
    match err {
        Error::Protocol(p) => {
            let code = p.close_code();
            let hint = if code == CloseCode::TOO_BIG {
                " — raise --max-message-size to accept larger messages"
            } else {
                ""
            };
            Failure::new(
                Status::Protocol,
                format!("protocol error from the {peer}: {p}; closed with {code}{hint}"),
            )
        }
        Error::AbnormalClosure => Failure::new(
            Status::Closed,
            format!("the {peer} dropped the connection without a close frame (1006)"),
        ),
        Error::Io(e) => Failure::new(
            Status::Closed,
            format!("connection to the {peer} lost: {e}"),
        ),
        Error::KeepaliveTimeout(d) => Failure::new(
            Status::Timeout,
            format!(
                "the {peer} stopped answering pings (no pong within {}); closed with 1011",
                humantime::format_duration(*d)
            ),
        ),
        Error::IdleTimeout(d) => Failure::new(
            Status::Timeout,
            format!(
                "nothing received for {}; closed with 1001",
                humantime::format_duration(*d)
            ),
        ),
        Error::Closed => Failure::new(Status::Closed, "the connection is closed"),
        other => Failure::new(Status::Failure, other.to_string()),
    }
}

/// The status of a connection the peer closed with `code`.
pub fn closed_by_peer(code: Option<CloseCode>) -> Status {
    match code.map(|c| c.0) {
        None | Some(1000 | 1001) => Status::Ok,
        Some(_) => Status::Closed,
    }
}

#[cfg(test)]
mod tests {
    use duplex::TlsError;

    use super::*;

    #[test]
    fn codes_are_distinct() {
        let all = [
            Status::Ok,
            Status::Failure,
            Status::Usage,
            Status::Connect,
            Status::Proxy,
            Status::Tls,
            Status::Handshake,
            Status::Protocol,
            Status::Timeout,
            Status::Closed,
            Status::Interrupted,
        ];
        let mut codes: Vec<u8> = all.iter().map(|s| s.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }

    #[test]
    fn refused_is_a_connect_failure_with_a_hint() {
        let e = Error::Io(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"));
        let f = connecting(&e);
        assert_eq!(f.status, Status::Connect);
        assert!(f.message.contains("is the server running"), "{f}");
        assert!(f.transient);
    }

    #[test]
    fn an_unknown_host_name_is_a_connect_failure_with_a_hint() {
        let e = Error::Resolve {
            host: "nowhere.invalid".into(),
            error: io::Error::other("failed to lookup address information"),
        };
        let f = connecting(&e);
        assert_eq!(f.status, Status::Connect);
        assert!(
            f.message.contains("nowhere.invalid") && f.message.contains("check the host name"),
            "{f}"
        );
    }

    #[test]
    fn refused_proxy_credentials_are_not_retried() {
        let e = Error::from(duplex::ProxyError::new(
            duplex::ProxyErrorKind::Credentials,
            "407",
        ));
        let f = connecting(&e);
        assert_eq!(f.status, Status::Proxy);
        assert!(!f.transient);
    }

    #[test]
    fn name_mismatch_suggests_a_listed_name() {
        let f = connecting(&Error::from(TlsError::new(
            TlsErrorKind::NameMismatch,
            "handshake with 127.0.0.1 failed: invalid peer certificate: certificate not valid for name \"127.0.0.1\"",
        )));
        assert_eq!(f.status, Status::Tls);
        assert!(f.message.contains("--insecure"), "{f}");
        assert!(!f.transient);
    }

    #[test]
    fn normal_closes_are_success() {
        assert_eq!(closed_by_peer(None), Status::Ok);
        assert_eq!(closed_by_peer(Some(CloseCode::NORMAL)), Status::Ok);
        assert_eq!(closed_by_peer(Some(CloseCode::GOING_AWAY)), Status::Ok);
        assert_eq!(closed_by_peer(Some(CloseCode(4000))), Status::Closed);
    }
}
