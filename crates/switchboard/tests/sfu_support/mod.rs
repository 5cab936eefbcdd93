//! A media peer for the SFU tests: a str0m `Rtc` on a real UDP socket on
//! 127.0.0.1 and a real signaling connection to `/ws`, driven by a small
//! loop in the test (every wait bounded).

#![allow(dead_code)] // each test file uses its own part

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use switchboard_testkit::{Client, Server};
use tokio::net::UdpSocket;

enum Woke {
    Datagram((usize, SocketAddr)),
    Frame(Option<Value>),
}

/// A peer in an SFU room: its signaling connection, its one
/// RTCPeerConnection (str0m) with the server, and what it saw.
pub struct MediaPeer {
    pub ws: Client,
    pub id: String,
    pub room: String,
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    buf: Vec<u8>,
    pending: Option<SdpPendingOffer>,
    /// The mids this peer publishes on.
    pub audio: Option<Mid>,
    pub video: Option<Mid>,
    /// Media frames received, by the mid they came on.
    pub received: HashMap<Mid, u64>,
    /// The stream id (the publishing peer's id, PROTOCOL.md §7) of each
    /// mid the server offered to send on, from its latest offer.
    pub streams: HashMap<Mid, String>,
    /// Mids the server's latest offer has sending to us.
    pub live: HashSet<Mid>,
    pub connected: bool,
    pub server_offers: u32,
    pub answers: u32,
    /// The server's latest answer.
    pub answer_sdp: String,
    /// `error` frames.
    pub errors: Vec<Value>,
    /// Other frames, in order.
    pub frames: Vec<Value>,
    rtp_time: u64,
}

impl MediaPeer {
    /// Connects, joins `room` asking for an SFU room, and checks `joined`.
    pub async fn join(server: &Server, room: &str) -> MediaPeer {
        let mut ws = Client::connect(&server.ws_url("")).await;
        let id = ws.peer();
        ws.send(json!({"type":"join","room":room,"media":"sfu"}))
            .await;
        let joined = ws.recv_type("joined").await;
        assert_eq!(joined["media"], "sfu", "{joined}");
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("udp");
        let local = socket.local_addr().expect("addr");
        let mut rtc = Rtc::builder().build(Instant::now());
        let candidate = Candidate::host(local, "udp").expect("candidate");
        rtc.add_local_candidate(candidate).expect("local candidate");
        MediaPeer {
            ws,
            id,
            room: room.to_owned(),
            rtc,
            socket,
            local,
            buf: vec![0; 2048],
            pending: None,
            audio: None,
            video: None,
            received: HashMap::new(),
            streams: HashMap::new(),
            live: HashSet::new(),
            connected: false,
            server_offers: 0,
            answers: 0,
            answer_sdp: String::new(),
            errors: Vec::new(),
            frames: Vec::new(),
            rtp_time: 0,
        }
    }

    /// The first offer: one Opus and one VP8 track to publish, as a
    /// browser's `addTrack` twice would.
    pub async fn offer_tracks(&mut self) {
        let mut change = self.rtc.sdp_api();
        let audio = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let video = change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = change.apply().expect("changes");
        self.audio = Some(audio);
        self.video = Some(video);
        self.pending = Some(pending);
        self.send_media(json!({"kind":"offer","sdp":offer.to_sdp_string()}))
            .await;
    }

    pub async fn send_media(&mut self, data: Value) {
        let room = self.room.clone();
        self.ws
            .send(json!({"type":"media","room":room,"data":data}))
            .await;
    }

    /// One turn of the loop: flush str0m's output, then wait (at most
    /// `limit`) for a datagram, a frame, or str0m's next deadline.
    pub async fn step(&mut self, limit: Duration) {
        let deadline = self.flush().await;
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(limit);
        let woke = tokio::select! {
            r = self.socket.recv_from(&mut self.buf) => Woke::Datagram(r.expect("udp receive")),
            frame = self.ws.try_recv(wait) => Woke::Frame(frame),
        };
        match woke {
            Woke::Datagram((n, from)) => {
                self.on_datagram(n, from);
                // What else is queued, without waiting (bounded).
                for _ in 0..64 {
                    match self.socket.try_recv_from(&mut self.buf) {
                        Ok((n, from)) => self.on_datagram(n, from),
                        Err(_) => break,
                    }
                }
            }
            Woke::Frame(Some(frame)) => self.on_frame(frame).await,
            Woke::Frame(None) => {}
        }
        self.rtc
            .handle_input(Input::Timeout(Instant::now()))
            .expect("str0m timeout");
    }

    fn on_datagram(&mut self, n: usize, from: SocketAddr) {
        if let Ok(contents) = self.buf[..n].try_into() {
            let input = Input::Receive(
                Instant::now(),
                Receive {
                    proto: Protocol::Udp,
                    source: from,
                    destination: self.local,
                    contents,
                },
            );
            self.rtc
                .handle_input(input)
                .expect("str0m takes a datagram");
        }
    }

    /// Sends what str0m has to send; returns its next deadline.
    async fn flush(&mut self) -> Instant {
        loop {
            match self.rtc.poll_output().expect("str0m output") {
                Output::Timeout(at) => return at,
                Output::Transmit(t) => {
                    let _ = self.socket.send_to(&t.contents, t.destination).await;
                }
                Output::Event(event) => self.on_event(event),
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected => self.connected = true,
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.connected = false;
            }
            Event::MediaData(data) => *self.received.entry(data.mid).or_default() += 1,
            _ => {}
        }
    }

    async fn on_frame(&mut self, frame: Value) {
        match frame["type"].as_str() {
            Some("media") => {
                assert_eq!(frame["room"], self.room.as_str(), "{frame}");
                let data = &frame["data"];
                let sdp = data["sdp"].as_str().unwrap_or_default();
                match data["kind"].as_str() {
                    Some("answer") => {
                        let answer = SdpAnswer::from_sdp_string(sdp).expect("answer SDP");
                        let pending = self.pending.take().expect("an answer to our offer");
                        self.rtc
                            .sdp_api()
                            .accept_answer(pending, answer)
                            .expect("answer accepted");
                        self.answers += 1;
                        self.answer_sdp = sdp.to_owned();
                    }
                    Some("offer") => {
                        // The polite peer: a pending offer of ours is rolled
                        // back by accepting the server's.
                        self.pending = None;
                        self.server_offers += 1;
                        self.note_streams(sdp);
                        let offer = SdpOffer::from_sdp_string(sdp).expect("offer SDP");
                        let answer = self
                            .rtc
                            .sdp_api()
                            .accept_offer(offer)
                            .expect("offer accepted");
                        self.send_media(json!({"kind":"answer","sdp":answer.to_sdp_string()}))
                            .await;
                    }
                    // An ICE-lite server gathers nothing after its answer;
                    // a candidate is still a valid frame.
                    Some("candidate") => {}
                    other => panic!("unexpected media kind {other:?}: {frame}"),
                }
            }
            Some("error") => self.errors.push(frame),
            _ => self.frames.push(frame),
        }
    }

    /// Which mid carries whose stream, from the `a=mid` and `a=msid`
    /// lines of the server's offer (sending sections only).
    fn note_streams(&mut self, sdp: &str) {
        self.streams.clear();
        self.live.clear();
        for section in sdp.split("\nm=").skip(1) {
            let attr = |name: &str| {
                section
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(name).map(str::to_owned))
            };
            let Some(mid) = attr("a=mid:") else { continue };
            let mid = Mid::from(mid.as_str());
            let sending = section.lines().any(|l| {
                let l = l.trim();
                l == "a=sendonly" || l == "a=sendrecv"
            });
            let port_zero = section.starts_with("audio 0 ") || section.starts_with("video 0 ");
            if let Some(msid) = attr("a=msid:")
                && let Some(stream) = msid.split_whitespace().next()
            {
                self.streams.insert(mid, stream.to_owned());
            }
            if sending && !port_zero {
                self.live.insert(mid);
            }
        }
    }

    /// Writes one fake Opus frame and one fake VP8 key frame.
    pub fn send_media_frames(&mut self) {
        self.rtp_time += 960;
        let now = Instant::now();
        for (mid, payload, clock) in [
            (
                self.audio,
                &[0xfc_u8, 0xff, 0xfe, 0x01, 0x02][..],
                Frequency::FORTY_EIGHT_KHZ,
            ),
            (self.video, &VP8_KEY_FRAME[..], Frequency::NINETY_KHZ),
        ] {
            let Some(mid) = mid else { continue };
            let Some(writer) = self.rtc.writer(mid) else {
                continue;
            };
            let Some(pt) = writer.payload_params().next().map(|p| p.pt()) else {
                continue;
            };
            let ticks = self.rtp_time * u64::from(clock.get()) / 48_000;
            let time = MediaTime::new(ticks, clock);
            writer
                .write(pt, now, time, payload.to_vec())
                .expect("write a frame");
        }
    }

    /// Frames received on mids whose stream is `publisher`'s.
    pub fn received_from(&self, publisher: &str) -> u64 {
        self.streams
            .iter()
            .filter(|(_, stream)| stream.as_str() == publisher)
            .map(|(mid, _)| self.received.get(mid).copied().unwrap_or(0))
            .sum()
    }

    /// This peer's media socket, for a test that sends from its address.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Mids the server sends `publisher`'s media on now.
    pub fn live_from(&self, publisher: &str) -> usize {
        self.streams
            .iter()
            .filter(|(mid, stream)| stream.as_str() == publisher && self.live.contains(mid))
            .count()
    }
}

/// The start of a VP8 key frame (RFC 6386 §9.1: a key frame tag, the
/// start code, 640x480), then filler: enough for a depacketizer.
const VP8_KEY_FRAME: [u8; 24] = [
    0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01, 0x00, 0x47, 0x08, 0x85, 0x85, 0x88,
    0x85, 0x84, 0x88, 0x02, 0x02, 0x00, 0x0c, 0x0d,
];

/// Drives every peer until `done` holds, at most `limit`; media flows
/// (each peer writes a frame every 20 ms) while waiting.
pub async fn drive_until(
    peers: &mut [MediaPeer],
    limit: Duration,
    send_media: bool,
    mut done: impl FnMut(&[MediaPeer]) -> bool,
) -> bool {
    let end = Instant::now() + limit;
    let mut next_frame = Instant::now();
    while Instant::now() < end {
        if done(peers) {
            return true;
        }
        if send_media && Instant::now() >= next_frame {
            next_frame = Instant::now() + Duration::from_millis(20);
            for p in peers.iter_mut().filter(|p| p.connected) {
                p.send_media_frames();
            }
        }
        for p in peers.iter_mut() {
            p.step(Duration::from_millis(2)).await;
        }
    }
    done(peers)
}

/// Every peer gets media from every other peer, on tracks whose stream id
/// is the publisher's peer id.
pub fn everyone_hears_everyone(peers: &[MediaPeer]) -> bool {
    peers.iter().all(|p| {
        peers
            .iter()
            .filter(|q| q.id != p.id)
            .all(|q| p.received_from(&q.id) >= 4)
    })
}

/// What each peer got, for a failing assertion's message.
pub fn report(peers: &[MediaPeer]) -> String {
    peers
        .iter()
        .map(|p| {
            format!(
                "{}: connected={} answers={} offers={} streams={:?} received={:?} errors={:?}",
                p.id, p.connected, p.answers, p.server_offers, p.streams, p.received, p.errors
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Frames each peer has received so far, from everyone.
pub fn frames_so_far(peers: &[MediaPeer]) -> Vec<u64> {
    peers.iter().map(|p| p.received.values().sum()).collect()
}

/// Whether each peer has received more than `more` frames since `before`
/// (from [`frames_so_far`]).
pub fn each_got_more(peers: &[MediaPeer], before: &[u64], more: u64) -> bool {
    frames_so_far(peers)
        .iter()
        .zip(before)
        .all(|(now, b)| *now > b + more)
}
