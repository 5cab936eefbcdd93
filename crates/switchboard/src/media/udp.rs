//! The media socket: one UDP socket for every SFU peer, read with batched
//! `recvmmsg` (and GRO where the kernel has it) through quinn-udp, as the
//! TURN listeners are (`crate::turn`), but waited on by tokio: it has one
//! reader, the driver task.

use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage};
use quinn_udp::UdpSocketState;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;

pub(crate) use crate::turn::RecvBuffers;

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
        bufs.fill(|iovs, meta| {
            self.socket.try_io(Interest::READABLE, || {
                self.state.recv((&self.socket).into(), iovs, meta)
            })
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

    /// Whether a datagram's source address is implied: the socket is
    /// bound to one address, so no per-datagram source needs choosing and
    /// [`MediaSocket::try_send_many`] can take it.
    pub(crate) fn source_implied(&self) -> bool {
        !self.local.ip().is_unspecified()
    }

    /// Sends `batch` with one `sendmmsg` per 64 datagrams,
    /// without waiting: what a full socket buffer refuses is dropped, as
    /// the network would. Returns how many went. Only for a socket whose
    /// source is implied ([`MediaSocket::source_implied`]).
    pub(crate) fn try_send_many(&self, batch: &[switchboard_sfu::Transmit]) -> usize {
        let mut sent = 0;
        for chunk in batch.chunks(SEND_BATCH) {
            // Per call: nix's headers hold raw pointers, so the driver task
            // (which must be Send) cannot keep them.
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(chunk.len(), None);
            let slices: Vec<[IoSlice<'_>; 1]> =
                chunk.iter().map(|t| [IoSlice::new(&t.contents)]).collect();
            let addrs: Vec<Option<SockaddrStorage>> = chunk
                .iter()
                .map(|t| Some(SockaddrStorage::from(t.destination)))
                .collect();
            let mut done = 0;
            while done < chunk.len() {
                let fd = self.socket.as_raw_fd();
                let r = self.socket.try_io(Interest::WRITABLE, || {
                    nix::sys::socket::sendmmsg(
                        fd,
                        &mut headers,
                        &slices[done..],
                        &addrs[done..],
                        [],
                        MsgFlags::MSG_DONTWAIT,
                    )
                    .map(|r| r.count())
                    .map_err(io::Error::from)
                });
                match r {
                    Ok(n) if n > 0 => {
                        done += n;
                        sent += n;
                    }
                    // A full socket buffer: the rest of the drain is dropped.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return sent,
                    // The kernel refused this one datagram (its destination):
                    // it alone is dropped, the others still go.
                    _ => done += 1,
                }
            }
        }
        sent
    }
}

/// Datagrams per `sendmmsg`.
const SEND_BATCH: usize = 64;
