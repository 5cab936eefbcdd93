//! A bare UDP forwarder: the floor for TURN relaying.
//!
//! Each client address gets its own upstream socket connected to the peer
//! (as a TURN allocation gets a relay socket); datagrams are moved with
//! batched `recvmmsg`, and sent with `sendmmsg`, or with `--gso` as one GSO
//! `sendmsg` per run of equal-sized datagrams to one destination (what the
//! TURN shell does). Single-threaded, with `epoll`. No parsing, no lookups
//! beyond one hash map: what is left is the syscall cost.
//!
//! usage: udp-forwarder LISTEN_ADDR PEER_ADDR [--gso]

use std::collections::HashMap;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

const BATCH: usize = 32;
const MTU: usize = 2048;

struct Batch {
    bufs: Vec<[u8; MTU]>,
    iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_in>,
    msgs: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new() -> Box<Self> {
        let mut b = Box::new(Self {
            bufs: vec![[0; MTU]; BATCH],
            // SAFETY: plain C structs, all-zero is a valid value.
            iovs: vec![unsafe { zeroed() }; BATCH],
            names: vec![unsafe { zeroed() }; BATCH],
            msgs: vec![unsafe { zeroed() }; BATCH],
        });
        for i in 0..BATCH {
            b.iovs[i].iov_base = b.bufs[i].as_mut_ptr().cast();
            b.iovs[i].iov_len = MTU;
            b.msgs[i].msg_hdr.msg_iov = &mut b.iovs[i];
            b.msgs[i].msg_hdr.msg_iovlen = 1;
        }
        b
    }

    fn recv(&mut self, fd: i32) -> usize {
        for i in 0..BATCH {
            self.iovs[i].iov_len = MTU;
            self.msgs[i].msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_in).cast();
            self.msgs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
        }
        // SAFETY: the headers point into buffers owned by self, sized as declared.
        let n = unsafe {
            libc::recvmmsg(fd, self.msgs.as_mut_ptr(), BATCH as u32, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if n < 0 { 0 } else { n as usize }
    }

    fn source(&self, i: usize) -> SocketAddr {
        let n = &self.names[i];
        SocketAddr::V4(SocketAddrV4::new(
            u32::from_be(n.sin_addr.s_addr).into(),
            u16::from_be(n.sin_port),
        ))
    }
}

/// One GSO `sendmsg` carrying the datagrams `idx` of `batch` (all the size
/// of the first, the last possibly shorter). False when they do not fit
/// that shape or the kernel refuses.
fn send_gso(fd: i32, batch: &Batch, idx: &[usize], to: Option<libc::sockaddr_in>, train: &mut Vec<u8>) -> bool {
    let seg = batch.msgs[idx[0]].msg_len as usize;
    let lens: Vec<usize> = idx.iter().map(|&i| batch.msgs[i].msg_len as usize).collect();
    if idx.len() < 2 || lens[..lens.len() - 1].iter().any(|&l| l != seg) || lens[lens.len() - 1] > seg {
        return false;
    }
    train.clear();
    for (&i, &len) in idx.iter().zip(&lens) {
        train.extend_from_slice(&batch.bufs[i][..len]);
    }
    let mut iov = libc::iovec { iov_base: train.as_mut_ptr().cast(), iov_len: train.len() };
    // SAFETY: CMSG macros on a buffer sized by CMSG_SPACE; all pointers live.
    unsafe {
        let space = libc::CMSG_SPACE(size_of::<u16>() as u32) as usize;
        let mut control = vec![0u8; space];
        let mut hdr: libc::msghdr = zeroed();
        let mut name = to;
        if let Some(n) = name.as_mut() {
            hdr.msg_name = (n as *mut libc::sockaddr_in).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
        }
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = control.as_mut_ptr().cast();
        hdr.msg_controllen = space;
        let cmsg = libc::CMSG_FIRSTHDR(&hdr);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), seg as u16);
        libc::sendmsg(fd, &hdr, libc::MSG_DONTWAIT) >= 0
    }
}

/// Sends `count` datagrams of `batch` (lengths from the receive) on `fd`,
/// to `to` (or the connected peer when `None`).
fn send(fd: i32, batch: &mut Batch, idx: &[usize], to: Option<libc::sockaddr_in>) {
    let mut out: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
    let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
    let mut name = to;
    for (k, &i) in idx.iter().enumerate() {
        iovs[k].iov_base = batch.bufs[i].as_mut_ptr().cast();
        iovs[k].iov_len = batch.msgs[i].msg_len as usize;
        out[k].msg_hdr.msg_iov = &mut iovs[k];
        out[k].msg_hdr.msg_iovlen = 1;
        if let Some(n) = name.as_mut() {
            out[k].msg_hdr.msg_name = (n as *mut libc::sockaddr_in).cast();
            out[k].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
        }
    }
    // SAFETY: every header points at live stack or batch memory.
    unsafe { libc::sendmmsg(fd, out.as_mut_ptr(), idx.len() as u32, libc::MSG_DONTWAIT) };
}

fn sockaddr(addr: SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(v4) = addr else { panic!("IPv4 only") };
    // SAFETY: all-zero sockaddr_in is valid.
    let mut s: libc::sockaddr_in = unsafe { zeroed() };
    s.sin_family = libc::AF_INET as u16;
    s.sin_port = v4.port().to_be();
    s.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
    s
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let gso = args.iter().any(|a| a == "--gso");
    let mut train = Vec::with_capacity(65536);
    let (Some(listen), Some(peer)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: udp-forwarder LISTEN_ADDR PEER_ADDR [--gso]");
        std::process::exit(2);
    };
    let listen = UdpSocket::bind(listen.as_str())?;
    let peer: SocketAddr = peer.parse().map_err(|_| io::Error::other("bad peer address"))?;
    println!("READY {} pid {}", listen.local_addr()?, std::process::id());
    let mut upstream: Vec<(UdpSocket, SocketAddr)> = Vec::new();
    let mut by_client: HashMap<SocketAddr, usize> = HashMap::new();
    let mut batch = Batch::new();
    // SAFETY: plain epoll syscalls on fds this process owns.
    let ep = unsafe { libc::epoll_create1(0) };
    let watch = |fd: i32, key: u64| {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: key };
        // SAFETY: ev lives across the call.
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
    };
    watch(listen.as_raw_fd(), u64::MAX);
    // SAFETY: all-zero epoll_event is valid.
    let mut events: Vec<libc::epoll_event> = vec![unsafe { zeroed() }; 64];
    loop {
        // SAFETY: events is a live buffer of 64 entries.
        let ready = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), 64, -1) };
        for e in 0..ready.max(0) as usize {
            let key = events[e].u64;
            if key == u64::MAX {
                let n = batch.recv(listen.as_raw_fd());
                let mut i = 0;
                while i < n {
                    let client = batch.source(i);
                    let slot = match by_client.get(&client) {
                        Some(&slot) => slot,
                        None => {
                            let s = UdpSocket::bind("127.0.0.1:0")?;
                            s.connect(peer)?;
                            watch(s.as_raw_fd(), upstream.len() as u64);
                            upstream.push((s, client));
                            by_client.insert(client, upstream.len() - 1);
                            upstream.len() - 1
                        }
                    };
                    // A run of datagrams from the same client goes out in one send.
                    let mut run = vec![i];
                    while run.len() < BATCH && i + run.len() < n && batch.source(i + run.len()) == client {
                        run.push(i + run.len());
                    }
                    let fd = upstream[slot].0.as_raw_fd();
                    if !(gso && send_gso(fd, &batch, &run, None, &mut train)) {
                        send(fd, &mut batch, &run, None);
                    }
                    i += run.len();
                }
            } else {
                let (sock, client) = &upstream[key as usize];
                let n = batch.recv(sock.as_raw_fd());
                if n > 0 {
                    let idx: Vec<usize> = (0..n).collect();
                    let to = Some(sockaddr(*client));
                    if !(gso && send_gso(listen.as_raw_fd(), &batch, &idx, to, &mut train)) {
                        send(listen.as_raw_fd(), &mut batch, &idx, to);
                    }
                }
            }
        }
    }
}
