//! `WebSocket::echo_buffered`: an echo that answers what is already
//! buffered first, then takes the next message with `recv_ref`, must send
//! back what an echo of every message does, for any stream a client may
//! send, however the network splits it, whatever the write buffer limit
//! (and whether the echo of a large read first moves to a larger output
//! buffer), and must fail invalid text with the same close code.

mod rawpeer;

use std::net::SocketAddr;

use duplex::proto::frame::OpCode;
use duplex::{Config, Message, ServerBuilder};
use proptest::prelude::*;
use rawpeer::*;
use tokio::io::AsyncWriteExt;

/// One message as the client sends it.
#[derive(Debug, Clone)]
enum Sent {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    /// Text in two frames, split at a byte offset (clamped to a char
    /// boundary), with a ping between them.
    Fragmented(String, usize),
}

impl Sent {
    fn wire(&self) -> Vec<u8> {
        match self {
            Sent::Text(s) => client_frame(OpCode::Text, true, s.as_bytes()),
            Sent::Binary(b) => client_frame(OpCode::Binary, true, b),
            Sent::Ping(p) => client_frame(OpCode::Ping, true, p),
            Sent::Fragmented(s, at) => {
                let mut at = (*at).min(s.len());
                while !s.is_char_boundary(at) {
                    at -= 1;
                }
                let mut wire = client_frame(OpCode::Text, false, &s.as_bytes()[..at]);
                wire.extend(client_frame(OpCode::Ping, true, b"mid"));
                wire.extend(client_frame(
                    OpCode::Continuation,
                    true,
                    &s.as_bytes()[at..],
                ));
                wire
            }
        }
    }

    /// What comes back, in order.
    fn echoed(&self) -> Vec<Message> {
        match self {
            Sent::Text(s) => vec![Message::text(s.clone())],
            Sent::Binary(b) => vec![Message::binary(b.clone())],
            Sent::Ping(p) => vec![Message::Pong(p.clone().into())],
            // The pong goes out as soon as the ping is read, before the
            // message it interrupted is whole.
            Sent::Fragmented(s, _) => vec![Message::Pong("mid".into()), Message::text(s.clone())],
        }
    }
}

/// Payload lengths around where the paths differ: a 7-bit length, a 16-bit
/// one, a few KiB, the 16-bit maximum (65,535) and past it.
fn length() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => 0usize..40,
        3 => 100usize..400,
        // Pipelined, some reads hold tens of KiB of these: the echo then
        // moves its output to a larger buffer first.
        2 => 2000usize..8000,
        1 => 65_530usize..65_541,
        1 => 70_000usize..70_010,
    ]
}

/// Text of one- to four-byte characters, about `length()` bytes long.
fn text() -> impl Strategy<Value = String> {
    let chars = prop::sample::select(vec!['a', 'z', ' ', 'é', '☃', '😀']);
    length()
        .prop_flat_map(move |n| proptest::collection::vec(chars.clone(), n / 2))
        .prop_map(|chars| chars.into_iter().collect())
}

fn sent() -> impl Strategy<Value = Sent> {
    prop_oneof![
        4 => text().prop_map(Sent::Text),
        4 => length().prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n)).prop_map(Sent::Binary),
        1 => proptest::collection::vec(any::<u8>(), 0..126).prop_map(Sent::Ping),
        1 => (text(), 0usize..200).prop_map(|(s, at)| Sent::Fragmented(s, at)),
    ]
}

/// An echo server for one connection on `echo_buffered` and `recv_ref`.
async fn server(limit: usize) -> SocketAddr {
    let config = Config::default().with_write_buffer_limit(limit);
    let (addr, accept) = one_connection(ServerBuilder::new().config(config)).await;
    tokio::spawn(async move {
        let mut ws = accept.await;
        loop {
            ws.echo_buffered();
            match ws.recv_ref().await {
                Some(Ok(received)) if received.message().is_data() => {
                    if received.echo().await.is_err() {
                        return;
                    }
                }
                Some(_) => {}
                None => return,
            }
        }
    });
    addr
}

/// What comes back when a client sends `messages` (then a close, or text
/// that is not UTF-8), written in pieces of the `chunks` sizes in turn,
/// to an echo whose write buffer limit is `limit`: the close code, and the
/// messages echoed.
fn echo_of(
    messages: &[Sent],
    invalid_at_the_end: bool,
    chunks: Vec<usize>,
    limit: usize,
) -> (Option<u16>, Vec<Message>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let addr = server(limit).await;
        let (tcp, _) = raw_client(addr, "").await;
        tcp.set_nodelay(true).unwrap();
        let (mut read, mut write) = tcp.into_split();
        let mut wire: Vec<u8> = messages.iter().flat_map(Sent::wire).collect();
        if invalid_at_the_end {
            wire.extend(client_frame(OpCode::Text, true, b"ok \xff"));
        } else {
            wire.extend(client_frame(OpCode::Close, true, &1000u16.to_be_bytes()));
        }
        // Written in pieces while the echoes are read, so the server
        // sees frames split every way, and never waits on a full buffer.
        let writer = tokio::spawn(async move {
            let mut sizes = chunks.iter().cycle();
            for piece in wire.chunks(*sizes.next().unwrap()) {
                write.write_all(piece).await.unwrap();
            }
            write
        });
        let outcome = read_until_close(&mut read).await;
        drop(writer.await.unwrap());
        outcome
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn an_echo_of_what_is_buffered_sends_back_every_message_in_order(
        messages in proptest::collection::vec(sent(), 0..40),
        invalid_at_the_end: bool,
        // Some writes large enough to bring many whole frames at once.
        chunks in proptest::collection::vec(prop_oneof![3 => 1usize..3000, 1 => 8000usize..200_000], 1..6),
        limit in prop_oneof![1usize..64, 1024usize..(256 << 10)],
    ) {
        let (code, echoed) = echo_of(&messages, invalid_at_the_end, chunks, limit);
        let expected: Vec<Message> = messages.iter().flat_map(Sent::echoed).collect();
        prop_assert_eq!(code, Some(if invalid_at_the_end { 1007 } else { 1000 }));
        prop_assert_eq!(echoed.len(), expected.len());
        for (i, (got, want)) in echoed.iter().zip(&expected).enumerate() {
            prop_assert!(got == want, "message {} of {}: {:?} for {:?}", i, expected.len(), got.as_text().map(str::len), want.as_text().map(str::len));
        }
    }

    /// A pipelining client's burst of messages of a few KiB, written at
    /// once: the server reads tens of KiB of whole frames at a time, and
    /// its echo moves its output to a larger buffer before answering them.
    #[test]
    fn a_burst_of_messages_of_a_few_kib_comes_back_in_order(
        sizes in proptest::collection::vec(1000usize..8000, 8..48),
        text: bool,
        limit in prop_oneof![Just(1usize << 20), 1024usize..(256 << 10)],
    ) {
        let messages: Vec<Sent> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let fill = b'a' + (i % 26) as u8;
                if text {
                    Sent::Text(String::from_utf8(vec![fill; n]).unwrap())
                } else {
                    Sent::Binary(vec![fill; n])
                }
            })
            .collect();
        let (code, echoed) = echo_of(&messages, false, vec![usize::MAX], limit);
        let expected: Vec<Message> = messages.iter().flat_map(Sent::echoed).collect();
        prop_assert_eq!(code, Some(1000));
        prop_assert!(echoed == expected, "{} echoed of {}", echoed.len(), expected.len());
    }
}
