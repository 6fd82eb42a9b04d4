//! What an idle connection costs: the `WebSocket` sits in the connection's
//! task for its whole life, so its size is (most of) the memory per idle
//! connection. tokio rounds a task up to a multiple of 128 bytes; with these
//! sizes the echo server's task (`duplex::accept`, then `recv`/`feed`) fits
//! in 512 bytes, where it took 3 KiB before the handshake was boxed and the
//! rarely used state moved behind pointers. See docs/performance.md.

use std::mem::size_of;

use duplex::proto::{Connection, OutBuf};
use duplex::{Feed, Recv, WebSocket};
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

#[test]
fn the_futures_a_connection_task_waits_in_are_small() {
    assert_eq!(size_of::<Recv<'_, TcpStream>>(), 8);
    assert!(size_of::<Feed<'_, TcpStream>>() <= 48);
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
