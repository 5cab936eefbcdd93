//! Counting by source address, for the caps that one client must not be
//! able to exhaust alone: stream connections.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};

/// The address a limit counts under. An IPv6 host usually has a whole /64
/// to pick source addresses from, so the /64 is one source; an IPv4-mapped
/// address is its IPv4 address.
pub(crate) fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Open connections per source; `cap` 0 counts nothing.
#[derive(Debug)]
pub(super) struct ConnectionsPerSource {
    cap: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionsPerSource {
    pub(super) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn open(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for one more connection from `ip`, or `None` at the cap.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        if self.cap == 0 {
            return Some(SourceSlot {
                owner: None,
                key: ip,
            });
        }
        let key = source_key(ip);
        let mut open = self.open();
        let count = open.entry(key).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            owner: Some(self.clone()),
            key,
        })
    }

    /// Connections open from `ip` (tests and metrics).
    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> usize {
        self.open().get(&source_key(ip)).copied().unwrap_or(0)
    }
}

/// One admitted connection; its count goes when this is dropped.
#[derive(Debug)]
pub(super) struct SourceSlot {
    owner: Option<Arc<ConnectionsPerSource>>,
    key: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let Some(owner) = &self.owner else { return };
        let mut open = owner.open();
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_sources_count_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(source_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn connection_slots_are_capped_and_given_back() {
        let per = ConnectionsPerSource::new(2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let a = per.admit(ip).unwrap();
        let _b = per.admit(ip).unwrap();
        assert!(per.admit(ip).is_none());
        assert!(per.admit(other).is_some());
        drop(a);
        assert_eq!(per.count(ip), 1);
        assert!(per.admit(ip).is_some());
        assert!(ConnectionsPerSource::new(0).admit(ip).is_some());
    }
}
