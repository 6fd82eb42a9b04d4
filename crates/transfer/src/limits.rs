//! Sizes the relay and its clients must agree on.

/// Largest frame a receiver may send (acknowledgements, requests); larger
/// ones are refused with [`RelayClose::Malformed`](crate::RelayClose::Malformed).
pub const MAX_RECEIVER_FRAME: usize = 64 << 10;

/// Largest binary frame the relay allows, whatever its window: a sender's
/// chunks are sized to fit.
pub const MAX_FRAME: usize = 2 << 20;

/// Smallest credit window the relay runs with (a smaller setting is raised
/// to it).
pub const MIN_WINDOW: usize = 64 << 10;

/// The largest binary frame for a relay whose window is `window` bytes: a
/// frame must fit in an empty window.
pub const fn max_frame(window: usize) -> usize {
    if window < MAX_FRAME {
        window
    } else {
        MAX_FRAME
    }
}

/// Largest chunk a sender cuts files into.
pub const MAX_CHUNK: usize = 1 << 20;

/// Smallest chunk a sender cuts files into.
pub const MIN_CHUNK: usize = 1024;

/// Room a data frame leaves below the relay's largest frame.
pub const FRAME_SLACK: usize = 64;

/// The chunk size a sender uses with a relay whose largest frame is
/// `max_frame`: a data frame must fit it, with [`FRAME_SLACK`] to spare.
pub const fn chunk_size(max_frame: usize) -> usize {
    let room = max_frame.saturating_sub(crate::peer_frame::CHUNK_OVERHEAD + FRAME_SLACK);
    let size = if room < MAX_CHUNK { room } else { MAX_CHUNK };
    if size < MIN_CHUNK { MIN_CHUNK } else { size }
}
