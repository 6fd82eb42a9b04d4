//! The file-transfer relay at `/files` (docs/transfer.md): pairing by
//! nameplate, forwarding with peer numbers, credit, and every limit with
//! its close code.

mod support;

use duplex::{ClientBuilder, Message};
use serde_json::{Value, json};
use support::files::*;
use support::{TestServer, http};

#[tokio::test]
async fn pairs_forwards_and_grants_credit() {
    let server = TestServer::start(|_| {}).await;
    let addr = server.addr();
    let (mut sender, created) = create(addr, 10).await;
    let nameplate = created["nameplate"].as_u64().unwrap();
    let window = created["window"].as_u64().unwrap();
    assert!(window > 0);
    let mut receiver = open(addr, json!({"type": "join", "nameplate": nameplate})).await;
    let joined = json_msg(&mut receiver).await;
    assert_eq!(joined["type"], "joined");
    let peer = joined["peer"].as_u64().unwrap() as u32;
    let ev = json_msg(&mut sender).await;
    assert_eq!(ev, json!({"type": "peer_joined", "peer": peer}));

    // Sender → receiver: forwarded as is; the relay grants the bytes back.
    sender.send(binary(peer, b"hello")).await.unwrap();
    assert_eq!(
        next(&mut receiver).await.unwrap().as_bytes(),
        binary(peer, b"hello").as_bytes()
    );
    let credit = json_msg(&mut sender).await;
    assert_eq!(credit, json!({"type": "credit", "peer": peer, "bytes": 9}));

    // Receiver → sender: the header is rewritten to the receiver's number.
    receiver.send(binary(0, b"ack")).await.unwrap();
    assert_eq!(
        next(&mut sender).await.unwrap().as_bytes(),
        binary(peer, b"ack").as_bytes()
    );

    // Receiver leaves: the sender hears of it.
    receiver.close(duplex::CloseCode::NORMAL, "").await.unwrap();
    let left = json_msg(&mut sender).await;
    assert_eq!(left, json!({"type": "peer_left", "peer": peer}));
}

#[tokio::test]
async fn sending_beyond_credit_is_refused_and_the_relay_holds_at_most_the_window() {
    // One runtime, the test's (see the end): a worker thread would read
    // and deliver the first frames while the test still writes the fourth.
    let server = TestServer::start(|s| {
        s.transfer_window = 64 << 10;
        s.threads = 1;
    })
    .await;
    let addr = server.addr();
    let (mut sender, created) = create(addr, 1 << 30).await;
    assert_eq!(created["window"], 64 << 10);
    let nameplate = created["nameplate"].as_u64().unwrap();
    // A receiver that never reads.
    let mut receiver = open(addr, json!({"type": "join", "nameplate": nameplate})).await;
    let peer = json_msg(&mut receiver).await["peer"].as_u64().unwrap() as u32;
    json_msg(&mut sender).await; // peer_joined
    let chunk = vec![7u8; 16 << 10];
    // Four frames of 16 KiB + 4 fill the window beyond 64 KiB on the fourth:
    // three fit, and the relay only grants credit for what it delivered.
    for _ in 0..3 {
        sender.send(binary(peer, &chunk)).await.unwrap();
    }
    // Without waiting for credit, one more is beyond the window.
    sender.send(binary(peer, &chunk)).await.unwrap();
    let mut credits = 0;
    let code = loop {
        match next(&mut sender).await {
            Some(Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "credit" {
                    credits += v["bytes"].as_u64().unwrap();
                }
            }
            Some(Message::Close(f)) => break f.unwrap().code.0,
            Some(_) => {}
            None => panic!("no close frame"),
        }
    };
    // The test and the relay share one thread: all four frames are in the
    // relay's socket before it reads any, so nothing was delivered (and no
    // credit granted) when the fourth overdraws the window.
    assert_eq!(code, 4008);
    assert_eq!(credits, 0);
}

#[tokio::test]
async fn wrong_codes_cancel_the_transfer() {
    let server = TestServer::start(|_| {}).await;
    let addr = server.addr();
    let (mut sender, created) = create(addr, 1).await;
    let nameplate = created["nameplate"].as_u64().unwrap();
    let mut unknown = open(addr, json!({"type": "join", "nameplate": nameplate + 1})).await;
    let err = json_msg(&mut unknown).await;
    assert_eq!(err["code"], 4404);
    assert!(err["message"].as_str().unwrap().contains("check it"));
    assert_eq!(close_code(&mut unknown).await, 4404);
    // Receivers that leave before the sender accepts them (their key
    // exchange failed) use up the transfer.
    for _ in 0..duplex_server::transfer::rooms::MAX_WRONG_CODES {
        let mut r = open(addr, json!({"type": "join", "nameplate": nameplate})).await;
        assert_eq!(json_msg(&mut r).await["type"], "joined");
        assert_eq!(json_msg(&mut sender).await["type"], "peer_joined");
        r.close(duplex::CloseCode::NORMAL, "").await.unwrap();
        while next(&mut r).await.is_some() {}
        assert_eq!(json_msg(&mut sender).await["type"], "peer_left");
    }
    let code = loop {
        match next(&mut sender).await {
            Some(Message::Close(f)) => break f.unwrap().code.0,
            Some(_) => {}
            None => panic!("no close frame"),
        }
    };
    assert_eq!(code, 4403);
    let mut late = open(addr, json!({"type": "join", "nameplate": nameplate})).await;
    assert_eq!(close_code(&mut late).await, 4404);
}

#[tokio::test]
async fn limits_size_concurrency_expiry_and_bad_hellos() {
    let server = TestServer::start(|s| {
        s.transfer_max_size = 1000;
        s.transfer_max_concurrent = 1;
        s.transfer_code_ttl = 0;
    })
    .await;
    let addr = server.addr();
    let mut big = open(addr, json!({"type": "create", "size": 1001})).await;
    assert_eq!(close_code(&mut big).await, 4413);
    let (_sender, created) = create(addr, 1000).await;
    let mut second = open(addr, json!({"type": "create", "size": 1})).await;
    assert_eq!(close_code(&mut second).await, 4503);
    // A TTL of 0: the code has expired by the time anyone joins.
    let mut late = open(
        addr,
        json!({"type": "join", "nameplate": created["nameplate"]}),
    )
    .await;
    assert_eq!(close_code(&mut late).await, 4410);
    let mut bad = open(addr, json!({"type": "hello"})).await;
    assert_eq!(close_code(&mut bad).await, 4400);
}

#[tokio::test]
async fn a_dropped_sender_disconnects_receivers_and_can_reattach() {
    let server = TestServer::start(|_| {}).await;
    let addr = server.addr();
    let (sender, created) = create(addr, 10).await;
    let nameplate = created["nameplate"].as_u64().unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let mut receiver = open(addr, json!({"type": "join", "nameplate": nameplate})).await;
    json_msg(&mut receiver).await;
    drop(sender); // no close frame: a drop
    assert_eq!(close_code(&mut receiver).await, 4001);
    let mut wrong = open(
        addr,
        json!({"type": "reattach", "nameplate": nameplate, "token": "nope"}),
    )
    .await;
    assert_eq!(close_code(&mut wrong).await, 4404);
    let mut back = open(
        addr,
        json!({"type": "reattach", "nameplate": nameplate, "token": token}),
    )
    .await;
    assert_eq!(json_msg(&mut back).await["nameplate"], nameplate);
    // Recreating under a nameplate in use is refused.
    let mut squat = open(
        addr,
        json!({"type": "create", "size": 1, "nameplate": nameplate, "token": "0123456789abcdefgh"}),
    )
    .await;
    assert_eq!(close_code(&mut squat).await, 4409);
    let mut again = open(addr, json!({"type": "join", "nameplate": nameplate})).await;
    assert_eq!(json_msg(&mut again).await["type"], "joined");
    assert_eq!(json_msg(&mut back).await["type"], "peer_joined");
    // A clean close ends the transfer for everyone.
    back.close(duplex::CloseCode::NORMAL, "done").await.unwrap();
    assert_eq!(close_code(&mut again).await, 1000);
}

#[tokio::test]
async fn a_sender_recreates_its_transfer_after_a_relay_restart() {
    // A fresh relay knows nothing: the sender asks for its old nameplate.
    let server = TestServer::start(|_| {}).await;
    let addr = server.addr();
    let token = "abcdefghijklmnopqrstuvwx";
    let mut sender = open(
        addr,
        json!({"type": "create", "size": 5, "nameplate": 4242, "token": token}),
    )
    .await;
    let created = json_msg(&mut sender).await;
    assert_eq!(created["nameplate"], 4242);
    assert_eq!(created["token"], token);
    let mut receiver = open(addr, json!({"type": "join", "nameplate": 4242})).await;
    assert_eq!(json_msg(&mut receiver).await["type"], "joined");
}

/// Round 1's lost sender: its connection dropped without the relay
/// noticing, it reattached on a new one, and when the relay finally saw the
/// old one end it detached the new one: receivers got 4409 ("the sender is
/// not connected") for good while the sender waited for them.
#[tokio::test]
async fn a_replaced_sender_connection_ending_leaves_its_successor_attached() {
    let server = TestServer::start(|_| {}).await;
    let addr = server.addr();
    let (mut old, created) = create(addr, 10).await;
    let nameplate = created["nameplate"].as_u64().unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let mut early = open(addr, json!({"type": "join", "nameplate": nameplate})).await;
    assert_eq!(json_msg(&mut early).await["type"], "joined");
    assert_eq!(json_msg(&mut old).await["type"], "peer_joined");

    let mut new = open(
        addr,
        json!({"type": "reattach", "nameplate": nameplate, "token": token}),
    )
    .await;
    assert_eq!(json_msg(&mut new).await["type"], "created");
    // The receiver joined through the old connection must join again, and
    // the old connection is told it was replaced.
    assert_eq!(close_code(&mut early).await, 4001);
    drop(early);
    assert_eq!(close_code(&mut old).await, 4001);
    drop(old);

    let mut receiver = open(addr, json!({"type": "join", "nameplate": nameplate})).await;
    assert_eq!(json_msg(&mut receiver).await["type"], "joined");
    assert_eq!(json_msg(&mut new).await["type"], "peer_joined");
}

/// Every binary frame to a receiver costs its whole length, whatever its
/// kind: the relay accepts exactly a window's worth, PAKE and sealed
/// control frames included, and refuses one byte more.
#[tokio::test]
async fn control_frames_cost_credit_like_chunks() {
    use duplex_transfer::{Credit, Kind, peer_frame};
    let window = 64u64 << 10;
    // One runtime, the test's: all three frames are in the relay's socket
    // before it reads any (a worker thread would deliver the first ones,
    // and grant their credit, while the test still writes the last).
    let server = TestServer::start(|s| {
        s.transfer_window = window as usize;
        s.threads = 1;
    })
    .await;
    let addr = server.addr();
    let mut outcomes = Vec::new();
    for over in [0u64, 1] {
        let (mut sender, created) = create(addr, 1 << 30).await;
        let nameplate = created["nameplate"].as_u64().unwrap();
        // A receiver that never reads.
        let mut receiver = open(addr, json!({"type": "join", "nameplate": nameplate})).await;
        let peer = json_msg(&mut receiver).await["peer"].as_u64().unwrap() as u32;
        assert_eq!(json_msg(&mut sender).await["peer"], peer);
        let pake = peer_frame::encode(peer, Kind::Pake, &[&[1u8; 32]]);
        let sealed = peer_frame::encode(peer, Kind::Sealed, &[&[2u8; 900]]);
        let used = Credit::cost(&pake) + Credit::cost(&sealed);
        let body = (window - used + over) as usize - peer_frame::PEER_HEADER - 1;
        let chunk = peer_frame::encode(peer, Kind::Chunk, &[&vec![3u8; body]]);
        for frame in [pake, sealed, chunk] {
            sender.send(Message::Binary(frame)).await.unwrap();
        }
        // Accepted: all of it is written to the receiver's socket (it fits
        // the kernel's buffers) and granted back. Refused: closed with 4008.
        let mut granted = 0;
        let outcome = loop {
            match next(&mut sender).await {
                Some(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["type"] == "credit" {
                        granted += v["bytes"].as_u64().unwrap();
                    }
                    if granted == window {
                        break "granted";
                    }
                }
                Some(Message::Close(f)) => {
                    assert_eq!(f.unwrap().code.0, 4008);
                    break "refused";
                }
                Some(_) => {}
                None => panic!("closed without a close frame"),
            }
        };
        outcomes.push(outcome);
        drop(receiver);
    }
    // Exactly the window: accepted. One byte over: refused.
    assert_eq!(outcomes, ["granted", "refused"]);
}

/// The relay carries ciphertext, which does not compress: `/files` declines
/// permessage-deflate even when a browser offers it.
#[tokio::test]
async fn the_relay_declines_compression() {
    let server = TestServer::start(|_| {}).await;
    let (_ws, info) = ClientBuilder::new()
        .config(duplex::Config::default().with_compression())
        .connect_with_info(&format!("ws://{}/files", server.addr()))
        .await
        .unwrap();
    let offered = info.request.headers().get("sec-websocket-extensions");
    assert!(offered.is_some_and(|v| v.to_str().unwrap().contains("permessage-deflate")));
    assert_eq!(
        info.response.headers().get("sec-websocket-extensions"),
        None
    );
}

/// The browser pages and every module they import are served, so the
/// pages work from the binary alone (tests/browser/transfer.spec.mjs runs
/// them in Chromium).
#[tokio::test]
async fn the_send_and_receive_pages_and_their_modules_are_served() {
    let server = TestServer::start(|_| {}).await;
    let addr = server.addr();
    let get = |path: &'static str| async move {
        let (status, body) = http(addr, "GET", path, &[], None).await;
        assert_eq!(status, 200, "GET {path}");
        body
    };
    for page in ["/send", "/receive"] {
        let html = get(page).await;
        assert!(
            html.contains(r#"<script type="module" src="/transfer.js">"#),
            "{page}"
        );
        assert!(html.contains(r#"href="/transfer.css""#), "{page}");
    }
    assert!(get("/send").await.contains("webkitdirectory"));
    assert!(
        get("/transfer.js")
            .await
            .contains("from './transfer-core.js'")
    );
    let core = get("/transfer-core.js").await;
    assert!(core.contains("from './vendor/noble.js'"));
    // Bulk crypto in the browser's native Web Crypto.
    assert!(core.contains("subtle.encrypt"));
    assert!(core.contains("from './transfer-protocol.js'"));
    // The page's copy of the relay protocol is the generated one.
    assert_eq!(
        get("/transfer-protocol.js").await,
        duplex_transfer::javascript::module()
    );
    let noble = get("/vendor/noble.js").await;
    assert!(noble.starts_with("// @noble/curves 2.4.0, @noble/hashes 2.4.0\n"));
    assert!(noble.contains("MIT License"));
    assert!(get("/transfer.css").await.contains(".dropzone"));
    assert!(
        get("/").await.contains(r#"href="/send""#),
        "the chat page links to /send"
    );
}
