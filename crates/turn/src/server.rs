//! [`TurnServer`]: routes every input to its allocation and queues what to send.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use foldhash::SharedSeed;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use switchboard_stun::attr::{Data, XorPeerAddress};
use switchboard_stun::{
    ChannelData, Class, Message, MessageBuilder, MessageType, Method, TransactionId,
};

use crate::allocation::Allocation;
use crate::auth::Seal;
use crate::challenge::ChallengeLimiter;
use crate::config::ServerConfig;
use crate::lifecycle::{AllocationEvent, EndReason};
use crate::metrics::Metrics;
use crate::nonce::NonceSigner;
use crate::output::{Event, FiveTuple, RelayAddress, RelayRequestId, Source, Transmit};
use crate::policy::canonical;
use crate::quota::{Owner, Quotas};
use crate::refusal::Refusal;

/// Buffers kept for reuse; more than this in flight are simply freed.
const POOL_LIMIT: usize = 64;
/// Capacity of a fresh output buffer: a full-size UDP payload plus headers.
const BUFFER_CAPACITY: usize = 1600;
/// Own addresses learned from 5-tuples and relays: a host has a handful,
/// so this bound is never reached by honest traffic.
const MAX_OWN_ADDRESSES: usize = 64;

pub(crate) type AllocId = u64;

/// An Allocate waiting for the shell to bind its relay sockets.
#[derive(Debug)]
pub(crate) struct PendingAllocation {
    pub(crate) five_tuple: FiveTuple,
    pub(crate) transaction_id: TransactionId,
    pub(crate) username: Arc<str>,
    pub(crate) owner: Owner,
    pub(crate) seal: Seal,
    pub(crate) lifetime_secs: u32,
    pub(crate) waiting: Vec<RelayRequestId>,
    pub(crate) bound: Vec<RelayAddress>,
    pub(crate) failed: bool,
    /// The client closed its connection meanwhile: release what gets bound.
    pub(crate) cancelled: bool,
    /// ADDITIONAL-ADDRESS-FAMILY asked for IPv6 and the host has none.
    pub(crate) ipv6_unavailable: bool,
    /// EVEN-PORT with the R bit: also reserve the next port. A second
    /// quota slot is held for the reservation while this is set.
    pub(crate) reserve: bool,
    /// The request for the reserved port, once asked.
    pub(crate) reservation_request: Option<RelayRequestId>,
    /// The reserved relay, when the shell could bind it.
    pub(crate) reservation: Option<RelayAddress>,
}

/// A relay socket held for a later Allocate with RESERVATION-TOKEN.
#[derive(Debug)]
pub(crate) struct Reservation {
    pub(crate) relay: RelayAddress,
    pub(crate) expires: Instant,
    /// Whose quota slot the held port takes until it is used or expires.
    pub(crate) owner: Owner,
}

#[derive(Debug)]
struct QueuedTransmit {
    source: Source,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// The hash map of the relay path (see `TurnServer::hasher`).
pub(crate) type Map<K, V> = HashMap<K, V, MapHasher>;
pub(crate) type MapHasher = foldhash::fast::SeedableRandomState;

/// A hasher seeded from the server's random nonce secret, so that the seed
/// is as unpredictable as the secret without drawing randomness here. The
/// seed is an HMAC of the secret: whatever timing might reveal of the seed
/// reveals nothing of the secret that signs nonces.
fn map_hasher(secret: &[u8]) -> MapHasher {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(b"switchboard relay-path map seed");
    let digest = mac.finalize().into_bytes();
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&digest[..8]);
    MapHasher::with_seed(u64::from_le_bytes(seed), SharedSeed::global_random())
}

/// A sans-IO TURN server (RFC 8656) with STUN binding (RFC 8489).
///
/// It never touches a socket or a clock. The shell feeds it what arrives,
/// with the current time, and then drains its outputs:
///
/// ```text
/// loop {
///     match next_io_event {
///         client bytes  => server.handle_client(now, unix_secs, five_tuple, &bytes),
///         peer bytes    => server.handle_peer(now, relay_local, peer, &bytes),
///         timer fired   => server.handle_timeout(now),
///         relay bound   => server.relay_bound(now, id, result),
///         stream closed => server.connection_closed(five_tuple),
///     }
///     while let Some(t) = server.poll_transmit() { send t.bytes from t.source to t.to }
///     while let Some(e) = server.poll_event() { bind or close sockets }
///     while let Some(a) = server.poll_allocation_event() { tell operators }
///     re-arm the timer at server.poll_timeout()
/// }
/// ```
///
/// Relay sockets are bound in two phases: an Allocate yields
/// [`Event::BindRelay`]; the shell binds a socket and calls
/// [`TurnServer::relay_bound`], which sends the success response, or 508 when
/// binding failed.
///
/// Operators list allocations with [`TurnServer::allocations`], end one
/// with [`TurnServer::revoke`], and stop new ones with
/// [`TurnServer::set_draining`]; [`TurnServer::reconfigure`] changes
/// credentials, policy and quotas without touching live allocations.
pub struct TurnServer {
    pub(crate) config: ServerConfig,
    pub(crate) nonces: NonceSigner,
    pub(crate) epoch: Instant,
    /// The latest `now` passed in, for answers built deep in a handler.
    pub(crate) latest: Instant,
    /// Keyed hashing for the maps on the relay path: SipHash cost more than
    /// the lookups themselves, and these maps' keys (addresses, channel
    /// numbers) are partly chosen by clients, so the seed stays secret.
    pub(crate) hasher: MapHasher,
    pub(crate) allocations: Map<AllocId, Allocation>,
    pub(crate) by_client: Map<FiveTuple, AllocId>,
    /// Keyed by the relay socket's local address.
    pub(crate) by_relay: Map<SocketAddr, AllocId>,
    /// Advertised relay addresses (for the peer policy's own-address rule).
    pub(crate) public_relays: Map<SocketAddr, AllocId>,
    /// This host's IPs, canonical: no peer but a live relay address there.
    own_ips: Vec<IpAddr>,
    pub(crate) quotas: Quotas,
    pub(crate) challenges: ChallengeLimiter,
    pub(crate) pending: HashMap<u64, PendingAllocation>,
    pub(crate) pending_by_client: HashMap<FiveTuple, u64>,
    pub(crate) pending_by_request: HashMap<RelayRequestId, u64>,
    pub(crate) next_id: u64,
    timers: BinaryHeap<Reverse<(Instant, AllocId)>>,
    pub(crate) reservations: HashMap<[u8; 8], Reservation>,
    pub(crate) reservation_timers: BinaryHeap<Reverse<(Instant, [u8; 8])>>,
    transmits: VecDeque<QueuedTransmit>,
    /// The transmit handed out last; its buffer is recycled on the next poll.
    current: Option<QueuedTransmit>,
    pool: Vec<Vec<u8>>,
    events: VecDeque<Event>,
    /// Allocations created and ended, for the shell's webhooks; bounded by
    /// `config.max_queued_allocation_events`.
    pub(crate) lifecycle: VecDeque<AllocationEvent>,
    /// New allocations are refused ([`TurnServer::set_draining`]).
    pub(crate) draining: bool,
    pub(crate) metrics: Metrics,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnServer")
            .field("realm", &self.config.realm)
            .field("allocations", &self.allocations.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl TurnServer {
    /// A server with no allocations. `now` is the server's epoch for nonces.
    pub fn new(config: ServerConfig, now: Instant) -> Self {
        let nonces = NonceSigner::new(&config.nonce_secret, config.nonce_lifetime);
        let hasher = map_hasher(&config.nonce_secret);
        let challenges = ChallengeLimiter::new(config.challenges_per_ip_per_sec);
        let mut own_ips = Vec::new();
        for &ip in &config.own_addresses {
            learn_own_ip(&mut own_ips, ip);
        }
        Self {
            config,
            nonces,
            epoch: now,
            latest: now,
            allocations: Map::with_hasher(hasher.clone()),
            by_client: Map::with_hasher(hasher.clone()),
            by_relay: Map::with_hasher(hasher.clone()),
            public_relays: Map::with_hasher(hasher.clone()),
            own_ips,
            hasher,
            quotas: Quotas::default(),
            challenges,
            pending: HashMap::new(),
            pending_by_client: HashMap::new(),
            pending_by_request: HashMap::new(),
            next_id: 1,
            timers: BinaryHeap::new(),
            reservations: HashMap::new(),
            reservation_timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            current: None,
            pool: Vec::new(),
            events: VecDeque::new(),
            lifecycle: VecDeque::new(),
            draining: false,
            metrics: Metrics::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Takes a new configuration for the requests to come: credentials,
    /// peer policy, quotas, limits, lifetimes. Live allocations keep what
    /// they hold: the key they were made with (so they go on refreshing
    /// whatever happened to their user or secret), permissions, channels
    /// and expiry. Kept from the running configuration: the realm (keys
    /// are derived from it), the nonce secret (nonces handed out stay
    /// good) and the relay families (the shell's sockets decide those).
    pub fn reconfigure(&mut self, mut config: ServerConfig) {
        config.realm = std::mem::take(&mut self.config.realm);
        config.nonce_secret = std::mem::take(&mut self.config.nonce_secret);
        config.relay_ipv4 = self.config.relay_ipv4;
        config.relay_ipv6 = self.config.relay_ipv6;
        if config.nonce_lifetime != self.config.nonce_lifetime {
            self.nonces = NonceSigner::new(&config.nonce_secret, config.nonce_lifetime);
        }
        if config.challenges_per_ip_per_sec != self.config.challenges_per_ip_per_sec {
            self.challenges = ChallengeLimiter::new(config.challenges_per_ip_per_sec);
        }
        for &ip in &config.own_addresses {
            learn_own_ip(&mut self.own_ips, ip);
        }
        self.config = config;
    }

    /// Current counters.
    pub fn metrics(&self) -> Metrics {
        self.metrics
    }

    /// Handles one message from a client: a whole datagram on UDP, or one
    /// frame cut from a stream with [`crate::stream_frame_len`]. `unix_secs` is the
    /// wall-clock time, used only to check REST credential expiry.
    pub fn handle_client(
        &mut self,
        now: Instant,
        unix_secs: u64,
        five_tuple: FiveTuple,
        bytes: &[u8],
    ) {
        self.latest = self.latest.max(now);
        match bytes.first().map(|b| b >> 6) {
            Some(0b01) => self.client_channel_data(now, five_tuple, bytes),
            Some(0b00) => match Message::parse(bytes) {
                Ok(msg) => self.client_message(now, unix_secs, five_tuple, &msg, bytes.len()),
                Err(_) => self.metrics.dropped += 1,
            },
            _ => self.metrics.dropped += 1,
        }
    }

    /// Handles a datagram that `peer` sent to the relay socket bound at `relay_local`.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        relay_local: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
    ) {
        let Some(alloc) = self
            .by_relay
            .get(&relay_local)
            .and_then(|id| self.allocations.get_mut(id))
        else {
            self.metrics.dropped += 1;
            return;
        };
        if !alloc.is_permitted(peer.ip(), now) {
            self.metrics.dropped += 1;
            return;
        }
        let five_tuple = alloc.five_tuple;
        let channel = alloc.channel_for(&peer, now);
        // The pool is borrowed on its own, so that the allocation's byte
        // count below needs no second lookup.
        let mut buf = take_from(&mut self.pool);
        let written = match channel {
            Some(number) => match ChannelData::new(number, data) {
                Ok(frame) => {
                    frame.encode(&mut buf, five_tuple.transport.is_stream());
                    true
                }
                Err(_) => false,
            },
            None => {
                let mut b = MessageBuilder::new(
                    &mut buf,
                    MessageType::DATA_INDICATION,
                    data_indication_id(&self.metrics),
                );
                b.add_xor_peer_address(peer).add_data(data);
                b.finish().is_ok()
            }
        };
        if !written {
            self.metrics.dropped += 1;
            recycle_into(&mut self.pool, buf);
            return;
        }
        alloc.bytes_in += data.len() as u64;
        self.metrics.packets_to_clients += 1;
        self.metrics.bytes_to_clients += data.len() as u64;
        self.transmits.push_back(QueuedTransmit {
            source: Source::Client(five_tuple),
            to: five_tuple.client,
            bytes: buf,
        });
    }

    /// Tells the server a stream connection is gone: its allocation (if any)
    /// ends at once (RFC 8656 §3.1).
    pub fn connection_closed(&mut self, five_tuple: FiveTuple) {
        if let Some(id) = self.by_client.get(&five_tuple).copied() {
            self.delete_allocation(id, EndReason::Closed);
        }
        if let Some(p) = self
            .pending_by_client
            .remove(&five_tuple)
            .and_then(|pid| self.pending.get_mut(&pid))
        {
            p.cancelled = true;
        }
    }

    /// Expires allocations, permissions and channels due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.latest = self.latest.max(now);
        while let Some(&Reverse((at, token))) = self.reservation_timers.peek() {
            if at > now {
                break;
            }
            self.reservation_timers.pop();
            if let Some(r) = self.reservations.remove(&token) {
                self.events.push_back(Event::ReleaseRelay {
                    local: r.relay.local,
                });
                self.quotas.release(&r.owner);
            }
        }
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(alloc) = self.allocations.get_mut(&id) else {
                continue;
            };
            if alloc.scheduled != Some(at) {
                continue;
            }
            alloc.scheduled = None;
            if alloc.expires <= now {
                self.delete_allocation(id, EndReason::Expired);
                continue;
            }
            let (perms, chans) = alloc.expire(now);
            let next = alloc.next_deadline();
            self.metrics.permissions -= perms as u64;
            self.metrics.channels -= chans as u64;
            self.schedule(id, next);
        }
    }

    /// When [`Self::handle_timeout`] should next be called. May be early
    /// (a refreshed deadline leaves a stale entry); never late.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let allocations = self.timers.peek().map(|Reverse((at, _))| *at);
        let reservations = self.reservation_timers.peek().map(|Reverse((at, _))| *at);
        match (allocations, reservations) {
            (Some(a), Some(r)) => Some(a.min(r)),
            (a, r) => a.or(r),
        }
    }

    /// The next datagram or stream chunk to send; call until `None` after
    /// every `handle_*`. The bytes live in a buffer the server reuses, so
    /// the hot path allocates nothing.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit<'_>> {
        if let Some(done) = self.current.take() {
            self.recycle(done.bytes);
        }
        self.current = self.transmits.pop_front();
        self.current.as_ref().map(|t| Transmit {
            source: t.source,
            to: t.to,
            bytes: &t.bytes,
        })
    }

    /// The next socket chore for the shell; call until `None` after every `handle_*`.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether the client on `five_tuple` holds an allocation.
    pub fn has_allocation(&self, five_tuple: FiveTuple) -> bool {
        self.by_client.contains_key(&five_tuple)
    }

    /// Number of live allocations.
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    pub(crate) fn take_buffer(&mut self) -> Vec<u8> {
        take_from(&mut self.pool)
    }

    pub(crate) fn recycle(&mut self, buf: Vec<u8>) {
        recycle_into(&mut self.pool, buf);
    }

    pub(crate) fn queue(&mut self, source: Source, to: SocketAddr, bytes: Vec<u8>) {
        self.transmits
            .push_back(QueuedTransmit { source, to, bytes });
    }

    pub(crate) fn push_event(&mut self, event: Event) {
        self.events.push_back(event);
    }

    /// Makes sure the timer heap fires for `id` no later than `at`.
    pub(crate) fn schedule(&mut self, id: AllocId, at: Instant) {
        let Some(alloc) = self.allocations.get_mut(&id) else {
            return;
        };
        if alloc.scheduled.is_none_or(|s| at < s) {
            alloc.scheduled = Some(at);
            self.timers.push(Reverse((at, id)));
        }
    }

    /// Ends an allocation and releases its relays; false when there was none.
    pub(crate) fn delete_allocation(&mut self, id: AllocId, reason: EndReason) -> bool {
        let Some(alloc) = self.allocations.remove(&id) else {
            return false;
        };
        self.by_client.remove(&alloc.five_tuple);
        for relay in &alloc.relays {
            self.by_relay.remove(&relay.local);
            self.public_relays.remove(&relay.public);
            self.events
                .push_back(Event::ReleaseRelay { local: relay.local });
        }
        self.quotas.release(&alloc.owner);
        self.metrics.allocations -= 1;
        self.metrics.permissions -= alloc.permission_count() as u64;
        self.metrics.channels -= alloc.channel_count() as u64;
        match reason {
            EndReason::Expired => self.metrics.allocations_expired += 1,
            EndReason::Revoked => self.metrics.allocations_revoked += 1,
            EndReason::Deleted | EndReason::Closed => {}
        }
        self.announce_ended(id, &alloc, reason);
        true
    }

    /// Whether relaying to `peer` is allowed: one of this server's live
    /// relay addresses always is; any other port on this host's IPs never
    /// is (loopback excepted: it is only reachable when the policy opens
    /// loopback, which already opens the whole host); the rest is the
    /// policy's call.
    pub(crate) fn peer_allowed(&self, peer: SocketAddr) -> bool {
        if self.by_relay.contains_key(&peer) || self.public_relays.contains_key(&peer) {
            return true;
        }
        let ip = canonical(peer.ip());
        if self.is_service_peer(ip, peer.port()) {
            return true;
        }
        if !ip.is_loopback() && self.own_ips.contains(&ip) {
            return false;
        }
        self.config.policy.permits(ip)
    }

    /// One of [`ServerConfig::service_peers`]; `ip` is canonical. A short
    /// list (a socket's addresses), scanned only for peers the policy or
    /// the own-address rule would look at anyway.
    fn is_service_peer(&self, ip: IpAddr, port: u16) -> bool {
        self.config
            .service_peers
            .iter()
            .any(|s| s.port() == port && canonical(s.ip()) == ip)
    }

    /// Records an address this host answers on (a 5-tuple's server side,
    /// a relay's local or advertised address).
    pub(crate) fn learn_own_address(&mut self, ip: IpAddr) {
        learn_own_ip(&mut self.own_ips, ip);
    }

    fn client_message(
        &mut self,
        now: Instant,
        unix_secs: u64,
        five_tuple: FiveTuple,
        msg: &Message<'_>,
        len: usize,
    ) {
        if len > self.config.max_request_bytes && msg.message_type() != MessageType::SEND_INDICATION
        {
            // Refused before anything is computed over it: a failed
            // credential check would cost an HMAC over all of it.
            self.metrics.oversized_requests += 1;
            if msg.class() == Class::Request {
                let max = self.config.max_request_bytes;
                self.refuse(five_tuple, msg, &Refusal::TooLarge { len, max }, None);
            } else {
                self.metrics.dropped += 1;
            }
            return;
        }
        match (msg.method(), msg.class()) {
            (Method::BINDING, Class::Request) => self.binding(five_tuple, msg),
            (Method::SEND, Class::Indication) => self.send_indication(now, five_tuple, msg),
            (_, Class::Request) => self.turn_request(now, unix_secs, five_tuple, msg),
            _ => self.metrics.dropped += 1,
        }
    }

    fn binding(&mut self, five_tuple: FiveTuple, msg: &Message<'_>) {
        self.metrics.binding_requests += 1;
        let unknown: Vec<u16> = msg.unknown_comprehension_required().map(|t| t.0).collect();
        let tid = msg.transaction_id();
        let mut buf = self.take_buffer();
        let software = self.config.software.as_deref();
        let ok = if unknown.is_empty() {
            let mut b = MessageBuilder::new(&mut buf, MessageType::BINDING_RESPONSE, tid);
            b.add_xor_mapped_address(five_tuple.client);
            if let Some(s) = software {
                b.add_software(s);
            }
            b.add_fingerprint();
            b.finish().is_ok()
        } else {
            let mut b = MessageBuilder::new(&mut buf, MessageType::BINDING_ERROR, tid);
            b.add_error_code(420, "Unknown Attribute")
                .add_unknown_attributes(&unknown);
            if let Some(s) = software {
                b.add_software(s);
            }
            b.add_fingerprint();
            b.finish().is_ok()
        };
        if ok {
            self.queue(Source::Client(five_tuple), five_tuple.client, buf);
        } else {
            self.recycle(buf);
        }
    }

    fn send_indication(&mut self, now: Instant, five_tuple: FiveTuple, msg: &Message<'_>) {
        let peer = match msg.get::<XorPeerAddress>() {
            Ok(Some(p)) => p.0,
            _ => {
                self.metrics.dropped += 1;
                return;
            }
        };
        // Permissions are per IP (RFC 8656 §9), and the exception for this
        // server's own relay addresses is per address: without this check a
        // permission for our own relay IP would open every port on it.
        if !self.peer_allowed(peer) {
            self.metrics.denied_peers += 1;
            self.metrics.dropped += 1;
            return;
        }
        let data = match msg.get::<Data<'_>>() {
            Ok(Some(d)) => d.0,
            _ => {
                self.metrics.dropped += 1;
                return;
            }
        };
        self.relay_to_peer(now, five_tuple, peer, data);
    }

    fn client_channel_data(&mut self, now: Instant, five_tuple: FiveTuple, bytes: &[u8]) {
        let Ok(frame) = ChannelData::parse(bytes) else {
            self.metrics.dropped += 1;
            return;
        };
        let peer = self
            .by_client
            .get(&five_tuple)
            .and_then(|id| self.allocations.get(id))
            .and_then(|a| a.channel_peer(frame.channel(), now));
        match peer {
            Some(peer) if self.own_relay_still_live(peer) => {
                self.relay_to_peer(now, five_tuple, peer, frame.data());
            }
            Some(_) => {
                self.metrics.denied_peers += 1;
                self.metrics.dropped += 1;
            }
            None => self.metrics.dropped += 1,
        }
    }

    /// A channel's peer passed [`Self::peer_allowed`] when it was bound.
    /// What can change since is whether a relay address of this server's
    /// own is still live: once its allocation is gone, it is just a port on
    /// this host. Only peers on the host's own IPs pay more than a scan of
    /// that short list.
    fn own_relay_still_live(&self, peer: SocketAddr) -> bool {
        let ip = canonical(peer.ip());
        if ip.is_loopback() || !self.own_ips.contains(&ip) || self.is_service_peer(ip, peer.port())
        {
            return true;
        }
        self.by_relay.contains_key(&peer) || self.public_relays.contains_key(&peer)
    }

    fn relay_to_peer(
        &mut self,
        now: Instant,
        five_tuple: FiveTuple,
        peer: SocketAddr,
        data: &[u8],
    ) {
        let relay = self
            .by_client
            .get(&five_tuple)
            .and_then(|id| self.allocations.get_mut(id))
            .filter(|a| a.is_permitted(peer.ip(), now))
            .and_then(|a| {
                let local = a.relay_for(&peer)?.local;
                a.bytes_out += data.len() as u64;
                Some(local)
            });
        let Some(relay) = relay else {
            self.metrics.dropped += 1;
            return;
        };
        let mut buf = self.take_buffer();
        buf.extend_from_slice(data);
        self.metrics.packets_to_peers += 1;
        self.metrics.bytes_to_peers += data.len() as u64;
        self.queue(Source::Relay(relay), peer, buf);
    }
}

fn take_from(pool: &mut Vec<Vec<u8>>) -> Vec<u8> {
    match pool.pop() {
        Some(mut buf) => {
            buf.clear();
            buf
        }
        None => Vec::with_capacity(BUFFER_CAPACITY),
    }
}

fn recycle_into(pool: &mut Vec<Vec<u8>>, buf: Vec<u8>) {
    if pool.len() < POOL_LIMIT {
        pool.push(buf);
    }
}

fn learn_own_ip(own: &mut Vec<IpAddr>, ip: IpAddr) {
    let ip = canonical(ip);
    if !ip.is_unspecified() && !own.contains(&ip) && own.len() < MAX_OWN_ADDRESSES {
        own.push(ip);
    }
}

/// Data indications need a transaction id but no randomness (nobody answers
/// them); a counter keeps them distinct without a random source.
fn data_indication_id(metrics: &Metrics) -> TransactionId {
    let mut id = [0u8; 12];
    id[4..].copy_from_slice(&metrics.packets_to_clients.to_be_bytes());
    TransactionId::new(id)
}
