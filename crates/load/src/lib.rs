//! `switchboard-load`: the load generator behind switchboard's signaling
//! benchmarks.
//!
//! It speaks three dialects ([`Protocol`]): switchboard's native JSON
//! protocol, Socket.IO v5 (websocket transport, the classic events), and the
//! bare relay used as the floor. Two kinds of run:
//!
//! - [`run_traffic`]: peers join rooms; once all have joined, senders flood
//!   their rooms with fixed-size messages under a bounded window of
//!   undelivered messages, and receivers time each delivery. The server's
//!   CPU time and RSS are read from `/proc` around the sending window.
//! - [`run_idle`]: many connections that only hold on, with the server's RSS
//!   read as they pile up.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchboard_load::LoadError> {
//! use std::time::Duration;
//! use switchboard_load::{Protocol, Target, TrafficConfig, run_traffic};
//! let report = run_traffic(&TrafficConfig {
//!     target: Target {
//!         protocol: Protocol::Native,
//!         url: "ws://127.0.0.1:8080".into(),
//!         server_pid: None,
//!         source_ips: 1,
//!         connect_concurrency: 64,
//!         timeout: Duration::from_secs(60),
//!     },
//!     rooms: 100,
//!     peers_per_room: 2,
//!     senders_per_room: 1,
//!     data_size: 300,
//!     window: 16,
//!     duration: Duration::from_secs(10),
//!     count: None,
//!     rate: None,
//!     with_id: true,
//!     room_prefix: "bench-".into(),
//!     drain_timeout: Duration::from_secs(2),
//!     url2: None,
//! })
//! .await?;
//! println!("{}", report.summary());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod error;
mod idle;
mod media;
mod peer;
pub mod procstat;
mod target;
mod traffic;
pub mod wire;

pub use error::LoadError;
pub use idle::{IdleConfig, IdleReport, IdleStep, run_idle};
pub use media::{MediaConfig, MediaReport, MediaTarget, run_media};
pub use target::Target;
pub use traffic::{Latency, ProcessUse, TrafficConfig, TrafficReport, run_traffic};
pub use wire::Protocol;
