//! What the request handlers share, cut by who needs what: the router holds
//! an [`AppState`], and each handler extracts the one part it uses (axum's
//! `FromRef`), so that the signaling faces, the HTTP API and the web assets
//! never see each other's state.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::FromRef;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::cluster::Backplane;
use crate::hub::Hub;
use crate::ice::IceServers;
use crate::turn::TurnService;

/// Limits a connection task takes when it opens.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Bounded outbound queue, in frames.
    pub outbound_queue_frames: usize,
    /// Bounded outbound queue, in bytes of frame bodies.
    pub outbound_queue_bytes: usize,
    /// The WebSocket layer's own cap. Frames between `limits.max_message_bytes`
    /// and this get `too_large` from the core and the connection stays open;
    /// beyond it the transport closes the connection (1009), since reading
    /// an unbounded frame would cost unbounded memory.
    pub transport_max_frame: usize,
    /// `limits.socketio_connect_timeout_secs`.
    pub socketio_connect_timeout: Duration,
    /// `limits.socketio_pending_per_ip`.
    pub socketio_pending_per_ip: usize,
    /// Server ping interval.
    pub heartbeat_interval: Duration,
    /// Silence after which a connection counts as dropped.
    pub heartbeat_timeout: Duration,
}

/// [`ConnLimits`] that a reload replaces. A connection reads them once,
/// when it opens, and keeps them for its life: new connections take new
/// values, open ones are not disturbed.
#[derive(Debug, Clone)]
pub struct LiveLimits(Arc<RwLock<ConnLimits>>);

impl LiveLimits {
    /// Limits in force from the start.
    pub fn new(limits: ConnLimits) -> Self {
        Self(Arc::new(RwLock::new(limits)))
    }

    /// The limits in force now.
    pub fn get(&self) -> ConnLimits {
        *self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts `limits` in force for the connections to come.
    pub fn set(&self, limits: ConnLimits) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = limits;
    }
}

/// Where the process is in its life, as every connection sees it.
#[derive(Clone, Debug)]
pub struct Lifecycle {
    /// Cancelled on shutdown.
    pub shutdown: CancellationToken,
    /// Cancelled by the admin API's drain: no new signaling sessions, the
    /// open ones are served on (PROTOCOL.md §8).
    pub draining: CancellationToken,
    /// Cancelled once Socket.IO clients had their DISCONNECT (bounded): the
    /// HTTP listeners serve until then, for polling clients to fetch it.
    pub socketio_drained: CancellationToken,
    /// Every connection holds a token of it, so that shutdown can wait for
    /// their goodbyes (the HTTP server does not track upgraded connections).
    pub tasks: TaskTracker,
    /// The close code of a graceful stop: 1001 for a node alone, 1012
    /// (service restart) in a cluster, whose clients resume on another
    /// node (PROTOCOL.md §6).
    pub stop_code: u16,
}

impl Lifecycle {
    /// A node that has not started stopping.
    pub fn new(stop_code: u16) -> Self {
        Self {
            shutdown: CancellationToken::new(),
            draining: CancellationToken::new(),
            socketio_drained: CancellationToken::new(),
            tasks: TaskTracker::new(),
            stop_code,
        }
    }
}

/// What the signaling faces (`/ws`, `/socket.io/`) share.
#[derive(Clone)]
pub struct Signaling {
    /// The signaling core's driver.
    pub hub: Arc<Hub>,
    /// Token and origin checks.
    pub auth: Arc<Authenticator>,
    /// Mints the `ice_servers` of `welcome`.
    pub ice: Arc<IceServers>,
    /// Caps the number of signaling connections.
    pub connections: Arc<Semaphore>,
    /// Per-connection limits, read when a connection opens.
    pub limits: LiveLimits,
    /// Shutdown and the tasks it waits for.
    pub life: Lifecycle,
}

/// What `GET /api/ice-servers` needs.
#[derive(Clone)]
pub struct IceApi {
    /// Checks the bearer token.
    pub auth: Arc<Authenticator>,
    /// Mints the answer.
    pub ice: Arc<IceServers>,
}

/// What `/healthz` and `/readyz` look at.
#[derive(Clone)]
pub struct Health {
    /// Cancelled on shutdown.
    pub shutdown: CancellationToken,
    /// Cancelled by a drain.
    pub draining: CancellationToken,
    /// The link to the cluster, when `cluster.redis_url` is set.
    pub cluster: Option<Arc<Backplane>>,
}

/// Where `/metrics` reads its gauges.
#[derive(Clone)]
pub struct MetricsSources {
    /// Sessions, rooms and the core's counters.
    pub hub: Arc<Hub>,
    /// TURN's counters.
    pub turn: Option<TurnService>,
    /// The SFU's counters, when it runs.
    pub media: Option<crate::media::MediaLink>,
}

/// The router's state: every part above, each extracted on its own.
#[derive(Clone)]
pub struct AppState {
    /// For the signaling faces.
    pub signaling: Signaling,
    /// For `/api/ice-servers`.
    pub ice_api: IceApi,
    /// For the probes.
    pub health: Health,
    /// For `/metrics`.
    pub metrics: MetricsSources,
}

macro_rules! substate {
    ($part:ty, $field:ident) => {
        impl FromRef<AppState> for $part {
            fn from_ref(app: &AppState) -> Self {
                app.$field.clone()
            }
        }
    };
}

substate!(Signaling, signaling);
substate!(IceApi, ice_api);
substate!(Health, health);
substate!(MetricsSources, metrics);
