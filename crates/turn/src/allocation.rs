//! Per-allocation state: relay addresses, permissions and channel bindings
//! (RFC 8656 §2.2, §9, §12).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_stun::TransactionId;

use switchboard_stun::attr::AddressFamily;

use crate::auth::Seal;
use crate::output::{FiveTuple, RelayAddress};
use crate::policy::canonical;
use crate::quota::Owner;
use crate::refusal::Refusal;
use crate::server::{Map, MapHasher};

/// Permissions one allocation may hold: a browser needs a handful, and the
/// cap keeps one client from growing an allocation without bound. A
/// CreatePermission or ChannelBind that would install more gets 508.
pub(crate) const MAX_PERMISSIONS_PER_ALLOCATION: usize = 1024;

/// What a successful ChannelBind changed, for the server's gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChannelBound {
    /// Change in the number of bindings (-1, 0 or 1).
    pub(crate) channels: i64,
    /// Whether the binding installed a new permission.
    pub(crate) new_permission: bool,
}

/// A bound channel: `number` stands for `peer` in ChannelData.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChannelBinding {
    pub(crate) peer: SocketAddr,
    pub(crate) expires: Instant,
}

/// How long after a channel binding expires its channel number and peer
/// stay reserved for each other (RFC 8656 §12): a late ChannelData for the
/// old pair must not reach a new peer.
pub(crate) const CHANNEL_REUSE_HOLD: Duration = Duration::from_secs(300);

/// An expired binding whose channel and peer are still held for each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HeldChannel {
    peer: SocketAddr,
    until: Instant,
}

/// Why a ChannelBind cannot be honoured (both are 400, RFC 8656 §11.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BindConflict {
    /// The channel is bound to another peer.
    ChannelTaken,
    /// The peer is bound to another channel.
    PeerTaken,
}

/// One allocation: a client 5-tuple, its relay sockets, and whom it may talk to.
#[derive(Debug)]
pub(crate) struct Allocation {
    pub(crate) five_tuple: FiveTuple,
    pub(crate) username: Arc<str>,
    /// Whose quota slot this allocation holds.
    pub(crate) owner: Owner,
    /// The key that authenticated the Allocate, and the integrity attribute
    /// it came in; later requests must use the same username and password
    /// algorithm (441 otherwise) and are checked with this key.
    pub(crate) seal: Seal,
    pub(crate) relays: Vec<RelayAddress>,
    pub(crate) created: Instant,
    pub(crate) expires: Instant,
    /// Payload bytes relayed from peers to the client so far.
    pub(crate) bytes_in: u64,
    /// Payload bytes relayed from the client to peers so far.
    pub(crate) bytes_out: u64,
    /// The Allocate that made it, answered again if retransmitted.
    pub(crate) transaction_id: TransactionId,
    /// Dual allocation asked for IPv6 the host lacks (ADDRESS-ERROR-CODE).
    pub(crate) ipv6_unavailable: bool,
    /// The RESERVATION-TOKEN handed out with this allocation's success.
    pub(crate) reservation_token: Option<[u8; 8]>,
    /// Permissions by peer IP (ports are ignored, RFC 8656 §9), canonical form.
    permissions: Map<IpAddr, Instant>,
    channels: Map<u16, ChannelBinding>,
    channel_of_peer: Map<SocketAddr, u16>,
    /// Expired bindings within [`CHANNEL_REUSE_HOLD`], by channel number, so
    /// at most one per channel number: bounded by the channel range.
    held: Map<u16, HeldChannel>,
    held_channel_of_peer: Map<SocketAddr, u16>,
    /// The earliest instant the server's timer heap holds for this allocation.
    pub(crate) scheduled: Option<Instant>,
}

impl Allocation {
    pub(crate) fn new(
        five_tuple: FiveTuple,
        username: Arc<str>,
        owner: Owner,
        seal: Seal,
        relays: Vec<RelayAddress>,
        (created, expires): (Instant, Instant),
        hasher: &MapHasher,
    ) -> Self {
        Self {
            five_tuple,
            username,
            owner,
            seal,
            relays,
            created,
            expires,
            bytes_in: 0,
            bytes_out: 0,
            transaction_id: TransactionId::default(),
            ipv6_unavailable: false,
            reservation_token: None,
            permissions: Map::with_hasher(hasher.clone()),
            channels: Map::with_hasher(hasher.clone()),
            channel_of_peer: Map::with_hasher(hasher.clone()),
            held: Map::with_hasher(hasher.clone()),
            held_channel_of_peer: Map::with_hasher(hasher.clone()),
            scheduled: None,
        }
    }

    /// The relay of the peer's family, if the allocation has one.
    pub(crate) fn relay_for(&self, peer: &SocketAddr) -> Option<&RelayAddress> {
        let v4 = peer.is_ipv4();
        self.relays.iter().find(|r| r.local.is_ipv4() == v4)
    }

    /// Whether the allocation has a relay of `family`.
    pub(crate) fn has_family(&self, family: AddressFamily) -> bool {
        self.relays
            .iter()
            .any(|r| AddressFamily::of(&r.local) == family)
    }

    /// Refuses peers that no relay of this allocation can reach (443).
    pub(crate) fn check_families(&self, peers: &[SocketAddr]) -> Result<(), Refusal> {
        if peers.iter().any(|p| self.relay_for(p).is_none()) {
            return Err(Refusal::PeerAddressFamilyMismatch);
        }
        Ok(())
    }

    /// Moves the expiry (Refresh with a non-zero lifetime).
    pub(crate) fn refresh(&mut self, now: Instant, lifetime: Duration) -> Instant {
        self.expires = now + lifetime;
        self.expires
    }

    /// CreatePermission: installs or refreshes a permission for each peer's
    /// IP, or changes nothing and refuses (508) when the new ones would
    /// take the allocation past [`MAX_PERMISSIONS_PER_ALLOCATION`].
    /// Returns how many are new.
    pub(crate) fn permit_all(
        &mut self,
        peers: &[SocketAddr],
        until: Instant,
    ) -> Result<usize, Refusal> {
        let mut fresh: Vec<IpAddr> = Vec::new();
        for ip in peers.iter().map(|p| canonical(p.ip())) {
            if !self.permissions.contains_key(&ip) && !fresh.contains(&ip) {
                fresh.push(ip);
            }
        }
        if self.permissions.len() + fresh.len() > MAX_PERMISSIONS_PER_ALLOCATION {
            return Err(Refusal::PermissionLimit);
        }
        for peer in peers {
            self.permit(peer.ip(), until);
        }
        Ok(fresh.len())
    }

    /// ChannelBind (RFC 8656 §12): binds or refreshes the channel and
    /// installs or refreshes the peer's permission, under the same cap as
    /// CreatePermission's (508, nothing changed).
    pub(crate) fn bind_channel(
        &mut self,
        number: u16,
        peer: SocketAddr,
        now: Instant,
        channel_until: Instant,
        permission_until: Instant,
    ) -> Result<ChannelBound, Refusal> {
        match self.can_bind(number, peer, now) {
            Ok(()) => {}
            Err(BindConflict::ChannelTaken) => {
                return Err(Refusal::BadRequest("channel bound to another peer"));
            }
            Err(BindConflict::PeerTaken) => {
                return Err(Refusal::BadRequest("peer bound to another channel"));
            }
        }
        // A ChannelBind installs a permission too (RFC 8656 §12): without
        // this cap, bindings would grow the permissions past it.
        if !self.permissions.contains_key(&canonical(peer.ip()))
            && self.permissions.len() >= MAX_PERMISSIONS_PER_ALLOCATION
        {
            return Err(Refusal::PermissionLimit);
        }
        let channels = self.bind(number, peer, channel_until);
        let new_permission = self.permit(peer.ip(), permission_until);
        Ok(ChannelBound {
            channels,
            new_permission,
        })
    }

    /// Installs or refreshes a permission; returns whether it is new.
    pub(crate) fn permit(&mut self, ip: IpAddr, expires: Instant) -> bool {
        self.permissions.insert(canonical(ip), expires).is_none()
    }

    pub(crate) fn is_permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions
            .get(&canonical(ip))
            .is_some_and(|&until| until > now)
    }

    /// RFC 8656 §11.2 and §12: a channel stays with its peer and a peer
    /// with its channel while the binding lives and for
    /// [`CHANNEL_REUSE_HOLD`] after it expires; rebinding the same pair is
    /// always fine.
    pub(crate) fn can_bind(
        &self,
        number: u16,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<(), BindConflict> {
        if self
            .holder_of_channel(number, now)
            .is_some_and(|p| p != peer)
        {
            return Err(BindConflict::ChannelTaken);
        }
        if self.holder_of_peer(peer, now).is_some_and(|n| n != number) {
            return Err(BindConflict::PeerTaken);
        }
        Ok(())
    }

    /// The peer `number` is bound or held to at `now`. A binding past its
    /// expiry but not yet swept by the timer holds from its expiry.
    fn holder_of_channel(&self, number: u16, now: Instant) -> Option<SocketAddr> {
        let bound = self
            .channels
            .get(&number)
            .filter(|c| c.expires + CHANNEL_REUSE_HOLD > now)
            .map(|c| c.peer);
        let held = || {
            self.held
                .get(&number)
                .filter(|h| h.until > now)
                .map(|h| h.peer)
        };
        bound.or_else(held)
    }

    /// The channel `peer` is bound or held to at `now`.
    fn holder_of_peer(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        let bound = self.channel_of_peer.get(&peer).copied().filter(|n| {
            self.channels
                .get(n)
                .is_some_and(|c| c.expires + CHANNEL_REUSE_HOLD > now)
        });
        let held = || {
            self.held_channel_of_peer
                .get(&peer)
                .copied()
                .filter(|n| self.held.get(n).is_some_and(|h| h.until > now))
        };
        bound.or_else(held)
    }

    /// Binds or refreshes; the caller checked [`Self::can_bind`], so any
    /// other binding or hold of this channel or peer is over and is dropped.
    /// Returns the change in the number of bindings (-1, 0 or 1).
    pub(crate) fn bind(&mut self, number: u16, peer: SocketAddr, expires: Instant) -> i64 {
        if let Some(h) = self.held.remove(&number) {
            self.held_channel_of_peer.remove(&h.peer);
        }
        if let Some(n) = self.held_channel_of_peer.remove(&peer) {
            self.held.remove(&n);
        }
        let mut delta = 1;
        if let Some(old) = self
            .channels
            .insert(number, ChannelBinding { peer, expires })
        {
            delta -= 1;
            if old.peer != peer {
                self.channel_of_peer.remove(&old.peer);
            }
        }
        if let Some(old_number) = self.channel_of_peer.insert(peer, number)
            && old_number != number
            && self.channels.remove(&old_number).is_some()
        {
            delta -= 1;
        }
        delta
    }

    /// The peer of a live channel.
    pub(crate) fn channel_peer(&self, number: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .get(&number)
            .filter(|c| c.expires > now)
            .map(|c| c.peer)
    }

    /// The live channel bound to `peer`.
    pub(crate) fn channel_for(&self, peer: &SocketAddr, now: Instant) -> Option<u16> {
        let number = *self.channel_of_peer.get(peer)?;
        self.channels
            .get(&number)
            .filter(|c| c.expires > now)
            .map(|_| number)
    }

    pub(crate) fn permission_count(&self) -> usize {
        self.permissions.len()
    }

    pub(crate) fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Drops expired permissions and channels, holding the channels'
    /// numbers and peers for [`CHANNEL_REUSE_HOLD`], and ends holds that are
    /// over; returns how many permissions and channels went.
    pub(crate) fn expire(&mut self, now: Instant) -> (usize, usize) {
        let perms_before = self.permissions.len();
        self.permissions.retain(|_, until| *until > now);
        let chans_before = self.channels.len();
        let (held, held_index) = (&mut self.held, &mut self.held_channel_of_peer);
        self.channels.retain(|&number, c| {
            if c.expires > now {
                return true;
            }
            held_index.insert(c.peer, number);
            held.insert(
                number,
                HeldChannel {
                    peer: c.peer,
                    until: c.expires + CHANNEL_REUSE_HOLD,
                },
            );
            false
        });
        let channels = &self.channels;
        self.channel_of_peer.retain(|_, n| channels.contains_key(n));
        let held_index = &mut self.held_channel_of_peer;
        self.held.retain(|_, h| {
            let holding = h.until > now;
            if !holding {
                held_index.remove(&h.peer);
            }
            holding
        });
        (
            perms_before - self.permissions.len(),
            chans_before - self.channels.len(),
        )
    }

    /// The earliest instant at which something in this allocation expires.
    pub(crate) fn next_deadline(&self) -> Instant {
        let mut next = self.expires;
        for &until in self.permissions.values() {
            next = next.min(until);
        }
        for c in self.channels.values() {
            next = next.min(c.expires);
        }
        for h in self.held.values() {
            next = next.min(h.until);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Transport;
    use std::time::Duration;

    fn alloc(now: Instant) -> Allocation {
        let ft = FiveTuple {
            transport: Transport::Udp,
            client: "192.0.2.1:1000".parse().unwrap(),
            server: "192.0.2.2:3478".parse().unwrap(),
        };
        let relay: SocketAddr = "192.0.2.2:50000".parse().unwrap();
        Allocation::new(
            ft,
            Arc::from("u"),
            Owner {
                identity: crate::quota::Identity::new("u", true),
                source: ft.client.ip(),
            },
            Seal {
                key: switchboard_stun::LongTermKey::Md5([0; 16]),
                integrity: switchboard_stun::IntegrityAlgorithm::HmacSha1,
            },
            vec![RelayAddress {
                local: relay,
                public: relay,
            }],
            (now, now + Duration::from_secs(600)),
            &MapHasher::fixed(),
        )
    }

    #[test]
    fn channel_rebinding_rules() {
        let now = Instant::now();
        let mut a = alloc(now);
        let p1: SocketAddr = "198.51.100.1:1".parse().unwrap();
        let p2: SocketAddr = "198.51.100.2:1".parse().unwrap();
        let later = now + Duration::from_secs(600);
        assert_eq!(a.can_bind(0x4000, p1, now), Ok(()));
        assert_eq!(a.bind(0x4000, p1, later), 1);
        assert_eq!(a.can_bind(0x4000, p1, now), Ok(()), "same pair refreshes");
        assert_eq!(a.bind(0x4000, p1, later), 0);
        assert_eq!(a.can_bind(0x4000, p2, now), Err(BindConflict::ChannelTaken));
        assert_eq!(a.can_bind(0x4001, p1, now), Err(BindConflict::PeerTaken));
        assert_eq!(a.channel_peer(0x4000, now), Some(p1));
        assert_eq!(a.channel_for(&p1, now), Some(0x4000));
        assert_eq!(
            a.channel_peer(0x4000, later),
            None,
            "expired at its instant"
        );
        // Expired but not yet swept, then swept: held for five minutes.
        for swept in [false, true] {
            if swept {
                assert_eq!(a.expire(later), (0, 1));
                assert_eq!(a.channel_count(), 0);
            }
            assert_eq!(a.can_bind(0x4001, p1, later), Err(BindConflict::PeerTaken));
            assert_eq!(
                a.can_bind(0x4000, p2, later),
                Err(BindConflict::ChannelTaken)
            );
            assert_eq!(a.can_bind(0x4000, p1, later), Ok(()), "same pair");
            let almost = later + CHANNEL_REUSE_HOLD - Duration::from_secs(1);
            assert_eq!(
                a.can_bind(0x4000, p2, almost),
                Err(BindConflict::ChannelTaken)
            );
        }
        a.expires = later + Duration::from_secs(3600);
        assert_eq!(
            a.next_deadline(),
            later + CHANNEL_REUSE_HOLD,
            "pruned on time"
        );
        let free = later + CHANNEL_REUSE_HOLD;
        assert_eq!(a.can_bind(0x4001, p1, free), Ok(()), "free after the hold");
        assert_eq!(a.can_bind(0x4000, p2, free), Ok(()));
        assert_eq!(a.expire(free), (0, 0));
        assert!(a.held.is_empty() && a.held_channel_of_peer.is_empty());
        let much_later = free + Duration::from_secs(600);
        assert_eq!(a.bind(0x4000, p2, much_later), 1);
        assert_eq!(a.channel_for(&p1, free), None);
        assert_eq!(a.channel_for(&p2, free), Some(0x4000));
    }

    #[test]
    fn rebinding_a_held_pair_revives_it() {
        let now = Instant::now();
        let mut a = alloc(now);
        let p1: SocketAddr = "198.51.100.1:1".parse().unwrap();
        let p2: SocketAddr = "198.51.100.2:1".parse().unwrap();
        let later = now + Duration::from_secs(600);
        a.bind(0x4000, p1, later);
        assert_eq!(a.expire(later), (0, 1));
        assert_eq!(a.bind(0x4000, p1, later + Duration::from_secs(600)), 1);
        assert!(a.held.is_empty() && a.held_channel_of_peer.is_empty());
        assert_eq!(a.channel_peer(0x4000, later), Some(p1));
        // An unswept expired binding replaced after its hold is over.
        let free = later + Duration::from_secs(600) + CHANNEL_REUSE_HOLD;
        assert_eq!(a.can_bind(0x4000, p2, free), Ok(()));
        assert_eq!(a.bind(0x4000, p2, free + Duration::from_secs(600)), 0);
        assert_eq!(a.channel_for(&p1, free), None);
    }

    #[test]
    fn permissions_ignore_port_and_spelling() {
        let now = Instant::now();
        let mut a = alloc(now);
        assert!(a.permit(
            "198.51.100.1".parse().unwrap(),
            now + Duration::from_secs(300)
        ));
        assert!(a.is_permitted("::ffff:198.51.100.1".parse().unwrap(), now));
        assert!(!a.is_permitted("198.51.100.2".parse().unwrap(), now));
        assert_eq!(a.next_deadline(), now + Duration::from_secs(300));
        assert_eq!(a.expire(now + Duration::from_secs(300)), (1, 0));
    }
}
