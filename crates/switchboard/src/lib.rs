//! switchboard: WebRTC signaling and STUN/TURN in one binary.
//!
//! The protocol lives in the sans-IO crates (`switchboard-signal`,
//! `switchboard-stun`, `switchboard-turn`); this crate is the thin shell
//! that owns tokio, sockets, TLS, config and timers.

pub mod admin;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod cors;
pub mod hub;
pub mod ice;
pub mod media;
pub mod metrics_help;
pub mod one_port;
pub mod process;
pub mod read_ahead;
pub mod reload;
pub mod router;
pub mod serve;
pub mod socketio;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod turn;
pub mod web;
pub mod webhooks;
pub mod ws;
