//! One peer of one SFU room: its `Rtc` with the server, what it receives, and driving that
//! `Rtc` until it is drained (str0m's single-mutation invariant).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::SdpPendingOffer;
use str0m::media::{Direction, KeyframeRequest, MediaAdded, MediaKind, Mid, Pt, Rid};
use str0m::rtp::{RtpPacket, Ssrc};
use str0m::{Event, IceConnectionState, Input, Output, PacerReason, Reason, Rtc};

use crate::types::{SfuEvent, Transmit};

/// The index of a peer in the core; never reused.
pub(crate) type PeerKey = u64;

/// A published track: the publisher and the mid of its m-line in the publisher's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TrackId {
    pub(crate) publisher: PeerKey,
    pub(crate) mid: Mid,
}

/// Where a forwarded track stands in the receiver's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutState {
    /// To be added by the next server offer.
    ToOpen,
    /// Added by the server offer in flight.
    Negotiating(Mid),
    /// Negotiated: media is written to this mid.
    Open(Mid),
    /// To be stopped by the next server offer.
    ToStop(Mid),
    /// Stopped by the server offer in flight.
    NegotiatingStop(Mid),
}

/// One published track as one receiver gets it.
#[derive(Debug)]
pub(crate) struct TrackOut {
    pub(crate) source: TrackId,
    pub(crate) kind: MediaKind,
    /// The msid stream id: the publisher's peer id.
    pub(crate) stream_id: String,
    pub(crate) state: OutState,
    /// The publisher left while the offer adding this track was in flight.
    pub(crate) removed: bool,
    /// The simulcast layer forwarded now (`None`: none yet, or no simulcast).
    pub(crate) layer: Option<Rid>,
    /// The layer to switch to at its next key frame.
    pub(crate) target: Option<Rid>,
    /// Added to the publisher's RTP time (mod 2^32) so that a layer switch does not make
    /// the receiver's timestamps jump: each layer has its own random RTP time origin.
    pub(crate) time_offset: u32,
    pub(crate) last_time: Option<u32>,
    /// Added to the publisher's extended sequence number (mod 2^64): set at the first
    /// packet so that the receiver starts below 65536 (it learns no rollover counter), and
    /// at a layer switch so that the new layer continues right after the last number sent.
    /// One offset per stretch keeps an upstream gap a gap and puts a late repair at its place.
    pub(crate) seq_offset: Option<u64>,
    /// The publisher's sequence number where the current stretch began: a late repair from
    /// before it has no place in the receiver's numbering.
    pub(crate) seq_floor: u64,
    /// The highest sequence number sent to the receiver.
    pub(crate) last_seq: Option<u64>,
    /// The publisher's payload type and the receiver's for the same codec.
    pub(crate) pt_map: Option<(Pt, Pt)>,
}

impl TrackOut {
    pub(crate) fn new(source: TrackId, kind: MediaKind, stream_id: String) -> TrackOut {
        TrackOut {
            source,
            kind,
            stream_id,
            state: OutState::ToOpen,
            removed: false,
            layer: None,
            target: None,
            time_offset: 0,
            last_time: None,
            seq_offset: None,
            seq_floor: 0,
            last_seq: None,
            pt_map: None,
        }
    }
}

/// Something a peer's `Rtc` said that concerns the room (other peers), handled once the
/// `Rtc` is drained.
#[derive(Debug)]
pub(crate) enum Work {
    /// The client added an m-line (it may be a published track).
    MediaAdded(PeerKey, MediaAdded),
    /// The client changed an m-line's direction.
    DirectionChanged(PeerKey, Mid, Direction),
    /// An RTP packet from a publisher (repairs un-wrapped, duplicates dropped by str0m).
    Rtp(PeerKey, Box<RtpPacket>),
    /// A receiver asks for a key frame of a track it gets.
    KeyframeRequest(PeerKey, KeyframeRequest),
    /// A forwarded track (the receiver's mid) was negotiated: media may start.
    Opened(PeerKey, Mid),
    /// A receiver's bandwidth estimate changed: choose its layers again.
    Layers(PeerKey),
    /// The peer's `Rtc` failed or ended.
    Failed(PeerKey, String),
}

/// The shared outputs a drain writes to.
pub(crate) struct Sink<'a> {
    pub(crate) transmits: &'a mut VecDeque<Transmit>,
    pub(crate) events: &'a mut VecDeque<SfuEvent>,
    pub(crate) work: &'a mut VecDeque<Work>,
}

#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) key: PeerKey,
    pub(crate) room: String,
    pub(crate) id: String,
    pub(crate) local: SocketAddr,
    pub(crate) rtc: Rtc,
    pub(crate) ufrag: String,
    /// Source addresses learned from its STUN (direct, or a TURN relay).
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) connected: bool,
    pub(crate) connect_deadline: Instant,
    /// The server answered the client's first offer: the server may offer from now on.
    pub(crate) answered_first: bool,
    /// The server offer in flight, and when it was sent.
    pub(crate) pending: Option<(SdpPendingOffer, Instant)>,
    /// Tracks to add or remove: an offer is due once nothing is pending.
    pub(crate) dirty: bool,
    pub(crate) tracks_out: Vec<TrackOut>,
    /// Mids of the tracks it publishes.
    pub(crate) published: Vec<Mid>,
    pub(crate) estimate: Option<Bitrate>,
    /// The rate its estimator probes towards (`Bwe::set_bitrate`'s desired).
    pub(crate) desired_bps: u64,
    pub(crate) cap_bps: Option<u64>,
    /// The next time the layers it receives are chosen again.
    pub(crate) next_layer_check: Instant,
    /// The `Rtc`'s own next timeout.
    pub(crate) rtc_timeout: Instant,
    /// The instant this peer is filed under in the core's timer set.
    pub(crate) timer: Option<Instant>,
    /// A failure was reported: the `Rtc` is not touched again.
    pub(crate) failed: bool,
    /// Written to and waiting in the core's `undrained` list.
    pub(crate) drain_due: bool,
    /// Its inbound budget, from its first routed datagram on.
    pub(crate) budget: Option<crate::budget::Bucket>,
    /// The mid and rid of each of its incoming RTP streams, looked up once per SSRC.
    pub(crate) rx_streams: Vec<RxStream>,
}

/// Where a publisher's incoming SSRC belongs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RxStream {
    pub(crate) ssrc: Ssrc,
    pub(crate) mid: Mid,
    pub(crate) rid: Option<Rid>,
}

/// More SSRCs than any publisher has streams: past it the cache starts afresh, so that a
/// client cycling SSRCs cannot grow it.
const MAX_RX_STREAMS: usize = 64;

impl Peer {
    /// The mid and rid of an incoming SSRC (`None`: str0m does not know it).
    pub(crate) fn rx_stream(&mut self, ssrc: Ssrc) -> Option<RxStream> {
        if let Some(s) = self.rx_streams.iter().find(|s| s.ssrc == ssrc) {
            return Some(*s);
        }
        let mut api = self.rtc.direct_api();
        let rx = api.stream_rx(&ssrc)?;
        let found = RxStream {
            ssrc,
            mid: rx.mid(),
            rid: rx.rid(),
        };
        if self.rx_streams.len() >= MAX_RX_STREAMS {
            self.rx_streams.clear();
        }
        self.rx_streams.push(found);
        Some(found)
    }
}

/// Upper bound of outputs taken from one drain: str0m always ends with a timeout, this
/// only keeps a bug there from hanging the core.
const MAX_OUTPUTS_PER_DRAIN: usize = 100_000;

/// Send timeouts that one drain serves itself. str0m queues a written packet at its next
/// timeout, and its pacer hands out one packet per timeout, asking for the next one a
/// microsecond later (so that each packet has its own send time for TWCC): served here, the
/// packets written to a receiver in one receive batch leave together (one GSO message, one
/// driver turn) instead of one core turn each. Only those reasons: other timers (BWE
/// control, feedback) may stay due after a timeout at the same instant. The bound keeps one
/// peer from holding the core; the rest waits for its timer.
const MAX_SEND_TIMEOUTS_PER_DRAIN: usize = 256;

/// How far ahead of `now` the pacer's next-packet step may be and still be served by the
/// drain: each step is 1 µs, so 256 of them stay well inside this.
const SEND_TIMEOUT_SLACK: std::time::Duration = std::time::Duration::from_millis(1);

impl Peer {
    /// The earliest instant the core must look at this peer again.
    pub(crate) fn deadline(&self, answer_timeout: std::time::Duration) -> Instant {
        let mut at = self.rtc_timeout;
        if !self.connected {
            at = at.min(self.connect_deadline);
        }
        if let Some((_, since)) = &self.pending {
            at = at.min(*since + answer_timeout);
        }
        at
    }

    /// Takes every output of the `Rtc` up to its next timeout (a due send timeout is served
    /// at once). Call after every mutation.
    pub(crate) fn drain(&mut self, now: Instant, sink: &mut Sink<'_>) {
        if self.failed {
            return;
        }
        let mut send_timeouts = 0;
        for _ in 0..MAX_OUTPUTS_PER_DRAIN {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    // Only the pacer's next-packet step may be taken ahead of `now`: a
                    // probe's or a paced packet's time is what the bandwidth estimate
                    // measures, so those wait until they are due.
                    let serve = match self.rtc.last_timeout_reason() {
                        Reason::Pacer(PacerReason::Immediate) => at <= now + SEND_TIMEOUT_SLACK,
                        // A written packet waits for a timeout to reach the pacer's queue
                        // (`SendStream`, RTP mode; `Packetize`, frames).
                        Reason::Pacer(_) | Reason::Packetize | Reason::SendStream => at <= now,
                        _ => false,
                    };
                    if serve && send_timeouts < MAX_SEND_TIMEOUTS_PER_DRAIN {
                        send_timeouts += 1;
                        if let Err(e) = self.rtc.handle_input(Input::Timeout(at.max(now))) {
                            self.fail(format!("media session error: {e}"), sink);
                            return;
                        }
                        continue;
                    }
                    self.rtc_timeout = at;
                    return;
                }
                Ok(Output::Transmit(t)) => sink.transmits.push_back(Transmit {
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents.into(),
                }),
                Ok(Output::Event(event)) => self.on_event(event, sink),
                Err(e) => {
                    self.fail(format!("media session error: {e}"), sink);
                    return;
                }
            }
        }
        self.fail("media session does not settle".to_string(), sink);
    }

    /// Sets the rate its estimator probes towards, when it moved by more than an eighth
    /// (each raise may start a probe). `true`: set, and its `Rtc` wants a drain (the
    /// estimator's timers moved).
    pub(crate) fn set_desired_bitrate(&mut self, bps: u64) -> bool {
        let moved = bps.abs_diff(self.desired_bps) > self.desired_bps / 8;
        if !moved && (bps == 0) == (self.desired_bps == 0) {
            return false;
        }
        self.desired_bps = bps;
        self.rtc
            .bwe()
            .set_bitrate(Bitrate::bps(0), Bitrate::bps(bps));
        true
    }

    pub(crate) fn fail(&mut self, reason: String, sink: &mut Sink<'_>) {
        if !self.failed {
            self.failed = true;
            sink.work.push_back(Work::Failed(self.key, reason));
        }
    }

    fn on_event(&mut self, event: Event, sink: &mut Sink<'_>) {
        match event {
            Event::Connected => {
                self.connected = true;
                sink.events.push_back(SfuEvent::PeerConnected {
                    room: self.room.clone(),
                    peer: self.id.clone(),
                });
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.fail(
                    "ICE disconnected (no consent from the client)".to_string(),
                    sink,
                );
            }
            Event::Closed => self.fail("the client closed its media session".to_string(), sink),
            Event::MediaAdded(added) => sink.work.push_back(Work::MediaAdded(self.key, added)),
            Event::MediaChanged(changed) => {
                sink.work.push_back(Work::DirectionChanged(
                    self.key,
                    changed.mid,
                    changed.direction,
                ));
            }
            Event::RtpPacket(packet) => sink.work.push_back(Work::Rtp(self.key, Box::new(packet))),
            Event::KeyframeRequest(req) => {
                sink.work.push_back(Work::KeyframeRequest(self.key, req))
            }
            Event::EgressBitrateEstimate(
                BweKind::Twcc { estimate, .. } | BweKind::Remb { estimate, .. },
            ) => {
                self.estimate = Some(estimate);
                sink.work.push_back(Work::Layers(self.key));
            }
            _ => {}
        }
    }
}
