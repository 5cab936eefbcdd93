//! What operators see and do of TURN: the live allocations, revoking one,
//! and the created/ended events for webhooks and the dashboard.
//!
//! The core is shared behind a std `Mutex` (see `driver.rs`), so asking it
//! is taking the lock. That happens on the blocking pool, under a timeout,
//! so that an admin request never parks a tokio worker behind the relay
//! path and never waits without bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};
pub use switchboard_turn::EndReason;
use switchboard_turn::{AllocationEvent, AllocationId, AllocationView, Transport};
use tokio::sync::broadcast;

use super::TurnService;
use super::driver::Shared;

/// Longest an admin call waits for the core.
pub const ADMIN_WAIT: Duration = Duration::from_secs(2);

/// Allocation events held for each subscriber that lags; a slower one
/// gets `RecvError::Lagged` and misses the oldest.
pub(super) const EVENT_BUFFER: usize = 1024;

/// One live allocation, with wall-clock times. Serializes as the §8 admin
/// API's entry: times are Unix seconds, addresses `"ip:port"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TurnAllocation {
    /// Stable for the allocation's life and never reused by this process.
    pub id: String,
    /// The authenticated TURN username.
    pub username: String,
    /// The client's address as the server sees it.
    pub client: SocketAddr,
    /// `"udp"`, `"tcp"` or `"tls"`: how the client reaches the server.
    pub transport: &'static str,
    /// The relayed address handed to the client.
    pub relayed: SocketAddr,
    /// A second relayed address (the other family of a dual allocation).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub also_relayed: Vec<SocketAddr>,
    /// When the allocation was made.
    #[serde(serialize_with = "unix_secs")]
    pub created: SystemTime,
    /// When it ends unless the client refreshes it.
    #[serde(serialize_with = "unix_secs")]
    pub expires: SystemTime,
    /// Payload bytes relayed from peers to the client.
    pub bytes_in: u64,
    /// Payload bytes relayed from the client to peers.
    pub bytes_out: u64,
    /// Live permissions.
    pub permissions: usize,
    /// Live channel bindings.
    pub channels: usize,
}

/// An allocation made or ended (§8 `allocation_created` and
/// `allocation_ended`), from [`TurnService::allocation_events`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TurnAllocationEvent {
    /// A client's Allocate succeeded.
    Created(TurnAllocation),
    /// An allocation ended.
    Ended {
        /// As it was at the end, with its final byte counts.
        allocation: TurnAllocation,
        /// `expired`, `deleted` (by its client), `closed` (its TCP/TLS
        /// connection) or `revoked`: see [`EndReason::as_str`].
        reason: EndReason,
    },
}

impl TurnAllocationEvent {
    /// The §8 webhook event name.
    pub fn name(&self) -> &'static str {
        match self {
            TurnAllocationEvent::Created(_) => "allocation_created",
            TurnAllocationEvent::Ended { .. } => "allocation_ended",
        }
    }

    /// The allocation it is about.
    pub fn allocation(&self) -> &TurnAllocation {
        match self {
            TurnAllocationEvent::Created(a) | TurnAllocationEvent::Ended { allocation: a, .. } => a,
        }
    }
}

/// Why an admin call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum TurnAdminError {
    /// The core was held longer than [`ADMIN_WAIT`]. The call was not
    /// cancelled: a revoke (or drain) may still take effect once it gets
    /// the core, so asking again is safe.
    #[error("the TURN core did not answer within {0:?}")]
    Busy(Duration),
    /// The blocking task asking the core failed.
    #[error("the TURN core could not be asked: {0}")]
    Failed(#[from] tokio::task::JoinError),
}

impl TurnService {
    /// Every live allocation (TCP and TLS ones included), oldest first.
    /// Empty when TURN is disabled.
    pub async fn allocations(&self) -> Result<Vec<TurnAllocation>, TurnAdminError> {
        let Some(shared) = self.inner.shared.clone() else {
            return Ok(Vec::new());
        };
        let views = ask_core(move || shared.lock().server.allocations()).await?;
        let clock = WallClock::now();
        Ok(views.iter().filter_map(|v| clock.allocation(v)).collect())
    }

    /// Ends the allocation `id` at once: its relay port closes, nothing
    /// more is relayed, the client's next Refresh gets 437, and a TCP or
    /// TLS client's connection is closed after what is already queued for
    /// it. Returns whether there was such an allocation (an id that is not
    /// one, such as junk from a URL, is simply not found).
    pub async fn revoke(&self, id: &str) -> Result<bool, TurnAdminError> {
        let (Some(shared), Ok(id)) = (self.inner.shared.clone(), id.parse::<AllocationId>()) else {
            return Ok(false);
        };
        ask_core(move || revoke_now(&shared, id)).await
    }

    /// Drain (`true`): every new Allocate gets 508 so that clients try
    /// another server, while the allocations already made keep being
    /// refreshed and relayed. `false` takes new ones again.
    pub async fn set_draining(&self, draining: bool) -> Result<(), TurnAdminError> {
        let Some(shared) = self.inner.shared.clone() else {
            return Ok(());
        };
        ask_core(move || shared.lock().server.set_draining(draining)).await
    }

    /// Allocations made and ended from now on. Each receiver holds up to
    /// 1024 events; one that falls further behind gets
    /// `RecvError::Lagged` and loses the oldest, never holding up TURN.
    /// `None` when TURN is disabled.
    pub fn allocation_events(&self) -> Option<broadcast::Receiver<TurnAllocationEvent>> {
        self.inner
            .shared
            .as_ref()
            .map(|s| s.allocation_events.subscribe())
    }
}

/// Runs `ask` (which locks the core) on the blocking pool, within [`ADMIN_WAIT`].
pub(super) async fn ask_core<T: Send + 'static>(
    ask: impl FnOnce() -> T + Send + 'static,
) -> Result<T, TurnAdminError> {
    match tokio::time::timeout(ADMIN_WAIT, tokio::task::spawn_blocking(ask)).await {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(TurnAdminError::Busy(ADMIN_WAIT)),
    }
}

fn revoke_now(shared: &Arc<Shared>, id: AllocationId) -> bool {
    let now = Instant::now();
    let mut core = shared.lock();
    let Some(view) = core.server.allocation(id) else {
        return false;
    };
    let revoked = core.server.revoke(now, id);
    if view.five_tuple.transport.is_stream() {
        // A stream allocation lives as long as its connection (RFC 8656
        // §3.1); ending it hangs up too, so the client learns at once.
        // Without its send side the writer ends after what is queued, and
        // the connection with it.
        core.io.streams.remove(&view.five_tuple);
    }
    core.flush(shared, now);
    revoked
}

/// Hands a core event to the subscribers; skipped when there are none.
pub(super) fn announce(shared: &Shared, event: AllocationEvent) {
    if shared.allocation_events.receiver_count() == 0 {
        return;
    }
    let clock = WallClock::now();
    let event = match event {
        AllocationEvent::Created(view) => clock.allocation(&view).map(TurnAllocationEvent::Created),
        AllocationEvent::Ended { allocation, reason } => clock
            .allocation(&allocation)
            .map(|allocation| TurnAllocationEvent::Ended { allocation, reason }),
        other => {
            tracing::debug!(?other, "turn: unhandled allocation event");
            None
        }
    };
    if let Some(event) = event {
        // Fails only when every receiver is gone meanwhile: nobody to tell.
        let _ = shared.allocation_events.send(event);
    }
}

/// Converts the core's instants to wall-clock times, from one reading of
/// both clocks.
struct WallClock {
    instant: Instant,
    system: SystemTime,
}

impl WallClock {
    fn now() -> Self {
        Self {
            instant: Instant::now(),
            system: SystemTime::now(),
        }
    }

    fn at(&self, at: Instant) -> SystemTime {
        if at >= self.instant {
            self.system + (at - self.instant)
        } else {
            self.system
                .checked_sub(self.instant - at)
                .unwrap_or(UNIX_EPOCH)
        }
    }

    /// `None` for an allocation without a relay, which the core never makes.
    fn allocation(&self, v: &AllocationView) -> Option<TurnAllocation> {
        let (&relayed, rest) = v.relayed.split_first()?;
        Some(TurnAllocation {
            id: v.id.to_string(),
            username: v.username.to_string(),
            client: v.five_tuple.client,
            transport: transport_name(v.five_tuple.transport),
            relayed,
            also_relayed: rest.to_vec(),
            created: self.at(v.created),
            expires: self.at(v.expires),
            bytes_in: v.bytes_in,
            bytes_out: v.bytes_out,
            permissions: v.permissions,
            channels: v.channels,
        })
    }
}

fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
        Transport::Tls => "tls",
    }
}

fn unix_secs<S: Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_maps_both_ways() {
        let clock = WallClock::now();
        let later = clock.instant + Duration::from_secs(30);
        assert_eq!(clock.at(later), clock.system + Duration::from_secs(30));
        if let Some(earlier) = clock.instant.checked_sub(Duration::from_secs(5)) {
            assert_eq!(clock.at(earlier), clock.system - Duration::from_secs(5));
        }
    }

    #[test]
    fn entries_serialize_as_the_admin_api_lists_them() {
        let a = TurnAllocation {
            id: "1f".into(),
            username: "alice".into(),
            client: "192.0.2.1:5000".parse().unwrap(),
            transport: "udp",
            relayed: "203.0.113.2:50000".parse().unwrap(),
            also_relayed: Vec::new(),
            created: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            expires: UNIX_EPOCH + Duration::from_secs(1_700_000_600),
            bytes_in: 3,
            bytes_out: 5,
            permissions: 1,
            channels: 0,
        };
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "1f", "username": "alice", "client": "192.0.2.1:5000",
                "transport": "udp", "relayed": "203.0.113.2:50000",
                "created": 1_700_000_000u64, "expires": 1_700_000_600u64,
                "bytes_in": 3, "bytes_out": 5, "permissions": 1, "channels": 0
            })
        );
    }
}
