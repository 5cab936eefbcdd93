//! UDP sockets: the listeners (SO_REUSEPORT, one per CPU) and relay sockets,
//! both read with batched `recvmmsg` (and GRO where the kernel has it)
//! through quinn-udp.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use quinn_udp::{RecvMeta, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};
use switchboard_turn::{FiveTuple, Transport};
use tokio::io::Interest;
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio_util::sync::CancellationToken;

use super::driver::{Shared, unix_secs};

/// Datagrams per `recvmmsg`.
pub(super) const SLOTS: usize = if quinn_udp::BATCH_SIZE < 32 {
    quinn_udp::BATCH_SIZE
} else {
    32
};
/// Bytes per receive slot: room for a GRO train of full-size datagrams.
pub(super) const SLOT_LEN: usize = 64 * 1024;
/// Listener socket buffers asked of the kernel; bursts overflow the default.
const LISTENER_BUFFER: usize = 4 << 20;
/// Relay socket buffers: a limit, not memory spent while the queue is empty.
const RELAY_BUFFER: usize = 1 << 20;

/// A UDP socket with quinn-udp's per-socket state, registered with tokio
/// through `AsyncFd` so that a short `recvmmsg` batch can clear readiness
/// without a second, empty syscall.
#[derive(Debug)]
pub(super) struct UdpEndpoint {
    io: AsyncFd<std::net::UdpSocket>,
    state: UdpSocketState,
    pub(super) local: SocketAddr,
}

impl UdpEndpoint {
    fn new(socket: Socket, buffer: usize) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let std_socket: std::net::UdpSocket = socket.into();
        let state = UdpSocketState::new((&std_socket).into())?;
        // Best effort: the kernel caps these at net.core.[rw]mem_max.
        let _ = state.set_recv_buffer_size((&std_socket).into(), buffer);
        let _ = state.set_send_buffer_size((&std_socket).into(), buffer);
        let local = std_socket.local_addr()?;
        // The safe constructor is deprecated in favour of an `unsafe` one
        // because a caller could close the fd behind tokio's back; this
        // socket is owned by the AsyncFd and closed only when it drops.
        #[allow(deprecated)]
        let io = AsyncFd::with_interest(std_socket, Interest::READABLE)?;
        Ok(Self { io, state, local })
    }

    /// A listener socket; several may share `addr` (SO_REUSEPORT), the
    /// kernel spreading clients over them by 4-tuple hash.
    pub(super) fn listener(addr: SocketAddr) -> io::Result<Self> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_reuse_port(true)?;
        socket.bind(&addr.into())?;
        Self::new(socket, LISTENER_BUFFER)
    }

    /// A relay socket at exactly `addr`.
    pub(super) fn relay(addr: SocketAddr) -> io::Result<Self> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.bind(&addr.into())?;
        Self::new(socket, RELAY_BUFFER)
    }

    /// Sends one datagram without waiting: on a full socket buffer the
    /// datagram is dropped, as the network would. `src_ip` picks the source
    /// address on a wildcard-bound socket.
    /// With `segment_size`, `bytes` is a train of datagrams of that size
    /// (the last may be shorter) sent in one `sendmsg` with GSO.
    pub(super) fn send(
        &self,
        to: SocketAddr,
        bytes: &[u8],
        src_ip: Option<IpAddr>,
        segment_size: Option<usize>,
    ) -> bool {
        let transmit = quinn_udp::Transmit {
            destination: to,
            ecn: None,
            contents: bytes,
            segment_size,
            src_ip,
        };
        self.state
            .try_send(self.io.get_ref().into(), &transmit)
            .is_ok()
    }

    /// How many datagrams one GSO send may carry (1 without GSO).
    pub(super) fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Waits until the socket may be readable.
    pub(super) async fn readable(&self) -> io::Result<AsyncFdReadyGuard<'_, std::net::UdpSocket>> {
        self.io.readable().await
    }

    /// One `recvmmsg` under a readiness guard: `None` when the socket turned
    /// out empty (readiness cleared), else the message count. A short batch
    /// means the queue is drained, so readiness is cleared then as well.
    pub(super) fn recv(
        &self,
        guard: &mut AsyncFdReadyGuard<'_, std::net::UdpSocket>,
        bufs: &mut RecvBuffers,
    ) -> Option<io::Result<usize>> {
        let mut chunks = bufs.storage.chunks_mut(SLOT_LEN);
        let mut iovs: [IoSliceMut<'_>; SLOTS] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        let result = guard
            .try_io(|io| {
                self.state
                    .recv(io.get_ref().into(), &mut iovs, &mut bufs.meta)
            })
            .ok()?;
        if matches!(result, Ok(n) if n < SLOTS) {
            guard.clear_ready();
        }
        Some(result)
    }
}

/// Receive buffers for one `recvmmsg`.
pub(super) struct RecvBuffers {
    storage: Vec<u8>,
    meta: [RecvMeta; SLOTS],
}

impl RecvBuffers {
    pub(super) fn new() -> Self {
        Self {
            storage: vec![0; SLOTS * SLOT_LEN],
            meta: [RecvMeta::default(); SLOTS],
        }
    }

    /// The datagrams of the last `n`-message receive: (sender, our address
    /// if known, bytes), GRO trains split at their stride.
    pub(super) fn datagrams(
        &self,
        n: usize,
    ) -> impl Iterator<Item = (SocketAddr, Option<IpAddr>, &[u8])> + '_ {
        self.meta
            .iter()
            .take(n)
            .enumerate()
            .flat_map(move |(i, meta)| {
                let start = i * SLOT_LEN;
                let data = &self.storage[start..start + meta.len.min(SLOT_LEN)];
                data.chunks(meta.stride.max(1))
                    .map(move |seg| (meta.addr, meta.dst_ip, seg))
            })
    }
}

/// Reads a listener socket until shutdown, handing each datagram to the core.
pub(super) async fn listener_loop(shared: Arc<Shared>, endpoint: Arc<UdpEndpoint>) {
    let mut bufs = RecvBuffers::new();
    let local = endpoint.local;
    loop {
        let mut guard = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            ready = endpoint.readable() => match ready {
                Ok(guard) => guard,
                Err(_) => return,
            },
        };
        let n = match endpoint.recv(&mut guard, &mut bufs) {
            None => continue,
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                // ICMP errors surface here on some kernels; keep serving.
                tracing::trace!(error = %e, "turn udp recv");
                continue;
            }
        };
        drop(guard);
        let now = Instant::now();
        let unix = unix_secs();
        let mut core = shared.lock();
        for (client, dst_ip, bytes) in bufs.datagrams(n) {
            let server = SocketAddr::new(dst_ip.unwrap_or(local.ip()), local.port());
            let five_tuple = FiveTuple {
                transport: Transport::Udp,
                client,
                server,
            };
            core.server.handle_client(now, unix, five_tuple, bytes);
        }
        core.flush(&shared, now);
    }
}

/// Reads a relay socket until its allocation ends. The receive buffers are
/// the core's shared ones (read under the core lock), so an allocation costs
/// a socket and a task, not megabytes of buffers.
pub(super) async fn relay_loop(
    shared: Arc<Shared>,
    endpoint: Arc<UdpEndpoint>,
    cancel: CancellationToken,
) {
    let local = endpoint.local;
    loop {
        let mut guard = tokio::select! {
            () = cancel.cancelled() => return,
            ready = endpoint.readable() => match ready {
                Ok(guard) => guard,
                Err(_) => return,
            },
        };
        let now = Instant::now();
        let mut locked = shared.lock();
        let core = &mut *locked;
        // A few batches at most, so one busy peer cannot hog the lock.
        for _ in 0..4 {
            let n = match endpoint.recv(&mut guard, &mut core.relay_buffers) {
                Some(Ok(n)) => n,
                None | Some(Err(_)) => break,
            };
            for (peer, _, bytes) in core.relay_buffers.datagrams(n) {
                core.server.handle_peer(now, local, peer, bytes);
            }
            // One flush per batch lets runs to the same client leave as one
            // GSO send.
            core.io.flush(&mut core.server, &shared, now);
            if n < SLOTS {
                break;
            }
        }
    }
}
