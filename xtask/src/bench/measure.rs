//! One measurement: `duplex bench` against a server, its JSON report,
//! and the medians over repetitions.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::*;
use crate::process::capture;

/// One measurement's figures.
#[derive(Clone, Default)]
pub(super) struct Sample {
    pub(super) rate: f64,
    pub(super) p50: f64,
    pub(super) p99: f64,
    pub(super) rss_kib: f64,
    pub(super) cpu_us: f64,
    /// The server's CPU time per echoed message, µs (echo and latency).
    pub(super) cpu_us_per_msg: f64,
    /// Its user-space part, µs: the server's own code, not the kernel's.
    pub(super) user_us_per_msg: f64,
    /// How busy the server was, % of one core.
    pub(super) busy_pct: f64,
}

pub(super) fn measure(
    bins: &Bins,
    work: &Workload,
    server: &Server,
    running: &Running,
) -> Result<(Sample, String)> {
    let path = match (work.mode, server.name) {
        (_, "duplex-serve") => "/echo",
        _ => "/",
    };
    let url = format!("ws://{}{path}", running.addr);
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "1"])
        .arg(&bins.duplex)
        .args(["bench", work.mode, &url, "--json"])
        .args(&work.args);
    if server.name == "tcp" && work.mode != "connections" {
        cmd.arg("--mirror");
    }
    // Every mode reports the server's own cost: throughput saturates once
    // the load generator is the bottleneck, CPU time per message does not.
    cmd.args(["--server-pid", &running.child.id().to_string()]);
    let shown = format!("{} {}", bins.duplex.display(), cmd_args(&cmd));
    let v = bench_report(&mut cmd, Duration::from_secs(600), &format!("`{shown}`"))?;
    Ok((Sample::from_report(&v), shown))
}

impl Sample {
    /// The figures of a `duplex bench ... --json` report's first row (the
    /// server's CPU is NaN unless the run had `--server-pid`).
    pub(super) fn from_report(v: &Value) -> Self {
        let row = &v["rows"][0];
        let extra = &row["extra"];
        Sample {
            rate: row["ops_per_sec"].as_f64().unwrap_or(0.0),
            p50: row["latency_us"]["p50"].as_f64().unwrap_or(0.0),
            p99: row["latency_us"]["p99"].as_f64().unwrap_or(0.0),
            rss_kib: extra["rss_kib_per_conn"].as_f64().unwrap_or(0.0),
            cpu_us: extra["cpu_us_per_handshake"].as_f64().unwrap_or(0.0),
            cpu_us_per_msg: extra["server_cpu_us_per_msg"].as_f64().unwrap_or(f64::NAN),
            user_us_per_msg: extra["server_user_us_per_msg"].as_f64().unwrap_or(f64::NAN),
            busy_pct: extra["server_cpu_pct"].as_f64().unwrap_or(f64::NAN),
        }
    }
}

/// Fails unless an echo smoke report is plausible; prints its figures.
pub(super) fn check_echo_smoke(v: &Value) -> Result<()> {
    let row = &v["rows"][0];
    let ops = row["ops"].as_u64().unwrap_or(0);
    let rate = row["ops_per_sec"].as_f64().unwrap_or(0.0);
    let p50 = row["latency_us"]["p50"].as_f64().unwrap_or(0.0);
    let p99 = row["latency_us"]["p99"].as_f64().unwrap_or(0.0);
    let bytes = row["bytes"].as_u64().unwrap_or(0);
    if v["errors"] != 0 || row["errors"] != 0 {
        bail!("duplex bench reported errors: {v}");
    }
    // The server's CPU time: some, and not more than both cores all along.
    let cpu_us = row["extra"]["server_cpu_us_per_msg"]
        .as_f64()
        .unwrap_or(0.0);
    let busy = row["extra"]["server_cpu_pct"].as_f64().unwrap_or(0.0);
    if ops < 100
        || rate <= 0.0
        || !(0.0 < p50 && p50 <= p99)
        || bytes != ops * 1024
        || v["mode"] != "echo"
        || !(cpu_us > 0.0 && busy > 0.0 && busy <= 100.0 * available_cores() as f64 + 10.0)
    {
        bail!("implausible report: {v}");
    }
    println!(
        "    {}: {ops} echoes, {rate:.0}/s, p50 {p50:.1} µs, p99 {p99:.1} µs, 0 errors; the server's CPU {cpu_us:.2} µs per message, {busy:.0}% busy",
        row["name"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// Runs a `duplex bench ... --json` command and returns its report; fails
/// with `what`, the exit status and standard error if the run failed.
pub(super) fn bench_report(cmd: &mut Command, timeout: Duration, what: &str) -> Result<Value> {
    let out = capture(cmd, timeout)?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("{what} printed no JSON"))
}

pub(super) fn cmd_args(cmd: &Command) -> String {
    cmd.get_args()
        .skip(3)
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `0..n`, reversed on odd repetitions: each server (or variant) runs
/// first as often as last, so drift in the machine does not favour one.
pub(super) fn alternating(n: usize, rep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if rep % 2 == 1 {
        order.reverse();
    }
    order
}

/// The median of the figures present: a missing one (NaN, e.g. a run that
/// reported no server CPU) is left out rather than sorted last, and none
/// present is NaN.
pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub(super) fn cmd_args_all(cmd: &Command) -> String {
    cmd.get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn a_missing_figure_is_left_out_of_the_median() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![1.0, f64::NAN, 3.0]), 2.0);
        assert!(median(vec![f64::NAN]).is_nan());
        assert!(median(Vec::new()).is_nan());
    }
}
