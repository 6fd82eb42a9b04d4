//! The file-transfer relay at `/files`: pairs one sender with receivers by
//! a short code and forwards their (end-to-end encrypted) messages, holding
//! at most a bounded window of bytes per receiver. The wire protocol is
//! `duplex_transfer`'s (and `docs/transfer.md`).
//!
//! [`rooms`] keeps the transfers and the limits; [`relay`] runs one
//! connection. The upgrade itself is [`crate::app`]'s, as for every
//! WebSocket endpoint: the same Origin check, fast path included.

pub mod relay;
pub mod rooms;

pub use rooms::{Limits, Rooms};
