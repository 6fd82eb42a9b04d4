//! One WebSocket conversation, the same for `connect` and `listen`: sends
//! the `--init` messages and then whatever the input provides, reports what
//! arrives, and closes when asked (`/close`, a command exiting), when the
//! input ends, once `--count` messages have arrived, after `--wait` of
//! quiet, or on Ctrl-C. Then it says how the conversation ended.
//!
//! The socket is split so that receiving never waits behind a send held
//! up by a slow peer: the reader and the writer run side by side.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use duplex::{CloseCode, CloseFrame, Error, Message, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::conversation::event::{Direction, Event, Side};
use crate::conversation::input::{Input, Outgoing};
use crate::conversation::output::Sink;
use crate::conversation::signal::Interrupt;
use crate::conversation::units::Wait;
use crate::exit::{self, Failure, Status};

/// When to stop, and what to send first.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Close after this many data messages have arrived (over all
    /// connections, with `--reconnect`).
    pub count: Option<u64>,
    /// Once the input has ended: close after this long without traffic.
    /// `None`: close as soon as it ends (unless `count` is still pending).
    pub wait: Option<Wait>,
    /// Sent first on every connection.
    pub init: Vec<Message>,
    /// The close frame sent on Ctrl-C.
    pub on_interrupt: CloseFrame,
}

/// Counters that outlive one connection.
#[derive(Debug, Default)]
pub struct Progress {
    /// Data messages received so far.
    pub received: u64,
    /// Whether the input has ended.
    pub input_ended: bool,
}

/// How a conversation ended.
#[derive(Debug)]
pub enum End {
    /// We started closing, with this frame.
    Local {
        /// What we sent.
        frame: CloseFrame,
        /// Because of Ctrl-C.
        interrupted: bool,
        /// Whether the peer answered with its close frame.
        clean: bool,
    },
    /// The peer started closing.
    Remote(Option<CloseFrame>),
    /// The connection failed.
    Failed(Error),
}

/// State the reader and writer share. They run on one task, so the locks
/// are never contended; they only make the conversation `Send`.
struct Shared {
    received: AtomicU64,
    last_activity: Mutex<Instant>,
    ping_sent: Mutex<Option<Instant>>,
    local_close: Mutex<Option<(CloseFrame, bool)>>,
    remote_close: Mutex<Option<Option<CloseFrame>>>,
    error: Mutex<Option<Error>>,
    count_reached: Notify,
    reader_done: Notify,
}

/// Locks a mutex that a panic cannot leave inconsistent.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs one conversation on an open socket until it is closed.
pub async fn run<S>(
    ws: WebSocket<S>,
    input: &mut Input,
    sink: &Sink,
    rules: &Rules,
    progress: &mut Progress,
    interrupt: &mut Interrupt,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rx, mut tx) = ws.split();
    let shared = Shared {
        received: AtomicU64::new(progress.received),
        last_activity: Mutex::new(Instant::now()),
        ping_sent: Mutex::new(None),
        local_close: Mutex::new(None),
        remote_close: Mutex::new(None),
        error: Mutex::new(None),
        count_reached: Notify::new(),
        reader_done: Notify::new(),
    };
    let typed = sink.console_ref().is_interactive();
    let count_pending = |received: u64| rules.count.is_some_and(|n| received < n);

    let reader = async {
        while let Some(item) = rx.recv().await {
            match item {
                Ok(Message::Close(frame)) => {
                    lock(&shared.remote_close).get_or_insert(frame);
                }
                Ok(msg) => {
                    if msg.is_data() {
                        // Only messages count as traffic for --wait, not
                        // keepalive pings and pongs.
                        *lock(&shared.last_activity) = Instant::now();
                        let n = shared.received.load(Ordering::Relaxed);
                        if rules.count.is_some() && !count_pending(n) {
                            continue; // past --count: not shown
                        }
                        shared.received.store(n + 1, Ordering::Relaxed);
                        emit(sink, Direction::In, &msg, false, None).await;
                        if rules.count == Some(n + 1) {
                            shared.count_reached.notify_one();
                        }
                    } else {
                        let rtt = match msg {
                            Message::Pong(_) => lock(&shared.ping_sent).take().map(|t| t.elapsed()),
                            _ => None,
                        };
                        emit(sink, Direction::In, &msg, false, rtt).await;
                    }
                }
                Err(e) => {
                    lock(&shared.error).get_or_insert(e);
                }
            }
        }
        shared.reader_done.notify_one();
    };

    let writer = async {
        let close = |frame: CloseFrame, interrupted: bool| {
            *lock(&shared.local_close) = Some((frame.clone(), interrupted));
            frame
        };
        for msg in &rules.init {
            emit(sink, Direction::Out, msg, false, None).await;
            if tx.send(msg.clone()).await.is_err() {
                return;
            }
        }
        if progress.input_ended
            && !count_pending(shared.received.load(Ordering::Relaxed))
            && rules.wait.is_none()
        {
            let f = close(normal(), false);
            let _ = tx.close(f.code, &f.reason).await;
            return;
        }
        loop {
            let ended = progress.input_ended;
            let last_activity = *lock(&shared.last_activity);
            let linger = async move {
                match (ended, rules.wait) {
                    (true, Some(Wait::For(quiet))) => {
                        tokio::time::sleep_until(last_activity + quiet).await;
                    }
                    _ => std::future::pending().await,
                }
            };
            let frame = tokio::select! {
                biased;
                () = shared.reader_done.notified() => return,
                () = shared.count_reached.notified() => close(normal(), false),
                () = interrupt.wait() => close(rules.on_interrupt.clone(), true),
                item = input.recv(), if !ended => match item {
                    Some(Outgoing::Message(msg)) => {
                        emit(sink, Direction::Out, &msg, typed, None).await;
                        if matches!(msg, Message::Ping(_)) {
                            *lock(&shared.ping_sent) = Some(Instant::now());
                        }
                        let data = msg.is_data();
                        if tx.send(msg).await.is_err() {
                            return;
                        }
                        if data {
                            *lock(&shared.last_activity) = Instant::now();
                        }
                        continue;
                    }
                    Some(Outgoing::Close(frame)) => {
                        close(frame.unwrap_or_else(normal), false)
                    }
                    None => {
                        progress.input_ended = true;
                        if rules.wait.is_some() || count_pending(shared.received.load(Ordering::Relaxed)) {
                            continue;
                        }
                        close(normal(), false)
                    }
                },
                () = linger => {
                    let quiet = Instant::now() - *lock(&shared.last_activity);
                    match rules.wait {
                        Some(Wait::For(d)) if quiet >= d => close(normal(), false),
                        _ => continue,
                    }
                }
            };
            let _ = tx.close(frame.code, &frame.reason).await;
            return;
        }
    };

    tokio::join!(reader, writer);
    progress.received = shared.received.load(Ordering::Relaxed);
    let remote = shared
        .remote_close
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    if let Some((frame, interrupted)) = shared
        .local_close
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
    {
        return End::Local {
            frame,
            interrupted,
            clean: remote.is_some(),
        };
    }
    match (
        remote,
        shared.error.into_inner().unwrap_or_else(|e| e.into_inner()),
    ) {
        (Some(frame), _) => End::Remote(frame),
        (None, Some(e)) => End::Failed(e),
        (None, None) => End::Failed(Error::AbnormalClosure),
    }
}

fn normal() -> CloseFrame {
    CloseFrame::new(CloseCode::NORMAL, "")
}

async fn emit(sink: &Sink, dir: Direction, msg: &Message, typed: bool, rtt: Option<Duration>) {
    sink.emit(&Event::Message {
        dir,
        msg,
        typed,
        rtt,
    })
    .await;
}

/// Reports how a conversation ended (close event, and the error if it
/// failed) and returns the exit status it stands for, with whether a
/// reconnect may help.
pub async fn report(end: &End, sink: &Sink) -> Failure {
    let peer = sink.remote_name();
    match end {
        End::Local {
            frame,
            interrupted,
            clean,
        } => {
            sink.emit(&Event::Close {
                code: frame.code.0,
                reason: &frame.reason,
                initiator: Side::Local,
                clean: *clean,
            })
            .await;
            let status = if *interrupted {
                Status::Interrupted
            } else {
                Status::Ok
            };
            Failure {
                transient: false,
                ..Failure::new(status, "closed")
            }
        }
        End::Remote(frame) => {
            let (code, reason) = frame
                .as_ref()
                .map(|f| (f.code, f.reason.as_str()))
                .unwrap_or((CloseCode::NO_STATUS, ""));
            sink.emit(&Event::Close {
                code: code.0,
                reason,
                initiator: Side::Remote,
                clean: true,
            })
            .await;
            let status = exit::closed_by_peer(frame.as_ref().map(|f| f.code));
            let reason = if reason.is_empty() {
                String::new()
            } else {
                format!(": {reason}")
            };
            let failure = Failure {
                transient: true,
                ..Failure::new(
                    status,
                    format!(
                        "the {peer} closed the connection with {code} ({}){reason}",
                        describe(code)
                    ),
                )
            };
            if status != Status::Ok && !sink.console_ref().is_interactive() {
                sink.console_ref()
                    .error(&format!("{}{}", sink.who(), failure.message));
            }
            failure
        }
        End::Failed(e) => {
            let failure = exit::open(e, peer);
            sink.fail(&failure).await;
            let (code, initiator) = match e {
                Error::Protocol(p) => (p.close_code().0, Side::Local),
                Error::KeepaliveTimeout(_) => (CloseCode::INTERNAL_ERROR.0, Side::Local),
                Error::IdleTimeout(_) => (CloseCode::GOING_AWAY.0, Side::Local),
                _ => (CloseCode::ABNORMAL.0, Side::Remote),
            };
            sink.emit(&Event::Close {
                code,
                reason: "",
                initiator,
                clean: false,
            })
            .await;
            failure
        }
    }
}

/// The usual meaning of a close code.
pub fn describe(code: CloseCode) -> &'static str {
    match code.0 {
        1000 => "normal closure",
        1001 => "going away",
        1002 => "protocol error",
        1003 => "unsupported data",
        1005 => "no status code",
        1006 => "abnormal closure",
        1007 => "invalid payload data",
        1008 => "policy violation",
        1009 => "message too big",
        1010 => "mandatory extension",
        1011 => "internal error",
        1012 => "service restart",
        1013 => "try again later",
        1014 => "bad gateway",
        3000..=3999 => "registered application code",
        4000..=4999 => "application code",
        _ => "unknown code",
    }
}
