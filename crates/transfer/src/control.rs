//! The end-to-end control messages between a sender and its receivers,
//! sealed in [`Space::Control`](crate::seal::Space::Control) so that the
//! relay never reads them (docs/transfer.md, "Control messages"). The
//! browser pages build the same JSON objects.

use serde::{Deserialize, Serialize};

/// One file or folder of a transfer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// Relative path, `/`-separated, e.g. `photos/2024/a.jpg`.
    pub path: String,
    /// Whether this is a folder (kept even when empty).
    #[serde(default)]
    pub dir: bool,
    /// Size in bytes.
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
}

/// End-to-end control messages between sender and receiver (sealed).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// Proves the key: the first sealed message each way.
    Confirm,
    /// What the sender offers.
    Manifest {
        /// Files and folders.
        entries: Vec<Entry>,
        /// Bytes per chunk.
        chunk_size: u64,
        /// Whether the sender answers `Done` with `Bye` (older ones do
        /// not): a receiver that hears no `Bye` then says `Done` again.
        #[serde(default)]
        bye: bool,
    },
    /// What the receiver already has: bytes per entry.
    Have {
        /// One offset per manifest entry, a multiple of the chunk size (or
        /// the size when complete). Bytes that were here before this
        /// connection are checked against the file's seal.
        offsets: Vec<u64>,
        /// Entries this receiver run already verified through an earlier
        /// connection: the sender sends nothing for them, not even a seal.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        verified: Vec<u32>,
    },
    /// A chunk failed to verify: send again from it.
    Retry {
        /// Entry index.
        file: u32,
        /// Chunk index.
        chunk: u64,
    },
    /// The receiver has every file, verified and in place. It waits for
    /// [`Control::Bye`] (bounded), and says it again after a reconnect, so
    /// that a `Done` lost with a connection (a relay restart) still counts.
    Done {
        /// Which `duplex receive` run this is (random per run), so that a
        /// `Done` said again is counted once. Absent from older peers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        receiver: Option<String>,
    },
    /// The sender counted the receiver's [`Control::Done`]: it may go.
    Bye,
    /// The receiver gives up, and why.
    Fail {
        /// For the sender's user.
        message: String,
    },
    /// A message of a later version, which this one ignores (never sent).
    #[serde(other)]
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_versions_control_message_is_unknown_not_invalid() {
        let parsed: Control = serde_json::from_str(r#"{"type":"resume_hint","at":5}"#).unwrap();
        assert!(matches!(parsed, Control::Unknown));
        let done: Control = serde_json::from_str(r#"{"type":"done"}"#).unwrap();
        assert!(matches!(done, Control::Done { receiver: None }));
        assert!(serde_json::from_str::<Control>(r#"{"type":"retry","file":1}"#).is_err());
    }
}
