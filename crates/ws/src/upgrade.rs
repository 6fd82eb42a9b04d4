//! Upgrading a request inside hyper or axum, so one port serves both pages
//! and WebSockets: an HTTP/1.1 `GET` with `Upgrade: websocket`, answered
//! 101, or an HTTP/2 extended `CONNECT` (RFC 8441), answered 200 — route
//! both methods to the handler (and enable the extended CONNECT in hyper's
//! HTTP/2 settings) and browsers open WebSockets on the page's own HTTP/2
//! connection.
//!
//! ```no_run
//! use axum::{Router, routing::get, extract::Request, response::IntoResponse};
//!
//! async fn echo(req: Request) -> impl IntoResponse {
//!     let server = duplex::ServerBuilder::new();
//!     match duplex::upgrade::upgrade(req, &server) {
//!         Ok((response, upgrading)) => {
//!             tokio::spawn(async move {
//!                 let Ok(mut ws) = upgrading.await else { return };
//!                 while let Some(Ok(msg)) = ws.recv().await {
//!                     if msg.is_data() && ws.feed(msg).await.is_err() { break }
//!                 }
//!             });
//!             response
//!         }
//!         Err(rejection) => rejection,
//!     }
//! }
//! let app: Router = Router::new().route("/echo", get(echo).connect(echo));
//! ```

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};

use duplex_proto::handshake::server::Accepted;

use http::{Request, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{Error, Result};
use crate::server::ServerBuilder;
use crate::socket::WebSocket;

/// The stream of an upgraded hyper connection, or of an HTTP/2 stream.
///
/// On HTTP/2, hyper takes every write whole (it copies it into its own
/// queue, a few writes deep per stream), so a large message would leave
/// the socket's output buffer, and with it the memory budget's view, in
/// one write. Writes there are cut to [`HTTP2_WRITE`]: what hyper holds
/// per stream stays small, and the rest stays in the socket's buffer,
/// charged.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> duplex::Result<()> {
/// # use hyper_util::rt::TokioIo;
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let url = format!("ws://{}/", listener.local_addr()?);
/// # let client = tokio::spawn(async move {
/// #     let mut ws = duplex::connect(&url).await?;
/// #     ws.send("hi").await?;
/// #     ws.recv().await; // until the server is done
/// #     Ok::<_, duplex::Error>(())
/// # });
/// # let (tx, mut upgrades) = tokio::sync::mpsc::unbounded_channel();
/// # let service = hyper::service::service_fn(move |req| {
/// #     let (response, pending) = duplex::upgrade::upgrade(req, &Default::default()).unwrap();
/// #     tx.send(pending).unwrap();
/// #     async move { Ok::<_, std::convert::Infallible>(response) }
/// # });
/// # let (tcp, _) = listener.accept().await?;
/// # let http = hyper::server::conn::http1::Builder::new();
/// # tokio::spawn(http.serve_connection(TokioIo::new(tcp), service).with_upgrades());
/// use duplex::{WebSocket, upgrade::Upgraded};
/// let pending = upgrades.recv().await.unwrap(); // what the handler got from `upgrade`
/// let mut ws: WebSocket<Upgraded> = pending.await?;
/// assert_eq!(ws.recv().await.unwrap()?.as_text(), Some("hi"));
/// # drop(client);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Upgraded {
    io: TokioIo<hyper::upgrade::Upgraded>,
    /// The most bytes one write hands to hyper.
    max_write: usize,
}

/// The most bytes one write hands to hyper on an HTTP/2 stream.
pub const HTTP2_WRITE: usize = 16 << 10;

impl Upgraded {
    /// hyper's upgraded connection or stream.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # use hyper_util::rt::TokioIo;
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let url = format!("ws://{}/", listener.local_addr()?);
    /// # let client = tokio::spawn(async move {
    /// #     let mut ws = duplex::connect(&url).await?;
    /// #     ws.send("hi").await?;
    /// #     ws.recv().await; // until the server is done
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// # let (tx, mut upgrades) = tokio::sync::mpsc::unbounded_channel();
    /// # let service = hyper::service::service_fn(move |req| {
    /// #     let (response, pending) = duplex::upgrade::upgrade(req, &Default::default()).unwrap();
    /// #     tx.send(pending).unwrap();
    /// #     async move { Ok::<_, std::convert::Infallible>(response) }
    /// # });
    /// # let (tcp, _) = listener.accept().await?;
    /// # let http = hyper::server::conn::http1::Builder::new();
    /// # tokio::spawn(http.serve_connection(TokioIo::new(tcp), service).with_upgrades());
    /// let ws = upgrades.recv().await.unwrap().await?; // a WebSocket<Upgraded>
    /// let hyper_io = ws.get_ref().get_ref(); // hyper's stream, under the socket
    /// assert!(format!("{hyper_io:?}").contains("Upgraded"));
    /// # drop(client);
    /// # Ok(()) }
    /// ```
    pub fn get_ref(&self) -> &TokioIo<hyper::upgrade::Upgraded> {
        &self.io
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = buf.len().min(self.max_write);
        Pin::new(&mut self.io).poll_write(cx, &buf[..n])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.max_write == usize::MAX {
            return Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        }
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        self.poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        self.max_write == usize::MAX && self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A connection (or HTTP/2 stream) hyper is about to hand over; `.await`
/// it for the WebSocket.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> duplex::Result<()> {
/// # use hyper_util::rt::TokioIo;
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let url = format!("ws://{}/", listener.local_addr()?);
/// # let client = tokio::spawn(async move {
/// #     let mut ws = duplex::connect(&url).await?;
/// #     ws.send("hi").await?;
/// #     ws.recv().await; // until the server is done
/// #     Ok::<_, duplex::Error>(())
/// # });
/// # let (tx, mut upgrades) = tokio::sync::mpsc::unbounded_channel();
/// # let service = hyper::service::service_fn(move |req| {
/// #     let (response, pending) = duplex::upgrade::upgrade(req, &Default::default()).unwrap();
/// #     tx.send(pending).unwrap();
/// #     async move { Ok::<_, std::convert::Infallible>(response) }
/// # });
/// # let (tcp, _) = listener.accept().await?;
/// # let http = hyper::server::conn::http1::Builder::new();
/// # tokio::spawn(http.serve_connection(TokioIo::new(tcp), service).with_upgrades());
/// let pending: duplex::upgrade::PendingUpgrade = upgrades.recv().await.unwrap();
/// let mut ws = pending.await?; // once hyper has sent the 101 and let go
/// assert_eq!(ws.recv().await.unwrap()?.as_text(), Some("hi"));
/// # drop(client);
/// # Ok(()) }
/// ```
pub struct PendingUpgrade {
    on_upgrade: OnUpgrade,
    accepted: Accepted,
    server: ServerBuilder,
    /// An HTTP/2 stream, not a whole connection.
    over_http2: bool,
}

impl IntoFuture for PendingUpgrade {
    type Output = Result<WebSocket<Upgraded>>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let upgraded = self
                .on_upgrade
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e)))?;
            let max_write = if self.over_http2 {
                HTTP2_WRITE
            } else {
                usize::MAX
            };
            let io = Upgraded {
                io: TokioIo::new(upgraded),
                max_write,
            };
            Ok(self.server.open(io, &self.accepted))
        })
    }
}

/// Validates an upgrade request: an HTTP/1.1 upgrade, or an HTTP/2
/// extended CONNECT (its `:protocol` read from hyper's
/// [`Protocol`](hyper::ext::Protocol) extension). On success returns the
/// response to send back through hyper (101, or 200 on HTTP/2) and a
/// [`PendingUpgrade`] that resolves to the WebSocket once hyper hands over
/// the connection or stream; on failure, the 4xx response (with a one-line
/// reason) to send instead.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # use hyper_util::rt::TokioIo;
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let url = format!("ws://{}/", listener.local_addr()?);
/// let service = hyper::service::service_fn(|req| async move {
///     let server = duplex::ServerBuilder::new();
///     let (response, pending) = match duplex::upgrade::upgrade(req, &server) {
///         Ok(upgrading) => upgrading,
///         Err(rejection) => return Ok(rejection), // a 4xx with a one-line reason
///     };
///     tokio::spawn(async move { pending.await?.send("hello from hyper").await });
///     Ok::<_, std::convert::Infallible>(response) // 101: hyper hands the connection over
/// });
/// # tokio::spawn(async move {
/// #     let (tcp, _) = listener.accept().await?;
/// #     let http = hyper::server::conn::http1::Builder::new();
/// #     http.serve_connection(TokioIo::new(tcp), service).with_upgrades().await
/// #         .map_err(std::io::Error::other)
/// # });
/// let mut ws = duplex::connect(&url).await?;
/// assert_eq!(ws.recv().await.unwrap()?.as_text(), Some("hello from hyper"));
/// # Ok(()) }
/// ```
#[allow(clippy::result_large_err)] // a rejection is the response itself; boxing it helps no one
pub fn upgrade<B>(
    mut req: Request<B>,
    server: &ServerBuilder,
) -> std::result::Result<(Response<String>, PendingUpgrade), Response<String>> {
    let accepted = if req.method() == http::Method::CONNECT {
        let protocol = req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .map(hyper::ext::Protocol::as_str);
        server.accept_connect_request(&req, protocol)
    } else {
        server.accept_request(&req)
    };
    let accepted = accepted.map_err(|e| e.response())?;
    let Some(on_upgrade) = req.extensions_mut().remove::<OnUpgrade>() else {
        let resp = Response::builder()
            .status(500)
            .body("this server cannot upgrade connections (no hyper upgrade support)\n".to_owned())
            .expect("static response");
        return Err(resp);
    };
    let (parts, ()) = accepted.response.clone().into_parts();
    let response = Response::from_parts(parts, String::new());
    Ok((
        response,
        PendingUpgrade {
            on_upgrade,
            accepted,
            server: server.clone(),
            over_http2: req.version() == http::Version::HTTP_2,
        },
    ))
}
