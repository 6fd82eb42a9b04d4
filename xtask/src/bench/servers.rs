//! Building the binaries and starting the servers under test, pinned to
//! their CPU, stopped when dropped.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::*;
use crate::Paths;
use crate::process::{free_port, run};

/// A started server, killed (by its own pid) when dropped.
pub(super) struct Running {
    pub(super) child: Child,
    pub(super) addr: SocketAddr,
    pub(super) _data: Option<PathBuf>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self._data {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub(super) fn start(paths: &Paths, bins: &Bins, server: &Server, log: &Path) -> Result<Running> {
    start_with(paths, bins, server, log, None, &[])
}

/// [`start`], over TLS with this certificate and key (PEM files) if given.
pub(super) fn start_with(
    paths: &Paths,
    bins: &Bins,
    server: &Server,
    log: &Path,
    tls: Option<&tls::Files>,
    serve_args: &[&str],
) -> Result<Running> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"]);
    let mut data = None;
    if server.name == "duplex-serve" {
        let dir = paths
            .target
            .join("bench")
            .join(format!("serve-data-{port}"));
        // Every bench client comes from 127.0.0.1: lift the per-address
        // limit (the connections row opens 10,000).
        cmd.arg(&bins.duplex)
            .args(["serve", "--bind", &addr.to_string(), "--data"])
            .arg(&dir)
            .args(["--max-connections-per-address", "0"])
            .args(serve_args)
            .env("DUPLEX_LOG", "warn");
        if let Some(tls) = tls {
            cmd.arg("--tls-cert")
                .arg(&tls.cert)
                .arg("--tls-key")
                .arg(&tls.key);
        }
        data = Some(dir);
    } else {
        cmd.arg(&bins.echo)
            .args([server.name, "--port", &port.to_string()]);
        if let Some(tls) = tls {
            cmd.arg("--tls").arg(&tls.cert).arg(&tls.key);
        }
    }
    launch(cmd, addr, data, server.name, log)
}

/// A peer-script server (Node or Python): it stops when its stdin closes;
/// killed if it does not.
pub(super) struct Script {
    pub(super) child: Child,
    pub(super) addr: SocketAddr,
}

impl Drop for Script {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a peer script (`cmd`, complete, told to listen on `port`): it is
/// ready once it prints `LISTENING <port>` (the contract of
/// tests/peers/README.md). `what` names it in errors.
pub(super) fn start_script(mut cmd: Command, port: u16, what: &str) -> Result<Script> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        for _ in lines {}
    });
    let script = Script {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Some(Ok(line))) if line.trim() == format!("LISTENING {port}") => Ok(script),
        other => bail!("{what} did not start: {other:?}"),
    }
}

/// `redis-server` on CPU 0 and a free port, without persistence beyond an
/// append-only file fsynced at every write (what docs/deploy.md advises).
pub(super) fn start_redis(paths: &Paths, log: &Path) -> Result<Running> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let dir = paths.target.join("bench").join(format!("redis-{port}"));
    std::fs::create_dir_all(&dir)?;
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0", "redis-server", "--bind", "127.0.0.1"])
        .args(["--port", &port.to_string(), "--save", ""])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .arg("--dir")
        .arg(&dir);
    launch(cmd, addr, Some(dir), "redis-server", log)
}

/// Spawns `cmd` (output to `log`) and waits until it listens on `addr`.
pub(super) fn launch(
    mut cmd: Command,
    addr: SocketAddr,
    data: Option<PathBuf>,
    name: &str,
    log: &Path,
) -> Result<Running> {
    let file = std::fs::File::create(log)?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .context("cannot start taskset (util-linux)")?;
    let mut running = Running {
        child,
        addr,
        _data: data,
    };
    let t = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Some(status) = running.child.try_wait()? {
            bail!("{name} exited ({status}); see {}", log.display());
        }
        if t.elapsed() > Duration::from_secs(20) {
            bail!("{name} does not listen on {addr}; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(running)
}

pub(super) struct Bins {
    pub(super) duplex: PathBuf,
    pub(super) echo: PathBuf,
}

/// `cargo build --release ARGS --target-dir TARGET`.
pub(super) fn run_cargo_release(paths: &Paths, args: &[&str], target: &Path) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(
        paths
            .command(&cargo)
            .args(["build", "--release"])
            .args(args)
            .arg("--target-dir")
            .arg(target),
        Duration::from_secs(1800),
    )
}

pub(super) fn build(paths: &Paths) -> Result<Bins> {
    run_cargo_release(paths, &["--bin", "duplex"], &paths.target)?;
    let bench_target = paths.target.join("bench-servers");
    run_cargo_release(
        paths,
        &["--manifest-path", "bench/Cargo.toml"],
        &bench_target,
    )?;
    Ok(Bins {
        duplex: paths.target.join("release").join("duplex"),
        echo: bench_target.join("release").join("bench-echo"),
    })
}

/// Raises this process's open-file limit (inherited by the servers and the
/// load generator) to the hard limit, for the idle-connections row.
pub(super) fn raise_nofile() {
    #[cfg(target_os = "linux")]
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

pub(super) fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
