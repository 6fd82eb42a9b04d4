//! `scp` on loopback, the yardstick of the transfer section: Debian's
//! `sshd` started by hand on a free loopback port with throwaway keys (no
//! system configuration touched), and `scp` copying a file through it with
//! a chosen cipher.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::process::{ChildGuard, capture, free_port, wait_for_port, wait_or_kill};

/// The Debian packages, as `tools::ensure_apt` takes them.
pub const PACKAGES: &[(&str, &str)] = &[
    ("openssh-server", "/usr/sbin/sshd"),
    ("openssh-client", "scp"),
];

/// A running `sshd` on 127.0.0.1 that lets this user in with a key made
/// for the run.
pub struct Sshd {
    port: u16,
    key: PathBuf,
    user: String,
    _server: ChildGuard,
}

impl Sshd {
    /// Starts `sshd` with its keys and configuration in `dir`.
    pub fn start(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let host_key = dir.join("host_key");
        let key = dir.join("user_key");
        for k in [&host_key, &key] {
            let _ = std::fs::remove_file(k);
            let _ = std::fs::remove_file(k.with_extension("pub"));
            let out = capture(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(k),
                Duration::from_secs(30),
            )?;
            if !out.status.success() {
                bail!(
                    "ssh-keygen failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let authorized = dir.join("authorized_keys");
        std::fs::copy(key.with_extension("pub"), &authorized)?;
        let port = free_port()?;
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nPidFile {}\nSubsystem sftp internal-sftp\n",
                host_key.display(),
                authorized.display(),
                dir.join("sshd.pid").display()
            ),
        )?;
        // Its privilege separation directory, which only root needs.
        let _ = std::fs::create_dir_all("/run/sshd");
        let mut cmd = Command::new("/usr/sbin/sshd");
        cmd.arg("-D").arg("-e").arg("-f").arg(&config);
        let mut server = ChildGuard::spawn("sshd", &mut cmd, &dir.join("sshd.log"))?;
        wait_for_port(
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            Duration::from_secs(20),
            &mut server,
        )?;
        let user = capture(Command::new("id").arg("-un"), Duration::from_secs(10))?;
        let user = String::from_utf8_lossy(&user.stdout).trim().to_owned();
        Ok(Self {
            port,
            key,
            user,
            _server: server,
        })
    }

    /// Copies `source` to `dest` on this machine through `sshd` with
    /// `cipher`; returns the time the copy took.
    pub fn copy(&self, cipher: Option<&str>, source: &Path, dest: &Path) -> Result<Duration> {
        let mut cmd = Command::new("scp");
        cmd.args([
            "-q",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
        ])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
        .arg("-i")
        .arg(&self.key)
        .args(["-P", &self.port.to_string()]);
        if let Some(c) = cipher {
            cmd.args(["-c", c]);
        }
        cmd.arg(source)
            .arg(format!("{}@127.0.0.1:{}", self.user, dest.display()));
        let started = Instant::now();
        let mut child = cmd.spawn().context("cannot start scp")?;
        let status = wait_or_kill(&mut child, Duration::from_secs(600), "scp")?;
        let took = started.elapsed();
        if !status.success() {
            bail!("scp failed ({status}); see the sshd log");
        }
        Ok(took)
    }
}
