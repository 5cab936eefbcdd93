//! Settings of the sans-IO server.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::auth::Credentials;
use crate::policy::PeerPolicy;

/// Everything the [`crate::TurnServer`] needs to know; [`ServerConfig::new`]
/// fills RFC 8656's recommended timings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// REALM of the long-term credentials.
    pub realm: String,
    /// SOFTWARE attribute on responses; `None` to leave it out.
    pub software: Option<String>,
    /// Static users and REST secrets.
    pub credentials: Credentials,
    /// Key for the nonce MACs; random per process is fine, the same on every
    /// node only matters if clients move between nodes mid-allocation.
    pub nonce_secret: Vec<u8>,
    /// How long a nonce stays valid before 438 asks for a fresh one.
    pub nonce_lifetime: Duration,
    /// Allocation lifetime when the client asks for less or nothing (600 s).
    pub default_lifetime: Duration,
    /// Upper bound on a requested allocation lifetime (3600 s).
    pub max_lifetime: Duration,
    /// Permission lifetime (300 s, RFC 8656 §9).
    pub permission_lifetime: Duration,
    /// Channel binding lifetime (600 s, RFC 8656 §12).
    pub channel_lifetime: Duration,
    /// Allocations on the whole server (pending ones included); 486 beyond.
    pub max_allocations: usize,
    /// Allocations per identity (a static user's name, or what follows the
    /// expiry in a REST username); EVEN-PORT reservations count too. 486 beyond.
    pub max_allocations_per_user: usize,
    /// Allocations per client source (an IPv4 address or an IPv6 /64),
    /// over all users; reservations count too. 486 beyond; 0 = no cap.
    pub max_allocations_per_ip: usize,
    /// Largest STUN request or indication other than a Send indication
    /// (whose size is the relayed payload's): bigger ones get 400 before
    /// any HMAC is computed over them. Binding, Allocate and the rest are a
    /// few hundred bytes; a CreatePermission for 128 IPv4 peers is 1.6 KB.
    pub max_request_bytes: usize,
    /// Challenge answers (401 and 438, larger than the request that caused
    /// them) per second to one source (an IPv4 address or an IPv6 /64),
    /// in bursts of twice that; beyond, requests are dropped silently and
    /// counted in [`crate::Metrics::challenges_dropped`]. 0 = no limit.
    pub challenges_per_ip_per_sec: u32,
    /// Peer address policy.
    pub policy: PeerPolicy,
    /// This host's addresses: the listeners', `external_ip`, the relay
    /// addresses. No port on them is an allowed peer (the TURN listener
    /// itself and every UDP service of the host would be reachable), even
    /// inside an allowed range, except the exact relay addresses of live
    /// allocations; loopback ones only follow the policy. The server adds
    /// the addresses its clients reach it on and its relays get.
    pub own_addresses: Vec<IpAddr>,
    /// Exact addresses of this host's own services that clients may always
    /// relay to, whatever the policy and the own-address rule say: the
    /// SFU's media socket (PROTOCOL.md §7, "the server's own addresses are
    /// always allowed peers"). Any other port on those IPs stays refused.
    pub service_peers: Vec<SocketAddr>,
    /// Also accept channel numbers 0x5000–0x7FFE in ChannelBind, as RFC 5766
    /// did (coturn's clients pick from the whole old range). RFC 8656
    /// reserves them, so this is off by default in the core.
    pub allow_rfc5766_channels: bool,
    /// Whether the host can relay over IPv4.
    pub relay_ipv4: bool,
    /// Whether the host can relay over IPv6.
    pub relay_ipv6: bool,
    /// Allocation lifecycle events ([`crate::AllocationEvent`]) held until
    /// the shell polls them; beyond, new ones are dropped and counted in
    /// [`crate::Metrics::allocation_events_dropped`]. 0 = none are made.
    pub max_queued_allocation_events: usize,
}

impl ServerConfig {
    /// A configuration with the RFC's timings, generous quotas, the default
    /// peer policy, IPv4 relaying only and no credentials.
    pub fn new(realm: impl Into<String>, nonce_secret: impl Into<Vec<u8>>) -> Self {
        Self {
            realm: realm.into(),
            software: Some(concat!("switchboard ", env!("CARGO_PKG_VERSION")).to_owned()),
            credentials: Credentials::new(),
            nonce_secret: nonce_secret.into(),
            nonce_lifetime: Duration::from_secs(600),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            max_allocations: 10_000,
            max_allocations_per_user: 100,
            max_allocations_per_ip: 32,
            max_request_bytes: 2048,
            challenges_per_ip_per_sec: 32,
            policy: PeerPolicy::new(),
            own_addresses: Vec::new(),
            service_peers: Vec::new(),
            allow_rfc5766_channels: false,
            relay_ipv4: true,
            relay_ipv6: false,
            max_queued_allocation_events: 1024,
        }
    }
}
