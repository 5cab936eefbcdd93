//! The UDP hot path: one thread per listener socket, each waiting on its own
//! epoll set (mio) that holds its listener and a share of the relay sockets.
//!
//! Why threads rather than tokio tasks: a relayed datagram is a hash lookup
//! and two syscalls, and on evenly paced traffic every datagram arrives
//! alone. As a task, each one also paid a readiness wake-up, a task poll and
//! the scheduler's bookkeeping, which came to a quarter of the server's CPU
//! per message (docs/benchmarks-turn.md). A reactor thread takes the ready
//! sockets straight from `epoll_wait`, reads each under the core's lock, and
//! sends what the core answers (each batch is flushed as it is handled).
//!
//! Relay sockets are registered from whichever thread runs the core when it
//! asks for one (`Event::BindRelay`): mio's `Registry` is shareable.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use switchboard_turn::{FiveTuple, Transport};

use super::driver::{Shared, unix_secs};
use super::udp::{RecvBuffers, SLOTS, UdpEndpoint};

/// The reactor's own listener socket.
const LISTENER: Token = Token(0);
/// Wakes the reactor for shutdown.
const WAKER: Token = Token(1);
/// Relay sockets' tokens start here (`IoTable`'s slot index plus this).
pub(super) const FIRST_RELAY_TOKEN: usize = 2;
/// `recvmmsg` batches per socket and turn, so that one busy socket cannot
/// hold the core's lock for long; a socket left unread is read again on the
/// next turn without waiting (epoll here is edge-triggered).
const BATCHES_PER_TURN: usize = 4;
/// Readiness events taken per `epoll_wait`.
const EVENTS: usize = 256;

/// What other threads keep of a reactor: where to register relay sockets,
/// and how to wake it.
pub(super) struct ReactorHandle {
    registry: Registry,
    waker: Waker,
}

impl ReactorHandle {
    /// Adds a relay socket to this reactor's epoll set under `token`.
    pub(super) fn register(&self, endpoint: &UdpEndpoint, token: usize) -> io::Result<()> {
        self.registry.register(
            &mut SourceFd(&endpoint.fd()),
            Token(token),
            Interest::READABLE,
        )
    }

    /// Makes the reactor look at `shutdown` now.
    pub(super) fn wake(&self) {
        let _ = self.waker.wake();
    }

    /// Removes a relay socket before it closes.
    pub(super) fn deregister(&self, endpoint: &UdpEndpoint) {
        // Closing the socket removes it from epoll anyway; this just makes
        // it immediate.
        let _ = self.registry.deregister(&mut SourceFd(&endpoint.fd()));
    }
}

/// A reactor not yet running: its epoll set with `listener` in it.
pub(super) struct Reactor {
    poll: Poll,
    listener: Arc<UdpEndpoint>,
}

impl Reactor {
    pub(super) fn new(listener: Arc<UdpEndpoint>) -> io::Result<(Self, ReactorHandle)> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut SourceFd(&listener.fd()), LISTENER, Interest::READABLE)?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let handle = ReactorHandle {
            registry: poll.registry().try_clone()?,
            waker,
        };
        Ok((Self { poll, listener }, handle))
    }

    /// Runs the reactor on a thread of its own until `shared.shutdown`.
    pub(super) fn spawn(self, shared: Arc<Shared>, index: usize) -> io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("turn-udp-{index}"))
            .spawn(move || self.run(&shared))
    }

    fn run(mut self, shared: &Arc<Shared>) {
        let mut events = Events::with_capacity(EVENTS);
        let mut bufs = RecvBuffers::new();
        // Sockets left with datagrams in their queue after a turn.
        let mut unread: Vec<Token> = Vec::new();
        let mut ready: Vec<Token> = Vec::new();
        loop {
            let timeout = (!unread.is_empty()).then_some(Duration::ZERO);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "turn: epoll failed; UDP stops");
                return;
            }
            if shared.shutdown.is_cancelled() {
                return;
            }
            ready.clear();
            ready.append(&mut unread);
            ready.extend(events.iter().map(|e| e.token()).filter(|&t| t != WAKER));
            if ready.is_empty() {
                continue;
            }
            let now = Instant::now();
            let unix = unix_secs();
            for &token in &ready {
                // Locked per socket, so that the other reactors and the
                // TCP/TLS tasks wait at most a few batches for the core.
                let mut core = shared.lock();
                let drained = if token == LISTENER {
                    read_listener(&mut core, shared, &self.listener, &mut bufs, now, unix)
                } else {
                    read_relay(&mut core, shared, token.0, &mut bufs, now)
                };
                drop(core);
                if !drained && !unread.contains(&token) {
                    unread.push(token);
                }
            }
        }
    }
}

/// Reads a few batches from the listener into the core; true when the
/// socket's queue is empty.
fn read_listener(
    core: &mut super::driver::Core,
    shared: &Arc<Shared>,
    listener: &UdpEndpoint,
    bufs: &mut RecvBuffers,
    now: Instant,
    unix: u64,
) -> bool {
    let local = listener.local;
    drain(|| {
        let n = match listener.recv(bufs) {
            Ok(n) => n,
            Err(e) => return Some(Err(e)),
        };
        for (client, dst_ip, bytes) in bufs.datagrams(n) {
            let server = SocketAddr::new(dst_ip.unwrap_or(local.ip()), local.port());
            let five_tuple = FiveTuple {
                transport: Transport::Udp,
                client,
                server,
            };
            core.server.handle_client(now, unix, five_tuple, bytes);
        }
        // One flush per batch bounds what the core queues, and lets runs to
        // one destination leave as one GSO send.
        core.flush(shared, now);
        Some(Ok(n))
    })
}

/// Reads a few batches from a relay socket into the core; true when the
/// socket's queue is empty or the socket is gone.
fn read_relay(
    core: &mut super::driver::Core,
    shared: &Arc<Shared>,
    token: usize,
    bufs: &mut RecvBuffers,
    now: Instant,
) -> bool {
    drain(|| {
        // Looked up per batch: a flush may have released the allocation.
        let endpoint = core.io.relay_by_token(token)?;
        let local = endpoint.local;
        let n = match endpoint.recv(bufs) {
            Ok(n) => n,
            Err(e) => return Some(Err(e)),
        };
        for (peer, _, bytes) in bufs.datagrams(n) {
            core.server.handle_peer(now, local, peer, bytes);
        }
        core.flush(shared, now);
        Some(Ok(n))
    })
}

/// Runs up to [`BATCHES_PER_TURN`] calls of `batch`, which reads one
/// `recvmmsg` batch into the core and says how many datagrams it took
/// (`None`: the socket is gone). True when the socket's queue is empty.
fn drain(mut batch: impl FnMut() -> Option<io::Result<usize>>) -> bool {
    let mut full = false;
    for _ in 0..BATCHES_PER_TURN {
        full = false;
        match batch() {
            None => return true,
            Some(Ok(n)) if n < SLOTS => return true,
            Some(Ok(_)) => full = true,
            Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => return true,
            // ICMP errors surface here on some kernels; keep serving.
            Some(Err(e)) => tracing::trace!(error = %e, "turn udp recv"),
        }
    }
    // Unread only after a full batch: a socket that keeps failing is left to
    // its next readiness event rather than spun on.
    !full
}

/// The running reactors' threads, joined at shutdown.
pub(super) async fn join_at_shutdown(shared: Arc<Shared>, threads: Vec<JoinHandle<()>>) {
    shared.shutdown.cancelled().await;
    for reactor in &shared.reactors {
        reactor.wake();
    }
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await;
}
