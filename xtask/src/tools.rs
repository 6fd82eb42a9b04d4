//! Installs what the tests need, idempotently and quickly when already there:
//! Debian packages (apt-get), a Python venv with pinned PyPI packages, and a
//! node_modules directory with pinned npm packages, all cached under
//! `target/xtask/`.
//!
//! To add a dependency, add one line to [`APT`], [`PIP`] or [`NPM`].

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::Paths;
use crate::process::{self, capture, find_on_path, run};

/// Debian packages, as (package, what shows it is already there: a program on
/// `PATH`, or the absolute path of a file the package installs).
/// `openssl` makes the certificates of the browser tests' HTTPS (and
/// HTTP/2) pages; the scale-out tests start their own `redis-server`s
/// (Debian 12 has no `valkey-server` package to test as well) and nginx
/// with `docs/deploy/nginx.conf` in front of them.
const APT: &[(&str, &str)] = &[
    ("chromium", "/usr/bin/chromium"),
    ("openssl", "openssl"),
    ("redis-server", "/usr/bin/redis-server"),
    ("nginx", "/usr/sbin/nginx"),
];

/// PyPI packages for the venv at `target/xtask/venv`, as (name, exact version).
const PIP: &[(&str, &str)] = &[("kosoku", "0.1.0"), ("websockets", "17.4")];

/// npm packages for `target/xtask/node/node_modules`, as (name, exact version).
const NPM: &[(&str, &str)] = &[
    ("ws", "8.23.0"),
    ("playwright-core", "1.65.1"),
    ("socket.io", "4.8.1"),
];

/// Time allowed for one installer command (apt-get, pip, npm).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Time allowed for a quick check (a version query, an import).
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Installs everything in [`APT`], [`PIP`] and [`NPM`] that is missing.
pub fn prepare(paths: &Paths) -> Result<()> {
    ensure_apt(APT)?;
    ensure_venv(paths, PIP)?;
    ensure_npm(paths, NPM)?;
    Ok(())
}

/// Installs the Debian `packages` whose program is missing, running
/// `apt-get update` first (once per xtask run). Does nothing, and needs
/// neither apt nor root, when every program is already there.
pub fn ensure_apt(packages: &[(&str, &str)]) -> Result<()> {
    static UPDATED: AtomicBool = AtomicBool::new(false);

    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, probe)| !apt_probe_found(probe))
        .map(|(package, _)| *package)
        .collect();
    for (package, probe) in packages {
        if !missing.contains(package) {
            println!("    apt: {package} already installed ({probe} found)");
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    if find_on_path("apt-get").is_none() {
        bail!(
            "missing Debian packages {} and there is no apt-get here: install them by hand",
            missing.join(" ")
        );
    }
    // apt-get needs root: use sudo when not root and sudo is there.
    let root = capture(Command::new("id").arg("-u"), CHECK_TIMEOUT)
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    let apt = |args: &[&str]| {
        let mut cmd = if root || find_on_path("sudo").is_none() {
            let mut cmd = Command::new("apt-get");
            cmd.env("DEBIAN_FRONTEND", "noninteractive");
            cmd
        } else {
            // sudo drops the environment, but passes on VAR=value arguments.
            let mut sudo = Command::new("sudo");
            sudo.args(["DEBIAN_FRONTEND=noninteractive", "apt-get"]);
            sudo
        };
        cmd.args(args);
        cmd
    };
    if !UPDATED.swap(true, Ordering::SeqCst) {
        run(&mut apt(&["update", "-q"]), INSTALL_TIMEOUT)?;
    }
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(["-o", "Dpkg::Use-Pty=0"]);
    install.args(&missing);
    run(&mut install, INSTALL_TIMEOUT)
}

fn apt_probe_found(probe: &str) -> bool {
    if probe.starts_with('/') {
        Path::new(probe).exists()
    } else {
        find_on_path(probe).is_some()
    }
}

/// Makes sure the venv exists, works, and holds exactly the pinned `packages`.
pub fn ensure_venv(paths: &Paths, packages: &[(&str, &str)]) -> Result<()> {
    let python = paths.venv_python();
    if paths.venv.exists() && !venv_works(&python) {
        println!(
            "    venv at {} is broken: recreating it",
            paths.venv.display()
        );
        std::fs::remove_dir_all(&paths.venv)
            .with_context(|| format!("cannot remove {}", paths.venv.display()))?;
    }
    if !python.exists() {
        create_venv(&paths.venv)?;
    }

    let missing = missing_pip_packages(&python, packages)?;
    if missing.is_empty() {
        let list: Vec<String> = packages.iter().map(|(n, v)| format!("{n} {v}")).collect();
        println!("    venv: {} already installed", list.join(", "));
        return Ok(());
    }
    let mut pip = Command::new(&python);
    pip.args(["-m", "pip", "install", "--quiet", "--no-input"]);
    pip.args(["--disable-pip-version-check", "--progress-bar", "off"]);
    pip.args(missing.iter().map(|(n, v)| format!("{n}=={v}")));
    run(&mut pip, INSTALL_TIMEOUT)?;
    let still = missing_pip_packages(&python, packages)?;
    if !still.is_empty() {
        bail!("pip install finished but {still:?} are still missing from the venv");
    }
    Ok(())
}

fn venv_works(python: &Path) -> bool {
    capture(
        Command::new(python).args(["-c", "import sys"]),
        CHECK_TIMEOUT,
    )
    .is_ok_and(|out| out.status.success())
}

fn create_venv(venv: &Path) -> Result<()> {
    if find_on_path("python3").is_none() {
        ensure_apt(&[
            ("python3", "python3"),
            ("python3-venv", "/usr/share/doc/python3-venv/copyright"),
        ])?;
    }
    let mut cmd = Command::new("python3");
    cmd.arg("-m").arg("venv").arg(venv);
    if run(&mut cmd, INSTALL_TIMEOUT).is_ok() {
        return Ok(());
    }
    // Debian's own python3 needs python3-venv for `-m venv` (ensurepip).
    println!("    python3 -m venv failed: installing python3-venv and retrying");
    let _ = std::fs::remove_dir_all(venv);
    ensure_apt(&[("python3-venv", "/usr/share/doc/python3-venv/copyright")])?;
    run(&mut cmd, INSTALL_TIMEOUT)
}

/// The pinned packages that are absent from the venv or at another version.
fn missing_pip_packages<'a>(
    python: &Path,
    packages: &[(&'a str, &'a str)],
) -> Result<Vec<(&'a str, &'a str)>> {
    const CHECK: &str = "\
import importlib.metadata as md, sys
for arg in sys.argv[1:]:
    name, _, want = arg.partition('==')
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        have = None
    print(name if have != want else '')
";
    let mut cmd = Command::new(python);
    cmd.args(["-c", CHECK])
        .args(packages.iter().map(|(n, v)| format!("{n}=={v}")));
    let out = capture(&mut cmd, CHECK_TIMEOUT)?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            process::display(&cmd),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let wrong: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    Ok(packages
        .iter()
        .filter(|(name, _)| wrong.contains(name))
        .copied()
        .collect())
}

/// Makes sure `target/xtask/node/node_modules` holds the pinned `packages`.
pub fn ensure_npm(paths: &Paths, packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<(&str, &str)> = packages
        .iter()
        .filter(|(name, version)| {
            npm_version(&paths.node_modules().join(name)).as_deref() != Some(*version)
        })
        .copied()
        .collect();
    if missing.is_empty() {
        let list: Vec<String> = packages.iter().map(|(n, v)| format!("{n} {v}")).collect();
        println!("    npm: {} already installed", list.join(", "));
        return Ok(());
    }
    if find_on_path("npm").is_none() || find_on_path("node").is_none() {
        ensure_apt(&[("nodejs", "node"), ("npm", "npm")])?;
    }
    std::fs::create_dir_all(&paths.node_dir)?;
    let mut npm = Command::new("npm");
    npm.arg("install")
        .arg("--prefix")
        .arg(&paths.node_dir)
        .args([
            "--no-audit",
            "--no-fund",
            "--save-exact",
            "--loglevel=error",
        ])
        .args(
            missing
                .iter()
                .map(|(name, version)| format!("{name}@{version}")),
        );
    run(&mut npm, INSTALL_TIMEOUT)?;
    for (name, version) in &missing {
        if npm_version(&paths.node_modules().join(name)).as_deref() != Some(*version) {
            bail!("npm install finished but {name}@{version} is not in node_modules");
        }
    }
    Ok(())
}

/// The version in an installed npm package's package.json.
fn npm_version(package_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(package_dir.join("package.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("version")?.as_str().map(str::to_owned)
}
