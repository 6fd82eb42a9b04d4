//! Fuzz target: arbitrary bytes into a `Connection`, as a peer would send them.
//!
//! Input layout: the first byte selects the configuration, the rest is what
//! the peer sends.
//!
//! | selector bits | meaning                                              |
//! |---------------|------------------------------------------------------|
//! | 0             | 0: we are the server (frames must be masked), 1: client |
//! | 1             | permessage-deflate negotiated                         |
//! | 2             | client_no_context_takeover                            |
//! | 3             | server_no_context_takeover                            |
//! | 4             | small limits (so the limit errors are reachable)      |
//! | 5–7           | read size for the second pass: 1, 2, 3, 5, 8, 13, 64, 1024 |
//!
//! Beyond "no panic" (and, built with `-a`, no failed debug assertion or
//! overflow), each input is checked against what must hold for any input:
//! the same messages and error whether the bytes come in one read or many
//! (with `Connection::shrink` between reads);
//! text is UTF-8; every ping is answered; an error leaves the connection
//! closed with exactly one close frame, last, carrying the error's code.

#![no_main]

use bytes::Buf;
use duplex_proto::frame::{FrameHeader, OpCode};
use duplex_proto::mask::apply_mask;
use duplex_proto::{
    CloseFrame, Config, Connection, DeflateParams, Limits, Message, ProtocolError, Role, State,
};
use libfuzzer_sys::fuzz_target;

const READ_SIZES: [usize; 8] = [1, 2, 3, 5, 8, 13, 64, 1024];

#[derive(Debug, PartialEq)]
struct Outcome {
    messages: Vec<Message>,
    error: Option<ProtocolError>,
}

/// Feeds `input` in reads of `read_size` bytes; with `shrink`, releases idle
/// buffers between reads, as an I/O layer does when a connection goes quiet.
fn receive(conn: &mut Connection, input: &[u8], read_size: usize, shrink: bool) -> Outcome {
    let mut messages = Vec::new();
    for chunk in input.chunks(read_size) {
        if shrink {
            conn.shrink();
        }
        conn.read_buf().extend_from_slice(chunk);
        loop {
            match conn.next_message() {
                Ok(Some(m)) => messages.push(m),
                Ok(None) => break,
                Err(e) => {
                    return Outcome {
                        messages,
                        error: Some(e),
                    };
                }
            }
        }
    }
    Outcome {
        messages,
        error: None,
    }
}

/// The frames a connection queued, unmasked; panics on a malformed one.
fn sent_frames(conn: &mut Connection) -> Vec<(FrameHeader, Vec<u8>)> {
    let n = conn.outgoing().remaining();
    let wire = conn.outgoing().copy_to_bytes(n);
    let mut rest = &wire[..];
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let (header, used) = FrameHeader::parse(rest)
            .expect("we sent a valid header")
            .expect("we sent a whole header");
        assert_eq!(header.mask.is_some(), conn.role() == Role::Client);
        let len = header.payload_len as usize;
        let mut payload = rest[used..used + len].to_vec();
        if let Some(key) = header.mask {
            apply_mask(&mut payload, key, 0);
        }
        frames.push((header, payload));
        rest = &rest[used + len..];
    }
    frames
}

fn check(conn: &mut Connection, outcome: &Outcome) {
    for m in &outcome.messages {
        if let Message::Text(t) = m {
            assert!(std::str::from_utf8(t.as_ref()).is_ok(), "non-UTF-8 text");
        }
    }
    let frames = sent_frames(conn);
    let pings: Vec<&[u8]> = outcome
        .messages
        .iter()
        .filter(|m| matches!(m, Message::Ping(_)))
        .map(Message::as_bytes)
        .collect();
    let pongs: Vec<&[u8]> = frames
        .iter()
        .filter(|(h, _)| h.opcode == OpCode::Pong)
        .map(|(_, p)| p.as_slice())
        .collect();
    assert_eq!(pongs, pings, "a pong per ping, in order");
    let closes = frames
        .iter()
        .filter(|(h, _)| h.opcode == OpCode::Close)
        .count();
    let expected_code = match (&outcome.error, outcome.messages.last()) {
        (Some(e), _) => {
            assert_eq!(conn.error(), Some(e));
            Some(e.close_code())
        }
        (None, Some(Message::Close(frame))) => frame.as_ref().map(|f| f.code),
        (None, _) => {
            assert_eq!(conn.state(), State::Open);
            assert_eq!(closes, 0);
            return;
        }
    };
    assert_eq!(conn.state(), State::Closed);
    assert_eq!(closes, 1, "exactly one close frame");
    let (last, payload) = frames.last().expect("the close frame");
    assert_eq!(last.opcode, OpCode::Close, "the close frame is last");
    let sent = CloseFrame::parse(payload).expect("our close payload is valid");
    assert_eq!(sent.map(|f| f.code), expected_code);
    assert_eq!(conn.next_message(), Ok(None));
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let role = if selector & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let deflate = (selector & 2 != 0).then_some(DeflateParams {
        client_no_context_takeover: selector & 4 != 0,
        server_no_context_takeover: selector & 8 != 0,
        ..DeflateParams::default()
    });
    let config = if selector & 16 != 0 {
        Config {
            limits: Limits {
                max_frame_size: 1024,
                max_message_size: 4096,
                max_fragments: 16,
            },
            ..Config::default()
        }
    } else {
        Config::default()
    };
    let read_size = READ_SIZES[usize::from(selector >> 5)];

    let mut whole = Connection::new(role, config, deflate);
    let at_once = receive(&mut whole, input, input.len().max(1), false);
    let mut split = Connection::new(role, config, deflate);
    let in_reads = receive(&mut split, input, read_size, true);
    // How the bytes were cut into reads, and freeing idle buffers between
    // them, must not change what they mean.
    assert_eq!(at_once, in_reads, "reads of {read_size} bytes");
    check(&mut whole, &at_once);
    check(&mut split, &in_reads);
});
