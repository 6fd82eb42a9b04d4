//! Where a channel lives in Redis: its keys, its pub/sub channel, and
//! which of several Redis servers holds it.
//!
//! Every key of a channel sits on one server (the channel's shard), so the
//! publish script touches one server only. Names put the channel last: a
//! channel name has no spaces (`check_channel`), so no two channels share
//! a key.

/// The Redis names of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelKeys {
    /// Hash: `epoch` and the last `offset`.
    pub meta: String,
    /// Stream of publications, entry IDs `<offset>-0`.
    pub history: String,
    /// The pub/sub channel publications and member events are announced
    /// on.
    pub announce: String,
    /// Hash: connection id → `"<node> <presence 0|1>\n<member JSON>"`,
    /// one entry per subscriber on any node.
    pub members: String,
    /// Set of names banned from the channel.
    pub banned: String,
    /// Set of connection ids kicked from the channel in the last hour: a
    /// node that was out of reach when the kick was announced must not
    /// register them again.
    pub kicked: String,
}

const PREFIX: &str = "duplex:";
/// The pub/sub prefix: what follows it is the channel's name.
pub const ANNOUNCE: &str = "duplex:announce:";

impl ChannelKeys {
    /// The names for `channel`.
    pub fn of(channel: &str) -> Self {
        Self {
            meta: format!("{PREFIX}meta:{channel}"),
            history: format!("{PREFIX}history:{channel}"),
            announce: format!("{ANNOUNCE}{channel}"),
            members: format!("{MEMBERS}{channel}"),
            banned: format!("{PREFIX}banned:{channel}"),
            kicked: format!("{PREFIX}kicked:{channel}"),
        }
    }

    /// The channel a pub/sub message came on, if it is one of ours.
    pub fn channel_of_announce(name: &str) -> Option<&str> {
        name.strip_prefix(ANNOUNCE)
    }

    /// The key remembering a publish with this idempotency key.
    pub fn idempotency(channel: &str, key: &str) -> String {
        format!("{PREFIX}idempotency:{channel} {key}")
    }
}

/// The members prefix: what follows it is the channel's name.
pub const MEMBERS: &str = "duplex:members:";
/// The hash holding node-wide values (the generated API key).
pub const META: &str = "duplex:server";
/// Sorted set: node → when its lease ends (ms, Redis's clock).
pub const NODES: &str = "duplex:nodes";
/// The prefix of a node's set of channels it has members in: what
/// follows it is the node's name.
pub const NODE_CHANNELS: &str = "duplex:node-channels:";

/// The set of channels `node` has members in.
pub fn node_channels(node: &str) -> String {
    format!("{NODE_CHANNELS}{node}")
}

/// Which of `shards` servers holds `channel`: a jump consistent hash
/// (Lamping and Veach, 2014) of a stable hash of the name, so adding a
/// server moves only about 1/n of the channels.
pub fn shard_of(channel: &str, shards: usize) -> usize {
    jump(fnv1a(channel.as_bytes()), shards.max(1))
}

/// FNV-1a, 64 bits: stable across builds and platforms, unlike std's
/// hasher, because every node must agree.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn jump(mut key: u64, buckets: usize) -> usize {
    let (mut b, mut j) = (-1i64, 0i64);
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_shard_of_a_name_is_fixed_across_builds() {
        // Nodes of different versions must agree: these are pinned.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(shard_of("news", 1), 0);
    }

    proptest! {
        #[test]
        fn shards_are_in_range_and_growing_moves_a_channel_only_to_the_new_one(
            name in "[a-z0-9:/._@-]{1,40}",
            n in 1usize..16,
        ) {
            let before = shard_of(&name, n);
            prop_assert!(before < n);
            let after = shard_of(&name, n + 1);
            prop_assert!(after == before || after == n, "{name}: {before} -> {after}");
        }

        #[test]
        fn announce_names_give_the_channel_back(name in "[a-zA-Z0-9:/._@-]{1,128}") {
            let keys = ChannelKeys::of(&name);
            prop_assert_eq!(ChannelKeys::channel_of_announce(&keys.announce), Some(name.as_str()));
        }
    }

    #[test]
    fn a_spread_of_channels_is_even() {
        let mut counts = [0usize; 4];
        for i in 0..40_000 {
            counts[shard_of(&format!("room-{i}"), 4)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }
}
