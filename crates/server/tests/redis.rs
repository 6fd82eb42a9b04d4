//! Several nodes sharing channels through a real `redis-server`: delivery
//! across nodes, exact recovery on any node, and what happens when Redis
//! or the way to it fails. Every random choice comes from a seed printed
//! with each failure (`DUPLEX_TEST_SEED=<n>` replays it).

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};
use support::redis::{Proxy, RedisServer};
use support::*;

async fn node(redis_urls: &[String]) -> TestServer {
    let urls = redis_urls.to_vec();
    TestServer::start(move |s| s.redis = urls).await
}

/// Three nodes sharing one Redis.
async fn three_nodes(redis: &RedisServer) -> [TestServer; 3] {
    let urls = [redis.url()];
    [node(&urls).await, node(&urls).await, node(&urls).await]
}

/// Waits (bounded) until `check` holds, polling an observable state.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + LIMIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn health(t: &TestServer) -> u16 {
    http(t.addr(), "GET", "/healthz", &[], None).await.0
}

/// Reads `n` publications of `channel` and checks they are the offsets
/// `from..from+n`, in order, once each.
async fn expect_offsets(
    client: &mut HubClient,
    channel: &str,
    from: u64,
    n: u64,
    why: &str,
) -> Vec<Value> {
    let mut got = Vec::new();
    for want in from..from + n {
        let p = client.push_of("publication").await;
        assert_eq!(p["channel"], channel, "{why}");
        assert_eq!(p["offset"], want, "{why}: {p}");
        got.push(p);
    }
    got
}

#[tokio::test]
async fn publications_reach_every_node_in_order_exactly_once() {
    let (mut rng, why) = seeded();
    let redis = RedisServer::start().await;
    let nodes = three_nodes(&redis).await;
    // Two subscribers per node.
    let mut subscribers = Vec::new();
    for n in &nodes {
        for _ in 0..2 {
            let mut c = n.client().await;
            let sub = c.ok(json!({"cmd": "subscribe", "channel": "room"})).await;
            assert_eq!(sub["offset"], 0, "{why}");
            subscribers.push(c);
        }
    }
    // Publishers on random nodes, over WebSockets and the HTTP API.
    let mut publishers = Vec::new();
    for n in &nodes {
        publishers.push(n.client().await);
    }
    let total = 120u64;
    let mut sent: HashMap<u64, Value> = HashMap::new();
    for i in 0..total {
        let at = rng.random_range(0..nodes.len());
        let data = json!({"i": i, "at": at});
        let offset = if rng.random_bool(0.2) {
            api_publish(nodes[at].addr(), "room", data.clone()).await["offset"]
                .as_u64()
                .unwrap()
        } else {
            publishers[at]
                .ok(json!({"cmd": "publish", "channel": "room", "data": data}))
                .await["offset"]
                .as_u64()
                .unwrap()
        };
        assert!(
            sent.insert(offset, data).is_none(),
            "{why}: offset {offset} given twice"
        );
    }
    assert_eq!(sent.len() as u64, total);
    for (k, c) in subscribers.iter_mut().enumerate() {
        let got = expect_offsets(c, "room", 1, total, &format!("{why}, subscriber {k}")).await;
        for p in got {
            assert_eq!(p["data"], sent[&p["offset"].as_u64().unwrap()], "{why}");
        }
    }
    // And nothing more: a ping answered proves the queue held no duplicate.
    for c in &mut subscribers {
        c.ok(json!({"cmd": "ping"})).await;
        assert!(c.pushes.is_empty(), "{why}: extra pushes {:?}", c.pushes);
    }
}

#[tokio::test]
async fn only_nodes_with_subscribers_receive_a_channel() {
    let redis = RedisServer::start().await;
    let urls = [redis.url()];
    let (a, b) = (node(&urls).await, node(&urls).await);
    let announce = duplex_server::redis::keys::ChannelKeys::of("quiet").announce;
    assert_eq!(redis.subscribers(&announce).await, 0);
    let mut on_a = a.client().await;
    on_a.ok(json!({"cmd": "subscribe", "channel": "quiet"}))
        .await;
    let mut again_on_a = a.client().await;
    again_on_a
        .ok(json!({"cmd": "subscribe", "channel": "quiet"}))
        .await;
    // One Redis subscription per node, however many local subscribers.
    assert_eq!(redis.subscribers(&announce).await, 1);
    // B has none: publishing through B reaches A's subscriber, not B.
    let mut on_b = b.client().await;
    on_b.ok(json!({"cmd": "publish", "channel": "quiet", "data": 1}))
        .await;
    assert_eq!(on_a.push_of("publication").await["offset"], 1);
    on_b.ok(json!({"cmd": "subscribe", "channel": "quiet"}))
        .await;
    assert_eq!(redis.subscribers(&announce).await, 2);
    // The last local subscriber leaving unsubscribes the node.
    on_a.ok(json!({"cmd": "unsubscribe", "channel": "quiet"}))
        .await;
    assert_eq!(
        redis.subscribers(&announce).await,
        2,
        "one is still subscribed on A"
    );
    drop(again_on_a);
    eventually("A to unsubscribe in Redis", || async {
        redis.subscribers(&announce).await == 1
    })
    .await;
    let metrics = http(a.addr(), "GET", "/metrics", &[], None).await.1;
    assert!(metrics.contains("duplex_broker_channels 0"), "{metrics}");
}

#[tokio::test]
async fn recovery_on_another_node_is_exact() {
    let (mut rng, why) = seeded();
    let redis = RedisServer::start().await;
    let nodes = three_nodes(&redis).await;
    let mut publishers = [
        nodes[0].client().await,
        nodes[1].client().await,
        nodes[2].client().await,
    ];
    let before = rng.random_range(0..10u64);
    for i in 0..before {
        publishers[0]
            .ok(json!({"cmd": "publish", "channel": "feed", "data": i}))
            .await;
    }
    let mut reader = nodes[0].client().await;
    let sub = reader
        .ok(json!({"cmd": "subscribe", "channel": "feed"}))
        .await;
    let (epoch, offset) = (sub["epoch"].clone(), sub["offset"].as_u64().unwrap());
    assert_eq!(offset, before, "{why}");
    drop(reader);
    let missed = rng.random_range(1..40u64);
    for i in 0..missed {
        let at = rng.random_range(1..3);
        publishers[at]
            .ok(json!({"cmd": "publish", "channel": "feed", "data": before + i}))
            .await;
    }
    let back_on = rng.random_range(1..3);
    let mut reader = nodes[back_on].client().await;
    let sub = reader
        .ok(json!({"cmd": "subscribe", "channel": "feed", "since": {"epoch": epoch, "offset": offset}}))
        .await;
    assert_eq!(sub["recovered"], true, "{why}: {sub}");
    let offsets: Vec<u64> = sub["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(
        offsets,
        (offset + 1..=offset + missed).collect::<Vec<_>>(),
        "{why}"
    );
    // Live delivery continues after the recovered ones, without repeats.
    publishers[0]
        .ok(json!({"cmd": "publish", "channel": "feed", "data": "live"}))
        .await;
    let live = reader.push_of("publication").await;
    assert_eq!(live["offset"], offset + missed + 1, "{why}");
    // Another epoch cannot be recovered, and says so.
    let mut stranger = nodes[2].client().await;
    let sub = stranger
        .ok(json!({"cmd": "subscribe", "channel": "feed", "since": {"epoch": "other", "offset": 1}}))
        .await;
    assert_eq!(sub["recovered"], false, "{why}");
    // History reads the same on every node.
    let pages: Vec<String> = futures_util::future::join_all(nodes.iter().map(|n| {
        http(
            n.addr(),
            "GET",
            "/api/channels/feed/history?limit=1000",
            &[],
            None,
        )
    }))
    .await
    .into_iter()
    .map(|(status, body)| {
        assert_eq!(status, 200, "{body}");
        body
    })
    .collect();
    assert!(pages.windows(2).all(|w| w[0] == w[1]), "{why}: {pages:?}");
}

#[tokio::test]
async fn history_is_capped_and_a_recovery_past_it_says_so() {
    let redis = RedisServer::start().await;
    let urls = [redis.url()];
    let a = TestServer::start({
        let urls = urls.to_vec();
        move |s| {
            s.redis = urls;
            s.history_size = 5;
        }
    })
    .await;
    let mut c = a.client().await;
    for i in 0..12 {
        c.ok(json!({"cmd": "publish", "channel": "cap", "data": i}))
            .await;
    }
    let page = c
        .ok(json!({"cmd": "history", "channel": "cap", "limit": 100}))
        .await;
    assert_eq!(offsets(&page["publications"]), vec![8, 9, 10, 11, 12]);
    let epoch = page["epoch"].clone();
    let mut late = a.client().await;
    let sub = late
        .ok(json!({"cmd": "subscribe", "channel": "cap", "since": {"epoch": epoch, "offset": 2}}))
        .await;
    assert_eq!(sub["recovered"], false, "{sub}");
    let sub = c
        .ok(json!({"cmd": "subscribe", "channel": "cap", "since": {"epoch": epoch, "offset": 9}}))
        .await;
    assert_eq!(sub["recovered"], true, "{sub}");
    assert_eq!(sub["publications"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_retried_publish_is_stored_once_whichever_node_takes_it() {
    let redis = RedisServer::start().await;
    let urls = [redis.url()];
    let (a, b) = (node(&urls).await, node(&urls).await);
    let body = json!({"channel": "orders", "data": {"n": 1}}).to_string();
    let headers = [("Idempotency-Key", "order-1")];
    let first = http(a.addr(), "POST", "/api/publish", &headers, Some(&body)).await;
    let again = http(b.addr(), "POST", "/api/publish", &headers, Some(&body)).await;
    assert_eq!((first.0, again.0), (200, 200));
    let (first, again): (Value, Value) = (
        serde_json::from_str(&first.1).unwrap(),
        serde_json::from_str(&again.1).unwrap(),
    );
    assert_eq!(first, again);
    let history = http(b.addr(), "GET", "/api/channels/orders/history", &[], None)
        .await
        .1;
    let history: Value = serde_json::from_str(&history).unwrap();
    assert_eq!(
        history["publications"].as_array().unwrap().len(),
        1,
        "{history}"
    );
}

#[tokio::test]
async fn publishing_without_redis_fails_at_once_and_everything_resumes_after() {
    let mut redis = RedisServer::start().await;
    let urls = [redis.url()];
    let (a, b) = (node(&urls).await, node(&urls).await);
    let mut subscriber = b.client().await;
    subscriber
        .ok(json!({"cmd": "subscribe", "channel": "live"}))
        .await;
    let mut publisher = a.client().await;
    publisher
        .ok(json!({"cmd": "publish", "channel": "live", "data": 1}))
        .await;
    assert_eq!(subscriber.push_of("publication").await["offset"], 1);
    assert_eq!(health(&a).await, 200);

    redis.kill();
    let started = Instant::now();
    let refused = publisher
        .call(json!({"cmd": "publish", "channel": "live", "data": 2}))
        .await;
    assert_eq!(refused["error"]["code"], "unavailable", "{refused}");
    assert!(started.elapsed() < LIMIT);
    let body = json!({"channel": "live", "data": 2}).to_string();
    let (status, text) = http(a.addr(), "POST", "/api/publish", &[], Some(&body)).await;
    assert_eq!(status, 503, "{text}");
    eventually("/healthz to report the outage", || async {
        health(&a).await == 503 && health(&b).await == 503
    })
    .await;

    // Back on its append-only file: nothing acknowledged is lost, the
    // nodes reconnect, and the subscriber that stayed connected receives
    // what is published next.
    redis.restart().await;
    eventually("the nodes to reconnect", || async {
        health(&a).await == 200 && health(&b).await == 200
    })
    .await;
    let published = publisher
        .ok(json!({"cmd": "publish", "channel": "live", "data": 3}))
        .await;
    assert_eq!(published["offset"], 2, "offsets go on from the AOF");
    assert_eq!(subscriber.push_of("publication").await["offset"], 2);
}

#[tokio::test]
async fn a_node_cut_off_from_redis_catches_up_without_waiting_for_the_next_publication() {
    let redis = RedisServer::start().await;
    let proxy = Proxy::start(redis.addr()).await;
    let a = node(&[redis.url()]).await;
    let b = node(&[proxy.url()]).await;
    let mut on_b = b.client().await;
    let sub = on_b
        .ok(json!({"cmd": "subscribe", "channel": "ticks"}))
        .await;
    assert_eq!(sub["offset"], 0);
    let mut publisher = a.client().await;
    publisher
        .ok(json!({"cmd": "publish", "channel": "ticks", "data": 1}))
        .await;
    assert_eq!(on_b.push_of("publication").await["offset"], 1);

    proxy.cut();
    eventually("B to notice", || async { health(&b).await == 503 }).await;
    for i in 2..=30 {
        publisher
            .ok(json!({"cmd": "publish", "channel": "ticks", "data": i}))
            .await;
    }
    assert_eq!(health(&a).await, 200, "A still reaches Redis");
    proxy.heal();
    // Nothing more is published: B must find the 29 it missed by itself.
    expect_offsets(&mut on_b, "ticks", 2, 29, "after the cut").await;
    eventually("B healthy again", || async { health(&b).await == 200 }).await;
    let metrics = http(b.addr(), "GET", "/metrics", &[], None).await.1;
    assert!(metrics.contains("duplex_broker_gaps_total 1"), "{metrics}");
    publisher
        .ok(json!({"cmd": "publish", "channel": "ticks", "data": 31}))
        .await;
    assert_eq!(on_b.push_of("publication").await["offset"], 31);
    on_b.ok(json!({"cmd": "ping"})).await;
    assert!(on_b.pushes.is_empty(), "no repeats: {:?}", on_b.pushes);
}

#[tokio::test]
async fn what_cannot_be_recovered_any_more_closes_subscribers_with_1012() {
    let redis = RedisServer::start().await;
    let proxy = Proxy::start(redis.addr()).await;
    let urls = vec![redis.url()];
    let a = TestServer::start(move |s| {
        s.redis = urls;
        s.history_size = 3;
    })
    .await;
    let behind = vec![proxy.url()];
    let b = TestServer::start(move |s| {
        s.redis = behind;
        s.history_size = 3;
    })
    .await;
    let mut on_b = b.client().await;
    on_b.ok(json!({"cmd": "subscribe", "channel": "fast"}))
        .await;
    proxy.cut();
    eventually("B to notice", || async { health(&b).await == 503 }).await;
    let mut publisher = a.client().await;
    for i in 1..=10 {
        publisher
            .ok(json!({"cmd": "publish", "channel": "fast", "data": i}))
            .await;
    }
    proxy.heal();
    // Only 8-10 are still kept: the subscriber is told to come back.
    assert_eq!(on_b.closed_with().await, 1012);
    let mut back = b.client().await;
    let sub = back
        .ok(json!({"cmd": "subscribe", "channel": "fast", "since": {"epoch": "", "offset": 0}}))
        .await;
    assert_eq!(sub["recovered"], false, "{sub}");
}

#[tokio::test]
async fn channels_spread_over_several_redis_servers() {
    let (r1, r2) = (RedisServer::start().await, RedisServer::start().await);
    let urls = [r1.url(), r2.url()];
    let (a, b) = (node(&urls).await, node(&urls).await);
    let mut sub = b.client().await;
    let mut publisher = a.client().await;
    let channels: Vec<String> = (0..16).map(|i| format!("shard-{i}")).collect();
    for ch in &channels {
        sub.ok(json!({"cmd": "subscribe", "channel": ch})).await;
    }
    for ch in &channels {
        publisher
            .ok(json!({"cmd": "publish", "channel": ch, "data": ch}))
            .await;
    }
    let mut seen = Vec::new();
    for _ in &channels {
        let p = sub.push_of("publication").await;
        assert_eq!(p["offset"], 1);
        seen.push(p["channel"].as_str().unwrap().to_owned());
    }
    seen.sort();
    let mut want = channels.clone();
    want.sort();
    assert_eq!(seen, want);
    // Each server holds only its own channels' history.
    let mut holders = [0, 0];
    for (i, r) in [&r1, &r2].into_iter().enumerate() {
        let mut conn = r.connection().await.unwrap();
        for ch in &channels {
            let exists: bool = ::redis::cmd("EXISTS")
                .arg(duplex_server::redis::keys::ChannelKeys::of(ch).history)
                .query_async(&mut conn)
                .await
                .unwrap();
            holders[i] += usize::from(exists);
        }
    }
    assert_eq!(holders[0] + holders[1], channels.len());
    assert!(holders[0] > 0 && holders[1] > 0, "{holders:?}");
}

#[tokio::test]
async fn a_wrong_redis_url_fails_at_start_with_a_clear_message() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = duplex_server::Settings {
        bind: "127.0.0.1:0".parse().unwrap(),
        redis: vec![format!("redis://127.0.0.1:{port}")],
        ..Default::default()
    };
    let e = duplex_server::Server::start(settings)
        .await
        .err()
        .expect("fails");
    let message = format!("{e:#}");
    assert!(message.contains("cannot reach Redis"), "{message}");
    let settings = duplex_server::Settings {
        bind: "127.0.0.1:0".parse().unwrap(),
        redis: vec!["http://nope".into()],
        ..Default::default()
    };
    let e = duplex_server::Server::start(settings)
        .await
        .err()
        .expect("fails");
    assert!(format!("{e:#}").contains("invalid Redis URL"), "{e:#}");
}

/// Checks that nothing `client` was sent so far is a publication: a
/// ping answered proves everything sent before it has arrived.
async fn assert_no_publication(client: &mut HubClient) {
    client.ok(json!({"cmd": "ping"})).await;
    assert!(
        client.pushes.iter().all(|p| p["push"] != "publication"),
        "{:?}",
        client.pushes
    );
}

fn names(presence: &Value) -> Vec<String> {
    presence["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["name"].as_str().expect("a name").to_owned())
        .collect()
}

/// A connection named `name` subscribed to `channel`; the same name is the
/// same user (one session secret per name).
async fn member(t: &TestServer, name: &str, channel: &str) -> HubClient {
    let mut c = t.client().await;
    let session = format!("session-of-{name:0>16}");
    c.ok(json!({"cmd": "connect", "name": name, "session": session}))
        .await;
    c.ok(json!({"cmd": "subscribe", "channel": channel})).await;
    c
}

#[tokio::test]
async fn presence_joins_leaves_and_typing_cross_nodes() {
    let redis = RedisServer::start().await;
    let nodes = three_nodes(&redis).await;
    let mut alice = member(&nodes[0], "alice", "room").await;
    let mut bob = member(&nodes[1], "bob", "room").await;
    let join = alice.push_of("join").await;
    assert_eq!(join["member"]["name"], "bob");
    // bob's client id says which node holds it, so ids never collide.
    assert_ne!(join["member"]["client"], "c1");
    for n in &nodes {
        let (status, body) = http(n.addr(), "GET", "/api/channels/room/presence", &[], None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            names(&serde_json::from_str(&body).unwrap()),
            ["alice", "bob"]
        );
    }
    bob.ok(json!({"cmd": "typing", "channel": "room"})).await;
    assert_eq!(alice.push_of("typing").await["member"]["name"], "bob");
    // Nobody hears their own join or typing.
    bob.ok(json!({"cmd": "ping"})).await;
    assert!(
        bob.pushes.iter().all(|p| p["member"]["name"] != "bob"),
        "{:?}",
        bob.pushes
    );
    drop(bob);
    assert_eq!(alice.push_of("leave").await["member"]["name"], "bob");
    let on_c = nodes[2].client().await;
    let mut on_c = on_c;
    let presence = on_c.ok(json!({"cmd": "presence", "channel": "room"})).await;
    assert_eq!(names(&presence), ["alice"]);
}

#[tokio::test]
async fn a_name_held_on_another_node_is_taken_but_the_same_user_may_join_again() {
    let redis = RedisServer::start().await;
    let nodes = three_nodes(&redis).await;
    let mut first = nodes[0].client().await;
    let session = "s3cret-session-of-alice";
    first
        .ok(json!({"cmd": "connect", "name": "alice", "session": session}))
        .await;
    first
        .ok(json!({"cmd": "subscribe", "channel": "room"}))
        .await;
    let mut mallory = nodes[1].client().await;
    mallory.ok(json!({"cmd": "connect", "name": "alice"})).await;
    let taken = mallory
        .call(json!({"cmd": "subscribe", "channel": "room"}))
        .await;
    assert_eq!(taken["error"]["code"], "name_taken", "{taken}");
    // A failed join leaves nothing behind.
    let presence = mallory
        .ok(json!({"cmd": "presence", "channel": "room"}))
        .await;
    assert_eq!(names(&presence), ["alice"]);
    let mut second_tab = nodes[2].client().await;
    second_tab
        .ok(json!({"cmd": "connect", "name": "alice", "session": session}))
        .await;
    second_tab
        .ok(json!({"cmd": "subscribe", "channel": "room"}))
        .await;
}

#[tokio::test]
async fn kicks_and_bans_reach_every_node() {
    let redis = RedisServer::start().await;
    let urls = vec![redis.url()];
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let urls = urls.clone();
        nodes.push(
            TestServer::start(move |s| {
                s.redis = urls;
                s.api_key = Some("admin-key".into());
            })
            .await,
        );
    }
    let mut ann_on_a = member(&nodes[0], "Ann", "chat").await;
    let mut ann_on_b = member(&nodes[1], "Ann", "chat").await;
    let mut bob = member(&nodes[1], "bob", "chat").await;
    let auth = [("Authorization", "Bearer admin-key")];
    let body = json!({"name": "Ann", "ban": true}).to_string();
    let (status, text) = http(
        nodes[0].addr(),
        "POST",
        "/api/channels/chat/kick",
        &auth,
        Some(&body),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["kicked"], 2);
    for ann in [&mut ann_on_a, &mut ann_on_b] {
        assert_eq!(ann.push_of("kicked").await["reason"], "banned by an admin");
    }
    assert_eq!(bob.push_of("leave").await["member"]["name"], "Ann");
    assert_eq!(bob.push_of("leave").await["member"]["name"], "Ann");
    let mut back = nodes[1].client().await;
    back.ok(json!({"cmd": "connect", "name": "Ann", "session": "session-of-0000000000000Ann"}))
        .await;
    let refused = back
        .call(json!({"cmd": "subscribe", "channel": "chat"}))
        .await;
    assert_eq!(refused["error"]["code"], "banned", "{refused}");
    // The kicked are no longer subscribed: a publication does not reach them.
    bob.ok(json!({"cmd": "publish", "channel": "chat", "data": "after"}))
        .await;
    assert_eq!(bob.push_of("publication").await["data"], "after");
    assert_no_publication(&mut ann_on_b).await;
}

#[tokio::test]
async fn a_node_that_stops_renewing_its_lease_leaves_no_ghosts_and_comes_back() {
    let redis = RedisServer::start().await;
    let proxy = Proxy::start(redis.addr()).await;
    let a = node(&[redis.url()]).await;
    let b = node(&[proxy.url()]).await;
    let mut alice = member(&a, "alice", "room").await;
    let _bob = member(&b, "bob", "room").await;
    assert_eq!(alice.push_of("join").await["member"]["name"], "bob");
    let cut = Instant::now();
    proxy.cut();
    // B can no longer renew its lease: A announces bob's leave.
    assert_eq!(alice.push_of("leave").await["member"]["name"], "bob");
    let took = cut.elapsed();
    let lease =
        duplex_server::redis::members::LEASE + 2 * duplex_server::redis::members::LEASE_RENEW;
    assert!(
        took <= lease + Duration::from_secs(1),
        "a ghost for {took:?}"
    );
    let presence = alice
        .ok(json!({"cmd": "presence", "channel": "room"}))
        .await;
    assert_eq!(names(&presence), ["alice"]);
    // Back in touch, B registers bob again.
    proxy.heal();
    assert_eq!(alice.push_of("join").await["member"]["name"], "bob");
    let presence = alice
        .ok(json!({"cmd": "presence", "channel": "room"}))
        .await;
    assert_eq!(names(&presence), ["alice", "bob"]);
}

#[tokio::test]
async fn a_kick_announced_while_a_node_was_cut_off_is_applied_when_it_comes_back() {
    let redis = RedisServer::start().await;
    let proxy = Proxy::start(redis.addr()).await;
    let urls = vec![redis.url()];
    let a = TestServer::start(move |s| {
        s.redis = urls;
        s.api_key = Some("admin-key".into());
    })
    .await;
    let b = node(&[proxy.url()]).await;
    let mut alice = member(&a, "alice", "room").await;
    let mut eve = member(&b, "eve", "room").await;
    assert_eq!(alice.push_of("join").await["member"]["name"], "eve");
    proxy.cut();
    eventually("B to notice", || async { health(&b).await == 503 }).await;
    let auth = [("Authorization", "Bearer admin-key")];
    let body = json!({"name": "eve"}).to_string();
    let (status, text) = http(
        a.addr(),
        "POST",
        "/api/channels/room/kick",
        &auth,
        Some(&body),
    )
    .await;
    assert_eq!(
        (
            status,
            serde_json::from_str::<Value>(&text).unwrap()["kicked"].clone()
        ),
        (200, json!(1))
    );
    assert_eq!(alice.push_of("leave").await["member"]["name"], "eve");
    proxy.heal();
    // B never heard the kick; registering eve again finds it.
    let kicked = eve.push_of("kicked").await;
    assert_eq!(kicked["channel"], "room", "{kicked}");
    let presence = alice
        .ok(json!({"cmd": "presence", "channel": "room"}))
        .await;
    assert_eq!(names(&presence), ["alice"]);
    // And eve no longer receives the channel.
    alice
        .ok(json!({"cmd": "publish", "channel": "room", "data": "after"}))
        .await;
    assert_no_publication(&mut eve).await;
}

#[tokio::test]
async fn redis_losing_announced_publications_starts_a_new_epoch() {
    let redis = RedisServer::start().await;
    let proxy = Proxy::start(redis.addr()).await;
    let a = node(&[redis.url()]).await;
    let b = node(&[proxy.url()]).await;
    let mut on_b = b.client().await;
    on_b.ok(json!({"cmd": "subscribe", "channel": "fragile"}))
        .await;
    let mut publisher = a.client().await;
    let mut epoch = Value::Null;
    for i in 1..=5 {
        epoch = publisher
            .ok(json!({"cmd": "publish", "channel": "fragile", "data": i}))
            .await["epoch"]
            .clone();
    }
    expect_offsets(&mut on_b, "fragile", 1, 5, "before").await;
    proxy.cut();
    eventually("B to notice", || async { health(&b).await == 503 }).await;
    // What a Redis crash with `appendfsync everysec` can leave: the last
    // two publications gone, the epoch the same.
    let keys = duplex_server::redis::keys::ChannelKeys::of("fragile");
    let mut conn = redis.connection().await.unwrap();
    let _: () = ::redis::cmd("HSET")
        .arg(&keys.meta)
        .arg("offset")
        .arg(3)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = ::redis::cmd("XDEL")
        .arg(&keys.history)
        .arg("4-0")
        .arg("5-0")
        .query_async(&mut conn)
        .await
        .unwrap();
    proxy.heal();
    // B's subscriber held offsets 4 and 5 that no longer exist: it is told
    // to come back, and then that its position cannot be recovered.
    assert_eq!(on_b.closed_with().await, 1012);
    let mut back = b.client().await;
    let sub = back
        .ok(json!({"cmd": "subscribe", "channel": "fragile", "since": {"epoch": epoch, "offset": 5}}))
        .await;
    assert_eq!(sub["recovered"], false, "{sub}");
    assert_ne!(sub["epoch"], epoch, "a new epoch");
    let next = publisher
        .ok(json!({"cmd": "publish", "channel": "fragile", "data": 6}))
        .await;
    // Offsets go on past what the stream still remembers.
    assert_eq!(next["epoch"], sub["epoch"]);
    let offset = next["offset"].as_u64().unwrap();
    assert!(offset > 3, "{next}");
    assert_eq!(back.push_of("publication").await["offset"], offset);
}

#[tokio::test]
async fn a_node_shutting_down_takes_its_members_with_it() {
    let redis = RedisServer::start().await;
    let urls = [redis.url()];
    let (a, b) = (node(&urls).await, node(&urls).await);
    let mut alice = member(&a, "alice", "room").await;
    let mut bob = member(&b, "bob", "room").await;
    assert_eq!(alice.push_of("join").await["member"]["name"], "bob");
    // bob reads, so its close handshake completes within the shutdown.
    let bob = tokio::spawn(async move { bob.closed_with().await });
    b.server.shutdown().await;
    assert_eq!(bob.await.unwrap(), 1001);
    // Gone from Redis when the shutdown returns, not a lease later.
    let mut conn = redis.connection().await.unwrap();
    let members: usize = ::redis::cmd("HLEN")
        .arg(duplex_server::redis::keys::ChannelKeys::of("room").members)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(members, 1, "only alice is left");
    assert_eq!(alice.push_of("leave").await["member"]["name"], "bob");
}

// File transfers across nodes: a transfer lives on the node its sender
// opened it on; receivers and a returning sender reaching any other node
// are forwarded there.

use duplex::{ClientBuilder, CloseCode};
use support::files::{self, binary, close_code, json_msg};

/// Joins transfer `nameplate` at `node`: the receiver's connection, its
/// peer number, after the sender heard of it.
async fn join(node: &TestServer, nameplate: &Value, sender: &mut files::Ws) -> (files::Ws, u32) {
    let mut receiver =
        files::open(node.addr(), json!({"type": "join", "nameplate": nameplate})).await;
    let joined = json_msg(&mut receiver).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    let peer = joined["peer"].as_u64().unwrap() as u32;
    assert_eq!(
        json_msg(sender).await,
        json!({"type": "peer_joined", "peer": peer})
    );
    (receiver, peer)
}

/// Data both ways between a sender and a receiver, with the credit the
/// holding node grants.
async fn exchange(sender: &mut files::Ws, receiver: &mut files::Ws, peer: u32, body: &[u8]) {
    sender.send(binary(peer, body)).await.unwrap();
    let got = files::next(receiver).await.unwrap();
    assert_eq!(got.as_bytes(), binary(peer, body).as_bytes());
    let credit = json_msg(sender).await;
    assert_eq!(
        credit,
        json!({"type": "credit", "peer": peer, "bytes": body.len() + 4})
    );
    receiver.send(binary(0, b"ack")).await.unwrap();
    let back = files::next(sender).await.unwrap();
    assert_eq!(back.as_bytes(), binary(peer, b"ack").as_bytes());
}

#[tokio::test]
async fn a_transfer_is_served_through_every_node() {
    let redis = RedisServer::start().await;
    let [a, b, c] = three_nodes(&redis).await;
    let (mut sender, created) = files::create(a.addr(), 100).await;
    let nameplate = created["nameplate"].clone();
    let token = created["token"].clone();
    let (mut on_b, peer_b) = join(&b, &nameplate, &mut sender).await;
    let (mut on_c, peer_c) = join(&c, &nameplate, &mut sender).await;
    assert_ne!(peer_b, peer_c);
    exchange(&mut sender, &mut on_b, peer_b, b"to the receiver on b").await;
    exchange(&mut sender, &mut on_c, peer_c, b"to the receiver on c").await;
    // It lives on a only; b and c each forwarded one receiver to it.
    assert_eq!(a.server.transfers().len(), 1);
    assert_eq!(b.server.transfers().len() + c.server.transfers().len(), 0);
    let metric = |t: &TestServer, name: &'static str| {
        let addr = t.addr();
        async move {
            let (_, text) = http(addr, "GET", "/metrics", &[], None).await;
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {name} in /metrics"))
        }
    };
    assert_eq!(metric(&a, "duplex_transfers_open").await, 1);
    assert_eq!(metric(&b, "duplex_transfers_forwarded_total").await, 1);
    assert_eq!(metric(&c, "duplex_transfers_forwarded_total").await, 1);
    assert_eq!(metric(&a, "duplex_transfers_forwarded_total").await, 0);

    // A receiver leaving through a bridge: the sender hears of it.
    on_c.close(CloseCode::NORMAL, "").await.unwrap();
    assert_eq!(
        json_msg(&mut sender).await,
        json!({"type": "peer_left", "peer": peer_c})
    );

    // The sender's connection drops; it comes back through c, and the
    // receivers joined before are told to join again (4001).
    drop(sender);
    assert_eq!(close_code(&mut on_b).await, 4001);
    let mut sender = files::open(
        c.addr(),
        json!({"type": "reattach", "nameplate": nameplate, "token": token}),
    )
    .await;
    let again = json_msg(&mut sender).await;
    assert_eq!(again["type"], "created", "{again}");
    assert_eq!(again["nameplate"], nameplate);
    let (mut on_b, peer) = join(&b, &nameplate, &mut sender).await;
    exchange(&mut sender, &mut on_b, peer, b"after the reattach").await;

    // The sender finishes: its close reaches the receiver as it said it.
    sender
        .close(CloseCode(1000), "the sender finished")
        .await
        .unwrap();
    assert_eq!(close_code(&mut on_b).await, 1000);
}

#[tokio::test]
async fn nameplates_are_unique_among_nodes() {
    let (mut rng, why) = seeded();
    let redis = RedisServer::start().await;
    let nodes = three_nodes(&redis).await;
    // More transfers than a quiet node's short numbers leave room for
    // without collisions (1..100 each).
    let mut senders = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..60 {
        let node = &nodes[rng.random_range(0..nodes.len())];
        let (sender, created) = files::create(node.addr(), 1).await;
        let nameplate = created["nameplate"].as_u64().unwrap();
        assert!(seen.insert(nameplate), "{why}: {nameplate} given twice");
        senders.push((sender, nameplate));
    }
    // Each one is found from every node.
    for (sender, nameplate) in senders.iter_mut().take(5) {
        let node = &nodes[rng.random_range(0..nodes.len())];
        let (mut receiver, peer) = join(node, &json!(*nameplate), sender).await;
        exchange(sender, &mut receiver, peer, b"x").await;
    }
}

#[tokio::test]
async fn a_transfer_whose_node_shut_down_is_opened_again_on_another() {
    let redis = RedisServer::start().await;
    let [a, b, c] = three_nodes(&redis).await;
    let (mut sender, created) = files::create(a.addr(), 100).await;
    let (nameplate, token) = (created["nameplate"].clone(), created["token"].clone());
    let closed = tokio::spawn(async move { close_code(&mut sender).await });
    a.server.shutdown().await;
    assert_eq!(closed.await.unwrap(), 1001);
    // The transfer ended with its node: no node has it ...
    let hello = json!({"type": "reattach", "nameplate": nameplate, "token": token});
    let mut reattach = files::open(b.addr(), hello).await;
    assert_eq!(close_code(&mut reattach).await, 4404);
    // ... so its sender opens it again, under the code its receivers have.
    let hello = json!({"type": "create", "size": 100, "nameplate": nameplate, "token": token});
    let mut sender = files::open(b.addr(), hello).await;
    let again = json_msg(&mut sender).await;
    assert_eq!(again["nameplate"], nameplate, "{again}");
    // While it is open there, another node cannot open it too: it is
    // forwarded to b, which says the code is in use.
    let mut twin = files::open(
        c.addr(),
        json!({"type": "create", "size": 100, "nameplate": nameplate, "token": token}),
    )
    .await;
    assert_eq!(close_code(&mut twin).await, 4409);
    let (mut receiver, peer) = join(&c, &nameplate, &mut sender).await;
    exchange(&mut sender, &mut receiver, peer, b"resumed").await;
}

/// The nodes' shared secret, as stored in Redis.
async fn node_secret(redis: &RedisServer) -> String {
    let mut conn = redis.connection().await.unwrap();
    ::redis::cmd("HGET")
        .arg(duplex_server::redis::keys::META)
        .arg("node_secret")
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_forwarded_client_is_counted_by_its_own_address_only_with_the_secret() {
    use duplex_server::transfer::directory::{CLIENT_HEADER, NODE_HEADER};
    let redis = RedisServer::start().await;
    let urls = vec![redis.url()];
    let a = TestServer::start(move |s| {
        s.redis = urls;
        s.transfer_failed_joins = 2;
    })
    .await;
    let secret = node_secret(&redis).await;
    let (mut sender, created) = files::create(a.addr(), 100).await;
    let nameplate = created["nameplate"].clone();
    let as_client = |secret: &str, client: &str| {
        ClientBuilder::new()
            .header(NODE_HEADER, secret)
            .header(CLIENT_HEADER, client)
    };
    // Two receivers the sender never accepts (wrong codes) for 10.1.1.1,
    // forwarded with the secret: that address is locked out ...
    let join = json!({"type": "join", "nameplate": nameplate});
    for _ in 0..2 {
        let mut r = files::open_with(as_client(&secret, "10.1.1.1"), a.addr(), join.clone()).await;
        assert_eq!(json_msg(&mut r).await["type"], "joined");
        assert_eq!(json_msg(&mut sender).await["type"], "peer_joined");
        r.close(CloseCode::NORMAL, "").await.unwrap();
        assert_eq!(json_msg(&mut sender).await["type"], "peer_left");
    }
    let mut locked = files::open_with(as_client(&secret, "10.1.1.1"), a.addr(), join.clone()).await;
    assert_eq!(close_code(&mut locked).await, 4429);
    // ... and no one else: another forwarded address, and the loopback
    // address the connections really came from.
    let mut other = files::open_with(as_client(&secret, "10.1.1.2"), a.addr(), join.clone()).await;
    assert_eq!(json_msg(&mut other).await["type"], "joined");
    let mut direct = files::open(a.addr(), join.clone()).await;
    assert_eq!(json_msg(&mut direct).await["type"], "joined");
    // Without the secret the header is not believed: the connection is
    // counted as what it is (loopback), so 10.1.1.1's lockout does not
    // apply to it.
    let mut forged = files::open_with(as_client("guess", "10.1.1.1"), a.addr(), join).await;
    assert_eq!(json_msg(&mut forged).await["type"], "joined");
}

#[tokio::test]
async fn connections_through_a_bridge_that_drop_are_drops_not_ends() {
    let redis = RedisServer::start().await;
    let [a, b, c] = three_nodes(&redis).await;
    let (mut sender, created) = files::create(a.addr(), 100).await;
    let (nameplate, token) = (created["nameplate"].clone(), created["token"].clone());
    // A receiver on b vanishes without a close: the sender hears it left.
    let (on_b, peer) = join(&b, &nameplate, &mut sender).await;
    drop(on_b);
    assert_eq!(
        json_msg(&mut sender).await,
        json!({"type": "peer_left", "peer": peer})
    );
    // The sender comes back through c, then vanishes: the receiver on b is
    // told the sender is away (4001, try again), not that it finished.
    drop(sender);
    let hello = json!({"type": "reattach", "nameplate": nameplate, "token": token});
    let mut sender = files::open(c.addr(), hello).await;
    assert_eq!(json_msg(&mut sender).await["type"], "created");
    let (mut on_b, _) = join(&b, &nameplate, &mut sender).await;
    drop(sender);
    assert_eq!(close_code(&mut on_b).await, 4001);
}

#[tokio::test]
async fn a_connection_forwarded_to_the_wrong_node_is_refused_not_served() {
    use duplex_server::transfer::directory::{HOLDER_HEADER, NODE_HEADER};
    let redis = RedisServer::start().await;
    let a = node(&[redis.url()]).await;
    let secret = node_secret(&redis).await;
    let (mut sender, created) = files::create(a.addr(), 100).await;
    let join = json!({"type": "join", "nameplate": created["nameplate"]});
    let meant_for = |node: &str| {
        ClientBuilder::new()
            .header(NODE_HEADER, &secret)
            .header(HOLDER_HEADER, node)
    };
    let mut stray = files::open_with(meant_for("another-node"), a.addr(), join.clone()).await;
    assert_eq!(close_code(&mut stray).await, 4502);
    // Meant for a, it is served.
    let mut conn = redis.connection().await.unwrap();
    let key = format!("duplex:transfer:{}", created["nameplate"]);
    let holder: String = ::redis::cmd("HGET")
        .arg(&key)
        .arg("node")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut meant = files::open_with(meant_for(&holder), a.addr(), join).await;
    assert_eq!(json_msg(&mut meant).await["type"], "joined");
    assert_eq!(json_msg(&mut sender).await["type"], "peer_joined");
}

#[tokio::test]
async fn a_transfer_held_by_a_node_that_stopped_renewing_is_retried_then_reopened() {
    let redis = RedisServer::start().await;
    let urls = vec![redis.url()];
    let b = TestServer::start(move |s| {
        s.redis = urls;
        s.transfer_failed_joins = 1;
    })
    .await;
    // A claim by a node with no lease: dead, or cut off from Redis.
    let mut conn = redis.connection().await.unwrap();
    let _: () = ::redis::cmd("HSET")
        .arg("duplex:transfer:77")
        .arg("node")
        .arg("ghost")
        .arg("url")
        .arg("ws://127.0.0.1:9")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Receivers are told to try again (4502), and it does not count
    // against them: with one failed join allowed, neither is locked out.
    for _ in 0..3 {
        let mut r = files::open(b.addr(), json!({"type": "join", "nameplate": 77})).await;
        assert_eq!(close_code(&mut r).await, 4502);
    }
    // Its sender finds it gone and opens it again, here.
    let token = "a-token-of-24-characters";
    let hello = json!({"type": "reattach", "nameplate": 77, "token": token});
    let mut reattach = files::open(b.addr(), hello).await;
    assert_eq!(close_code(&mut reattach).await, 4404);
    let hello = json!({"type": "create", "size": 1, "nameplate": 77, "token": token});
    let mut sender = files::open(b.addr(), hello).await;
    assert_eq!(json_msg(&mut sender).await["nameplate"], 77);
    let (mut receiver, peer) = join(&b, &json!(77), &mut sender).await;
    exchange(&mut sender, &mut receiver, peer, b"back").await;
}
