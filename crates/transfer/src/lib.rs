//! # duplex-transfer: the file-transfer relay protocol, defined once
//!
//! `duplex serve`'s `/files` relay pairs one sender with receivers by a
//! short code and forwards their end-to-end encrypted messages. Every side
//! of it — the relay, `duplex send` / `duplex receive`, `duplex bench
//! transfer`, and the browser pages (through the generated
//! `crates/server/ui/transfer-protocol.js`) — takes its facts from here, so
//! that they cannot disagree:
//!
//! - [`RelayMessage`]: the JSON control messages between a client and the
//!   relay, one type that both parses and encodes;
//! - [`RelayClose`]: the close codes and what each asks of a client;
//! - [`peer_frame`]: the binary frames, a 4-byte peer number then a
//!   payload the relay never reads past its first byte ([`Kind`]);
//! - [`Credit`]: one receiver's flow-control window, counted the same way
//!   by the relay (which refuses an overdraft) and by the sender (which
//!   waits for credit);
//! - [`limits`]: the sizes both ends must agree on;
//! - the end-to-end layer between sender and receiver, which the relay
//!   never opens: [`seal`] (key exchange, AES-256-GCM, nonces),
//!   [`control`] (the messages sealed into a [`channel`]), [`chunk`]
//!   (data frames) and [`digest`] (whole-file verification).
//!
//! The full protocol is in `docs/transfer.md`.
//!
//! ```
//! use duplex_transfer::{Credit, Kind, RelayMessage, peer_frame};
//!
//! // A sender opens a transfer ...
//! let hello = RelayMessage::Create { size: 5, nameplate: None, token: None };
//! assert_eq!(hello.to_json(), r#"{"type":"create","size":5}"#);
//! // ... and every binary frame it sends to a receiver costs credit,
//! // counted alike on both sides of the relay.
//! let credit = Credit::new(64 << 10);
//! let frame = peer_frame::encode(3, Kind::Pake, &[b"spake2 message"]);
//! credit.try_debit(Credit::cost(&frame)).unwrap();
//! assert_eq!(credit.in_flight(), frame.len() as u64);
//! ```
#![warn(missing_docs)]

pub mod channel;
pub mod chunk;
pub mod close;
pub mod control;
pub mod credit;
pub mod digest;
pub mod javascript;
pub mod limits;
pub mod peer_frame;
pub mod relay_message;
pub mod seal;

pub use close::RelayClose;
pub use credit::{Credit, CreditError};
pub use peer_frame::{Kind, PeerFrame};
pub use relay_message::RelayMessage;
