//! The server's own cost during a run, read from `/proc/PID` (Linux):
//! CPU time and resident memory. Throughput alone saturates once the load
//! generator is the bottleneck; CPU time per message still tells a cheaper
//! server from a dearer one.

use std::time::Instant;

use anyhow::{Context, Result};

use crate::report::Row;

/// What the server had used at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Resident set, KiB.
    pub rss_kib: f64,
    /// User and system CPU time, seconds (every thread, finished ones too),
    /// to the nanosecond where the kernel's clock of the process's CPU time
    /// can be read, else in /proc's 10 ms ticks.
    pub cpu_seconds: f64,
    /// The user-space part of `cpu_seconds`: what the server's own code
    /// spent, without the kernel's work for its syscalls and packets.
    pub user_seconds: f64,
}

/// What the processes `pids` had used, together.
pub fn read(pids: &[u32]) -> Result<Usage> {
    let mut sum = Usage {
        rss_kib: 0.0,
        cpu_seconds: 0.0,
        user_seconds: 0.0,
    };
    for &pid in pids {
        let one = read_one(pid)?;
        sum.rss_kib += one.rss_kib;
        sum.cpu_seconds += one.cpu_seconds;
        sum.user_seconds += one.user_seconds;
    }
    Ok(sum)
}

/// Reads `/proc/PID/status` and `/proc/PID/stat`.
fn read_one(pid: u32) -> Result<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| {
        format!(
            "cannot read /proc/{pid}/status: is --server-pid a running process on this machine?"
        )
    })?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .context("no VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses.
    let after = stat.rsplit_once(')').context("bad stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    // In USER_HZ, which Linux's ABI fixes at 100.
    Ok(Usage {
        rss_kib,
        cpu_seconds: cpu_clock_seconds(pid).unwrap_or((utime + stime) / 100.0),
        user_seconds: utime / 100.0,
    })
}

/// The process's CPU time to the nanosecond, from its CPU-time clock
/// (`clock_getcpuclockid`): /proc counts 10 ms ticks, too coarse for a
/// per-handshake figure (5,000 handshakes of 14 µs are 7 ticks).
fn cpu_clock_seconds(pid: u32) -> Option<f64> {
    // Linux's process ids stop at 2^22 (PID_MAX_LIMIT); the clock id packs
    // the id shifted left, so a larger one would name another clock.
    if !(1..=1 << 22).contains(&pid) {
        return None;
    }
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut clock: libc::clockid_t = 0;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both calls only write to the local they are given.
    let read = unsafe {
        libc::clock_getcpuclockid(pid, &mut clock) == 0 && libc::clock_gettime(clock, &mut now) == 0
    };
    read.then_some(now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9)
}

/// The server's CPU time over a measured window. A mode starts it when its
/// window opens (after connecting, subscribing, warming up) and reports when
/// the window's operations are done, so setup does not count against them.
pub struct CpuWatch {
    pids: Vec<u32>,
    start: Usage,
    started: Instant,
}

impl CpuWatch {
    /// Starts watching the processes `pids`, together.
    pub fn start(pids: &[u32]) -> Result<Self> {
        Ok(Self {
            pids: pids.to_vec(),
            start: read(pids)?,
            started: Instant::now(),
        })
    }

    /// Starts watching `pids` if there are any (the `--server-pid`
    /// option): `None` if there are none.
    pub fn start_if(pids: &[u32]) -> Result<Option<Self>> {
        (!pids.is_empty()).then(|| Self::start(pids)).transpose()
    }

    /// Adds to `row` the server's CPU time per operation since the start
    /// (`per` names the operation: `msg`, `delivery`) and how busy it was
    /// over that time (100% is one core all along: the server, not the
    /// generator, was the bottleneck). The user-space part per operation
    /// comes beside it: on loopback most of a small echo's CPU is the
    /// kernel's, which a server changes only through its syscalls, so a
    /// change to the server's own code shows there first.
    pub fn report(&self, row: &mut Row, per: &str) -> Result<()> {
        let ops = row.ops.max(1) as f64;
        self.report_per(row, per, ops)
    }

    /// [`report`](Self::report) per `count` units of what `per` names
    /// (`mib`: per MiB moved), not per operation.
    pub fn report_per(&self, row: &mut Row, per: &str, count: f64) -> Result<()> {
        let now = read(&self.pids)?;
        let cpu = now.cpu_seconds - self.start.cpu_seconds;
        let user = now.user_seconds - self.start.user_seconds;
        let wall = self.started.elapsed().as_secs_f64();
        let count = count.max(1e-9);
        row.extra.push((
            format!("server_cpu_us_per_{per}"),
            cpu * 1e6 / count,
            "µs".into(),
        ));
        row.extra.push((
            format!("server_user_us_per_{per}"),
            user * 1e6 / count,
            "µs".into(),
        ));
        row.extra.push((
            "server_cpu_pct".into(),
            100.0 * cpu / wall.max(1e-9),
            "%".into(),
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The precise clock counts what the ticks count, finer.
    #[test]
    fn the_cpu_clock_agrees_with_the_ticks() {
        let pid = std::process::id();
        let ticks = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            let after = stat.rsplit_once(')').unwrap().1.to_owned();
            let f: Vec<f64> = after
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0.0))
                .collect();
            (f[11] + f[12]) / 100.0
        };
        let (t0, c0) = (
            ticks(),
            cpu_clock_seconds(pid).expect("Linux has CPU clocks"),
        );
        let mut x = 0u64;
        while ticks() - t0 < 0.2 {
            for i in 0..100_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
        }
        let (t1, c1) = (ticks(), cpu_clock_seconds(pid).unwrap());
        // Ticks are sampled, so they may be off by a few either way.
        assert!(
            ((c1 - c0) - (t1 - t0)).abs() < 0.05,
            "clock {} s, ticks {} s",
            c1 - c0,
            t1 - t0
        );
        // No such process: the id after the largest the kernel gives.
        let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(cpu_clock_seconds(pid_max + 1).is_none());
        assert!(cpu_clock_seconds(i32::MAX as u32).is_none());
    }

    #[test]
    fn cpu_time_spent_is_reported_per_operation() {
        let pid = std::process::id();
        let watch = CpuWatch::start(&[pid]).unwrap();
        assert!(watch.start.rss_kib > 0.0);
        // Spend CPU until the kernel's 10 ms ticks have counted some.
        let mut x = 0u64;
        while read(&[pid]).unwrap().cpu_seconds - watch.start.cpu_seconds < 0.03 {
            for i in 0..100_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
        }
        let mut row = Row::new("test");
        row.ops = 1000;
        row.elapsed = std::time::Duration::from_secs(1);
        watch.report(&mut row, "msg").unwrap();
        let figure = |name: &str| row.extra.iter().find(|(k, _, _)| k == name).unwrap().1;
        let (per_msg, busy) = (figure("server_cpu_us_per_msg"), figure("server_cpu_pct"));
        // At least 30 ms over 1000 operations; busy over the watch's own
        // time, which was all spent computing on this thread.
        assert!(per_msg >= 30.0, "{per_msg}");
        // The loop above is user-space work: some of the time is its, and
        // no more than all.
        let user = figure("server_user_us_per_msg");
        assert!(user > 0.0 && user <= per_msg, "{user} of {per_msg}");
        assert!(busy > 0.0 && busy <= 100.0 * 2.0 + 10.0, "{busy}");
    }
}
