//! Per-allocation state: relay addresses, permissions and channel bindings
//! (RFC 8656 §2.2, §9, §12).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use switchboard_stun::TransactionId;

use crate::auth::Seal;
use crate::output::{FiveTuple, RelayAddress};
use crate::policy::canonical;

/// A bound channel: `number` stands for `peer` in ChannelData.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChannelBinding {
    pub(crate) peer: SocketAddr,
    pub(crate) expires: Instant,
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
    /// The key that authenticated the Allocate, and the integrity attribute
    /// it came in; later requests must use the same username and password
    /// algorithm (441 otherwise) and are checked with this key.
    pub(crate) seal: Seal,
    pub(crate) relays: Vec<RelayAddress>,
    pub(crate) expires: Instant,
    /// The Allocate that made it, answered again if retransmitted.
    pub(crate) transaction_id: TransactionId,
    /// Dual allocation asked for IPv6 the host lacks (ADDRESS-ERROR-CODE).
    pub(crate) ipv6_unavailable: bool,
    /// The RESERVATION-TOKEN handed out with this allocation's success.
    pub(crate) reservation_token: Option<[u8; 8]>,
    /// Permissions by peer IP (ports are ignored, RFC 8656 §9), canonical form.
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, ChannelBinding>,
    channel_of_peer: HashMap<SocketAddr, u16>,
    /// The earliest instant the server's timer heap holds for this allocation.
    pub(crate) scheduled: Option<Instant>,
}

impl Allocation {
    pub(crate) fn new(
        five_tuple: FiveTuple,
        username: Arc<str>,
        seal: Seal,
        relays: Vec<RelayAddress>,
        expires: Instant,
    ) -> Self {
        Self {
            five_tuple,
            username,
            seal,
            relays,
            expires,
            transaction_id: TransactionId::default(),
            ipv6_unavailable: false,
            reservation_token: None,
            permissions: HashMap::new(),
            channels: HashMap::new(),
            channel_of_peer: HashMap::new(),
            scheduled: None,
        }
    }

    /// The relay of the peer's family, if the allocation has one.
    pub(crate) fn relay_for(&self, peer: &SocketAddr) -> Option<&RelayAddress> {
        let v4 = peer.is_ipv4();
        self.relays.iter().find(|r| r.local.is_ipv4() == v4)
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

    /// RFC 8656 §11.2: a channel stays with its peer and a peer with its
    /// channel while the binding lives; an expired binding no longer counts.
    pub(crate) fn can_bind(
        &self,
        number: u16,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<(), BindConflict> {
        let live = |n: &u16| self.channels.get(n).filter(|c| c.expires > now);
        if live(&number).is_some_and(|c| c.peer != peer) {
            return Err(BindConflict::ChannelTaken);
        }
        if self
            .channel_of_peer
            .get(&peer)
            .is_some_and(|n| *n != number && live(n).is_some())
        {
            return Err(BindConflict::PeerTaken);
        }
        Ok(())
    }

    /// Binds or refreshes; the caller checked [`Self::can_bind`], so any
    /// other binding of this channel or peer has expired and is dropped.
    /// Returns the change in the number of bindings (-1, 0 or 1).
    pub(crate) fn bind(&mut self, number: u16, peer: SocketAddr, expires: Instant) -> i64 {
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

    /// Drops expired permissions and channels; returns how many of each went.
    pub(crate) fn expire(&mut self, now: Instant) -> (usize, usize) {
        let perms_before = self.permissions.len();
        self.permissions.retain(|_, until| *until > now);
        let chans_before = self.channels.len();
        self.channels.retain(|_, c| c.expires > now);
        let channels = &self.channels;
        self.channel_of_peer.retain(|_, n| channels.contains_key(n));
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
            Seal {
                key: switchboard_stun::LongTermKey::Md5([0; 16]),
                integrity: switchboard_stun::IntegrityAlgorithm::HmacSha1,
            },
            vec![RelayAddress {
                local: relay,
                public: relay,
            }],
            now + Duration::from_secs(600),
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
        assert_eq!(
            a.can_bind(0x4001, p1, later),
            Ok(()),
            "free again after expiry"
        );
        assert_eq!(a.can_bind(0x4000, p2, later), Ok(()));
        let much_later = later + Duration::from_secs(600);
        assert_eq!(
            a.bind(0x4000, p2, much_later),
            0,
            "replaces the expired binding"
        );
        assert_eq!(a.channel_for(&p1, later), None);
        assert_eq!(a.channel_for(&p2, later), Some(0x4000));
        assert_eq!(a.expire(much_later), (0, 1));
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
