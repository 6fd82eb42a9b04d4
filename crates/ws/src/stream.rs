//! The client's transport: plain TCP, TLS over TCP, or a stream of an
//! HTTP/2 connection (RFC 8441).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream, with or without TLS, or an HTTP/2 stream over one.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> duplex::Result<()> {
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let addr = listener.local_addr()?;
/// # let url = format!("ws://{addr}/");
/// # tokio::spawn(async move {
/// #     let server = duplex::ServerBuilder::new();
/// #     let mut ws = server.accept(listener.accept().await?.0).await?;
/// #     while let Some(msg) = ws.recv().await {
/// #         let msg = msg?;
/// #         if msg.is_data() {
/// #             ws.send(msg).await?;
/// #         }
/// #     }
/// #     Ok::<_, duplex::Error>(())
/// # });
/// use duplex::MaybeTlsStream;
/// let ws = duplex::connect(&url).await?;
/// assert!(matches!(ws.get_ref(), MaybeTlsStream::Plain(_))); // ws://
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum MaybeTlsStream {
    /// `ws://`
    Plain(TcpStream),
    /// `wss://`
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// A stream of an HTTP/2 connection (see
    /// [`ClientBuilder::http2`](crate::ClientBuilder::http2)).
    Http2(Box<crate::H2Stream>),
}

impl MaybeTlsStream {
    /// The protocol TLS's ALPN chose, if any (`h2`, `http/1.1`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let url = format!("wss://{}/", listener.local_addr()?);
    /// # let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    /// # let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    /// # let tls = duplex::tls::server_config(cert_pem.as_bytes(), key_pem.as_bytes())?;
    /// # let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    /// # tokio::spawn(async move {
    /// #     let tls = acceptor.accept(listener.accept().await?.0).await?;
    /// #     let mut ws = duplex::accept(tls).await?;
    /// #     while let Some(Ok(_)) = ws.recv().await {}
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// use duplex::{ClientBuilder, tls};
    /// let config = tls::client_config_with_ca_only(cert_pem.as_bytes())?;
    /// let ws = ClientBuilder::new().tls_config(config).connect(&url).await?;
    /// assert_eq!(ws.get_ref().alpn_protocol(), Some(&b"http/1.1"[..]));
    /// # Ok(()) }
    /// ```
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match self {
            Self::Plain(_) | Self::Http2(_) => None,
            Self::Tls(s) => s.get_ref().1.alpn_protocol(),
        }
    }

    /// The TCP stream underneath; `None` for an HTTP/2 stream, whose
    /// connection is its driver's.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let server = duplex::ServerBuilder::new();
    /// #     let mut ws = server.accept(listener.accept().await?.0).await?;
    /// #     while let Some(msg) = ws.recv().await {
    /// #         let msg = msg?;
    /// #         if msg.is_data() {
    /// #             ws.send(msg).await?;
    /// #         }
    /// #     }
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// let ws = duplex::connect(&url).await?;
    /// let tcp = ws.get_ref().tcp().expect("not an HTTP/2 stream");
    /// assert!(tcp.nodelay()?); // duplex turns Nagle's algorithm off
    /// # Ok(()) }
    /// ```
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Self::Plain(s) => Some(s),
            Self::Tls(s) => Some(s.get_ref().0),
            Self::Http2(_) => None,
        }
    }

    /// The address of the other end of the TCP connection (the server, or
    /// the proxy).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let server = duplex::ServerBuilder::new();
    /// #     let mut ws = server.accept(listener.accept().await?.0).await?;
    /// #     while let Some(msg) = ws.recv().await {
    /// #         let msg = msg?;
    /// #         if msg.is_data() {
    /// #             ws.send(msg).await?;
    /// #         }
    /// #     }
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// let ws = duplex::connect(&url).await?;
    /// assert_eq!(ws.get_ref().peer_addr(), Some(addr));
    /// # Ok(()) }
    /// ```
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Self::Http2(s) => s.peer_addr(),
            other => other.tcp().and_then(|tcp| tcp.peer_addr().ok()),
        }
    }
}

impl AsyncRead for MaybeTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Self::Http2(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
            Self::Http2(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Http2(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
            Self::Http2(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s).poll_flush(cx),
            Self::Http2(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
            Self::Http2(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
