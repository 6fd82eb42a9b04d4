//! The interactive prompt of `duplex connect` on a terminal: a line editor
//! (editing, history kept across sessions) on a thread of its own. Typed
//! lines become messages or commands (see `command.rs`); what arrives is
//! printed above the line being edited.
//!
//! The history lives in `$DUPLEX_HISTORY`, else
//! `$XDG_STATE_HOME/duplex/history`, else `~/.local/state/duplex/history`
//! (`DUPLEX_HISTORY=` with an empty value keeps none).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustyline::error::ReadlineError;
use rustyline::{DefaultEditor, ExternalPrinter};

use super::command::{self, Command};
use crate::conversation::input::{self, Input};
use crate::conversation::output::Console;
use crate::exit::Failure;

/// The prompt shown while editing.
const PROMPT: &str = "> ";

/// A running prompt: the console that prints above it, and the terminal
/// mode to restore.
pub struct Prompt {
    /// Where everything is printed.
    pub console: Arc<Console>,
    saved: Option<rustix::termios::Termios>,
}

/// Starts the line editor; the lines typed arrive on the returned input.
pub fn start(quiet: bool) -> Result<(Input, Prompt), Failure> {
    // Saved to restore the terminal if we exit while the editor has it in
    // raw mode (the server closed while the user was typing).
    let saved = rustix::termios::tcgetattr(rustix::stdio::stdin()).ok();
    let (tx, rx) = input::channel();
    let (printer_tx, printer_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("prompt".into())
        .spawn(move || {
            let config = rustyline::Config::builder()
                .auto_add_history(true)
                .max_history_size(1000)
                .and_then(|c| c.history_ignore_dups(true))
                .map(|c| c.build())
                .unwrap_or_default();
            let mut editor = match DefaultEditor::with_config(config) {
                Ok(e) => e,
                Err(e) => {
                    let _ = printer_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let history = history_path();
            if let Some(path) = &history {
                let _ = editor.load_history(path);
            }
            match editor.create_external_printer() {
                Ok(mut p) => {
                    let print: crate::conversation::output::TerminalPrinter =
                        Box::new(move |line| {
                            let _ = p.print(line);
                        });
                    let _ = printer_tx.send(Ok(print));
                }
                Err(e) => {
                    let _ = printer_tx.send(Err(e.to_string()));
                    return;
                }
            }
            loop {
                match editor.readline(PROMPT) {
                    Ok(line) => {
                        if let Some(path) = &history {
                            save_history(&mut editor, path);
                        }
                        match command::parse(&line) {
                            Command::Send(item) => {
                                if tx.blocking_send(item).is_err() {
                                    break;
                                }
                            }
                            Command::Help => println!("{}", command::HELP),
                            Command::Invalid(why) => eprintln!("duplex: {why}"),
                            Command::Nothing => {}
                        }
                    }
                    Err(ReadlineError::Interrupted | ReadlineError::Eof) => break,
                    Err(e) => {
                        eprintln!("duplex: cannot read the terminal: {e}");
                        break;
                    }
                }
            }
        })
        .map_err(|e| Failure::usage(format!("cannot start the prompt: {e}")))?;
    let printer = printer_rx
        .recv()
        .map_err(|_| Failure::usage("the line editor did not start"))?
        .map_err(|e| Failure::usage(format!("cannot use the terminal: {e}")))?;
    let prompt = Prompt {
        console: Arc::new(Console::with_editor(printer, quiet)),
        saved,
    };
    Ok((rx, prompt))
}

impl Prompt {
    /// Gives the terminal back before exiting: lets the editor draw what
    /// it was handed last, restores the terminal mode it may have changed,
    /// and clears the prompt line.
    pub fn finish(self) -> Arc<Console> {
        // The editor prints asynchronously (a pipe wakes its thread) and
        // has no way to wait for that; a moment is plenty.
        std::thread::sleep(Duration::from_millis(50));
        if let Some(saved) = &self.saved {
            let _ = rustix::termios::tcsetattr(
                rustix::stdio::stdin(),
                rustix::termios::OptionalActions::Now,
                saved,
            );
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(b"\r\x1b[2K");
        let _ = out.flush();
        self.console
    }
}

fn history_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DUPLEX_HISTORY") {
        return (!p.is_empty()).then(|| PathBuf::from(p));
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(state.join("duplex").join("history"))
}

fn save_history(editor: &mut DefaultEditor, path: &std::path::Path) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = editor.append_history(path);
}
