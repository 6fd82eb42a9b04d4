//! Who a connection is, as the hub shows it to others.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Who a connection is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The connection's id (`api` for the HTTP API).
    pub client: Arc<str>,
    /// The authenticated identity (token subject), or the nickname.
    pub user: Arc<str>,
    /// The display name.
    pub name: Arc<str>,
}
