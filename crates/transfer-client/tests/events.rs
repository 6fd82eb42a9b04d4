//! The library as an application embeds it: random file sets (sizes at and
//! around the chunk size, empty files, nested folders) through a real relay
//! to one or two receivers, each checked byte for byte, and the events each
//! side reports checked against what happened. A failing case prints its
//! inputs; proptest keeps its seed in `proptest-regressions/`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duplex_transfer_client::{Events, ReceiveEvent, ReceiveOptions, SendEvent, SendOptions};
use proptest::prelude::*;

/// Every transfer is bounded by this.
const LIMIT: Duration = Duration::from_secs(60);
/// The chunk size `duplex serve`'s default frame limit gives.
const CHUNK: u64 = 1 << 20;

/// A file: where in the tree, how large, and the seed of its bytes.
#[derive(Debug, Clone)]
struct File {
    path: String,
    size: u64,
    seed: u8,
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(CHUNK - 1),
        Just(CHUNK),
        Just(CHUNK + 1),
        0..3 * CHUNK,
    ]
}

fn files() -> impl Strategy<Value = Vec<File>> {
    let name = prop_oneof![
        Just("a.bin".to_owned()),
        Just("b/c.txt".to_owned()),
        Just("b/d/é 1.dat".to_owned()),
        Just("z".to_owned()),
    ];
    prop::collection::vec((name, size(), any::<u8>()), 1..4).prop_map(|v| {
        let mut seen = std::collections::HashSet::new();
        v.into_iter()
            .filter(|(path, ..)| seen.insert(path.clone()))
            .map(|(path, size, seed)| File { path, size, seed })
            .collect()
    })
}

fn contents(f: &File) -> Vec<u8> {
    let mut x = u64::from(f.seed) | 0x9E37_79B9_0000_0000;
    (0..f.size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Collects events in order.
fn recorder<E: Send + 'static>() -> (Events<E>, Arc<Mutex<Vec<E>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    (Events::new(move |e| sink.lock().unwrap().push(e)), seen)
}

async fn transfer(files: &[File], receivers: usize) {
    let dir = tempfile::tempdir().unwrap();
    let relay = duplex_server::Server::start(duplex_server::Settings {
        bind: "127.0.0.1:0".parse().unwrap(),
        data: dir.path().join("data"),
        ..Default::default()
    })
    .await
    .unwrap();
    let server = format!("http://{}", relay.local_addr());
    let root = dir.path().join("tree");
    for f in files {
        let path = root.join(&f.path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents(f)).unwrap();
    }
    // The top-level entries of the tree, sent as a user would name them.
    let mut top: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    top.sort();

    let (code_tx, mut code_rx) = tokio::sync::mpsc::unbounded_channel();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let sink = sent.clone();
    let events = Events::new(move |e: SendEvent| {
        if let SendEvent::Code { code, .. } = &e {
            let _ = code_tx.send(code.clone());
        }
        sink.lock().unwrap().push(e);
    });
    let options = SendOptions::new(top, server.clone()).receivers(receivers);
    let sending = tokio::spawn(duplex_transfer_client::send(options, events));
    let code = tokio::time::timeout(LIMIT, code_rx.recv())
        .await
        .expect("a code in time")
        .expect("a code");

    let mut receiving = Vec::new();
    for r in 0..receivers {
        let out = dir.path().join(format!("out{r}"));
        let (events, seen) = recorder();
        let options = ReceiveOptions::new(code.clone(), server.clone(), out.clone());
        let run = tokio::spawn(duplex_transfer_client::receive(options, events));
        receiving.push((out, seen, run));
    }
    for (out, seen, run) in receiving {
        tokio::time::timeout(LIMIT, run)
            .await
            .expect("received in time")
            .unwrap()
            .unwrap();
        check_tree(files, &out);
        check_receive_events(files, &seen.lock().unwrap());
    }
    tokio::time::timeout(LIMIT, sending)
        .await
        .expect("sent in time")
        .unwrap()
        .unwrap();
    check_send_events(files, receivers, &sent.lock().unwrap());
}

fn check_tree(files: &[File], out: &Path) {
    for f in files {
        let got = std::fs::read(out.join(&f.path)).unwrap();
        assert!(got == contents(f), "{} differs", f.path);
        assert!(!out.join(format!("{}.part", f.path)).exists());
    }
}

fn check_receive_events(files: &[File], events: &[ReceiveEvent]) {
    let total: u64 = files.iter().map(|f| f.size).sum();
    let mut last = 0;
    for e in events {
        if let &ReceiveEvent::Progress { bytes, total: t } = e {
            assert_eq!(t, total);
            assert!(bytes >= last && bytes <= total, "{events:?}");
            last = bytes;
        }
    }
    for f in files {
        let installed = events
            .iter()
            .filter(|e| matches!(e, ReceiveEvent::File { path, size } if *path == f.path && *size == f.size))
            .count();
        assert_eq!(installed, 1, "{}: {events:?}", f.path);
    }
    assert_eq!(
        events.last(),
        Some(&ReceiveEvent::Done {
            files: files.len(),
            bytes: total,
            note: None
        })
    );
}

fn check_send_events(files: &[File], receivers: usize, events: &[SendEvent]) {
    let total: u64 = files.iter().map(|f| f.size).sum();
    assert!(
        matches!(&events[0], SendEvent::Code { files: n, bytes, .. } if *n == files.len() && *bytes == total),
        "{:?}",
        events[0]
    );
    let done = events
        .iter()
        .filter(|e| matches!(e, SendEvent::Done { .. }))
        .count();
    assert_eq!(done, receivers, "{events:?}");
    assert!(
        !events.iter().any(|e| matches!(
            e,
            SendEvent::ReceiverFailed { .. } | SendEvent::Retry { .. }
        )),
        "{events:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_arrive_and_the_events_tell_it(files in files(), receivers in 1usize..3) {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        runtime.block_on(transfer(&files, receivers));
    }
}
