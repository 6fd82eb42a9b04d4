//! What clients send: one command per text frame, with the id its reply
//! will carry.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{ErrorCode, HubError};

/// Publications a `history` command returns when it gives no `limit`.
pub const HISTORY_DEFAULT_LIMIT: usize = 50;
/// The most publications one `history` command returns.
pub const HISTORY_MAX_LIMIT: usize = 1000;
/// The longest channel name, in bytes (all ASCII).
pub const CHANNEL_MAX_LEN: usize = 128;
/// The characters a channel name may hold besides ASCII letters and digits.
pub const CHANNEL_PUNCTUATION: &str = "-_.:@/";
/// The longest nickname, in characters.
pub const NAME_MAX_CHARS: usize = 32;
/// The shortest `session` secret of `connect`, in characters.
pub const SESSION_MIN_LEN: usize = 16;
/// The longest `session` secret of `connect`, in characters (letters,
/// digits, `-` and `_`).
pub const SESSION_MAX_LEN: usize = 128;
/// The `publish` commands one connection may have waiting for the store:
/// they are stored in the order sent and answered in that order; past
/// this many the server reads nothing more from the connection until the
/// oldest is answered.
pub const PUBLISHES_IN_FLIGHT: usize = 64;

/// A recovery position: the last publication a client saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Since {
    /// The channel's epoch the offset belongs to.
    pub epoch: String,
    /// The highest offset seen.
    pub offset: u64,
}

/// A client's command, with the id its reply will carry.
///
/// ```
/// use duplex_hub::{Command, Request};
///
/// let request = Request::new(7, Command::Presence { channel: "news".into() });
/// assert_eq!(request.encode(), r#"{"id":7,"cmd":"presence","channel":"news"}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Echoed in the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// What to do.
    #[serde(flatten)]
    pub command: Command,
}

impl Request {
    /// `command`, whose reply will carry `id`.
    pub fn new(id: u64, command: Command) -> Self {
        Self {
            id: Some(id),
            command,
        }
    }

    /// The JSON text sent on the wire.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("commands always serialise")
    }
}

/// The commands of docs/protocol.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Set identity and nickname.
    Connect {
        /// A JWT.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// The nickname.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// A secret the client keeps across reconnects (anonymous only): the
        /// same session is the same user, so a reconnect is not refused its
        /// own nickname while the server has not yet noticed the old
        /// connection died.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
    },
    /// Start receiving a channel, optionally recovering from a position.
    Subscribe {
        /// The channel.
        channel: String,
        /// Where the client left off.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<Since>,
        /// Whether to appear in the channel's presence (default true).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        presence: Option<bool>,
    },
    /// Stop receiving a channel.
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// Publish to a channel.
    Publish {
        /// The channel.
        channel: String,
        /// Any JSON value. (A `RawValue` cannot pass through serde's
        /// buffering of internally tagged enums, so it is parsed once.)
        data: serde_json::Value,
    },
    /// Page through a channel's history.
    History {
        /// The channel.
        channel: String,
        /// How many (default 50, at most 1000).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
        /// Only offsets below this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
        /// Only offsets above this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
    },
    /// Who is in a channel.
    Presence {
        /// The channel.
        channel: String,
    },
    /// Tell the others in a channel this client is typing.
    Typing {
        /// The channel.
        channel: String,
    },
    /// Remove (and optionally ban) a nickname from a channel; admins only.
    Kick {
        /// The channel.
        channel: String,
        /// The nickname.
        name: String,
        /// Also refuse it from now on.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ban: bool,
    },
    /// Liveness check at the application level.
    Ping,
}

impl Command {
    /// The command's `cmd` on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Connect { .. } => "connect",
            Command::Subscribe { .. } => "subscribe",
            Command::Unsubscribe { .. } => "unsubscribe",
            Command::Publish { .. } => "publish",
            Command::History { .. } => "history",
            Command::Presence { .. } => "presence",
            Command::Typing { .. } => "typing",
            Command::Kick { .. } => "kick",
            Command::Ping => "ping",
        }
    }
}

/// Parses one command; a parse failure becomes a `bad_request` with serde's
/// explanation and, when the JSON had one, the command's id.
pub fn parse_request(text: &str) -> Result<Request, (Option<u64>, HubError)> {
    serde_json::from_str::<Request>(text).map_err(|e| {
        let id = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("id")?.as_u64());
        (id, HubError::new(ErrorCode::BadRequest, e.to_string()))
    })
}

/// Encodes publication data, refusing more than `max` bytes of JSON.
pub fn encode_data(data: &serde_json::Value, max: usize) -> Result<Box<RawValue>, HubError> {
    let text = serde_json::to_string(data)
        .map_err(|e| HubError::new(ErrorCode::BadRequest, e.to_string()))?;
    if text.len() > max {
        return Err(HubError::new(
            ErrorCode::TooLarge,
            format!("data is {} bytes; the limit is {max}", text.len()),
        ));
    }
    RawValue::from_string(text).map_err(|e| HubError::new(ErrorCode::BadRequest, e.to_string()))
}

/// Checks a channel name: 1–[`CHANNEL_MAX_LEN`] characters of letters,
/// digits and [`CHANNEL_PUNCTUATION`].
pub fn check_channel(name: &str) -> Result<(), HubError> {
    let ok = !name.is_empty()
        && name.len() <= CHANNEL_MAX_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || CHANNEL_PUNCTUATION.as_bytes().contains(&b));
    if ok {
        Ok(())
    } else {
        Err(HubError::new(
            ErrorCode::BadRequest,
            format!(
                "invalid channel name {name:?}: use 1-{CHANNEL_MAX_LEN} letters, digits or {CHANNEL_PUNCTUATION}"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            ".{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn command() -> impl Strategy<Value = Command> {
        let text = ".{0,16}";
        let opt_text = proptest::option::of(text);
        let since = proptest::option::of(
            (text, any::<u64>()).prop_map(|(epoch, offset)| Since { epoch, offset }),
        );
        prop_oneof![
            (opt_text.clone(), opt_text.clone(), opt_text).prop_map(|(token, name, session)| {
                Command::Connect {
                    token,
                    name,
                    session,
                }
            }),
            (text, since, proptest::option::of(any::<bool>())).prop_map(
                |(channel, since, presence)| Command::Subscribe {
                    channel,
                    since,
                    presence
                }
            ),
            text.prop_map(|channel| Command::Unsubscribe { channel }),
            (text, json_value()).prop_map(|(channel, data)| Command::Publish { channel, data }),
            (
                text,
                proptest::option::of(any::<usize>()),
                proptest::option::of(any::<u64>()),
                proptest::option::of(any::<u64>())
            )
                .prop_map(|(channel, limit, before, after)| Command::History {
                    channel,
                    limit,
                    before,
                    after
                }),
            text.prop_map(|channel| Command::Presence { channel }),
            text.prop_map(|channel| Command::Typing { channel }),
            (text, text, any::<bool>()).prop_map(|(channel, name, ban)| Command::Kick {
                channel,
                name,
                ban
            }),
            Just(Command::Ping),
        ]
    }

    proptest! {
        /// What a client encodes, the server parses back to the same
        /// command: the one definition serves both ends.
        #[test]
        fn every_command_a_client_encodes_parses_back_the_same(id in proptest::option::of(any::<u64>()), command in command()) {
            let request = Request { id, command };
            let parsed = parse_request(&request.encode()).map_err(|(_, e)| TestCaseError::fail(e.message))?;
            prop_assert_eq!(parsed, request);
        }
    }

    #[test]
    fn parses_commands_with_ids() {
        let r = parse_request(r#"{"id": 3, "cmd": "subscribe", "channel": "news", "since": {"epoch": "e", "offset": 7}}"#).unwrap();
        assert_eq!(r.id, Some(3));
        match r.command {
            Command::Subscribe { channel, since, .. } => {
                assert_eq!(channel, "news");
                assert_eq!(
                    since,
                    Some(Since {
                        epoch: "e".into(),
                        offset: 7
                    })
                );
            }
            other => panic!("{other:?}"),
        }
        let r =
            parse_request(r#"{"cmd": "publish", "channel": "c", "data": {"a": [1, 2]}}"#).unwrap();
        assert!(matches!(r.command, Command::Publish { ref data, .. } if data["a"][1] == 2));
    }

    #[test]
    fn bad_requests_keep_their_id_and_say_why() {
        for (text, needle) in [
            (r#"{"id": 9, "cmd": "fly"}"#, "unknown variant"),
            (r#"{"id": 9, "cmd": "subscribe"}"#, "channel"),
            (
                r#"{"id": 9, "cmd": "history", "channel": "c", "limit": "ten"}"#,
                "invalid type",
            ),
        ] {
            let (id, err) = parse_request(text).unwrap_err();
            assert_eq!(id, Some(9));
            assert_eq!(err.code, ErrorCode::BadRequest);
            assert!(err.message.contains(needle), "{}", err.message);
        }
        assert_eq!(parse_request("not json").unwrap_err().0, None);
    }

    #[test]
    fn channel_names() {
        assert!(check_channel("chat:room-1/a@b.c_d").is_ok());
        for bad in ["", "a b", "é", &"x".repeat(129)] {
            assert!(check_channel(bad).is_err(), "{bad:?}");
        }
    }
}
