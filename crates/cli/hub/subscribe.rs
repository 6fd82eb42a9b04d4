//! `duplex subscribe URL CHANNEL`: prints publications as they arrive,
//! reconnecting and recovering missed ones by itself.

use anyhow::{Context, bail};
use duplex_hub::Push;

use super::ServerArgs;
use duplex_hub_client::{Event, Link};

/// Options of `duplex subscribe`.
#[derive(clap::Args, Debug)]
pub struct SubscribeArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The channel
    pub channel: String,
    /// Start after this position (EPOCH:OFFSET, as printed by --json): missed publications are replayed first
    #[arg(long)]
    pub since: Option<String>,
    /// One JSON object per publication (channel, offset, epoch, ts, from, data)
    #[arg(long)]
    pub json: bool,
    /// Exit after this many publications
    #[arg(long)]
    pub count: Option<u64>,
}

/// Subscribes until interrupted (or `--count` is reached).
pub fn run(args: SubscribeArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(subscribe(args))
}

fn parse_since(s: &str) -> anyhow::Result<(String, u64)> {
    let (epoch, offset) = s
        .rsplit_once(':')
        .context("--since takes EPOCH:OFFSET, e.g. k3j9x2:41")?;
    Ok((
        epoch.to_owned(),
        offset
            .parse()
            .context("the OFFSET in --since must be a number")?,
    ))
}

async fn subscribe(args: SubscribeArgs) -> anyhow::Result<()> {
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let url = args.server.ws_url()?;
    let mut link = Link::open(
        url,
        args.server.client()?,
        None,
        vec![(args.channel.clone(), since.clone())],
    )
    .await?;
    let mut printed = 0u64;
    if args.count == Some(0) {
        return Ok(());
    }
    loop {
        let event = tokio::select! {
            e = link.next() => e,
            _ = tokio::signal::ctrl_c() => break,
        };
        match event {
            Event::Publication(p) if p.channel == args.channel => {
                if args.json {
                    println!("{}", serde_json::to_string(&p)?);
                } else {
                    // A string prints as its text; anything else as the
                    // JSON the publisher sent.
                    match serde_json::from_str::<String>(p.data.get()) {
                        Ok(text) => println!("{text}"),
                        Err(_) => println!("{}", p.data.get()),
                    }
                }
                printed += 1;
                if args.count.is_some_and(|n| printed >= n) {
                    break;
                }
            }
            Event::Gap(channel) => eprintln!(
                "duplex: warning: some publications in {channel} could not be recovered (history too short)"
            ),
            Event::Disconnected(why, delay) => eprintln!(
                "duplex: disconnected ({why}); reconnecting in {:.1}s",
                delay.as_secs_f64()
            ),
            Event::Reconnected => eprintln!("duplex: reconnected"),
            Event::Push(Push::Kicked(k)) => bail!("kicked from {}: {}", k.channel, k.reason),
            _ => {}
        }
    }
    link.close().await;
    Ok(())
}
