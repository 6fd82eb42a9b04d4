//! The testee client for the Autobahn fuzzingserver (run by `cargo xtask test`):
//! runs every case, echoing each message back, then asks for the reports.
//!
//! ```text
//! cargo run --release -p duplex --example autobahn-client -- ws://127.0.0.1:9001 [--http2]
//! ```
//!
//! With `--http2` every socket is an HTTP/2 stream (RFC 8441, prior
//! knowledge): the fuzzingserver is then reached through the `h2-bridge`
//! example.

use duplex::{ClientBuilder, Config, Limits, Message};

const AGENT: &str = "duplex";

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".into());
    let http2 = std::env::args().any(|a| a == "--http2");
    let client = ClientBuilder::new()
        .http2(if http2 {
            duplex::http2::Http2Mode::Always
        } else {
            duplex::http2::Http2Mode::Never
        })
        .config(
            Config::default()
                .with_limits(Limits::unlimited())
                .with_compression(),
        )
        .proxy(duplex::proxy::ProxyConfig::None);

    let mut ws = client.connect(&format!("{base}/getCaseCount")).await?;
    let count: usize = match ws.recv().await {
        Some(Ok(Message::Text(t))) => t.parse()?,
        other => anyhow::bail!("unexpected answer to getCaseCount: {other:?}"),
    };
    while ws.recv().await.is_some() {}
    eprintln!("running {count} cases");

    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={AGENT}");
        let mut ws = match client.connect(&url).await {
            Ok(ws) => ws,
            Err(e) => {
                eprintln!("case {case}: {e}");
                continue;
            }
        };
        while let Some(msg) = ws.recv().await {
            match msg {
                Ok(msg) if msg.is_data() => {
                    if ws.feed(msg).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => {} // the case ended the connection; recv returns None next
            }
        }
    }

    let mut ws = client
        .connect(&format!("{base}/updateReports?agent={AGENT}"))
        .await?;
    while ws.recv().await.is_some() {}
    eprintln!("reports updated");
    Ok(())
}
