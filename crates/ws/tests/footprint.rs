//! What an idle connection costs: the `WebSocket` sits in the connection's
//! task for its whole life, so its size is (most of) the memory per idle
//! connection. tokio rounds a task up to a multiple of 128 bytes; with these
//! sizes the echo server's task (`duplex::accept`, then `recv_ref`/`echo`) fits
//! in 384 bytes, where it took 3 KiB before the handshake was boxed, the
//! rarely used state moved behind pointers and `feed` stopped holding its
//! message. See docs/performance.md.

use std::mem::size_of;

use duplex::proto::{Connection, OutBuf};
use duplex::{Feed, Recv, RecvRef, SendMessage, WebSocket};
use tokio::net::TcpStream;

#[test]
fn the_socket_stays_small() {
    assert!(
        size_of::<Connection>() <= 168,
        "Connection grew to {} bytes",
        size_of::<Connection>()
    );
    assert!(
        size_of::<OutBuf>() <= 40,
        "OutBuf grew to {}",
        size_of::<OutBuf>()
    );
    // Beside the stream (32 bytes for a `TcpStream` in a release build).
    let own = size_of::<WebSocket<TcpStream>>() - size_of::<TcpStream>();
    assert!(
        own <= 192,
        "WebSocket grew to {own} bytes beside its stream"
    );
}

/// `recv()` returns this for every message, and loops often hold it across
/// an `.await`.
#[test]
fn a_received_message_or_error_is_small() {
    assert!(
        size_of::<duplex::Error>() <= 32,
        "Error grew to {} bytes",
        size_of::<duplex::Error>()
    );
    assert_eq!(
        size_of::<Option<duplex::Result<duplex::Message>>>(),
        size_of::<duplex::Message>()
    );
}

#[test]
fn the_futures_a_connection_task_waits_in_are_small() {
    assert_eq!(size_of::<Recv<'_, TcpStream>>(), 8);
    assert_eq!(size_of::<RecvRef<'_, TcpStream>>(), 8);
    assert_eq!(size_of::<Feed<'_, TcpStream>>(), 8);
    assert!(size_of::<SendMessage<'_, TcpStream>>() <= 16);
}

/// The echo loop of `bench/src/duplex_echo.rs`, whose task must stay within
/// tokio's 384-byte size class: 32 bytes of header, 16 of ids, 48 of
/// trailer, the future and its tag.
#[allow(clippy::manual_async_fn)] // on purpose: an `async fn` would copy `ws`
fn echo(mut ws: WebSocket<TcpStream>) -> impl Future<Output = ()> {
    async move {
        loop {
            let queued = {
                let Some(Ok(received)) = ws.recv_ref().await else {
                    return;
                };
                if !received.message().is_data() {
                    continue;
                }
                received.echo()
            };
            if queued.await.is_err() {
                return;
            }
        }
    }
}

async fn accept_and_echo(tcp: TcpStream) {
    let Ok(ws) = duplex::accept(tcp).await else {
        return;
    };
    echo(ws).await;
}

/// Layouts of a release build (a debug build's futures are larger); run by
/// `cargo xtask test`'s release stage.
#[tokio::test]
#[ignore = "measures a release build: cargo nextest run --release --run-ignored only"]
async fn an_echo_task_fits_in_384_bytes() {
    if cfg!(debug_assertions) {
        panic!("measures a release build's layout: run with --release");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let task = accept_and_echo(tcp);
    assert!(
        size_of_val(&task) + 8 <= 384 - 96,
        "the echo task's future is {} bytes",
        size_of_val(&task)
    );
}

#[tokio::test]
async fn the_handshake_does_not_widen_the_callers_future() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let accept = duplex::accept(tcp);
    // The stream and a pointer to the boxed handshake, not the handshake.
    assert!(
        size_of_val(&accept) <= 64,
        "the accept future is {} bytes",
        size_of_val(&accept)
    );
}
