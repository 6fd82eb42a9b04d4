//! One hub connection: reads commands, answers them, and forwards what the
//! hub delivers to it.
//!
//! Exact recovery rests on one rule: a subscription is registered with the
//! hub *before* the store is read. Every publication is then either in what
//! the store returns or in the queue (or both); the session remembers the
//! highest offset it has sent per channel and drops anything at or below
//! it, so nothing is missed and nothing is sent twice.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::Arc;

use duplex::{BudgetShare, Message, Text, WebSocket};
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::answers::{Answer, Answers, reply_json as json};
use crate::auth::{Claims, allowed};
use crate::broker::PendingPublish;
use crate::hub::{Delivery, Subscriber};
use crate::publication::{Publication, page_of};
use crate::queue::{QueueReceiver, QueueSender, queue};
use crate::ratelimit::TokenBucket;
use crate::signal::Signal;
use crate::state::AppState;
use crate::store::{Range, StoreError};
use duplex_hub::{
    Command, Done, ErrorCode, HubClose, HubError, Kicked, KickedPush, Member, Members,
    NAME_MAX_CHARS, Push, SESSION_MAX_LEN, SESSION_MIN_LEN, ServerMessage, Since, check_channel,
    encode_data, parse_request,
};

/// Consecutive bad commands after which a connection is closed (1008).
const MAX_STRIKES: u32 = 100;
/// How long a connection waits at shutdown for the store to answer the
/// publishes it has in flight.
const SETTLE_ON_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs a hub connection until it closes.
pub async fn run<S>(mut ws: WebSocket<S>, state: Arc<AppState>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let share = ws.budget_share();
    let client = state.next_client_id();
    let (queue, inbox) = queue(state.settings.queue_size);
    let mut session = Session {
        bucket: TokenBucket::new(state.settings.rate_limit, state.settings.rate_burst),
        member: Member {
            client: client.clone(),
            user: format!("anon-{client}").into(),
            name: format!("anon-{client}").into(),
        },
        state,
        ws,
        claims: None,
        connected: false,
        subscriptions: HashMap::new(),
        queue,
        inbox,
        share,
        slow: Signal::new(),
        strikes: 0,
        answers: Answers::default(),
    };
    session.state.metrics.connections.inc();
    session.state.metrics.connections_total.inc();
    session.serve().await;
    for channel in session.subscriptions.keys() {
        session.state.broker.leave(channel, &session.member.client);
    }
    session.state.metrics.connections.dec();
}

struct Session<S> {
    ws: WebSocket<S>,
    state: Arc<AppState>,
    member: Member,
    claims: Option<Claims>,
    connected: bool,
    /// What this connection is subscribed to.
    subscriptions: HashMap<Arc<str>, Subscription>,
    queue: QueueSender,
    inbox: QueueReceiver,
    /// This connection's share of the memory budget: its queue weighs on it.
    share: Option<BudgetShare>,
    slow: Signal,
    bucket: TokenBucket,
    strikes: u32,
    /// Answers not sent yet: publishes waiting for the store.
    answers: Answers,
}

/// One channel a connection is subscribed to.
struct Subscription {
    /// The highest offset sent to the client.
    sent: u64,
    /// Keeps this node receiving the channel (with Redis).
    _following: Option<crate::redis::Following>,
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async fn serve(&mut self) {
        // Made once, not on every turn of the loop, and registered once
        // (`SignalWait`): the shutdown is shared by every connection.
        let (shutdown, slow) = (self.state.shutdown.clone(), self.slow.clone());
        let shutting_down = shutdown.wait();
        let too_slow = slow.wait();
        tokio::pin!(shutting_down, too_slow);
        loop {
            tokio::select! {
                biased;
                () = poll_fn(|cx| shutting_down.as_mut().poll_on(&shutdown, cx)) => {
                    // What is stored is answered, so that it is not published
                    // again; a store slower than that loses the rest.
                    let settled = tokio::time::timeout(SETTLE_ON_SHUTDOWN, self.settle()).await;
                    // (Unless the connection broke while answering.)
                    if !matches!(settled, Ok(Err(_))) {
                        let _ = self.ws.close(HubClose::ShuttingDown.code(), "server shutting down; reconnect with since").await;
                    }
                    return;
                }
                () = poll_fn(|cx| too_slow.as_mut().poll_on(&slow, cx)) => {
                    let _ = self.ws.close(HubClose::TryAgainLater.code(), "slow consumer: too many messages queued").await;
                    return;
                }
                // Before deliveries: a subscription's reply precedes its
                // pushes, and a publish's reply the push of its publication.
                Some((id, result)) = poll_fn(|cx| self.answers.poll_next(cx)), if !self.answers.is_empty() => {
                    if self.answer(id, result).await.is_err() {
                        return;
                    }
                }
                Some(queued) = self.inbox.recv() => {
                    // The commit that brought it answered its publishers
                    // first: if one is this connection, answer it first.
                    if self.answer_decided().await.is_err() {
                        return;
                    }
                    // It weighs on this connection until it is queued for
                    // writing (a peer that does not read stops us there).
                    if self.deliver(queued.delivery).await.is_err() {
                        return;
                    }
                }
                // Past the publishes it may have in flight, a client waits.
                msg = self.ws.recv(), if !self.answers.is_full() => match msg {
                    None => return,
                    Some(Ok(Message::Text(text))) => {
                        self.count_in(text.len());
                        if self.on_text(&text).await.is_err() {
                            return;
                        }
                    }
                    Some(Ok(Message::Binary(b))) => {
                        self.count_in(b.len());
                        let e = HubError::new(ErrorCode::BadRequest, "binary frames are not part of the hub protocol: send JSON text");
                        if self.settle().await.is_err() {
                            return;
                        }
                        if self.send(ServerMessage::Error { id: None, error: e }.encode()).await.is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::debug!(client = %self.member.client, "hub connection: {e}"),
                },
            }
        }
    }

    fn count_in(&self, len: usize) {
        self.state.metrics.messages_in.inc();
        self.state.metrics.bytes_in.inc_by(len as u64);
    }

    async fn send(&mut self, json: bytes::Bytes) -> duplex::Result<()> {
        // A large reply (a history page, a recovery) is charged as what
        // waits to be written, like all output.
        let text = Text::try_from(json).expect("serde_json writes UTF-8");
        self.send_text(text).await
    }

    async fn send_text(&mut self, text: Text) -> duplex::Result<()> {
        self.count_out(1, text.len());
        // Fed, not flushed: the next recv flushes a whole batch at once.
        self.ws.feed(Message::Text(text)).await
    }

    fn count_out(&self, messages: usize, bytes: usize) {
        self.state.metrics.messages_out.inc_by(messages as u64);
        self.state.metrics.bytes_out.inc_by(bytes as u64);
    }

    async fn deliver(&mut self, delivery: Delivery) -> duplex::Result<()> {
        match delivery {
            Delivery::Publications(batch) => {
                let Some(subscription) = self.subscriptions.get_mut(&batch.channel) else {
                    return Ok(());
                };
                // Offsets ascend: skip what a recovery already sent.
                let sent = subscription.sent;
                let fresh = batch.pushes.partition_point(|(offset, _)| *offset <= sent);
                let Some((last, _)) = batch.pushes.last() else {
                    return Ok(());
                };
                subscription.sent = subscription.sent.max(*last);
                let fresh = &batch.pushes[fresh..];
                let bytes = fresh.iter().map(|(_, push)| push.len()).sum();
                self.count_out(fresh.len(), bytes);
                for (_, push) in fresh {
                    self.ws.feed(Message::Text(push.clone())).await?;
                }
                Ok(())
            }
            Delivery::Push(text) => self.send_text(text).await,
            Delivery::Kicked { channel, reason } => {
                self.subscriptions.remove(&channel);
                let push = Push::Kicked(KickedPush {
                    channel: Cow::Borrowed(&channel),
                    reason: Cow::Borrowed(&reason),
                });
                self.send(push.encode()).await
            }
            Delivery::Lost { channel } => {
                tracing::debug!(client = %self.member.client, %channel, "closed: publications lost");
                let reason =
                    "publications were lost on their way to this server; reconnect with since";
                let _ = self
                    .ws
                    .close(HubClose::PublicationsLost.code(), reason)
                    .await;
                Err(duplex::Error::Closed)
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> duplex::Result<()> {
        if !self.bucket.try_take() {
            // Answer with the refused command's id, so the client knows which.
            #[derive(serde::Deserialize)]
            struct Id {
                id: Option<u64>,
            }
            let id = serde_json::from_str::<Id>(text).ok().and_then(|r| r.id);
            let e = HubError::new(ErrorCode::RateLimited, "too many commands: slow down");
            self.settle().await?;
            return self
                .send(ServerMessage::Error { id, error: e }.encode())
                .await;
        }
        let request = match parse_request(text) {
            Ok(r) => r,
            Err((id, e)) => {
                self.settle().await?;
                return self.strike(id, e).await;
            }
        };
        if !matches!(request.command, Command::Publish { .. }) {
            // It sees every earlier publish of this connection stored.
            self.settle().await?;
        }
        let answer = self.execute(request.command).await;
        self.answers.push(request.id, answer);
        Ok(())
    }

    /// Sends the answers that are decided, oldest first, up to the first
    /// that is not.
    async fn answer_decided(&mut self) -> duplex::Result<()> {
        while let Some((id, result)) = self.answers.decided() {
            self.answer(id, result).await?;
        }
        Ok(())
    }

    /// Sends the answers of every command before this one.
    async fn settle(&mut self) -> duplex::Result<()> {
        while let Some((id, result)) = self.answers.next().await {
            self.answer(id, result).await?;
        }
        Ok(())
    }

    /// Sends the answer to command `id`: its reply (only if it has an
    /// `id`), or its error.
    async fn answer(
        &mut self,
        id: Option<u64>,
        result: Result<Box<RawValue>, HubError>,
    ) -> duplex::Result<()> {
        match result {
            Ok(result) => {
                self.strikes = 0;
                match id {
                    Some(_) => {
                        let result = Cow::Owned(result);
                        self.send(ServerMessage::Reply { id, result }.encode())
                            .await
                    }
                    None => Ok(()),
                }
            }
            Err(e) => self.strike(id, e).await,
        }
    }

    async fn strike(&mut self, id: Option<u64>, error: HubError) -> duplex::Result<()> {
        self.strikes += 1;
        if self.strikes > MAX_STRIKES {
            let _ = self
                .ws
                .close(
                    HubClose::Policy.code(),
                    "too many invalid commands in a row",
                )
                .await;
            return Err(duplex::Error::Closed);
        }
        self.send(ServerMessage::Error { id, error }.encode()).await
    }

    fn require_auth(&self) -> Result<(), HubError> {
        if self.claims.is_none() && !self.state.settings.allow_anonymous {
            return Err(HubError::new(
                ErrorCode::Unauthorized,
                "send connect with a token first",
            ));
        }
        Ok(())
    }

    /// Runs one command: its reply's JSON, or a publish on its way.
    async fn execute(&mut self, command: Command) -> Answer {
        if !matches!(command, Command::Connect { .. } | Command::Ping) {
            if let Err(e) = self.require_auth() {
                return Answer::Now(Err(e));
            }
        }
        let result = match command {
            Command::Connect {
                token,
                name,
                session,
            } => self.connect(token, name, session),
            Command::Subscribe {
                channel,
                since,
                presence,
            } => {
                self.subscribe(channel, since, presence.unwrap_or(true))
                    .await
            }
            Command::Unsubscribe { channel } => self.unsubscribe(&channel),
            Command::Publish { channel, data } => {
                return Answer::Stored(self.publish(channel, data).await);
            }
            Command::History {
                channel,
                limit,
                before,
                after,
            } => {
                let range = Range::requested(limit, before, after);
                self.history(&channel, range).await
            }
            Command::Presence { channel } => self.presence(channel).await,
            Command::Typing { channel } => self
                .state
                .broker
                .typing(&channel, &self.member)
                .await
                .map(|()| json(&Done {})),
            Command::Kick { channel, name, ban } => self.kick(&channel, &name, ban).await,
            Command::Ping => Ok(json(&Done {})),
        };
        Answer::Now(result)
    }

    fn unsubscribe(&mut self, channel: &str) -> Result<Box<RawValue>, HubError> {
        if self.subscriptions.remove(channel).is_none() {
            return Err(HubError::new(
                ErrorCode::NotSubscribed,
                format!("not subscribed to {channel}"),
            ));
        }
        self.state.broker.leave(channel, &self.member.client);
        Ok(json(&Done {}))
    }

    async fn history(&mut self, channel: &str, range: Range) -> Result<Box<RawValue>, HubError> {
        check_channel(channel)?;
        self.check_subscribe_permission(channel)?;
        let page = self
            .state
            .store
            .history(channel, range)
            .await
            .map_err(storage)?;
        Ok(json(&page_of(
            channel,
            &page.position,
            None,
            &page.publications,
        )))
    }

    async fn presence(&mut self, channel: String) -> Result<Box<RawValue>, HubError> {
        check_channel(&channel)?;
        self.check_subscribe_permission(&channel)?;
        let members = self.state.broker.presence(&channel).await?;
        Ok(json(&Members {
            channel: channel.into(),
            members,
        }))
    }

    async fn kick(
        &mut self,
        channel: &str,
        name: &str,
        ban: bool,
    ) -> Result<Box<RawValue>, HubError> {
        check_channel(channel)?;
        if !self.claims.as_ref().is_some_and(|c| c.admin) {
            return Err(HubError::new(
                ErrorCode::Forbidden,
                "kick needs an admin token",
            ));
        }
        let kicked = self.state.broker.kick(channel, name, ban).await?;
        Ok(json(&Kicked { kicked }))
    }

    fn connect(
        &mut self,
        token: Option<String>,
        name: Option<String>,
        session: Option<String>,
    ) -> Result<Box<RawValue>, HubError> {
        if self.connected || !self.subscriptions.is_empty() {
            return Err(HubError::new(
                ErrorCode::BadRequest,
                "connect must be the first command, sent once",
            ));
        }
        if let Some(name) = &name {
            check_name(name)?;
        }
        match token {
            Some(token) => {
                let verifier = self.state.verifier.as_ref().ok_or_else(|| {
                    HubError::new(
                        ErrorCode::Unauthorized,
                        "this server accepts no tokens (no jwt_secret configured)",
                    )
                })?;
                let claims = verifier.verify(&token)?;
                let display = name
                    .or_else(|| claims.name.clone())
                    .unwrap_or_else(|| claims.sub.clone());
                self.member.user = claims.sub.as_str().into();
                self.member.name = display.into();
                self.claims = Some(claims);
            }
            None => {
                if !self.state.settings.allow_anonymous {
                    return Err(HubError::new(
                        ErrorCode::Unauthorized,
                        "this server requires a token",
                    ));
                }
                if let Some(name) = name {
                    self.member.name = name.into();
                }
                if let Some(session) = session {
                    self.member.user = anonymous_user(&session)?.into();
                }
            }
        }
        self.connected = true;
        Ok(json(&self.member))
    }

    fn check_subscribe_permission(&self, channel: &str) -> Result<(), HubError> {
        match &self.claims {
            Some(c) if !allowed(c.subscribe.as_deref(), channel) => Err(HubError::new(
                ErrorCode::Forbidden,
                format!("your token does not allow reading {channel}"),
            )),
            _ => Ok(()),
        }
    }

    async fn subscribe(
        &mut self,
        channel: String,
        since: Option<Since>,
        presence: bool,
    ) -> Result<Box<RawValue>, HubError> {
        check_channel(&channel)?;
        self.check_subscribe_permission(&channel)?;
        if self.subscriptions.contains_key(channel.as_str()) {
            return Err(HubError::new(
                ErrorCode::BadRequest,
                format!("already subscribed to {channel}"),
            ));
        }
        if self.subscriptions.len() >= self.state.settings.max_subscriptions {
            return Err(HubError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "at most {} subscriptions per connection",
                    self.state.settings.max_subscriptions
                ),
            ));
        }
        // Register first, read second: see the module documentation.
        let subscriber = Subscriber {
            member: self.member.clone(),
            queue: self.queue.clone(),
            share: self.share.clone(),
            slow: self.slow.clone(),
            presence,
        };
        let following = self.state.broker.join(&channel, subscriber).await?;
        let recover_limit = self.state.settings.history_size.min(100_000) as usize;
        let range = match &since {
            Some(s) => Range::After {
                after: s.offset,
                limit: recover_limit,
            },
            None => Range::After {
                after: u64::MAX >> 1,
                limit: 0,
            },
        };
        let page = match self.state.store.history(&channel, range).await {
            Ok(page) => page,
            Err(e) => {
                self.state.broker.leave(&channel, &self.member.client);
                return Err(storage(e));
            }
        };
        let position = &page.position;
        let recovered = since.as_ref().is_some_and(|s| {
            let same_epoch = s.epoch == position.epoch || (s.epoch.is_empty() && s.offset == 0);
            let missed = position.offset.saturating_sub(s.offset);
            same_epoch
                && s.offset <= position.offset
                && page.publications.len() as u64 == missed
                && page
                    .publications
                    .first()
                    .is_none_or(|p| p.offset == s.offset + 1)
        });
        let publications: &[Publication] = if recovered { &page.publications } else { &[] };
        let subscription = Subscription {
            sent: position.offset,
            _following: following,
        };
        self.subscriptions
            .insert(channel.as_str().into(), subscription);
        Ok(json(&page_of(
            &channel,
            position,
            Some(recovered),
            publications,
        )))
    }

    /// Queues a publication for the store: what it resolves to is the
    /// reply.
    async fn publish(&mut self, channel: String, data: serde_json::Value) -> PendingPublish {
        if let Err(e) = check_channel(&channel) {
            return PendingPublish::answered(Err(e));
        }
        if let Some(c) = &self.claims {
            if !allowed(c.publish.as_deref(), &channel) {
                return PendingPublish::answered(Err(HubError::new(
                    ErrorCode::Forbidden,
                    format!("your token does not allow publishing to {channel}"),
                )));
            }
        }
        match encode_data(&data, self.state.settings.max_data_size) {
            Ok(data) => {
                let from = self.member.clone();
                self.state.broker.submit(&channel, data, from).await
            }
            Err(e) => PendingPublish::answered(Err(e)),
        }
    }
}

/// The identity of an anonymous session: a hash of its secret, so the
/// secret itself is never shown to others.
fn anonymous_user(session: &str) -> Result<String, HubError> {
    use sha1::{Digest, Sha1};
    let ok = (SESSION_MIN_LEN..=SESSION_MAX_LEN).contains(&session.len())
        && session
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(HubError::new(
            ErrorCode::BadRequest,
            format!(
                "session must be {SESSION_MIN_LEN}-{SESSION_MAX_LEN} characters of letters, digits, - or _"
            ),
        ));
    }
    let digest = Sha1::digest(session.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("anon-{hex}"))
}

fn check_name(name: &str) -> Result<(), HubError> {
    let chars = name.chars().count();
    if chars == 0
        || chars > NAME_MAX_CHARS
        || name.chars().any(char::is_control)
        || name.trim() != name
    {
        return Err(HubError::new(
            ErrorCode::BadRequest,
            format!(
                "invalid name {name:?}: 1-{NAME_MAX_CHARS} characters, no control characters or outer spaces"
            ),
        ));
    }
    Ok(())
}

fn storage(e: StoreError) -> HubError {
    tracing::error!("storage: {e}");
    HubError::from(e)
}
