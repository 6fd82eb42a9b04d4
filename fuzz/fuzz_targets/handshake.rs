//! Fuzz target: arbitrary bytes as an HTTP head, on both ends of the handshake.
//!
//! Input layout: the first byte selects the side and configuration, the rest
//! is the head.
//!
//! | selector bits | meaning                                                   |
//! |---------------|-----------------------------------------------------------|
//! | 0             | 0: a request to `ServerHandshake`, 1: a response to `ClientHandshake` |
//! | 1–2           | deflate config: none, default, no context takeover both ways, small windows |
//!
//! A client's key is random, so a fuzzer could never produce the matching
//! `Sec-WebSocket-Accept`; the placeholder `{ACCEPT}` in a response is
//! replaced by the right value, which keeps runs reproducible and lets the
//! fuzzer get past that check into subprotocol and extension negotiation.
//!
//! Checked beyond "no panic": an accepted request yields a 101 that parses
//! back and states exactly the compression it negotiated; a rejection is a
//! 4xx; a response `verify` accepts is a 101 whose negotiated subprotocol and
//! compression were offered.

#![no_main]

use std::sync::OnceLock;

use duplex_proto::DeflateConfig;
use duplex_proto::handshake::client::ClientHandshake;
use duplex_proto::handshake::head::{read_request, read_response, write_response};
use duplex_proto::handshake::server::{RequestError, ServerHandshake};
use duplex_proto::handshake::{HeadLimits, accept_key};
use libfuzzer_sys::fuzz_target;

const PLACEHOLDER: &[u8] = b"{ACCEPT}";

fn deflate_config(bits: u8) -> Option<DeflateConfig> {
    match bits & 3 {
        0 => None,
        1 => Some(DeflateConfig::default()),
        2 => Some(DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateConfig::default()
        }),
        _ => Some(DeflateConfig {
            server_max_window_bits: 9,
            client_max_window_bits: 8,
            ..DeflateConfig::default()
        }),
    }
}

/// One client per deflate config, made once so that its key is fixed for
/// the whole run.
fn clients() -> &'static [ClientHandshake] {
    static CLIENTS: OnceLock<Vec<ClientHandshake>> = OnceLock::new();
    CLIENTS.get_or_init(|| {
        (0..4)
            .map(|bits| {
                ClientHandshake::new(vec!["chat".into(), "v2".into()], deflate_config(bits))
            })
            .collect()
    })
}

fn server_side(head: &[u8], deflate: Option<DeflateConfig>) {
    let limits = HeadLimits::default();
    let req = match read_request(head, &limits) {
        Ok(Some((req, used))) => {
            assert!(used <= head.len());
            req
        }
        Ok(None) => return,
        Err(e) => {
            let rejection = RequestError::from(e);
            assert!(rejection.status().is_client_error());
            assert!(rejection.to_bytes().starts_with(b"HTTP/1.1 4"));
            return;
        }
    };
    let server = ServerHandshake {
        protocols: vec!["v2".into(), "chat".into()],
        deflate,
    };
    match server.accept(&req) {
        Ok(accepted) => {
            let resp = &accepted.response;
            assert_eq!(resp.status().as_u16(), 101);
            assert_eq!(
                resp.headers().contains_key("sec-websocket-extensions"),
                accepted.deflate.is_some()
            );
            assert!(deflate.is_some() || accepted.deflate.is_none());
            let mut wire = Vec::new();
            write_response(resp, &mut wire);
            let (parsed, used) = read_response(&wire, &limits)
                .expect("our response parses")
                .expect("our response is complete");
            assert_eq!(used, wire.len());
            assert_eq!(parsed.headers(), resp.headers());
        }
        Err(e) => {
            assert!(e.status().is_client_error());
            let _ = e.to_bytes();
        }
    }
}

fn client_side(head: &[u8], client: &ClientHandshake) {
    let accept = accept_key(client.key().as_bytes());
    let mut resolved = Vec::with_capacity(head.len() + 32);
    let mut rest = head;
    while let Some(at) = rest
        .windows(PLACEHOLDER.len())
        .position(|w| w == PLACEHOLDER)
    {
        resolved.extend_from_slice(&rest[..at]);
        resolved.extend_from_slice(accept.as_bytes());
        rest = &rest[at + PLACEHOLDER.len()..];
    }
    resolved.extend_from_slice(rest);

    let Ok(Some((resp, _))) = read_response(&resolved, &HeadLimits::default()) else {
        return;
    };
    if let Ok(negotiated) = client.verify(&resp) {
        assert_eq!(resp.status().as_u16(), 101);
        if let Some(p) = &negotiated.protocol {
            assert!(p == "chat" || p == "v2", "unoffered subprotocol {p:?}");
        }
        let offered = clients()
            .iter()
            .position(|c| c.key() == client.key())
            .and_then(|i| deflate_config(i as u8));
        match (negotiated.deflate, offered) {
            (None, _) => {}
            (Some(_), None) => panic!("compression accepted without an offer"),
            (Some(params), Some(cfg)) => {
                assert!(params.server_max_window_bits <= cfg.server_max_window_bits);
                assert!(params.client_max_window_bits <= cfg.client_max_window_bits);
                assert!(!cfg.server_no_context_takeover || params.server_no_context_takeover);
                assert!(!cfg.client_no_context_takeover || params.client_no_context_takeover);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, head)) = data.split_first() else {
        return;
    };
    let bits = (selector >> 1) & 3;
    if selector & 1 == 0 {
        server_side(head, deflate_config(bits));
    } else {
        client_side(head, &clients()[usize::from(bits)]);
    }
});
