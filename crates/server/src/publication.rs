//! A publication: one message in a channel's history, with its offset,
//! epoch, time and sender, and its JSON encoding as a push.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::protocol::{Member, to_bytes};

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

/// A publication as JSON, with or without the `push` tag.
#[derive(Serialize)]
pub struct PublicationView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    push: Option<&'static str>,
    channel: &'a str,
    offset: u64,
    epoch: &'a str,
    ts: String,
    from: &'a Member,
    data: &'a RawValue,
}

impl Publication {
    /// The view used inside replies (`publications: [...]`).
    pub fn view(&self) -> PublicationView<'_> {
        PublicationView {
            push: None,
            channel: &self.channel,
            offset: self.offset,
            epoch: &self.epoch,
            ts: rfc3339_millis(self.ts_ms),
            from: &self.from,
            data: &self.data,
        }
    }

    /// The push sent to subscribers, encoded once for all of them.
    pub fn push_bytes(&self) -> Bytes {
        let mut view = self.view();
        view.push = Some(crate::protocol::PushKind::Publication.name());
        to_bytes(&view)
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 in UTC with milliseconds: `2026-11-21T20:31:07.123Z`.
pub fn rfc3339_millis(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
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
