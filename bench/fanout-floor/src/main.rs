//! A bare UDP fan-out forwarder: the floor for the SFU benchmark.
//!
//! One socket. A client's first datagram `JOIN <room>` makes it a member of
//! that room; every later datagram from a member is sent to each other
//! member of its room, unchanged. Datagrams are received with `recvmmsg`
//! and the copies go out with `sendmmsg`, 64 at a time. Single-threaded,
//! blocking on the one socket. No parsing, no crypto, one hash lookup per
//! datagram: what is left is the syscall and copy cost that any SFU pays
//! for the same 1-in/N-out traffic.
//!
//! usage: fanout-floor LISTEN_ADDR

use std::collections::HashMap;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

const BATCH: usize = 32;
const OUT: usize = 64;
const MTU: usize = 2048;

struct Inbox {
    bufs: Vec<[u8; MTU]>,
    iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_in>,
    msgs: Vec<libc::mmsghdr>,
}

impl Inbox {
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
            b.msgs[i].msg_hdr.msg_iov = &mut b.iovs[i];
            b.msgs[i].msg_hdr.msg_iovlen = 1;
        }
        b
    }

    /// Blocks for at least one datagram, then takes what is queued.
    fn recv(&mut self, fd: i32) -> usize {
        for i in 0..BATCH {
            self.iovs[i].iov_len = MTU;
            self.msgs[i].msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_in).cast();
            self.msgs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
        }
        // SAFETY: the headers point into buffers owned by self, sized as declared.
        let n = unsafe {
            libc::recvmmsg(fd, self.msgs.as_mut_ptr(), BATCH as u32, libc::MSG_WAITFORONE, std::ptr::null_mut())
        };
        if n < 0 { 0 } else { n as usize }
    }

    fn source(&self, i: usize) -> SocketAddr {
        let n = &self.names[i];
        SocketAddr::V4(SocketAddrV4::new(u32::from_be(n.sin_addr.s_addr).into(), u16::from_be(n.sin_port)))
    }

    fn payload(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.msgs[i].msg_len as usize]
    }
}

/// Copies queued for `sendmmsg`: pointers into the inbox, so they must go
/// out before the next receive.
struct Outbox {
    iovs: [libc::iovec; OUT],
    names: [libc::sockaddr_in; OUT],
    msgs: [libc::mmsghdr; OUT],
    len: usize,
    sent: u64,
}

impl Outbox {
    fn push(&mut self, fd: i32, data: &[u8], to: libc::sockaddr_in) {
        if self.len == OUT {
            self.flush(fd);
        }
        let k = self.len;
        self.iovs[k] = libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: data.len() };
        self.names[k] = to;
        self.len += 1;
    }

    fn flush(&mut self, fd: i32) {
        for k in 0..self.len {
            self.msgs[k].msg_hdr.msg_iov = &mut self.iovs[k];
            self.msgs[k].msg_hdr.msg_iovlen = 1;
            self.msgs[k].msg_hdr.msg_name = (&mut self.names[k] as *mut libc::sockaddr_in).cast();
            self.msgs[k].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
        }
        let mut done = 0;
        while done < self.len {
            // SAFETY: every header points at live memory of self or the inbox.
            let n = unsafe { libc::sendmmsg(fd, self.msgs[done..].as_mut_ptr(), (self.len - done) as u32, 0) };
            if n <= 0 {
                break; // a full socket buffer drops, as a real forwarder would
            }
            done += n as usize;
        }
        self.sent += done as u64;
        self.len = 0;
    }
}

fn sockaddr(addr: SocketAddr) -> Option<libc::sockaddr_in> {
    let SocketAddr::V4(v4) = addr else { return None };
    // SAFETY: all-zero sockaddr_in is valid.
    let mut s: libc::sockaddr_in = unsafe { zeroed() };
    s.sin_family = libc::AF_INET as u16;
    s.sin_port = v4.port().to_be();
    s.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
    Some(s)
}

fn main() -> io::Result<()> {
    let Some(listen) = std::env::args().nth(1) else {
        eprintln!("usage: fanout-floor LISTEN_ADDR");
        std::process::exit(2);
    };
    let sock = UdpSocket::bind(listen.as_str())?;
    println!("READY {} pid {}", sock.local_addr()?, std::process::id());
    let fd = sock.as_raw_fd();
    let mut rooms: HashMap<Vec<u8>, Vec<(SocketAddr, libc::sockaddr_in)>> = HashMap::new();
    let mut room_of: HashMap<SocketAddr, Vec<u8>> = HashMap::new();
    let mut inbox = Inbox::new();
    // SAFETY: plain C structs, all-zero is a valid value.
    let mut outbox: Box<Outbox> = Box::new(unsafe { zeroed() });
    loop {
        let n = inbox.recv(fd);
        for i in 0..n {
            let from = inbox.source(i);
            let data = inbox.payload(i);
            if let Some(room) = data.strip_prefix(b"JOIN ") {
                if room_of.contains_key(&from) {
                    continue;
                }
                let Some(name) = sockaddr(from) else { continue };
                rooms.entry(room.to_vec()).or_default().push((from, name));
                room_of.insert(from, room.to_vec());
                continue;
            }
            let Some(members) = room_of.get(&from).and_then(|r| rooms.get(r)) else { continue };
            for (addr, name) in members {
                if *addr != from {
                    outbox.push(fd, data, *name);
                }
            }
        }
        outbox.flush(fd);
    }
}
