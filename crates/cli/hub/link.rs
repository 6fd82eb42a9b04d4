//! A hub connection that survives disconnects: it reconnects with
//! exponential backoff and re-subscribes with `since`, so a client sees
//! every publication exactly once, in order, or is told about a gap.
//!
//! [`Link::next`] is cancel-safe (it can sit in `tokio::select!`): a new
//! connection is kept only once fully re-established, and the backoff
//! deadline lives in the link, not in the future.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use anyhow::{Context, bail};
use duplex::{ClientBuilder, MaybeTlsStream, Message, WebSocket};
use duplex_server::protocol::{Command, PushKind, Request, Since};
use serde_json::{Value, json};
use tokio::time::Instant;

/// What happened on the link.
#[derive(Debug, Clone)]
pub enum Event {
    /// A publication (from history during (re)subscription, or live).
    Publication(Value),
    /// Any other push: join, leave, typing, kicked.
    Push(Value),
    /// A reply to a command sent with [`Link::send`].
    Reply(Value),
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
                    let Ok(v) = serde_json::from_str::<Value>(&t) else {
                        continue;
                    };
                    let event = self.classify(v);
                    return event;
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
        for channel in self.channels.clone() {
            let mut since = self.positions.get(&channel).cloned();
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
                    let page = call(&mut ws, history, id, &mut events).await?;
                    *epoch = page["epoch"].as_str().unwrap_or_default().to_owned();
                }
            }
            let subscribe = Command::Subscribe {
                channel: channel.clone(),
                since: since.clone().map(|(epoch, offset)| Since { epoch, offset }),
                presence: None,
            };
            let id = self.take_id();
            let result = call(&mut ws, subscribe, id, &mut events).await?;
            let epoch = result["epoch"].as_str().unwrap_or_default().to_owned();
            let offset = result["offset"].as_u64().unwrap_or(0);
            if since.is_some() && result["recovered"] != json!(true) {
                events.push(Event::Gap(channel.clone()));
            }
            for p in result["publications"].as_array().into_iter().flatten() {
                events.push(Event::Publication(p.clone()));
            }
            let known = self
                .positions
                .entry(channel.clone())
                .or_insert((epoch.clone(), 0));
            known.0 = epoch;
            known.1 = known.1.max(offset);
        }
        Ok((ws, events))
    }

    fn take_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id - 1
    }

    fn classify(&mut self, v: Value) -> Event {
        match PushKind::of(&v) {
            Some(PushKind::Publication) => {
                if let (Some(channel), Some(epoch), Some(offset)) = (
                    v["channel"].as_str(),
                    v["epoch"].as_str(),
                    v["offset"].as_u64(),
                ) {
                    let pos = self
                        .positions
                        .entry(channel.to_owned())
                        .or_insert((epoch.to_owned(), 0));
                    *pos = (epoch.to_owned(), pos.1.max(offset));
                }
                Event::Publication(v)
            }
            Some(_) => Event::Push(v),
            // A push of a kind this client does not know is still a push.
            None if v.get("push").is_some() => Event::Push(v),
            None => Event::Reply(v),
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
) -> anyhow::Result<Value> {
    ws.send(Request::new(id, command).encode()).await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.recv()).await {
            Err(_) => bail!("the server did not answer in time"),
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t)?;
                if v.get("push").is_some() {
                    events.push(Event::Push(v));
                } else if v["id"] == json!(id) {
                    if let Some(err) = v.get("error") {
                        bail!(
                            "{}: {}",
                            err["code"].as_str().unwrap_or("error"),
                            err["message"].as_str().unwrap_or("")
                        );
                    }
                    return Ok(v["result"].clone());
                }
            }
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
