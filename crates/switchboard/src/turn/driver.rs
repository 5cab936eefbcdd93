//! The thin driver around the sans-IO [`TurnServer`]: one core behind a std
//! `Mutex`, shared by the UDP reactor threads and the TCP/TLS tasks.
//!
//! Why one locked core rather than one core per thread: a relayed packet
//! enters on one socket (a listener, a relay) and leaves on another, and
//! each allocation's state is touched from both directions; sharding the
//! core would need cross-shard routing for every packet. The critical
//! section is a hash lookup, a copy and a non-blocking `sendmsg`; nothing
//! awaits under the lock (mini-redis's `Db` pattern).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use switchboard_turn::{Event, Family, FiveTuple, RelayAddress, Source, Transport, TurnServer};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admin::{EVENT_BUFFER, TurnAllocationEvent, announce};
use super::config::PortRange;
use super::reactor::{FIRST_RELAY_TOKEN, ReactorHandle};
use super::udp::UdpEndpoint;

/// Ports tried for one relay socket before answering 508.
const BIND_ATTEMPTS: u32 = 64;

/// Where relay sockets go.
#[derive(Debug, Clone)]
pub(super) struct RelayPlan {
    pub(super) ports: PortRange,
    /// Fixed local IPv4/IPv6 to bind; else the address the client reached.
    pub(super) relay_ip: Option<IpAddr>,
    pub(super) relay_ipv6: Option<Ipv6Addr>,
    pub(super) external_ip: Option<IpAddr>,
}

/// State shared by every thread and task of the service.
pub(super) struct Shared {
    core: Mutex<Core>,
    /// Wakes the timer task when the core's next deadline moved earlier.
    pub(super) timer: Notify,
    pub(super) shutdown: CancellationToken,
    pub(super) tasks: TaskTracker,
    pub(super) plan: RelayPlan,
    /// The UDP reactors; relay sockets are spread over them in turn.
    pub(super) reactors: Vec<ReactorHandle>,
    /// Allocations made and ended, for whoever subscribed (webhooks, the
    /// dashboard); sending never waits.
    pub(super) allocation_events: broadcast::Sender<TurnAllocationEvent>,
}

impl Shared {
    pub(super) fn new(
        server: TurnServer,
        udp: Vec<Arc<UdpEndpoint>>,
        reactors: Vec<ReactorHandle>,
        plan: RelayPlan,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        Self {
            core: Mutex::new(Core {
                server,
                io: IoTable {
                    udp,
                    relays: HashMap::default(),
                    slots: Vec::new(),
                    free_slots: Vec::new(),
                    next_reactor: 0,
                    streams: HashMap::new(),
                    armed: None,
                    send_failures: 0,
                    train: Train::default(),
                    spare: None,
                },
            }),
            timer: Notify::new(),
            shutdown,
            tasks,
            plan,
            reactors,
            allocation_events: broadcast::Sender::new(EVENT_BUFFER),
        }
    }

    /// The core. A panic while holding the lock leaves consistent enough
    /// state (the server is a plain data structure), so poisoning is ignored.
    pub(super) fn lock(&self) -> MutexGuard<'_, Core> {
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The server and the sockets its outputs name.
pub(super) struct Core {
    pub(super) server: TurnServer,
    pub(super) io: IoTable,
}

impl Core {
    /// Sends everything the server queued and carries out its events.
    pub(super) fn flush(&mut self, shared: &Arc<Shared>, now: Instant) {
        self.io.flush(&mut self.server, shared, now);
    }
}

struct RelaySocket {
    endpoint: UdpEndpoint,
    /// The reactor whose epoll set holds it.
    reactor: usize,
}

/// The send side of a TCP/TLS client's queue, bounded in frames by the
/// channel and in bytes by `queued` (relayed datagrams are up to 64 KiB, so
/// a frame count alone would let one client that stops reading pin tens of
/// MiB).
pub(super) struct StreamTx {
    pub(super) tx: mpsc::Sender<Bytes>,
    /// Bytes queued and not yet written; the writer takes them off.
    pub(super) queued: Arc<AtomicUsize>,
}

/// Bytes queued for one stream client before new frames are dropped.
pub(super) const STREAM_QUEUE_BYTES: usize = 1 << 20;

impl StreamTx {
    /// Queues a copy of `bytes`; false (dropped) when the client is that
    /// far behind.
    fn try_send(&self, bytes: &[u8]) -> bool {
        // Counted before it is queued, so the writer never takes off more
        // than was put on.
        let before = self.queued.fetch_add(bytes.len(), Ordering::Relaxed);
        if before + bytes.len() > STREAM_QUEUE_BYTES
            || self.tx.try_send(Bytes::copy_from_slice(bytes)).is_err()
        {
            self.queued.fetch_sub(bytes.len(), Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// Sockets by the names the server's outputs use.
pub(super) struct IoTable {
    /// Listener sockets sharing one address; any of them may send.
    udp: Vec<Arc<UdpEndpoint>>,
    /// Relay sockets by local address: the index of their slot. The keys
    /// are our own addresses, so a fast unkeyed hash is fine.
    relays: HashMap<SocketAddr, usize, foldhash::fast::RandomState>,
    /// Relay sockets by reactor token (minus `FIRST_RELAY_TOKEN`).
    slots: Vec<Option<RelaySocket>>,
    free_slots: Vec<usize>,
    next_reactor: usize,
    pub(super) streams: HashMap<FiveTuple, StreamTx>,
    /// The deadline the timer task sleeps until.
    pub(super) armed: Option<Instant>,
    /// Datagrams or frames dropped on full buffers.
    pub(super) send_failures: u64,
    train: Train,
    /// The port after an EVEN-PORT relay, bound along with it and held
    /// until the end of the flush, for the reservation the core asks for
    /// next (`bind_exact`).
    spare: Option<UdpEndpoint>,
}

/// A UDP socket as the server's outputs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UdpSocketName {
    /// The listener, sending from this server IP.
    Listener(IpAddr),
    /// The relay socket bound here.
    Relay(SocketAddr),
}

/// Consecutive datagrams from one socket to one destination, all of one
/// size but the last: what a single GSO `sendmsg` can carry.
#[derive(Debug, Default)]
pub(super) struct Train {
    name: Option<UdpSocketName>,
    to: Option<SocketAddr>,
    segment: usize,
    count: usize,
    max: usize,
    /// The last datagram was shorter than `segment`: nothing may follow.
    closed: bool,
    bytes: Vec<u8>,
}

/// GSO sends stay under the 64 KiB UDP limit.
const TRAIN_BYTES: usize = 60_000;

impl Train {
    fn extend(&mut self, name: UdpSocketName, to: SocketAddr, bytes: &[u8]) -> bool {
        let fits = self.name == Some(name)
            && self.to == Some(to)
            && !self.closed
            && self.count < self.max
            && !bytes.is_empty()
            && bytes.len() <= self.segment
            && self.bytes.len() + bytes.len() <= TRAIN_BYTES;
        if fits {
            self.bytes.extend_from_slice(bytes);
            self.count += 1;
            self.closed = bytes.len() < self.segment;
        }
        fits
    }

    fn start(&mut self, name: UdpSocketName, to: SocketAddr, bytes: &[u8], max: usize) {
        self.name = Some(name);
        self.to = Some(to);
        self.segment = bytes.len();
        self.count = 1;
        self.max = max.max(1);
        self.closed = false;
        self.bytes.clear();
        self.bytes.extend_from_slice(bytes);
    }
}

impl IoTable {
    pub(super) fn flush(&mut self, server: &mut TurnServer, shared: &Arc<Shared>, now: Instant) {
        loop {
            while let Some(t) = server.poll_transmit() {
                let udp_socket = match t.source {
                    Source::Client(ft) if ft.transport == Transport::Udp => {
                        Some(UdpSocketName::Listener(ft.server.ip()))
                    }
                    Source::Relay(local) => Some(UdpSocketName::Relay(local)),
                    Source::Client(_) => None,
                };
                if let Some(name) = udp_socket {
                    if !self.train.extend(name, t.to, t.bytes) {
                        self.send_train();
                        let max = self.max_segments(name);
                        self.train.start(name, t.to, t.bytes, max);
                    }
                    continue;
                }
                // A slow stream client loses relayed packets rather than
                // holding up everyone behind the lock.
                let Source::Client(ft) = t.source else {
                    continue;
                };
                let sent = self
                    .streams
                    .get(&ft)
                    .is_some_and(|stream| stream.try_send(t.bytes));
                if !sent {
                    self.send_failures += 1;
                }
            }
            self.send_train();
            let mut answered = false;
            while let Some(event) = server.poll_event() {
                match event {
                    Event::BindRelay {
                        id,
                        family,
                        near,
                        even_port,
                        exact,
                    } => {
                        let bound = match exact {
                            Some(local) => self.bind_exact(shared, local),
                            None => self.bind_relay(shared, family, near, even_port),
                        };
                        server.relay_bound(now, id, bound);
                        answered = true;
                    }
                    Event::ReleaseRelay { local } => self.release_relay(shared, local),
                    other => tracing::debug!(?other, "turn: unhandled event"),
                }
            }
            if !answered {
                break;
            }
        }
        while let Some(event) = server.poll_allocation_event() {
            announce(shared, event);
        }
        // The core asks for a reservation within the flush that bound its
        // even port; a spare nobody asked for (EVEN-PORT without R) closes.
        self.spare = None;
        let next = server.poll_timeout();
        if next != self.armed {
            let earlier = match (next, self.armed) {
                (Some(n), Some(a)) => n < a,
                (Some(_), None) => true,
                _ => false,
            };
            self.armed = next;
            if earlier {
                shared.timer.notify_one();
            }
        }
    }

    fn max_segments(&self, name: UdpSocketName) -> usize {
        match name {
            UdpSocketName::Listener(_) => self.udp.first().map_or(1, |ep| ep.max_gso_segments()),
            UdpSocketName::Relay(local) => {
                self.relay(&local).map_or(1, UdpEndpoint::max_gso_segments)
            }
        }
    }

    fn relay(&self, local: &SocketAddr) -> Option<&UdpEndpoint> {
        relay_socket(&self.relays, &self.slots, local)
    }

    /// The relay socket a reactor knows by `token`.
    pub(super) fn relay_by_token(&self, token: usize) -> Option<&UdpEndpoint> {
        let slot = token.checked_sub(FIRST_RELAY_TOKEN)?;
        self.slots.get(slot)?.as_ref().map(|r| &r.endpoint)
    }

    fn release_relay(&mut self, shared: &Shared, local: SocketAddr) {
        let Some(slot) = self.relays.remove(&local) else {
            return;
        };
        if let Some(relay) = self.slots.get_mut(slot).and_then(Option::take) {
            if let Some(reactor) = shared.reactors.get(relay.reactor) {
                reactor.deregister(&relay.endpoint);
            }
            self.free_slots.push(slot);
        }
    }

    /// Sends the pending train of datagrams, as one GSO send when it has several.
    fn send_train(&mut self) {
        let train = &mut self.train;
        let (Some(name), Some(to)) = (train.name.take(), train.to) else {
            return;
        };
        let segment_size = (train.count > 1).then_some(train.segment);
        let sent = match name {
            UdpSocketName::Listener(server_ip) => self.udp.first().is_some_and(|ep| {
                let src = ep.local.ip().is_unspecified().then_some(server_ip);
                ep.send(to, &train.bytes, src, segment_size)
            }),
            UdpSocketName::Relay(local) => relay_socket(&self.relays, &self.slots, &local)
                .is_some_and(|ep| ep.send(to, &train.bytes, None, segment_size)),
        };
        if !sent {
            self.send_failures += train.count as u64;
        }
        train.bytes.clear();
        train.count = 0;
    }

    /// Binds a relay at exactly `local` (a reservation's port).
    fn bind_exact(&mut self, shared: &Arc<Shared>, local: SocketAddr) -> Option<RelayAddress> {
        if self.relays.contains_key(&local) {
            return None;
        }
        let endpoint = match self.spare.take() {
            Some(spare) if spare.local == local => spare,
            _ => UdpEndpoint::relay(local).ok()?,
        };
        self.register_relay(shared, endpoint)
    }

    /// Hands a freshly bound relay socket to a reactor; `None` (the
    /// socket closes) when epoll refuses it.
    fn register_relay(&mut self, shared: &Shared, endpoint: UdpEndpoint) -> Option<RelayAddress> {
        let local = endpoint.local;
        let reactor = self.next_reactor % shared.reactors.len().max(1);
        self.next_reactor = self.next_reactor.wrapping_add(1);
        let handle = shared.reactors.get(reactor)?;
        let slot = self.free_slots.pop().unwrap_or(self.slots.len());
        if let Err(e) = handle.register(&endpoint, FIRST_RELAY_TOKEN + slot) {
            tracing::warn!(error = %e, %local, "turn: cannot watch a relay socket");
            if slot < self.slots.len() {
                self.free_slots.push(slot);
            }
            return None;
        }
        let relay = Some(RelaySocket { endpoint, reactor });
        match self.slots.get_mut(slot) {
            Some(free) => *free = relay,
            None => self.slots.push(relay),
        }
        self.relays.insert(local, slot);
        let public_ip = shared
            .plan
            .external_ip
            .filter(|ext| ext.is_ipv4() == local.is_ipv4())
            .unwrap_or(local.ip());
        Some(RelayAddress {
            local,
            public: SocketAddr::new(public_ip, local.port()),
        })
    }

    fn bind_relay(
        &mut self,
        shared: &Arc<Shared>,
        family: Family,
        near: SocketAddr,
        even_port: bool,
    ) -> Option<RelayAddress> {
        let plan = &shared.plan;
        let near_ip = Some(near.ip()).filter(|ip| !ip.is_unspecified());
        let ip = match family {
            Family::V4 => plan
                .relay_ip
                .filter(IpAddr::is_ipv4)
                .or(near_ip.filter(IpAddr::is_ipv4))?,
            Family::V6 => plan
                .relay_ip
                .filter(IpAddr::is_ipv6)
                .or(plan.relay_ipv6.map(IpAddr::V6))
                .or(near_ip.filter(IpAddr::is_ipv6))?,
        };
        let ports = plan.ports;
        let span = ports.len();
        let mut offset = rand::random_range(0..span);
        let step = if even_port { 2 } else { 1 };
        for _ in 0..BIND_ATTEMPTS.min(span) {
            let mut port = u32::from(ports.min) + offset % span;
            if even_port && port % 2 == 1 {
                port = if port < u32::from(ports.max) {
                    port + 1
                } else {
                    port - 1
                };
            }
            offset += step;
            let Ok(port) = u16::try_from(port) else {
                continue;
            };
            let local = SocketAddr::new(ip, port);
            if self.relays.contains_key(&local) {
                continue;
            }
            // An even port is only worth having with the next one free: an
            // RTP/RTCP client (EVEN-PORT with R) reserves it next, and
            // without it the Allocate succeeds with no RESERVATION-TOKEN,
            // which clients such as coturn's uclient answer with an
            // Allocate for token 0 (508). The next port is taken when a
            // later allocation outlived the even one, so check it here.
            let spare = if even_port {
                let next = SocketAddr::new(ip, port.saturating_add(1));
                if next.port() > ports.max || self.relays.contains_key(&next) {
                    continue;
                }
                match UdpEndpoint::relay(next) {
                    Ok(spare) => Some(spare),
                    Err(_) => continue,
                }
            } else {
                None
            };
            let Ok(endpoint) = UdpEndpoint::relay(local) else {
                continue;
            };
            self.spare = spare;
            return self.register_relay(shared, endpoint);
        }
        tracing::warn!(%ip, %ports, "turn: no free relay port");
        None
    }
}

/// The relay socket bound at `local`; a function of the two fields rather
/// than a method so that the send path can borrow the train alongside.
fn relay_socket<'a>(
    relays: &HashMap<SocketAddr, usize, foldhash::fast::RandomState>,
    slots: &'a [Option<RelaySocket>],
    local: &SocketAddr,
) -> Option<&'a UdpEndpoint> {
    let slot = *relays.get(local)?;
    slots.get(slot)?.as_ref().map(|r| &r.endpoint)
}

/// Fires the core's timers until shutdown.
pub(super) async fn timer_loop(shared: Arc<Shared>) {
    loop {
        let deadline = shared.lock().io.armed;
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shared.shutdown.cancelled() => {
                // Whatever the core still holds for the wire leaves now.
                let now = Instant::now();
                shared.lock().flush(&shared, now);
                return;
            }
            () = shared.timer.notified() => continue,
            () = sleep => {}
        }
        let now = Instant::now();
        let mut core = shared.lock();
        core.server.handle_timeout(now);
        core.flush(&shared, now);
    }
}

/// Seconds since the Unix epoch, for REST credential expiry.
pub(super) fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
