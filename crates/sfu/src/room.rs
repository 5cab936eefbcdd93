//! A room's published tracks and what happens to them: subscribing receivers, forwarding
//! frames, key frame requests and the simulcast layer of each receiver.

use std::collections::HashMap;
use std::time::Instant;

use str0m::format::{Codec, PayloadParams};
use str0m::media::{KeyframeRequestKind, MediaAdded, MediaKind, Mid, Rid};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};

use crate::Sfu;
use crate::peer::{OutState, Peer, PeerKey, TrackId, TrackOut, Work};
use crate::simulcast::{LayerMeter, choose_layer};

/// How often a receiver's layers are chosen again besides on a new estimate, so that
/// layers measured after the last estimate count.
const LAYER_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// One frame at 30 fps in 90 kHz units: the gap put between the last frame of one layer
/// and the first of the next.
const SWITCH_GAP_90KHZ: u32 = 3000;
/// A receiver's first sequence number: small, since the receiver assumes a rollover
/// counter of 0 (nothing signals another), and above the few late repairs that could
/// still come for packets just before it.
const FIRST_SEQ: u64 = 1000;
/// H.264 sequence parameter set: a key frame's first packet usually carries it (with the
/// picture parameter set) ahead of the IDR slice, and a decoder needs it first.
const H264_SPS: u8 = 7;
/// H.265 video parameter set: what an encoder sends first in a key frame (with the SPS and
/// PPS, often in one aggregation packet), ahead of the IRAP picture.
const H265_VPS: u8 = 32;
/// H.265 aggregation packet (RFC 7798 §4.4.2).
const H265_AP: u8 = 48;

/// The peers of one SFU room and the tracks they publish.
#[derive(Debug, Default)]
pub(crate) struct Room {
    pub(crate) members: Vec<PeerKey>,
    pub(crate) tracks: Vec<TrackIn>,
}

/// A track a peer publishes.
#[derive(Debug)]
pub(crate) struct TrackIn {
    pub(crate) id: TrackId,
    pub(crate) kind: MediaKind,
    /// The publisher's peer id (the msid stream id of the forwarded track).
    pub(crate) stream_id: String,
    pub(crate) meter: LayerMeter,
    /// The last key frame request sent to the publisher, per layer.
    pub(crate) last_keyframe_request: HashMap<Option<Rid>, Instant>,
}

impl Peer {
    /// Adds a published track to what this peer receives (by the next offer).
    pub(crate) fn subscribe(&mut self, track: &TrackIn) {
        if track.id.publisher == self.key {
            return;
        }
        self.tracks_out
            .push(TrackOut::new(track.id, track.kind, track.stream_id.clone()));
        self.dirty = true;
    }
}

impl Sfu {
    pub(crate) fn handle_work(&mut self, now: Instant, work: Work) {
        match work {
            Work::MediaAdded(key, added) => self.media_added(key, &added),
            Work::DirectionChanged(key, mid, dir) => {
                if dir.is_receiving() {
                    let kind = self
                        .peers
                        .get(&key)
                        .and_then(|p| p.rtc.media(mid))
                        .map(|m| m.kind());
                    if let Some(kind) = kind {
                        self.publish(key, mid, kind, Vec::new());
                    }
                } else {
                    self.unpublish(key, mid);
                }
            }
            Work::Rtp(key, packet) => self.forward(now, key, &packet),
            Work::KeyframeRequest(receiver, req) => {
                let source = self.peers.get(&receiver).and_then(|p| {
                    p.tracks_out
                        .iter()
                        .find(|t| t.state == OutState::Open(req.mid))
                        .map(|t| (t.source, t.layer))
                });
                if let Some((source, layer)) = source {
                    self.request_keyframe(now, source, layer, req.kind);
                }
            }
            Work::Opened(key, mid) => self.opened(now, key, mid),
            Work::Layers(key) => self.choose_layers(now, key),
            Work::Failed(key, reason) => {
                if let Some(p) = self.peers.get(&key) {
                    tracing::info!(room = %p.room, peer = %p.id, %reason, "sfu peer failed");
                    self.events.push_back(crate::SfuEvent::PeerFailed {
                        room: p.room.clone(),
                        peer: p.id.clone(),
                        reason,
                    });
                    self.stats.peers_failed += 1;
                }
                self.remove_key(key);
            }
        }
    }

    fn media_added(&mut self, key: PeerKey, added: &MediaAdded) {
        if !added.direction.is_receiving() {
            return;
        }
        let rids: Vec<Rid> = added
            .simulcast
            .as_ref()
            .map(|s| if s.recv.is_empty() { &s.send } else { &s.recv })
            .map(|layers| layers.iter().map(|l| l.rid).collect())
            .unwrap_or_default();
        self.publish(key, added.mid, added.kind, rids);
    }

    fn publish(&mut self, key: PeerKey, mid: Mid, kind: MediaKind, rids: Vec<Rid>) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if p.published.contains(&mid) {
            return;
        }
        p.published.push(mid);
        let track = TrackIn {
            id: TrackId {
                publisher: key,
                mid,
            },
            kind,
            stream_id: p.id.clone(),
            meter: LayerMeter::new(&rids),
            last_keyframe_request: HashMap::new(),
        };
        let room_name = p.room.clone();
        let Some(room) = self.rooms.get_mut(&room_name) else {
            return;
        };
        for member in &room.members {
            if let Some(receiver) = self.peers.get_mut(member) {
                receiver.subscribe(&track);
                if receiver.dirty {
                    self.dirty.push(*member);
                }
            }
        }
        tracing::debug!(room = %room_name, peer = %track.stream_id, %mid, ?kind, layers = rids.len(), "sfu track published");
        room.tracks.push(track);
    }

    fn unpublish(&mut self, key: PeerKey, mid: Mid) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if !p.published.contains(&mid) {
            return;
        }
        p.published.retain(|m| *m != mid);
        let room_name = p.room.clone();
        let Some(room) = self.rooms.get_mut(&room_name) else {
            return;
        };
        room.tracks.retain(|t| {
            t.id != TrackId {
                publisher: key,
                mid,
            }
        });
        for member in &room.members {
            if let Some(receiver) = self.peers.get_mut(member) {
                receiver.drop_source(key, Some(mid));
                if receiver.dirty {
                    self.dirty.push(*member);
                }
            }
        }
    }

    /// Writes a publisher's RTP packet to every receiver of the track (the layer it gets).
    fn forward(&mut self, now: Instant, publisher: PeerKey, packet: &RtpPacket) {
        let Some(p) = self.peers.get_mut(&publisher) else {
            return;
        };
        let Some(stream) = p.rx_stream(packet.header.ssrc) else {
            return;
        };
        let pt = packet.header.payload_type;
        let Some(params) = p.rtc.codec_config().find(|c| c.pt() == pt).copied() else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&p.room) else {
            return;
        };
        let source = TrackId {
            publisher,
            mid: stream.mid,
        };
        let Some(track) = room.tracks.iter_mut().find(|t| t.id == source) else {
            return;
        };
        track.meter.record(now, stream.rid, packet.payload.len());
        let incoming = Incoming {
            packet,
            rid: stream.rid,
            params,
            starts_keyframe: starts_keyframe(params.spec().codec, &packet.payload),
        };
        let mut members = std::mem::take(&mut self.fanout);
        members.clear();
        members.extend_from_slice(&room.members);
        let mut wants_keyframe = false;
        for &member in &members {
            if member == publisher {
                continue;
            }
            let written = self.write_to(now, member, source, &incoming);
            wants_keyframe |= written == Written::Stalled;
            if written == Written::Yes {
                self.defer_drain(now, member);
            }
        }
        self.fanout = members;
        // A receiver waits for a key frame of this layer. A loss the publisher's NACKs did
        // not repair is left to the receiver's own PLI, which is forwarded (throttled).
        if wants_keyframe {
            self.request_keyframe(now, source, stream.rid, KeyframeRequestKind::Pli);
        }
    }

    fn write_to(
        &mut self,
        now: Instant,
        member: PeerKey,
        source: TrackId,
        incoming: &Incoming<'_>,
    ) -> Written {
        let Some(receiver) = self.peers.get_mut(&member) else {
            return Written::No;
        };
        if receiver.failed {
            return Written::No;
        }
        if now >= receiver.next_layer_check {
            self.work.push_back(Work::Layers(member));
            receiver.next_layer_check = now + LAYER_CHECK_INTERVAL;
        }
        let Some(out) = receiver.tracks_out.iter_mut().find(|t| t.source == source) else {
            return Written::No;
        };
        let OutState::Open(mid) = out.state else {
            return Written::No;
        };
        let packet = incoming.packet;
        let seq = *packet.seq_no;
        let mut time = packet.header.timestamp;
        if incoming.rid.is_some() {
            if out.layer != incoming.rid {
                if out.target != incoming.rid {
                    return Written::No;
                }
                if !incoming.starts_keyframe {
                    return Written::Stalled;
                }
                // Switch at this key frame's first packet; keep the receiver's RTP time and
                // sequence numbers continuous.
                out.time_offset = match out.last_time {
                    Some(last) => last.wrapping_add(SWITCH_GAP_90KHZ).wrapping_sub(time),
                    None => 0,
                };
                out.seq_offset = out
                    .last_seq
                    .map(|last| last.wrapping_add(1).wrapping_sub(seq));
                out.seq_floor = seq;
                if out.layer.is_some() {
                    self.stats.layer_switches += 1;
                }
                out.layer = incoming.rid;
            }
            time = time.wrapping_add(out.time_offset);
            out.last_time = Some(time);
        }
        let offset = match out.seq_offset {
            Some(offset) => offset,
            None => {
                out.seq_floor = seq;
                *out.seq_offset.insert(FIRST_SEQ.wrapping_sub(seq))
            }
        };
        if seq < out.seq_floor {
            return Written::No;
        }
        let out_seq = seq.wrapping_add(offset);
        out.last_seq = Some(out.last_seq.map_or(out_seq, |last| last.max(out_seq)));
        let pt = match out.pt_map {
            Some((from, to)) if from == packet.header.payload_type => to,
            _ => {
                let Some(local) = receiver.rtc.codec_config().match_params(incoming.params) else {
                    return Written::No;
                };
                let to = local.pt();
                out.pt_map = Some((packet.header.payload_type, to));
                to
            }
        };
        let video = out.kind == MediaKind::Video;
        // Kept for the receiver: who speaks (active speaker UIs) and which way is up. The
        // rest (transport-wide seq, mid, rid) is the receiver session's own.
        let ext = &packet.header.ext_vals;
        let ext_vals = ExtensionValues {
            audio_level: ext.audio_level,
            voice_activity: ext.voice_activity,
            video_orientation: ext.video_orientation,
            ..Default::default()
        };
        let mut api = receiver.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            return Written::No;
        };
        tx.write_rtp(
            RtpWrite::new(
                pt,
                out_seq.into(),
                time,
                packet.timestamp,
                packet.payload.clone(),
            )
            .marker(packet.header.marker)
            .ext_vals(ext_vals)
            .nackable(video),
        );
        // A frame ends at a video packet with the marker bit; every audio packet is one.
        if packet.header.marker || !video {
            self.stats.forwarded_frames += 1;
        }
        self.stats.forwarded_packets += 1;
        self.stats.forwarded_bytes += packet.payload.len() as u64;
        Written::Yes
    }

    /// Asks a publisher for a key frame of one track (one layer), at most once per
    /// `keyframe_request_interval`.
    fn request_keyframe(
        &mut self,
        now: Instant,
        source: TrackId,
        rid: Option<Rid>,
        kind: KeyframeRequestKind,
    ) {
        let Some(p) = self.peers.get_mut(&source.publisher) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&p.room) else {
            return;
        };
        let Some(track) = room.tracks.iter_mut().find(|t| t.id == source) else {
            return;
        };
        if track.kind != MediaKind::Video {
            return;
        }
        let interval = self.config.keyframe_request_interval;
        if track
            .last_keyframe_request
            .get(&rid)
            .is_some_and(|last| now < *last + interval)
        {
            self.stats.keyframe_requests_throttled += 1;
            return;
        }
        track.last_keyframe_request.insert(rid, now);
        // Only a feedback kind the publisher negotiated.
        let possible = p.rtc.codec_config().params().iter().any(|c| match kind {
            KeyframeRequestKind::Pli => c.fb_pli(),
            KeyframeRequestKind::Fir => c.fb_fir(),
        });
        if !possible {
            return;
        }
        let mut api = p.rtc.direct_api();
        let Some(rx) = api.stream_rx_by_mid(source.mid, rid) else {
            return;
        };
        rx.request_keyframe(kind);
        self.stats.keyframe_requests += 1;
        self.drain_peer(now, source.publisher);
    }

    /// A receiver's track was negotiated: pick its layer and ask for a key frame so that
    /// it can start decoding at once.
    fn opened(&mut self, now: Instant, key: PeerKey, mid: Mid) {
        let Some(out) = self
            .peers
            .get(&key)
            .and_then(|p| p.tracks_out.iter().find(|t| t.state == OutState::Open(mid)))
        else {
            return;
        };
        let (source, simulcast) = (
            out.source,
            out.target.is_some() || self.is_simulcast(out.source),
        );
        if simulcast {
            self.choose_layers(now, key);
        } else {
            self.request_keyframe(now, source, None, KeyframeRequestKind::Pli);
        }
    }

    fn is_simulcast(&self, source: TrackId) -> bool {
        self.peers
            .get(&source.publisher)
            .and_then(|p| self.rooms.get(&p.room))
            .and_then(|r| r.tracks.iter().find(|t| t.id == source))
            .is_some_and(|t| t.meter.is_simulcast())
    }

    /// Chooses the layer of every simulcast track a receiver gets, from its estimate (and
    /// cap) shared among them; a new target layer gets a key frame request.
    pub(crate) fn choose_layers(&mut self, now: Instant, key: PeerKey) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let Some(room) = self.rooms.get(&p.room) else {
            return;
        };
        let estimate = p
            .estimate
            .map_or(self.config.bwe_initial_bps, |e| e.as_u64());
        let budget = p.cap_bps.map_or(estimate, |cap| cap.min(estimate));
        // The estimator probes (with padding, which costs as much as media) towards what
        // this receiver may use, not past it; a track not measured yet may need the most.
        let mut wanted = 0u64;
        for out in &p.tracks_out {
            if matches!(out.state, OutState::Open(_)) {
                let track = room.tracks.iter().find(|t| t.id == out.source);
                let track_wants = track.and_then(|t| t.meter.wanted_bps(now));
                wanted = wanted.saturating_add(track_wants.unwrap_or(self.config.bwe_desired_bps));
            }
        }
        let rearm = p.set_desired_bitrate(wanted.min(self.config.bwe_desired_bps));
        let open: Vec<usize> = (0..p.tracks_out.len())
            .filter(|i| matches!(p.tracks_out[*i].state, OutState::Open(_)))
            .filter(|i| {
                room.tracks
                    .iter()
                    .any(|t| t.id == p.tracks_out[*i].source && t.meter.is_simulcast())
            })
            .collect();
        if open.is_empty() {
            if rearm {
                self.defer_drain(now, key);
            }
            return;
        }
        let share = budget / open.len() as u64;
        let mut requests = Vec::new();
        for i in open {
            let out = &mut p.tracks_out[i];
            let Some(track) = room.tracks.iter().find(|t| t.id == out.source) else {
                continue;
            };
            let choice = choose_layer(&track.meter.rates(now), share, out.layer);
            if choice != out.target {
                tracing::debug!(peer = %p.id, from = ?out.target, to = ?choice, share, "sfu layer target");
                out.target = choice;
            }
            if out.layer != out.target {
                requests.push((out.source, out.target));
            }
        }
        for (source, rid) in requests {
            self.request_keyframe(now, source, rid, KeyframeRequestKind::Pli);
        }
        if rearm {
            self.defer_drain(now, key);
        }
    }
}

/// What writing a frame to one receiver did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    Yes,
    No,
    /// The receiver waits for a key frame of this layer to switch to it.
    Stalled,
}

/// A publisher's packet and what forwarding needs to know about it, found once for all
/// receivers.
struct Incoming<'a> {
    packet: &'a RtpPacket,
    rid: Option<Rid>,
    /// The publisher's parameters for the packet's payload type.
    params: PayloadParams,
    /// The first packet of a key frame: a layer switch may happen here.
    starts_keyframe: bool,
}

fn starts_keyframe(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => str0m::format::detect_vp8_keyframe(payload),
        Codec::Vp9 => str0m::format::detect_vp9_keyframe(payload),
        Codec::H264 => {
            str0m::format::detect_h264_nalu(payload, H264_SPS)
                || str0m::format::detect_h264_keyframe(payload)
        }
        Codec::H265 => h265_has_vps(payload) || str0m::format::detect_h265_keyframe(payload),
        Codec::Av1 => str0m::format::detect_av1_keyframe(payload),
        _ => false,
    }
}

/// An H.265 payload (RFC 7798) that is, or aggregates, a video parameter set. str0m's
/// detector finds the IRAP picture, which comes after the parameter sets: switching there
/// would leave the receiver's decoder without them.
fn h265_has_vps(payload: &[u8]) -> bool {
    let nal_type = |b: u8| (b >> 1) & 0x3f;
    let Some(&first) = payload.first() else {
        return false;
    };
    match nal_type(first) {
        H265_VPS => payload.len() >= 2,
        H265_AP => {
            // Two bytes of header, then units of a 16-bit size and the NAL unit.
            let mut rest = payload.get(2..).unwrap_or_default();
            while let [hi, lo, units @ ..] = rest {
                let size = usize::from(*hi) << 8 | usize::from(*lo);
                let Some(unit) = units.get(..size) else {
                    return false;
                };
                if size >= 2 && nal_type(unit[0]) == H265_VPS {
                    return true;
                }
                rest = &units[size..];
            }
            false
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_switch_point_is_the_first_packet_of_a_key_frame() {
        // VP8: descriptor S=1 PID=0, then the payload header's P bit (0: key frame).
        assert!(starts_keyframe(Codec::Vp8, &[0x10, 0x00, 0x9d]));
        assert!(!starts_keyframe(Codec::Vp8, &[0x10, 0x01, 0x9d]));
        // A key frame's later packet (S=0) is no place to start.
        assert!(!starts_keyframe(Codec::Vp8, &[0x00, 0x00, 0x9d]));
        // H.264: an SPS (alone or in a STAP-A) or an IDR slice's first fragment.
        assert!(starts_keyframe(Codec::H264, &[0x67, 0x42]));
        assert!(starts_keyframe(
            Codec::H264,
            &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce]
        ));
        assert!(starts_keyframe(Codec::H264, &[0x7c, 0x85, 0x88]));
        assert!(!starts_keyframe(Codec::H264, &[0x7c, 0x05, 0x88]));
        assert!(!starts_keyframe(Codec::H264, &[0x41, 0x9a]));
        // H.265: a VPS (alone or in an aggregation packet), or an IRAP picture's first
        // fragment (FU, type 49, S=1, IDR_W_RADL); not a trailing picture's slice.
        assert!(starts_keyframe(Codec::H265, &[0x40, 0x01, 0x0c]));
        assert!(starts_keyframe(
            Codec::H265,
            &[
                0x60, 0x01, 0x00, 0x03, 0x40, 0x01, 0x0c, 0x00, 0x03, 0x42, 0x01, 0x01
            ]
        ));
        assert!(starts_keyframe(Codec::H265, &[0x62, 0x01, 0x93, 0xaf]));
        assert!(!starts_keyframe(Codec::H265, &[0x62, 0x01, 0x13, 0xaf]));
        assert!(!starts_keyframe(Codec::H265, &[0x02, 0x01, 0xd0]));
        // An aggregation packet that lies about a unit's size is no switch point.
        assert!(!starts_keyframe(
            Codec::H265,
            &[0x60, 0x01, 0x00, 0x09, 0x40, 0x01]
        ));
        assert!(!starts_keyframe(Codec::H265, &[0x60, 0x01, 0x00]));
        // Audio never starts a layer, nor does an empty payload.
        assert!(!starts_keyframe(Codec::Opus, &[0x10, 0x00]));
        assert!(!starts_keyframe(Codec::Vp8, &[]));
    }
}
