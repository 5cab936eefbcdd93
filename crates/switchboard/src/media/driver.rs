//! The driver task: the one owner of the [`Sfu`]. Receive, hand over,
//! drain the polls, re-arm the timer (DESIGN.md, "the IO side is a thin
//! driver").

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use switchboard_sfu::{Sfu, SfuConfig, SfuError, SfuEvent};
use switchboard_signal::ErrorCode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::udp::{MediaSocket, RecvBuffers};
use super::{MediaLink, ToDriver, signal};
use crate::hub::Hub;

/// `recvmmsg` calls per wake before the other inputs get a turn.
const RECV_BATCHES: usize = 8;
/// Hub messages handled per wake before the socket gets a turn.
const MESSAGE_BATCH: usize = 64;

/// What `/metrics` shows of the SFU.
#[derive(Debug, Clone, Default)]
pub struct MediaStats {
    /// SFU rooms with at least one peer.
    pub rooms: u64,
    /// Peers in SFU rooms.
    pub peers: u64,
    /// Of those, peers whose ICE and DTLS completed.
    pub connected_peers: u64,
    /// Tracks published into SFU rooms.
    pub published_tracks: u64,
    /// Published tracks sent to a receiver, one per receiver.
    pub forwarded_tracks: u64,
    /// Media frames forwarded, one per receiver.
    pub forwarded_frames: u64,
    /// Payload bytes of those frames.
    pub forwarded_bytes: u64,
    /// Peers whose media failed (handshake deadline, unanswered offer,
    /// ICE lost).
    pub peers_failed: u64,
    /// Datagrams on the media port that no peer took (garbage, unknown
    /// senders, packets of peers gone).
    pub dropped_datagrams: u64,
    /// Of those, datagrams of a peer past its budget (`media.peer_max_*`).
    pub rate_limited_datagrams: u64,
    /// `media` requests refused because the driver was behind.
    pub signals_refused: u64,
    /// Datagrams the socket would not take (full send buffer).
    pub send_failures: u64,
}

pub(super) struct Driver {
    sfu: Sfu,
    socket: MediaSocket,
    public_ip: Option<IpAddr>,
    hub: Arc<Hub>,
    rx: mpsc::UnboundedReceiver<ToDriver>,
    link: MediaLink,
    shutdown: CancellationToken,
    /// The core's datagrams of one drain.
    pending: Vec<switchboard_sfu::Transmit>,
    /// A GSO run's datagrams end to end (wildcard-bound socket).
    scratch: Vec<u8>,
}

impl Driver {
    pub(super) fn new(
        socket: MediaSocket,
        config: SfuConfig,
        public_ip: Option<IpAddr>,
        hub: Arc<Hub>,
        rx: mpsc::UnboundedReceiver<ToDriver>,
        link: MediaLink,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            sfu: Sfu::new(config),
            socket,
            public_ip,
            hub,
            rx,
            link,
            shutdown,
            pending: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Runs until shutdown (or until the hub is gone).
    pub(super) async fn run(mut self) {
        let mut bufs = RecvBuffers::new();
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        loop {
            self.flush();
            let next = self.sfu.poll_timeout();
            if next != armed {
                armed = next;
                if let Some(at) = next {
                    timer.as_mut().reset(at.into());
                }
            }
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                msg = self.rx.recv() => {
                    let Some(msg) = msg else { break };
                    self.handle(msg);
                    for _ in 0..MESSAGE_BATCH {
                        match self.rx.try_recv() {
                            Ok(msg) => self.handle(msg),
                            Err(_) => break,
                        }
                    }
                }
                r = self.socket.readable() => match r {
                    Ok(()) => self.receive(&mut bufs),
                    Err(e) => {
                        tracing::error!("media socket: {e}; SFU stopped");
                        break;
                    }
                },
                () = &mut timer, if armed.is_some() => {
                    // Re-armed on the next turn, even to the same instant.
                    armed = None;
                }
            }
            // Whatever woke us, a deadline that has passed is served now:
            // a busy socket must not starve the core's timers.
            let now = Instant::now();
            if self.sfu.poll_timeout().is_some_and(|at| at <= now) {
                self.sfu.handle_timeout(now);
            }
        }
        tracing::debug!("SFU driver stopped");
    }

    fn handle(&mut self, msg: ToDriver) {
        let now = Instant::now();
        match msg {
            ToDriver::Joined {
                room,
                peer,
                reached,
            } => {
                let local = self.local_for(reached);
                if let Err(e) = self.sfu.add_peer(now, &room, &peer, local) {
                    tracing::info!(%room, %peer, "SFU refused a peer: {e}");
                    self.hub
                        .media_error(&room, &peer, error_code(&e), &format!("media: {e}"));
                }
            }
            ToDriver::Left { room, peer } => self.sfu.remove_peer(now, &room, &peer),
            ToDriver::Signal { room, peer, data } => {
                self.link.pending_signals.fetch_sub(1, Ordering::AcqRel);
                let signal = match signal::from_client(&data) {
                    Ok(Some(signal)) => signal,
                    Ok(None) => return,
                    Err(e) => {
                        self.hub
                            .media_error(&room, &peer, ErrorCode::BadRequest, &e.to_string());
                        return;
                    }
                };
                if let Err(e) = self.sfu.handle_signal(now, &room, &peer, signal) {
                    tracing::debug!(%room, %peer, "SFU refused a signal: {e}");
                    self.hub
                        .media_error(&room, &peer, error_code(&e), &format!("media: {e}"));
                }
            }
            ToDriver::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
        }
    }

    /// Reads what the socket holds, a bounded number of batches.
    fn receive(&mut self, bufs: &mut RecvBuffers) {
        for _ in 0..RECV_BATCHES {
            let n = match self.socket.try_recv(bufs) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!("media socket receive: {e}");
                    continue;
                }
            };
            let now = Instant::now();
            for (from, dst_ip, bytes) in bufs.datagrams(n) {
                let to = self.destination(dst_ip);
                // Refused datagrams are the core's to count.
                let _ = self.sfu.handle_datagram(now, from, to, bytes);
            }
            // Once per batch: what the batch forwarded leaves each receiver in one drain,
            // so a publisher's burst is one run of datagrams per receiver.
            self.send_transmits();
        }
    }

    /// Everything the core has to say: datagrams, signals, events.
    fn flush(&mut self) {
        self.send_transmits();
        while let Some(out) = self.sfu.poll_signal() {
            if let Some(data) = signal::to_client(out.signal) {
                // `false`: the peer is no longer in that room; its leave is
                // on its way to us.
                let _ = self.hub.send_media(&out.room, &out.peer, &data);
            }
        }
        while let Some(event) = self.sfu.poll_event() {
            match event {
                SfuEvent::PeerFailed { room, peer, reason } => {
                    tracing::info!(%room, %peer, %reason, "SFU peer failed");
                    self.hub.media_error(
                        &room,
                        &peer,
                        ErrorCode::Unavailable,
                        &format!("media failed: {reason}"),
                    );
                }
                SfuEvent::PeerConnected { room, peer } => {
                    tracing::debug!(%room, %peer, "SFU peer connected");
                }
                #[allow(unreachable_patterns)] // `SfuEvent` is non-exhaustive
                other => tracing::debug!(?other, "SFU event"),
            }
        }
    }

    /// All the core's datagrams of one drain, batched: one received packet
    /// becomes a copy per receiver, and few syscalls for all of them is
    /// what a bare forwarder pays (bench/fanout-floor).
    fn send_transmits(&mut self) {
        self.pending.clear();
        while let Some(t) = self.sfu.poll_transmit() {
            self.pending.push(t);
        }
        if self.pending.is_empty() {
            return;
        }
        let sent = if self.socket.source_implied() {
            self.socket.try_send_many(&self.pending)
        } else {
            // The public IP is not on any interface: the kernel picks the
            // source then (1:1 NAT maps it).
            let public_ip = self.public_ip;
            self.socket.try_send_sourced(
                &self.pending,
                |t| Some(t.source.ip()).filter(|ip| Some(*ip) != public_ip),
                &mut self.scratch,
            )
        };
        let failed = self.pending.len() - sent;
        if failed > 0 {
            self.link
                .counters
                .send_failures
                .fetch_add(failed as u64, Ordering::Relaxed);
        }
    }

    /// The address a datagram reached, as the core knows it: the public IP
    /// when one is set (every peer's candidate has it), else the address
    /// the kernel says, else the bound one.
    fn destination(&self, dst_ip: Option<IpAddr>) -> SocketAddr {
        let bound = self.socket.local();
        let ip = self
            .public_ip
            .or(dst_ip.map(|ip| ip.to_canonical()))
            .unwrap_or(bound.ip());
        SocketAddr::new(ip, bound.port())
    }

    /// The address in a peer's server candidate: `media.public_ip`, else
    /// the IP the socket is bound to, else the one the peer's signaling
    /// connection reached (this host answers there), else loopback.
    fn local_for(&self, reached: Option<IpAddr>) -> SocketAddr {
        let bound = self.socket.local();
        let ip = self
            .public_ip
            .or(Some(bound.ip()).filter(|ip| !ip.is_unspecified()))
            .or(reached
                .map(|ip| ip.to_canonical())
                .filter(|ip| ip.is_ipv4() == bound.is_ipv4() && !ip.is_unspecified()))
            .unwrap_or(match bound {
                SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        SocketAddr::new(ip, bound.port())
    }

    fn stats(&self) -> MediaStats {
        let s = self.sfu.stats();
        MediaStats {
            rooms: s.rooms as u64,
            peers: s.peers as u64,
            connected_peers: s.connected_peers as u64,
            published_tracks: s.published_tracks as u64,
            forwarded_tracks: s.forwarded_tracks as u64,
            forwarded_frames: s.forwarded_frames,
            forwarded_bytes: s.forwarded_bytes,
            peers_failed: s.peers_failed,
            dropped_datagrams: s.dropped_datagrams,
            rate_limited_datagrams: s.rate_limited_datagrams,
            ..MediaStats::default()
        }
    }
}

/// The `error` code a client gets when the SFU refuses what it sent.
fn error_code(e: &SfuError) -> ErrorCode {
    match e {
        SfuError::BadSdp(_) | SfuError::UnexpectedAnswer | SfuError::BadCandidate(_) => {
            ErrorCode::BadRequest
        }
        // The signaling room took the peer, the media relay cannot; or
        // its media failed before (it joins the room again for more).
        SfuError::RoomFull { .. } | SfuError::UnknownPeer { .. } => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    }
}
