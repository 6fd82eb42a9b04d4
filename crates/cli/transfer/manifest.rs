//! The manifest a sender announces: every file and folder with its
//! relative path (always `/`-separated), size, mode and BLAKE3 hash; and
//! the checks a receiver applies before trusting a path from it.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// One file or folder of a transfer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// Relative path, `/`-separated, e.g. `photos/2024/a.jpg`.
    pub path: String,
    /// Whether this is a folder (kept even when empty).
    #[serde(default)]
    pub dir: bool,
    /// Size in bytes.
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
    /// BLAKE3 of the whole file, hex.
    #[serde(default)]
    pub hash: String,
}

/// A file to send: where it is here, and its entry.
#[derive(Debug, Clone)]
pub struct Source {
    /// The file on this machine (`None` for folders).
    pub local: Option<PathBuf>,
    /// What the receivers are told.
    pub entry: Entry,
}

/// Walks `paths` (files or folders; a folder keeps its name and tree) and
/// hashes every file. Symbolic links are skipped with a warning.
pub fn collect(paths: &[PathBuf]) -> anyhow::Result<Vec<Source>> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::symlink_metadata(path)
            .with_context(|| format!("cannot read {}: check the path", path.display()))?;
        let name = path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_owned()))
            .with_context(|| format!("{} has no file name to send it under", path.display()))?;
        let name = name
            .to_str()
            .with_context(|| format!("{} is not valid UTF-8; rename it", path.display()))?
            .to_owned();
        walk(path, &meta, name, &mut out)?;
    }
    let mut seen = std::collections::HashSet::new();
    for s in &out {
        if !seen.insert(s.entry.path.clone()) {
            bail!(
                "two paths would both arrive as {:?}; send them separately",
                s.entry.path
            );
        }
    }
    Ok(out)
}

fn walk(
    path: &Path,
    meta: &std::fs::Metadata,
    rel: String,
    out: &mut Vec<Source>,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if meta.is_symlink() {
        eprintln!("duplex: skipping symbolic link {}", path.display());
    } else if meta.is_dir() {
        out.push(Source {
            local: None,
            entry: Entry {
                path: rel.clone(),
                dir: true,
                size: 0,
                mode,
                hash: String::new(),
            },
        });
        let mut children: Vec<_> = std::fs::read_dir(path)
            .with_context(|| format!("cannot list {}", path.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot list {}", path.display()))?;
        children.sort_by_key(|c| c.file_name());
        for child in children {
            let name = child.file_name();
            let Some(name) = name.to_str() else {
                eprintln!(
                    "duplex: skipping {} (its name is not UTF-8)",
                    child.path().display()
                );
                continue;
            };
            let meta = std::fs::symlink_metadata(child.path())
                .with_context(|| format!("cannot read {}", child.path().display()))?;
            walk(&child.path(), &meta, format!("{rel}/{name}"), out)?;
        }
    } else if meta.is_file() {
        let hash = hash_file(path)?;
        out.push(Source {
            local: Some(path.to_owned()),
            entry: Entry {
                path: rel,
                dir: false,
                size: meta.len(),
                mode,
                hash,
            },
        });
    } else {
        eprintln!("duplex: skipping {} (not a regular file)", path.display());
    }
    Ok(())
}

/// BLAKE3 of a whole file, hex.
pub fn hash_file(path: &Path) -> anyhow::Result<String> {
    let mut hasher = blake3::Hasher::new();
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    hasher
        .update_reader(file)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// Where a manifest path lands under `out`, or an error if the path could
/// escape it (absolute, `..`, empty or odd components).
pub fn safe_join(out: &Path, rel: &str) -> anyhow::Result<PathBuf> {
    let refuse = || {
        anyhow::anyhow!("the sender's manifest has an unsafe path {rel:?}; refusing the transfer")
    };
    if rel.is_empty() || rel.contains('\0') || rel.contains('\\') || rel.starts_with('/') {
        return Err(refuse());
    }
    let mut path = out.to_owned();
    for part in rel.split('/') {
        let mut comps = Path::new(part).components();
        match (comps.next(), comps.next()) {
            (Some(Component::Normal(c)), None) if c == part => path.push(c),
            _ => return Err(refuse()),
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_is_refused() {
        let out = Path::new("/tmp/out");
        assert_eq!(
            safe_join(out, "a/b.txt").unwrap(),
            Path::new("/tmp/out/a/b.txt")
        );
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "./a",
            "a/.",
            "",
            "a\\..\\b",
            "a/..",
            "..",
        ] {
            assert!(safe_join(out, bad).is_err(), "{bad}");
        }
    }
}
