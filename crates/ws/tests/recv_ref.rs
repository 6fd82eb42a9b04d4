//! `WebSocket::recv_ref`: messages received as borrows of the read buffer
//! must be the same messages `recv` gives, echo the same, close the same
//! and respect the same write-buffer limit.

mod rawpeer;

use std::time::Duration;

use bytes::Bytes;
use duplex::proto::frame::OpCode;
use duplex::{ClientBuilder, CloseCode, Config, DeflateConfig, Message, ServerBuilder};
use rawpeer::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// An echo server on `recv_ref` for one connection. Every other data
/// message is echoed from the borrow (`echo`), the rest taken out
/// (`into_message`) and fed; each message received is reported.
async fn borrowing_echo_server(
    builder: ServerBuilder,
) -> (std::net::SocketAddr, mpsc::UnboundedReceiver<Message>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = builder.accept(tcp).await.unwrap();
        let mut data = 0;
        while let Some(received) = ws.recv_ref().await {
            let received = received.unwrap();
            let seen = received.message().to_message();
            let is_data = seen.is_data();
            tx.send(seen).unwrap();
            if !is_data {
                continue;
            }
            data += 1;
            if data % 2 == 1 {
                received.echo().await.unwrap();
            } else {
                let owned = received.into_message();
                ws.feed(owned).await.unwrap();
            }
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn every_kind_of_message_is_received_and_echoed_in_order() {
    let (addr, mut seen) = borrowing_echo_server(ServerBuilder::new()).await;
    let (mut tcp, _) = raw_client(addr, "").await;
    let big: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
    let medium = vec![0xA5u8; 200];
    // All in one write, so most arrive in one read and are lent in turn.
    let mut wire = Vec::new();
    wire.extend(client_frame(OpCode::Text, true, "héllo".as_bytes()));
    wire.extend(client_frame(OpCode::Binary, true, &[1, 2, 3]));
    wire.extend(client_frame(OpCode::Text, true, b""));
    wire.extend(client_frame(OpCode::Binary, true, &big)); // 64-bit length: not lent
    wire.extend(client_frame(OpCode::Text, false, b"frag"));
    wire.extend(client_frame(OpCode::Ping, true, b"p"));
    wire.extend(client_frame(OpCode::Continuation, true, b"mented"));
    wire.extend(client_frame(OpCode::Binary, true, &medium)); // 16-bit length
    wire.extend(client_frame(OpCode::Close, true, &4001u16.to_be_bytes()));
    tcp.write_all(&wire).await.unwrap();

    let (code, echoed) = read_until_close(&mut tcp).await;
    drop(tcp); // the server ends once it has seen our TCP close
    assert_eq!(code, Some(4001));
    assert_eq!(
        echoed,
        vec![
            Message::text("héllo"),
            Message::binary(vec![1, 2, 3]),
            Message::text(""),
            Message::binary(big.clone()),
            Message::Pong(Bytes::from_static(b"p")),
            Message::text("fragmented"),
            Message::binary(medium.clone()),
        ]
    );
    let mut received = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(LIMIT, seen.recv()).await {
        received.push(m);
    }
    assert_eq!(received.len(), 8, "{received:?}");
    assert_eq!(received[4], Message::Ping(Bytes::from_static(b"p")));
    assert!(
        matches!(&received[7], Message::Close(Some(f)) if f.code == CloseCode(4001)),
        "{:?}",
        received[7]
    );
}

#[tokio::test]
async fn a_compressed_connection_echoes_borrowed_messages() {
    let deflate = DeflateConfig {
        threshold: 32,
        ..DeflateConfig::default()
    };
    let (addr, _seen) = borrowing_echo_server(
        ServerBuilder::new().config(Config::default().with_deflate(Some(deflate))),
    )
    .await;
    let mut ws = ClientBuilder::new()
        .config(Config::default().with_deflate(Some(deflate)))
        .connect(&format!("ws://{addr}/"))
        .await
        .unwrap();
    assert!(ws.is_compressed());
    // Sizes on both sides of the threshold: the short ones arrive
    // uncompressed (lent) and may be compressed on the way back.
    let sent: Vec<Message> = (0..40usize)
        .map(|i| {
            let text = "chat message ".repeat(i % 9) + &i.to_string();
            if i % 3 == 0 {
                Message::binary(text.into_bytes())
            } else {
                Message::text(text)
            }
        })
        .collect();
    for m in &sent {
        ws.feed(m.clone()).await.unwrap();
    }
    ws.flush().await.unwrap();
    for m in &sent {
        let echo = tokio::time::timeout(LIMIT, ws.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(&echo, m);
    }
    ws.close(CloseCode::NORMAL, "").await.unwrap();
}

/// Echoing from the borrow when the peer reads nothing: the buffer grows
/// no further than `feed` lets it (the limit and one message), and the
/// server stops reading.
#[tokio::test]
async fn a_borrowing_echo_keeps_to_the_write_buffer_limit() {
    let limit = 64 << 10;
    let size = 16 << 10;
    let config = Config::default().with_write_buffer_limit(limit);
    let (addr, accept) = one_connection(ServerBuilder::new().config(config)).await;
    let server = tokio::spawn(async move {
        let mut ws = accept.await;
        let (mut echoed, mut most) = (0usize, 0usize);
        let wait = Duration::from_millis(300);
        // Bounded: at most 2,000 messages, and it ends at the first wait of
        // 300 ms on either side.
        for _ in 0..2000 {
            let Ok(Some(received)) = tokio::time::timeout(wait, ws.recv_ref()).await else {
                break;
            };
            let received = received.unwrap();
            assert_eq!(received.message().len(), size);
            if tokio::time::timeout(wait, received.echo()).await.is_err() {
                break;
            }
            echoed += 1;
            most = most.max(ws.buffered_amount());
        }
        (echoed, most)
    });
    let (mut tcp, _) = raw_client(addr, "").await;
    // Writes and never reads; bounded like the server.
    let frame = client_frame(OpCode::Binary, true, &vec![7u8; size]);
    let writer = tokio::spawn(async move {
        for _ in 0..2000 {
            let write = tcp.write_all(&frame);
            if tokio::time::timeout(Duration::from_millis(300), write)
                .await
                .is_err()
            {
                break;
            }
        }
        tcp
    });
    let (echoed, most) = tokio::time::timeout(Duration::from_secs(60), server)
        .await
        .unwrap()
        .unwrap();
    let _tcp = writer.await.unwrap();
    assert!(echoed < 2000, "the server never stopped: {echoed} echoed");
    assert!(echoed > 4, "only {echoed} echoed");
    assert!(most <= limit + size + 4, "buffered {most}");
}
