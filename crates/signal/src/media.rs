//! SFU rooms (PROTOCOL.md §7): what the media relay hears from the core
//! and what it says back to a peer through it.

use std::time::Instant;

use serde_json::value::RawValue;
use switchboard_signal_proto::ErrorCode;

use crate::{ConnId, SignalCore};

/// What the core tells the media relay ([`crate::Output::Media`]). Only
/// native peers of SFU rooms on a node alone cause these: a Socket.IO peer
/// cannot send `media`, so it has no media session; a call's room is a mesh
/// room.
#[derive(Debug, Clone)]
pub enum MediaOutput {
    /// A peer entered an SFU room (right after its `joined`). `conn` is the
    /// signaling connection it joined on, for the address the client
    /// reached (the host candidate's address when `media.public_ip` is
    /// not set). A resume onto another connection sends nothing new: the
    /// media session runs on UDP, apart from signaling.
    Joined {
        /// Room name.
        room: String,
        /// Peer id.
        peer: String,
        /// The connection of the join.
        conn: ConnId,
    },
    /// The peer is out of the room for good: `leave`, a kick or a closed
    /// room, or its session ended (clean close, grace expiry, replay full,
    /// too many suspended sessions, a resume that started over). A session
    /// in its resume grace is still in the room: no `Left` until it ends.
    Left {
        /// Room name.
        room: String,
        /// Peer id.
        peer: String,
    },
    /// A valid `media` request: `data` is a JSON object with `kind`
    /// `offer` or `answer` (and a string `sdp`) or `candidate` (and an
    /// object `candidate`), as the client wrote it.
    Signal {
        /// Room name.
        room: String,
        /// Peer id of the sender.
        peer: String,
        /// The request's `data`.
        data: Box<RawValue>,
    },
}

/// `data` compares by its text (`RawValue` has no `PartialEq`).
impl PartialEq for MediaOutput {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                MediaOutput::Joined { room, peer, conn },
                MediaOutput::Joined {
                    room: r,
                    peer: p,
                    conn: c,
                },
            ) => room == r && peer == p && conn == c,
            (MediaOutput::Left { room, peer }, MediaOutput::Left { room: r, peer: p }) => {
                room == r && peer == p
            }
            (
                MediaOutput::Signal { room, peer, data },
                MediaOutput::Signal {
                    room: r,
                    peer: p,
                    data: d,
                },
            ) => room == r && peer == p && data.get() == d.get(),
            _ => false,
        }
    }
}

impl SignalCore {
    /// Sends `{"type":"media","room":room,"data":data}` to `peer`, with
    /// `seq` and kept for replay like any frame, so that it survives a
    /// resume. Returns false, sending nothing, when `peer` is not (or no
    /// longer) a media peer of the SFU room `room`: the relay drops it.
    /// Drain [`SignalCore::poll_output`] after it.
    pub fn send_media(&mut self, _now: Instant, room: &str, peer: &str, data: &RawValue) -> bool {
        let _ = (room, peer, data);
        false
    }

    /// Sends an `error` frame with `code`, `message` and `"room":room` to
    /// `peer` (sequenced and kept for replay), for what the media relay
    /// refused or lost: `bad_request` for SDP it cannot take, `internal`
    /// or `unavailable` when the peer's media failed. Returns false when
    /// `peer` is not a media peer of `room`. Drain
    /// [`SignalCore::poll_output`] after it.
    pub fn media_error(
        &mut self,
        _now: Instant,
        room: &str,
        peer: &str,
        code: ErrorCode,
        message: &str,
    ) -> bool {
        let _ = (room, peer, code, message);
        false
    }
}
