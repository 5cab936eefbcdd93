//! A virtual network for the SFU core: str0m clients (ordinary, non-lite `Rtc`s) and one
//! `Sfu`, datagrams moved between addresses in memory, time advanced by the test. No
//! socket, no sleep.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{
    Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid, Rid, Simulcast,
    SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use switchboard_sfu::{MediaSignal, OutSignal, Sfu, SfuConfig, SfuEvent};

pub const SERVER: &str = "10.9.0.1:3480";
pub const STEP: Duration = Duration::from_millis(5);

/// What a test client publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    Nothing,
    Audio,
    AudioVideo,
    /// One video track in two simulcast layers, "l" (small frames) and "h" (big ones).
    Simulcast,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub mid: Mid,
    pub stream_id: String,
    pub at: Instant,
    pub len: usize,
    /// The first payload byte after the VP8 key bit: the layer's letter in simulcast tests.
    pub tag: u8,
    pub keyframe: bool,
    /// No sequence number gap since the previous frame of this mid.
    pub contiguous: bool,
}

pub struct Client {
    pub id: String,
    pub room: String,
    pub addr: SocketAddr,
    pub rtc: Rtc,
    pub pending: Option<SdpPendingOffer>,
    pub connected: bool,
    /// Mids this client sends on (kind, simulcast).
    pub sending: Vec<(Mid, MediaKind, bool)>,
    pub received: Vec<Received>,
    pub keyframe_requests: Vec<(Instant, Mid, Option<Rid>)>,
    /// Video mids (and layer) owing a key frame.
    pub owe_keyframe: HashSet<(Mid, Option<Rid>)>,
    pub offers_received: usize,
    pub frame_no: u64,
    /// Datagrams from and to this client are lost.
    pub blackholed: bool,
    pub closed: bool,
    pub added: Vec<Mid>,
    /// The address the server sees this client at (a TURN relay, a NAT), if not its own.
    pub via: Option<SocketAddr>,
    /// RTP from the server with an even sequence number is lost, retransmissions (RTX)
    /// excepted: half the media never arrives and the client NACKs it.
    pub lose_even_seq: bool,
    /// RTP bytes the server sent towards this client (before any loss): media, and
    /// retransmissions or padding (RTX payload types).
    pub rtp_bytes: u64,
    pub rtx_bytes: u64,
}

impl Client {
    /// Stream ids (msid) of the m-lines the server sends on and that are still active.
    pub fn active_streams(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .server_mids()
            .into_iter()
            .filter_map(|mid| self.rtc.media(mid))
            .filter(|m| m.direction().is_receiving() && !m.stopped())
            .map(|m| m.stream_id().to_string())
            .collect();
        v.sort();
        v
    }

    /// Mids the server added (this client receives on them).
    pub fn server_mids(&self) -> Vec<Mid> {
        let mut seen: Vec<Mid> = Vec::new();
        for r in &self.received {
            if !seen.contains(&r.mid) {
                seen.push(r.mid);
            }
        }
        let mut all = self.added.clone();
        for m in seen {
            if !all.contains(&m) {
                all.push(m);
            }
        }
        all
    }

    pub fn frames_from(&self, stream: &str, since: Instant) -> usize {
        self.received
            .iter()
            .filter(|r| r.stream_id == stream && r.at >= since)
            .count()
    }

    pub fn streams_received_since(&self, since: Instant) -> Vec<String> {
        let mut v: Vec<String> = self
            .received
            .iter()
            .filter(|r| r.at >= since)
            .map(|r| r.stream_id.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

// The m-lines added by the server, recorded from MediaAdded.
impl Client {
    fn record_added(&mut self, mid: Mid) {
        if !self.added.contains(&mid) {
            self.added.push(mid);
        }
    }
}

pub struct Net {
    pub sfu: Sfu,
    pub server: SocketAddr,
    pub clients: Vec<Client>,
    pub now: Instant,
    pub start: Instant,
    pub events: Vec<SfuEvent>,
    pub signals: Vec<OutSignal>,
    /// Signals to this peer are held here instead of delivered.
    pub hold_signals_for: Option<String>,
    pub held: Vec<OutSignal>,
    wire: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    next_host: u8,
}

impl Net {
    pub fn new() -> Net {
        Net::with_config(SfuConfig::default())
    }

    pub fn with_config(config: SfuConfig) -> Net {
        let now = Instant::now();
        Net {
            sfu: Sfu::new(config),
            server: SERVER.parse().unwrap(),
            clients: Vec::new(),
            now,
            start: now,
            events: Vec::new(),
            signals: Vec::new(),
            hold_signals_for: None,
            held: Vec::new(),
            wire: VecDeque::new(),
            next_host: 10,
        }
    }

    pub fn client(&self, id: &str) -> &Client {
        self.clients
            .iter()
            .find(|c| c.id == id)
            .expect("a client of the test")
    }

    pub fn client_mut(&mut self, id: &str) -> &mut Client {
        self.clients
            .iter_mut()
            .find(|c| c.id == id)
            .expect("a client of the test")
    }

    /// A client joins `room`: the core gets the peer, the client offers what it publishes.
    pub fn join(&mut self, id: &str, room: &str, publish: Publish) {
        let addr: SocketAddr = format!("10.0.0.{}:5000", self.next_host).parse().unwrap();
        self.next_host += 1;
        let mut rtc = Rtc::builder().build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap())
            .unwrap();
        self.sfu
            .add_peer(self.now, room, id, self.server)
            .expect("add_peer");
        let mut change = rtc.sdp_api();
        let mut sending = Vec::new();
        match publish {
            Publish::Nothing => {
                change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
            }
            Publish::Audio => {
                sending.push((
                    change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None),
                    MediaKind::Audio,
                    false,
                ));
            }
            Publish::AudioVideo => {
                sending.push((
                    change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None),
                    MediaKind::Audio,
                    false,
                ));
                sending.push((
                    change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None),
                    MediaKind::Video,
                    false,
                ));
            }
            Publish::Simulcast => {
                let mut sim = Simulcast::new();
                sim.add_send_layer(SimulcastLayer::new("l"));
                sim.add_send_layer(SimulcastLayer::new("h"));
                sending.push((
                    change.add_media(MediaKind::Video, Direction::SendOnly, None, None, Some(sim)),
                    MediaKind::Video,
                    true,
                ));
            }
        }
        let (offer, pending) = change.apply().expect("an offer");
        let client = Client {
            id: id.to_string(),
            room: room.to_string(),
            addr,
            rtc,
            pending: Some(pending),
            connected: false,
            sending,
            received: Vec::new(),
            keyframe_requests: Vec::new(),
            owe_keyframe: HashSet::new(),
            offers_received: 0,
            frame_no: 0,
            blackholed: false,
            closed: false,
            added: Vec::new(),
            via: None,
            lose_even_seq: false,
            rtp_bytes: 0,
            rtx_bytes: 0,
        };
        self.clients.push(client);
        self.sfu
            .handle_signal(
                self.now,
                room,
                id,
                MediaSignal::Offer {
                    sdp: offer.to_sdp_string(),
                },
            )
            .expect("the first offer is accepted");
    }

    pub fn leave(&mut self, id: &str) {
        let c = self.client_mut(id);
        c.closed = true;
        let room = c.room.clone();
        self.sfu.remove_peer(self.now, &room, id);
        self.clients.retain(|c| c.id != id);
    }

    /// Runs the network for `d` of virtual time.
    pub fn run(&mut self, d: Duration) {
        let until = self.now + d;
        while self.now < until {
            self.step();
        }
    }

    /// Runs until `cond` holds (true) or `limit` passes (false).
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&Net) -> bool) -> bool {
        let until = self.now + limit;
        while self.now < until {
            if cond(self) {
                return true;
            }
            self.step();
        }
        cond(self)
    }

    pub fn step(&mut self) {
        self.pump();
        self.now += STEP;
        let now = self.now;
        if self.sfu.poll_timeout().is_some_and(|t| t <= now) {
            self.sfu.handle_timeout(now);
        }
        for c in &mut self.clients {
            c.rtc
                .handle_input(Input::Timeout(now))
                .expect("client timeout");
        }
        self.send_media();
        self.pump();
    }

    /// Moves everything until nothing is left to move at this instant.
    fn pump(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            while let Some(s) = self.sfu.poll_signal() {
                moved = true;
                self.signals.push(s.clone());
                if self.hold_signals_for.as_deref() == Some(s.peer.as_str()) {
                    self.held.push(s);
                } else {
                    self.deliver_signal(s);
                }
            }
            while let Some(e) = self.sfu.poll_event() {
                moved = true;
                self.events.push(e);
            }
            while let Some(t) = self.sfu.poll_transmit() {
                moved = true;
                self.wire.push_back((t.source, t.destination, t.contents));
            }
            for i in 0..self.clients.len() {
                moved |= self.drain_client(i);
            }
            while let Some((from, to, bytes)) = self.wire.pop_front() {
                moved = true;
                self.deliver(from, to, bytes);
            }
            if !moved {
                return;
            }
        }
        panic!("the network does not settle");
    }

    fn deliver(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        let now = self.now;
        if self
            .clients
            .iter()
            .any(|c| c.blackholed && (c.addr == from || c.addr == to))
        {
            return;
        }
        if to == self.server {
            let _ = self
                .sfu
                .handle_datagram(now, from, "0.0.0.0:3480".parse().unwrap(), &bytes);
            return;
        }
        if let Some(c) = self.clients.iter_mut().find(|c| c.addr == to) {
            // SRTP leaves the RTP header in the clear. RTCP is 192..=223 in the second byte.
            if bytes.len() >= 12
                && (128..=191).contains(&bytes[0])
                && !(192..=223).contains(&bytes[1])
            {
                let pt = bytes[1] & 0x7f;
                let rtx = c
                    .rtc
                    .codec_config()
                    .params()
                    .iter()
                    .any(|p| p.resend().is_some_and(|r| *r == pt));
                if rtx {
                    c.rtx_bytes += bytes.len() as u64;
                } else {
                    c.rtp_bytes += bytes.len() as u64;
                    let seq = u16::from_be_bytes([bytes[2], bytes[3]]);
                    if c.lose_even_seq && seq.is_multiple_of(2) {
                        return;
                    }
                }
            }
            let recv =
                Receive::new(Protocol::Udp, from, to, &bytes).expect("a datagram str0m parses");
            c.rtc
                .handle_input(Input::Receive(now, recv))
                .expect("client input");
        }
    }

    /// Delivers the held signals and holds no more.
    pub fn release_signals(&mut self) {
        self.hold_signals_for = None;
        for s in std::mem::take(&mut self.held) {
            self.deliver_signal(s);
        }
        self.pump();
    }

    fn deliver_signal(&mut self, s: OutSignal) {
        let now = self.now;
        let Some(c) = self
            .clients
            .iter_mut()
            .find(|c| c.id == s.peer && c.room == s.room)
        else {
            return;
        };
        match s.signal {
            MediaSignal::Answer { sdp } => {
                let answer = SdpAnswer::from_sdp_string(&sdp).expect("the server's answer parses");
                let pending = c.pending.take().expect("the client has an offer pending");
                c.rtc
                    .sdp_api()
                    .accept_answer(pending, answer)
                    .expect("the client accepts the answer");
            }
            MediaSignal::Offer { sdp } => {
                c.offers_received += 1;
                let offer = SdpOffer::from_sdp_string(&sdp).expect("the server's offer parses");
                // The polite peer: a pending offer of its own is rolled back.
                c.pending = None;
                let answer = c
                    .rtc
                    .sdp_api()
                    .accept_offer(offer)
                    .expect("the client accepts the offer");
                self.sfu
                    .handle_signal(
                        now,
                        &s.room,
                        &s.peer,
                        MediaSignal::Answer {
                            sdp: answer.to_sdp_string(),
                        },
                    )
                    .expect("the core accepts the answer");
            }
            _ => {}
        }
    }

    fn drain_client(&mut self, i: usize) -> bool {
        let now = self.now;
        let c = &mut self.clients[i];
        let mut moved = false;
        loop {
            match c.rtc.poll_output().expect("client output") {
                Output::Timeout(_) => return moved,
                Output::Transmit(t) => {
                    moved = true;
                    self.wire
                        .push_back((t.source, t.destination, t.contents.into()));
                }
                Output::Event(e) => match e {
                    Event::Connected => c.connected = true,
                    Event::MediaAdded(a) => c.record_added(a.mid),
                    Event::MediaData(d) => {
                        let stream_id = c
                            .rtc
                            .media(d.mid)
                            .map(|m| m.stream_id().to_string())
                            .unwrap_or_default();
                        c.received.push(Received {
                            mid: d.mid,
                            stream_id,
                            at: now,
                            len: d.data.len(),
                            tag: d.data.get(1).copied().unwrap_or(0),
                            keyframe: d.is_keyframe(),
                            contiguous: d.contiguous,
                        });
                    }
                    Event::KeyframeRequest(r) => {
                        c.keyframe_requests.push((now, r.mid, r.rid));
                        c.owe_keyframe.insert((r.mid, r.rid));
                    }
                    _ => {}
                },
            }
        }
    }

    /// Every connected client writes one frame per track every 20 ms: audio (Opus), video
    /// (VP8, a key frame every 2 s or when asked), simulcast layers "l" and "h".
    fn send_media(&mut self) {
        let now = self.now;
        let tick = (now - self.start).as_millis() as u64;
        if !tick.is_multiple_of(20) {
            return;
        }
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            if !c.connected || c.blackholed {
                continue;
            }
            c.frame_no += 1;
            let n = c.frame_no;
            for (mid, kind, simulcast) in c.sending.clone() {
                let layers: Vec<Option<Rid>> = if simulcast {
                    vec![Some(Rid::from("l")), Some(Rid::from("h"))]
                } else {
                    vec![None]
                };
                for rid in layers {
                    let c = &mut self.clients[i];
                    let (data, time) = match kind {
                        MediaKind::Audio => (
                            vec![0x55; 80],
                            MediaTime::new(n * 960, Frequency::FORTY_EIGHT_KHZ),
                        ),
                        _ => {
                            let key = n % 100 == 1 || c.owe_keyframe.remove(&(mid, rid));
                            let (tag, len) = match rid.as_deref() {
                                Some("l") => (b'l', 250),
                                Some("h") => (b'h', 1000),
                                _ => (b'v', 600),
                            };
                            let mut data = vec![0x42; len];
                            data[0] = if key { 0x00 } else { 0x01 };
                            data[1] = tag;
                            (data, MediaTime::new(n * 1800, Frequency::NINETY_KHZ))
                        }
                    };
                    let Some(writer) = c.rtc.writer(mid) else {
                        continue;
                    };
                    let audio = kind == MediaKind::Audio;
                    let Some(pt) = writer
                        .payload_params()
                        .find(|p| p.spec().codec.is_audio() == audio)
                        .map(|p| p.pt())
                    else {
                        continue;
                    };
                    let writer = match rid {
                        Some(r) => writer.rid(r),
                        None => writer,
                    };
                    writer.write(pt, now, time, data).expect("client write");
                    // The single-mutation invariant: drain before the next write.
                    self.drain_client(i);
                }
            }
        }
    }

    /// The client asks the server for a key frame on a track it receives.
    pub fn request_keyframe(&mut self, id: &str, mid: Mid) {
        let c = self.client_mut(id);
        if let Some(mut w) = c.rtc.writer(mid) {
            w.request_keyframe(None, KeyframeRequestKind::Pli)
                .expect("a keyframe request");
        }
    }

    pub fn failed(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                SfuEvent::PeerFailed { peer, .. } => Some(peer.clone()),
                _ => None,
            })
            .collect()
    }

    /// Streams (msid) each client received frames of since `since`.
    pub fn routing(&self, since: Instant) -> HashMap<String, Vec<String>> {
        self.clients
            .iter()
            .map(|c| (c.id.clone(), c.streams_received_since(since)))
            .collect()
    }
}
