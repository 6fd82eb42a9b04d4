//! A publication as the hub sends it: the same shape in a `publication`
//! push and in the `publications` of a subscribe or history reply.

use std::borrow::Cow;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::Member;

/// One publication of a channel (docs/protocol.md, "Publications").
///
/// Its fields borrow where they can: the server encodes a publication from
/// its own store without copying, and a client parses one without
/// allocating for the names ([`Publication::into_owned`] keeps it longer).
///
/// ```
/// use std::borrow::Cow;
/// use duplex_hub::{Member, Publication};
/// use serde_json::value::RawValue;
///
/// let from = Member { client: "c1".into(), user: "ann".into(), name: "ann".into() };
/// let data = RawValue::from_string(r#"{"text":"hi"}"#.into()).unwrap();
/// let p = Publication {
///     channel: "news".into(),
///     offset: 3,
///     epoch: "e1".into(),
///     ts: duplex_hub::rfc3339_millis(1_700_000_000_123).into(),
///     from: Cow::Borrowed(&from),
///     data: Cow::Borrowed(&data),
/// };
/// let text = serde_json::to_string(&p).unwrap();
/// let back: Publication = serde_json::from_str(&text).unwrap();
/// assert_eq!(back, p);
/// assert_eq!(back.ts, "2023-11-14T22:13:20.123Z");
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Publication<'a> {
    /// The channel.
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    /// Its position in the channel: 1, 2, 3...; only grows.
    pub offset: u64,
    /// The unbroken history the offset belongs to.
    #[serde(borrow)]
    pub epoch: Cow<'a, str>,
    /// The server's time of acceptance: RFC 3339, UTC, milliseconds
    /// ([`rfc3339_millis`]).
    #[serde(borrow)]
    pub ts: Cow<'a, str>,
    /// The publisher.
    pub from: Cow<'a, Member>,
    /// The payload, any JSON value, as the publisher sent it.
    pub data: Cow<'a, RawValue>,
}

impl Publication<'_> {
    /// The same publication, owning its fields.
    pub fn into_owned(self) -> Publication<'static> {
        Publication {
            channel: Cow::Owned(self.channel.into_owned()),
            offset: self.offset,
            epoch: Cow::Owned(self.epoch.into_owned()),
            ts: Cow::Owned(self.ts.into_owned()),
            from: Cow::Owned(self.from.into_owned()),
            data: Cow::Owned(self.data.into_owned()),
        }
    }
}

/// Equal when every field is, the payload compared as JSON text (raw JSON
/// has no equality of its own).
impl PartialEq for Publication<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.channel == other.channel
            && self.offset == other.offset
            && self.epoch == other.epoch
            && self.ts == other.ts
            && self.from == other.from
            && self.data.get() == other.data.get()
    }
}

/// RFC 3339 in UTC with milliseconds, as `ts` is written:
/// `2026-11-21T20:31:07.123Z`, from milliseconds since the Unix epoch.
///
/// ```
/// assert_eq!(duplex_hub::rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
/// ```
pub fn rfc3339_millis(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}
