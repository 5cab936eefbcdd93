//! Which simulcast layer a receiver gets: measured layer bitrates against its budget.

use std::time::{Duration, Instant};

use str0m::media::Rid;

/// An upgrade needs this much headroom (in percent of the layer's rate), so that an
/// estimate hovering at a layer's rate does not flip between two layers.
const UPGRADE_HEADROOM_PERCENT: u64 = 115;
const METER_WINDOW: Duration = Duration::from_secs(1);
/// A layer with no frame for this long counts as gone (the publisher stopped sending it,
/// as browsers do under their own congestion): it is chosen by nobody until it is back.
const LAYER_IDLE: Duration = Duration::from_secs(2);

/// What a receiver may need on top of a track's payload rate: RTP, SRTP and extension
/// headers (about 60 bytes a packet: 58 kbit/s at 120 packets a second) and audio's small
/// packets.
const PER_TRACK_OVERHEAD_BPS: u64 = 64_000;

/// Received bitrate of one published track and of each of its simulcast layers, measured
/// over one-second windows.
#[derive(Debug, Clone)]
pub(crate) struct LayerMeter {
    layers: Vec<Layer>,
    whole: Window,
}

#[derive(Debug, Clone)]
struct Layer {
    rid: Rid,
    window: Window,
}

#[derive(Debug, Clone, Default)]
struct Window {
    start: Option<Instant>,
    bytes: u64,
    bps: Option<u64>,
    last_frame: Option<Instant>,
}

impl Window {
    fn record(&mut self, now: Instant, bytes: usize) {
        if self
            .last_frame
            .is_some_and(|last| now.saturating_duration_since(last) >= LAYER_IDLE)
        {
            // Back after a pause: measure afresh.
            *self = Window::default();
        }
        self.last_frame = Some(now);
        let start = *self.start.get_or_insert(now);
        self.bytes += bytes as u64;
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= METER_WINDOW {
            let micros = elapsed.as_micros().max(1) as u64;
            self.bps = Some(self.bytes.saturating_mul(8_000_000) / micros);
            self.start = Some(now);
            self.bytes = 0;
        }
    }

    /// `None` when not measured yet or idle.
    fn rate(&self, now: Instant) -> Option<u64> {
        let live = self
            .last_frame
            .is_some_and(|last| now.saturating_duration_since(last) < LAYER_IDLE);
        self.bps.filter(|_| live)
    }
}

impl LayerMeter {
    /// `rids` in the publisher's SDP order (none: a single-layer track).
    pub(crate) fn new(rids: &[Rid]) -> LayerMeter {
        let layers = rids
            .iter()
            .map(|rid| Layer {
                rid: *rid,
                window: Window::default(),
            })
            .collect();
        LayerMeter {
            layers,
            whole: Window::default(),
        }
    }

    pub(crate) fn is_simulcast(&self) -> bool {
        !self.layers.is_empty()
    }

    /// A packet's payload, of the layer `rid` (`None`: a single-layer track).
    pub(crate) fn record(&mut self, now: Instant, rid: Option<Rid>, bytes: usize) {
        self.whole.record(now, bytes);
        if let Some(layer) = rid.and_then(|rid| self.layers.iter_mut().find(|l| l.rid == rid)) {
            layer.window.record(now, bytes);
        }
    }

    /// `(rid, measured bit/s)` of every layer, in SDP order; `None` for a layer not measured
    /// yet or idle.
    pub(crate) fn rates(&self, now: Instant) -> Vec<(Rid, Option<u64>)> {
        self.layers
            .iter()
            .map(|l| (l.rid, l.window.rate(now)))
            .collect()
    }

    /// What a receiver of this track may use: the top live layer of a simulcast track (or
    /// the whole track), with the upgrade headroom and the headers. `None`: not measured
    /// yet. Idle (measured once, nothing for a while): 0.
    pub(crate) fn wanted_bps(&self, now: Instant) -> Option<u64> {
        self.whole.bps?;
        let payload = if self.is_simulcast() {
            self.layers.iter().filter_map(|l| l.window.rate(now)).max()
        } else {
            self.whole.rate(now)
        };
        let Some(payload) = payload else {
            return Some(0);
        };
        Some(payload.saturating_mul(UPGRADE_HEADROOM_PERCENT) / 100 + PER_TRACK_OVERHEAD_BPS)
    }
}

/// The layer to forward for a budget of `budget_bps`: the highest measured layer that fits
/// (an upgrade over `current` with some headroom), else the lowest measured one. Before any
/// layer was measured, the first one the publisher listed.
pub(crate) fn choose_layer(
    layers: &[(Rid, Option<u64>)],
    budget_bps: u64,
    current: Option<Rid>,
) -> Option<Rid> {
    let mut measured: Vec<(Rid, u64)> = layers
        .iter()
        .filter_map(|(rid, bps)| bps.map(|b| (*rid, b)))
        .collect();
    if measured.is_empty() {
        return current.or_else(|| layers.first().map(|(rid, _)| *rid));
    }
    measured.sort_by_key(|(_, bps)| *bps);
    let current_bps = current
        .and_then(|c| measured.iter().find(|(rid, _)| *rid == c))
        .map(|(_, b)| *b);
    let fits = |bps: u64| {
        let is_upgrade = current_bps.is_some_and(|c| bps > c);
        let needed = if is_upgrade {
            bps.saturating_mul(UPGRADE_HEADROOM_PERCENT) / 100
        } else {
            bps
        };
        needed <= budget_bps
    };
    let best = measured
        .iter()
        .rev()
        .find(|(_, bps)| fits(*bps))
        .or(measured.first());
    best.map(|(rid, _)| *rid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers() -> Vec<(Rid, Option<u64>)> {
        vec![
            (Rid::from("l"), Some(150_000)),
            (Rid::from("m"), Some(500_000)),
            (Rid::from("h"), Some(1_500_000)),
        ]
    }

    #[test]
    fn a_receiver_wants_the_top_live_layer_or_the_whole_track() {
        let t0 = Instant::now();
        let mut simulcast = LayerMeter::new(&[Rid::from("l"), Rid::from("h")]);
        let mut single = LayerMeter::new(&[]);
        assert_eq!(simulcast.wanted_bps(t0), None);
        assert_eq!(single.wanted_bps(t0), None);
        // 1 s of 10 packets: l 100 B, h 1000 B each (8 and 80 kbit/s).
        for i in 0..=10 {
            let at = t0 + Duration::from_millis(100 * i);
            simulcast.record(at, Some(Rid::from("l")), 100);
            simulcast.record(at, Some(Rid::from("h")), 1000);
            single.record(at, None, 1000);
        }
        let t1 = t0 + Duration::from_secs(1);
        let want = |payload: u64| payload * UPGRADE_HEADROOM_PERCENT / 100 + PER_TRACK_OVERHEAD_BPS;
        assert_eq!(simulcast.wanted_bps(t1), Some(want(88_000)));
        assert_eq!(single.wanted_bps(t1), Some(want(88_000)));
        // The top layer stops, the low one goes on: the low one is what may be used.
        for i in 1..=20 {
            let at = t1 + Duration::from_millis(100 * i);
            simulcast.record(at, Some(Rid::from("l")), 100);
        }
        let t2 = t1 + LAYER_IDLE;
        assert_eq!(simulcast.wanted_bps(t2), Some(want(8_000)));
        // Everything idle: nothing wanted.
        assert_eq!(single.wanted_bps(t2 + LAYER_IDLE), Some(0));
    }

    #[test]
    fn highest_layer_that_fits() {
        assert_eq!(
            choose_layer(&layers(), 10_000_000, None),
            Some(Rid::from("h"))
        );
        assert_eq!(
            choose_layer(&layers(), 1_000_000, None),
            Some(Rid::from("m"))
        );
        assert_eq!(choose_layer(&layers(), 200_000, None), Some(Rid::from("l")));
    }

    #[test]
    fn lowest_layer_when_nothing_fits() {
        assert_eq!(
            choose_layer(&layers(), 10_000, Some(Rid::from("h"))),
            Some(Rid::from("l"))
        );
    }

    #[test]
    fn upgrade_needs_headroom_downgrade_does_not() {
        // 1.6 Mbit/s covers h (1.5) but not h with 15% headroom: stay on m.
        assert_eq!(
            choose_layer(&layers(), 1_600_000, Some(Rid::from("m"))),
            Some(Rid::from("m"))
        );
        assert_eq!(
            choose_layer(&layers(), 1_800_000, Some(Rid::from("m"))),
            Some(Rid::from("h"))
        );
        // Already on h: 1.6 keeps it.
        assert_eq!(
            choose_layer(&layers(), 1_600_000, Some(Rid::from("h"))),
            Some(Rid::from("h"))
        );
        assert_eq!(
            choose_layer(&layers(), 1_400_000, Some(Rid::from("h"))),
            Some(Rid::from("m"))
        );
    }

    #[test]
    fn unmeasured_layers_keep_the_first_listed() {
        let unmeasured = vec![(Rid::from("q"), None), (Rid::from("f"), None)];
        assert_eq!(choose_layer(&unmeasured, 1, None), Some(Rid::from("q")));
        assert_eq!(
            choose_layer(&unmeasured, 1, Some(Rid::from("f"))),
            Some(Rid::from("f"))
        );
        assert_eq!(choose_layer(&[], 1, None), None);
        // Measured layers win over unmeasured ones.
        let partly = vec![(Rid::from("q"), None), (Rid::from("f"), Some(900))];
        assert_eq!(choose_layer(&partly, 1, None), Some(Rid::from("f")));
    }

    #[test]
    fn meter_measures_per_window() {
        let t0 = Instant::now();
        let mut meter = LayerMeter::new(&[Rid::from("l"), Rid::from("h")]);
        for i in 0..=10 {
            meter.record(
                t0 + Duration::from_millis(100 * i),
                Some(Rid::from("h")),
                1000,
            );
        }
        let t1 = t0 + Duration::from_secs(1);
        let rates = meter.rates(t1);
        assert_eq!(rates[0].1, None);
        // 11 kB over 1 s.
        assert_eq!(rates[1].1, Some(88_000));
        meter.record(t0, Some(Rid::from("x")), 5);
        // Idle for 2 s: gone, until measured again.
        assert_eq!(meter.rates(t1 + Duration::from_secs(2))[1].1, None);
        meter.record(t1 + Duration::from_secs(3), Some(Rid::from("h")), 1000);
        assert_eq!(meter.rates(t1 + Duration::from_secs(3))[1].1, None);
    }
}
