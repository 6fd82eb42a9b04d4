//! Small real filesystems for storage-fault tests: a size-limited tmpfs
//! (a disk that fills up) and an ext4 image on a loop device (a disk the
//! kernel turns read-only after an error, as `errors=remount-ro` does).
//! Both need root, as `cargo xtask test` has on CI.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed (these tests need root, to mount small filesystems): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// A mounted filesystem, lazily unmounted when dropped.
pub struct Mounted {
    /// Holds the mount point and, for an image, the image file.
    parent: tempfile::TempDir,
    /// The loop devices attached so far (an image only).
    loops: Vec<String>,
}

impl Mounted {
    /// A tmpfs of `bytes` bytes.
    pub fn tmpfs(bytes: usize) -> Self {
        let parent = tempfile::tempdir().unwrap();
        let this = Self {
            parent,
            loops: Vec::new(),
        };
        std::fs::create_dir(this.point()).unwrap();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes}"),
                "tmpfs",
                path_str(&this.point()),
            ],
        );
        this
    }

    /// A fresh ext4 filesystem of `bytes` bytes in an image file, mounted
    /// with `errors=remount-ro`.
    pub fn ext4(bytes: u64) -> Self {
        let parent = tempfile::tempdir().unwrap();
        let image = parent.path().join("disk.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(bytes)
            .unwrap();
        run("mkfs.ext4", &["-q", path_str(&image)]);
        let mut this = Self {
            parent,
            loops: Vec::new(),
        };
        std::fs::create_dir(this.point()).unwrap();
        this.attach_and_mount();
        this
    }

    /// Where it is mounted.
    pub fn point(&self) -> PathBuf {
        self.parent.path().join("mnt")
    }

    fn image(&self) -> PathBuf {
        self.parent.path().join("disk.img")
    }

    /// A new loop device for the image, mounted: a new device, not the old
    /// one, since the kernel keeps a failed filesystem read-only for as
    /// long as anything holds it.
    fn attach_and_mount(&mut self) {
        let device = run("losetup", &["--find", "--show", path_str(&self.image())]);
        run(
            "mount",
            &["-o", "errors=remount-ro", &device, path_str(&self.point())],
        );
        self.loops.push(device);
    }

    /// Makes ext4 report an error, which remounts it read-only at once.
    pub fn fail(&self) {
        let device = self.loops.last().expect("an ext4 image");
        // Flush what is written, as a disk would have long before it fails.
        run("sync", &["--file-system", path_str(&self.point())]);
        let name = Path::new(device).file_name().unwrap().to_str().unwrap();
        std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "test\n").unwrap();
    }

    /// What an operator does for a failed disk: unmount, check and repair,
    /// mount again at the same place.
    pub fn repair(&mut self) {
        run("umount", &["--lazy", path_str(&self.point())]);
        let status = Command::new("e2fsck")
            .args(["-f", "-y", path_str(&self.image())])
            .output()
            .expect("e2fsck")
            .status;
        // 0: clean, 1: errors corrected.
        assert!(matches!(status.code(), Some(0 | 1)), "e2fsck: {status}");
        self.attach_and_mount();
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .args(["--lazy", path_str(&self.point())])
            .status();
        for device in &self.loops {
            // Detached once its last user lets go.
            let _ = Command::new("losetup").args(["-d", device]).status();
        }
    }
}
