//! Offer/answer with one client (PROTOCOL.md §7): the client offers first; after that the
//! server offers whenever tracks of other peers come or go, one offer in flight at a time,
//! changes meanwhile batched into the next one. On a collision the server is the impolite
//! peer: a client offer that crosses a pending server offer is ignored (the client rolls
//! back, answers, and offers again).

use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, Mid};

use crate::peer::{OutState, Peer, PeerKey};
use crate::types::SfuError;

/// How long a receiver's video packets are kept for its NACKs. libwebrtc keeps a sender's
/// packets for max(1 s, 3 RTT); a repair later than that comes after the receiver's jitter
/// buffer gave the frame up. str0m's default, 3 s, made each subscribed track's cache the
/// larger part of its memory: every packet is 408 bytes of header and bookkeeping (the
/// payload itself is shared), and the ring grows to hold all of the window.
const RTX_CACHE_AGE: Duration = Duration::from_secs(1);
/// An upper bound on the same, in packets (str0m's default).
const RTX_CACHE_PACKETS: usize = 2000;
/// Queued resends are dropped when they pass this share of what is sent (str0m's default).
const RTX_RATIO_CAP: f32 = 0.15;

/// What a client offer led to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OfferOutcome {
    /// The server's answer.
    Answer(String),
    /// Ignored: a server offer is pending.
    Collision,
}

impl Peer {
    pub(crate) fn accept_offer(&mut self, sdp: &str) -> Result<OfferOutcome, SfuError> {
        if self.pending.is_some() {
            return Ok(OfferOutcome::Collision);
        }
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SfuError::BadSdp(e.to_string()))?;
        self.answered_first = true;
        Ok(OfferOutcome::Answer(answer.to_sdp_string()))
    }

    /// The next server offer, if one is due and allowed now.
    pub(crate) fn make_offer(&mut self, now: Instant) -> Option<String> {
        if !self.dirty || !self.answered_first || self.pending.is_some() || self.failed {
            return None;
        }
        self.dirty = false;
        let mut change = self.rtc.sdp_api();
        for track in &mut self.tracks_out {
            match track.state {
                OutState::ToOpen => {
                    let track_id = format!("{}-{}", track.stream_id, &*track.source.mid);
                    let mid = change.add_media(
                        track.kind,
                        Direction::SendOnly,
                        Some(track.stream_id.clone()),
                        Some(track_id),
                        None,
                    );
                    track.state = OutState::Negotiating(mid);
                }
                OutState::ToStop(mid) => {
                    change.stop_media(mid);
                    track.state = OutState::NegotiatingStop(mid);
                }
                _ => {}
            }
        }
        if !change.has_changes() {
            self.settle_stopped();
            return None;
        }
        let (offer, pending) = change.apply()?;
        self.pending = Some((pending, now));
        Some(offer.to_sdp_string())
    }

    /// Applies the client's answer to the pending server offer; returns the mids of the
    /// tracks it opened.
    pub(crate) fn accept_answer(&mut self, sdp: &str) -> Result<Vec<Mid>, SfuError> {
        if self.pending.is_none() {
            return Err(SfuError::UnexpectedAnswer);
        }
        let answer =
            SdpAnswer::from_sdp_string(sdp).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let Some((pending, _)) = self.pending.take() else {
            return Err(SfuError::UnexpectedAnswer);
        };
        if let Err(e) = self.rtc.sdp_api().accept_answer(pending, answer) {
            // The offer is gone either way: what it carried goes into the next one.
            for track in &mut self.tracks_out {
                track.state = match track.state {
                    OutState::Negotiating(_) => OutState::ToOpen,
                    OutState::NegotiatingStop(mid) => OutState::ToStop(mid),
                    other => other,
                };
            }
            self.dirty = true;
            return Err(SfuError::BadSdp(e.to_string()));
        }
        let mut opened = Vec::new();
        for track in &mut self.tracks_out {
            if let OutState::Negotiating(mid) = track.state {
                if track.removed {
                    track.state = OutState::ToStop(mid);
                    self.dirty = true;
                } else {
                    track.state = OutState::Open(mid);
                    opened.push(mid);
                }
            }
        }
        self.settle_stopped();
        let mut api = self.rtc.direct_api();
        for &mid in &opened {
            if let Some(tx) = api.stream_tx_by_mid(mid, None) {
                tx.set_rtx_cache(RTX_CACHE_PACKETS, RTX_CACHE_AGE, Some(RTX_RATIO_CAP));
            }
        }
        Ok(opened)
    }

    /// A publisher's track left (or the publisher): it leaves this receiver's session by
    /// the next offer.
    pub(crate) fn drop_source(&mut self, publisher: PeerKey, mid: Option<Mid>) {
        let matches = |t: &crate::peer::TrackOut| {
            t.source.publisher == publisher && mid.is_none_or(|m| t.source.mid == m)
        };
        self.tracks_out
            .retain(|t| !(matches(t) && t.state == OutState::ToOpen));
        for track in self.tracks_out.iter_mut().filter(|t| matches(t)) {
            match track.state {
                OutState::Open(m) => {
                    track.state = OutState::ToStop(m);
                    self.dirty = true;
                }
                OutState::Negotiating(_) => track.removed = true,
                _ => {}
            }
        }
    }

    fn settle_stopped(&mut self) {
        self.tracks_out
            .retain(|t| !matches!(t.state, OutState::NegotiatingStop(_)));
    }
}
