//! The plain data the core takes and gives: configuration, signals, transmits, events,
//! statistics and errors.

use std::net::SocketAddr;
use std::time::Duration;

/// Settings of an [`Sfu`](crate::Sfu). `Default` gives the documented values; durations
/// are capped at one day.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SfuConfig {
    /// Peers one SFU room holds; `add_peer` past it is [`SfuError::RoomFull`]. Default 64.
    pub max_peers_per_room: usize,
    /// A peer whose ICE+DTLS has not completed this long after `add_peer` fails
    /// ([`SfuEvent::PeerFailed`]). Default 30 s.
    pub connect_timeout: Duration,
    /// A server offer the client has not answered this long fails the peer. Default 30 s.
    pub answer_timeout: Duration,
    /// The bandwidth estimate a receiver starts with, in bit/s, before str0m's estimator
    /// has measured anything. Default 1 Mbit/s.
    pub bwe_initial_bps: u64,
    /// The rate the estimator probes towards, in bit/s. Default 5 Mbit/s.
    pub bwe_desired_bps: u64,
    /// At most one key frame request is sent to a publisher per track and layer in this
    /// interval; the others are dropped (and counted). Default 500 ms.
    pub keyframe_request_interval: Duration,
    /// Bytes per second (in bits) a peer may send to the media port; past it its datagrams
    /// are dropped before its `Rtc` sees them ([`DatagramError::OverBudget`]). A peer may
    /// burst one second's worth at once. 0: no limit. Default 20 Mbit/s (three simulcast
    /// layers of 2.5 Mbit/s, audio and RTCP fit several times over).
    pub peer_max_bitrate_bps: u64,
    /// Datagrams per second a peer may send to the media port, the same way. 0: no limit.
    /// Default 5,000.
    pub peer_max_datagram_rate: u64,
    /// A peer that sends at least twice its budget (in datagrams or bytes) in every second
    /// for this long fails with a "media flood" reason. Zero: it is only limited, never
    /// ended. Default 5 s.
    pub peer_flood_timeout: Duration,
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            max_peers_per_room: 64,
            connect_timeout: Duration::from_secs(30),
            answer_timeout: Duration::from_secs(30),
            bwe_initial_bps: 1_000_000,
            bwe_desired_bps: 5_000_000,
            keyframe_request_interval: Duration::from_millis(500),
            peer_max_bitrate_bps: 20_000_000,
            peer_max_datagram_rate: 5_000,
            peer_flood_timeout: Duration::from_secs(5),
        }
    }
}

/// A `media` request's data (PROTOCOL.md §7), client to server or server to client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaSignal {
    /// An SDP offer.
    Offer {
        /// The session description.
        sdp: String,
    },
    /// An SDP answer.
    Answer {
        /// The session description.
        sdp: String,
    },
    /// A trickled ICE candidate (RTCIceCandidateInit).
    Candidate {
        /// The `candidate:...` string; empty for end-of-candidates.
        candidate: String,
        /// The media section it belongs to.
        sdp_mid: Option<String>,
        /// The index of that media section.
        sdp_m_line_index: Option<u16>,
    },
}

/// A datagram for the media socket to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The local address it leaves from (the peer's `local` of [`Sfu::add_peer`](crate::Sfu::add_peer)).
    pub source: SocketAddr,
    /// Where it goes.
    pub destination: SocketAddr,
    /// The datagram.
    pub contents: Vec<u8>,
}

/// A signal for one peer of one room, to send as a `media` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutSignal {
    /// The SFU room.
    pub room: String,
    /// The receiving peer.
    pub peer: String,
    /// What to send.
    pub signal: MediaSignal,
}

/// Something the shell should know about a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SfuEvent {
    /// ICE and DTLS completed: media can flow.
    PeerConnected {
        /// The SFU room.
        room: String,
        /// The peer.
        peer: String,
    },
    /// The peer's media ended on the server (handshake deadline, unanswered offer, ICE
    /// lost, or an error of its `Rtc`). The peer is gone from the core: its tracks left
    /// the others' sessions. The shell sends the client an `error` frame.
    PeerFailed {
        /// The SFU room.
        room: String,
        /// The peer.
        peer: String,
        /// Why, for the `error` frame's message and the log.
        reason: String,
    },
}

/// Counters of an [`Sfu`](crate::Sfu), for metrics. Gauges are current values, the rest
/// count from the start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SfuStats {
    /// Rooms with at least one peer (gauge).
    pub rooms: usize,
    /// Peers in every room (gauge).
    pub peers: usize,
    /// Peers whose ICE and DTLS completed (gauge).
    pub connected_peers: usize,
    /// Tracks published by peers (gauge).
    pub published_tracks: usize,
    /// Track subscriptions: a published track sent to one receiver (gauge).
    pub forwarded_tracks: usize,
    /// Media frames written to receivers (counted by their last RTP packet: the marker bit
    /// for video, every packet for audio).
    pub forwarded_frames: u64,
    /// RTP packets written to receivers.
    pub forwarded_packets: u64,
    /// Payload bytes of those packets.
    pub forwarded_bytes: u64,
    /// Datagrams given to `handle_datagram`.
    pub datagrams_in: u64,
    /// Datagrams dropped: unknown kind or source, or over their peer's budget
    /// ([`DatagramError`]).
    pub dropped_datagrams: u64,
    /// Of those, datagrams of a known peer dropped because it sent past its budget
    /// (`peer_max_bitrate_bps`, `peer_max_datagram_rate`).
    pub rate_limited_datagrams: u64,
    /// Key frame requests sent to publishers.
    pub keyframe_requests: u64,
    /// Key frame requests dropped by the per-track throttle.
    pub keyframe_requests_throttled: u64,
    /// Simulcast layer switches done for receivers.
    pub layer_switches: u64,
    /// Peers that failed ([`SfuEvent::PeerFailed`]).
    pub peers_failed: u64,
}

/// What a call on a room or peer refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SfuError {
    /// No such peer in that SFU room.
    #[error("no peer {peer:?} in SFU room {room:?}")]
    UnknownPeer {
        /// The room asked for.
        room: String,
        /// The peer asked for.
        peer: String,
    },
    /// The peer is already in that room.
    #[error("peer {peer:?} is already in SFU room {room:?}")]
    AlreadyJoined {
        /// The room.
        room: String,
        /// The peer.
        peer: String,
    },
    /// The room holds `max_peers_per_room` peers.
    #[error("SFU room {room:?} is full ({max} peers)")]
    RoomFull {
        /// The room.
        room: String,
        /// Its limit.
        max: usize,
    },
    /// The local media address cannot be a host candidate.
    #[error("bad local media address {addr}: {reason}")]
    BadLocalAddress {
        /// The address given to `add_peer`.
        addr: SocketAddr,
        /// str0m's reason.
        reason: String,
    },
    /// str0m refused the SDP (parse error or an offer/answer it cannot accept).
    #[error("SDP refused: {0}")]
    BadSdp(String),
    /// An answer came while no server offer was pending.
    #[error("answer without a pending offer")]
    UnexpectedAnswer,
    /// A candidate str0m could not parse.
    #[error("bad ICE candidate: {0}")]
    BadCandidate(String),
}

/// Why a datagram was dropped. It changed nothing and was counted in
/// [`SfuStats::dropped_datagrams`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// Not STUN, DTLS, RTP or RTCP by its first byte (RFC 7983), or too short.
    #[error("not STUN, DTLS or SRTP")]
    Garbage,
    /// STUN with no USERNAME of a known peer, or DTLS/SRTP from an unknown source.
    #[error("no peer for this datagram")]
    Unrouted,
    /// Its peer sent past its budget ([`SfuConfig::peer_max_bitrate_bps`],
    /// [`SfuConfig::peer_max_datagram_rate`]); also counted in
    /// [`SfuStats::rate_limited_datagrams`].
    #[error("over the peer's budget")]
    OverBudget,
}
