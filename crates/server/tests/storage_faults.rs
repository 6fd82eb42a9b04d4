//! When the disk under the data directory fills up or turns read-only,
//! publishing fails with a clear error (hub error `unavailable`, HTTP 503
//! with `Retry-After`), nothing acknowledged is lost, subscribers keep
//! what was stored, and publishing works again once the disk does, with no
//! restart. On real filesystems the test mounts: a 2 MiB tmpfs and a 16 MiB
//! ext4 image that the kernel turns read-only after an error (root).

mod support;

use serde_json::{Value, json};
use support::disk::Mounted;
use support::{HubClient, TestServer, http, http_response};

/// Publishes `{"n": n}` on `c` over the hub; the reply.
async fn publish(client: &mut HubClient, n: u64, pad: &str) -> Value {
    client
        .call(json!({"cmd": "publish", "channel": "c", "data": {"n": n, "pad": pad}}))
        .await
}

/// The `n` of every publication in channel `c`'s history, read over HTTP.
async fn history(t: &TestServer) -> Vec<u64> {
    let (status, body) = http(
        t.addr(),
        "GET",
        "/api/channels/c/history?limit=1000",
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    page["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"]["n"].as_u64().unwrap())
        .collect()
}

/// The next `count` publications `subscriber` is pushed, as `n`s.
async fn pushed(subscriber: &mut HubClient, count: usize) -> Vec<u64> {
    let mut out = Vec::new();
    for _ in 0..count {
        let p = subscriber.push_of("publication").await;
        out.push(p["data"]["n"].as_u64().unwrap());
    }
    out
}

/// A refused publish says why, over the hub and over HTTP (503 with
/// `Retry-After`).
async fn assert_refused(t: &TestServer, reply: &Value, why: &str) {
    assert_eq!(reply["error"]["code"], "unavailable", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains(why), "{message}");
    assert!(message.contains("nothing was stored"), "{message}");
    let body = json!({"channel": "c", "data": {"n": 0}}).to_string();
    let (status, head, body) =
        http_response(t.addr(), "POST", "/api/publish", &[], Some(&body)).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 5"),
        "{head}"
    );
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
}

/// Fills the filesystem holding `dir` with one file, until it is full.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 << 10];
    // Bounded: the tmpfs is 2 MiB.
    for _ in 0..1024 {
        if file.write_all(&block).is_err() {
            break;
        }
    }
    // The last partial page too.
    while file.write_all(&[0u8; 512]).is_ok() {}
    path
}

/// A server keeping its data on `disk`, a subscriber to `c`, a publisher,
/// and publications 1..=20 (with `pad`) acknowledged.
async fn twenty_published_on(disk: &Mounted, pad: &str) -> (TestServer, HubClient, HubClient) {
    let t = TestServer::start_in(tempfile::tempdir_in(disk.point()).unwrap(), |_| {}).await;
    let mut subscriber = t.client().await;
    subscriber
        .ok(json!({"cmd": "subscribe", "channel": "c"}))
        .await;
    let mut publisher = t.client().await;
    for n in 1..=20 {
        let reply = publish(&mut publisher, n, pad).await;
        assert!(reply.get("error").is_none(), "{reply}");
    }
    (t, subscriber, publisher)
}

#[tokio::test]
async fn a_full_disk_refuses_publishes_keeps_what_was_acknowledged_and_recovers_by_itself() {
    let disk = Mounted::tmpfs(2 << 20);
    let pad = "x".repeat(1000);
    let (t, mut subscriber, mut publisher) = twenty_published_on(&disk, &pad).await;
    let mut acknowledged: Vec<u64> = (1..=20).collect();

    let filler = fill(&disk.point());
    // SQLite may still fit a few into pages it already has: publish until
    // it cannot (bounded: 2 MiB of disk holds fewer than 2,000 of these).
    let mut n = 20;
    let refusal = loop {
        n += 1;
        assert!(n < 2_000, "the store never reported the full disk");
        let reply = publish(&mut publisher, n, &pad).await;
        if reply.get("error").is_some() {
            break reply;
        }
        acknowledged.push(n);
    };
    assert_refused(&t, &refusal, "disk is full").await;
    // Still refused, and nothing else broke: reads and live delivery go on.
    let again = publish(&mut publisher, n + 1, &pad).await;
    assert_eq!(again["error"]["code"], "unavailable", "{again}");
    assert_eq!(history(&t).await, acknowledged);
    assert_eq!(
        pushed(&mut subscriber, acknowledged.len()).await,
        acknowledged
    );

    std::fs::remove_file(filler).unwrap();
    let reply = publish(&mut publisher, 10_000, &pad).await;
    assert!(reply.get("error").is_none(), "{reply}");
    // Refused publications took no offset: the next one follows the last
    // acknowledged, and it is the very next thing the subscriber sees.
    assert_eq!(reply["result"]["offset"], json!(acknowledged.len() + 1));
    assert_eq!(pushed(&mut subscriber, 1).await, [10_000]);
    acknowledged.push(10_000);
    assert_eq!(history(&t).await, acknowledged);
}

#[tokio::test]
async fn a_disk_turned_read_only_refuses_publishes_and_is_written_again_once_repaired() {
    let mut disk = Mounted::ext4(16 << 20);
    let (t, mut subscriber, mut publisher) = twenty_published_on(&disk, "").await;
    let mut acknowledged: Vec<u64> = (1..=20).collect();

    disk.fail();
    let refusal = publish(&mut publisher, 21, "").await;
    assert_refused(&t, &refusal, "cannot write its data directory").await;
    // Until the disk is repaired, every publish is refused the same way.
    let again = publish(&mut publisher, 22, "").await;
    assert_eq!(again["error"]["code"], "unavailable", "{again}");
    assert_eq!(history(&t).await, acknowledged);
    assert_eq!(
        pushed(&mut subscriber, acknowledged.len()).await,
        acknowledged
    );
    // A new subscriber recovers what was stored from the read-only disk.
    let mut late = t.client().await;
    let recovered = late
        .ok(json!({"cmd": "subscribe", "channel": "c", "since": {"epoch": "", "offset": 0}}))
        .await;
    let ns: Vec<u64> = recovered["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, acknowledged);

    disk.repair();
    let reply = publish(&mut publisher, 10_000, "").await;
    assert!(reply.get("error").is_none(), "{reply}");
    assert_eq!(reply["result"]["offset"], json!(21));
    assert_eq!(pushed(&mut subscriber, 1).await, [10_000]);
    acknowledged.push(10_000);
    // Read from the repaired disk, not the failed one the reader had open.
    assert_eq!(history(&t).await, acknowledged);
}
