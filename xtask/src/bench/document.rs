//! `docs/performance.md`: the tables, the chart, the machine.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use super::*;

/// The heading from which docs/performance.md is written by hand: kept as
/// it is when the generated part above it is rewritten.
pub(super) const NOTES: &str = "## Notes (kept across runs)";

/// A table's head: `first`, then a column per server.
pub(super) fn table_head(first: &str, servers: &[&Server]) -> String {
    let mut t = format!("| {first} |");
    for s in servers {
        let _ = write!(t, " {} |", s.label);
    }
    t.push_str("\n|---|");
    t.push_str(&"---|".repeat(servers.len()));
    t.push('\n');
    t
}

pub(super) fn table(
    work: &[Workload],
    servers: &[&Server],
    samples: &[Vec<Vec<Sample>>],
) -> String {
    let mut t = table_head("workload", servers);
    let tcp = servers.iter().position(|s| s.name == "tcp");
    for (wi, w) in work.iter().enumerate() {
        let _ = write!(t, "| {} |", w.label);
        let med =
            |si: usize, f: fn(&Sample) -> f64| median(samples[wi][si].iter().map(f).collect());
        for si in 0..servers.len() {
            let cell = match w.mode {
                "echo" => {
                    let rate = med(si, |s| s.rate);
                    match tcp {
                        Some(ti) => format!(
                            "{:.0}% ({})",
                            100.0 * rate / med(ti, |s| s.rate),
                            human(rate)
                        ),
                        None => human(rate),
                    }
                }
                "latency" => format!("{:.1} / {:.1} µs", med(si, |s| s.p50), med(si, |s| s.p99)),
                _ => format!(
                    "{:.2} KiB, {:.0} µs CPU",
                    med(si, |s| s.rss_kib),
                    med(si, |s| s.cpu_us)
                ),
            };
            let _ = write!(t, " {cell} |");
        }
        t.push('\n');
    }
    t
}

/// The server's CPU time per echoed message, as a share of the TCP echo's
/// in the same run (lower is better), with the figure, its user-space part
/// (the server's own code; the rest is the kernel's) and how busy the
/// server was: a server below 100% busy was not the bottleneck, so its
/// throughput share says little, while its CPU per message still does.
pub(super) fn cpu_table(
    work: &[Workload],
    servers: &[&Server],
    samples: &[Vec<Vec<Sample>>],
) -> String {
    let mut t = table_head("server CPU per message", servers);
    let tcp = servers.iter().position(|s| s.name == "tcp");
    for (wi, w) in work.iter().enumerate() {
        if !matches!(w.mode, "echo" | "latency") {
            continue;
        }
        let _ = write!(t, "| {} |", w.label);
        let med =
            |si: usize, f: fn(&Sample) -> f64| median(samples[wi][si].iter().map(f).collect());
        for si in 0..servers.len() {
            let us = med(si, |s| s.cpu_us_per_msg);
            let user = med(si, |s| s.user_us_per_msg);
            let busy = med(si, |s| s.busy_pct);
            let share = tcp.map(|ti| 100.0 * us / med(ti, |s| s.cpu_us_per_msg));
            let _ = write!(t, " {} |", cpu_cell(us, user, busy, share));
        }
        t.push('\n');
    }
    t
}

/// A cell of a table of the server's CPU per message: µs (total and the
/// user-space part), how busy the server was, and the share of the
/// baseline's CPU per message when there is one.
pub(super) fn cpu_cell(us: f64, user: f64, busy: f64, share: Option<f64>) -> String {
    match share {
        Some(share) => format!("{share:.0}% ({us:.2} µs, user {user:.3}; {busy:.0}% busy)"),
        None => format!("{us:.2} µs, user {user:.3}; {busy:.0}% busy"),
    }
}

pub(super) fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M/s", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k/s", v / 1e3)
    } else {
        format!("{v:.0}/s")
    }
}

/// Grouped bars: each echo workload's throughput per server, as % of TCP.
pub(super) fn throughput_svg(
    work: &[Workload],
    servers: &[&Server],
    samples: &[Vec<Vec<Sample>>],
) -> String {
    const COLORS: [&str; 5] = ["#6b7280", "#2563eb", "#0891b2", "#16a34a", "#dc2626"];
    let Some(tcp) = servers.iter().position(|s| s.name == "tcp") else {
        return String::from("<svg xmlns=\"http://www.w3.org/2000/svg\"/>\n");
    };
    let echo: Vec<usize> = (0..work.len())
        .filter(|&i| work[i].mode == "echo")
        .collect();
    let bar_h = 14.0;
    let group_h = bar_h * servers.len() as f64 + 24.0;
    let (left, width) = (300.0, 820.0);
    let height = 60.0 + group_h * echo.len() as f64 + 16.0 * servers.len() as f64;
    let scale = (width - left - 80.0) / 120.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"4\" y=\"16\" font-weight=\"bold\">Echo throughput as % of a plain TCP echo (medians)</text>\n\
         <line x1=\"{x}\" y1=\"24\" x2=\"{x}\" y2=\"{y2}\" stroke=\"#999\" stroke-dasharray=\"4\"/>\n\
         <text x=\"{x}\" y=\"{y3}\" text-anchor=\"middle\">100%</text>\n",
        x = left + 100.0 * scale,
        y2 = 30.0 + group_h * echo.len() as f64,
        y3 = 42.0 + group_h * echo.len() as f64,
    );
    for (g, &wi) in echo.iter().enumerate() {
        let y0 = 30.0 + group_h * g as f64;
        let _ = writeln!(
            svg,
            "<text x=\"4\" y=\"{:.1}\">{}</text>",
            y0 + 12.0,
            work[wi].label
        );
        let base = median(samples[wi][tcp].iter().map(|s| s.rate).collect());
        for si in 0..servers.len() {
            let rate = median(samples[wi][si].iter().map(|s| s.rate).collect());
            let pct = 100.0 * rate / base;
            let y = y0 + 18.0 + bar_h * si as f64;
            let _ = writeln!(
                svg,
                "<rect x=\"{left}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\">{pct:.0}%</text>",
                (pct.min(120.0) * scale).max(0.0),
                bar_h - 2.0,
                COLORS[si % COLORS.len()],
                left + pct.min(120.0) * scale + 4.0,
                y + bar_h - 4.0
            );
        }
    }
    let ly = 50.0 + group_h * echo.len() as f64;
    for (si, s) in servers.iter().enumerate() {
        let y = ly + 16.0 * si as f64;
        let _ = writeln!(
            svg,
            "<rect x=\"{left}\" y=\"{y}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            COLORS[si % COLORS.len()],
            left + 18.0,
            y + 10.0,
            s.label
        );
    }
    svg.push_str("</svg>\n");
    svg
}

pub(super) fn machine() -> String {
    let lscpu = Command::new("lscpu")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let keep = [
        "Architecture",
        "Model name",
        "CPU(s)",
        "Thread(s) per core",
        "CPU max MHz",
        "L2 cache",
        "L3 cache",
        "Hypervisor vendor",
    ];
    let mut out: Vec<String> = lscpu
        .lines()
        .filter(|l| keep.iter().any(|k| l.starts_with(&format!("{k}:"))))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let kernel = Command::new("uname")
        .arg("-sr")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    out.push(format!("Kernel: {kernel}"));
    let rustc = Command::new("rustc")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    out.push(format!("Compiler: {rustc}"));
    out.iter().map(|l| format!("- {l}\n")).collect()
}

pub(super) fn document(
    o: &Options,
    table: &str,
    sections: &str,
    commands: &[String],
    load_before: &str,
    load_after: &str,
    took: Duration,
) -> String {
    let mut d = String::from("# Performance\n\n");
    let _ = write!(
        d,
        "Written by `cargo xtask bench{}` ({} repetition(s) of {} s per workload and server; the run took {:.0} s). \
         Every server runs on a single-threaded tokio runtime pinned to CPU 0 (`taskset -c 0`); the load generator, \
         `duplex bench`, is pinned to CPU 1 and validates every echo. Servers are started fresh for each measurement and \
         alternated within each repetition; each cell is the median over the repetitions. Echo rows are throughput as a \
         share of the plain TCP echo (the practical ceiling: same reads and writes, no framing), with messages/s in \
         parentheses; the latency row is p50 / p99 round trip; the last row is the server's RSS growth per idle connection \
         and its CPU time per handshake (from `/proc`). `duplex serve /echo` is the full server (its own accept loop takes WebSocket upgrades to /echo and /ws without hyper; one \
         current-thread runtime per core it may use, so one here).\n\n",
        if o.quick { " --quick" } else { "" },
        o.reps,
        o.seconds,
        took.as_secs_f64()
    );
    d.push_str(
        "Runs on this shared machine vary by about ±15%: compare within one run, as ratios.\n\n",
    );
    d.push_str(table);
    d.push_str("\n![Echo throughput as a share of TCP](performance/throughput.svg)\n\n");
    d.push_str(sections);
    d.push_str("\n## Machine\n\n");
    d.push_str(&machine());
    let _ = write!(
        d,
        "- Load average (1, 5, 15 min) before: {}; after: {}\n\n",
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        load_after
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    d.push_str("## Commands\n\nServers (`bench/`, built with `cargo build --release --manifest-path bench/Cargo.toml`):\n\n```sh\n");
    d.push_str("taskset -c 0 bench-echo tcp|duplex|tungstenite|fastwebsockets --port PORT\ntaskset -c 0 duplex serve --bind 127.0.0.1:PORT --data DIR\n```\n\nLoad, per server (`--mirror` for the TCP echo, which returns the masked frames as they are; `--server-pid` is the server's):\n\n```sh\n");
    let mut seen = std::collections::BTreeSet::new();
    for c in commands {
        let generic: String = c
            .split_whitespace()
            .map(|w| {
                if w.starts_with("ws://") {
                    "ws://127.0.0.1:PORT/"
                } else {
                    w
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        if seen.insert(generic.clone()) {
            d.push_str(&generic);
            d.push('\n');
        }
    }
    d.push_str("```\n\nEach `duplex bench` mode also takes `--html FILE` for a page with its latency distribution and throughput charts.\n");
    d
}
