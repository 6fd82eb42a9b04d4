//! An HTTP/2 stream as a byte stream: what a WebSocket opened by an
//! extended CONNECT (RFC 8441) runs on, on either side.
//!
//! Reading: a task of the stream's own takes every DATA frame from h2 as
//! soon as it arrives, and keeps its bytes until the application reads
//! them; their flow-control capacity is given back only then, so a socket
//! its application does not read stops its peer at the stream's window,
//! not the connection's. Taking frames at once matters because h2 charges
//! each small frame it holds against a budget of the whole connection
//! (`ENHANCE_YOUR_CALM` when spent): a page sending many small messages
//! to one socket its server is not reading would otherwise kill every
//! socket of the page. Small frames are copied together, so what is kept
//! costs its bytes, not a frame each.
//!
//! Writing waits for send capacity (h2's backpressure) and copies each
//! write once into the frame h2 sends.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use h2::{FlowControl, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long a dropped stream is kept, half-closed, for what it queued to
/// go out and for the peer to end its side (as TCP lingers after a close).
const LINGER: std::time::Duration = std::time::Duration::from_secs(5);

/// Frames shorter than this are copied into one buffer rather than kept
/// as they came (each would hold on to h2's read buffer, and cost a slot).
const SMALL_FRAME: usize = 4 << 10;

/// One HTTP/2 stream carrying a WebSocket.
///
/// Dropped, it half-closes (END_STREAM) and is kept a few seconds by its
/// task until the peer ends its side: h2 would otherwise reset it, and a
/// reset discards what was queued but not yet written, as TCP's close does
/// not.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> duplex::Result<()> {
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let addr = listener.local_addr()?;
/// # let url = format!("ws://{addr}/");
/// # tokio::spawn(async move {
/// #     let (tcp, peer) = listener.accept().await?;
/// #     let mut h2 = h2::server::Builder::new().enable_connect_protocol()
/// #         .handshake(tcp).await.map_err(std::io::Error::other)?;
/// #     let server = duplex::ServerBuilder::new();
/// #     while let Some(Ok((request, mut respond))) = h2.accept().await {
/// #         let protocol = request.extensions().get::<h2::ext::Protocol>();
/// #         let protocol = protocol.map(|p| p.as_str());
/// #         let accepted = server.accept_connect_request(&request, protocol).unwrap();
/// #         let send = respond.send_response(accepted.response.clone(), false).unwrap();
/// #         let stream = duplex::H2Stream::new(send, request.into_body(), Some(peer));
/// #         let mut ws = server.open(stream, &accepted);
/// #         tokio::spawn(async move {
/// #             while let Some(Ok(msg)) = ws.recv().await {
/// #                 if msg.is_data() && ws.send(msg).await.is_err() { break; }
/// #             }
/// #         });
/// #     }
/// #     Ok::<_, duplex::Error>(())
/// # });
/// let h2 = duplex::ClientBuilder::new().connect_http2(&url).await?;
/// let ws: duplex::WebSocket<duplex::H2Stream> = h2.open("/").await?;
/// assert_eq!(ws.get_ref().peer_addr(), Some(addr));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct H2Stream {
    /// Taken only by `drop`, to linger.
    send: Option<SendStream<Bytes>>,
    /// What the stream's task took from h2 and the application has not
    /// read yet.
    incoming: Arc<Shared>,
    /// Gives capacity back as the application reads.
    flow: FlowControl,
    /// What is left of the chunk being read.
    unread: Bytes,
    /// END_STREAM was sent: writes are over.
    ended: bool,
    /// The connection's other end.
    peer: Option<std::net::SocketAddr>,
}

/// Between the stream's task and its reader.
#[derive(Debug, Default)]
struct Shared {
    incoming: Mutex<Incoming>,
    /// Ends the stream's task (a dropped stream's linger is over).
    stop: tokio::sync::Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Incoming> {
        self.incoming.lock().expect("not poisoned")
    }
}

/// The bytes taken, and the end.
#[derive(Debug, Default)]
struct Incoming {
    /// Whole frames (large ones) and copied runs of small ones, in order.
    chunks: VecDeque<Bytes>,
    /// Small frames being copied together, after `chunks`.
    small: BytesMut,
    /// The end of the peer's side: `Ok` for END_STREAM, else why.
    end: Option<Result<(), (io::ErrorKind, String)>>,
    /// The reader waiting for bytes.
    reader: Option<Waker>,
    /// The `H2Stream` was dropped: what comes is given back at once.
    dropped: bool,
}

impl Incoming {
    fn push(&mut self, data: Bytes) {
        if data.len() < SMALL_FRAME {
            self.small.extend_from_slice(&data);
        } else {
            self.flush_small();
            self.chunks.push_back(data);
        }
    }

    fn flush_small(&mut self) {
        if !self.small.is_empty() {
            let run = self.small.split().freeze();
            self.chunks.push_back(run);
        }
    }

    fn pop(&mut self) -> Option<Bytes> {
        self.flush_small();
        self.chunks.pop_front()
    }

    fn buffered(&self) -> usize {
        self.small.len() + self.chunks.iter().map(Bytes::len).sum::<usize>()
    }
}

/// The stream's task: takes every DATA frame from h2 as it arrives, until
/// the peer's side ends; after a drop, gives everything back at once and
/// lingers (bounded) holding `send` so that what was queued still goes.
async fn take_frames(mut recv: RecvStream, incoming: Arc<Shared>) {
    loop {
        let next = tokio::select! {
            next = recv.data() => next,
            _ = incoming.stop.notified() => return,
        };
        let mut shared = incoming.lock();
        match next {
            Some(Ok(data)) => {
                if shared.dropped {
                    let _ = recv.flow_control().release_capacity(data.len());
                    continue;
                }
                shared.push(data);
            }
            None => shared.end = Some(Ok(())),
            Some(Err(e)) => {
                let e = io_error(e);
                shared.end = Some(Err((e.kind(), e.to_string())));
            }
        }
        if let Some(reader) = shared.reader.take() {
            reader.wake();
        }
        if shared.end.is_some() {
            return;
        }
    }
}

impl H2Stream {
    /// The stream of an extended CONNECT, from h2's halves: `send` and
    /// `recv` on the server (the response's stream and the request's
    /// body), or on the client. Starts the task that takes the frames (a
    /// tokio runtime must be running).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let url = format!("ws://{}/", listener.local_addr()?);
    /// # let client = tokio::spawn(async move {
    /// #     let mut ws = duplex::ClientBuilder::new().connect_http2(&url).await?.open("/").await?;
    /// #     ws.send("hi").await?;
    /// #     ws.recv().await; // until the server is done
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// # let (tcp, peer) = listener.accept().await?;
    /// # let mut conn = h2::server::Builder::new().enable_connect_protocol().handshake(tcp).await?;
    /// # let (request, mut respond) = conn.accept().await.expect("a stream")?;
    /// # tokio::spawn(async move { while conn.accept().await.is_some() {} }); // drives it
    /// let server = duplex::ServerBuilder::new();
    /// // `request` and `respond`: an extended CONNECT that h2's server accepted.
    /// let protocol = request.extensions().get::<h2::ext::Protocol>().map(|p| p.as_str());
    /// let accepted = server.accept_connect_request(&request, protocol)?;
    /// let send = respond.send_response(accepted.response.clone(), false)?;
    /// let stream = duplex::H2Stream::new(send, request.into_body(), Some(peer));
    /// let mut ws = server.open(stream, &accepted);
    /// assert_eq!(ws.recv().await.unwrap()?.as_text(), Some("hi"));
    /// # drop(client);
    /// # Ok(()) }
    /// ```
    pub fn new(
        send: SendStream<Bytes>,
        mut recv: RecvStream,
        peer: Option<std::net::SocketAddr>,
    ) -> Self {
        let incoming = Arc::new(Shared::default());
        let flow = recv.flow_control().clone();
        tokio::spawn(take_frames(recv, incoming.clone()));
        Self {
            send: Some(send),
            incoming,
            flow,
            unread: Bytes::new(),
            ended: false,
            peer,
        }
    }

    /// The address of the other end of the connection this stream is on.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let (tcp, peer) = listener.accept().await?;
    /// #     let mut h2 = h2::server::Builder::new().enable_connect_protocol()
    /// #         .handshake(tcp).await.map_err(std::io::Error::other)?;
    /// #     let server = duplex::ServerBuilder::new();
    /// #     while let Some(Ok((request, mut respond))) = h2.accept().await {
    /// #         let protocol = request.extensions().get::<h2::ext::Protocol>();
    /// #         let protocol = protocol.map(|p| p.as_str());
    /// #         let accepted = server.accept_connect_request(&request, protocol).unwrap();
    /// #         let send = respond.send_response(accepted.response.clone(), false).unwrap();
    /// #         let stream = duplex::H2Stream::new(send, request.into_body(), Some(peer));
    /// #         let mut ws = server.open(stream, &accepted);
    /// #         tokio::spawn(async move {
    /// #             while let Some(Ok(msg)) = ws.recv().await {
    /// #                 if msg.is_data() && ws.send(msg).await.is_err() { break; }
    /// #             }
    /// #         });
    /// #     }
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// let h2 = duplex::ClientBuilder::new().connect_http2(&url).await?;
    /// let ws = h2.open("/").await?;
    /// assert_eq!(ws.get_ref().peer_addr(), Some(addr)); // the connection's other end
    /// # Ok(()) }
    /// ```
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.peer
    }

    fn send(&mut self) -> &mut SendStream<Bytes> {
        self.send.as_mut().expect("taken only by drop")
    }
}

/// A stream reset by the peer (RST_STREAM), or a connection error, as an
/// I/O error: a WebSocket on a cancelled stream ends abnormally (1006),
/// not cleanly.
pub(crate) fn io_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e.into_io().unwrap_or_else(|| io::ErrorKind::Other.into());
    }
    let kind = match e.reason() {
        Some(h2::Reason::CANCEL) | Some(h2::Reason::STREAM_CLOSED) => {
            io::ErrorKind::ConnectionReset
        }
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.unread.is_empty() {
            let mut shared = self.incoming.lock();
            if let Some(chunk) = shared.pop() {
                drop(shared);
                self.unread = chunk;
                continue;
            }
            return match &shared.end {
                // END_STREAM: the peer is done writing.
                Some(Ok(())) => Poll::Ready(Ok(())),
                Some(Err((kind, why))) => Poll::Ready(Err(io::Error::new(*kind, why.clone()))),
                None => {
                    shared.reader = Some(cx.waker().clone());
                    Poll::Pending
                }
            };
        }
        let n = self.unread.len().min(buf.remaining());
        buf.put_slice(&self.unread[..n]);
        self.unread.advance(n);
        // The window opens by what the application has taken.
        let _ = self.flow.release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    /// Everything given, as far as the send window allows, goes in one
    /// DATA frame: a WebSocket frame's header and payload are not two.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        if self.ended {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        self.send().reserve_capacity(total);
        let capacity = loop {
            match self.send().capacity() {
                0 => {}
                n => break n,
            }
            // A reset stream never gets capacity: notice it.
            if let Poll::Ready(reset) = self.send().poll_reset(cx) {
                let e = match reset {
                    Ok(reason) => h2::Error::from(reason),
                    Err(e) => e,
                };
                return Poll::Ready(Err(io_error(e)));
            }
            match ready!(self.send().poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        };
        let n = capacity.min(total);
        let mut frame = BytesMut::with_capacity(n);
        for buf in bufs {
            let take = (n - frame.len()).min(buf.len());
            frame.extend_from_slice(&buf[..take]);
            if frame.len() == n {
                break;
            }
        }
        self.send()
            .send_data(frame.freeze(), false)
            .map_err(io_error)?;
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Data handed to h2 is written by the connection's task.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.ended {
            self.ended = true;
            // END_STREAM: HTTP/2's half-close, as TCP's FIN on HTTP/1.1.
            self.send()
                .send_data(Bytes::new(), true)
                .map_err(io_error)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for H2Stream {
    fn drop(&mut self) {
        let Some(mut send) = self.send.take() else {
            return;
        };
        let unread = self.unread.len();
        let (peer_done, buffered) = {
            let mut shared = self.incoming.lock();
            shared.dropped = true;
            let buffered = shared.buffered();
            shared.chunks.clear();
            shared.small.clear();
            (shared.end.is_some(), buffered)
        };
        // What the application will never read is given back, so the
        // connection's window is not shrunk by a dead stream.
        let _ = self.flow.release_capacity(unread + buffered);
        if peer_done && self.ended {
            return;
        }
        // Without a runtime there is nothing to linger with: h2 resets.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.incoming.stop.notify_one();
            return;
        };
        let ended = self.ended;
        let incoming = self.incoming.clone();
        runtime.spawn(async move {
            if !ended {
                let _ = send.send_data(Bytes::new(), true);
            }
            // Until the peer ends its side (the frames' task then ends),
            // bounded.
            let _ = tokio::time::timeout(
                LINGER,
                std::future::poll_fn(|cx| {
                    let mut shared = incoming.lock();
                    if shared.end.is_some() {
                        Poll::Ready(())
                    } else {
                        shared.reader = Some(cx.waker().clone());
                        Poll::Pending
                    }
                }),
            )
            .await;
            incoming.stop.notify_one();
            drop(send);
        });
    }
}
