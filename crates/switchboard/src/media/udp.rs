//! The media socket: one UDP socket for every SFU peer, read with batched
//! `recvmmsg` (and GRO where the kernel has it) through quinn-udp, as the
//! TURN listeners are (`crate::turn`), but waited on by tokio: it has one
//! reader, the driver task.

use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage};
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
    /// Whether UDP GSO is used: until the kernel refuses it once.
    gso: AtomicBool,
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
            gso: AtomicBool::new(true),
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

    /// Sends `batch` on a socket that picks each datagram's source
    /// (wildcard-bound): `src_ip` says it. A run of same-size datagrams to
    /// one receiver from one source (a frame's packets) goes as one GSO
    /// `sendmsg` where the kernel has it, the rest one by one, without
    /// waiting. Returns how many went.
    pub(crate) fn try_send_sourced(
        &self,
        batch: &[switchboard_sfu::Transmit],
        src_ip: impl Fn(&switchboard_sfu::Transmit) -> Option<IpAddr>,
        scratch: &mut Vec<u8>,
    ) -> usize {
        let max_segments = self.state.max_gso_segments().min(MAX_GSO_SEGMENTS);
        let mut sent = 0;
        for m in messages(batch, max_segments) {
            let first = &batch[m.start];
            if m.segments() > 1 {
                scratch.clear();
                for t in &batch[m.start..m.end] {
                    scratch.extend_from_slice(&t.contents);
                }
                if self.try_send_gso(src_ip(first), first.destination, scratch, m.segment) {
                    sent += m.segments();
                    continue;
                }
                // Refused (a full buffer, or quinn-udp just halted GSO on
                // EIO): each datagram gets its own chance.
            }
            for t in &batch[m.start..m.end] {
                if self.try_send(src_ip(t), t.destination, &t.contents) {
                    sent += 1;
                }
            }
        }
        sent
    }

    /// One GSO message of `contents`, cut into `segment`-byte datagrams.
    fn try_send_gso(
        &self,
        src_ip: Option<IpAddr>,
        to: SocketAddr,
        contents: &[u8],
        segment: usize,
    ) -> bool {
        let src_ip = src_ip.filter(|ip| !ip.is_unspecified() && self.local.ip().is_unspecified());
        let transmit = quinn_udp::Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: Some(segment),
            src_ip,
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

    /// Sends `batch` in `sendmmsg` calls of up to 64 messages, without
    /// waiting: what a full socket buffer refuses is dropped, as the network
    /// would. Returns how many datagrams went. Only for a socket whose
    /// source is implied ([`MediaSocket::source_implied`]).
    ///
    /// Where the kernel has UDP GSO, a run of datagrams to one receiver of
    /// one size (a video frame's packets; the last may be shorter) goes as
    /// one message that the kernel cuts up: one route lookup and one trip
    /// down the stack for the run instead of one per packet.
    pub(crate) fn try_send_many(&self, batch: &[switchboard_sfu::Transmit]) -> usize {
        let max_segments = if self.gso.load(Ordering::Relaxed) {
            self.state.max_gso_segments().min(MAX_GSO_SEGMENTS)
        } else {
            1
        };
        let mut sent = 0;
        let mut call: Vec<Message> = Vec::with_capacity(SEND_BATCH);
        let mut gso: Option<u16> = None;
        for message in messages(batch, max_segments) {
            let fits = call.len() < SEND_BATCH
                && match (gso, message.segments()) {
                    (Some(size), 1) => message.len(batch) <= usize::from(size),
                    (Some(size), _) => message.segment == usize::from(size),
                    (None, n) => n == 1,
                };
            if !fits && !call.is_empty() {
                match self.send_call(batch, &call, gso) {
                    Flow::Go(n) => sent += n,
                    Flow::Full(n) => return sent + n,
                }
                call.clear();
            }
            if call.is_empty() {
                gso = (message.segments() > 1)
                    .then(|| u16::try_from(message.segment).ok())
                    .flatten();
            }
            call.push(message);
        }
        if !call.is_empty() {
            match self.send_call(batch, &call, gso) {
                Flow::Go(n) | Flow::Full(n) => sent += n,
            }
        }
        sent
    }

    /// One `sendmmsg` (repeated for what a partial send left) of `call`'s
    /// messages, with a UDP_SEGMENT of `gso` on each when given.
    fn send_call(
        &self,
        batch: &[switchboard_sfu::Transmit],
        call: &[Message],
        gso: Option<u16>,
    ) -> Flow {
        // Per call: nix's headers hold raw pointers, so the driver task
        // (which must be Send) cannot keep them.
        let cmsg_space = gso.map(|_| nix::cmsg_space!(u16));
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(call.len(), cmsg_space);
        let slices: Vec<IoSlice<'_>> = call
            .iter()
            .flat_map(|m| batch[m.start..m.end].iter())
            .map(|t| IoSlice::new(&t.contents))
            .collect();
        let mut per_message: Vec<&[IoSlice<'_>]> = Vec::with_capacity(call.len());
        let mut at = 0;
        for m in call {
            per_message.push(&slices[at..at + m.segments()]);
            at += m.segments();
        }
        let addrs: Vec<Option<SockaddrStorage>> = call
            .iter()
            .map(|m| Some(SockaddrStorage::from(batch[m.start].destination)))
            .collect();
        let size = gso.unwrap_or(0);
        let segments = [ControlMessage::UdpGsoSegments(&size)];
        let cmsgs: &[ControlMessage<'_>] = if gso.is_some() { &segments } else { &[] };
        let mut sent = 0;
        let mut done = 0;
        while done < call.len() {
            let fd = self.socket.as_raw_fd();
            let r = self.socket.try_io(Interest::WRITABLE, || {
                nix::sys::socket::sendmmsg(
                    fd,
                    &mut headers,
                    &per_message[done..],
                    &addrs[done..],
                    cmsgs,
                    MsgFlags::MSG_DONTWAIT,
                )
                .map(|r| r.count())
                .map_err(io::Error::from)
            });
            match r {
                Ok(n) if n > 0 => {
                    sent += call[done..done + n]
                        .iter()
                        .map(Message::segments)
                        .sum::<usize>();
                    done += n;
                }
                // A full socket buffer: the rest of the drain is dropped.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flow::Full(sent),
                // The kernel cannot segment on this route (no checksum
                // offload): plain datagrams from now on, this one included.
                Err(e)
                    if gso.is_some() && e.raw_os_error() == Some(nix::errno::Errno::EIO as i32) =>
                {
                    tracing::info!("media socket: UDP GSO refused ({e}); sending datagrams singly");
                    self.gso.store(false, Ordering::Relaxed);
                    return match self.send_singly(batch, &call[done..]) {
                        Flow::Go(n) => Flow::Go(sent + n),
                        Flow::Full(n) => Flow::Full(sent + n),
                    };
                }
                // The kernel refused this one message (its destination):
                // it alone is dropped, the others still go.
                _ => done += 1,
            }
        }
        Flow::Go(sent)
    }

    /// `call`'s messages as plain datagrams, after GSO was refused.
    fn send_singly(&self, batch: &[switchboard_sfu::Transmit], call: &[Message]) -> Flow {
        let mut sent = 0;
        for m in call {
            for t in &batch[m.start..m.end] {
                match self.socket.try_send_to(&t.contents, t.destination) {
                    Ok(_) => sent += 1,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flow::Full(sent),
                    Err(_) => {}
                }
            }
        }
        Flow::Go(sent)
    }
}

/// How a `sendmmsg` call ended: all went (or were refused one by one), or
/// the socket buffer was full. Both carry the datagrams sent.
enum Flow {
    Go(usize),
    Full(usize),
}

/// One message of a `sendmmsg`: `batch[start..end]`, all to one
/// destination, each `segment` bytes long but the last (which may be
/// shorter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Message {
    start: usize,
    end: usize,
    segment: usize,
}

impl Message {
    fn segments(&self) -> usize {
        self.end - self.start
    }

    fn len(&self, batch: &[switchboard_sfu::Transmit]) -> usize {
        batch[self.start..self.end]
            .iter()
            .map(|t| t.contents.len())
            .sum()
    }
}

/// Cuts `batch` into messages: runs of consecutive datagrams to one
/// destination from one source whose sizes GSO can carry (equal, the last one shorter or
/// equal), at most `max_segments` long and under the 64 KiB a UDP message
/// may hold.
fn messages(
    batch: &[switchboard_sfu::Transmit],
    max_segments: usize,
) -> impl Iterator<Item = Message> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        let first = batch.get(start)?;
        let segment = first.contents.len();
        let mut end = start + 1;
        let mut total = segment;
        while end < batch.len() && end - start < max_segments && segment > 0 {
            let next = &batch[end];
            let len = next.contents.len();
            if next.destination != first.destination
                || next.source != first.source
                || len > segment
                || len == 0
                || total + len > MAX_GSO_BYTES
            {
                break;
            }
            total += len;
            end += 1;
            if len < segment {
                break;
            }
        }
        let message = Message {
            start,
            end,
            segment,
        };
        start = end;
        Some(message)
    })
}

/// Segments per GSO message: the kernel's UDP_MAX_SEGMENTS on older
/// kernels (newer ones allow 128).
const MAX_GSO_SEGMENTS: usize = 64;

/// Bytes of one GSO message: a UDP payload's limit, with room to spare.
const MAX_GSO_BYTES: usize = 60_000;

/// Datagrams per `sendmmsg`.
const SEND_BATCH: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    fn t(port: u16, len: usize) -> switchboard_sfu::Transmit {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        switchboard_sfu::Transmit {
            source: addr,
            destination: addr,
            contents: vec![0; len],
        }
    }

    fn runs(batch: &[switchboard_sfu::Transmit], max: usize) -> Vec<(usize, usize)> {
        messages(batch, max).map(|m| (m.start, m.end)).collect()
    }

    #[test]
    fn a_frame_per_receiver_is_one_message() {
        // Two receivers, each a frame of three full packets and a short one,
        // then an audio packet to the first.
        let batch = [
            t(1, 1200),
            t(1, 1200),
            t(1, 1200),
            t(1, 700),
            t(2, 1200),
            t(2, 1200),
            t(2, 1200),
            t(2, 700),
            t(1, 90),
        ];
        assert_eq!(runs(&batch, 64), [(0, 4), (4, 8), (8, 9)]);
        // Without GSO every datagram is its own message.
        assert_eq!(runs(&batch, 1).len(), batch.len());
    }

    #[test]
    fn a_run_ends_at_a_shorter_or_longer_datagram() {
        let batch = [t(1, 500), t(1, 400), t(1, 400), t(1, 600), t(1, 600)];
        // The shorter one closes its run; a longer one starts a new run.
        assert_eq!(runs(&batch, 64), [(0, 2), (2, 3), (3, 5)]);
    }

    #[test]
    fn runs_are_bounded_in_segments_and_bytes() {
        let batch: Vec<_> = (0..10).map(|_| t(1, 100)).collect();
        assert_eq!(runs(&batch, 4), [(0, 4), (4, 8), (8, 10)]);
        let big: Vec<_> = (0..60).map(|_| t(1, 1400)).collect();
        for m in messages(&big, 64) {
            assert!(m.len(&big) <= MAX_GSO_BYTES);
        }
        // An empty datagram never joins a run (GSO cannot carry it).
        assert_eq!(runs(&[t(1, 0), t(1, 0)], 64), [(0, 1), (1, 2)]);
    }

    /// On a wildcard-bound socket too, a run arrives as its datagrams, in
    /// order, from the source asked for.
    #[tokio::test]
    async fn sourced_gso_runs_arrive_as_datagrams() {
        let socket = MediaSocket::bind(([0, 0, 0, 0], 0).into()).expect("bind");
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("peer");
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let to = peer.local_addr().expect("addr");
        let source: SocketAddr = ([127, 0, 0, 1], socket.local().port()).into();
        let batch: Vec<_> = [1200, 1200, 700, 90]
            .into_iter()
            .enumerate()
            .map(|(i, len)| switchboard_sfu::Transmit {
                source,
                destination: to,
                contents: vec![i as u8; len],
            })
            .collect();
        socket.socket.writable().await.expect("writable");
        let mut scratch = Vec::new();
        let sent = socket.try_send_sourced(&batch, |t| Some(t.source.ip()), &mut scratch);
        assert_eq!(sent, batch.len());
        let mut buf = [0u8; 2000];
        for (i, t) in batch.iter().enumerate() {
            let (n, from) = peer.recv_from(&mut buf).expect("a datagram");
            assert_eq!(from, source, "datagram {i}");
            assert_eq!(n, t.contents.len(), "datagram {i}");
            assert!(buf[..n].iter().all(|b| *b == i as u8), "datagram {i}");
        }
    }

    /// GSO messages arrive as the datagrams they were made of, in order.
    #[tokio::test]
    async fn gso_runs_arrive_as_datagrams() {
        let socket = MediaSocket::bind(([127, 0, 0, 1], 0).into()).expect("bind");
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("peer");
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let to = peer.local_addr().expect("addr");
        let mut batch = Vec::new();
        for (i, len) in [1200, 1200, 1200, 700, 90].into_iter().enumerate() {
            batch.push(switchboard_sfu::Transmit {
                source: socket.local(),
                destination: to,
                contents: vec![i as u8; len],
            });
        }
        // tokio learns the socket is writable from its first poll.
        socket.socket.writable().await.expect("writable");
        assert_eq!(socket.try_send_many(&batch), batch.len());
        let mut buf = [0u8; 2000];
        for (i, t) in batch.iter().enumerate() {
            let n = peer.recv(&mut buf).expect("a datagram");
            assert_eq!(n, t.contents.len(), "datagram {i}");
            assert!(buf[..n].iter().all(|b| *b == i as u8), "datagram {i}");
        }
    }
}
