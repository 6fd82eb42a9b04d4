//! Runs the stages of an xtask command in order: prints a header before each,
//! its outcome after it, stops after a failure (unless told to keep going),
//! and ends with a summary and the line `xtask: N passed, M failed`.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;

enum Outcome {
    Passed,
    Failed(String),
    Skipped,
}

/// The stages run so far and whether the next ones should run.
pub struct Pipeline {
    keep_going: bool,
    stopped: bool,
    results: Vec<(String, Outcome, Duration)>,
}

impl Pipeline {
    /// A pipeline that stops at the first failure unless `keep_going`.
    pub fn new(keep_going: bool) -> Self {
        Self {
            keep_going,
            stopped: false,
            results: Vec::new(),
        }
    }

    /// Runs a stage that later stages cannot do without: its failure stops
    /// the run even with `--keep-going`.
    pub fn required(&mut self, name: &str, body: impl FnOnce() -> Result<()>) {
        if !self.run(name, body) {
            self.stopped = true;
        }
    }

    /// Runs a stage; its failure stops the run unless `--keep-going`.
    pub fn stage(&mut self, name: &str, body: impl FnOnce() -> Result<()>) {
        if !self.run(name, body) && !self.keep_going {
            self.stopped = true;
        }
    }

    /// Whether every stage so far passed.
    pub fn all_passed(&self) -> bool {
        self.results
            .iter()
            .all(|(_, outcome, _)| matches!(outcome, Outcome::Passed))
    }

    /// Runs `body` as stage `name` unless the run has stopped; returns whether
    /// it passed (a skipped stage counts as passed here).
    fn run(&mut self, name: &str, body: impl FnOnce() -> Result<()>) -> bool {
        if self.stopped {
            self.results
                .push((name.to_owned(), Outcome::Skipped, Duration::ZERO));
            return true;
        }
        let number = self.results.len() + 1;
        println!();
        println!("==> [{number}] {name}");
        flush();
        let start = Instant::now();
        let result = body();
        let elapsed = start.elapsed();
        flush();
        let passed = result.is_ok();
        let outcome = match result {
            Ok(()) => {
                println!("<== {name}: passed ({})", secs(elapsed));
                Outcome::Passed
            }
            Err(err) => {
                let message = format!("{err:#}");
                println!("<== {name}: FAILED ({})", secs(elapsed));
                println!("    {}", message.replace('\n', "\n    "));
                Outcome::Failed(message)
            }
        };
        flush();
        self.results.push((name.to_owned(), outcome, elapsed));
        passed
    }

    /// Prints the summary and the closing count line; the exit code is
    /// non-zero if any stage failed.
    pub fn finish(self) -> ExitCode {
        let width = self
            .results
            .iter()
            .map(|(n, ..)| n.len())
            .max()
            .unwrap_or(0);
        let (mut passed, mut failed) = (0, 0);
        println!();
        println!("==> summary");
        for (name, outcome, elapsed) in &self.results {
            match outcome {
                Outcome::Passed => {
                    passed += 1;
                    println!("    passed   {name:width$}  {}", secs(*elapsed));
                }
                Outcome::Failed(message) => {
                    failed += 1;
                    let first = message.lines().next().unwrap_or_default();
                    let first = if first.chars().count() > 100 {
                        first.chars().take(97).collect::<String>() + "..."
                    } else {
                        first.to_owned()
                    };
                    println!("    FAILED   {name:width$}  {}  {first}", secs(*elapsed));
                }
                Outcome::Skipped => {
                    println!("    skipped  {name:width$}  (an earlier stage failed)")
                }
            }
        }
        println!("xtask: {passed} passed, {failed} failed");
        flush();
        if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn flush() {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}
