//! `listen --exec CMD`: a command whose stdin and stdout are the
//! WebSocket (the websocketd habit). Received messages are written to its
//! stdin (a line per text message, raw bytes with `--binary`); each line
//! it prints (each chunk with `--binary`) is sent. When it exits, the
//! connection is closed: 1000 if it succeeded, 1011 with its status if not.
//!
//! The command runs with `sh -c`, its stderr is ours, and it learns about
//! its client from CGI-style variables: `REMOTE_ADDR`, `REMOTE_PORT`,
//! `SERVER_PORT`, `REQUEST_URI`, `PATH_INFO`, `QUERY_STRING`,
//! `DUPLEX_CLIENT_ID` and `HTTP_*` for each request header.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use bytes::Bytes;
use duplex::{CloseCode, CloseFrame};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::conversation::input::{self, Input, Outgoing};

/// How long a command may take to exit once its input has ended.
const GRACE: Duration = Duration::from_secs(2);

/// A running command.
pub struct Running {
    /// What it prints, as messages; ends with a close when it exits.
    pub output: Input,
    /// Bytes for its stdin; dropping this closes its stdin.
    pub stdin: mpsc::Sender<Bytes>,
    /// Resolves with its exit status once it has exited.
    pub exited: JoinHandle<Option<ExitStatus>>,
}

/// Starts `command` (with `sh -c`) with `env` added to its environment.
pub fn spawn(command: &str, env: &[(String, String)], binary: bool) -> std::io::Result<Running> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let (stdin_tx, mut stdin_rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        while let Some(bytes) = stdin_rx.recv().await {
            if stdin.write_all(&bytes).await.is_err() || stdin.flush().await.is_err() {
                break;
            }
        }
    });
    let (tx, output) = input::channel();
    let name = format!("`{command}`");
    let exited = tokio::spawn(async move {
        input::pump(stdout, binary, tx.clone(), &name).await;
        // Its stdout is closed: it exited (or is about to).
        let status = tokio::time::timeout(GRACE, child.wait())
            .await
            .ok()
            .and_then(Result::ok);
        let frame = match status {
            Some(s) if s.success() => CloseFrame::new(CloseCode::NORMAL, ""),
            Some(s) => CloseFrame::new(
                CloseCode::INTERNAL_ERROR,
                format!("the command {}", describe(s)),
            ),
            None => CloseFrame::new(CloseCode::INTERNAL_ERROR, "the command closed its output"),
        };
        let _ = tx.send(Outgoing::Close(Some(frame))).await;
        status
    });
    Ok(Running {
        output,
        stdin: stdin_tx,
        exited,
    })
}

impl Running {
    /// After the connection ended: closes the command's stdin, gives it a
    /// moment to exit, then kills it.
    pub async fn finish(self) {
        let Self {
            output,
            stdin,
            mut exited,
        } = self;
        drop(stdin);
        drop(output);
        if tokio::time::timeout(GRACE, &mut exited).await.is_err() {
            exited.abort(); // drops the child, which kills it
        }
    }
}

/// "exited with status 3" / "was killed by signal 9".
pub fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("was killed by signal {sig}");
        }
    }
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "ended".to_owned(),
    }
}
