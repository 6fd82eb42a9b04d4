//! What the server sends unasked: publications of subscribed channels,
//! presence (join, leave), typing, and the news of being kicked.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::{Member, Publication};

super::wire_names! {
    /// The kinds of push: the `push` field of everything the server sends
    /// unasked.
    pub enum PushKind {
        /// A publication in a subscribed channel.
        Publication = "publication",
        /// Someone subscribed with presence.
        Join = "join",
        /// Someone left.
        Leave = "leave",
        /// Someone is typing.
        Typing = "typing",
        /// This connection was removed from the channel.
        Kicked = "kicked",
    }
}

/// A push: `{"push": kind, ...}` with the fields of its kind.
///
/// ```
/// use std::borrow::Cow;
/// use duplex_hub::{Member, MemberEvent, MemberPush, PushKind, ServerMessage};
///
/// let ann = Member { client: "c1".into(), user: "ann".into(), name: "ann".into() };
/// let body = MemberPush { channel: "news".into(), member: Cow::Borrowed(&ann) };
/// let push = MemberEvent::Join.push(body);
/// assert_eq!(push.kind(), PushKind::Join);
/// let bytes = push.encode();
/// let text = std::str::from_utf8(&bytes).unwrap();
/// assert_eq!(text, r#"{"push":"join","channel":"news","member":{"client":"c1","user":"ann","name":"ann"}}"#);
/// assert_eq!(ServerMessage::parse(text).unwrap(), ServerMessage::Push(push));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Push<'a> {
    /// A publication in a subscribed channel.
    Publication(Publication<'a>),
    /// Someone subscribed to the channel with presence.
    Join(MemberPush<'a>),
    /// Someone left the channel.
    Leave(MemberPush<'a>),
    /// Someone in the channel is typing.
    Typing(MemberPush<'a>),
    /// This connection was removed from the channel.
    Kicked(KickedPush<'a>),
}

/// The body of a join, leave or typing push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberPush<'a> {
    /// The channel.
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    /// Who joined, left or is typing.
    pub member: Cow<'a, Member>,
}

/// The body of a `kicked` push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KickedPush<'a> {
    /// The channel this connection was removed from.
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    /// Why, for a person.
    #[serde(borrow)]
    pub reason: Cow<'a, str>,
}

/// What happened to a member: the pushes that carry a [`MemberPush`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberEvent {
    /// It subscribed with presence.
    Join,
    /// It left.
    Leave,
    /// It is typing.
    Typing,
}

impl MemberEvent {
    /// The push telling others about it.
    pub fn push(self, body: MemberPush<'_>) -> Push<'_> {
        match self {
            MemberEvent::Join => Push::Join(body),
            MemberEvent::Leave => Push::Leave(body),
            MemberEvent::Typing => Push::Typing(body),
        }
    }
}

/// A push's body with its `push` tag first.
#[derive(Serialize)]
struct Tagged<'b, T> {
    push: PushKind,
    #[serde(flatten)]
    body: &'b T,
}

impl<'a> Push<'a> {
    /// Its kind: the `push` field.
    pub fn kind(&self) -> PushKind {
        match self {
            Push::Publication(_) => PushKind::Publication,
            Push::Join(_) => PushKind::Join,
            Push::Leave(_) => PushKind::Leave,
            Push::Typing(_) => PushKind::Typing,
            Push::Kicked(_) => PushKind::Kicked,
        }
    }

    /// The channel it is about.
    pub fn channel(&self) -> &str {
        match self {
            Push::Publication(p) => &p.channel,
            Push::Join(m) | Push::Leave(m) | Push::Typing(m) => &m.channel,
            Push::Kicked(k) => &k.channel,
        }
    }

    /// The JSON text sent on the wire.
    pub fn encode(&self) -> bytes::Bytes {
        crate::to_bytes(self)
    }

    /// Parses the fields of a push of `kind` from the whole message.
    pub(crate) fn parse(kind: PushKind, text: &'a str) -> serde_json::Result<Self> {
        Ok(match kind {
            PushKind::Publication => Push::Publication(serde_json::from_str(text)?),
            PushKind::Join => Push::Join(serde_json::from_str(text)?),
            PushKind::Leave => Push::Leave(serde_json::from_str(text)?),
            PushKind::Typing => Push::Typing(serde_json::from_str(text)?),
            PushKind::Kicked => Push::Kicked(serde_json::from_str(text)?),
        })
    }

    /// The same push, owning its fields.
    pub fn into_owned(self) -> Push<'static> {
        let member = |m: MemberPush<'_>| MemberPush {
            channel: Cow::Owned(m.channel.into_owned()),
            member: Cow::Owned(m.member.into_owned()),
        };
        match self {
            Push::Publication(p) => Push::Publication(p.into_owned()),
            Push::Join(m) => Push::Join(member(m)),
            Push::Leave(m) => Push::Leave(member(m)),
            Push::Typing(m) => Push::Typing(member(m)),
            Push::Kicked(k) => Push::Kicked(KickedPush {
                channel: Cow::Owned(k.channel.into_owned()),
                reason: Cow::Owned(k.reason.into_owned()),
            }),
        }
    }
}

impl Serialize for Push<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let push = self.kind();
        match self {
            Push::Publication(body) => Tagged { push, body }.serialize(s),
            Push::Join(body) | Push::Leave(body) | Push::Typing(body) => {
                Tagged { push, body }.serialize(s)
            }
            Push::Kicked(body) => Tagged { push, body }.serialize(s),
        }
    }
}
