//! `duplex bench`: its arguments and its output; the load generator itself
//! is the duplex-bench crate.

use anyhow::{Context, Result, bail};
use clap::Args;

/// `duplex bench MODE URL [OPTIONS]`.
#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    mode: duplex_bench::Mode,
}

/// Runs `duplex bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (common, report) = runtime.block_on(duplex_bench::measure(args.mode))?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.to_table());
    }
    if let Some(path) = &common.html {
        std::fs::write(path, duplex_bench::html::page(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let errors = report.errors();
    if errors > 0 {
        bail!("{errors} errors: the run failed");
    }
    Ok(())
}
