//! Progress for people (indicatif bars on stderr: bytes, rate, ETA) or for
//! programs (`--json`: one JSON object per line on stdout).

use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;

/// Where progress goes.
#[derive(Clone)]
pub struct Reporter {
    json: bool,
    multi: MultiProgress,
}

impl Reporter {
    /// Bars, or JSON lines with `json`.
    pub fn new(json: bool) -> Self {
        Self {
            json,
            multi: MultiProgress::new(),
        }
    }

    /// Prints a JSON event (with `--json`), or a notice on stderr.
    pub fn event(&self, value: Value, notice: impl FnOnce() -> Option<String>) {
        if self.json {
            println!("{value}");
        } else if let Some(text) = notice() {
            if self.multi.is_hidden() {
                eprintln!("duplex: {text}");
            } else {
                let _ = self.multi.println(format!("duplex: {text}"));
            }
        }
    }

    /// A bar of `total` bytes; `fields` are added to its JSON lines.
    pub fn bar(&self, total: u64, label: &str, fields: Value) -> Bar {
        let bar = (!self.json).then(|| {
            let style = ProgressStyle::with_template(
                "{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> ");
            let pb = self.multi.add(ProgressBar::new(total).with_style(style));
            pb.set_prefix(label.to_owned());
            pb
        });
        Bar {
            json: self.json,
            bar,
            total,
            fields,
            last: None,
            bytes: 0,
        }
    }
}

impl Reporter {
    /// A bar for one file, shown under the total (none with `--json`,
    /// where the total's lines and `file` events say enough).
    pub fn file_bar(&self, total: u64, path: &str) -> Option<Bar> {
        (!self.json).then(|| {
            let name = path.rsplit('/').next().unwrap_or(path);
            self.bar(total, name, Value::Null)
        })
    }
}

/// One progress bar.
pub struct Bar {
    json: bool,
    bar: Option<ProgressBar>,
    total: u64,
    fields: Value,
    last: Option<Instant>,
    bytes: u64,
}

impl Bar {
    /// Sets the bytes done; JSON lines at most every 200 ms, and at the end.
    pub fn set(&mut self, bytes: u64) {
        self.bytes = bytes;
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
        }
        if self.json {
            let due = self
                .last
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(200));
            if due || bytes == self.total {
                self.last = Some(Instant::now());
                let mut line = self.fields.clone();
                line["event"] = "progress".into();
                line["bytes"] = bytes.into();
                line["total"] = self.total.into();
                println!("{line}");
            }
        }
    }

    /// Adds to the bytes done.
    pub fn add(&mut self, bytes: u64) {
        self.set(self.bytes + bytes);
    }

    /// Shows which file is moving.
    pub fn message(&self, text: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(text.to_owned());
        }
    }

    /// Removes the bar from the screen.
    pub fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Leaves the bar in place, finished.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
