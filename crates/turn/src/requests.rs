//! The authenticated TURN requests: Allocate, Refresh, CreatePermission,
//! ChannelBind (RFC 8656 §7–§12), and the long-term credential check.

use std::cmp::Reverse;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_stun::attr::{
    AdditionalAddressFamily, AddressErrorCode, AddressFamily, ChannelNumber, ErrorCode, EvenPort,
    Lifetime, Nonce, PasswordAlgorithms, Realm, RequestedAddressFamily, RequestedTransport,
    ReservationToken, Username, XorPeerAddress,
};
use switchboard_stun::{
    AttrType, Class, IntegrityAlgorithm, Message, MessageBuilder, MessageType, Method,
    PasswordAlgorithm, TransactionId,
};

use crate::allocation::Allocation;
use crate::auth::{OFFERED_ALGORITHMS, OFFERED_ALGORITHMS_WIRE, Seal};
use crate::lifecycle::EndReason;
use crate::nonce::{NonceError, has_password_algorithms_bit};
use crate::output::{Event, Family, FiveTuple, RelayAddress, RelayRequestId, Source};
use crate::quota::{Identity, Owner, source_key};
use crate::refusal::Refusal;
use crate::server::{PendingAllocation, Reservation, TurnServer};

/// Who sent an authenticated request.
struct Authenticated {
    username: Arc<str>,
    seal: Seal,
}

impl TurnServer {
    pub(crate) fn turn_request(
        &mut self,
        now: Instant,
        unix_secs: u64,
        ft: FiveTuple,
        msg: &Message<'_>,
    ) {
        let method = msg.method();
        let known = [
            Method::ALLOCATE,
            Method::REFRESH,
            Method::CREATE_PERMISSION,
            Method::CHANNEL_BIND,
        ];
        if !known.contains(&method) {
            return self.refuse(ft, msg, &Refusal::BadRequest("unknown method"), None);
        }
        let auth = match self.authenticate(now, unix_secs, ft, msg) {
            Ok(auth) => auth,
            Err(refusal) => return self.refuse(ft, msg, &refusal, None),
        };
        let seal = auth.seal;
        let result = self.authenticated_request(now, ft, msg, auth);
        if let Err(refusal) = result {
            self.refuse(ft, msg, &refusal, Some(&seal));
        }
    }

    fn authenticated_request(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        auth: Authenticated,
    ) -> Result<(), Refusal> {
        // DONT-FRAGMENT is not supported: the shell cannot set DF per packet.
        let unknown: Vec<u16> = msg
            .unknown_comprehension_required()
            .chain(
                msg.contains(AttrType::DONT_FRAGMENT)
                    .then_some(AttrType::DONT_FRAGMENT),
            )
            .map(|t| t.0)
            .collect();
        if !unknown.is_empty() {
            return Err(Refusal::UnknownAttributes(unknown));
        }
        let seal = auth.seal;
        match msg.method() {
            Method::ALLOCATE => self.allocate(now, ft, msg, auth),
            Method::REFRESH => self.refresh(now, ft, msg, &seal),
            Method::CREATE_PERMISSION => self.create_permission(now, ft, msg, &seal),
            _ => self.channel_bind(now, ft, msg, &seal),
        }
    }

    /// RFC 8489 §9.2.4. A refusal here is answered without integrity.
    fn authenticate(
        &mut self,
        now: Instant,
        unix_secs: u64,
        ft: FiveTuple,
        msg: &Message<'_>,
    ) -> Result<Authenticated, Refusal> {
        if !msg.has_message_integrity() && !msg.has_message_integrity_sha256() {
            return Err(Refusal::Unauthenticated);
        }
        let (Ok(Some(Username(username))), Ok(Some(Realm(realm))), Ok(Some(Nonce(nonce)))) = (
            msg.get::<Username>(),
            msg.get::<Realm>(),
            msg.get::<Nonce>(),
        ) else {
            self.metrics.auth_failures += 1;
            return Err(Refusal::BadRequest("USERNAME, REALM or NONCE missing"));
        };
        let Some(algorithm) = chosen_algorithm(msg, nonce) else {
            self.metrics.auth_failures += 1;
            return Err(Refusal::BadRequest("password algorithm not as offered"));
        };
        let since_epoch = now.saturating_duration_since(self.epoch);
        match self.nonces.check(nonce, since_epoch, ft.client) {
            Ok(()) => {}
            Err(NonceError::Stale | NonceError::Invalid) => {
                // A nonce of another server instance or an old one: either
                // way the client just needs a fresh one.
                return Err(Refusal::StaleNonce);
            }
        }
        // A client that chose SHA-256 speaks RFC 8489 and so must use the
        // SHA-256 integrity too; answering 401 would only have it repeat
        // the same malformed request with a fresh nonce.
        if algorithm == PasswordAlgorithm::Sha256 && !msg.has_message_integrity_sha256() {
            self.metrics.auth_failures += 1;
            return Err(Refusal::BadRequest(
                "SHA-256 without MESSAGE-INTEGRITY-SHA256",
            ));
        }
        let existing = self
            .by_client
            .get(&ft)
            .and_then(|id| self.allocations.get(id))
            .map(|a| (a.username.clone(), a.seal));
        if let Some((owner, seal)) = existing {
            // Another password algorithm is another credential: the same
            // refusal as another username (RFC 8656 §5, 441).
            if *owner != *username || seal.algorithm() != algorithm {
                self.metrics.auth_failures += 1;
                return Err(Refusal::WrongCredentials);
            }
            // The allocation keeps the key it was made with, so an expiring
            // REST credential does not cut a call that is refreshing.
            if let Ok(integrity) = msg.verify_integrity(seal.key.as_bytes()) {
                return Ok(Authenticated {
                    username: owner,
                    seal: Seal {
                        key: seal.key,
                        integrity,
                    },
                });
            }
            self.metrics.auth_failures += 1;
            return Err(Refusal::Unauthenticated);
        }
        if realm != self.config.realm {
            self.metrics.auth_failures += 1;
            return Err(Refusal::Unauthenticated);
        }
        let keys = self
            .config
            .credentials
            .keys_for(algorithm, username, realm, unix_secs);
        let found = keys.into_iter().find_map(|key| {
            let integrity = msg.verify_integrity(key.as_bytes()).ok()?;
            Some(Seal { key, integrity })
        });
        match found {
            Some(seal) => Ok(Authenticated {
                username: Arc::from(username),
                seal,
            }),
            None => {
                self.metrics.auth_failures += 1;
                Err(Refusal::Unauthenticated)
            }
        }
    }

    /// RFC 8656 §7.2 (Allocate: at least the default) and §7.3 (Refresh:
    /// anything up to the maximum, zero deletes).
    fn lifetime(&self, msg: &Message<'_>, at_least_default: bool) -> Result<Duration, Refusal> {
        let max = self.config.max_lifetime;
        match msg.get::<Lifetime>() {
            Ok(Some(Lifetime(0))) if !at_least_default => Ok(Duration::ZERO),
            Ok(Some(Lifetime(secs))) => {
                let asked = Duration::from_secs(u64::from(secs)).min(max);
                Ok(if at_least_default {
                    asked.max(self.config.default_lifetime.min(max))
                } else {
                    asked
                })
            }
            Ok(None) => Ok(self.config.default_lifetime.min(max)),
            Err(_) => Err(Refusal::BadRequest("malformed LIFETIME")),
        }
    }

    fn allocate(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        auth: Authenticated,
    ) -> Result<(), Refusal> {
        let tid = msg.transaction_id();
        if let Some(&id) = self.by_client.get(&ft) {
            // A retransmitted Allocate gets the success response again.
            if self
                .allocations
                .get(&id)
                .is_some_and(|a| a.transaction_id == tid)
            {
                self.allocate_success(id, now);
                return Ok(());
            }
            return Err(Refusal::AllocationMismatch);
        }
        if self.draining {
            return Err(Refusal::Draining);
        }
        if let Some(pid) = self.pending_by_client.get(&ft) {
            let same = self
                .pending
                .get(pid)
                .is_some_and(|p| p.transaction_id == tid);
            // A retransmission while pending is answered once the relay is bound.
            return if same {
                Ok(())
            } else {
                Err(Refusal::AllocationMismatch)
            };
        }
        match msg.get::<RequestedTransport>() {
            Ok(Some(RequestedTransport::UDP)) => {}
            Ok(Some(_)) => return Err(Refusal::UnsupportedTransport),
            _ => {
                return Err(Refusal::BadRequest(
                    "REQUESTED-TRANSPORT missing or malformed",
                ));
            }
        }
        let even_port = msg
            .get::<EvenPort>()
            .map_err(|_| Refusal::BadRequest("malformed EVEN-PORT"))?;
        let requested = msg.get::<RequestedAddressFamily>();
        let additional = msg.get::<AdditionalAddressFamily>();
        let (Ok(requested), Ok(additional)) = (requested, additional) else {
            return Err(Refusal::BadRequest("malformed address family"));
        };
        let has_token = msg.contains(AttrType::RESERVATION_TOKEN);
        if has_token && (even_port.is_some() || requested.is_some())
            || requested.is_some() && additional.is_some()
        {
            return Err(Refusal::BadRequest("conflicting Allocate attributes"));
        }
        let token = msg
            .get::<ReservationToken>()
            .map_err(|_| Refusal::BadRequest("malformed RESERVATION-TOKEN"))?
            .map(|t| t.0);
        let mut families = Vec::with_capacity(2);
        let mut ipv6_unavailable = false;
        match (requested, additional) {
            (Some(RequestedAddressFamily(f)), None) => families.push(f),
            (None, Some(AdditionalAddressFamily(AddressFamily::V6))) => {
                families.push(AddressFamily::V4);
                if self.config.relay_ipv6 {
                    families.push(AddressFamily::V6);
                } else {
                    ipv6_unavailable = true;
                }
            }
            (None, Some(_)) => {
                return Err(Refusal::BadRequest(
                    "ADDITIONAL-ADDRESS-FAMILY other than IPv6",
                ));
            }
            _ => families.push(AddressFamily::V4),
        }
        let supported = |f: &AddressFamily| match f {
            AddressFamily::V4 => self.config.relay_ipv4,
            AddressFamily::V6 => self.config.relay_ipv6,
        };
        if !families.iter().all(supported) {
            return Err(Refusal::AddressFamilyNotSupported);
        }
        let lifetime = self.lifetime(msg, true)?;
        let is_static = self.config.credentials.is_static_user(&auth.username);
        let owner = Owner {
            identity: Identity::new(&auth.username, is_static),
            source: source_key(ft.client.ip()),
        };
        if let Some(token) = token {
            let reserved = match self.reservations.remove(&token) {
                Some(r) if r.expires > now => r,
                expired_or_unknown => {
                    // Expired but not yet swept by the timer: its socket
                    // must still be released, or it would stay bound.
                    if let Some(r) = expired_or_unknown {
                        self.push_event(Event::ReleaseRelay {
                            local: r.relay.local,
                        });
                        self.quotas.release(&r.owner);
                    }
                    return Err(Refusal::ReservationUnusable);
                }
            };
            // The held port's slot passes to the allocation that uses it.
            self.quotas.release(&reserved.owner);
            if let Err(refusal) = self.quotas.check(&owner, 1, &self.config) {
                self.quotas.take(&reserved.owner, 1);
                self.reservations.insert(token, reserved);
                return Err(refusal);
            }
            self.quotas.take(&owner, 1);
            let secs = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
            let aid = self.install_allocation(
                now,
                ft,
                (auth.username, owner),
                auth.seal,
                vec![reserved.relay],
                secs,
                tid,
            );
            self.allocate_success(aid, now);
            return Ok(());
        }
        self.quotas.check(&owner, 1, &self.config)?;
        // A reservation holds a port too, so it takes a second slot; without
        // room for it the Allocate succeeds without a token, as when the
        // port cannot be bound.
        let reserve = matches!(even_port, Some(EvenPort { reserve: true }))
            && families.len() == 1
            && self.quotas.check(&owner, 2, &self.config).is_ok();
        self.quotas.take(&owner, 1 + usize::from(reserve));
        let even_port = even_port.is_some();
        let pid = self.next_id;
        self.next_id += 1;
        let mut waiting = Vec::with_capacity(families.len());
        for family in families {
            let id = RelayRequestId(self.next_id);
            self.next_id += 1;
            waiting.push(id);
            self.pending_by_request.insert(id, pid);
            let family = match family {
                AddressFamily::V4 => Family::V4,
                AddressFamily::V6 => Family::V6,
            };
            self.push_event(Event::BindRelay {
                id,
                family,
                near: ft.server,
                even_port,
                exact: None,
            });
        }
        self.pending_by_client.insert(ft, pid);
        self.pending.insert(
            pid,
            PendingAllocation {
                five_tuple: ft,
                transaction_id: tid,
                username: auth.username,
                owner,
                seal: auth.seal,
                lifetime_secs: u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX),
                waiting,
                bound: Vec::new(),
                failed: false,
                cancelled: false,
                ipv6_unavailable,
                reserve,
                reservation_request: None,
                reservation: None,
            },
        );
        Ok(())
    }

    /// The shell's answer to [`Event::BindRelay`]: the bound socket's
    /// addresses, or `None` when no port of the range could be bound.
    pub fn relay_bound(&mut self, now: Instant, id: RelayRequestId, result: Option<RelayAddress>) {
        self.latest = self.latest.max(now);
        let Some(pid) = self.pending_by_request.remove(&id) else {
            // Not ours (or answered twice): make sure the socket is not leaked.
            if let Some(addr) = result {
                self.push_event(Event::ReleaseRelay { local: addr.local });
            }
            return;
        };
        let Some(p) = self.pending.get_mut(&pid) else {
            return;
        };
        p.waiting.retain(|w| *w != id);
        if p.reservation_request == Some(id) {
            // Failing to reserve is not fatal: the Allocate succeeds without a token.
            p.reservation = result;
        } else {
            match result {
                Some(addr) => p.bound.push(addr),
                None => p.failed = true,
            }
        }
        if !p.waiting.is_empty() {
            return;
        }
        if p.reserve
            && p.reservation_request.is_none()
            && !p.failed
            && !p.cancelled
            && let Some(next) = p.bound.first().and_then(|r| next_port(r.local))
        {
            let rid = RelayRequestId(self.next_id);
            self.next_id += 1;
            p.reservation_request = Some(rid);
            p.waiting.push(rid);
            self.pending_by_request.insert(rid, pid);
            self.push_event(Event::BindRelay {
                id: rid,
                family: Family::of(&next),
                near: next,
                even_port: false,
                exact: Some(next),
            });
            return;
        }
        let Some(p) = self.pending.remove(&pid) else {
            return;
        };
        if !p.cancelled {
            self.pending_by_client.remove(&p.five_tuple);
        }
        if p.failed || p.cancelled {
            for relay in p.bound.iter().chain(p.reservation.iter()) {
                self.push_event(Event::ReleaseRelay { local: relay.local });
            }
            self.quotas.release(&p.owner);
            if p.reserve {
                self.quotas.release(&p.owner);
            }
            if p.failed {
                self.metrics.relay_bind_failures += 1;
                if !p.cancelled {
                    let ty = MessageType::new(Method::ALLOCATE, Class::ErrorResponse);
                    self.refuse_to(
                        p.five_tuple,
                        ty,
                        p.transaction_id,
                        &Refusal::RelayUnavailable,
                        Some(&p.seal),
                    );
                }
            }
            return;
        }
        let token = match p.reservation {
            Some(relay) => Some(self.reserve(relay, now, p.owner.clone())),
            None => {
                if p.reserve {
                    self.quotas.release(&p.owner);
                }
                None
            }
        };
        let aid = self.install_allocation(
            now,
            p.five_tuple,
            (p.username, p.owner),
            p.seal,
            p.bound,
            p.lifetime_secs,
            p.transaction_id,
        );
        if let Some(a) = self.allocations.get_mut(&aid) {
            a.ipv6_unavailable = p.ipv6_unavailable;
            a.reservation_token = token;
        }
        self.allocate_success(aid, now);
    }

    /// Holds `relay` for 30 s under a fresh token (RFC 8656 §7.2 suggests
    /// about that long).
    fn reserve(&mut self, relay: RelayAddress, now: Instant, owner: Owner) -> [u8; 8] {
        let token = self.nonces.reservation_token(self.next_id);
        self.next_id += 1;
        let expires = now + Duration::from_secs(30);
        self.reservations.insert(
            token,
            Reservation {
                relay,
                expires,
                owner,
            },
        );
        self.reservation_timers.push(Reverse((expires, token)));
        token
    }

    #[allow(clippy::too_many_arguments)]
    fn install_allocation(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        (username, owner): (Arc<str>, Owner),
        key: Seal,
        relays: Vec<RelayAddress>,
        lifetime_secs: u32,
        tid: TransactionId,
    ) -> u64 {
        let aid = self.next_id;
        self.next_id += 1;
        let expires = now + Duration::from_secs(u64::from(lifetime_secs));
        let mut alloc = Allocation::new(
            ft,
            username,
            owner,
            key,
            relays,
            (now, expires),
            &self.hasher,
        );
        alloc.transaction_id = tid;
        self.learn_own_address(ft.server.ip());
        for relay in &alloc.relays {
            self.by_relay.insert(relay.local, aid);
            self.public_relays.insert(relay.public, aid);
            self.learn_own_address(relay.local.ip());
            self.learn_own_address(relay.public.ip());
        }
        self.by_client.insert(ft, aid);
        self.allocations.insert(aid, alloc);
        self.metrics.allocations += 1;
        self.metrics.allocations_created += 1;
        self.schedule(aid, expires);
        self.announce_created(aid);
        aid
    }

    fn allocate_success(&mut self, id: u64, now: Instant) {
        let Some(a) = self.allocations.get(&id) else {
            return;
        };
        let ft = a.five_tuple;
        let seal = a.seal;
        let tid = a.transaction_id;
        let relays: Vec<SocketAddr> = a.relays.iter().map(|r| r.public).collect();
        let remaining = secs(a.expires.saturating_duration_since(now));
        let ipv6_unavailable = a.ipv6_unavailable;
        let token = a.reservation_token;
        let ty = MessageType::new(Method::ALLOCATE, Class::SuccessResponse);
        self.respond(ft, ty, tid, Some(&seal), |b| {
            for relay in relays {
                b.add_xor_relayed_address(relay);
            }
            if ipv6_unavailable {
                b.add(&AddressErrorCode {
                    family: AddressFamily::V6,
                    code: ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
                    reason: "Address Family not Supported",
                });
            }
            if let Some(token) = token {
                b.add(&ReservationToken(token));
            }
            b.add_lifetime(remaining).add_xor_mapped_address(ft.client);
        });
    }

    fn refresh(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        key: &Seal,
    ) -> Result<(), Refusal> {
        let Some(&id) = self.by_client.get(&ft) else {
            return Err(Refusal::AllocationMismatch);
        };
        let lifetime = self.lifetime(msg, false)?;
        match msg.get::<RequestedAddressFamily>() {
            Ok(None) => {}
            Ok(Some(RequestedAddressFamily(family))) => {
                let has = self
                    .allocations
                    .get(&id)
                    .is_some_and(|a| a.has_family(family));
                if !has {
                    return Err(Refusal::PeerAddressFamilyMismatch);
                }
            }
            Err(_) => return Err(Refusal::BadRequest("malformed REQUESTED-ADDRESS-FAMILY")),
        }
        if lifetime.is_zero() {
            self.delete_allocation(id, EndReason::Deleted);
        } else if let Some(a) = self.allocations.get_mut(&id) {
            let at = a.refresh(now, lifetime);
            self.schedule(id, at);
        }
        let granted = secs(lifetime);
        self.respond(
            ft,
            msg.message_type().success(),
            msg.transaction_id(),
            Some(key),
            |b| {
                b.add_lifetime(granted);
            },
        );
        Ok(())
    }

    /// The peers of a CreatePermission or ChannelBind, checked against the
    /// allocation's families (443) and the policy (403).
    fn checked_peers(&mut self, msg: &Message<'_>, id: u64) -> Result<Vec<SocketAddr>, Refusal> {
        let mut peers = Vec::new();
        for peer in msg.get_all::<XorPeerAddress>() {
            match peer {
                Ok(XorPeerAddress(addr)) => peers.push(addr),
                Err(_) => return Err(Refusal::BadRequest("malformed XOR-PEER-ADDRESS")),
            }
        }
        if peers.is_empty() {
            return Err(Refusal::BadRequest("no XOR-PEER-ADDRESS"));
        }
        let alloc = self
            .allocations
            .get(&id)
            .ok_or(Refusal::AllocationMismatch)?;
        alloc.check_families(&peers)?;
        if peers.iter().any(|p| !self.peer_allowed(*p)) {
            return Err(Refusal::ForbiddenPeer);
        }
        Ok(peers)
    }

    fn create_permission(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        key: &Seal,
    ) -> Result<(), Refusal> {
        let Some(&id) = self.by_client.get(&ft) else {
            return Err(Refusal::AllocationMismatch);
        };
        let peers = self.checked_peers(msg, id)?;
        let until = now + self.config.permission_lifetime;
        let a = self
            .allocations
            .get_mut(&id)
            .ok_or(Refusal::AllocationMismatch)?;
        let fresh = a.permit_all(&peers, until)?;
        self.metrics.permissions += fresh as u64;
        self.schedule(id, until);
        self.respond(
            ft,
            msg.message_type().success(),
            msg.transaction_id(),
            Some(key),
            |_| {},
        );
        Ok(())
    }

    fn channel_bind(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        key: &Seal,
    ) -> Result<(), Refusal> {
        let Some(&id) = self.by_client.get(&ft) else {
            return Err(Refusal::AllocationMismatch);
        };
        let legacy = self.config.allow_rfc5766_channels;
        let number = match msg.get::<ChannelNumber>() {
            Ok(Some(n)) if n.is_valid() || legacy && (0x5000..=0x7FFE).contains(&n.0) => n.0,
            _ => {
                return Err(Refusal::BadRequest(
                    "CHANNEL-NUMBER missing or out of range",
                ));
            }
        };
        let peers = self.checked_peers(msg, id)?;
        let [peer] = peers[..] else {
            return Err(Refusal::BadRequest("ChannelBind names one peer"));
        };
        let channel_until = now + self.config.channel_lifetime;
        let permission_until = now + self.config.permission_lifetime;
        let a = self
            .allocations
            .get_mut(&id)
            .ok_or(Refusal::AllocationMismatch)?;
        let bound = a.bind_channel(number, peer, now, channel_until, permission_until)?;
        self.metrics.channels = self.metrics.channels.saturating_add_signed(bound.channels);
        if bound.new_permission {
            self.metrics.permissions += 1;
        }
        self.schedule(id, permission_until.min(channel_until));
        self.respond(
            ft,
            msg.message_type().success(),
            msg.transaction_id(),
            Some(key),
            |_| {},
        );
        Ok(())
    }

    /// Answers `msg` with the error response for `refusal`: the one place
    /// a refusal becomes bytes on the wire.
    pub(crate) fn refuse(
        &mut self,
        ft: FiveTuple,
        msg: &Message<'_>,
        refusal: &Refusal,
        seal: Option<&Seal>,
    ) {
        self.refuse_to(
            ft,
            msg.message_type().error(),
            msg.transaction_id(),
            refusal,
            seal,
        );
    }

    fn refuse_to(
        &mut self,
        ft: FiveTuple,
        ty: MessageType,
        tid: TransactionId,
        refusal: &Refusal,
        seal: Option<&Seal>,
    ) {
        if refusal.is_quota() {
            self.metrics.quota_rejections += 1;
        }
        if *refusal == Refusal::Draining {
            self.metrics.draining_refusals += 1;
        }
        if *refusal == Refusal::ForbiddenPeer {
            self.metrics.denied_peers += 1;
        }
        if refusal.is_challenge()
            && !self
                .challenges
                .allow(source_key(ft.client.ip()), self.latest)
        {
            self.metrics.challenges_dropped += 1;
            return;
        }
        let nonce = refusal.is_challenge().then(|| {
            self.nonces
                .issue(self.latest.saturating_duration_since(self.epoch), ft.client)
        });
        let realm = self.config.realm.clone();
        self.respond(ft, ty, tid, seal, |b| {
            b.add(&ErrorCode {
                code: refusal.code(),
                reason: refusal.reason(),
            });
            if let Some(n) = &nonce {
                b.add_realm(&realm);
                b.add_nonce(n.as_bytes());
                b.add(&PasswordAlgorithms::new(&OFFERED_ALGORITHMS));
            }
            if let Refusal::UnknownAttributes(types) = refusal {
                b.add_unknown_attributes(types);
            }
        });
    }

    /// Builds a response, seals it with SOFTWARE, the integrity attribute the
    /// request used (when `seal` is given, RFC 8489 §9.2.4) and FINGERPRINT,
    /// and queues it to the client.
    pub(crate) fn respond(
        &mut self,
        ft: FiveTuple,
        ty: MessageType,
        tid: TransactionId,
        seal: Option<&Seal>,
        fill: impl FnOnce(&mut MessageBuilder<'_>),
    ) {
        let mut buf = self.take_buffer();
        let ok = {
            let mut b = MessageBuilder::new(&mut buf, ty, tid);
            fill(&mut b);
            if let Some(software) = &self.config.software {
                b.add_software(software);
            }
            match seal {
                Some(Seal {
                    key,
                    integrity: IntegrityAlgorithm::HmacSha1,
                }) => {
                    b.add_message_integrity(key.as_bytes());
                }
                Some(Seal {
                    key,
                    integrity: IntegrityAlgorithm::HmacSha256,
                }) => {
                    b.add_message_integrity_sha256(key.as_bytes());
                }
                None => {}
            }
            b.add_fingerprint();
            b.finish().is_ok()
        };
        if ok {
            self.queue(Source::Client(ft), ft.client, buf);
        } else {
            self.recycle(buf);
        }
    }
}

/// The password algorithm of a request, or `None` for a 400 (RFC 8489
/// §9.2.4). Once the nonce announces password algorithms, a request that
/// names one must also echo PASSWORD-ALGORITHMS exactly as we sent it, so a
/// man in the middle who trimmed our list cannot bid a client down; one that
/// names neither is a classic RFC 5389 client and gets MD5.
fn chosen_algorithm(msg: &Message<'_>, nonce: &[u8]) -> Option<PasswordAlgorithm> {
    if !has_password_algorithms_bit(nonce) {
        // Not one of our nonces: the nonce check answers 438 next.
        return Some(PasswordAlgorithm::Md5);
    }
    let offered = msg.get_raw(AttrType::PASSWORD_ALGORITHMS);
    match (offered, msg.get::<PasswordAlgorithm>()) {
        (None, Ok(None)) => Some(PasswordAlgorithm::Md5),
        (Some(list), Ok(Some(chosen)))
            if list == OFFERED_ALGORITHMS_WIRE && OFFERED_ALGORITHMS.contains(&chosen) =>
        {
            Some(chosen)
        }
        _ => None,
    }
}

/// The local address one port above `addr`, for a reservation.
fn next_port(addr: SocketAddr) -> Option<SocketAddr> {
    Some(SocketAddr::new(addr.ip(), addr.port().checked_add(1)?))
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}
