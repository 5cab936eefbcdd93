//! A per-source rate for challenge answers (401 and 438).
//!
//! A challenge carries REALM, a fresh NONCE and PASSWORD-ALGORITHMS, so it
//! is several times larger than the request that caused it: over UDP with
//! a spoofed source, a reflector. A failed credential check also costs
//! HMACs under the server's lock. Each source (an IPv4 address or an IPv6
//! /64) gets a token bucket; beyond it challenges are dropped silently and
//! counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Sources tracked at once. A full bucket is the same as no entry, so
/// entries are swept when the map fills; past the bound (a spoofed flood
/// from many addresses), untracked sources share one bucket.
const MAX_SOURCES: usize = 16_384;
/// A bucket holds this many seconds' worth of challenges.
const BURST_SECS: u32 = 2;
/// The map is swept at most this often while full, so that a flood of new
/// sources cannot make every packet pay for a sweep.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Generic cell rate (a token bucket kept as one instant per source: the
/// time at which its bucket would be full again).
#[derive(Debug)]
pub(crate) struct ChallengeLimiter {
    /// Time one token takes to come back; `None` = no limit.
    interval: Option<Duration>,
    /// How far ahead of `now` a source's full-again instant may run.
    tolerance: Duration,
    full_at: HashMap<IpAddr, Instant>,
    overflow: Option<Instant>,
    last_sweep: Option<Instant>,
}

impl ChallengeLimiter {
    /// `per_sec` challenges a second per source, bursts of twice that;
    /// 0 = unlimited.
    pub(crate) fn new(per_sec: u32) -> Self {
        let interval = (per_sec > 0).then(|| Duration::from_secs(1) / per_sec);
        let burst = per_sec.saturating_mul(BURST_SECS);
        let tolerance = interval.map_or(Duration::ZERO, |i| i * burst.saturating_sub(1));
        Self {
            interval,
            tolerance,
            full_at: HashMap::new(),
            overflow: None,
            last_sweep: None,
        }
    }

    /// Whether `source` may be sent a challenge at `now`; takes a token if so.
    pub(crate) fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        let Some(interval) = self.interval else {
            return true;
        };
        let tolerance = self.tolerance;
        let take = |slot: &mut Instant| {
            let start = (*slot).max(now);
            if start.saturating_duration_since(now) > tolerance {
                return false;
            }
            *slot = start + interval;
            true
        };
        if let Some(slot) = self.full_at.get_mut(&source) {
            return take(slot);
        }
        if self.full_at.len() >= MAX_SOURCES {
            self.sweep(now);
        }
        if self.full_at.len() < MAX_SOURCES {
            let mut slot = now;
            let allowed = take(&mut slot);
            self.full_at.insert(source, slot);
            return allowed;
        }
        take(self.overflow.get_or_insert(now))
    }

    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|at| now.saturating_duration_since(at) < SWEEP_INTERVAL)
        {
            return;
        }
        self.last_sweep = Some(now);
        self.full_at.retain(|_, full_at| *full_at > now);
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.full_at.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from_bits(n))
    }

    #[test]
    fn bursts_then_the_rate() {
        let start = Instant::now();
        let mut l = ChallengeLimiter::new(10);
        assert_eq!((0..30).filter(|_| l.allow(ip(1), start)).count(), 20);
        assert!(l.allow(ip(2), start), "another source has its own bucket");
        let later = start + Duration::from_millis(500);
        assert_eq!((0..30).filter(|_| l.allow(ip(1), later)).count(), 5);
        let much_later = start + Duration::from_secs(60);
        assert_eq!((0..30).filter(|_| l.allow(ip(1), much_later)).count(), 20);
        let mut off = ChallengeLimiter::new(0);
        assert!((0..1000).all(|_| off.allow(ip(1), start)));
    }

    #[test]
    fn the_map_stays_bounded() {
        let start = Instant::now();
        let mut l = ChallengeLimiter::new(1);
        for n in 0..MAX_SOURCES as u32 {
            assert!(l.allow(ip(n), start));
        }
        // Full and nothing to sweep: new sources share one bucket of 2.
        let extra = (0..100)
            .filter(|n| l.allow(ip(1_000_000 + n), start))
            .count();
        assert_eq!(extra, 2);
        assert_eq!(l.tracked(), MAX_SOURCES);
        // Once buckets have refilled, a sweep makes room again.
        let later = start + Duration::from_secs(10);
        assert!(l.allow(ip(2_000_000), later));
        assert_eq!(l.tracked(), 1);
    }
}
