//! Serde types of switchboard's wire protocol, version 1 (`PROTOCOL.md`).
//!
//! Shared by the server, the integration tests and the load generator.
#![warn(missing_docs, unreachable_pub)]

use serde::{Deserialize, Serialize};

/// The protocol version announced in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;

/// One entry of `ice_servers`, in the shape of the browser's `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:`, `turn:` and `turns:` URLs.
    pub urls: Vec<String>,
    /// Time-limited TURN username, `"<unix expiry>:<peer id>"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// `base64(HMAC-SHA1(secret, username))`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}
