//! The file-transfer relay at `/files`: pairs one sender with receivers by
//! a short code and forwards their (end-to-end encrypted) messages, holding
//! at most a bounded window of bytes per receiver. The wire protocol is
//! `duplex_transfer`'s (and `docs/transfer.md`).
//!
//! [`rooms`] keeps the transfers and the limits; [`relay`] runs one
//! connection. Nodes sharing transfers through Redis find which node holds
//! one in the [`directory`], and forward connections to it through a
//! [`bridge`]. The upgrade itself is [`crate::app`]'s, as for every
//! WebSocket endpoint: the same Origin check, fast path included.

pub mod bridge;
pub mod directory;
pub mod relay;
pub mod rooms;

pub use directory::Directory;
pub use rooms::{Limits, Rooms};
