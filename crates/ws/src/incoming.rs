//! The server's opening handshake in two steps: read the request, then
//! decide what to do with it — accept it, refuse it with a response of
//! your own, or hand the stream on, the bytes read put back in front (to
//! an HTTP server such as hyper, for a page or an HTTP/2 connection).
//!
//! [`ServerBuilder::accept`] is both steps with the builder's filter; a
//! server that routes by path reads once, then picks the settings
//! (limits, subprotocols) of the endpoint the request is for.

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use duplex_proto::handshake::head::{HeadError, read_request, write_response};
use duplex_proto::handshake::server::{Accepted, RequestError};
use http::{Request, Response, header};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, HandshakeError, Result};
use crate::handshake_io::read_head_into;
use crate::rewind::Rewind;
use crate::server::ServerBuilder;
use crate::socket::WebSocket;

/// An HTTP request read off a stream and not yet answered: the first step
/// of [`ServerBuilder::accept`], from [`ServerBuilder::read_request`].
///
/// ```no_run
/// # async fn run() -> duplex::Result<()> {
/// use duplex::ServerBuilder;
/// let chat = ServerBuilder::new().protocols(["chat.v1"]);
/// let feed = ServerBuilder::new().config(duplex::Config::default());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
/// let (tcp, _) = listener.accept().await?;
/// // Read with one builder's head limits and budget...
/// let incoming = chat.read_request(tcp).await?;
/// // ...then answer with the settings of the endpoint it asks for.
/// let ws = match incoming.request().uri().path() {
///     "/chat" => incoming.accept(&chat).await?,
///     "/feed" => incoming.accept(&feed).await?,
///     _ => {
///         let not_here = http::Response::builder().status(404).body("no WebSocket here\n".to_owned()).unwrap();
///         return incoming.reject(not_here).await;
///     }
/// };
/// # drop(ws); Ok(()) }
/// ```
#[derive(Debug)]
pub struct Incoming<S> {
    request: Request<()>,
    /// The head, then whatever the client sent right behind it (its first
    /// frames, possibly).
    buf: BytesMut,
    /// How many of `buf`'s bytes are the head.
    head_len: usize,
    stream: S,
    /// How long writing the answer may take: the reading builder's
    /// handshake timeout.
    timeout: Duration,
}

/// Why [`ServerBuilder::read_request`] read no request, and the stream,
/// unanswered: [`NoRequest::answer`] gives the standard answer (400, 431,
/// 408, 503) and closes; or hand [`NoRequest::into_stream`] to an HTTP
/// server, which sees every byte read. Converts into an [`Error`] with `?`
/// (dropping the stream unanswered).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> duplex::Result<()> {
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let addr = listener.local_addr()?;
/// # let url = format!("ws://{addr}/");
/// # use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// # let mut peer = tokio::net::TcpStream::connect(addr).await?;
/// # peer.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
/// let server = duplex::ServerBuilder::new();
/// let (tcp, _) = listener.accept().await?; // a peer that speaks HTTP/2 at once
/// let Err(no_request) = server.read_request(tcp).await else { panic!() };
/// let error = duplex::Error::from(no_request); // dropped unanswered
/// assert!(matches!(error, duplex::Error::Handshake(_)));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct NoRequest<S> {
    kind: NoRequestKind,
    stream: Rewind<S>,
}

/// What kept a request from being read.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> duplex::Result<()> {
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let addr = listener.local_addr()?;
/// # let url = format!("ws://{addr}/");
/// # use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// # let mut peer = tokio::net::TcpStream::connect(addr).await?;
/// # peer.write_all(b"hello\r\n\r\n").await?;
/// use duplex::NoRequestKind;
/// let (tcp, _) = listener.accept().await?; // a peer that sent "hello"
/// let Err(no) = duplex::ServerBuilder::new().read_request(tcp).await else { panic!() };
/// assert!(matches!(no.kind(), NoRequestKind::Unreadable(_)));
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum NoRequestKind {
    /// Not a head this parser reads: malformed, too large, or another
    /// protocol (an HTTP/2 preface, say).
    Unreadable(HeadError),
    /// No complete head within the handshake timeout (a slowloris, or a
    /// client that went quiet).
    TimedOut(Duration),
    /// The memory budget had no room for a long head.
    NoRoom,
    /// The peer closed the connection, or it failed, before a complete
    /// head.
    Gone(Option<io::Error>),
}

/// Seconds a client refused for want of memory is asked to wait.
const NO_ROOM_RETRY_SECS: u32 = 5;

impl<S> NoRequest<S> {
    /// What kept a request from being read.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// # let mut peer = tokio::net::TcpStream::connect(addr).await?;
    /// # peer.write_all(b"").await?;
    /// # peer.shutdown().await?;
    /// use duplex::NoRequestKind;
    /// let (tcp, _) = listener.accept().await?; // a peer that left at once
    /// let Err(no) = duplex::ServerBuilder::new().read_request(tcp).await else { panic!() };
    /// assert!(matches!(no.kind(), NoRequestKind::Gone(None)));
    /// # Ok(()) }
    /// ```
    pub fn kind(&self) -> &NoRequestKind {
        &self.kind
    }

    /// The stream, every byte read from it replayed first.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// # let mut peer = tokio::net::TcpStream::connect(addr).await?;
    /// # peer.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
    /// let (tcp, _) = listener.accept().await?; // an HTTP/2 client: not for us
    /// let Err(no) = duplex::ServerBuilder::new().read_request(tcp).await else { panic!() };
    /// let mut stream = no.into_stream(); // for an HTTP/2 server, every byte still there
    /// let mut preface = [0; 24];
    /// stream.read_exact(&mut preface).await?;
    /// assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    /// # Ok(()) }
    /// ```
    pub fn into_stream(self) -> Rewind<S> {
        self.stream
    }
}

impl<S> NoRequest<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Gives the standard answer and closes: an unreadable head gets its
    /// status (400, or 431 for one too large) and a one-line reason, a slow
    /// one `408`, one the budget has no room for `503` with `Retry-After`;
    /// a peer that left gets nothing. Returns the error to report. Each
    /// write is bounded by `timeout`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// # let mut peer = tokio::net::TcpStream::connect(addr).await?;
    /// # peer.write_all(b"hello\r\n\r\n").await?;
    /// use std::time::Duration;
    /// let (tcp, _) = listener.accept().await?; // a peer that sent "hello"
    /// let Err(no) = duplex::ServerBuilder::new().read_request(tcp).await else { panic!() };
    /// let error = no.answer(Duration::from_secs(1)).await; // answered, closed
    /// let mut answer = String::new();
    /// peer.read_to_string(&mut answer).await?;
    /// assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{error}");
    /// # Ok(()) }
    /// ```
    pub async fn answer(self, timeout: Duration) -> Error {
        let Self { kind, mut stream } = self;
        let answer = match &kind {
            NoRequestKind::Unreadable(error) => RequestError::Head(error.clone()).to_bytes(),
            NoRequestKind::TimedOut(_) => REQUEST_TIMEOUT.to_vec(),
            NoRequestKind::NoRoom => no_room(),
            NoRequestKind::Gone(_) => Vec::new(),
        };
        if !answer.is_empty() {
            let _ = tokio::time::timeout(timeout, async {
                stream.write_all(&answer).await?;
                stream.shutdown().await
            })
            .await;
        }
        kind.into()
    }
}

impl<S> From<NoRequest<S>> for Error {
    fn from(no: NoRequest<S>) -> Self {
        no.kind.into()
    }
}

impl From<NoRequestKind> for Error {
    fn from(kind: NoRequestKind) -> Self {
        match kind {
            NoRequestKind::Unreadable(error) => {
                HandshakeError::Request(RequestError::Head(error)).into()
            }
            NoRequestKind::TimedOut(after) => Error::HandshakeTimeout(after),
            NoRequestKind::NoRoom => Error::MemoryBudget,
            NoRequestKind::Gone(None) => HandshakeError::Eof.into(),
            NoRequestKind::Gone(Some(e)) => Error::Io(e),
        }
    }
}

impl ServerBuilder {
    /// Reads one request head off `stream`, within this builder's head
    /// limits, its handshake timeout and its memory budget (a head longer
    /// than 1 KiB is charged while it is read). Writes nothing: what to
    /// answer is the caller's choice.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/feed");
    /// # let client = tokio::spawn(async move { duplex::connect(&url).await });
    /// let server = duplex::ServerBuilder::new();
    /// let (tcp, _) = listener.accept().await?;
    /// let incoming = server.read_request(tcp).await?; // nothing answered yet
    /// assert_eq!(incoming.request().uri().path(), "/feed");
    /// let ws = incoming.accept(&server).await?; // now the 101
    /// # client.await.unwrap()?;
    /// # drop(ws);
    /// # Ok(()) }
    /// ```
    pub async fn read_request<S>(&self, mut stream: S) -> Result<Incoming<S>, NoRequest<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = self.get_config();
        let timeout = config.handshake_timeout;
        let mut buf = BytesMut::new();
        let reading = read_head_into(
            &mut stream,
            &mut buf,
            self.get_head_limits(),
            config.memory_budget.as_ref(),
            read_request,
        );
        let kind = match tokio::time::timeout(timeout, reading).await {
            Ok(Ok((request, head_len))) => {
                return Ok(Incoming {
                    request,
                    buf,
                    head_len,
                    stream,
                    timeout,
                });
            }
            Ok(Err(Error::Handshake(h))) => match *h {
                HandshakeError::Head(error) => NoRequestKind::Unreadable(error),
                _ => NoRequestKind::Gone(None),
            },
            Ok(Err(Error::Io(e))) => NoRequestKind::Gone(Some(e)),
            Ok(Err(Error::MemoryBudget)) => NoRequestKind::NoRoom,
            Ok(Err(_)) => NoRequestKind::Gone(None),
            Err(_) => NoRequestKind::TimedOut(timeout),
        };
        Err(NoRequest {
            kind,
            stream: Rewind::new(buf.freeze(), stream),
        })
    }
}

/// The answer to a head that took longer than the handshake timeout.
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

/// The answer to a head the memory budget has no room for.
fn no_room() -> Vec<u8> {
    const WHY: &str =
        "the server is short of memory (its memory budget is used up); try again later\n";
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: {NO_ROOM_RETRY_SECS}\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{WHY}",
        WHY.len(),
    )
    .into_bytes()
}

impl<S> Incoming<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// The request (its body, if any, is still on the stream).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/chat?room=1");
    /// # let client = tokio::spawn(async move { duplex::connect(&url).await });
    /// let server = duplex::ServerBuilder::new();
    /// let incoming = server.read_request(listener.accept().await?.0).await?;
    /// assert_eq!(incoming.request().uri(), "/chat?room=1");
    /// # incoming.accept(&server).await?;
    /// # client.await.unwrap()?;
    /// # Ok(()) }
    /// ```
    pub fn request(&self) -> &Request<()> {
        &self.request
    }

    /// Accepts the upgrade with `server`'s settings: runs its filter, then
    /// answers `101` and opens the socket. A refused or invalid upgrade is
    /// answered (the filter's response, or a 4xx with a one-line reason),
    /// closed, and reported as [`Error::Handshake`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/chat");
    /// # let client = tokio::spawn(async move {
    /// #     duplex::ClientBuilder::new().protocols(["chat.v1"]).connect(&url).await
    /// # });
    /// use duplex::ServerBuilder;
    /// let (chat, other) = (ServerBuilder::new().protocols(["chat.v1"]), ServerBuilder::new());
    /// let incoming = other.read_request(listener.accept().await?.0).await?;
    /// let endpoint = if incoming.request().uri() == "/chat" { &chat } else { &other };
    /// let ws = incoming.accept(endpoint).await?; // with the settings of the endpoint
    /// assert_eq!(ws.protocol(), Some("chat.v1"));
    /// # client.await.unwrap()?;
    /// # Ok(()) }
    /// ```
    pub async fn accept(self, server: &ServerBuilder) -> Result<WebSocket<S>> {
        if let Some(filter) = server.get_filter() {
            if let Err(response) = filter(&self.request) {
                let status = response.status();
                self.reject(response).await?;
                return Err(HandshakeError::Refused(status).into());
            }
        }
        match server.accept_request(&self.request) {
            Ok(accepted) => self.open(server, &accepted).await,
            Err(err) => {
                let _ = self.reject(err.response()).await;
                Err(HandshakeError::Request(err).into())
            }
        }
    }

    /// Answers `101` as `accepted` says (from
    /// [`ServerBuilder::accept_request`] on [`Incoming::request`]) and
    /// opens the socket with `server`'s settings. For a server that looks
    /// at why an upgrade is invalid before deciding who answers it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # let client = tokio::spawn(async move { duplex::connect(&url).await });
    /// let server = duplex::ServerBuilder::new();
    /// let incoming = server.read_request(listener.accept().await?.0).await?;
    /// match server.accept_request(incoming.request()) {
    ///     Ok(accepted) => assert!(incoming.open(&server, &accepted).await.is_ok()),
    ///     Err(why) => incoming.reject(why.response()).await?, // or answer it otherwise
    /// }
    /// assert!(client.await.unwrap().is_ok());
    /// # Ok(()) }
    /// ```
    pub async fn open(
        mut self,
        server: &ServerBuilder,
        accepted: &Accepted,
    ) -> Result<WebSocket<S>> {
        let mut out = Vec::with_capacity(256);
        write_response(&accepted.response, &mut out);
        self.write_within_timeout(&out).await?;
        self.buf.advance(self.head_len);
        let mut ws = server.open(self.stream, accepted);
        // Frames the client sent right behind its request.
        ws.preload(&self.buf);
        Ok(ws)
    }

    /// Answers with `response` (its body as the content, `Content-Length`
    /// set) and closes.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # let client = tokio::spawn(async move { duplex::connect(&url).await });
    /// let server = duplex::ServerBuilder::new();
    /// let incoming = server.read_request(listener.accept().await?.0).await?;
    /// let forbidden = http::Response::builder().status(403).body("members only\n".into());
    /// incoming.reject(forbidden.unwrap()).await?;
    /// let refused = client.await.unwrap().unwrap_err();
    /// assert!(refused.to_string().contains("members only"));
    /// # Ok(()) }
    /// ```
    pub async fn reject(mut self, mut response: Response<String>) -> Result<()> {
        let len = response.body().len();
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, len.into());
        let mut out = Vec::with_capacity(256 + len);
        write_response(&response, &mut out);
        out.extend_from_slice(response.body().as_bytes());
        self.write_within_timeout(&out).await?;
        let _ = self.stream.shutdown().await;
        Ok(())
    }

    /// The request, and the stream with what the client sent after its
    /// head replayed first: for a proxy or a bridge that answers the
    /// handshake itself and then carries the bytes.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// # let mut peer = tokio::net::TcpStream::connect(addr).await?;
    /// # peer.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n\x81\x80").await?;
    /// let (tcp, _) = listener.accept().await?;
    /// let incoming = duplex::ServerBuilder::new().read_request(tcp).await?;
    /// let (request, stream) = incoming.into_parts(); // for a proxy that answers itself
    /// let (after_head, _tcp) = stream.into_parts();
    /// assert_eq!(request.headers()["host"], "a.test");
    /// assert_eq!(after_head, b"\x81\x80"[..]); // what the client sent behind its head
    /// # Ok(()) }
    /// ```
    pub fn into_parts(mut self) -> (Request<()>, Rewind<S>) {
        self.buf.advance(self.head_len);
        (self.request, Rewind::new(self.buf.freeze(), self.stream))
    }

    /// Gives up the request unanswered: the stream, with every byte read
    /// from it (the head and what followed) replayed first, for an HTTP
    /// server to serve as if it had read them itself.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// # let mut peer = tokio::net::TcpStream::connect(addr).await?;
    /// # peer.write_all(b"GET /page HTTP/1.1\r\nHost: a.test\r\n\r\n").await?;
    /// let (tcp, _) = listener.accept().await?;
    /// let incoming = duplex::ServerBuilder::new().read_request(tcp).await?;
    /// assert!(incoming.request().headers().get("upgrade").is_none()); // a page, not a socket
    /// let mut stream = incoming.into_stream(); // for an HTTP server: the head replayed
    /// let mut head = [0; 14];
    /// stream.read_exact(&mut head).await?;
    /// assert_eq!(&head, b"GET /page HTTP");
    /// # Ok(()) }
    /// ```
    pub fn into_stream(self) -> Rewind<S> {
        Rewind::new(self.buf.freeze(), self.stream)
    }

    async fn write_within_timeout(&mut self, bytes: &[u8]) -> Result<()> {
        match tokio::time::timeout(self.timeout, self.stream.write_all(bytes)).await {
            Ok(written) => Ok(written?),
            Err(_) => Err(Error::HandshakeTimeout(self.timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::MemoryBudget;

    const UPGRADE: &str = "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n";

    /// Writes `bytes` in the pieces `cuts` makes of them, then closes.
    fn write_in_pieces(
        mut to: tokio::io::DuplexStream,
        bytes: Vec<u8>,
        cuts: Vec<usize>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut at = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                let cut = cut.clamp(at, bytes.len());
                if to.write_all(&bytes[at..cut]).await.is_err() {
                    return;
                }
                at = cut;
            }
        })
    }

    /// However a request and what follows it arrive, a request handed on
    /// unanswered replays exactly the bytes sent. Seeded: a failure names
    /// its seed.
    #[tokio::test]
    async fn a_request_handed_on_replays_every_byte_sent() {
        for seed in 0..200u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut sent = format!(
                "{UPGRADE}X-Pad: {}\r\n\r\n",
                "p".repeat(rng.random_range(0..3000))
            )
            .into_bytes();
            let head_len = sent.len();
            let tail: Vec<u8> = (0..rng.random_range(0..200))
                .map(|_| rng.random())
                .collect();
            sent.extend_from_slice(&tail);
            let mut cuts: Vec<usize> = (0..rng.random_range(0..6))
                .map(|_| rng.random_range(0..sent.len()))
                .collect();
            cuts.sort_unstable();
            let (client, server) = tokio::io::duplex(1 << 16);
            let writer = write_in_pieces(client, sent.clone(), cuts);
            let incoming = ServerBuilder::new()
                .read_request(server)
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: {:?}", e.kind()));
            assert_eq!(incoming.request().uri().path(), "/chat", "seed {seed}");
            assert_eq!(incoming.head_len, head_len, "seed {seed}");
            let mut replayed = Vec::new();
            writer.await.unwrap();
            incoming
                .into_stream()
                .read_to_end(&mut replayed)
                .await
                .unwrap();
            assert_eq!(replayed, sent, "seed {seed}");
        }
    }

    /// An HTTP/2 connection preface is not a head this parser reads: it is
    /// handed back whole, for an HTTP/2 server.
    #[tokio::test]
    async fn an_http2_preface_comes_back_unread() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(preface).await.unwrap();
        drop(client);
        let no = ServerBuilder::new().read_request(server).await.unwrap_err();
        assert!(
            matches!(no.kind(), NoRequestKind::Unreadable(_)),
            "{:?}",
            no.kind()
        );
        let mut replayed = Vec::new();
        no.into_stream().read_to_end(&mut replayed).await.unwrap();
        assert_eq!(replayed, preface);
    }

    /// A head slower than the handshake timeout is answered 408.
    #[tokio::test(start_paused = true)]
    async fn a_slow_head_is_answered_408() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b"GET /chat HTTP/1.1\r\n").await.unwrap();
        let reader = ServerBuilder::new().config(crate::Config {
            handshake_timeout: Duration::from_secs(3),
            ..crate::Config::default()
        });
        let no = reader.read_request(server).await.unwrap_err();
        assert!(matches!(no.kind(), NoRequestKind::TimedOut(t) if t.as_secs() == 3));
        let err = no.answer(Duration::from_secs(1)).await;
        assert!(matches!(err, Error::HandshakeTimeout(_)), "{err:?}");
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    }

    /// A long head is charged while it is read; one the budget has no room
    /// for is answered 503, and its charge is given back.
    #[tokio::test]
    async fn a_long_head_without_room_is_answered_503() {
        let budget = MemoryBudget::new(4 << 10);
        let reader = ServerBuilder::new()
            .config(crate::Config::default().with_memory_budget(budget.clone()));
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let long = format!("{UPGRADE}X-Pad: {}\r\n", "p".repeat(8000));
        client.write_all(long.as_bytes()).await.unwrap();
        let no = reader.read_request(server).await.unwrap_err();
        assert!(
            matches!(no.kind(), NoRequestKind::NoRoom),
            "{:?}",
            no.kind()
        );
        assert_eq!(budget.used(), 0);
        let err = no.answer(Duration::from_secs(1)).await;
        assert!(matches!(err, Error::MemoryBudget), "{err:?}");
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        assert!(answer.contains("Retry-After: 5"), "{answer}");
    }

    /// Read once, then accepted with the settings of the endpoint the
    /// request is for; the frames sent behind the request are kept.
    #[tokio::test]
    async fn the_endpoint_is_chosen_after_reading() {
        let reader = ServerBuilder::new();
        let chat = ServerBuilder::new().protocols(["chat.v1"]);
        let (mut client, server) = tokio::io::duplex(4096);
        let mut request = format!("{UPGRADE}Sec-WebSocket-Protocol: chat.v1\r\n\r\n").into_bytes();
        // A masked "hi" right behind the head.
        request.extend_from_slice(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]);
        client.write_all(&request).await.unwrap();
        let incoming = reader.read_request(server).await.unwrap();
        assert_eq!(incoming.request().uri().path(), "/chat");
        let mut ws = incoming.accept(&chat).await.unwrap();
        assert_eq!(ws.protocol(), Some("chat.v1"));
        let msg = ws.recv().await.unwrap().unwrap();
        assert_eq!(msg.as_text(), Some("hi"));
        let mut head = vec![0u8; 12];
        client.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 101");
    }

    /// A request refused with the caller's response gets it, with its
    /// length, and the connection is closed.
    #[tokio::test]
    async fn a_rejection_is_the_callers_response() {
        let (mut client, server) = tokio::io::duplex(4096);
        client
            .write_all(format!("{UPGRADE}\r\n").as_bytes())
            .await
            .unwrap();
        let incoming = ServerBuilder::new().read_request(server).await.unwrap();
        let not_here = Response::builder()
            .status(404)
            .body("no WebSocket here\n".to_owned())
            .unwrap();
        incoming.reject(not_here).await.unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("content-length: 18"),
            "{answer}"
        );
        assert!(answer.ends_with("\r\n\r\nno WebSocket here\n"), "{answer}");
    }
}
