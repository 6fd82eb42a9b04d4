//! A publication as Redis holds it: one definition of the format, used by
//! the publish script's caller, the pub/sub reader and the history reader.
//!
//! - The **body** is JSON `{"from": member, "data": payload}`, written by
//!   the node that accepts the publish.
//! - The publish script gives the place: the channel's epoch, the offset it
//!   assigned and the time by Redis's clock (so every node agrees). It
//!   stores the body in the history stream as entry `<offset>-0` with fields
//!   `t` (the time) and `p` (the body), and announces
//!   `"<epoch> <offset> <ms>\n<body>"` on the channel's pub/sub channel.
//! - **Member events** share that pub/sub channel, so they keep their
//!   order with the publications: `"!join\n<member>"`, `"!leave\n<member>"`,
//!   `"!typing\n<member>"` (member JSON) and `"!kick\n<0|1> <name>"` (1: a
//!   ban). The member scripts in `lua/` write all but `typing`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::publication::Publication;
use duplex_hub::{Member, MemberEvent};

/// Where the publish script put a publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The channel's epoch.
    pub epoch: Arc<str>,
    /// The offset assigned.
    pub offset: u64,
    /// Acceptance time by Redis's clock, ms since the Unix epoch.
    pub ts_ms: i64,
}

impl Place {
    /// Parses `"<epoch> <offset> <ms>"`, as the script writes it.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(' ');
        let epoch = parts.next().filter(|e| !e.is_empty())?;
        let offset = parts.next()?.parse().ok()?;
        let ts_ms = parts.next()?.parse().ok()?;
        parts.next().is_none().then(|| Self {
            epoch: epoch.into(),
            offset,
            ts_ms,
        })
    }
}

#[derive(Serialize)]
struct BodyOut<'a> {
    from: &'a Member,
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct BodyIn {
    from: Member,
    data: Box<RawValue>,
}

/// The body stored and announced for a publication.
pub fn body(from: &Member, data: &RawValue) -> String {
    serde_json::to_string(&BodyOut { from, data }).expect("members and raw JSON serialise")
}

/// The publication a body describes, once placed.
pub fn publication(channel: &Arc<str>, place: &Place, body: &str) -> Option<Publication> {
    let BodyIn { from, data } = serde_json::from_str(body).ok()?;
    Some(Publication {
        channel: channel.clone(),
        offset: place.offset,
        epoch: place.epoch.clone(),
        ts_ms: place.ts_ms,
        from,
        data,
    })
}

/// What a node hears on a channel's pub/sub channel.
#[derive(Debug)]
pub enum Announcement {
    /// A new publication.
    Publication(Publication),
    /// A member joined, left or is typing .
    Member(MemberEvent, Member),
    /// Every connection with this name is removed (and the name banned).
    Kick {
        /// The name.
        name: String,
        /// Whether it is banned too.
        ban: bool,
    },
}

/// Parses an announcement (see the module documentation).
pub fn announcement(channel: &Arc<str>, payload: &str) -> Option<Announcement> {
    let (head, body) = payload.split_once('\n')?;
    let event = |kind| {
        serde_json::from_str(body)
            .ok()
            .map(|m| Announcement::Member(kind, m))
    };
    match head {
        "!join" => event(MemberEvent::Join),
        "!leave" => event(MemberEvent::Leave),
        "!typing" => event(MemberEvent::Typing),
        "!kick" => {
            let (ban, name) = body.split_once(' ')?;
            Some(Announcement::Kick {
                name: name.to_owned(),
                ban: ban == "1",
            })
        }
        _ => publication(channel, &Place::parse(head)?, body).map(Announcement::Publication),
    }
}

/// The announcement that `member` is typing.
pub fn typing(member: &Member) -> String {
    format!(
        "!typing\n{}",
        serde_json::to_string(member).expect("members serialise")
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn member(name: &str) -> Member {
        Member {
            client: "n1-c7".into(),
            user: "u".into(),
            name: name.into(),
        }
    }

    proptest! {
        #[test]
        fn an_announcement_gives_back_what_was_published(
            epoch in "[a-z0-9]{1,12}",
            offset in 1u64..u64::MAX >> 11,
            ts in 0i64..i64::MAX >> 11,
            name in "\\PC{1,20}",
            text in "\\PC{0,50}",
        ) {
            let data = serde_json::value::to_raw_value(&serde_json::json!({"text": text})).unwrap();
            let channel: Arc<str> = "room".into();
            let payload = format!("{epoch} {offset} {ts}\n{}", body(&member(&name), &data));
            let Some(Announcement::Publication(p)) = announcement(&channel, &payload) else {
                panic!("not a publication: {payload}");
            };
            prop_assert_eq!(&*p.epoch, epoch.as_str());
            prop_assert_eq!(p.offset, offset);
            prop_assert_eq!(p.ts_ms, ts);
            prop_assert_eq!(&*p.from.name, name.as_str());
            prop_assert_eq!(p.data.get(), data.get());
        }

        #[test]
        fn garbage_is_refused_not_panicked_on(payload in "\\PC{0,80}") {
            let _ = announcement(&"c".into(), &payload);
        }
    }

    proptest! {
        #[test]
        fn member_events_give_back_the_member(name in "\\PC{1,20}", kind in 0usize..3) {
            let m = member(&name);
            let json = serde_json::to_string(&m).unwrap();
            let head = ["!join", "!leave", "!typing"][kind];
            let payload = if kind == 2 { typing(&m) } else { format!("{head}\n{json}") };
            let Some(Announcement::Member(got, back)) = announcement(&"c".into(), &payload) else {
                panic!("not a member event: {payload}");
            };
            prop_assert_eq!(got, [MemberEvent::Join, MemberEvent::Leave, MemberEvent::Typing][kind]);
            prop_assert_eq!(back, m);
        }

        #[test]
        fn kicks_keep_names_with_spaces(name in "\\PC{1,20}", ban: bool) {
            let payload = format!("!kick\n{} {name}", u8::from(ban));
            let Some(Announcement::Kick { name: got, ban: banned }) = announcement(&"c".into(), &payload) else {
                panic!("not a kick: {payload}");
            };
            prop_assert_eq!(got, name);
            prop_assert_eq!(banned, ban);
        }
    }

    #[test]
    fn a_place_needs_all_three_parts() {
        assert!(Place::parse("ep 3 1700").is_some());
        for bad in ["", "ep", "ep 3", "ep x 1", " 3 1", "ep 3 1 extra"] {
            assert!(Place::parse(bad).is_none(), "{bad:?}");
        }
    }
}
