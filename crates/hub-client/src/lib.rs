//! A client of Duplex's hub (`/ws`, docs/protocol.md) whose connection
//! survives disconnects: it reconnects with exponential backoff and
//! re-subscribes with `since`, so it sees every publication exactly once,
//! in order, or is told about a gap. `duplex chat` and `duplex subscribe`
//! run it; `/duplex.js` is its JavaScript twin.
//!
//! [`Link::next`] is cancel-safe (it can sit in `tokio::select!`): a new
//! connection is kept only once fully re-established, and the backoff
//! deadline lives in the link, not in the future.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! use duplex_hub::Command;
//! use duplex_hub_client::{Event, Link};
//!
//! # let dir = tempfile::tempdir()?;
//! # let settings = duplex_server::Settings {
//! #     bind: "127.0.0.1:0".parse()?,
//! #     data: dir.path().join("data"),
//! #     ..Default::default()
//! # };
//! # let server = duplex_server::Server::start(settings).await?;
//! # let url = format!("ws://{}/ws", server.local_addr());
//! let subscriptions = vec![("news".to_owned(), None)];
//! let mut link = Link::open(url, duplex::ClientBuilder::new(), None, subscriptions).await?;
//! let data = serde_json::json!({"text": "hello"});
//! link.send(Command::Publish { channel: "news".into(), data }).await?;
//! loop {
//!     if let Event::Publication(p) = link.next().await {
//!         assert_eq!((&*p.channel, p.offset, p.data.get()), ("news", 1, r#"{"text":"hello"}"#));
//!         break;
//!     }
//! }
//! link.close().await;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use anyhow::{Context, bail};
use duplex::{ClientBuilder, MaybeTlsStream, Message, WebSocket};
use duplex_hub::{Command, HubError, Page, Publication, Push, Request, ServerMessage, Since};
use serde_json::value::RawValue;
use tokio::time::Instant;

/// What happened on the link.
#[derive(Debug, Clone)]
pub enum Event {
    /// A publication (from history during (re)subscription, or live).
    Publication(Publication<'static>),
    /// Any other push: join, leave, typing, kicked.
    Push(Push<'static>),
    /// The answer to a command sent with [`Link::send`].
    Reply {
        /// The id [`Link::send`] returned.
        id: u64,
        /// The command's result (one of the types of [`duplex_hub::reply`]),
        /// or why it failed.
        result: Result<Box<RawValue>, HubError>,
    },
    /// After a reconnect, publications of `channel` could not all be
    /// recovered: some may be missing.
    Gap(String),
    /// The connection dropped; the link retries at the given delay.
    Disconnected(String, Duration),
    /// The connection is back (and subscriptions recovered).
    Reconnected,
}

/// A reconnecting hub connection.
pub struct Link {
    url: String,
    builder: ClientBuilder,
    name: Option<String>,
    /// This process's session secret: a reconnect keeps the same identity.
    session: String,
    ws: Option<WebSocket<MaybeTlsStream>>,
    next_id: u64,
    /// Channel → (epoch, highest offset seen).
    positions: HashMap<String, (String, u64)>,
    channels: Vec<String>,
    queue: VecDeque<Event>,
    retry_at: Option<Instant>,
    backoff: Duration,
}

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Link {
    /// Connects, says who we are and subscribes; the first connection must
    /// succeed (a wrong URL should fail at once, not retry forever).
    pub async fn open(
        url: String,
        builder: ClientBuilder,
        name: Option<String>,
        subscriptions: Vec<(String, Option<(String, u64)>)>,
    ) -> anyhow::Result<Self> {
        let mut link = Self {
            url,
            builder,
            name,
            session: session_secret(),
            ws: None,
            next_id: 1,
            positions: HashMap::new(),
            channels: Vec::new(),
            queue: VecDeque::new(),
            retry_at: None,
            backoff: MIN_BACKOFF,
        };
        for (channel, since) in subscriptions {
            if let Some(pos) = since {
                link.positions.insert(channel.clone(), pos);
            }
            link.channels.push(channel);
        }
        let (ws, events) = link.establish().await?;
        link.ws = Some(ws);
        link.queue.extend(events);
        Ok(link)
    }

    /// Sends a command; its reply arrives later as [`Event::Reply`] with the
    /// returned id. Fails while disconnected.
    pub async fn send(&mut self, command: Command) -> anyhow::Result<u64> {
        let id = self.take_id();
        let ws = self.ws.as_mut().context("not connected (reconnecting)")?;
        ws.send(Request::new(id, command).encode()).await?;
        Ok(id)
    }

    /// Closes the connection normally.
    pub async fn close(&mut self) {
        if let Some(mut ws) = self.ws.take() {
            let _ = ws.close(duplex::CloseCode::NORMAL, "bye").await;
        }
    }

    /// The next event. Cancel-safe.
    pub async fn next(&mut self) -> Event {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return e;
            }
            let Some(ws) = self.ws.as_mut() else {
                self.reconnect().await;
                continue;
            };
            match ws.recv().await {
                Some(Ok(Message::Text(t))) => {
                    // A push of a kind this version does not know is a
                    // newer server's: skipped, like anything unreadable.
                    if let Some(event) =
                        ServerMessage::parse(&t).ok().and_then(|m| self.classify(m))
                    {
                        return event;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let why = frame
                        .map(|f| f.to_string())
                        .unwrap_or_else(|| "closed".into());
                    if let Some(e) = self.drop_connection(why) {
                        return e;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    if let Some(e) = self.drop_connection(e.to_string()) {
                        return e;
                    }
                }
                None => {
                    if let Some(e) = self.drop_connection("connection closed".into()) {
                        return e;
                    }
                }
            }
        }
    }

    fn drop_connection(&mut self, why: String) -> Option<Event> {
        self.ws.take()?;
        let delay = self.backoff;
        self.retry_at = Some(Instant::now() + delay);
        Some(Event::Disconnected(why, delay))
    }

    async fn reconnect(&mut self) {
        let at = *self.retry_at.get_or_insert_with(Instant::now);
        tokio::time::sleep_until(at).await;
        match self.establish().await {
            Ok((ws, events)) => {
                self.ws = Some(ws);
                self.retry_at = None;
                self.backoff = MIN_BACKOFF;
                self.queue.push_back(Event::Reconnected);
                self.queue.extend(events);
            }
            Err(e) => {
                // Exponential backoff with jitter, so a restarted server is
                // not hit by every client at the same instant.
                let jitter = rand_fraction() * 0.3 + 0.85;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF).mul_f64(jitter);
                self.retry_at = Some(Instant::now() + self.backoff);
                self.queue
                    .push_back(Event::Disconnected(format!("{e:#}"), self.backoff));
            }
        }
    }

    /// Opens a connection and subscribes everything, recovering from the
    /// positions seen so far. Returns the events that produced.
    async fn establish(&mut self) -> anyhow::Result<(WebSocket<MaybeTlsStream>, Vec<Event>)> {
        let mut ws = self.builder.connect(&self.url).await?;
        let mut events = Vec::new();
        if let Some(name) = self.name.clone() {
            let id = self.take_id();
            let connect = Command::Connect {
                token: None,
                name: Some(name),
                session: Some(self.session.clone()),
            };
            call(&mut ws, connect, id, &mut events).await?;
        }
        // Applied only once every channel is subscribed: a connection that
        // fails half-way must not move the positions the next one recovers
        // from, or what it recovered and never handed out would be skipped.
        let mut positions = self.positions.clone();
        for channel in self.channels.clone() {
            let mut since = positions.get(&channel).cloned();
            if let Some((epoch, offset)) = &mut since {
                if epoch.is_empty() && *offset > 0 {
                    // An offset without an epoch (`--since :41`): take it in
                    // the channel's current epoch.
                    let id = self.take_id();
                    let history = Command::History {
                        channel: channel.clone(),
                        limit: Some(0),
                        before: None,
                        after: None,
                    };
                    let result = call(&mut ws, history, id, &mut events).await?;
                    let page: Page = serde_json::from_str(result.get())?;
                    *epoch = page.epoch.into_owned();
                }
            }
            let subscribe = Command::Subscribe {
                channel: channel.clone(),
                since: since.clone().map(|(epoch, offset)| Since { epoch, offset }),
                presence: None,
            };
            let id = self.take_id();
            let result = call(&mut ws, subscribe, id, &mut events).await?;
            let page: Page = serde_json::from_str(result.get())?;
            if since.is_some() && page.recovered != Some(true) {
                events.push(Event::Gap(channel.clone()));
            }
            events.extend(
                page.publications
                    .into_iter()
                    .map(|p| Event::Publication(p.into_owned())),
            );
            advance(&mut positions, &channel, &page.epoch, page.offset);
        }
        for event in &events {
            if let Event::Publication(p) = event {
                advance(&mut positions, &p.channel, &p.epoch, p.offset);
            }
        }
        self.positions = positions;
        Ok((ws, events))
    }

    fn take_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id - 1
    }

    fn classify(&mut self, message: ServerMessage<'_>) -> Option<Event> {
        match message {
            ServerMessage::Push(Push::Publication(p)) => {
                advance(&mut self.positions, &p.channel, &p.epoch, p.offset);
                Some(Event::Publication(p.into_owned()))
            }
            ServerMessage::Push(push) => Some(Event::Push(push.into_owned())),
            // An answer without an id answers nothing this link sent.
            ServerMessage::Reply { id, result } => Some(Event::Reply {
                id: id?,
                result: Ok(result.into_owned()),
            }),
            ServerMessage::Error { id, error } => Some(Event::Reply {
                id: id?,
                result: Err(error),
            }),
        }
    }
}

/// Remembers that `channel` has been seen up to `offset` of `epoch`. An
/// offset of another epoch means nothing in this one: a new epoch starts
/// afresh.
fn advance(
    positions: &mut HashMap<String, (String, u64)>,
    channel: &str,
    epoch: &str,
    offset: u64,
) {
    match positions.get_mut(channel) {
        Some((known, seen)) if known == epoch => *seen = (*seen).max(offset),
        Some(position) => *position = (epoch.to_owned(), offset),
        None => {
            positions.insert(channel.to_owned(), (epoch.to_owned(), offset));
        }
    }
}

/// Sends one command and reads until its reply, keeping pushes that
/// arrive meanwhile.
async fn call(
    ws: &mut WebSocket<MaybeTlsStream>,
    command: Command,
    id: u64,
    events: &mut Vec<Event>,
) -> anyhow::Result<Box<RawValue>> {
    ws.send(Request::new(id, command).encode()).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, ws.recv()).await {
            Err(_) => bail!("the server did not answer in time"),
            Ok(Some(Ok(Message::Text(t)))) => match ServerMessage::parse(&t) {
                // Live publications of channels subscribed a moment ago.
                Ok(ServerMessage::Push(Push::Publication(p))) => {
                    events.push(Event::Publication(p.into_owned()));
                }
                Ok(ServerMessage::Push(push)) => events.push(Event::Push(push.into_owned())),
                Ok(ServerMessage::Reply {
                    id: Some(got),
                    result,
                }) if got == id => {
                    return Ok(result.into_owned());
                }
                Ok(ServerMessage::Error {
                    id: Some(got),
                    error,
                }) if got == id => {
                    bail!("{}: {}", error.code.name(), error.message)
                }
                _ => {}
            },
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) => bail!("the server closed the connection"),
        }
    }
}

/// A random session secret for this process (see `connect` in docs/protocol.md).
fn session_secret() -> String {
    use std::hash::{BuildHasher, RandomState};
    (0..2)
        .map(|_| format!("{:016x}", RandomState::new().hash_one(Instant::now())))
        .collect()
}

fn rand_fraction() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    (RandomState::new().hash_one(Instant::now()) % 10_000) as f64 / 10_000.0
}
