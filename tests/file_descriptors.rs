//! Out of file descriptors, `duplex serve` keeps running: its accept loop
//! waits instead of failing or spinning, and once descriptors are free
//! again new clients are served.

mod common;

use std::time::Duration;

use common::Serve;
use duplex::ClientBuilder;
use tokio::net::TcpStream;

/// More connections than the server may hold open files.
const CROWD: usize = 160;
const OPEN_FILES: usize = 64;

#[tokio::test(flavor = "multi_thread")]
async fn running_out_of_file_descriptors_is_survived() {
    // Without connection limits, so that the descriptors run out first.
    let serve = Serve::start_with(&[
        "--max-connections",
        "0",
        "--max-connections-per-address",
        "0",
    ])
    .await;
    serve.limit_open_files(OPEN_FILES);
    // All at once: past the listen backlog a connect waits, so each is
    // bounded, and one that fails is part of the crowd's effect.
    let connects = (0..CROWD).map(|_| {
        tokio::spawn(tokio::time::timeout(
            Duration::from_secs(2),
            TcpStream::connect(serve.addr),
        ))
    });
    let mut crowd = Vec::new();
    for connect in connects.collect::<Vec<_>>() {
        if let Ok(Ok(Ok(tcp))) = connect.await {
            crowd.push(tcp);
        }
    }
    assert!(crowd.len() > OPEN_FILES, "only {} connected", crowd.len());
    drop(crowd);
    // Descriptors free again: a client is served (asked again while the
    // server works through the crowd's closed connections, within a bound).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            let mut ws = ClientBuilder::new().connect(&serve.echo_url()).await.ok()?;
            ws.send("back").await.ok()?;
            let echo = ws.recv().await?.ok()?;
            (echo.as_text() == Some("back")).then_some(())
        };
        if tokio::time::timeout(Duration::from_secs(5), attempt)
            .await
            .ok()
            .flatten()
            .is_some()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not served after the crowd left"
        );
    }
    let mut child = serve.child;
    assert!(child.try_wait().unwrap().is_none(), "the server exited");
}
