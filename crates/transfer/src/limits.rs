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
