//! Media load for the SFU benchmark: str0m clients that publish and receive
//! real DTLS-SRTP through switchboard's SFU rooms (PROTOCOL.md §7), or the
//! same packet stream as plain UDP through `bench/fanout-floor`, the floor
//! a forwarder cannot go under.
//!
//! Every client runs as its own task with its own UDP socket on 127.0.0.1.
//! A publisher sends one video track: `fps` frames a second of
//! `bitrate / fps / 8` bytes, a key frame every `key_every` frames and when
//! the server asks for one. The server's CPU time and RSS are read from
//! `/proc` around the measuring window, after every subscriber has started
//! receiving, so that connection set-up is not counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol as NetProtocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::error::LoadError;
use crate::procstat;

/// Where the media goes.
#[derive(Debug, Clone)]
pub enum MediaTarget {
    /// A switchboard server: `ws://HOST:PORT` of its signaling.
    Switchboard {
        /// Signaling base URL, without a path.
        url: String,
    },
    /// `bench/fanout-floor` listening on this UDP address.
    Floor {
        /// Its address.
        addr: SocketAddr,
    },
}

/// One media run.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Server or floor.
    pub target: MediaTarget,
    /// Its process id, for CPU time and RSS.
    pub server_pid: Option<u32>,
    /// Rooms.
    pub rooms: usize,
    /// Peers per room that publish video (they also receive the others).
    pub publishers_per_room: usize,
    /// Peers per room that only receive.
    pub subscribers_per_room: usize,
    /// Each publisher's video bitrate, bits/s.
    pub bitrate: u64,
    /// Frames per second.
    pub fps: u32,
    /// A key frame every this many frames.
    pub key_every: u64,
    /// Sending before the measuring window starts (after everyone receives).
    pub warmup: Duration,
    /// The measuring window.
    pub duration: Duration,
    /// Upper bound for connecting everyone.
    pub connect_timeout: Duration,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct MediaReport {
    /// "switchboard" or "floor".
    pub target: &'static str,
    /// Rooms.
    pub rooms: usize,
    /// Publishers in all.
    pub publishers: usize,
    /// Receiving peers in all (publishers receive the others too).
    pub receivers: usize,
    /// Subscribed tracks in all: each receiver times the publishers it hears.
    pub subscribed_tracks: usize,
    /// Measuring window, seconds.
    pub seconds: f64,
    /// Datagrams the publishers sent in the window.
    pub sent_datagrams: u64,
    /// Datagrams the receivers got in the window.
    pub received_datagrams: u64,
    /// Of those, media: RTP without padding (the floor's are all media;
    /// through switchboard the rest is RTCP, STUN, and str0m's padding and
    /// probes for bandwidth estimation).
    pub received_media_datagrams: u64,
    /// Bytes the receivers got in the window.
    pub received_bytes: u64,
    /// Frames the publishers sent in the window.
    pub sent_frames: u64,
    /// Frames the receivers decoded in the window (switchboard only).
    pub received_frames: u64,
    /// 1 - received / expected, datagrams (each sent one is owed to every
    /// receiver of its room).
    pub loss: f64,
    /// Server CPU time in the window, microseconds.
    pub server_cpu_us: Option<u64>,
    /// Server CPU per media datagram a receiver got, microseconds.
    pub cpu_us_per_forwarded: Option<f64>,
    /// Server CPU use in the window, percent of one core.
    pub cpu_percent: Option<f64>,
    /// Server RSS before anyone connected and at the end, KiB.
    pub rss_kib: Option<(u64, u64)>,
}

#[derive(Default)]
struct Counters {
    sent_datagrams: AtomicU64,
    sent_frames: AtomicU64,
    received_datagrams: AtomicU64,
    received_bytes: AtomicU64,
    received_frames: AtomicU64,
    received_media_datagrams: AtomicU64,
    /// Receivers that have decoded a frame from every publisher they hear.
    receiving: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> [u64; 6] {
        [
            self.sent_datagrams.load(Ordering::Relaxed),
            self.sent_frames.load(Ordering::Relaxed),
            self.received_datagrams.load(Ordering::Relaxed),
            self.received_bytes.load(Ordering::Relaxed),
            self.received_frames.load(Ordering::Relaxed),
            self.received_media_datagrams.load(Ordering::Relaxed),
        ]
    }
}

#[derive(Debug, Clone, Copy)]
struct Role {
    publish: bool,
    /// How many publishers this peer hears.
    hears: usize,
}

/// Runs the clients, measures, and stops them.
pub async fn run_media(cfg: &MediaConfig) -> Result<MediaReport, LoadError> {
    let counters = Arc::new(Counters::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let rss_before = cfg.server_pid.map(procstat::sample).transpose()?;
    let mut tasks = tokio::task::JoinSet::new();
    let mut receivers = 0usize;
    let mut subscribed = 0usize;
    for r in 0..cfg.rooms {
        let room = format!("media-{}-{r}", std::process::id());
        let peers = cfg.publishers_per_room + cfg.subscribers_per_room;
        for p in 0..peers {
            let publish = p < cfg.publishers_per_room;
            let hears = cfg.publishers_per_room - usize::from(publish);
            if hears > 0 {
                receivers += 1;
                subscribed += hears;
            }
            let role = Role { publish, hears };
            let (cfg, room, counters, stop) =
                (cfg.clone(), room.clone(), counters.clone(), stop_rx.clone());
            tasks.spawn(async move {
                let result = match &cfg.target {
                    MediaTarget::Switchboard { url } => {
                        rtc_client(&cfg, url, &room, role, &counters, stop).await
                    }
                    MediaTarget::Floor { addr } => {
                        floor_client(&cfg, *addr, &room, role, &counters, stop).await
                    }
                };
                if let Err(e) = &result {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("media client in {room}: {e}");
                }
            });
        }
    }
    // Everyone receiving from everyone they hear, within the bound.
    let deadline = Instant::now() + cfg.connect_timeout;
    while counters.receiving.load(Ordering::Relaxed) < receivers as u64 {
        if Instant::now() > deadline || counters.failed.load(Ordering::Relaxed) > 0 {
            let _ = stop_tx.send(true);
            return Err(LoadError::Media(format!(
                "{} of {receivers} receivers got media within {:?} ({} clients failed)",
                counters.receiving.load(Ordering::Relaxed),
                cfg.connect_timeout,
                counters.failed.load(Ordering::Relaxed)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(cfg.warmup).await;
    let before = counters.snapshot();
    let cpu0 = cfg.server_pid.map(procstat::sample).transpose()?;
    let t0 = Instant::now();
    tokio::time::sleep(cfg.duration).await;
    let after = counters.snapshot();
    let cpu1 = cfg.server_pid.map(procstat::sample).transpose()?;
    let seconds = t0.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let stop_deadline = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(stop_deadline);
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            () = &mut stop_deadline => { tasks.abort_all(); break }
        }
    }
    let d = |i: usize| after[i] - before[i];
    let (sent, received, media) = (d(0), d(2), d(5));
    // Each datagram a publisher sends is owed to every receiver that hears
    // it: the others of its room.
    let per_room_receivers =
        (cfg.publishers_per_room + cfg.subscribers_per_room).saturating_sub(1) as u64;
    // The floor's datagrams are all media; str0m's also carry STUN and
    // RTCP, so through switchboard loss is counted in frames.
    let (owed, got) = match cfg.target {
        MediaTarget::Floor { .. } => (sent * per_room_receivers, received),
        MediaTarget::Switchboard { .. } => (d(1) * per_room_receivers, d(4)),
    };
    let loss = if owed == 0 {
        0.0
    } else {
        1.0 - got as f64 / owed as f64
    };
    let cpu = cpu0.zip(cpu1).map(|(a, b)| b.cpu_us - a.cpu_us);
    Ok(MediaReport {
        target: match cfg.target {
            MediaTarget::Switchboard { .. } => "switchboard",
            MediaTarget::Floor { .. } => "floor",
        },
        rooms: cfg.rooms,
        publishers: cfg.rooms * cfg.publishers_per_room,
        receivers,
        subscribed_tracks: subscribed,
        seconds,
        sent_datagrams: sent,
        received_datagrams: received,
        received_media_datagrams: media,
        received_bytes: d(3),
        sent_frames: d(1),
        received_frames: d(4),
        loss,
        server_cpu_us: cpu,
        cpu_us_per_forwarded: cpu.filter(|_| media > 0).map(|c| c as f64 / media as f64),
        cpu_percent: cpu.map(|c| c as f64 / 1e6 / seconds * 100.0),
        rss_kib: rss_before.zip(cpu1).map(|(a, b)| (a.rss_kib, b.rss_kib)),
    })
}

impl MediaReport {
    /// A human summary for stderr.
    #[must_use]
    pub fn summary(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        format!(
            "{}: {} rooms, {} publishers, {} receivers ({} tracks) for {:.1} s: sent {} datagrams, received {} ({:.1} MB), loss {:.3}%, server CPU {} us/forwarded datagram, {}% of a core, RSS {:?} KiB\n",
            self.target,
            self.rooms,
            self.publishers,
            self.receivers,
            self.subscribed_tracks,
            self.seconds,
            self.sent_datagrams,
            self.received_datagrams,
            self.received_bytes as f64 / 1e6,
            self.loss * 100.0,
            opt(self.cpu_us_per_forwarded),
            opt(self.cpu_percent),
            self.rss_kib,
        )
    }
}

/// The frame a publisher sends: a VP8-shaped payload whose first byte says
/// key frame (P bit clear) or not, the rest filler.
fn frame(bytes: usize, key: bool) -> Vec<u8> {
    let mut data = vec![0x42; bytes.max(16)];
    data[0] = if key { 0x10 } else { 0x11 };
    data
}

fn frame_bytes(cfg: &MediaConfig) -> usize {
    (cfg.bitrate / 8 / u64::from(cfg.fps.max(1))) as usize
}

async fn floor_client(
    cfg: &MediaConfig,
    server: SocketAddr,
    room: &str,
    role: Role,
    counters: &Counters,
    mut stop: watch::Receiver<bool>,
) -> Result<(), LoadError> {
    let sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| LoadError::Media(format!("bind: {e}")))?;
    sock.send_to(format!("JOIN {room}").as_bytes(), server)
        .await
        .map_err(|e| LoadError::Media(format!("send: {e}")))?;
    // The floor has no handshake: a member is "receiving" once joined.
    if role.hears > 0 {
        counters.receiving.fetch_add(1, Ordering::Relaxed);
    }
    // What the SFU sends for a frame: about 1,200-byte packets plus SRTP's
    // 10-byte tag and the 12-byte RTP header.
    let bytes = frame_bytes(cfg);
    let packets = bytes.div_ceil(1150).max(1);
    let packet = vec![0x42u8; bytes / packets + 12 + 10];
    let mut tick = tokio::time::interval(Duration::from_secs(1) / cfg.fps.max(1));
    let mut buf = vec![0u8; 2048];
    loop {
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            _ = tick.tick(), if role.publish => {
                for _ in 0..packets {
                    if sock.send_to(&packet, server).await.is_ok() {
                        counters.sent_datagrams.fetch_add(1, Ordering::Relaxed);
                    }
                }
                counters.sent_frames.fetch_add(1, Ordering::Relaxed);
            }
            got = sock.recv_from(&mut buf) => {
                if let Ok((n, _)) = got {
                    counters.received_datagrams.fetch_add(1, Ordering::Relaxed);
                    counters.received_media_datagrams.fetch_add(1, Ordering::Relaxed);
                    counters.received_bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send_json(ws: &mut Ws, value: Value) -> Result<(), LoadError> {
    ws.send(Message::text(value.to_string()))
        .await
        .map_err(|e| LoadError::Media(format!("ws send: {e}")))
}

/// A switchboard SFU peer: signaling over /ws, media over its own socket.
async fn rtc_client(
    cfg: &MediaConfig,
    url: &str,
    room: &str,
    role: Role,
    counters: &Counters,
    mut stop: watch::Receiver<bool>,
) -> Result<(), LoadError> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{url}/ws"))
        .await
        .map_err(|e| LoadError::Media(format!("connect {url}/ws: {e}")))?;
    send_json(
        &mut ws,
        json!({"type": "join", "room": room, "media": "sfu"}),
    )
    .await?;
    let sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| LoadError::Media(format!("bind: {e}")))?;
    let local = sock
        .local_addr()
        .map_err(|e| LoadError::Media(format!("local_addr: {e}")))?;
    let start = Instant::now();
    let mut rtc = Rtc::builder().build(start);
    let candidate =
        Candidate::host(local, "udp").map_err(|e| LoadError::Media(format!("candidate: {e}")))?;
    rtc.add_local_candidate(candidate);
    let mut change = rtc.sdp_api();
    let video = if role.publish {
        Some(change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None))
    } else {
        // Nothing to publish: a receive-only line so that there is an offer.
        change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        None
    };
    let (offer, pending) = change
        .apply()
        .ok_or_else(|| LoadError::Media("no offer to make".into()))?;
    let mut pending: Option<SdpPendingOffer> = Some(pending);
    let mut offered = false;
    let bytes = frame_bytes(cfg);
    let mut frame_no: u64 = 0;
    let mut key_owed = true;
    let mut heard: std::collections::HashSet<Mid> = Default::default();
    let mut receiving = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / cfg.fps.max(1));
    let mut buf = vec![0u8; 2048];
    loop {
        // Drain str0m: send what it says, count what arrives.
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = sock.send_to(&t.contents, t.destination).await;
                    if video.is_some() {
                        counters.sent_datagrams.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Output::Event(e)) => match e {
                    Event::MediaData(d) => {
                        counters.received_frames.fetch_add(1, Ordering::Relaxed);
                        if !receiving && heard.insert(d.mid) && heard.len() >= role.hears {
                            receiving = true;
                            counters.receiving.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Event::KeyframeRequest(_) => key_owed = true,
                    Event::IceConnectionStateChange(str0m::IceConnectionState::Disconnected) => {
                        return Err(LoadError::Media("ICE disconnected".into()));
                    }
                    _ => {}
                },
                Err(e) => return Err(LoadError::Media(format!("rtc: {e}"))),
            }
        };
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(timeout));
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            () = sleep => {
                rtc.handle_input(Input::Timeout(Instant::now())).map_err(|e| LoadError::Media(format!("rtc: {e}")))?;
            }
            got = sock.recv_from(&mut buf) => {
                let Ok((n, source)) = got else { continue };
                // Count what reaches a receiver as the floor counts it: every datagram.
                if role.hears > 0 {
                    counters.received_datagrams.fetch_add(1, Ordering::Relaxed);
                    counters.received_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    if is_media_rtp(&buf[..n]) {
                        counters.received_media_datagrams.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if let Ok(r) = Receive::new(NetProtocol::Udp, source, local, &buf[..n]) {
                    let _ = rtc.handle_input(Input::Receive(Instant::now(), r));
                }
            }
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else { return Err(LoadError::Media("signaling closed".into())) };
                let Ok(text) = msg.to_text() else { continue };
                let Ok(v) = serde_json::from_str::<Value>(text) else { continue };
                match v["type"].as_str() {
                    Some("joined") if !offered => {
                        offered = true;
                        send_json(&mut ws, json!({"type":"media","room":room,"data":{"kind":"offer","sdp":offer.to_sdp_string()}})).await?;
                    }
                    Some("media") => {
                        let data = &v["data"];
                        let sdp = data["sdp"].as_str().unwrap_or_default();
                        match data["kind"].as_str() {
                            Some("answer") => {
                                let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| LoadError::Media(format!("answer: {e}")))?;
                                if let Some(p) = pending.take() {
                                    rtc.sdp_api().accept_answer(p, answer).map_err(|e| LoadError::Media(format!("answer: {e}")))?;
                                }
                            }
                            Some("offer") => {
                                let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| LoadError::Media(format!("offer: {e}")))?;
                                let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| LoadError::Media(format!("offer: {e}")))?;
                                send_json(&mut ws, json!({"type":"media","room":room,"data":{"kind":"answer","sdp":answer.to_sdp_string()}})).await?;
                            }
                            _ => {}
                        }
                    }
                    Some("error") => return Err(LoadError::Media(format!("server: {text}"))),
                    _ => {}
                }
            }
            _ = tick.tick(), if video.is_some() => {
                let Some(mid) = video else { continue };
                let Some(writer) = rtc.writer(mid) else { continue };
                let Some(pt) = writer.payload_params().find(|p| p.spec().codec == Codec::Vp8).map(|p| p.pt()) else { continue };
                frame_no += 1;
                let key = key_owed || frame_no % cfg.key_every.max(1) == 1;
                key_owed = false;
                let now = Instant::now();
                let time = MediaTime::new(frame_no * 90_000 / u64::from(cfg.fps.max(1)), Frequency::NINETY_KHZ);
                if writer.write(pt, now, time, frame(bytes, key)).is_ok() {
                    counters.sent_frames.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Whether a datagram is an RTP media packet: RTP's version 2 (RFC 7983
/// sorts the port's traffic by first byte), a payload type outside RTCP's
/// 192-223 (RFC 5761), and no padding bit (str0m's padding and probes).
fn is_media_rtp(datagram: &[u8]) -> bool {
    let [b0, b1, ..] = *datagram else {
        return false;
    };
    (128..=191).contains(&b0) && b0 & 0x20 == 0 && !(192..=223).contains(&b1)
}

#[cfg(test)]
mod media_rtp_tests {
    use super::is_media_rtp;

    #[test]
    fn media_is_rtp_without_padding() {
        // VP8 with the marker bit (PT 96 | 0x80), plain.
        assert!(is_media_rtp(&[0x90, 0xe0, 0, 1]));
        assert!(is_media_rtp(&[0x80, 0x60, 0, 1]));
        // A padding-only probe, RTCP (SR 200, RR 201, feedback 205), STUN, DTLS.
        assert!(!is_media_rtp(&[0xa0, 0x61, 0, 1]));
        assert!(!is_media_rtp(&[0x80, 200, 0, 6]));
        assert!(!is_media_rtp(&[0x81, 201, 0, 7]));
        assert!(!is_media_rtp(&[0x8f, 205, 0, 4]));
        assert!(!is_media_rtp(&[0x00, 0x01, 0, 0]));
        assert!(!is_media_rtp(&[0x17, 0xfe, 0xfd]));
        assert!(!is_media_rtp(&[0x80]));
    }
}
