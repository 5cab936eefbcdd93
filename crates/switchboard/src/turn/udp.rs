//! UDP sockets: the listeners (SO_REUSEPORT, one per CPU) and relay sockets,
//! read with batched `recvmmsg` (and GRO where the kernel has it) through
//! quinn-udp. They are plain non-blocking sockets; `reactor.rs` waits on
//! them.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use quinn_udp::{RecvMeta, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};

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

/// A non-blocking UDP socket with quinn-udp's per-socket state.
#[derive(Debug)]
pub(super) struct UdpEndpoint {
    socket: std::net::UdpSocket,
    state: UdpSocketState,
    pub(super) local: SocketAddr,
}

impl UdpEndpoint {
    fn new(socket: Socket, buffer: usize) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let socket: std::net::UdpSocket = socket.into();
        let state = UdpSocketState::new((&socket).into())?;
        let local = socket.local_addr()?;
        quiet_receive(&socket, local);
        // Best effort: the kernel caps these at net.core.[rw]mem_max.
        let _ = state.set_recv_buffer_size((&socket).into(), buffer);
        let _ = state.set_send_buffer_size((&socket).into(), buffer);
        Ok(Self {
            socket,
            state,
            local,
        })
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

    /// The descriptor, for registering with a reactor.
    pub(super) fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
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
        if src_ip.is_none() && segment_size.is_none() {
            // A plain `sendto`: quinn-udp would attach an IP_TOS control
            // message to every datagram, which the kernel then parses.
            return self.socket.send_to(bytes, to).is_ok();
        }
        let transmit = quinn_udp::Transmit {
            destination: to,
            ecn: None,
            contents: bytes,
            segment_size,
            src_ip,
        };
        self.state
            .try_send((&self.socket).into(), &transmit)
            .is_ok()
    }

    /// How many datagrams one GSO send may carry (1 without GSO).
    pub(super) fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// One `recvmmsg`: the message count, `WouldBlock` when the socket is
    /// empty. Fewer than [`SLOTS`] messages means the queue was drained.
    pub(super) fn recv(&self, bufs: &mut RecvBuffers) -> io::Result<usize> {
        bufs.fill(|iovs, meta| self.state.recv((&self.socket).into(), iovs, meta))
    }
}

/// Turns off the control messages quinn-udp asks the kernel to attach to
/// every datagram that the relay has no use for: receive timestamps, the
/// TOS byte (no ECN here), and the destination address except on a
/// wildcard-bound socket, which needs it to answer from the address the
/// client reached. Each costs the kernel a copy per datagram; together about
/// 8 % of the server's CPU on paced traffic in A/B runs. Best effort: a
/// socket that keeps them works the same, only slower.
#[cfg(target_os = "linux")]
pub(crate) fn quiet_receive(socket: &std::net::UdpSocket, local: SocketAddr) {
    use nix::sys::socket::{setsockopt, sockopt};
    let wildcard = local.ip().is_unspecified();
    let _ = setsockopt(socket, sockopt::ReceiveTimestampns, &false);
    if local.is_ipv4() {
        let _ = setsockopt(socket, sockopt::IpRecvTos, &false);
        if !wildcard {
            let _ = setsockopt(socket, sockopt::Ipv4PacketInfo, &false);
        }
    } else {
        let _ = setsockopt(socket, sockopt::Ipv6RecvTClass, &false);
        if !wildcard {
            let _ = setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &false);
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn quiet_receive(_socket: &std::net::UdpSocket, _local: SocketAddr) {}

/// Receive buffers for one `recvmmsg` (the TURN listeners' and the SFU's
/// media socket's).
pub(crate) struct RecvBuffers {
    storage: Vec<u8>,
    meta: [RecvMeta; SLOTS],
}

impl RecvBuffers {
    pub(crate) fn new() -> Self {
        Self {
            storage: vec![0; SLOTS * SLOT_LEN],
            meta: [RecvMeta::default(); SLOTS],
        }
    }

    /// Runs one receive (`recv`: quinn-udp's, however the caller waits)
    /// into these slots, and returns its message count.
    pub(crate) fn fill(
        &mut self,
        recv: impl FnOnce(&mut [IoSliceMut<'_>], &mut [RecvMeta]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let mut chunks = self.storage.chunks_mut(SLOT_LEN);
        let mut iovs: [IoSliceMut<'_>; SLOTS] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        recv(&mut iovs, &mut self.meta)
    }

    /// The datagrams of the last `n`-message receive: (sender, our address
    /// if known, bytes), GRO trains split at their stride.
    pub(crate) fn datagrams(
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
