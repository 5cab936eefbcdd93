//! A sans-IO TURN server (RFC 8656) with STUN binding (RFC 8489).
//!
//! [`TurnServer`] holds allocations, permissions, channel bindings, quotas
//! and the long-term credential check. It never opens a socket, spawns a
//! task or reads a clock: time comes in as an argument, and what to send
//! comes out as [`Transmit`]s that name the socket they leave from. See
//! [`TurnServer`] for the run loop, and `docs/security.md` for the peer
//! address policy.
//!
//! The wire format is `switchboard-stun`'s.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod allocation;
pub mod auth;
mod challenge;
mod config;
mod lifecycle;
mod metrics;
mod nonce;
mod output;
pub mod policy;
mod quota;
mod refusal;
mod requests;
mod server;

pub use auth::Credentials;
pub use config::ServerConfig;
pub use lifecycle::{AllocationEvent, AllocationId, AllocationIdError, AllocationView, EndReason};
pub use metrics::Metrics;
pub use nonce::{NonceError, NonceSigner};
pub use output::{
    Event, Family, FiveTuple, RelayAddress, RelayRequestId, Source, Transmit, Transport,
};
pub use policy::{Cidr, CidrParseError, PeerPolicy};
pub use refusal::Refusal;
pub use server::TurnServer;
pub use switchboard_stun::{FramingError, stream_frame_len};
