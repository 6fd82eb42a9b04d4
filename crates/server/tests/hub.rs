//! The hub end to end, with real WebSocket clients against an in-process
//! server on loopback and a real SQLite database in a temporary directory.

mod support;

use serde_json::{Value, json};
use support::*;

#[tokio::test]
async fn publish_reaches_every_subscriber_with_full_metadata() {
    let t = TestServer::start(|_| {}).await;
    let mut alice = t.client().await;
    let mut bob = t.client().await;
    alice.ok(json!({"cmd": "connect", "name": "alice"})).await;
    let sub = alice
        .ok(json!({"cmd": "subscribe", "channel": "news"}))
        .await;
    assert_eq!(
        (sub["offset"].as_u64(), sub["recovered"].as_bool()),
        (Some(0), Some(false))
    );
    bob.ok(json!({"cmd": "connect", "name": "bob"})).await;
    let published = bob
        .ok(json!({"cmd": "publish", "channel": "news", "data": {"headline": "hi"}}))
        .await;
    assert_eq!(published["offset"], 1);
    let push = alice.push().await;
    assert_eq!(push["push"], "publication");
    assert_eq!(push["channel"], "news");
    assert_eq!(push["offset"], 1);
    assert_eq!(push["epoch"], published["epoch"]);
    assert_eq!(push["ts"], published["ts"]);
    assert!(push["ts"].as_str().unwrap().ends_with('Z'));
    assert_eq!(push["from"]["name"], "bob");
    assert_eq!(push["data"], json!({"headline": "hi"}));
    // Server push over HTTP reaches the same subscriber.
    let api = api_publish(t.addr(), "news", json!("from the api")).await;
    assert_eq!(api["offset"], 2);
    let push = alice.push().await;
    assert_eq!(
        (push["offset"].as_u64(), push["from"]["client"].as_str()),
        (Some(2), Some("api"))
    );
}

#[tokio::test]
async fn recovery_after_a_dropped_connection_is_exact() {
    let t = TestServer::start(|_| {}).await;
    let mut client = t.client().await;
    let sub = client
        .ok(json!({"cmd": "subscribe", "channel": "feed"}))
        .await;
    assert_eq!(
        sub["epoch"], "",
        "a channel without publications has no epoch yet"
    );
    api_publish(t.addr(), "feed", json!(0)).await;
    let first = client.push().await;
    let (epoch, seen) = (first["epoch"].clone(), first["offset"].as_u64().unwrap());
    drop(client);
    // 1,000 publications while disconnected.
    for i in 1..=1000 {
        api_publish(t.addr(), "feed", json!(i)).await;
    }
    let mut client = t.client().await;
    let since = json!({"epoch": epoch, "offset": seen});
    let sub = client
        .ok(json!({"cmd": "subscribe", "channel": "feed", "since": since}))
        .await;
    assert_eq!(sub["recovered"], true);
    assert_eq!(
        offsets(&sub["publications"]),
        (2..=1001).collect::<Vec<_>>()
    );
    let data: Vec<i64> = sub["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"].as_i64().unwrap())
        .collect();
    assert_eq!(data, (1..=1000).collect::<Vec<_>>());
    // Live delivery continues with the next offset, once.
    api_publish(t.addr(), "feed", json!("live")).await;
    let push = client.push().await;
    assert_eq!(
        (push["offset"].as_u64(), push["data"].as_str()),
        (Some(1002), Some("live"))
    );
}

#[tokio::test]
async fn recovery_while_publishing_has_no_gap_and_no_duplicate() {
    let t = TestServer::start(|_| {}).await;
    api_publish(t.addr(), "busy", json!(0)).await;
    let mut client = t.client().await;
    let page = client
        .ok(json!({"cmd": "history", "channel": "busy", "limit": 1}))
        .await;
    let epoch = page["epoch"].clone();
    let addr = t.addr();
    // Publish 300 more concurrently with the re-subscribe.
    let publisher = tokio::spawn(async move {
        for i in 1..=300 {
            api_publish(addr, "busy", json!(i)).await;
        }
    });
    let sub = client
        .ok(json!({"cmd": "subscribe", "channel": "busy", "since": {"epoch": epoch, "offset": 1}}))
        .await;
    assert_eq!(sub["recovered"], true);
    let mut got = offsets(&sub["publications"]);
    publisher.await.unwrap();
    while got.last().copied().unwrap_or(1) < 301 {
        let push = client.push().await;
        got.push(push["offset"].as_u64().unwrap());
    }
    assert_eq!(
        got,
        (2..=301).collect::<Vec<_>>(),
        "every offset exactly once, in order"
    );
}

#[tokio::test]
async fn recovery_that_cannot_be_exact_says_so() {
    let t = TestServer::start(|s| s.history_size = 10).await;
    for i in 0..50 {
        api_publish(t.addr(), "short", json!(i)).await;
    }
    let mut client = t.client().await;
    let page = client
        .ok(json!({"cmd": "history", "channel": "short"}))
        .await;
    assert_eq!(
        offsets(&page["publications"]),
        (41..=50).collect::<Vec<_>>()
    );
    let epoch = page["epoch"].clone();
    // Too far back: the history no longer holds offsets 6..40.
    let sub = client
        .ok(json!({"cmd": "subscribe", "channel": "short", "since": {"epoch": epoch, "offset": 5}}))
        .await;
    assert_eq!(
        (
            sub["recovered"].as_bool(),
            sub["publications"].as_array().unwrap().len()
        ),
        (Some(false), 0)
    );
    assert_eq!(sub["offset"], 50);
    // Another epoch: offsets mean nothing.
    let mut other = t.client().await;
    let sub = other.ok(json!({"cmd": "subscribe", "channel": "short", "since": {"epoch": "elsewhere", "offset": 49}})).await;
    assert_eq!(sub["recovered"], false);
}

#[tokio::test]
async fn history_pages_backwards_over_ws_and_http() {
    let t = TestServer::start(|_| {}).await;
    for i in 1..=120 {
        api_publish(t.addr(), "log", json!(i)).await;
    }
    let mut c = t.client().await;
    let newest = c.ok(json!({"cmd": "history", "channel": "log"})).await;
    assert_eq!(
        offsets(&newest["publications"]),
        (71..=120).collect::<Vec<_>>()
    );
    let older = c
        .ok(json!({"cmd": "history", "channel": "log", "before": 71, "limit": 30}))
        .await;
    assert_eq!(
        offsets(&older["publications"]),
        (41..=70).collect::<Vec<_>>()
    );
    let after = c
        .ok(json!({"cmd": "history", "channel": "log", "after": 115}))
        .await;
    assert_eq!(
        offsets(&after["publications"]),
        (116..=120).collect::<Vec<_>>()
    );
    let (status, body) = http(
        t.addr(),
        "GET",
        "/api/channels/log/history?limit=5&before=11",
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(offsets(&page["publications"]), (6..=10).collect::<Vec<_>>());
    let (status, _) = http(
        t.addr(),
        "GET",
        "/api/channels/log/history?limit=ten",
        &[],
        None,
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn presence_joins_leaves_and_lists() {
    let t = TestServer::start(|_| {}).await;
    let mut alice = t.client().await;
    alice.ok(json!({"cmd": "connect", "name": "alice"})).await;
    alice
        .ok(json!({"cmd": "subscribe", "channel": "room"}))
        .await;
    let mut bob = t.client().await;
    bob.ok(json!({"cmd": "connect", "name": "bob"})).await;
    bob.ok(json!({"cmd": "subscribe", "channel": "room"})).await;
    let join = alice.push().await;
    assert_eq!(
        (join["push"].as_str(), join["member"]["name"].as_str()),
        (Some("join"), Some("bob"))
    );
    let members = alice
        .ok(json!({"cmd": "presence", "channel": "room"}))
        .await;
    let names: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    let (status, body) = http(t.addr(), "GET", "/api/channels/room/presence", &[], None).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("\"alice\"") && body.contains("\"bob\""),
        "{body}"
    );
    bob.ok(json!({"cmd": "typing", "channel": "room"})).await;
    let typing = alice.push().await;
    assert_eq!(
        (typing["push"].as_str(), typing["member"]["name"].as_str()),
        (Some("typing"), Some("bob"))
    );
    drop(bob);
    let leave = alice.push().await;
    assert_eq!(
        (leave["push"].as_str(), leave["member"]["name"].as_str()),
        (Some("leave"), Some("bob"))
    );
    // A third user may not take alice's name in that room.
    let mut mallory = t.client().await;
    mallory.ok(json!({"cmd": "connect", "name": "alice"})).await;
    let taken = mallory
        .call(json!({"cmd": "subscribe", "channel": "room"}))
        .await;
    assert_eq!(taken["error"]["code"], "name_taken");
}

#[tokio::test]
async fn a_restart_keeps_history_epoch_and_offsets() {
    let t = TestServer::start(|_| {}).await;
    let mut epoch = Value::Null;
    for i in 1..=10 {
        epoch = api_publish(t.addr(), "durable", json!(i)).await["epoch"].clone();
    }
    let t = t.restart().await;
    let mut c = t.client().await;
    let page = c.ok(json!({"cmd": "history", "channel": "durable"})).await;
    assert_eq!(page["epoch"], epoch);
    assert_eq!(offsets(&page["publications"]), (1..=10).collect::<Vec<_>>());
    assert_eq!(
        api_publish(t.addr(), "durable", json!(11)).await["offset"],
        11
    );
}

#[tokio::test]
async fn a_slow_consumer_is_cut_off_while_others_receive_everything() {
    let t = TestServer::start(|s| {
        s.queue_size = 8;
        s.max_data_size = 64 << 10;
    })
    .await;
    let mut fast = t.client().await;
    fast.ok(json!({"cmd": "subscribe", "channel": "firehose"}))
        .await;
    let mut slow = t.client().await;
    slow.ok(json!({"cmd": "subscribe", "channel": "firehose"}))
        .await;
    // `slow` now reads nothing while ~40 MB are published.
    let big = "x".repeat(32 << 10);
    const N: u64 = 1200;
    let addr = t.addr();
    let publisher = tokio::spawn(async move {
        for i in 1..=N {
            api_publish(addr, "firehose", json!({"i": i, "pad": big})).await;
        }
    });
    for expected in 1..=N {
        let push = fast.push_of("publication").await;
        assert_eq!(push["offset"].as_u64(), Some(expected));
    }
    publisher.await.unwrap();
    assert_eq!(slow.closed_with().await, 1013);
    let (_, metrics) = http(t.addr(), "GET", "/metrics", &[], None).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("duplex_slow_consumers_dropped_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test]
async fn bad_input_gets_an_error_and_the_connection_goes_on() {
    let t = TestServer::start(|s| s.max_data_size = 100).await;
    let mut c = t.client().await;
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "bad_request"),
        (r#"{"id": 1, "cmd": "fly"}"#.into(), "bad_request"),
        (r#"{"id": 2, "cmd": "subscribe"}"#.into(), "bad_request"),
        (
            r#"{"id": 3, "cmd": "history", "channel": "c", "limit": "ten"}"#.into(),
            "bad_request",
        ),
        (
            r#"{"id": 4, "cmd": "subscribe", "channel": "no spaces"}"#.into(),
            "bad_request",
        ),
        (
            json!({"id": 5, "cmd": "publish", "channel": "c", "data": "y".repeat(200)}).to_string(),
            "too_large",
        ),
        (
            r#"{"id": 6, "cmd": "typing", "channel": "c"}"#.into(),
            "not_subscribed",
        ),
        (
            r#"{"id": 7, "cmd": "kick", "channel": "c", "name": "x"}"#.into(),
            "forbidden",
        ),
        (
            r#"{"id": 8, "cmd": "unsubscribe", "channel": "c"}"#.into(),
            "not_subscribed",
        ),
    ];
    for (text, code) in cases {
        let reply = c.raw(&text).await;
        assert_eq!(reply["error"]["code"], code, "{text} -> {reply}");
        assert!(!reply["error"]["message"].as_str().unwrap().is_empty());
        c.ok(json!({"cmd": "ping"})).await;
    }
    c.ws.send(duplex::Message::binary(vec![1, 2, 3]))
        .await
        .unwrap();
    let reply = c.next_value().await.unwrap();
    assert_eq!(reply["error"]["code"], "bad_request");
    c.ok(json!({"cmd": "ping"})).await;
    // Others are unaffected.
    assert_eq!(api_publish(t.addr(), "c", json!(1)).await["offset"], 1);
}

#[tokio::test]
async fn abuse_is_limited() {
    let t = TestServer::start(|s| {
        s.rate_limit = 1.0;
        s.rate_burst = 5;
        s.max_subscriptions = 2;
    })
    .await;
    let mut c = t.client().await;
    c.ok(json!({"cmd": "subscribe", "channel": "a"})).await;
    c.ok(json!({"cmd": "subscribe", "channel": "b"})).await;
    let over = c.call(json!({"cmd": "subscribe", "channel": "c"})).await;
    assert_eq!(over["error"]["code"], "limit_exceeded");
    let mut limited = false;
    for _ in 0..5 {
        let r = c.raw(r#"{"id": 99, "cmd": "ping"}"#).await;
        if r["error"]["code"] == "rate_limited" {
            limited = true;
            assert_eq!(r["id"], 99, "the refusal names the refused command");
        }
    }
    assert!(limited, "a burst past the limit must be refused");
    // A message over the hub's frame limit closes with 1009.
    let t = TestServer::start(|s| s.max_message_size = 1024).await;
    let mut c = t.client().await;
    c.ws.send("z".repeat(4096)).await.unwrap();
    assert_eq!(c.closed_with().await, 1009);
}

#[tokio::test]
async fn tokens_decide_identity_and_permissions() {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let secret = "test-secret";
    let t = TestServer::start(|s| {
        s.jwt_secret = Some(secret.into());
        s.allow_anonymous = false;
    })
    .await;
    let token = |claims: Value| {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let mut anon = t.client().await;
    let r = anon
        .call(json!({"cmd": "subscribe", "channel": "chat:x"}))
        .await;
    assert_eq!(r["error"]["code"], "unauthorized");
    let r = anon
        .call(json!({"cmd": "connect", "token": "forged.token.here"}))
        .await;
    assert_eq!(r["error"]["code"], "unauthorized");

    let mut user = t.client().await;
    let me = user.ok(json!({"cmd": "connect", "token": token(json!({"sub": "u1", "name": "Ann", "publish": ["chat:*"]}))})).await;
    assert_eq!(
        (me["user"].as_str(), me["name"].as_str()),
        (Some("u1"), Some("Ann"))
    );
    user.ok(json!({"cmd": "subscribe", "channel": "chat:x"}))
        .await;
    let denied = user
        .call(json!({"cmd": "publish", "channel": "news", "data": 1}))
        .await;
    assert_eq!(denied["error"]["code"], "forbidden");
    user.ok(json!({"cmd": "publish", "channel": "chat:x", "data": 1}))
        .await;
    assert_eq!(user.push().await["from"]["user"], "u1");

    let mut admin = t.client().await;
    admin
        .ok(json!({"cmd": "connect", "token": token(json!({"sub": "boss", "admin": true}))}))
        .await;
    admin
        .ok(json!({"cmd": "subscribe", "channel": "chat:x"}))
        .await;
    let kicked = admin
        .ok(json!({"cmd": "kick", "channel": "chat:x", "name": "Ann", "ban": true}))
        .await;
    assert_eq!(kicked["kicked"], 1);
    let push = user.push_of("kicked").await;
    assert_eq!(push["channel"], "chat:x");
    let again = user
        .call(json!({"cmd": "subscribe", "channel": "chat:x"}))
        .await;
    assert_eq!(again["error"]["code"], "banned");
}

#[tokio::test]
async fn the_api_needs_its_key_when_one_is_set_and_deduplicates_retries() {
    let t = TestServer::start(|s| s.api_key = Some("k3y".into())).await;
    let body = r#"{"channel": "n", "data": 1}"#;
    let (status, text) = http(t.addr(), "POST", "/api/publish", &[], Some(body)).await;
    assert_eq!(status, 401, "{text}");
    let auth = [
        ("Authorization", "Bearer k3y"),
        ("Idempotency-Key", "retry-1"),
    ];
    let (status, first) = http(t.addr(), "POST", "/api/publish", &auth, Some(body)).await;
    assert_eq!(status, 200, "{first}");
    let (_, second) = http(t.addr(), "POST", "/api/publish", &auth, Some(body)).await;
    assert_eq!(
        first, second,
        "a retry with the same key must not publish twice"
    );
    let (status, text) = http(
        t.addr(),
        "POST",
        "/api/publish",
        &[("Authorization", "Bearer k3y")],
        Some("{\"channel\":"),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    let (_, metrics) = http(t.addr(), "GET", "/metrics", &[], None).await;
    assert!(metrics.contains("duplex_publications_total 1"), "{metrics}");
}

#[tokio::test]
async fn shutdown_closes_clients_with_1001() {
    let t = TestServer::start(|_| {}).await;
    let mut c = t.client().await;
    c.ok(json!({"cmd": "subscribe", "channel": "x"})).await;
    let closing = tokio::spawn(async move { c.closed_with().await });
    t.server.shutdown().await;
    assert_eq!(
        tokio::time::timeout(LIMIT, closing).await.unwrap().unwrap(),
        1001
    );
}

/// An echo connection waiting for its next message hears about the
/// shutdown too (it checks a flag per message and registers for the
/// shutdown only when it goes to sleep).
#[tokio::test]
async fn shutdown_closes_echo_clients_with_1001() {
    let t = TestServer::start(|_| {}).await;
    let mut ws = duplex::connect(&format!("ws://{}/echo", t.addr()))
        .await
        .unwrap();
    ws.send("before").await.unwrap();
    let echo = tokio::time::timeout(LIMIT, ws.recv()).await.unwrap();
    assert_eq!(echo.unwrap().unwrap(), duplex::Message::text("before"));
    let closing = tokio::spawn(async move {
        while let Some(Ok(msg)) = ws.recv().await {
            if let duplex::Message::Close(frame) = msg {
                return frame.map(|f| f.code.0);
            }
        }
        None
    });
    t.server.shutdown().await;
    let code = tokio::time::timeout(LIMIT, closing).await.unwrap().unwrap();
    assert_eq!(code, Some(1001));
}

#[tokio::test]
async fn browsers_from_other_origins_are_refused_when_a_list_is_set() {
    let t = TestServer::start(|s| s.allowed_origins = vec!["https://chat.example".into()]).await;
    let url = format!("ws://{}/ws", t.addr());
    let refused = duplex::ClientBuilder::new()
        .header("Origin", "https://evil.example")
        .connect(&url)
        .await;
    match refused {
        Err(duplex::Error::Handshake(e)) => assert!(e.to_string().contains("403"), "{e}"),
        other => panic!("expected a 403, got {:?}", other.map(|_| ())),
    }
    let allowed = duplex::ClientBuilder::new()
        .header("Origin", "https://chat.example")
        .connect(&url)
        .await;
    assert!(allowed.is_ok());
    // Programs that send no Origin are not browsers: allowed.
    assert!(duplex::ClientBuilder::new().connect(&url).await.is_ok());
}

#[tokio::test]
async fn a_reconnecting_session_keeps_its_name_while_the_old_connection_lingers() {
    let t = TestServer::start(|_| {}).await;
    let session = "0123456789abcdef0123";
    let mut old = t.client().await;
    let me = old
        .ok(json!({"cmd": "connect", "name": "ann", "session": session}))
        .await;
    assert!(me["user"].as_str().unwrap().starts_with("anon-"));
    assert!(
        !me["user"].as_str().unwrap().contains(session),
        "the secret is not shown"
    );
    old.ok(json!({"cmd": "subscribe", "channel": "chat:r"}))
        .await;
    // The old connection is still open (its network died silently); the
    // same session comes back on a new one.
    let mut new = t.client().await;
    new.ok(json!({"cmd": "connect", "name": "ann", "session": session}))
        .await;
    new.ok(json!({"cmd": "subscribe", "channel": "chat:r"}))
        .await;
    // Someone else still may not take the name.
    let mut other = t.client().await;
    other
        .ok(json!({"cmd": "connect", "name": "ann", "session": "another-session-secret"}))
        .await;
    let taken = other
        .call(json!({"cmd": "subscribe", "channel": "chat:r"}))
        .await;
    assert_eq!(taken["error"]["code"], "name_taken");
    let bad = other
        .raw(r#"{"id": 5, "cmd": "connect", "session": "short"}"#)
        .await;
    assert_eq!(bad["error"]["code"], "bad_request");
}

/// Publishers at once on several channels put publications of several
/// channels in one commit, and each subscriber gets each channel's share as
/// one queue entry. Subscribers there all along and others recovering with
/// `since` while it goes on (a recovery can overlap a queued batch) still
/// get every offset of each of their channels exactly once, in order.
/// Randomized: the seed is in every failure.
#[tokio::test]
async fn publishers_at_once_reach_steady_and_recovering_subscribers_exactly_once() {
    use rand::Rng;
    use std::collections::HashMap;
    const CHANNELS: [&str; 3] = ["mix-a", "mix-b", "mix-c"];
    let (mut rng, why) = seeded();
    let t = TestServer::start(|s| {
        s.rate_limit = 1e6;
        s.rate_burst = 1_000_000;
    })
    .await;
    // One publication each first, so that every channel has an epoch.
    let mut epochs = HashMap::new();
    for channel in CHANNELS {
        let receipt = api_publish(t.addr(), channel, json!("first")).await;
        epochs.insert(channel, receipt["epoch"].clone());
    }
    let mut steady = Vec::new();
    for _ in 0..rng.random_range(1..4) {
        let mut client = t.client().await;
        let mut mine = Vec::new();
        for channel in CHANNELS {
            if rng.random_bool(0.6) || (mine.is_empty() && channel == CHANNELS[2]) {
                let sub = client
                    .ok(json!({"cmd": "subscribe", "channel": channel}))
                    .await;
                assert_eq!(sub["offset"], 1, "{why}");
                mine.push(channel);
            }
        }
        steady.push((client, mine));
    }
    let plans: Vec<Vec<&str>> = (0..rng.random_range(2..9))
        .map(|_| {
            (0..rng.random_range(1..40))
                .map(|_| CHANNELS[rng.random_range(0..CHANNELS.len())])
                .collect()
        })
        .collect();
    let mut last: HashMap<&str, u64> = CHANNELS.iter().map(|c| (*c, 1)).collect();
    for channel in plans.iter().flatten() {
        *last.get_mut(channel).unwrap() += 1;
    }
    let mut publishers = Vec::new();
    for plan in plans {
        let mut client = t.client().await;
        publishers.push(tokio::spawn(async move {
            for channel in plan {
                client
                    .ok(json!({"cmd": "publish", "channel": channel, "data": {"on": channel}}))
                    .await;
            }
        }));
    }
    let mut recovering = Vec::new();
    for _ in 0..rng.random_range(1..4) {
        let channel = CHANNELS[rng.random_range(0..CHANNELS.len())];
        let (yields, addr, epoch) = (rng.random_range(0..200), t.addr(), epochs[channel].clone());
        recovering.push(tokio::spawn(async move {
            // Back at a random point of the publishing.
            for _ in 0..yields {
                tokio::task::yield_now().await;
            }
            let mut client = HubClient::connect(addr).await;
            let since = json!({"epoch": epoch, "offset": 1});
            let sub = client
                .ok(json!({"cmd": "subscribe", "channel": channel, "since": since}))
                .await;
            // Nothing of the channel comes before the subscription's reply.
            let early: Vec<&Value> = client
                .pushes
                .iter()
                .filter(|p| p["channel"] == channel)
                .collect();
            assert!(early.is_empty(), "pushed before the reply: {early:?}");
            (client, channel, sub)
        }));
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    // Every offset after 1, once, in order: what the reply recovered, then
    // what was pushed.
    let expected = |channel: &str| (2..=last[channel]).collect::<Vec<u64>>();
    for task in recovering {
        let (mut client, channel, sub) = task.await.unwrap();
        assert_eq!(sub["recovered"], true, "{why}");
        let mut got = offsets(&sub["publications"]);
        while got.last().copied().unwrap_or(1) < last[channel] {
            let push = client.push_of("publication").await;
            got.push(push["offset"].as_u64().unwrap());
        }
        assert_eq!(got, expected(channel), "recovering on {channel}: {why}");
    }
    for (mut client, mine) in steady {
        let mut got: HashMap<&str, Vec<u64>> = mine.iter().map(|c| (*c, Vec::new())).collect();
        while mine
            .iter()
            .any(|c| got[c].last().copied().unwrap_or(1) < last[c])
        {
            let push = client.push_of("publication").await;
            let channel = push["channel"].as_str().unwrap();
            let list = got.get_mut(channel).expect("only its channels");
            list.push(push["offset"].as_u64().unwrap());
        }
        for channel in mine {
            assert_eq!(got[channel], expected(channel), "on {channel}: {why}");
        }
    }
}

/// One client sends a random mix of commands without waiting for replies:
/// publishes (some refused, some without `id`) and, at a rate chosen per
/// run (none in some runs, so that the server's window of publishes in
/// flight fills), pings and history reads. Every answer comes in command
/// order; publications are stored in the order sent, with exactly the
/// offsets expected; a command after publishes sees them stored; the
/// publisher, subscribed to one channel, gets each reply before the push of
/// its publication; and a subscriber gets exactly what was stored, in order.
#[tokio::test]
async fn commands_sent_without_waiting_are_answered_in_order() {
    use rand::Rng;
    use std::collections::HashSet;
    const CHANNELS: [&str; 2] = ["flight-a", "flight-b"];
    /// What the answer to one command must be.
    #[derive(Debug)]
    enum Expect {
        Published {
            k: usize,
            offset: u64,
        },
        Refused(&'static str),
        Done,
        /// A history read: the channel's offset once every earlier
        /// publish is stored.
        Offset(u64),
    }
    let (mut rng, why) = seeded();
    let t = TestServer::start(|s| {
        s.max_data_size = 100;
        s.rate_limit = 1e6;
        s.rate_burst = 1_000_000;
    })
    .await;
    let mut subscriber = t.client().await;
    for channel in CHANNELS {
        subscriber
            .ok(json!({"cmd": "subscribe", "channel": channel, "presence": false}))
            .await;
    }
    let mut publisher = t.client().await;
    publisher
        .ok(json!({"cmd": "subscribe", "channel": CHANNELS[0], "presence": false}))
        .await;
    let others = [0.0, 0.02, 0.1][rng.random_range(0..3)];
    let mut stored = [0u64; 2];
    // Offsets on the first channel whose publish has a reply to wait for.
    let mut replied_first = HashSet::new();
    // Per answered command, in order: its id (None: an error without id)
    // and what it must say.
    let mut expected = Vec::new();
    let count = rng.random_range(1..300);
    for n in 0..count as u64 {
        let k = rng.random_range(0..CHANNELS.len());
        let channel = CHANNELS[k];
        let with_id = rng.random_bool(0.8);
        let id = with_id.then_some(n + 1);
        let (mut command, expect) = if rng.random_bool(others) {
            if rng.random_bool(0.5) {
                (json!({"cmd": "ping"}), with_id.then_some(Expect::Done))
            } else {
                (
                    json!({"cmd": "history", "channel": channel, "limit": 1}),
                    with_id.then_some(Expect::Offset(stored[k])),
                )
            }
        } else {
            match rng.random_range(0..20) {
                0 => (
                    json!({"cmd": "publish", "channel": "no spaces", "data": n}),
                    Some(Expect::Refused("bad_request")),
                ),
                1 => (
                    json!({"cmd": "publish", "channel": channel, "data": "y".repeat(200)}),
                    Some(Expect::Refused("too_large")),
                ),
                _ => {
                    stored[k] += 1;
                    let offset = stored[k];
                    if with_id && k == 0 {
                        replied_first.insert(offset);
                    }
                    (
                        json!({"cmd": "publish", "channel": channel, "data": {"n": n}}),
                        with_id.then_some(Expect::Published { k, offset }),
                    )
                }
            }
        };
        if let Some(id) = id {
            command["id"] = json!(id);
        }
        publisher.ws.send(command.to_string()).await.unwrap();
        if let Some(expect) = expect {
            // Errors are answered with or without an id.
            expected.push((id, expect));
        }
    }
    // The highest offset of the first channel answered so far, and the
    // offsets of its pushes.
    let mut answered_first = 0;
    let mut pushed_first = Vec::new();
    for (id, expect) in expected {
        let reply = loop {
            let v = publisher
                .next_value()
                .await
                .expect("the connection stays open");
            if v.get("push").is_none() {
                break v;
            }
            let offset = v["offset"].as_u64().unwrap();
            assert!(
                !replied_first.contains(&offset) || offset <= answered_first,
                "the push of {offset} came before its publish's reply: {why}"
            );
            pushed_first.push(offset);
        };
        assert_eq!(
            reply["id"],
            json!(id),
            "{reply}, expected {expect:?}: {why}"
        );
        match expect {
            Expect::Published { k, offset } => {
                assert_eq!(reply["result"]["channel"], CHANNELS[k], "{why}");
                assert_eq!(reply["result"]["offset"], offset, "{reply}: {why}");
                if k == 0 {
                    answered_first = offset;
                }
            }
            Expect::Refused(code) => assert_eq!(reply["error"]["code"], code, "{why}"),
            Expect::Done => assert_eq!(reply["result"], json!({}), "{why}"),
            Expect::Offset(offset) => {
                assert_eq!(reply["result"]["offset"], offset, "{reply}: {why}")
            }
        }
    }
    while (pushed_first.len() as u64) < stored[0] {
        let push = publisher.push_of("publication").await;
        pushed_first.push(push["offset"].as_u64().unwrap());
    }
    assert_eq!(pushed_first, (1..=stored[0]).collect::<Vec<_>>(), "{why}");
    // Every stored publication reaches the subscriber once, in order,
    // with the data in the order it was sent.
    for (k, channel) in CHANNELS.iter().enumerate() {
        let history = publisher
            .ok(json!({"cmd": "history", "channel": channel, "limit": 1000}))
            .await;
        assert_eq!(history["offset"], stored[k], "{why}");
    }
    let mut got: [Vec<(u64, u64)>; 2] = Default::default();
    while got.iter().zip(stored).any(|(g, s)| (g.len() as u64) < s) {
        let push = subscriber.push_of("publication").await;
        let k = CHANNELS.iter().position(|c| push["channel"] == *c).unwrap();
        let offset = push["offset"].as_u64().unwrap();
        got[k].push((offset, push["data"]["n"].as_u64().unwrap()));
    }
    for (k, got) in got.iter().enumerate() {
        let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, (1..=stored[k]).collect::<Vec<_>>(), "{why}");
        assert!(got.windows(2).all(|w| w[0].1 < w[1].1), "{got:?}: {why}");
    }
}

/// A shutdown while publishes are in flight: every publication stored is
/// answered before the 1001 close, so that no client publishes it again.
#[tokio::test]
async fn publishes_stored_before_a_shutdown_are_answered() {
    use rand::Rng;
    let (mut rng, why) = seeded();
    let t = TestServer::start(|s| {
        s.rate_limit = 1e6;
        s.rate_burst = 1_000_000;
    })
    .await;
    let mut c = t.client().await;
    let count = rng.random_range(1..200u64);
    for id in 1..=count {
        let publish = json!({"id": id, "cmd": "publish", "channel": "down", "data": id});
        c.ws.send(publish.to_string()).await.unwrap();
    }
    let reading = tokio::spawn(async move {
        let mut offsets = Vec::new();
        while let Some(reply) = c.next_value().await {
            assert_eq!(reply["id"], offsets.len() + 1, "{reply}");
            offsets.push(reply["result"]["offset"].as_u64().expect("stored"));
        }
        (offsets, c.closed.map(|(code, _)| code))
    });
    let t = t.restart().await;
    let (offsets, closed) = tokio::time::timeout(LIMIT, reading).await.unwrap().unwrap();
    assert_eq!(closed, Some(1001), "{why}");
    let mut c = t.client().await;
    let history = c
        .ok(json!({"cmd": "history", "channel": "down", "limit": 1000}))
        .await;
    let stored = history["offset"].as_u64().unwrap_or(0);
    assert_eq!(
        offsets,
        (1..=stored).collect::<Vec<_>>(),
        "{count} sent: {why}"
    );
}
