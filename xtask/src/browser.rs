//! The browser stage: the pages of `duplex serve` in a real browser.
//!
//! Builds the `duplex` binary (debug) and runs `tests/browser/chat.spec.mjs`,
//! `tests/browser/hub-client.spec.mjs` (the JavaScript hub client,
//! `/duplex.js`, under Node) then `tests/browser/transfer.spec.mjs` (the /send and /receive pages,
//! against the same binary's `duplex send` / `duplex receive`) with node:
//! Debian's chromium (from [`crate::tools`]'s APT table) driven by npm
//! `playwright-core` (its NPM table), against the real server. The
//! screenshots the scripts take are kept in `target/browser/`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::Paths;
use crate::process::run;

/// Time allowed for building the binary the test serves pages from.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Time allowed for each browser test script (each takes about a minute).
const RUN_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The browser the tests drive.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The test scripts in `tests/browser/`, run in this order: the chat page,
/// the hub client it is built on (in Node, no browser), then the
/// file-transfer pages (which also run `duplex send` / `receive`).
const SCRIPTS: [&str; 3] = ["chat.spec.mjs", "hub-client.spec.mjs", "transfer.spec.mjs"];

/// Where the screenshots go.
pub fn artifacts(paths: &Paths) -> PathBuf {
    paths.target.join("browser")
}

/// Builds `duplex` and runs the browser tests against it, one script after
/// the other.
pub fn run_tests(paths: &Paths) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(
        paths.command(cargo).args(["build", "--bin", "duplex"]),
        BUILD_TIMEOUT,
    )?;
    let server = paths.target.join("debug").join("duplex");
    if !server.is_file() {
        bail!(
            "the build succeeded but {} does not exist",
            server.display()
        );
    }
    let out = artifacts(paths);
    // Screenshots of an earlier run must not pass for this one's.
    let _ = std::fs::remove_dir_all(&out);
    for script in SCRIPTS {
        let script = paths.root.join("tests").join("browser").join(script);
        let mut node = paths.command("node");
        node.arg(script)
            .env("NODE_PATH", paths.node_modules())
            .env("DUPLEX_SERVER_BIN", &server)
            .env("DUPLEX_CHROMIUM", CHROMIUM)
            .env("DUPLEX_BROWSER_OUT", &out);
        run(&mut node, RUN_TIMEOUT)?;
    }
    println!("    screenshots: {}", out.display());
    Ok(())
}
