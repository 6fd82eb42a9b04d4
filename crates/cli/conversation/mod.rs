//! What `duplex connect` and `duplex listen` share: input sources, event
//! sinks and printers, the conversation loop on one socket, signals, and
//! the parsers for option values.

pub mod event;
pub mod input;
pub mod output;
pub mod session;
pub mod signal;
pub mod units;
