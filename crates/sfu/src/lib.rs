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

mod types;

use std::net::SocketAddr;
use std::time::Instant;

pub use types::{
    DatagramError, MediaSignal, OutSignal, SfuConfig, SfuError, SfuEvent, SfuStats, Transmit,
};

/// The SFU core: every SFU room of this node and its peers.
#[derive(Debug)]
pub struct Sfu {
    config: SfuConfig,
}

impl Sfu {
    /// A core with no room.
    pub fn new(config: SfuConfig) -> Sfu {
        Sfu { config }
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
        let _ = (now, room, peer, local, &self.config);
        Ok(())
    }

    /// The peer left the room (leave, kick, session end): its `Rtc` ends and its tracks
    /// leave the others' sessions by a renegotiation at once. Unknown peers are ignored.
    pub fn remove_peer(&mut self, now: Instant, room: &str, peer: &str) {
        let _ = (now, room, peer);
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
        let _ = (now, room, peer, signal);
        Ok(())
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
        let _ = (now, from, to, bytes);
        Err(DatagramError::Unrouted)
    }

    /// Time passed: call at [`Sfu::poll_timeout`] (early or late is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
    }

    /// Caps the bandwidth a receiver's simulcast layers are chosen for, in bit/s, on top of
    /// its bandwidth estimate (`None`: the estimate alone).
    pub fn set_bitrate_cap(
        &mut self,
        room: &str,
        peer: &str,
        cap_bps: Option<u64>,
    ) -> Result<(), SfuError> {
        let _ = (room, peer, cap_bps);
        Ok(())
    }

    /// The next datagram to send. Drain after every `handle_*` call.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        None
    }

    /// The next signal for a peer (an answer, an offer). Drain after every `handle_*` call.
    #[must_use]
    pub fn poll_signal(&mut self) -> Option<OutSignal> {
        None
    }

    /// The next event. Drain after every `handle_*` call.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SfuEvent> {
        None
    }

    /// When to call [`Sfu::handle_timeout`] next (`None`: no peer, nothing to wait for).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// Counters and gauges for metrics.
    pub fn stats(&self) -> SfuStats {
        SfuStats::default()
    }
}
