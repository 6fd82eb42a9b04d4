//! The JSON control messages between a client of `/files` and the relay
//! (text frames). One type both parses and encodes: each side matches the
//! variants it expects and ignores the rest, so the two cannot drift apart.
//!
//! | from | message | answer |
//! | --- | --- | --- |
//! | sender | [`Create`](RelayMessage::Create) | [`Created`](RelayMessage::Created) |
//! | sender (dropped) | [`Reattach`](RelayMessage::Reattach) | [`Created`](RelayMessage::Created) |
//! | receiver | [`Join`](RelayMessage::Join) | [`Joined`](RelayMessage::Joined); the sender gets [`PeerJoined`](RelayMessage::PeerJoined) |
//! | relay → sender | [`Credit`](RelayMessage::Credit), [`PeerLeft`](RelayMessage::PeerLeft) | |
//! | sender → relay | [`Accept`](RelayMessage::Accept), [`Drop`](RelayMessage::Drop) | |
//! | relay, before an error close | [`Error`](RelayMessage::Error) | |

use serde::{Deserialize, Serialize};

/// A peer's number on the relay: 1, 2, ... per receiver of one transfer;
/// 0 in the header of a receiver's own frames.
pub type Peer = u32;

/// A control message on a `/files` connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RelayMessage {
    /// A sender opens a transfer of `size` bytes. With `nameplate` and
    /// `token`, it recreates one the relay forgot (a restart) under the
    /// code its receivers already have.
    Create {
        /// Total bytes of the files (checked against the relay's maximum).
        size: u64,
        /// The nameplate to recreate, after a relay restart.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nameplate: Option<u32>,
        /// The token the transfer was created with.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// A sender whose connection dropped takes its transfer back.
    Reattach {
        /// The transfer's nameplate.
        nameplate: u32,
        /// The secret from [`Created`](RelayMessage::Created).
        token: String,
    },
    /// A receiver joins the transfer with this nameplate.
    Join {
        /// The number part of the code.
        nameplate: u32,
    },
    /// The relay's answer to a sender: the code's number, the secret to
    /// reattach with, and the flow-control parameters.
    Created {
        /// The number part of the code.
        nameplate: u32,
        /// The secret that lets the sender reattach.
        token: String,
        /// Each receiver's credit window, in bytes of binary frames.
        window: u64,
        /// Largest binary frame, peer number included.
        max_frame: u64,
    },
    /// The relay's answer to a receiver.
    Joined {
        /// The receiver's peer number.
        peer: Peer,
        /// Largest binary frame, peer number included.
        max_frame: u64,
    },
    /// To the sender: a receiver joined (its window is full).
    PeerJoined {
        /// The new receiver.
        peer: Peer,
    },
    /// To the sender: a receiver left.
    PeerLeft {
        /// The receiver that left.
        peer: Peer,
    },
    /// To the sender: `bytes` of frames were written to `peer`, and may be
    /// sent again.
    Credit {
        /// The receiver.
        peer: Peer,
        /// Bytes granted back.
        bytes: u64,
    },
    /// From the sender: `peer` proved the code; it no longer counts as a
    /// failed join when it leaves.
    Accept {
        /// The receiver.
        peer: Peer,
    },
    /// From the sender: close `peer` (4403) with this reason.
    Drop {
        /// The receiver.
        peer: Peer,
        /// Why, for the receiver's user (cut to 100 characters).
        reason: String,
    },
    /// From the relay, before it closes with `code`.
    Error {
        /// The close code that follows (see [`RelayClose`](crate::RelayClose)).
        code: u16,
        /// What went wrong and what to do.
        message: String,
    },
}

impl RelayMessage {
    /// Parses a text frame.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The text frame's contents.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a relay message always serializes")
    }

    /// As a WebSocket text message.
    pub fn to_message(&self) -> duplex::Message {
        duplex::Message::text(self.to_json())
    }
}

impl From<RelayMessage> for duplex::Message {
    fn from(msg: RelayMessage) -> Self {
        msg.to_message()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The exact JSON the browser pages and older clients send and expect.
    #[test]
    fn the_wire_form_is_the_documented_one() {
        let cases = [
            (
                RelayMessage::Create {
                    size: 9,
                    nameplate: None,
                    token: None,
                },
                r#"{"type":"create","size":9}"#,
            ),
            (
                RelayMessage::Create {
                    size: 9,
                    nameplate: Some(7),
                    token: Some("t".into()),
                },
                r#"{"type":"create","size":9,"nameplate":7,"token":"t"}"#,
            ),
            (
                RelayMessage::Reattach {
                    nameplate: 7,
                    token: "t".into(),
                },
                r#"{"type":"reattach","nameplate":7,"token":"t"}"#,
            ),
            (
                RelayMessage::Join { nameplate: 7 },
                r#"{"type":"join","nameplate":7}"#,
            ),
            (
                RelayMessage::Created {
                    nameplate: 7,
                    token: "t".into(),
                    window: 8,
                    max_frame: 2,
                },
                r#"{"type":"created","nameplate":7,"token":"t","window":8,"max_frame":2}"#,
            ),
            (
                RelayMessage::Joined {
                    peer: 3,
                    max_frame: 2,
                },
                r#"{"type":"joined","peer":3,"max_frame":2}"#,
            ),
            (
                RelayMessage::PeerJoined { peer: 3 },
                r#"{"type":"peer_joined","peer":3}"#,
            ),
            (
                RelayMessage::PeerLeft { peer: 3 },
                r#"{"type":"peer_left","peer":3}"#,
            ),
            (
                RelayMessage::Credit { peer: 3, bytes: 10 },
                r#"{"type":"credit","peer":3,"bytes":10}"#,
            ),
            (
                RelayMessage::Accept { peer: 3 },
                r#"{"type":"accept","peer":3}"#,
            ),
            (
                RelayMessage::Drop {
                    peer: 3,
                    reason: "r".into(),
                },
                r#"{"type":"drop","peer":3,"reason":"r"}"#,
            ),
            (
                RelayMessage::Error {
                    code: 4404,
                    message: "m".into(),
                },
                r#"{"type":"error","code":4404,"message":"m"}"#,
            ),
        ];
        for (msg, json) in cases {
            assert_eq!(msg.to_json(), json);
            assert_eq!(RelayMessage::parse(json).unwrap(), msg);
        }
    }

    #[test]
    fn what_is_not_a_relay_message_is_an_error() {
        for bad in [
            "",
            "{}",
            r#"{"type":"join"}"#,
            r#"{"type":"fly","nameplate":1}"#,
            "[1]",
        ] {
            assert!(RelayMessage::parse(bad).is_err(), "{bad}");
        }
        // Fields a later version adds are ignored.
        assert_eq!(
            RelayMessage::parse(r#"{"type":"join","nameplate":1,"v":2}"#).unwrap(),
            RelayMessage::Join { nameplate: 1 }
        );
    }

    fn any_message() -> impl Strategy<Value = RelayMessage> {
        let text = "\\PC{0,20}";
        prop_oneof![
            (
                any::<u64>(),
                any::<Option<u32>>(),
                proptest::option::of(text)
            )
                .prop_map(|(size, nameplate, token)| RelayMessage::Create {
                    size,
                    nameplate,
                    token
                }),
            (any::<u32>(), text)
                .prop_map(|(nameplate, token)| RelayMessage::Reattach { nameplate, token }),
            any::<u32>().prop_map(|nameplate| RelayMessage::Join { nameplate }),
            (any::<u32>(), text, any::<u64>(), any::<u64>()).prop_map(
                |(nameplate, token, window, max_frame)| {
                    RelayMessage::Created {
                        nameplate,
                        token,
                        window,
                        max_frame,
                    }
                }
            ),
            (any::<u32>(), any::<u64>())
                .prop_map(|(peer, max_frame)| RelayMessage::Joined { peer, max_frame }),
            any::<u32>().prop_map(|peer| RelayMessage::PeerJoined { peer }),
            any::<u32>().prop_map(|peer| RelayMessage::PeerLeft { peer }),
            (any::<u32>(), any::<u64>())
                .prop_map(|(peer, bytes)| RelayMessage::Credit { peer, bytes }),
            any::<u32>().prop_map(|peer| RelayMessage::Accept { peer }),
            (any::<u32>(), text).prop_map(|(peer, reason)| RelayMessage::Drop { peer, reason }),
            (any::<u16>(), text).prop_map(|(code, message)| RelayMessage::Error { code, message }),
        ]
    }

    proptest! {
        #[test]
        fn every_message_parses_back_to_itself(msg in any_message()) {
            prop_assert_eq!(RelayMessage::parse(&msg.to_json()).unwrap(), msg);
        }
    }
}
