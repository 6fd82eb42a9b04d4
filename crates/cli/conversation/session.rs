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

use duplex::{CloseCode, CloseFrame, Error, Message, WebSocket, WebSocketReader, WebSocketWriter};
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

impl Shared {
    fn new(received: u64) -> Self {
        Shared {
            received: AtomicU64::new(received),
            last_activity: Mutex::new(Instant::now()),
            ping_sent: Mutex::new(None),
            local_close: Mutex::new(None),
            remote_close: Mutex::new(None),
            error: Mutex::new(None),
            count_reached: Notify::new(),
            reader_done: Notify::new(),
        }
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Records that we close with `frame`, and returns it.
    fn close(&self, frame: CloseFrame, interrupted: bool) -> CloseFrame {
        *lock(&self.local_close) = Some((frame.clone(), interrupted));
        frame
    }

    /// How the conversation ended, once both sides are done.
    fn end(self) -> End {
        let remote = self
            .remote_close
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        let local = self
            .local_close
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((frame, interrupted)) = local {
            return End::Local {
                frame,
                interrupted,
                clean: remote.is_some(),
            };
        }
        match (
            remote,
            self.error.into_inner().unwrap_or_else(|e| e.into_inner()),
        ) {
            (Some(frame), _) => End::Remote(frame),
            (None, Some(e)) => End::Failed(e),
            (None, None) => End::Failed(Error::AbnormalClosure),
        }
    }
}

impl Rules {
    /// Whether `--count` still waits for messages, `received` so far.
    fn count_pending(&self, received: u64) -> bool {
        self.count.is_some_and(|n| received < n)
    }
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
    let (rx, tx) = ws.split();
    let shared = Shared::new(progress.received);
    let writer = Writer {
        tx,
        shared: &shared,
        sink,
        rules,
        typed: sink.console_ref().is_interactive(),
    };
    tokio::join!(
        read(rx, &shared, sink, rules),
        writer.run(input, progress, interrupt)
    );
    progress.received = shared.received();
    shared.end()
}

/// The receiving side: shows what arrives and counts it.
async fn read<S>(mut rx: WebSocketReader<S>, shared: &Shared, sink: &Sink, rules: &Rules)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(item) = rx.recv().await {
        match item {
            Ok(Message::Close(frame)) => {
                lock(&shared.remote_close).get_or_insert(frame);
            }
            Ok(msg) if msg.is_data() => {
                // Only messages count as traffic for --wait, not keepalive
                // pings and pongs.
                *lock(&shared.last_activity) = Instant::now();
                let n = shared.received();
                if rules.count.is_some() && !rules.count_pending(n) {
                    continue; // past --count: not shown
                }
                shared.received.store(n + 1, Ordering::Relaxed);
                emit(sink, Direction::In, &msg, false, None).await;
                if rules.count == Some(n + 1) {
                    shared.count_reached.notify_one();
                }
            }
            Ok(msg) => {
                let rtt = match msg {
                    Message::Pong(_) => lock(&shared.ping_sent).take().map(|t| t.elapsed()),
                    _ => None,
                };
                emit(sink, Direction::In, &msg, false, rtt).await;
            }
            Err(e) => {
                lock(&shared.error).get_or_insert(e);
            }
        }
    }
    shared.reader_done.notify_one();
}

/// The sending side: `--init`, then the input, then the close.
struct Writer<'a, S> {
    tx: WebSocketWriter<S>,
    shared: &'a Shared,
    sink: &'a Sink,
    rules: &'a Rules,
    /// The input is typed at a terminal (echoed differently).
    typed: bool,
}

/// What one turn of the writer decided.
enum Turn {
    /// Go on sending.
    Next,
    /// Close with this frame.
    Close(CloseFrame),
    /// Stop: the reader ended, or sending failed.
    Stop,
}

impl<S> Writer<'_, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async fn run(mut self, input: &mut Input, progress: &mut Progress, interrupt: &mut Interrupt) {
        for msg in &self.rules.init {
            emit(self.sink, Direction::Out, msg, false, None).await;
            if self.tx.send(msg.clone()).await.is_err() {
                return;
            }
        }
        let done_at_once = progress.input_ended
            && !self.rules.count_pending(self.shared.received())
            && self.rules.wait.is_none();
        let frame = if done_at_once {
            self.shared.close(normal(), false)
        } else {
            loop {
                match self.turn(input, progress, interrupt).await {
                    Turn::Next => continue,
                    Turn::Close(frame) => break frame,
                    Turn::Stop => return,
                }
            }
        };
        let _ = self.tx.close(frame.code, &frame.reason).await;
    }

    /// Waits for whichever comes first: the reader's end, `--count`,
    /// Ctrl-C, the next input, or `--wait` of quiet after the input ended.
    async fn turn(
        &mut self,
        input: &mut Input,
        progress: &mut Progress,
        interrupt: &mut Interrupt,
    ) -> Turn {
        let (shared, rules) = (self.shared, self.rules);
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
        tokio::select! {
            biased;
            () = shared.reader_done.notified() => Turn::Stop,
            () = shared.count_reached.notified() => Turn::Close(shared.close(normal(), false)),
            () = interrupt.wait() => Turn::Close(shared.close(rules.on_interrupt.clone(), true)),
            item = input.recv(), if !ended => self.on_input(item, progress).await,
            () = linger => {
                let quiet = Instant::now() - *lock(&shared.last_activity);
                match rules.wait {
                    Some(Wait::For(d)) if quiet >= d => Turn::Close(shared.close(normal(), false)),
                    _ => Turn::Next,
                }
            }
        }
    }

    /// Sends what the input gave, or closes as it asks or when it ended.
    async fn on_input(&mut self, item: Option<Outgoing>, progress: &mut Progress) -> Turn {
        match item {
            Some(Outgoing::Message(msg)) => {
                emit(self.sink, Direction::Out, &msg, self.typed, None).await;
                if matches!(msg, Message::Ping(_)) {
                    *lock(&self.shared.ping_sent) = Some(Instant::now());
                }
                let data = msg.is_data();
                if self.tx.send(msg).await.is_err() {
                    return Turn::Stop;
                }
                if data {
                    *lock(&self.shared.last_activity) = Instant::now();
                }
                Turn::Next
            }
            Some(Outgoing::Close(frame)) => {
                Turn::Close(self.shared.close(frame.unwrap_or_else(normal), false))
            }
            None => {
                progress.input_ended = true;
                if self.rules.wait.is_some() || self.rules.count_pending(self.shared.received()) {
                    return Turn::Next;
                }
                Turn::Close(self.shared.close(normal(), false))
            }
        }
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
