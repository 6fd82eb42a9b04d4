//! A publication: one message in a channel's history, with its offset,
//! epoch, time and sender, as the server stores it; [`duplex_hub::Publication`]
//! is how it is sent.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use duplex_hub::{Member, Push, rfc3339_millis};
use serde_json::value::RawValue;

use crate::store::Position;

/// One stored message.
#[derive(Debug, Clone)]
pub struct Publication {
    /// The channel.
    pub channel: Arc<str>,
    /// Its position in the channel: 1, 2, 3...
    pub offset: u64,
    /// The channel's epoch.
    pub epoch: Arc<str>,
    /// Acceptance time, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// The publisher.
    pub from: Member,
    /// The payload, kept as the JSON text it arrived as.
    pub data: Box<RawValue>,
}

impl Publication {
    /// The publication as the hub sends it, borrowing from this one.
    pub fn view(&self) -> duplex_hub::Publication<'_> {
        duplex_hub::Publication {
            channel: Cow::Borrowed(&self.channel),
            offset: self.offset,
            epoch: Cow::Borrowed(&self.epoch),
            ts: Cow::Owned(rfc3339_millis(self.ts_ms)),
            from: Cow::Borrowed(&self.from),
            data: Cow::Borrowed(&self.data),
        }
    }

    /// The push sent to subscribers, encoded once for all of them.
    pub fn push_bytes(&self) -> Bytes {
        Push::Publication(self.view()).encode()
    }
}

/// A subscribe or history reply: `publications` of `channel`, which
/// stands at `position`.
pub fn page_of<'a>(
    channel: &'a str,
    position: &'a Position,
    recovered: Option<bool>,
    publications: &'a [Publication],
) -> duplex_hub::Page<'a> {
    duplex_hub::Page {
        channel: Cow::Borrowed(channel),
        epoch: Cow::Borrowed(&position.epoch),
        offset: position.offset,
        recovered,
        publications: publications.iter().map(Publication::view).collect(),
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_json_has_every_field() {
        let p = Publication {
            channel: "news".into(),
            offset: 3,
            epoch: "ep".into(),
            ts_ms: 1_700_000_000_123,
            from: Member {
                client: "c1".into(),
                user: "u".into(),
                name: "n".into(),
            },
            data: RawValue::from_string(r#"{"x":1}"#.into()).unwrap(),
        };
        let v: serde_json::Value = serde_json::from_slice(&p.push_bytes()).unwrap();
        assert_eq!(v["push"], "publication");
        assert_eq!(v["offset"], 3);
        assert_eq!(v["ts"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["from"]["client"], "c1");
        assert_eq!(v["data"]["x"], 1);
    }
}
