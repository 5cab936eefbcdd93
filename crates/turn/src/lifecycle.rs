//! What operators see of allocations: a view of the live ones, revocation,
//! and the created/ended events the shell turns into webhooks.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use crate::allocation::Allocation;
use crate::output::FiveTuple;
use crate::server::{AllocId, TurnServer};

/// Names one allocation for the server's whole life: ids come from a
/// counter that only grows, so an ended allocation's id is never reused.
/// Written and parsed as lowercase hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocationId(pub u64);

impl fmt::Display for AllocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// An allocation id that is not one: empty, too long, or not hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an allocation id: expected up to 16 hex digits")]
pub struct AllocationIdError;

impl FromStr for AllocationId {
    type Err = AllocationIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // from_str_radix alone would take a leading '+'.
        if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AllocationIdError);
        }
        u64::from_str_radix(s, 16)
            .map(AllocationId)
            .map_err(|_| AllocationIdError)
    }
}

/// One allocation as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AllocationView {
    /// Stable for the allocation's life, never reused.
    pub id: AllocationId,
    /// The authenticated USERNAME of the Allocate.
    pub username: Arc<str>,
    /// The client's 5-tuple: its address and transport.
    pub five_tuple: FiveTuple,
    /// The relayed transport addresses handed to the client (one per
    /// address family), as advertised (XOR-RELAYED-ADDRESS).
    pub relayed: Vec<SocketAddr>,
    /// When the Allocate succeeded.
    pub created: Instant,
    /// When it expires unless refreshed.
    pub expires: Instant,
    /// Payload bytes relayed from peers to the client.
    pub bytes_in: u64,
    /// Payload bytes relayed from the client to peers.
    pub bytes_out: u64,
    /// Live permissions.
    pub permissions: usize,
    /// Live channel bindings.
    pub channels: usize,
}

impl AllocationView {
    fn of(id: AllocId, a: &Allocation) -> Self {
        Self {
            id: AllocationId(id),
            username: a.username.clone(),
            five_tuple: a.five_tuple,
            relayed: a.relays.iter().map(|r| r.public).collect(),
            created: a.created,
            expires: a.expires,
            bytes_in: a.bytes_in,
            bytes_out: a.bytes_out,
            permissions: a.permission_count(),
            channels: a.channel_count(),
        }
    }
}

/// Why an allocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndReason {
    /// Its lifetime ran out without a Refresh.
    Expired,
    /// The client deleted it (Refresh with LIFETIME 0).
    Deleted,
    /// The client's TCP/TLS connection closed (RFC 8656 §3.1).
    Closed,
    /// An operator revoked it ([`TurnServer::revoke`]).
    Revoked,
}

impl EndReason {
    /// A short lowercase name for logs and webhooks.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Expired => "expired",
            EndReason::Deleted => "deleted",
            EndReason::Closed => "closed",
            EndReason::Revoked => "revoked",
        }
    }
}

/// An allocation started or ended; polled with
/// [`TurnServer::poll_allocation_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllocationEvent {
    /// The Allocate succeeded.
    Created(AllocationView),
    /// It ended; the view holds its final byte counts.
    Ended {
        /// The allocation as it was when it ended.
        allocation: AllocationView,
        /// Why.
        reason: EndReason,
    },
}

impl TurnServer {
    /// Every live allocation. Made for an operator's occasional look: it
    /// copies each allocation's addresses and username.
    pub fn allocations(&self) -> Vec<AllocationView> {
        let mut all: Vec<AllocationView> = self
            .allocations
            .iter()
            .map(|(&id, a)| AllocationView::of(id, a))
            .collect();
        all.sort_unstable_by_key(|v| v.id);
        all
    }

    /// One live allocation.
    pub fn allocation(&self, id: AllocationId) -> Option<AllocationView> {
        self.allocations
            .get(&id.0)
            .map(|a| AllocationView::of(id.0, a))
    }

    /// Ends an allocation at once, as if it had expired: its relays are
    /// released ([`crate::Event::ReleaseRelay`]), its permissions and
    /// channels go, and a later Refresh from its client gets 437. Returns
    /// whether it existed.
    pub fn revoke(&mut self, now: Instant, id: AllocationId) -> bool {
        self.latest = self.latest.max(now);
        self.delete_allocation(id.0, EndReason::Revoked)
    }

    /// While draining, every new Allocate gets 508 (a retransmitted one
    /// that already succeeded is still answered, and one whose relay is
    /// being bound completes); existing allocations keep being refreshed
    /// and relayed until they end.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// Whether [`Self::set_draining`] is on.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// The next allocation created or ended, oldest first; call until
    /// `None` after every `handle_*` (or from time to time: the queue is
    /// bounded, and what does not fit is counted, not kept).
    #[must_use]
    pub fn poll_allocation_event(&mut self) -> Option<AllocationEvent> {
        self.lifecycle.pop_front()
    }

    pub(crate) fn announce_created(&mut self, id: AllocId) {
        if !self.lifecycle_has_room() {
            return;
        }
        if let Some(a) = self.allocations.get(&id) {
            let view = AllocationView::of(id, a);
            self.lifecycle.push_back(AllocationEvent::Created(view));
        }
    }

    pub(crate) fn announce_ended(&mut self, id: AllocId, alloc: &Allocation, reason: EndReason) {
        if !self.lifecycle_has_room() {
            return;
        }
        let allocation = AllocationView::of(id, alloc);
        self.lifecycle
            .push_back(AllocationEvent::Ended { allocation, reason });
    }

    /// Whether one more event fits; counts the ones that do not.
    fn lifecycle_has_room(&mut self) -> bool {
        let max = self.config.max_queued_allocation_events;
        if max == 0 {
            return false;
        }
        if self.lifecycle.len() >= max {
            self.metrics.allocation_events_dropped += 1;
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_bad_ones_are_refused() {
        for id in [0, 1, 0xabc, u64::MAX] {
            let text = AllocationId(id).to_string();
            assert_eq!(text.parse::<AllocationId>(), Ok(AllocationId(id)));
        }
        for bad in ["", "+1", "-1", "xyz", "12345678901234567", " 1", "1 "] {
            assert_eq!(
                bad.parse::<AllocationId>(),
                Err(AllocationIdError),
                "{bad:?}"
            );
        }
        assert_eq!("ABC".parse::<AllocationId>(), Ok(AllocationId(0xabc)));
    }

    #[test]
    fn reasons_have_stable_names() {
        let names: Vec<&str> = [
            EndReason::Expired,
            EndReason::Deleted,
            EndReason::Closed,
            EndReason::Revoked,
        ]
        .into_iter()
        .map(EndReason::as_str)
        .collect();
        assert_eq!(names, ["expired", "deleted", "closed", "revoked"]);
    }
}
