//! Allocation quotas: per identity, per source and for the whole server.
//!
//! A quota slot is held by a live allocation, by an Allocate waiting for
//! its relay, and by an EVEN-PORT reservation until it is used or expires:
//! each holds a relay port.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use crate::config::ServerConfig;
use crate::policy::canonical;
use crate::refusal::Refusal;

/// Who a per-user quota counts: a static user by name, a REST credential
/// by what follows its expiry. Minted names are `"<expiry>:<id>"` with a
/// fresh expiry (and often a fresh id) per session, so counting the whole
/// name would limit nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Identity {
    /// A configured static user.
    Static(Arc<str>),
    /// The part of a REST username after the first ':' (empty without one).
    Rest(Arc<str>),
}

impl Identity {
    pub(crate) fn new(username: &str, is_static: bool) -> Self {
        if is_static {
            return Identity::Static(Arc::from(username));
        }
        let id = username.split_once(':').map_or("", |(_, id)| id);
        Identity::Rest(Arc::from(id))
    }
}

/// The quota keys of one allocation, pending Allocate or reservation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Owner {
    pub(crate) identity: Identity,
    /// [`source_key`] of the client's address.
    pub(crate) source: IpAddr,
}

/// The key a client address is limited under: the canonical IPv4 address,
/// or the IPv6 /64 (one subscriber's usual share, which a client can walk
/// through freely).
pub(crate) fn source_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

/// Quota slots held, by identity and by source.
#[derive(Debug, Default)]
pub(crate) struct Quotas {
    per_user: HashMap<Identity, usize>,
    per_source: HashMap<IpAddr, usize>,
    /// All slots held (allocations, pending Allocates, reservations).
    total: usize,
}

impl Quotas {
    /// Whether `owner` may take `slots` more slots.
    pub(crate) fn check(
        &self,
        owner: &Owner,
        slots: usize,
        config: &ServerConfig,
    ) -> Result<(), Refusal> {
        if self.total + slots > config.max_allocations {
            return Err(Refusal::ServerQuota);
        }
        let user = self.per_user.get(&owner.identity).copied().unwrap_or(0);
        if user + slots > config.max_allocations_per_user {
            return Err(Refusal::UserQuota);
        }
        let source = self.per_source.get(&owner.source).copied().unwrap_or(0);
        if config.max_allocations_per_ip != 0 && source + slots > config.max_allocations_per_ip {
            return Err(Refusal::SourceQuota);
        }
        Ok(())
    }

    /// Takes `slots` slots for `owner`; the caller checked them.
    pub(crate) fn take(&mut self, owner: &Owner, slots: usize) {
        *self.per_user.entry(owner.identity.clone()).or_insert(0) += slots;
        *self.per_source.entry(owner.source).or_insert(0) += slots;
        self.total += slots;
    }

    /// Gives back one slot of `owner`.
    pub(crate) fn release(&mut self, owner: &Owner) {
        fn down<K: Eq + std::hash::Hash>(map: &mut HashMap<K, usize>, key: &K) {
            if let Some(count) = map.get_mut(key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    map.remove(key);
                }
            }
        }
        down(&mut self.per_user, &owner.identity);
        down(&mut self.per_source, &owner.source);
        self.total = self.total.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_and_sources() {
        assert_eq!(
            Identity::new("1700000000:peer-1", false),
            Identity::new("1800000000:peer-1", false)
        );
        assert_eq!(
            Identity::new("1:a:b", false),
            Identity::Rest(Arc::from("a:b"))
        );
        assert_ne!(Identity::new("bob", true), Identity::new("1:bob", false));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(source_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(source_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
    }

    #[test]
    fn slots_are_taken_and_given_back() {
        let mut config = ServerConfig::new("r", b"k".to_vec());
        config.max_allocations_per_user = 2;
        config.max_allocations_per_ip = 3;
        let owner = |id: &str, ip: &str| Owner {
            identity: Identity::new(id, true),
            source: ip.parse().unwrap(),
        };
        let mut q = Quotas::default();
        let a = owner("a", "192.0.2.1");
        q.take(&a, 2);
        assert_eq!(q.check(&a, 1, &config), Err(Refusal::UserQuota));
        let b = owner("b", "192.0.2.1");
        assert_eq!(q.check(&b, 1, &config), Ok(()));
        assert_eq!(q.check(&b, 2, &config), Err(Refusal::SourceQuota));
        q.release(&a);
        q.release(&a);
        assert!(q.per_user.is_empty() && q.per_source.is_empty());
        assert_eq!(q.total, 0);
        config.max_allocations_per_ip = 0;
        q.take(&b, 2);
        assert_eq!(q.check(&owner("c", "192.0.2.1"), 2, &config), Ok(()));
    }
}
