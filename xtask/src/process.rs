//! Child processes with bounded waits: running a command to completion under a
//! timeout, background servers that are killed when their guard is dropped,
//! free loopback ports and waiting for a port to accept connections.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How often a running child is checked for exit.
const POLL: Duration = Duration::from_millis(50);
/// How often a long-running command reports that it is still running.
const HEARTBEAT: Duration = Duration::from_secs(60);
/// How long a killed child may take to be reaped.
const REAP: Duration = Duration::from_secs(10);

/// A command line as it would be typed in a shell, for messages.
pub fn display(cmd: &Command) -> String {
    let quote = |s: &str| {
        if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%{}".contains(c))
        {
            s.to_owned()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| quote(&s.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` with inherited stdio and fails unless it exits 0 within `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<()> {
    let status = run_status(cmd, timeout)?;
    if !status.success() {
        bail!("`{}` failed: {status}", display(cmd));
    }
    Ok(())
}

/// Runs `cmd` (echoing it first) and returns its exit status; kills it and
/// fails if it does not finish within `timeout`.
pub fn run_status(cmd: &mut Command, timeout: Duration) -> Result<ExitStatus> {
    println!("$ {}", display(cmd));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    wait_or_kill(&mut child, timeout, &display(cmd))
}

/// Runs `cmd` with its stdout and stderr captured; kills it and fails if it
/// does not finish within `timeout`. The exit status is not checked.
pub fn capture(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let status = wait_or_kill(&mut child, timeout, &display(cmd))?;
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Waits for `child` to exit, printing a line every minute so that long
/// silent runs are visibly alive; kills it (with its descendants) on timeout.
pub fn wait_or_kill(child: &mut Child, timeout: Duration, what: &str) -> Result<ExitStatus> {
    let start = Instant::now();
    let mut next_heartbeat = start + HEARTBEAT;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        let now = Instant::now();
        if now >= start + timeout {
            kill_tree(child);
            bail!(
                "`{what}` did not finish within {} s and was killed",
                timeout.as_secs()
            );
        }
        if now >= next_heartbeat {
            let program = what.split(' ').next().unwrap_or(what);
            let program = program.rsplit('/').next().unwrap_or(program);
            let secs = start.elapsed().as_secs();
            println!("    ... {program} still running after {secs} s");
            next_heartbeat += HEARTBEAT;
        }
        thread::sleep(POLL);
    }
}

/// Polls `child` for exit for at most `timeout`; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(POLL);
    }
}

/// Kills `child` and, on Linux, every process descended from it (a killed
/// `cargo` would otherwise leave its `rustc` or test processes running), then
/// reaps it.
pub fn kill_tree(child: &mut Child) {
    #[cfg(target_os = "linux")]
    for pid in descendants(child.id()) {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid came
        // from /proc a moment ago and at worst names an exited process.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = wait_timeout(child, REAP);
}

/// The pids of all descendants of `root`, read from /proc.
#[cfg(target_os = "linux")]
fn descendants(root: u32) -> Vec<libc::pid_t> {
    let mut parent_of: Vec<(libc::pid_t, libc::pid_t)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            // /proc/PID/stat is "pid (comm) state ppid ..."; comm may hold
            // spaces or parentheses, so parse from the last ')'.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|s| s.parse().ok());
            if let Some(ppid) = ppid {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found: Vec<libc::pid_t> = Vec::new();
    let mut frontier: Vec<libc::pid_t> = libc::pid_t::try_from(root).into_iter().collect();
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid) in &parent_of {
            if ppid == parent && !found.contains(&pid) {
                found.push(pid);
                frontier.push(pid);
            }
        }
    }
    found
}

/// A background process (a server under test, a fuzzing server) that is
/// killed when the guard is dropped, so no error path leaves it running.
///
/// Its stdout and stderr go to a log file; its stdin is a pipe held open for
/// the guard's lifetime (the peer scripts exit when their stdin closes).
pub struct ChildGuard {
    name: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    /// Starts `cmd` in the background, logging its output to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Self> {
        let file = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        println!("$ {}   (background, log: {})", display(cmd), log.display());
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start {name}: `{}`", display(cmd)))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            status: None,
        })
    }

    /// The exit status if the process has exited, `None` while it runs.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Fails, quoting the end of the log, if the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.exited()? {
            None => Ok(()),
            Some(status) => bail!(
                "{} exited unexpectedly ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 30)
            ),
        }
    }

    /// Waits at most `timeout` for the process to exit by itself.
    pub fn wait(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = wait_timeout(&mut self.child, timeout)?;
        }
        Ok(self.status)
    }

    /// Stops the process now (closing its stdin, then killing it).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.child.stdin.take());
        if self.status.is_none() {
            kill_tree(&mut self.child);
            self.status = self.child.try_wait().ok().flatten();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A loopback port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Polls every 50 ms until `addr` accepts a TCP connection; fails after
/// `timeout`, or as soon as the process that should listen there exits.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration, server: &mut ChildGuard) -> Result<()> {
    let start = Instant::now();
    loop {
        server.ensure_running()?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            println!(
                "    {addr} accepts connections after {:.1} s",
                start.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if start.elapsed() >= timeout {
            bail!(
                "{} did not accept connections on {addr} within {} s; last lines of {}:\n{}",
                server.name,
                timeout.as_secs(),
                server.log.display(),
                tail(&server.log, 30)
            );
        }
        thread::sleep(POLL);
    }
}

/// The last `lines` lines of a (log) file, indented, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    const MAX_BYTES: u64 = 64 * 1024;
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)));
        let mut buf = Vec::new();
        let _ = file.read_to_end(&mut buf);
        text = String::from_utf8_lossy(&buf).into_owned();
    }
    let all: Vec<&str> = text.lines().collect();
    if all.is_empty() {
        return "    (empty)".to_owned();
    }
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|line| format!("    | {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The full path of `program` if it is an executable file on `PATH`.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let is_executable = |p: &Path| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        }
        #[cfg(not(unix))]
        {
            p.is_file()
        }
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return is_executable(&path).then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}
