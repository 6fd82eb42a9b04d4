//! The manifest a sender announces: every file and folder with its
//! relative path (always `/`-separated), size and mode; the checks a
//! receiver applies before trusting a path from it; and the chunk digests
//! both sides take of what is already on disk (a resumed `.part`, a file
//! already in place). A file's digest is not in the manifest: the sender
//! takes it while sending, so nothing reads a file twice.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use duplex_transfer::control::Entry;
use duplex_transfer::digest::{DIGEST, chunk_digest};

/// A file to send: where it is here, and its entry.
#[derive(Debug, Clone)]
pub struct Source {
    /// The file on this machine (`None` for folders).
    pub local: Option<PathBuf>,
    /// What the receivers are told.
    pub entry: Entry,
    /// When the file was last changed, as it was announced: a file that
    /// changes while being sent is refused, not sent half old, half new.
    pub modified: Option<std::time::SystemTime>,
}

/// Walks `paths` (files or folders; a folder keeps its name and tree).
/// Symbolic links, names that are not UTF-8 and what is neither a file
/// nor a folder are skipped, each told to `skip` with why.
pub fn collect(
    paths: &[PathBuf],
    skip: &mut dyn FnMut(&Path, &str),
) -> anyhow::Result<Vec<Source>> {
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
        walk(path, &meta, name, &mut out, skip)?;
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
    skip: &mut dyn FnMut(&Path, &str),
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if meta.is_symlink() {
        skip(path, "a symbolic link");
    } else if meta.is_dir() {
        out.push(Source {
            local: None,
            entry: Entry {
                path: rel.clone(),
                dir: true,
                size: 0,
                mode,
            },
            modified: None,
        });
        let mut children: Vec<_> = std::fs::read_dir(path)
            .with_context(|| format!("cannot list {}", path.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot list {}", path.display()))?;
        children.sort_by_key(|c| c.file_name());
        for child in children {
            let name = child.file_name();
            let Some(name) = name.to_str() else {
                skip(&child.path(), "its name is not UTF-8");
                continue;
            };
            let meta = std::fs::symlink_metadata(child.path())
                .with_context(|| format!("cannot read {}", child.path().display()))?;
            walk(&child.path(), &meta, format!("{rel}/{name}"), out, skip)?;
        }
    } else if meta.is_file() {
        out.push(Source {
            local: Some(path.to_owned()),
            entry: Entry {
                path: rel,
                dir: false,
                size: meta.len(),
                mode,
            },
            modified: meta.modified().ok(),
        });
    } else {
        skip(path, "not a regular file");
    }
    Ok(())
}

/// The SHA-256 of chunks `from..to` of the file at `path`, read in order
/// with one buffer (the last chunk may be short).
pub fn chunk_digests(
    path: &Path,
    chunk_size: u64,
    from: u64,
    to: u64,
) -> anyhow::Result<Vec<[u8; DIGEST]>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    file.seek(SeekFrom::Start(from * chunk_size))?;
    let mut buf = vec![0u8; chunk_size as usize];
    let mut out = Vec::with_capacity(to.saturating_sub(from) as usize);
    for _ in from..to {
        let mut len = 0;
        while len < buf.len() {
            match file.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            }
        }
        if len == 0 {
            bail!("{} is shorter than expected", path.display());
        }
        out.push(chunk_digest(&buf[..len]));
    }
    Ok(out)
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
