//! The link's promise, checked against a real server that restarts under
//! it: on several channels, every publication arrives exactly once, in
//! order, with no gap reported. The schedule (which channel each
//! publication goes to, when the server restarts) comes from a seed,
//! printed so a failure replays with `DUPLEX_TEST_SEED=<seed>`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use duplex::{ClientBuilder, MaybeTlsStream, WebSocket};
use duplex_hub::{Command, Published, Request, ServerMessage};
use duplex_hub_client::{Event, Link};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::{Instant, timeout_at};

const CHANNELS: [&str; 3] = ["news", "sport", "weather"];
/// How long the whole test may take, however slow the machine.
const LIMIT: Duration = Duration::from_secs(90);

async fn start(bind: SocketAddr, data: &Path) -> duplex_server::Server {
    let settings = duplex_server::Settings {
        bind,
        data: data.to_owned(),
        // The publisher is flat out; the rate limit is not what is tested.
        rate_limit: 1e6,
        rate_burst: 1_000_000,
        // A restart does not wait for the link, which is not reading then.
        shutdown_timeout: 1,
        ..Default::default()
    };
    duplex_server::Server::start(settings)
        .await
        .expect("the server starts")
}

/// Publishes `n` on `channel` and returns its offset.
async fn publish(ws: &mut WebSocket<MaybeTlsStream>, id: u64, channel: &str, n: u64) -> u64 {
    let data = serde_json::json!({ "n": n });
    let command = Command::Publish {
        channel: channel.into(),
        data,
    };
    ws.send(Request::new(id, command).encode())
        .await
        .expect("send");
    loop {
        let message = ws.recv().await.expect("open").expect("a message");
        let Some(text) = message.as_text() else {
            continue;
        };
        match ServerMessage::parse(text).expect("a hub message") {
            ServerMessage::Reply {
                id: Some(got),
                result,
            } if got == id => {
                let published: Published = serde_json::from_str(result.get()).expect("published");
                return published.offset;
            }
            ServerMessage::Error { error, .. } => panic!("publish failed: {error}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn every_publication_arrives_once_in_order_across_restarts() {
    let seed = std::env::var("DUPLEX_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("DUPLEX_TEST_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let deadline = Instant::now() + LIMIT;
    let dir = tempfile::tempdir().unwrap();
    let mut server = start("127.0.0.1:0".parse().unwrap(), dir.path()).await;
    let addr = server.local_addr();
    let url = format!("ws://{addr}/ws");
    let subscriptions = CHANNELS.iter().map(|c| (c.to_string(), None)).collect();
    let mut link = Link::open(url.clone(), ClientBuilder::new(), None, subscriptions)
        .await
        .expect("the link opens");
    // What was published: channel → offset → n.
    let mut published: BTreeMap<&str, BTreeMap<u64, u64>> = BTreeMap::new();
    // What the link handed out, in order: channel → [(offset, n)].
    let mut seen: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    let mut n = 0;
    let rounds = rng.random_range(3..6);
    for round in 0..rounds {
        // Publish while the link is not reading, then let it catch up.
        let mut publisher = duplex::connect(&url).await.expect("publisher connects");
        for _ in 0..rng.random_range(1..40) {
            n += 1;
            let channel = CHANNELS[rng.random_range(0..CHANNELS.len())];
            let offset = publish(&mut publisher, n, channel, n).await;
            published.entry(channel).or_default().insert(offset, n);
        }
        drop(publisher);
        let restart = round + 1 < rounds && rng.random_bool(0.6);
        if restart {
            server.shutdown().await;
            server = start(addr, dir.path()).await;
        }
        // Read until the link has handed out everything published so far.
        let caught_up = |seen: &BTreeMap<String, Vec<(u64, u64)>>| {
            // At least: a duplicate ends the wait, and the check below
            // names it.
            published.iter().all(|(channel, offsets)| {
                seen.get(*channel).is_some_and(|s| s.len() >= offsets.len())
            })
        };
        while !caught_up(&seen) {
            let event = timeout_at(deadline, link.next()).await.unwrap_or_else(|_| {
                panic!("the link did not catch up (seed {seed}): seen {seen:?}")
            });
            match event {
                Event::Publication(p) => {
                    let data: serde_json::Value = serde_json::from_str(p.data.get()).unwrap();
                    let n = data["n"].as_u64().expect("n");
                    seen.entry(p.channel.to_string())
                        .or_default()
                        .push((p.offset, n));
                }
                Event::Gap(channel) => panic!("a gap in {channel} (seed {seed})"),
                Event::Disconnected(..) | Event::Reconnected | Event::Push(_) => {}
                Event::Reply { .. } => {}
            }
        }
    }
    for (channel, offsets) in &published {
        let want: Vec<(u64, u64)> = offsets.iter().map(|(o, n)| (*o, *n)).collect();
        assert_eq!(
            seen.get(*channel),
            Some(&want),
            "{channel}: every publication once, in order (seed {seed})"
        );
    }
    link.close().await;
    server.shutdown().await;
}
