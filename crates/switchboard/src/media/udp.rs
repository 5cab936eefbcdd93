//! The media socket: one UDP socket for every SFU peer, read with batched
//! `recvmmsg` (and GRO where the kernel has it) through quinn-udp, as the
//! TURN listeners are (`crate::turn`), but waited on by tokio: it has one
//! reader, the driver task.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};

use quinn_udp::{RecvMeta, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;

/// Datagrams per `recvmmsg`.
const SLOTS: usize = if quinn_udp::BATCH_SIZE < 32 {
    quinn_udp::BATCH_SIZE
} else {
    32
};
/// Bytes per receive slot: room for a GRO train of full-size datagrams.
const SLOT_LEN: usize = 64 * 1024;
/// Socket buffers asked of the kernel: every peer's media shares them, and
/// a video key frame arrives as a burst.
const BUFFER: usize = 4 << 20;

/// The bound media socket with quinn-udp's per-socket state.
#[derive(Debug)]
pub(crate) struct MediaSocket {
    socket: tokio::net::UdpSocket,
    state: UdpSocketState,
    local: SocketAddr,
}

impl MediaSocket {
    /// Binds `addr` (port 0 picks one). Must run inside the runtime.
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<Self> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.bind(&addr.into())?;
        socket.set_nonblocking(true)?;
        let socket: std::net::UdpSocket = socket.into();
        let state = UdpSocketState::new((&socket).into())?;
        let local = socket.local_addr()?;
        crate::turn::quiet_receive(&socket, local);
        // Best effort: the kernel caps these at net.core.[rw]mem_max.
        let _ = state.set_recv_buffer_size((&socket).into(), BUFFER);
        let _ = state.set_send_buffer_size((&socket).into(), BUFFER);
        Ok(Self {
            socket: tokio::net::UdpSocket::from_std(socket)?,
            state,
            local,
        })
    }

    /// The bound address.
    pub(crate) fn local(&self) -> SocketAddr {
        self.local
    }

    /// Waits until a receive may find something.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// One `recvmmsg` without waiting: the message count, `WouldBlock` when
    /// the socket is empty (which also clears tokio's readiness).
    pub(crate) fn try_recv(&self, bufs: &mut RecvBuffers) -> io::Result<usize> {
        let mut chunks = bufs.storage.chunks_mut(SLOT_LEN);
        let mut iovs: [IoSliceMut<'_>; SLOTS] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        self.socket.try_io(Interest::READABLE, || {
            self.state
                .recv((&self.socket).into(), &mut iovs, &mut bufs.meta)
        })
    }

    /// Sends one datagram without waiting: on a full socket buffer it is
    /// dropped, as the network would (`false`). `src_ip` picks the source
    /// address on a wildcard-bound socket, so that a peer hears back from
    /// the address it sent to.
    pub(crate) fn try_send(&self, src_ip: Option<IpAddr>, to: SocketAddr, bytes: &[u8]) -> bool {
        let src_ip = src_ip.filter(|ip| !ip.is_unspecified() && self.local.ip().is_unspecified());
        let Some(src_ip) = src_ip else {
            // A plain `sendto`: quinn-udp would attach an IP_TOS control
            // message to every datagram, which the kernel then parses.
            return self.socket.try_send_to(bytes, to).is_ok();
        };
        let transmit = quinn_udp::Transmit {
            destination: to,
            ecn: None,
            contents: bytes,
            segment_size: None,
            src_ip: Some(src_ip),
        };
        self.socket
            .try_io(Interest::WRITABLE, || {
                self.state.try_send((&self.socket).into(), &transmit)
            })
            .is_ok()
    }
}

/// Receive buffers for one `recvmmsg`, kept by the driver for its life.
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

    /// The datagrams of the last `n`-message receive: (sender, our address
    /// if the kernel said, bytes), GRO trains split at their stride.
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
