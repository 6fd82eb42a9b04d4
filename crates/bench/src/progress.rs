//! Progress of a timed run on stderr (indicatif), drawn only on a terminal
//! and never with `--json`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar over the duration of a run, showing operations done.
pub struct Progress {
    bar: Option<ProgressBar>,
    ticker: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Progress {
    /// Shown when `visible` and stderr is a terminal.
    pub fn new(visible: bool) -> Self {
        let bar = (visible && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{bar:30}] {elapsed}/{duration} {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar
        });
        Self {
            bar,
            ticker: std::sync::Mutex::new(None),
        }
    }

    /// Starts ticking for a run of `duration`, counting `done` operations.
    pub fn start(&self, duration: Duration, done: Arc<AtomicU64>) {
        let Some(bar) = self.bar.clone() else { return };
        bar.reset();
        bar.set_length(duration.as_millis() as u64);
        let started = std::time::Instant::now();
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let elapsed = started.elapsed();
                bar.set_position(elapsed.as_millis() as u64);
                let n = done.load(Ordering::Relaxed);
                let rate = n as f64 / elapsed.as_secs_f64().max(1e-3);
                bar.set_message(format!("{n} done, {rate:.0}/s"));
            }
        });
        if let Some(old) = self.ticker.lock().expect("not poisoned").replace(handle) {
            old.abort();
        }
    }

    /// Stops ticking and clears the bar.
    pub fn finish(&self) {
        if let Some(handle) = self.ticker.lock().expect("not poisoned").take() {
            handle.abort();
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
