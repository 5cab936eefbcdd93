//! The load loop shared by every mode: a few threads, each owning some
//! nonblocking sockets under one epoll, moving datagrams with `sendmmsg` and
//! `recvmmsg` so that the tool stays cheap next to the servers it measures.
//!
//! Every message carries a sequence number (in the transaction id for
//! Binding, in the first 8 payload bytes otherwise). An answer with sequence
//! `s` retires every message up to `s`: on loopback a flow's datagrams stay in
//! order, so anything older that has not come back is lost, and its window
//! slot is reused at once instead of waiting for a timeout.

use std::io;
use std::mem::zeroed;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::LoadError;

const BATCH: usize = 64;
const MAX_DGRAM: usize = 2048;
/// Longest payload `--echo` accepts: one ChannelData datagram must fit a buffer.
pub(crate) const MAX_PAYLOAD: usize = 1400;
/// With messages in flight and nothing back for this long, they are all lost.
const STALL: Duration = Duration::from_millis(100);
/// How long late answers are still counted after the sending stops.
const GRACE: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// STUN Binding requests, answered by Binding success responses.
    Binding,
    /// Raw payloads of this size, echoed back unchanged.
    Echo(usize),
    /// Payloads of this size as ChannelData on the flow's channel.
    Channel(usize),
}

pub(crate) struct Plan {
    pub kind: Kind,
    pub window: u64,
    /// Messages per second per flow; `None` is closed loop.
    pub rate_per_flow: Option<f64>,
    pub duration: Duration,
}

pub(crate) struct Flow {
    pub sock: UdpSocket,
    pub id: u32,
    pub channel: u16,
    next_seq: u64,
    /// Every sequence number below this is answered or given up.
    done_below: u64,
    last_answer: Instant,
    last_fill: Instant,
    credit: f64,
}

impl Flow {
    pub(crate) fn new(sock: UdpSocket, id: u32, channel: u16) -> Self {
        let now = Instant::now();
        Self {
            sock,
            id,
            channel,
            next_seq: 0,
            done_below: 0,
            last_answer: now,
            last_fill: now,
            credit: 0.0,
        }
    }

    fn in_flight(&self) -> u64 {
        self.next_seq - self.done_below
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Totals {
    pub sent: u64,
    pub answered: u64,
}

/// Writes message `seq` of `flow` into `out`, returning its length.
fn encode(kind: Kind, flow: &Flow, seq: u64, out: &mut [u8; MAX_DGRAM]) -> usize {
    let payload = |out: &mut [u8], len: usize| {
        out[..8].copy_from_slice(&seq.to_be_bytes());
        out[8..len].fill(0xA5);
    };
    match kind {
        Kind::Binding => {
            out[..2].copy_from_slice(&0x0001u16.to_be_bytes());
            out[2..4].copy_from_slice(&0u16.to_be_bytes());
            out[4..8].copy_from_slice(&switchboard_stun::MAGIC_COOKIE.to_be_bytes());
            out[8..12].copy_from_slice(&flow.id.to_be_bytes());
            out[12..20].copy_from_slice(&seq.to_be_bytes());
            20
        }
        Kind::Echo(len) => {
            payload(&mut out[..], len);
            len
        }
        Kind::Channel(len) => {
            let total = (4 + len).next_multiple_of(4);
            out[..4].copy_from_slice(&switchboard_stun::ChannelData::header(flow.channel, len));
            payload(&mut out[4..], len);
            out[4 + len..total].fill(0);
            total
        }
    }
}

fn seq_of(bytes: &[u8]) -> Option<u64> {
    bytes.first_chunk::<8>().map(|b| u64::from_be_bytes(*b))
}

/// The sequence number `bytes` answers, if it is an answer of this flow.
fn answer_of(kind: Kind, flow: &Flow, bytes: &[u8]) -> Option<u64> {
    match kind {
        Kind::Binding => {
            let ok = switchboard_stun::is_stun(bytes)
                && bytes[..2] == [0x01, 0x01]
                && bytes[8..12] == flow.id.to_be_bytes();
            if ok { seq_of(&bytes[12..]) } else { None }
        }
        Kind::Echo(len) => (bytes.len() == len).then(|| seq_of(bytes)).flatten(),
        Kind::Channel(len) => {
            let cd = switchboard_stun::ChannelData::parse(bytes).ok()?;
            (cd.channel() == flow.channel && cd.data().len() == len)
                .then(|| seq_of(cd.data()))
                .flatten()
        }
    }
}

/// Datagram buffers with their `mmsghdr`s; the pointers are set right before
/// each syscall so that nothing depends on where the vectors live.
struct Batch {
    bufs: Vec<[u8; MAX_DGRAM]>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new() -> Self {
        Self {
            bufs: vec![[0; MAX_DGRAM]; BATCH],
            // SAFETY: plain C structs, for which all-zero is a valid value.
            iovs: vec![unsafe { zeroed() }; BATCH],
            msgs: vec![unsafe { zeroed() }; BATCH],
        }
    }

    /// Points the first `n` headers at their buffers, with the given lengths.
    fn prepare(&mut self, n: usize, len: impl Fn(usize) -> usize) {
        for i in 0..n {
            self.iovs[i].iov_base = self.bufs[i].as_mut_ptr().cast();
            self.iovs[i].iov_len = len(i);
            // SAFETY: all-zero msghdr is valid; the socket is connected, so no name.
            self.msgs[i].msg_hdr = unsafe { zeroed() };
            self.msgs[i].msg_hdr.msg_iov = &mut self.iovs[i];
            self.msgs[i].msg_hdr.msg_iovlen = 1;
            self.msgs[i].msg_len = 0;
        }
    }

    /// Sends the first `n` datagrams (lengths in `lens`); returns how many went.
    fn send(&mut self, fd: i32, lens: &[usize]) -> io::Result<usize> {
        self.prepare(lens.len(), |i| lens[i]);
        // SAFETY: the headers point into self.bufs, sized as declared.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                lens.len() as u32,
                libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            // A full send buffer, or an ICMP error from an earlier datagram:
            // nothing went this time, the window stays open for the next try.
            Some(libc::EAGAIN | libc::ENOBUFS | libc::ECONNREFUSED) => Ok(0),
            _ => Err(e),
        }
    }

    /// Receives up to a batch; returns how many datagrams arrived.
    fn recv(&mut self, fd: i32) -> io::Result<usize> {
        self.prepare(BATCH, |_| MAX_DGRAM);
        // SAFETY: the headers point into self.bufs, sized as declared.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::ECONNREFUSED) => Ok(0),
            _ => Err(e),
        }
    }

    fn received(&self, i: usize) -> &[u8] {
        &self.bufs[i][..(self.msgs[i].msg_len as usize).min(MAX_DGRAM)]
    }
}

struct Epoll(i32);

impl Epoll {
    fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the fd is owned by the returned value.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(Self(fd))
        }
    }

    fn add(&self, fd: i32, key: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: key,
        };
        // SAFETY: ev lives across the call.
        if unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn wait(&self, events: &mut [libc::epoll_event], timeout: Duration) -> io::Result<usize> {
        let ms = timeout.as_millis().clamp(0, 1000) as i32;
        // SAFETY: events is a live buffer of the length passed.
        let n = unsafe { libc::epoll_wait(self.0, events.as_mut_ptr(), events.len() as i32, ms) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            Ok(0)
        } else {
            Err(e)
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: the fd is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

/// Tops the flow's window up (within its rate credit); returns messages sent.
fn fill(flow: &mut Flow, plan: &Plan, io: &mut Batch, now: Instant) -> io::Result<u64> {
    let mut room = plan.window.saturating_sub(flow.in_flight());
    if let Some(rate) = plan.rate_per_flow {
        let dt = now.saturating_duration_since(flow.last_fill).as_secs_f64();
        // Capped so that a stall does not turn into a burst afterwards; one
        // over the window so that a full window does not waste the fraction
        // earned while waiting.
        flow.credit = (flow.credit + rate * dt).min(plan.window as f64 + 1.0);
        room = room.min(flow.credit as u64);
    }
    flow.last_fill = now;
    let mut sent = 0;
    while room > 0 {
        let n = (room as usize).min(BATCH);
        let mut lens = [0usize; BATCH];
        for (k, len) in lens[..n].iter_mut().enumerate() {
            *len = encode(plan.kind, flow, flow.next_seq + k as u64, &mut io.bufs[k]);
        }
        let went = io.send(flow.sock.as_raw_fd(), &lens[..n])?;
        flow.next_seq += went as u64;
        sent += went as u64;
        room -= went as u64;
        if went < n {
            break;
        }
    }
    if plan.rate_per_flow.is_some() {
        flow.credit -= sent as f64;
    }
    Ok(sent)
}

/// Reads what the flow's socket holds (a few batches at most); returns answers.
fn drain(flow: &mut Flow, kind: Kind, io: &mut Batch, now: Instant) -> io::Result<u64> {
    let mut answered = 0;
    for _ in 0..8 {
        let n = io.recv(flow.sock.as_raw_fd())?;
        for i in 0..n {
            if let Some(seq) = answer_of(kind, flow, io.received(i))
                && seq < flow.next_seq
            {
                answered += 1;
                flow.done_below = flow.done_below.max(seq + 1);
                flow.last_answer = now;
            }
        }
        if n < BATCH {
            break;
        }
    }
    Ok(answered)
}

fn run_group(flows: &mut [Flow], plan: &Plan, start: Instant) -> Result<Totals, LoadError> {
    let ep = Epoll::new()?;
    for (i, f) in flows.iter_mut().enumerate() {
        f.sock.set_nonblocking(true)?;
        ep.add(f.sock.as_raw_fd(), i as u64)?;
        f.last_answer = start;
        f.last_fill = start;
    }
    let mut io = Batch::new();
    let mut totals = Totals::default();
    // SAFETY: all-zero epoll_event is valid.
    let mut events: Vec<libc::epoll_event> = vec![unsafe { zeroed() }; 64];
    let tick = if plan.rate_per_flow.is_some() {
        Duration::from_millis(1)
    } else {
        Duration::from_millis(5)
    };
    let end = start + plan.duration;
    let mut now = Instant::now();
    while now < end {
        for f in flows.iter_mut() {
            if f.in_flight() > 0 && now.saturating_duration_since(f.last_answer) > STALL {
                f.done_below = f.next_seq;
                f.last_answer = now;
            }
            totals.sent += fill(f, plan, &mut io, now)?;
        }
        let ready = ep.wait(&mut events, tick.min(end.saturating_duration_since(now)))?;
        now = Instant::now();
        for e in &events[..ready] {
            let Some(f) = flows.get_mut(e.u64 as usize) else {
                continue;
            };
            totals.answered += drain(f, plan.kind, &mut io, now)?;
            if now < end {
                totals.sent += fill(f, plan, &mut io, now)?;
            }
        }
    }
    let grace_end = now + GRACE;
    while now < grace_end && flows.iter().any(|f| f.in_flight() > 0) {
        let ready = ep.wait(&mut events, Duration::from_millis(10))?;
        now = Instant::now();
        for e in &events[..ready] {
            if let Some(f) = flows.get_mut(e.u64 as usize) {
                totals.answered += drain(f, plan.kind, &mut io, now)?;
            }
        }
    }
    for f in flows.iter() {
        f.sock.set_nonblocking(false)?;
    }
    Ok(totals)
}

/// Runs the load on `flows` split over `threads` threads; returns the totals
/// and the time spent sending.
pub(crate) fn run(
    flows: &mut [Flow],
    plan: &Plan,
    threads: usize,
) -> Result<(Totals, Duration), LoadError> {
    let per = flows.len().div_ceil(threads.max(1)).max(1);
    let start = Instant::now();
    let results: Vec<Result<Totals, LoadError>> = std::thread::scope(|s| {
        let handles: Vec<_> = flows
            .chunks_mut(per)
            .map(|group| s.spawn(move || run_group(group, plan, start)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(LoadError::Usage("a load thread panicked".into())))
            })
            .collect()
    });
    let mut totals = Totals::default();
    for r in results {
        let t = r?;
        totals.sent += t.sent;
        totals.answered += t.answered;
    }
    Ok((totals, plan.duration.min(start.elapsed())))
}
