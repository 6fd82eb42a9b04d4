//! What `duplex send` and `duplex receive` show: for people, indicatif
//! bars and notices on stderr (the code alone on stdout); for programs
//! (`--json`), each event's JSON line on stdout, progress at most every
//! 200 ms per bar and at its end.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use duplex_transfer_client::{ReceiveEvent, SendEvent};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;

/// How often a bar's progress is printed as a JSON line.
const JSON_PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// The view of a `duplex send`: a bar per receiver.
pub struct SendView {
    out: Output,
    bars: Mutex<HashMap<u32, ProgressBar>>,
}

impl SendView {
    pub fn new(json: bool) -> Self {
        Self {
            out: Output::new(json),
            bars: Mutex::default(),
        }
    }

    pub fn show(&self, event: SendEvent) {
        if self.out.json {
            match &event {
                SendEvent::Sending { .. } | SendEvent::Sent { .. } => {}
                SendEvent::Progress { peer, bytes, total } => {
                    self.out
                        .progress_line(Some(*peer), *bytes == *total, &event)
                }
                _ => self.out.line(&event),
            }
            return;
        }
        let mut bars = self.bars.lock().expect("not poisoned");
        match &event {
            SendEvent::Code { code, .. } => {
                println!("{code}");
                self.out.notice(event.notice());
            }
            &SendEvent::Progress { peer, bytes, total } => {
                let bar = bars
                    .entry(peer)
                    .or_insert_with(|| self.out.bar(total, &format!("receiver {peer}")));
                bar.set_position(bytes);
            }
            SendEvent::Sending { peer, path } => {
                if let Some(bar) = bars.get(peer) {
                    bar.set_message(path.clone());
                }
            }
            SendEvent::Sent { peer } => {
                if let Some(bar) = bars.get(peer) {
                    bar.finish();
                }
            }
            _ => self.out.notice(event.notice()),
        }
    }
}

/// The view of a `duplex receive`: a bar for the total and one for the
/// file being written.
pub struct ReceiveView {
    out: Output,
    bars: Mutex<ReceiveBars>,
}

#[derive(Default)]
struct ReceiveBars {
    total: Option<ProgressBar>,
    /// The file being written, and its bar.
    file: Option<(String, ProgressBar)>,
}

impl ReceiveView {
    pub fn new(json: bool) -> Self {
        Self {
            out: Output::new(json),
            bars: Mutex::default(),
        }
    }

    pub fn show(&self, event: ReceiveEvent) {
        if self.out.json {
            match &event {
                ReceiveEvent::Writing { .. } => {}
                ReceiveEvent::Progress { bytes, total } => {
                    self.out.progress_line(None, *bytes == *total, &event)
                }
                _ => self.out.line(&event),
            }
            return;
        }
        let mut bars = self.bars.lock().expect("not poisoned");
        match &event {
            &ReceiveEvent::Progress { bytes, total } => {
                let bar = bars
                    .total
                    .get_or_insert_with(|| self.out.bar(total, "total"));
                bar.set_position(bytes);
            }
            ReceiveEvent::Writing { path, bytes, size } => {
                if bars.file.as_ref().is_none_or(|(p, _)| p != path) {
                    if let Some((_, old)) = bars.file.take() {
                        old.finish_and_clear();
                    }
                    if let Some(total) = &bars.total {
                        total.set_message(path.clone());
                    }
                    let name = path.rsplit('/').next().unwrap_or(path);
                    bars.file = Some((path.clone(), self.out.bar(*size, name)));
                }
                if let Some((_, bar)) = &bars.file {
                    bar.set_position(*bytes);
                }
            }
            ReceiveEvent::File { .. } => {
                if let Some((_, bar)) = bars.file.take() {
                    bar.finish_and_clear();
                }
            }
            ReceiveEvent::Done { .. } => {
                if let Some(bar) = &bars.total {
                    bar.finish();
                }
                self.out.notice(event.notice());
            }
            _ => self.out.notice(event.notice()),
        }
    }
}

/// Where lines go.
struct Output {
    json: bool,
    multi: MultiProgress,
    /// When each bar's progress was last printed as JSON.
    last: Mutex<HashMap<Option<u32>, Instant>>,
}

impl Output {
    fn new(json: bool) -> Self {
        Self {
            json,
            multi: MultiProgress::new(),
            last: Mutex::default(),
        }
    }

    fn line(&self, event: &impl Serialize) {
        println!(
            "{}",
            serde_json::to_string(event).expect("events serialize")
        );
    }

    /// A progress line, unless one for the same bar went out less than
    /// [`JSON_PROGRESS_EVERY`] ago (the last one always goes out).
    fn progress_line(&self, bar: Option<u32>, last: bool, event: &impl Serialize) {
        let mut times = self.last.lock().expect("not poisoned");
        let due = times
            .get(&bar)
            .is_none_or(|t| t.elapsed() >= JSON_PROGRESS_EVERY);
        if due || last {
            times.insert(bar, Instant::now());
            self.line(event);
        }
    }

    /// A notice on stderr, above the bars.
    fn notice(&self, text: Option<String>) {
        let Some(text) = text else { return };
        if self.multi.is_hidden() {
            eprintln!("duplex: {text}");
        } else {
            let _ = self.multi.println(format!("duplex: {text}"));
        }
    }

    fn bar(&self, total: u64, label: &str) -> ProgressBar {
        let style = ProgressStyle::with_template(
            "{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> ");
        let bar = self.multi.add(ProgressBar::new(total).with_style(style));
        bar.set_prefix(label.to_owned());
        bar
    }
}
