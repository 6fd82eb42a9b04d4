//! The `result` of each command's reply (docs/protocol.md, the table of
//! commands). `connect` answers with the connection's [`Member`](crate::Member).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::{Member, Publication};

/// The result of `subscribe` and `history`: a page of publications and
/// where the channel stands.
///
/// ```
/// use duplex_hub::Page;
///
/// let page: Page = serde_json::from_str(
///     r#"{"channel":"news","epoch":"e1","offset":7,"recovered":true,"publications":[]}"#,
/// ).unwrap();
/// assert_eq!((&*page.epoch, page.offset, page.recovered), ("e1", 7, Some(true)));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<'a> {
    /// The channel.
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    /// The channel's epoch.
    #[serde(borrow)]
    pub epoch: Cow<'a, str>,
    /// The channel's highest offset.
    pub offset: u64,
    /// `subscribe` with `since` only: whether `publications` holds exactly
    /// every publication after `since`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// The publications, oldest first.
    #[serde(borrow)]
    pub publications: Vec<Publication<'a>>,
}

/// The result of `publish` (and of `POST /api/publish`): where the
/// publication was stored.
///
/// ```
/// use duplex_hub::Published;
///
/// let p = Published { channel: "news".into(), offset: 8, epoch: "e1".into(), ts: "2026-11-21T20:31:07.123Z".into() };
/// let text = serde_json::to_string(&p).unwrap();
/// assert_eq!(serde_json::from_str::<Published>(&text).unwrap(), p);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published<'a> {
    /// The channel.
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    /// The offset it was given.
    pub offset: u64,
    /// The channel's epoch.
    #[serde(borrow)]
    pub epoch: Cow<'a, str>,
    /// The time of acceptance (see [`Publication::ts`]).
    #[serde(borrow)]
    pub ts: Cow<'a, str>,
}

/// The result of `presence`: who is in a channel.
///
/// ```
/// let m: duplex_hub::Members = serde_json::from_str(r#"{"channel":"news","members":[]}"#).unwrap();
/// assert!(m.members.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members<'a> {
    /// The channel.
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    /// Its members with presence.
    pub members: Vec<Member>,
}

/// The result of `kick`.
///
/// ```
/// let k: duplex_hub::Kicked = serde_json::from_str(r#"{"kicked":2}"#).unwrap();
/// assert_eq!(k.kicked, 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kicked {
    /// How many connections were removed.
    pub kicked: usize,
}

/// The result of `unsubscribe`, `typing` and `ping`: `{}`.
///
/// ```
/// assert_eq!(serde_json::to_string(&duplex_hub::Done {}).unwrap(), "{}");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {}
