//! Counters the shell exports. Plain numbers, read with [`crate::TurnServer::metrics`].

/// A snapshot of the server's counters; gauges are current values, the rest
/// only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Live allocations (gauge).
    pub allocations: u64,
    /// Live permissions over all allocations (gauge).
    pub permissions: u64,
    /// Live channel bindings over all allocations (gauge).
    pub channels: u64,
    /// Allocations ever created.
    pub allocations_created: u64,
    /// Allocations that ended by timing out.
    pub allocations_expired: u64,
    /// Allocations ended by an operator ([`crate::TurnServer::revoke`]).
    pub allocations_revoked: u64,
    /// Allocation lifecycle events not queued because the queue was full
    /// (`ServerConfig::max_queued_allocation_events`).
    pub allocation_events_dropped: u64,
    /// Binding requests answered.
    pub binding_requests: u64,
    /// Requests refused for authentication (401, 438, 441).
    pub auth_failures: u64,
    /// Peer addresses refused by the policy (403).
    pub denied_peers: u64,
    /// Allocate requests refused by a quota (486).
    pub quota_rejections: u64,
    /// Allocate requests refused because the server is draining (508).
    pub draining_refusals: u64,
    /// Relay sockets the shell could not bind (508).
    pub relay_bind_failures: u64,
    /// Packets and bytes relayed from clients to peers.
    pub packets_to_peers: u64,
    /// Payload bytes relayed from clients to peers.
    pub bytes_to_peers: u64,
    /// Packets relayed from peers to clients.
    pub packets_to_clients: u64,
    /// Payload bytes relayed from peers to clients.
    pub bytes_to_clients: u64,
    /// Inputs dropped: undecodable, no allocation, no permission, no channel.
    pub dropped: u64,
    /// Requests over `max_request_bytes` (answered 400, no HMAC computed).
    pub oversized_requests: u64,
    /// Challenges (401, 438) not sent because their source was over
    /// `challenges_per_ip_per_sec`.
    pub challenges_dropped: u64,
}
