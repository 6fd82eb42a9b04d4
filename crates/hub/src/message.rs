//! Everything the server sends on a hub connection, as one type: a reply,
//! an error reply or a push. The server encodes it; clients parse it back.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{ErrorCode, HubError, Push, PushKind, to_bytes};

/// A message from the server.
///
/// ```
/// use duplex_hub::{Page, ServerMessage};
///
/// let text = r#"{"id":2,"result":{"channel":"news","epoch":"e1","offset":0,"publications":[]}}"#;
/// let message = ServerMessage::parse(text).unwrap();
/// let ServerMessage::Reply { id: Some(2), result } = &message else { panic!() };
/// let page: Page = serde_json::from_str(result.get()).unwrap();
/// assert_eq!(page.channel, "news");
/// assert_eq!(&message.encode()[..], text.as_bytes());
/// ```
#[derive(Debug, Clone)]
pub enum ServerMessage<'a> {
    /// `{"id", "result"}`: a command succeeded; `result` is one of the
    /// types in [`reply`](crate::reply) (or [`Member`](crate::Member) for
    /// `connect`).
    Reply {
        /// The command's id.
        id: Option<u64>,
        /// What it returned.
        result: Cow<'a, RawValue>,
    },
    /// `{"id", "error"}`: a command failed (its id is `null` when the
    /// command could not be read far enough to find it).
    Error {
        /// The command's id.
        id: Option<u64>,
        /// Why it failed.
        error: HubError,
    },
    /// Something the server sends unasked.
    Push(Push<'a>),
}

/// Why a text from the server is not a [`ServerMessage`].
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, or a field of the wrong type.
    #[error("not a hub message: {0}")]
    Json(#[from] serde_json::Error),
    /// A push of a kind this version does not know: a newer server's;
    /// clients skip it.
    #[error("a push of an unknown kind {0:?}")]
    UnknownPush(String),
    /// Neither a push nor a reply.
    #[error("neither a reply nor a push")]
    Unrecognised,
}

/// The fields that tell what a message is; the rest is parsed by the type
/// of its kind.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(default, borrow)]
    push: Option<Cow<'a, str>>,
    #[serde(default)]
    id: Option<u64>,
    /// Present even when it is `null` (an `Option` alone would read a
    /// `null` result as no result).
    #[serde(default, borrow, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(default, borrow)]
    error: Option<WireError<'a>>,
}

/// An error reply's body as read: a code this version does not know (a
/// newer server's) still makes an error reply, not an unreadable message.
#[derive(Deserialize)]
struct WireError<'a> {
    #[serde(borrow)]
    code: Cow<'a, str>,
    #[serde(borrow)]
    message: Cow<'a, str>,
}

impl WireError<'_> {
    /// Known codes as they are; an unknown one becomes `internal`, its
    /// name kept in the message.
    fn into_error(self) -> HubError {
        match ErrorCode::from_name(&self.code) {
            Some(code) => HubError::new(code, self.message),
            None => HubError::new(
                ErrorCode::Internal,
                format!("{}: {}", self.code, self.message),
            ),
        }
    }
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Serialize)]
struct ReplyOut<'b> {
    id: Option<u64>,
    result: &'b RawValue,
}

#[derive(Serialize)]
struct ErrorOut<'b> {
    id: Option<u64>,
    error: &'b HubError,
}

impl<'a> ServerMessage<'a> {
    /// Parses a text frame from the server, borrowing from it where it can.
    pub fn parse(text: &'a str) -> Result<Self, ParseError> {
        let head: Head<'a> = serde_json::from_str(text)?;
        if let Some(name) = head.push {
            let kind = PushKind::from_name(&name)
                .ok_or_else(|| ParseError::UnknownPush(name.into_owned()))?;
            return Ok(ServerMessage::Push(Push::parse(kind, text)?));
        }
        match (head.result, head.error) {
            (_, Some(error)) => Ok(ServerMessage::Error {
                id: head.id,
                error: error.into_error(),
            }),
            (Some(result), None) => Ok(ServerMessage::Reply {
                id: head.id,
                result: Cow::Borrowed(result),
            }),
            (None, None) => Err(ParseError::Unrecognised),
        }
    }

    /// The JSON text sent on the wire.
    pub fn encode(&self) -> Bytes {
        to_bytes(self)
    }

    /// The id of the command this answers; `None` for a push.
    pub fn id(&self) -> Option<u64> {
        match self {
            ServerMessage::Reply { id, .. } | ServerMessage::Error { id, .. } => *id,
            ServerMessage::Push(_) => None,
        }
    }

    /// The same message, owning its fields.
    pub fn into_owned(self) -> ServerMessage<'static> {
        match self {
            ServerMessage::Reply { id, result } => ServerMessage::Reply {
                id,
                result: Cow::Owned(result.into_owned()),
            },
            ServerMessage::Error { id, error } => ServerMessage::Error { id, error },
            ServerMessage::Push(push) => ServerMessage::Push(push.into_owned()),
        }
    }
}

impl Serialize for ServerMessage<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ServerMessage::Reply { id, result } => ReplyOut { id: *id, result }.serialize(s),
            ServerMessage::Error { id, error } => ErrorOut { id: *id, error }.serialize(s),
            ServerMessage::Push(push) => push.serialize(s),
        }
    }
}

/// Equal when every field is, results compared as JSON text.
impl PartialEq for ServerMessage<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                ServerMessage::Reply { id, result },
                ServerMessage::Reply {
                    id: id2,
                    result: result2,
                },
            ) => id == id2 && result.get() == result2.get(),
            (
                ServerMessage::Error { id, error },
                ServerMessage::Error {
                    id: id2,
                    error: error2,
                },
            ) => id == id2 && error == error2,
            (ServerMessage::Push(a), ServerMessage::Push(b)) => a == b,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::value::to_raw_value;

    use super::*;
    use crate::{ErrorCode, KickedPush, Member, MemberPush, Publication};

    fn text() -> impl Strategy<Value = String> {
        // Quotes, backslashes and controls make serde escape (and so own
        // what it parses); the rest borrows.
        prop_oneof![
            "[a-z0-9:._-]{0,12}",
            "\\PC{0,12}",
            "[\"\\\\\n\u{0}-\u{1f}]{0,4}"
        ]
    }

    fn member() -> impl Strategy<Value = Member> {
        (text(), text(), text()).prop_map(|(client, user, name)| Member {
            client: client.into(),
            user: user.into(),
            name: name.into(),
        })
    }

    fn data() -> impl Strategy<Value = Box<RawValue>> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            text().prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z]{1,3}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
        .prop_map(|v| to_raw_value(&v).unwrap())
    }

    fn publication() -> impl Strategy<Value = Publication<'static>> {
        (text(), any::<u64>(), text(), text(), member(), data()).prop_map(
            |(channel, offset, epoch, ts, from, data)| Publication {
                channel: channel.into(),
                offset,
                epoch: epoch.into(),
                ts: ts.into(),
                from: Cow::Owned(from),
                data: Cow::Owned(data),
            },
        )
    }

    fn message() -> impl Strategy<Value = ServerMessage<'static>> {
        let member_push = || {
            (text(), member()).prop_map(|(channel, m)| MemberPush {
                channel: channel.into(),
                member: Cow::Owned(m),
            })
        };
        let push = prop_oneof![
            publication().prop_map(Push::Publication),
            member_push().prop_map(Push::Join),
            member_push().prop_map(Push::Leave),
            member_push().prop_map(Push::Typing),
            (text(), text()).prop_map(|(channel, reason)| Push::Kicked(KickedPush {
                channel: channel.into(),
                reason: reason.into(),
            })),
        ];
        let id = proptest::option::of(any::<u64>());
        prop_oneof![
            (id.clone(), data()).prop_map(|(id, result)| ServerMessage::Reply {
                id,
                result: Cow::Owned(result),
            }),
            (id, 0..ErrorCode::ALL.len(), text()).prop_map(|(id, code, message)| {
                ServerMessage::Error {
                    id,
                    error: HubError::new(ErrorCode::ALL[code], message),
                }
            }),
            push.prop_map(ServerMessage::Push),
        ]
    }

    proptest! {
        #[test]
        fn every_message_the_server_encodes_parses_back_the_same(message in message()) {
            let bytes = message.encode();
            let text = std::str::from_utf8(&bytes).unwrap();
            let back = ServerMessage::parse(text).unwrap();
            prop_assert_eq!(&back, &message);
            prop_assert_eq!(back.into_owned(), message);
        }

        #[test]
        fn pushes_carry_their_kind_first(message in message()) {
            let bytes = message.encode();
            let head = format!("{{\"push\":\"{}\"", match &message {
                ServerMessage::Push(p) => p.kind().name(),
                _ => return Ok(()),
            });
            prop_assert!(bytes.starts_with(head.as_bytes()), "{}", String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn unknown_pushes_and_strangers_are_told_apart() {
        assert!(matches!(
            ServerMessage::parse(r#"{"push":"confetti","channel":"x"}"#),
            Err(ParseError::UnknownPush(kind)) if kind == "confetti"
        ));
        assert!(matches!(
            ServerMessage::parse(r#"{"id":1}"#),
            Err(ParseError::Unrecognised)
        ));
        assert!(matches!(
            ServerMessage::parse("[1]"),
            Err(ParseError::Json(_))
        ));
        assert!(matches!(
            ServerMessage::parse(r#"{"push":"join","channel":"x"}"#),
            Err(ParseError::Json(e)) if e.to_string().contains("member")
        ));
        let error =
            ServerMessage::parse(r#"{"id":null,"error":{"code":"bad_request","message":"no"}}"#);
        assert_eq!(
            error.unwrap(),
            ServerMessage::Error {
                id: None,
                error: HubError::new(ErrorCode::BadRequest, "no")
            }
        );
    }
}
