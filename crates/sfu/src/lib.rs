//! A sans-IO selective forwarding unit (SFU) on [str0m]: the media relay of switchboard's
//! SFU rooms (PROTOCOL.md §7).
//!
//! Each peer of an SFU room has one `str0m::Rtc` with the server (ICE-lite, DTLS-SRTP);
//! every track a peer publishes is forwarded to every other peer of its room, added to and
//! removed from their sessions by renegotiation. No socket, no clock, no thread: the shell
//! hands over datagrams, signals and `now`, and drains what comes out. The design is in
//! `docs/sfu.md`.
//!
//! # Run loop
//!
//! ```no_run
//! # use std::time::Instant;
//! # use switchboard_sfu::{Sfu, SfuConfig};
//! # fn recv() -> Option<(std::net::SocketAddr, std::net::SocketAddr, Vec<u8>)> { None }
//! let mut sfu = Sfu::new(SfuConfig::default());
//! let now = Instant::now();
//! sfu.add_peer(now, "room", "alice", "192.0.2.1:3480".parse().unwrap()).unwrap();
//! loop {
//!     // 1. Feed one input: a datagram, a signal, or the timer firing.
//!     if let Some((from, to, bytes)) = recv() {
//!         let _dropped = sfu.handle_datagram(Instant::now(), from, to, &bytes);
//!     } else {
//!         sfu.handle_timeout(Instant::now());
//!     }
//!     // 2. Drain every output.
//!     while let Some(_t) = sfu.poll_transmit() { /* send t.contents to t.destination */ }
//!     while let Some(_s) = sfu.poll_signal() { /* a `media` frame to s.peer in s.room */ }
//!     while let Some(_e) = sfu.poll_event() { /* PeerConnected, PeerFailed */ }
//!     // 3. Sleep until the next datagram or `sfu.poll_timeout()`.
//!     # break;
//! }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod budget;
mod demux;
mod negotiate;
mod peer;
mod room;
mod simulcast;
mod types;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use str0m::bwe::Bitrate;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, IceCreds, Input, Rtc};

use crate::budget::{Bucket, Limits, Verdict};
use crate::demux::Kind;
use crate::negotiate::OfferOutcome;
use crate::peer::{Peer, PeerKey, Sink, Work};
use crate::room::Room;

pub use types::{
    DatagramError, MediaSignal, OutSignal, SfuConfig, SfuError, SfuEvent, SfuStats, Transmit,
};

/// Source addresses remembered per peer (its host address, a TURN relay, a NAT rebinding).
const MAX_ADDRS_PER_PEER: usize = 8;

/// The SFU core: every SFU room of this node and its peers.
#[derive(Debug)]
pub struct Sfu {
    config: SfuConfig,
    peers: HashMap<PeerKey, Peer>,
    by_name: HashMap<(String, String), PeerKey>,
    by_ufrag: HashMap<String, PeerKey>,
    by_addr: HashMap<SocketAddr, PeerKey>,
    rooms: HashMap<String, Room>,
    /// Every peer filed under its next deadline, so that neither `poll_timeout` nor
    /// `handle_timeout` scans all peers.
    timers: BTreeSet<(Instant, PeerKey)>,
    next_key: PeerKey,
    transmits: VecDeque<Transmit>,
    signals: VecDeque<OutSignal>,
    events: VecDeque<SfuEvent>,
    work: VecDeque<Work>,
    /// Peers that may owe their client an offer.
    dirty: Vec<PeerKey>,
    /// The receivers of the frame being forwarded, kept between frames so that
    /// forwarding allocates nothing.
    fanout: Vec<PeerKey>,
    /// Receivers written to and not drained yet, and the instant of that write: drained
    /// together by the next `poll_*` call, so that the packets of a driver's whole receive
    /// batch leave a receiver's `Rtc` in one drain (one run of datagrams to one address,
    /// which the shell sends as one GSO message) instead of one drain per packet.
    undrained: Vec<PeerKey>,
    undrained_at: Option<Instant>,
    limits: Limits,
    stats: SfuStats,
}

impl Sfu {
    /// A core with no room.
    pub fn new(mut config: SfuConfig) -> Sfu {
        // Deadlines are `now + duration`: keep them far from Instant's overflow.
        let day = std::time::Duration::from_secs(86_400);
        config.connect_timeout = config.connect_timeout.min(day);
        config.answer_timeout = config.answer_timeout.min(day);
        config.keyframe_request_interval = config.keyframe_request_interval.min(day);
        config.peer_flood_timeout = config.peer_flood_timeout.min(day);
        let limits = Limits::new(&config);
        Sfu {
            config,
            peers: HashMap::new(),
            by_name: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            rooms: HashMap::new(),
            timers: BTreeSet::new(),
            next_key: 0,
            transmits: VecDeque::new(),
            signals: VecDeque::new(),
            events: VecDeque::new(),
            work: VecDeque::new(),
            dirty: Vec::new(),
            fanout: Vec::new(),
            undrained: Vec::new(),
            undrained_at: None,
            limits,
            stats: SfuStats::default(),
        }
    }

    /// A peer entered an SFU room. `local` is the media address put in the server's
    /// ICE-lite host candidate for this peer (`media.public_ip` or the address the client's
    /// signaling connection reached, with the media port). No offer goes to the peer before
    /// its first offer has been answered.
    pub fn add_peer(
        &mut self,
        now: Instant,
        room: &str,
        peer: &str,
        local: SocketAddr,
    ) -> Result<(), SfuError> {
        let name = (room.to_string(), peer.to_string());
        if self.by_name.contains_key(&name) {
            return Err(SfuError::AlreadyJoined {
                room: name.0,
                peer: name.1,
            });
        }
        let members = self.rooms.get(room).map_or(0, |r| r.members.len());
        if members >= self.config.max_peers_per_room {
            return Err(SfuError::RoomFull {
                room: name.0,
                max: self.config.max_peers_per_room,
            });
        }
        let candidate = Candidate::host(local, "udp").map_err(|e| SfuError::BadLocalAddress {
            addr: local,
            reason: e.to_string(),
        })?;
        let mut creds = IceCreds::new();
        while self.by_ufrag.contains_key(&creds.ufrag) {
            creds = IceCreds::new();
        }
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .set_local_ice_credentials(creds.clone())
            .enable_bwe(Some(Bitrate::bps(self.config.bwe_initial_bps)))
            // Packets are forwarded as they come (see docs/sfu.md): no depacketizing and
            // packetizing again per receiver.
            .set_rtp_mode(true)
            .build(now);
        if rtc.add_local_candidate(candidate).is_none() {
            return Err(SfuError::BadLocalAddress {
                addr: local,
                reason: "refused as a host candidate".to_string(),
            });
        }
        // No sustained padding (str0m keeps its small floor); probing towards `desired` is
        // what lets an estimate grow back to a higher layer.
        rtc.bwe()
            .set_bitrate(Bitrate::bps(0), Bitrate::bps(self.config.bwe_desired_bps));

        let key = self.next_key;
        self.next_key += 1;
        let mut new_peer = Peer {
            key,
            room: name.0.clone(),
            id: name.1.clone(),
            local,
            rtc,
            ufrag: creds.ufrag.clone(),
            addrs: Vec::new(),
            connected: false,
            connect_deadline: now + self.config.connect_timeout,
            answered_first: false,
            pending: None,
            dirty: false,
            tracks_out: Vec::new(),
            published: Vec::new(),
            estimate: None,
            desired_bps: self.config.bwe_desired_bps,
            cap_bps: None,
            next_layer_check: now,
            rtc_timeout: now,
            timer: None,
            failed: false,
            drain_due: false,
            budget: None,
            rx_streams: Vec::new(),
        };
        let room_state = self.rooms.entry(name.0.clone()).or_default();
        for track in &room_state.tracks {
            new_peer.subscribe(track);
        }
        room_state.members.push(key);
        if new_peer.dirty {
            self.dirty.push(key);
        }
        self.by_ufrag.insert(creds.ufrag, key);
        self.by_name.insert(name, key);
        self.peers.insert(key, new_peer);
        self.drain_peer(now, key);
        tracing::debug!(room, peer, %local, "sfu peer added");
        Ok(())
    }

    /// The peer left the room (leave, kick, session end): its `Rtc` ends and its tracks
    /// leave the others' sessions by a renegotiation at once. Unknown peers are ignored.
    pub fn remove_peer(&mut self, now: Instant, room: &str, peer: &str) {
        let Some(&key) = self.by_name.get(&(room.to_string(), peer.to_string())) else {
            return;
        };
        if let Some(p) = self.peers.get_mut(&key)
            && !p.failed
        {
            let mut sink = Sink {
                transmits: &mut self.transmits,
                events: &mut self.events,
                work: &mut self.work,
            };
            // A DTLS close_notify, so the client learns at once rather than by timeout.
            let _ = p.rtc.handle_input(Input::Timeout(now));
            p.drain(now, &mut sink);
            let _ = p.rtc.close();
            p.drain(now, &mut sink);
        }
        self.remove_key(key);
        self.run(now);
    }

    /// A `media` request's data from the client.
    ///
    /// An offer while a server offer is pending is ignored (the server is the impolite peer
    /// of perfect negotiation: the client rolls back, answers, and offers again).
    pub fn handle_signal(
        &mut self,
        now: Instant,
        room: &str,
        peer: &str,
        signal: MediaSignal,
    ) -> Result<(), SfuError> {
        let key = self.key_of(room, peer)?;
        let Some(p) = self.peers.get_mut(&key) else {
            return Err(SfuError::UnknownPeer {
                room: room.to_string(),
                peer: peer.to_string(),
            });
        };
        let result = match signal {
            MediaSignal::Offer { sdp } => match p.accept_offer(&sdp) {
                Ok(OfferOutcome::Answer(answer)) => {
                    self.signals.push_back(OutSignal {
                        room: p.room.clone(),
                        peer: p.id.clone(),
                        signal: MediaSignal::Answer { sdp: answer },
                    });
                    // A client ICE restart gives the server new credentials too.
                    let ufrag = p.rtc.direct_api().local_ice_credentials().ufrag;
                    if ufrag != p.ufrag {
                        self.by_ufrag.remove(&p.ufrag);
                        self.by_ufrag.insert(ufrag.clone(), key);
                        p.ufrag = ufrag;
                    }
                    Ok(())
                }
                Ok(OfferOutcome::Collision) => {
                    tracing::debug!(
                        room,
                        peer,
                        "client offer ignored: a server offer is pending"
                    );
                    Ok(())
                }
                Err(e) => Err(e),
            },
            MediaSignal::Answer { sdp } => p.accept_answer(&sdp).map(|opened| {
                self.work
                    .extend(opened.into_iter().map(|i| Work::Opened(key, i)));
            }),
            MediaSignal::Candidate { candidate, .. } => {
                let line = candidate.trim();
                let line = line.strip_prefix("a=").unwrap_or(line);
                if line.is_empty() {
                    Ok(())
                } else {
                    match Candidate::from_sdp_string(line) {
                        Ok(c) => {
                            p.rtc.add_remote_candidate(c);
                            Ok(())
                        }
                        Err(e) => Err(SfuError::BadCandidate(e.to_string())),
                    }
                }
            }
        };
        // Each branch mutated the Rtc at most once: drain it before anything else.
        self.drain_peer(now, key);
        self.mark_dirty(key);
        self.run(now);
        result
    }

    /// One datagram from the media socket. `to` is the socket's address and may be
    /// unspecified (0.0.0.0): the core gives the peer's `Rtc` its own `local` address as
    /// the destination either way. Never panics on any bytes.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), DatagramError> {
        let _ = to;
        self.stats.datagrams_in += 1;
        let routed = self.route(from, bytes);
        let key = match routed {
            Ok(key) => key,
            Err(e) => {
                self.stats.dropped_datagrams += 1;
                tracing::trace!(%from, len = bytes.len(), error = %e, "sfu datagram dropped");
                return Err(e);
            }
        };
        let Some(p) = self.peers.get_mut(&key) else {
            self.stats.dropped_datagrams += 1;
            return Err(DatagramError::Unrouted);
        };
        if !self.limits.unlimited() {
            let verdict = p
                .budget
                .get_or_insert_with(|| Bucket::new(now, &self.limits))
                .charge(now, bytes.len(), &self.limits);
            if verdict != Verdict::Pass {
                self.stats.dropped_datagrams += 1;
                self.stats.rate_limited_datagrams += 1;
                if let Verdict::Flood(reason) = verdict {
                    let mut sink = Sink {
                        transmits: &mut self.transmits,
                        events: &mut self.events,
                        work: &mut self.work,
                    };
                    p.fail(reason, &mut sink);
                    self.drain_peer(now, key);
                    self.run(now);
                }
                return Err(DatagramError::OverBudget);
            }
        }
        let Ok(receive) = Receive::new(Protocol::Udp, from, p.local, bytes) else {
            self.stats.dropped_datagrams += 1;
            return Err(DatagramError::Garbage);
        };
        if let Err(e) = p.rtc.handle_input(Input::Receive(now, receive)) {
            let mut sink = Sink {
                transmits: &mut self.transmits,
                events: &mut self.events,
                work: &mut self.work,
            };
            p.fail(format!("media session error: {e}"), &mut sink);
        }
        self.drain_peer(now, key);
        self.run(now);
        Ok(())
    }

    /// Time passed: call at [`Sfu::poll_timeout`] (early or late is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.drain_written();
        // Due peers are taken first: a drain may file a peer again at or before `now`,
        // which must wait for the next call rather than loop here.
        let later = self.timers.split_off(&(now, PeerKey::MAX));
        let due = std::mem::replace(&mut self.timers, later);
        for (_, key) in due {
            let answer_timeout = self.config.answer_timeout;
            let Some(p) = self.peers.get_mut(&key) else {
                continue;
            };
            p.timer = None;
            let mut sink = Sink {
                transmits: &mut self.transmits,
                events: &mut self.events,
                work: &mut self.work,
            };
            if !p.connected && now >= p.connect_deadline {
                p.fail(
                    format!(
                        "ICE/DTLS did not complete in {:?}",
                        self.config.connect_timeout
                    ),
                    &mut sink,
                );
            } else if p
                .pending
                .as_ref()
                .is_some_and(|(_, since)| now >= *since + answer_timeout)
            {
                p.fail(
                    format!("the client did not answer an offer in {answer_timeout:?}"),
                    &mut sink,
                );
            } else if let Err(e) = p.rtc.handle_input(Input::Timeout(now)) {
                p.fail(format!("media session error: {e}"), &mut sink);
            }
            self.drain_peer(now, key);
        }
        self.run(now);
    }

    /// Caps the bandwidth a receiver's simulcast layers are chosen for, in bit/s, on top of
    /// its bandwidth estimate (`None`: the estimate alone).
    pub fn set_bitrate_cap(
        &mut self,
        now: Instant,
        room: &str,
        peer: &str,
        cap_bps: Option<u64>,
    ) -> Result<(), SfuError> {
        let key = self.key_of(room, peer)?;
        if let Some(p) = self.peers.get_mut(&key) {
            p.cap_bps = cap_bps;
        }
        self.work.push_back(Work::Layers(key));
        self.run(now);
        Ok(())
    }

    /// The next datagram to send. Drain after every `handle_*` call (or after a batch of
    /// `handle_datagram` calls: forwarded packets wait in the receivers' sessions until
    /// then).
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.drain_written();
        self.transmits.pop_front()
    }

    /// The next signal for a peer (an answer, an offer). Drain after every `handle_*` call.
    #[must_use]
    pub fn poll_signal(&mut self) -> Option<OutSignal> {
        self.drain_written();
        self.signals.pop_front()
    }

    /// The next event. Drain after every `handle_*` call.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SfuEvent> {
        self.drain_written();
        self.events.pop_front()
    }

    /// When to call [`Sfu::handle_timeout`] next (`None`: no peer, nothing to wait for).
    /// Receivers written to and not drained yet make it the instant of that write.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.first().map(|(at, _)| *at);
        match (self.undrained_at, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Counters and gauges for metrics.
    pub fn stats(&self) -> SfuStats {
        let mut stats = self.stats.clone();
        stats.rooms = self.rooms.len();
        stats.peers = self.peers.len();
        stats.connected_peers = self.peers.values().filter(|p| p.connected).count();
        stats.published_tracks = self.rooms.values().map(|r| r.tracks.len()).sum();
        stats.forwarded_tracks = self
            .peers
            .values()
            .map(|p| {
                p.tracks_out
                    .iter()
                    .filter(|t| matches!(t.state, peer::OutState::Open(_)))
                    .count()
            })
            .sum();
        stats
    }

    fn key_of(&self, room: &str, peer: &str) -> Result<PeerKey, SfuError> {
        self.by_name
            .get(&(room.to_string(), peer.to_string()))
            .copied()
            .ok_or_else(|| SfuError::UnknownPeer {
                room: room.to_string(),
                peer: peer.to_string(),
            })
    }

    /// The peer a datagram is for: STUN by the server ufrag in its USERNAME (and its source
    /// is remembered), the rest by source address.
    fn route(&mut self, from: SocketAddr, bytes: &[u8]) -> Result<PeerKey, DatagramError> {
        match demux::classify(bytes) {
            Kind::Garbage => Err(DatagramError::Garbage),
            Kind::Stun => {
                let by_ufrag = demux::stun_local_ufrag(bytes)
                    .and_then(|u| self.by_ufrag.get(u))
                    .copied();
                match by_ufrag {
                    Some(key) => {
                        self.learn_addr(key, from);
                        Ok(key)
                    }
                    None => self
                        .by_addr
                        .get(&from)
                        .copied()
                        .ok_or(DatagramError::Unrouted),
                }
            }
            Kind::Dtls | Kind::Rtp => self
                .by_addr
                .get(&from)
                .copied()
                .ok_or(DatagramError::Unrouted),
        }
    }

    fn learn_addr(&mut self, key: PeerKey, from: SocketAddr) {
        if self.by_addr.get(&from) == Some(&key) {
            return;
        }
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if p.addrs.len() >= MAX_ADDRS_PER_PEER {
            let oldest = p.addrs.remove(0);
            if self.by_addr.get(&oldest) == Some(&key) {
                self.by_addr.remove(&oldest);
            }
        }
        p.addrs.push(from);
        self.by_addr.insert(from, key);
    }

    /// A receiver was written to: its drain waits for the next `poll_*` (see `undrained`).
    fn defer_drain(&mut self, now: Instant, key: PeerKey) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if !p.drain_due {
            p.drain_due = true;
            self.undrained.push(key);
        }
        self.undrained_at = Some(self.undrained_at.map_or(now, |at| at.max(now)));
    }

    /// Drains the receivers written to since the last `poll_*`, and handles what that
    /// queued.
    fn drain_written(&mut self) {
        let Some(now) = self.undrained_at.take() else {
            return;
        };
        let keys = std::mem::take(&mut self.undrained);
        for &key in &keys {
            self.drain_peer(now, key);
        }
        // Kept for the next batch: forwarding allocates nothing in the steady state.
        self.undrained = keys;
        self.undrained.clear();
        self.run(now);
    }

    /// Drains a peer's `Rtc` and files it under its next deadline.
    fn drain_peer(&mut self, now: Instant, key: PeerKey) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        p.drain_due = false;
        let mut sink = Sink {
            transmits: &mut self.transmits,
            events: &mut self.events,
            work: &mut self.work,
        };
        p.drain(now, &mut sink);
        let at = p.deadline(self.config.answer_timeout);
        if p.timer != Some(at) {
            if let Some(old) = p.timer.take() {
                self.timers.remove(&(old, key));
            }
            p.timer = Some(at);
            self.timers.insert((at, key));
        }
    }

    fn mark_dirty(&mut self, key: PeerKey) {
        if self.peers.get(&key).is_some_and(|p| p.dirty) {
            self.dirty.push(key);
        }
    }

    /// Handles what the drains queued (forwarding, failures, track changes), then sends the
    /// offers that became due.
    fn run(&mut self, now: Instant) {
        loop {
            while let Some(work) = self.work.pop_front() {
                self.handle_work(now, work);
            }
            let dirty = std::mem::take(&mut self.dirty);
            for key in dirty {
                self.negotiate(now, key);
            }
            if self.work.is_empty() && self.dirty.is_empty() {
                return;
            }
        }
    }

    fn negotiate(&mut self, now: Instant, key: PeerKey) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if let Some(sdp) = p.make_offer(now) {
            self.signals.push_back(OutSignal {
                room: p.room.clone(),
                peer: p.id.clone(),
                signal: MediaSignal::Offer { sdp },
            });
            self.drain_peer(now, key);
        }
    }

    /// Forgets a peer: its addresses, timer, published tracks (the others drop them).
    fn remove_key(&mut self, key: PeerKey) {
        let Some(p) = self.peers.remove(&key) else {
            return;
        };
        self.by_name.remove(&(p.room.clone(), p.id.clone()));
        self.by_ufrag.remove(&p.ufrag);
        for addr in &p.addrs {
            if self.by_addr.get(addr) == Some(&key) {
                self.by_addr.remove(addr);
            }
        }
        if let Some(at) = p.timer {
            self.timers.remove(&(at, key));
        }
        let Some(room) = self.rooms.get_mut(&p.room) else {
            return;
        };
        room.members.retain(|k| *k != key);
        room.tracks.retain(|t| t.id.publisher != key);
        let members = room.members.clone();
        if members.is_empty() {
            self.rooms.remove(&p.room);
        }
        for other in members {
            if let Some(o) = self.peers.get_mut(&other) {
                o.drop_source(key, None);
                if o.dirty {
                    self.dirty.push(other);
                }
            }
        }
        tracing::debug!(room = %p.room, peer = %p.id, "sfu peer removed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_core_moves_to_a_driver_task() {
        fn send<T: Send + 'static>() {}
        send::<Sfu>();
        send::<SfuEvent>();
        send::<Transmit>();
    }

    #[test]
    fn timers_are_empty_without_peers() {
        let mut sfu = Sfu::new(SfuConfig::default());
        let now = Instant::now();
        assert_eq!(sfu.poll_timeout(), None);
        sfu.add_peer(now, "r", "p", "192.0.2.1:3480".parse().unwrap())
            .unwrap();
        assert!(
            sfu.poll_timeout()
                .is_some_and(|t| t <= now + SfuConfig::default().connect_timeout)
        );
        sfu.remove_peer(now, "r", "p");
        assert_eq!(sfu.poll_timeout(), None);
        assert_eq!(sfu.stats().rooms, 0);
        // A room past its limit refuses, and the refusal changes nothing.
        let mut sfu = Sfu::new(SfuConfig {
            max_peers_per_room: 1,
            ..SfuConfig::default()
        });
        sfu.add_peer(now, "r", "p", "192.0.2.1:3480".parse().unwrap())
            .unwrap();
        let full = sfu.add_peer(now, "r", "q", "192.0.2.1:3480".parse().unwrap());
        assert_eq!(
            full,
            Err(SfuError::RoomFull {
                room: "r".into(),
                max: 1
            })
        );
        assert_eq!(sfu.stats().peers, 1);
    }
}
