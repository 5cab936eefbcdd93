//! Each peer's inbound budget on the media port: token buckets on datagrams and bytes per
//! second, refilled from the `now` of each datagram. What a peer sends past its budget is
//! dropped before its `Rtc` sees it (SRTP decryption is the expensive part of a datagram);
//! a peer that keeps sending far more than its budget is ended.

use std::time::{Duration, Instant};

use crate::types::SfuConfig;

/// The buckets hold this much of each rate: a key frame, a burst of retransmissions or a
/// late batch from the client's socket passes whole.
const BURST: Duration = Duration::from_secs(1);
/// Flooding is judged over windows of this length.
const WINDOW: Duration = Duration::from_secs(1);

/// The per-peer limits of an [`SfuConfig`]; a rate of 0 is no limit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    bytes_per_sec: f64,
    datagrams_per_sec: f64,
    flood_timeout: Duration,
}

impl Limits {
    pub(crate) fn new(config: &SfuConfig) -> Limits {
        Limits {
            bytes_per_sec: config.peer_max_bitrate_bps as f64 / 8.0,
            datagrams_per_sec: config.peer_max_datagram_rate as f64,
            flood_timeout: config.peer_flood_timeout,
        }
    }

    /// Neither rate is limited: no bucket is needed.
    pub(crate) fn unlimited(&self) -> bool {
        self.bytes_per_sec <= 0.0 && self.datagrams_per_sec <= 0.0
    }
}

/// What to do with one datagram.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    Pass,
    Drop,
    /// Dropped, and the peer has been far over its budget for `flood_timeout`: end it.
    Flood(String),
}

/// One peer's buckets and its flood record.
#[derive(Debug)]
pub(crate) struct Bucket {
    bytes: f64,
    datagrams: f64,
    refilled: Instant,
    window_start: Instant,
    /// Offered in the current window: (datagrams, bytes) passed and dropped.
    passed: (u64, u64),
    dropped: (u64, u64),
    /// The first datagram dropped in the current window.
    first_drop: Option<Instant>,
    /// Offered in the last window that ended: (datagrams, bytes).
    last_offered: (u64, u64),
    /// The first drop of the first of the consecutive windows in which it sent at least
    /// twice its budget and had datagrams dropped.
    flooding_since: Option<Instant>,
}

impl Bucket {
    /// Full buckets: a new peer may burst at once.
    pub(crate) fn new(now: Instant, limits: &Limits) -> Bucket {
        let burst = BURST.as_secs_f64();
        Bucket {
            bytes: limits.bytes_per_sec * burst,
            datagrams: limits.datagrams_per_sec * burst,
            refilled: now,
            window_start: now,
            passed: (0, 0),
            dropped: (0, 0),
            first_drop: None,
            last_offered: (0, 0),
            flooding_since: None,
        }
    }

    /// Charges one datagram of `len` bytes arriving at `now`. Allocates nothing unless it
    /// ends the peer.
    pub(crate) fn charge(&mut self, now: Instant, len: usize, limits: &Limits) -> Verdict {
        self.close_windows(now, limits);
        self.refill(now, limits);
        let len = len as u64;
        let datagram_ok = limits.datagrams_per_sec <= 0.0 || self.datagrams >= 1.0;
        let bytes_ok = limits.bytes_per_sec <= 0.0 || self.bytes >= len as f64;
        if datagram_ok && bytes_ok {
            if limits.datagrams_per_sec > 0.0 {
                self.datagrams -= 1.0;
            }
            if limits.bytes_per_sec > 0.0 {
                self.bytes -= len as f64;
            }
            self.passed = (self.passed.0 + 1, self.passed.1 + len);
            return Verdict::Pass;
        }
        self.dropped = (self.dropped.0 + 1, self.dropped.1 + len);
        self.first_drop.get_or_insert(now);
        match self.flooding_since {
            Some(since)
                if !limits.flood_timeout.is_zero()
                    && now.saturating_duration_since(since) >= limits.flood_timeout =>
            {
                Verdict::Flood(self.reason(now, since, limits))
            }
            _ => Verdict::Drop,
        }
    }

    fn refill(&mut self, now: Instant, limits: &Limits) {
        // A `now` before the last one (a shell's clocks disagreeing) refills nothing.
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = self.refilled.max(now);
        let burst = BURST.as_secs_f64();
        self.bytes =
            (self.bytes + elapsed * limits.bytes_per_sec).min(limits.bytes_per_sec * burst);
        self.datagrams = (self.datagrams + elapsed * limits.datagrams_per_sec)
            .min(limits.datagrams_per_sec * burst);
    }

    /// Ends the window `now` is past: a window in which the peer sent at least twice its
    /// budget and had datagrams dropped continues (or starts) a flood, any other window
    /// (or a gap of a whole window) ends it.
    fn close_windows(&mut self, now: Instant, limits: &Limits) {
        let since_start = now.saturating_duration_since(self.window_start);
        if since_start < WINDOW {
            return;
        }
        let flooded = self.over_twice(limits) && self.first_drop.is_some();
        let consecutive = since_start < WINDOW * 2;
        self.flooding_since = match (flooded && consecutive, self.flooding_since) {
            (true, Some(since)) => Some(since),
            // From its first drop, not the window's start: a flood that began late in the
            // window (or was absorbed by the burst) has not lasted the whole window.
            (true, None) => self.first_drop,
            (false, _) => None,
        };
        self.first_drop = None;
        self.window_start = if consecutive {
            self.window_start + WINDOW
        } else {
            now
        };
        self.last_offered = (
            self.passed.0 + self.dropped.0,
            self.passed.1 + self.dropped.1,
        );
        self.passed = (0, 0);
        self.dropped = (0, 0);
    }

    /// What it offered in the current window is at least twice a window's budget (in
    /// datagrams or in bytes).
    fn over_twice(&self, limits: &Limits) -> bool {
        let window = WINDOW.as_secs_f64();
        let datagrams = (self.passed.0 + self.dropped.0) as f64;
        let bytes = (self.passed.1 + self.dropped.1) as f64;
        (limits.datagrams_per_sec > 0.0 && datagrams >= 2.0 * limits.datagrams_per_sec * window)
            || (limits.bytes_per_sec > 0.0 && bytes >= 2.0 * limits.bytes_per_sec * window)
    }

    fn reason(&self, now: Instant, since: Instant, limits: &Limits) -> String {
        let window = WINDOW.as_secs_f64();
        let datagrams = self.last_offered.0 as f64 / window;
        let mbps = self.last_offered.1 as f64 * 8.0 / window / 1e6;
        let mut budget = Vec::with_capacity(2);
        if limits.datagrams_per_sec > 0.0 {
            budget.push(format!("{} datagrams/s", limits.datagrams_per_sec));
        }
        if limits.bytes_per_sec > 0.0 {
            budget.push(format!("{:.1} Mbit/s", limits.bytes_per_sec * 8.0 / 1e6));
        }
        format!(
            "media flood: {datagrams:.0} datagrams/s, {mbps:.1} Mbit/s, over twice the budget \
             ({}) for {:.0} s",
            budget.join(", "),
            now.saturating_duration_since(since).as_secs_f64(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(bps: u64, rate: u64, flood_secs: u64) -> Limits {
        Limits::new(&SfuConfig {
            peer_max_bitrate_bps: bps,
            peer_max_datagram_rate: rate,
            peer_flood_timeout: Duration::from_secs(flood_secs),
            ..SfuConfig::default()
        })
    }

    /// Sends `per_ms` datagrams of `len` bytes every millisecond for `ms`; counts the
    /// verdicts (passed, dropped, flood).
    fn offer(
        b: &mut Bucket,
        l: &Limits,
        now: &mut Instant,
        ms: u64,
        per_ms: u64,
        len: usize,
    ) -> (u64, u64, Option<String>) {
        let (mut passed, mut dropped) = (0, 0);
        for _ in 0..ms {
            *now += Duration::from_millis(1);
            for _ in 0..per_ms {
                match b.charge(*now, len, l) {
                    Verdict::Pass => passed += 1,
                    Verdict::Drop => dropped += 1,
                    Verdict::Flood(reason) => return (passed, dropped, Some(reason)),
                }
            }
        }
        (passed, dropped, None)
    }

    #[test]
    fn the_defaults_take_a_heavy_simulcast_publisher() {
        let l = Limits::new(&SfuConfig::default());
        let start = Instant::now();
        let mut now = start;
        let mut b = Bucket::new(now, &l);
        // 3 layers of 2.5 Mbit/s in 1200-byte packets plus audio and RTCP: ~1 datagram a
        // ms, with a 300 kB key frame burst every second.
        for _ in 0..10 {
            let (_, dropped, _) = offer(&mut b, &l, &mut now, 1, 250, 1200);
            assert_eq!(dropped, 0, "a key frame burst");
            let (_, dropped, _) = offer(&mut b, &l, &mut now, 999, 1, 1200);
            assert_eq!(dropped, 0);
        }
    }

    #[test]
    fn the_excess_is_dropped_and_the_rate_is_kept() {
        let l = limits(0, 1000, 0);
        let mut now = Instant::now();
        let mut b = Bucket::new(now, &l);
        // Four times the budget for 10 s: the burst, then the rate.
        let (passed, dropped, flood) = offer(&mut b, &l, &mut now, 10_000, 4, 100);
        assert_eq!(flood, None, "flood_timeout 0 never ends a peer");
        assert!((10_900..=11_100).contains(&passed), "{passed}");
        assert_eq!(passed + dropped, 40_000);
        // Bytes alone limit too: 800 kbit/s is 100 kB/s.
        let l = limits(800_000, 0, 0);
        let mut b = Bucket::new(now, &l);
        let (passed, _, _) = offer(&mut b, &l, &mut now, 2000, 1, 1000);
        // One second's burst, then the rate.
        assert!((299..=301).contains(&passed), "{passed}");
    }

    #[test]
    fn only_a_sustained_flood_ends_the_peer() {
        let l = limits(0, 2000, 5);
        let mut now = Instant::now();
        let mut b = Bucket::new(now, &l);
        // 1.5 times the budget for a minute: dropped, never ended.
        let (_, dropped, flood) = offer(&mut b, &l, &mut now, 60_000, 3, 100);
        assert_eq!(flood, None);
        assert!(dropped > 0);
        // 2.5 times it for 4 s, a quiet second and a half, 4 s again: not ended either.
        let (_, _, flood) = offer(&mut b, &l, &mut now, 4000, 5, 100);
        assert_eq!(flood, None);
        now += Duration::from_millis(1500);
        let (_, _, flood) = offer(&mut b, &l, &mut now, 4000, 5, 100);
        assert_eq!(flood, None);
        now += Duration::from_millis(1500);
        // Over twice the budget for 5 s: ended, with the rates in the reason.
        let started = now;
        let (_, _, flood) = offer(&mut b, &l, &mut now, 8000, 5, 100);
        let reason = flood.expect("a flood");
        assert!(reason.starts_with("media flood: "), "{reason}");
        assert!(
            reason.contains(" 5000 datagrams/s, 4.0 Mbit/s,"),
            "{reason}"
        );
        assert!(reason.contains("(2000 datagrams/s) for 5 s"), "{reason}");
        let took = now - started;
        assert!(
            took >= Duration::from_secs(5) && took <= Duration::from_secs(7),
            "{took:?}"
        );
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let l = limits(0, 10, 0);
        let now = Instant::now() + Duration::from_secs(10);
        let mut b = Bucket::new(now, &l);
        let passed = (0..100)
            .filter(|i| {
                let at = now - Duration::from_millis(*i);
                b.charge(at, 10, &l) == Verdict::Pass
            })
            .count();
        assert_eq!(passed, 10);
    }
}
