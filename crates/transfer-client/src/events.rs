//! What a send or a receive tells its user as it goes. Each event's serde
//! form is its line of `duplex send --json` / `duplex receive --json`, and
//! [`SendEvent::notice`] / [`ReceiveEvent::notice`] its sentence for people;
//! the `duplex` binary draws the progress events as bars.

use std::sync::Arc;

use serde::Serialize;

/// Where events go: a function called on whichever task or thread the
/// event happens (keep it quick; a chunk's progress is one call).
pub struct Events<E>(Arc<dyn Fn(E) + Send + Sync>);

impl<E> Clone for Events<E> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<E> Events<E> {
    /// Events handed to `f`.
    pub fn new(f: impl Fn(E) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Events dropped (a caller that wants only the outcome).
    pub fn ignore() -> Self {
        Self::new(|_| {})
    }

    pub(crate) fn emit(&self, event: E) {
        (self.0)(event)
    }
}

/// What [`send`](crate::send) reports. Receivers are numbered by the relay
/// (`peer`); files by their place in the manifest (`file`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SendEvent {
    /// The transfer is open: the code to give the receivers.
    Code {
        /// E.g. `7-violet-anchor`.
        code: String,
        /// Regular files announced (folders not counted).
        files: usize,
        /// Bytes announced.
        bytes: u64,
    },
    /// Something among the paths given is not sent.
    Skipped {
        /// Where it is.
        path: String,
        /// Why it is not sent.
        why: String,
    },
    /// The relay connection failed; trying again after `delay_ms`.
    Reconnect {
        /// Why.
        error: String,
        /// The wait before the next attempt.
        delay_ms: u64,
    },
    /// A receiver tried a wrong code (the sender keeps waiting).
    WrongCode {
        /// The receiver.
        peer: u32,
    },
    /// A receiver failed or was let go, and why.
    ReceiverFailed {
        /// The receiver.
        peer: u32,
        /// Why.
        message: String,
    },
    /// `bytes` of `total` are sent to a receiver.
    Progress {
        /// The receiver.
        peer: u32,
        /// Bytes sent (or there before).
        bytes: u64,
        /// Bytes in the transfer.
        total: u64,
    },
    /// A file starts moving to a receiver.
    Sending {
        /// The receiver.
        peer: u32,
        /// The file's path in the manifest.
        path: String,
    },
    /// Everything is sent to a receiver (until it asks for a retry).
    Sent {
        /// The receiver.
        peer: u32,
    },
    /// A receiver asked for a chunk again.
    Retry {
        /// The receiver.
        peer: u32,
        /// The file.
        file: u32,
        /// The chunk.
        chunk: u64,
    },
    /// A receiver has everything, verified.
    Done {
        /// The receiver.
        peer: u32,
    },
}

impl SendEvent {
    /// The sentence for people, if the event deserves one.
    pub fn notice(&self) -> Option<String> {
        Some(match self {
            Self::Code { code, files, bytes } => format!(
                "sending {files} file(s), {bytes} bytes; on the other machine run: duplex receive {code}"
            ),
            Self::Reconnect { error, delay_ms } => format!(
                "{error}; reconnecting in {:?}",
                std::time::Duration::from_millis(*delay_ms)
            ),
            Self::Skipped { path, why } => format!("skipping {path} ({why})"),
            Self::WrongCode { .. } => {
                "a receiver tried a wrong code; still waiting for the right one".into()
            }
            Self::ReceiverFailed { peer, message } => format!("receiver {peer}: {message}"),
            Self::Retry { peer, file, chunk } => {
                format!("receiver {peer} asked again for chunk {chunk} of file {file}")
            }
            Self::Done { peer } => format!("receiver {peer} has everything, verified"),
            Self::Progress { .. } | Self::Sending { .. } | Self::Sent { .. } => return None,
        })
    }
}

/// What [`receive`](crate::receive) reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ReceiveEvent {
    /// The relay connection failed; trying again after `delay_ms`.
    Reconnect {
        /// Why.
        error: String,
        /// The wait before the next attempt.
        delay_ms: u64,
    },
    /// `bytes` of `total` are here.
    Progress {
        /// Bytes here, verified chunk by chunk.
        bytes: u64,
        /// Bytes in the transfer.
        total: u64,
    },
    /// The file being written, and how far.
    Writing {
        /// Its path in the manifest.
        path: String,
        /// Bytes of it here.
        bytes: u64,
        /// Its size.
        size: u64,
    },
    /// A `.part` an earlier run left is resumed.
    Resume {
        /// Its path in the manifest.
        file: String,
        /// From this byte.
        offset: u64,
    },
    /// A chunk failed to verify and is asked for again.
    Retry {
        /// Its path in the manifest.
        file: String,
        /// The chunk.
        chunk: u64,
    },
    /// What was here before belongs to another version of the file: it is
    /// received again from its start.
    Restart {
        /// Its path in the manifest.
        file: String,
    },
    /// A file is verified and in place under its final name.
    File {
        /// Its path in the manifest.
        path: String,
        /// Its size.
        size: u64,
    },
    /// Everything is here, verified and in place.
    Done {
        /// Regular files.
        files: usize,
        /// Bytes.
        bytes: u64,
        /// Something the user should know (the sender may not have heard).
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
}

impl ReceiveEvent {
    /// The sentence for people, if the event deserves one.
    pub fn notice(&self) -> Option<String> {
        Some(match self {
            Self::Reconnect { error, delay_ms } => format!(
                "{error}; reconnecting in {:?}",
                std::time::Duration::from_millis(*delay_ms)
            ),
            Self::Resume { file, offset } => format!("resuming {file} from byte {offset}"),
            Self::Retry { file, chunk } => {
                format!("chunk {chunk} of {file} did not verify; asking for it again")
            }
            Self::Restart { file } => {
                format!("{file}: what was here differs from the sender's file; receiving it again")
            }
            Self::File { .. } => return None,
            Self::Done { files, bytes, note } => format!(
                "received {files} file(s), {bytes} bytes, every hash verified{}",
                note.as_deref()
                    .map(|n| format!(" (the sender may not know: {n})"))
                    .unwrap_or_default()
            ),
            Self::Progress { .. } | Self::Writing { .. } => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_is_one_json_line_named_by_its_event_field() {
        let code = SendEvent::Code {
            code: "7-violet-anchor".into(),
            files: 2,
            bytes: 5,
        };
        assert_eq!(
            serde_json::to_string(&code).unwrap(),
            r#"{"event":"code","code":"7-violet-anchor","files":2,"bytes":5}"#
        );
        let done = ReceiveEvent::Done {
            files: 1,
            bytes: 3,
            note: None,
        };
        assert_eq!(
            serde_json::to_string(&done).unwrap(),
            r#"{"event":"done","files":1,"bytes":3}"#
        );
        assert!(done.notice().unwrap().contains("1 file(s), 3 bytes"));
        assert_eq!(
            SendEvent::Progress {
                peer: 1,
                bytes: 1,
                total: 2
            }
            .notice(),
            None
        );
    }
}
