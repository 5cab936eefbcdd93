//! One simulated peer: connect, handshake, join, then send and receive
//! until the coordinator says stop.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::error::LoadError;
use crate::wire::{
    ENGINE_PONG, Encoder, Incoming, Protocol, SOCKET_CONNECT, classify, confirm, native_seq,
};

/// Where the run is; every peer task follows it through a watch channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Connecting and joining; nobody sends.
    Joining,
    /// Senders send.
    Sending,
    /// Senders stop; receivers keep counting what is still on the way.
    Draining,
    /// Close and report.
    Stop,
}

/// Counters every peer adds to, read by the coordinator while the run goes.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) ready: AtomicUsize,
    pub(crate) failed: AtomicUsize,
    pub(crate) sent: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) acks: AtomicU64,
    pub(crate) senders_done: AtomicUsize,
    pub(crate) last_delivery_ns: AtomicU64,
    pub(crate) progress: Notify,
}

/// What all peers of a run share.
#[derive(Debug)]
pub(crate) struct RunShared {
    pub(crate) protocol: Protocol,
    pub(crate) url: String,
    pub(crate) server: SocketAddr,
    /// A second server's URL and address (see `TrafficConfig::url2`).
    pub(crate) alt: Option<(String, SocketAddr)>,
    /// Spread connections over 127.0.0.1..=127.0.0.N so that tens of thousands
    /// of them do not run out of ephemeral ports on one source address.
    pub(crate) source_ips: u8,
    pub(crate) base: Instant,
    pub(crate) data_size: usize,
    pub(crate) with_id: bool,
    pub(crate) count_per_sender: Option<u64>,
    /// Time between two messages of one sender, when the rate is fixed.
    pub(crate) send_interval: Option<Duration>,
    /// Per-sender window: permits are in deliveries, returned by receivers.
    pub(crate) windows: Vec<Arc<Semaphore>>,
    pub(crate) deliveries_per_message: u32,
    pub(crate) connect_gate: Semaphore,
    pub(crate) handshake_timeout: Duration,
    pub(crate) counters: Counters,
}

/// A peer's part in the run.
#[derive(Debug, Clone)]
pub(crate) struct PeerPlan {
    pub(crate) index: usize,
    pub(crate) room: Option<String>,
    pub(crate) sender: bool,
    /// Connects to the second server, when there is one.
    pub(crate) alt: bool,
}

/// What a peer saw, merged by the coordinator.
#[derive(Debug, Default)]
pub(crate) struct PeerStats {
    pub(crate) sent: u64,
    pub(crate) delivered: u64,
    pub(crate) acks: u64,
    pub(crate) server_errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) latency_us: Option<Histogram<u64>>,
}

type Ws = WebSocketStream<TcpStream>;

/// Frames are small; a small read buffer lets 19,000 idle peers fit.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(16 * 1024)
}

/// Largest burst of frames written before one flush.
const MAX_BATCH: usize = 64;

/// A native peer confirms what it received (`ping` with `last_seq`) every
/// this many frames or [`CONFIRM_EVERY`], whichever comes first, like the
/// SDK: the server's replay buffer then holds only the unconfirmed rest.
const CONFIRM_FRAMES: u32 = 64;
const CONFIRM_EVERY: Duration = Duration::from_secs(10);

/// Runs one peer to the end. Errors before the peer is ready count it as
/// failed; after that they end the peer early and show in its stats.
pub(crate) async fn run_peer(
    plan: PeerPlan,
    shared: Arc<RunShared>,
    phase: watch::Receiver<Phase>,
) -> Result<PeerStats, LoadError> {
    let ws = {
        let _gate = shared.connect_gate.acquire().await;
        let setup =
            tokio::time::timeout(shared.handshake_timeout, connect_and_join(&plan, &shared));
        match setup.await {
            Ok(Ok(ws)) => ws,
            Ok(Err(err)) => {
                shared.counters.failed.fetch_add(1, Ordering::Relaxed);
                shared.counters.progress.notify_one();
                return Err(err);
            }
            Err(_) => {
                shared.counters.failed.fetch_add(1, Ordering::Relaxed);
                shared.counters.progress.notify_one();
                return Err(LoadError::Timeout("connecting and joining"));
            }
        }
    };
    shared.counters.ready.fetch_add(1, Ordering::Relaxed);
    shared.counters.progress.notify_one();
    let mut peer = Peer {
        encoder: Encoder::new(
            shared.protocol,
            plan.room.as_deref().unwrap_or(""),
            shared.data_size,
        ),
        plan,
        shared,
        ws,
        stats: PeerStats::default(),
        confirm: Confirm::default(),
    };
    peer.drive(phase).await;
    Ok(peer.stats)
}

async fn connect_and_join(plan: &PeerPlan, shared: &RunShared) -> Result<Ws, LoadError> {
    let peer = plan.index;
    let (url, server) = match &shared.alt {
        Some((url, server)) if plan.alt => (url.as_str(), *server),
        _ => (shared.url.as_str(), shared.server),
    };
    let socket = match server {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|source| tcp_error(peer, shared, source))?;
    if server.ip().is_loopback() && server.is_ipv4() && shared.source_ips > 1 {
        // usize % u8 fits in u8.
        let host = 1 + (peer % usize::from(shared.source_ips)) as u8;
        let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)), 0);
        socket
            .bind(local)
            .map_err(|source| tcp_error(peer, shared, source))?;
    }
    let stream = socket
        .connect(server)
        .await
        .map_err(|source| tcp_error(peer, shared, source))?;
    stream
        .set_nodelay(true)
        .map_err(|source| tcp_error(peer, shared, source))?;
    let (mut ws, _response) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(client_config()))
            .await
            .map_err(|source| ws_error(peer, source))?;
    let encoder = Encoder::new(shared.protocol, plan.room.as_deref().unwrap_or(""), 0);

    if shared.protocol == Protocol::Socketio {
        wait_for(&mut ws, peer, shared.protocol, Incoming::EngineOpen).await?;
        send_now(&mut ws, peer, SOCKET_CONNECT.to_owned()).await?;
        wait_for(&mut ws, peer, shared.protocol, Incoming::SocketConnected).await?;
    }
    if plan.room.is_some() {
        send_now(&mut ws, peer, encoder.join()).await?;
        wait_for(&mut ws, peer, shared.protocol, Incoming::Joined).await?;
    }
    Ok(ws)
}

fn tcp_error(peer: usize, shared: &RunShared, source: std::io::Error) -> LoadError {
    LoadError::Tcp {
        peer,
        addr: shared.server,
        source,
    }
}

fn ws_error(peer: usize, source: tungstenite::Error) -> LoadError {
    LoadError::Ws {
        peer,
        source: Box::new(source),
    }
}

async fn send_now(ws: &mut Ws, peer: usize, text: String) -> Result<(), LoadError> {
    ws.send(Message::text(text))
        .await
        .map_err(|source| ws_error(peer, source))
}

/// Reads until `wanted` arrives, answering Engine.IO pings on the way. The
/// caller bounds the time; the frame count is bounded here so a chatty
/// server cannot keep a handshake alive forever.
async fn wait_for(
    ws: &mut Ws,
    peer: usize,
    protocol: Protocol,
    wanted: Incoming,
) -> Result<(), LoadError> {
    const MAX_FRAMES: usize = 10_000;
    for _ in 0..MAX_FRAMES {
        let Some(frame) = ws.next().await else {
            return Err(LoadError::Closed { peer });
        };
        let text = match frame.map_err(|source| ws_error(peer, source))? {
            Message::Text(text) => text,
            Message::Close(_) => return Err(LoadError::Closed { peer }),
            _ => continue,
        };
        match classify(protocol, text.as_str()) {
            got if got == wanted => return Ok(()),
            Incoming::EnginePing => send_now(ws, peer, ENGINE_PONG.to_owned()).await?,
            Incoming::Full => {
                return Err(LoadError::Handshake {
                    peer,
                    reason: "room is full".to_owned(),
                });
            }
            Incoming::Error(reason) => return Err(LoadError::Handshake { peer, reason }),
            _ => {}
        }
    }
    Err(LoadError::Handshake {
        peer,
        reason: format!("no {wanted:?} within {MAX_FRAMES} frames"),
    })
}

struct Peer {
    plan: PeerPlan,
    shared: Arc<RunShared>,
    encoder: Encoder,
    ws: Ws,
    stats: PeerStats,
    confirm: Confirm,
}

/// What a native peer has received and not yet confirmed.
#[derive(Debug, Default)]
struct Confirm {
    last_seq: u64,
    unconfirmed: u32,
    /// When the oldest unconfirmed frame must be confirmed at the latest.
    due: Option<tokio::time::Instant>,
}

impl Peer {
    async fn drive(&mut self, mut phase_rx: watch::Receiver<Phase>) {
        let shared = Arc::clone(&self.shared);
        let window = if self.plan.sender {
            shared.windows.get(self.plan.index).cloned()
        } else {
            None
        };
        // Non-senders still need a future for the disabled select branch.
        let window = window.unwrap_or_else(|| Arc::new(Semaphore::new(0)));
        let permits = shared.deliveries_per_message;
        let mut phase = *phase_rx.borrow_and_update();
        let mut sending_done = false;
        let interval = shared.send_interval;
        // Senders start spread over one interval so a paced run does not
        // send in lockstep bursts.
        let offset = interval.map_or(Duration::ZERO, |every| {
            every.mul_f64((self.plan.index % 997) as f64 / 997.0)
        });
        let mut next_send: Option<tokio::time::Instant> = None;
        loop {
            let may_send = self.plan.sender && phase == Phase::Sending && !sending_done;
            if may_send && interval.is_some() && next_send.is_none() {
                next_send = Some(tokio::time::Instant::now() + offset);
            }
            let due = next_send;
            let grant = async {
                if let Some(at) = due {
                    tokio::time::sleep_until(at).await;
                }
                window.acquire_many(permits).await
            };
            let confirm_due = self.confirm.due;
            let confirm_timer = async {
                match confirm_due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = confirm_timer => {
                    if let Err(err) = self.send_confirm().await {
                        self.note_error(err.to_string());
                        break;
                    }
                }
                changed = phase_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    phase = *phase_rx.borrow_and_update();
                    if phase == Phase::Stop {
                        break;
                    }
                    if phase != Phase::Sending && self.plan.sender && !sending_done {
                        sending_done = true;
                        self.sender_finished();
                    }
                }
                frame = self.ws.next() => {
                    match frame {
                        Some(Ok(Message::Text(text))) => {
                            if let Err(err) = self.on_text(text.as_str()).await {
                                self.note_error(err.to_string());
                                break;
                            }
                        }
                        Some(Ok(Message::Close(_))) | None => {
                            self.note_error(LoadError::Closed { peer: self.plan.index }.to_string());
                            break;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(err)) => {
                            self.note_error(ws_error(self.plan.index, err).to_string());
                            break;
                        }
                    }
                }
                permit = grant, if may_send => {
                    let Ok(permit) = permit else { break };
                    permit.forget();
                    if let (Some(every), Some(at)) = (interval, next_send.as_mut()) {
                        // Keep the schedule, but do not burst to catch up
                        // after the window held the sender back.
                        let now = tokio::time::Instant::now();
                        *at = (*at + every).max(now.checked_sub(every).unwrap_or(now));
                    }
                    match self.send_burst(&window, permits).await {
                        Ok(true) => {}
                        Ok(false) => {
                            sending_done = true;
                            self.sender_finished();
                        }
                        Err(err) => {
                            self.note_error(err.to_string());
                            break;
                        }
                    }
                }
            }
        }
        if self.plan.sender && !sending_done {
            self.sender_finished();
        }
        // Close code 1000: the peer is leaving for good, so the server need
        // not keep its session for a resume. Bounded, the server may be gone.
        let goodbye = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ =
            tokio::time::timeout(Duration::from_millis(500), self.ws.close(Some(goodbye))).await;
    }

    fn sender_finished(&self) {
        self.shared
            .counters
            .senders_done
            .fetch_add(1, Ordering::Relaxed);
        self.shared.counters.progress.notify_one();
    }

    /// Sends the message already paid for, then as many more as the window
    /// grants without waiting, then flushes once. Returns whether the sender
    /// has more to send.
    async fn send_burst(&mut self, window: &Semaphore, permits: u32) -> Result<bool, LoadError> {
        let limit = self.shared.count_per_sender.unwrap_or(u64::MAX);
        let max_batch = if self.shared.send_interval.is_some() {
            1
        } else {
            MAX_BATCH
        };
        let mut batch = 0;
        loop {
            let now_ns = nanos_since(self.shared.base);
            let id = self.shared.with_id.then_some(self.stats.sent);
            let frame = self.encoder.message(now_ns, self.plan.index, id);
            self.ws
                .feed(Message::text(frame))
                .await
                .map_err(|source| ws_error(self.plan.index, source))?;
            self.stats.sent += 1;
            self.shared.counters.sent.fetch_add(1, Ordering::Relaxed);
            batch += 1;
            if self.stats.sent >= limit || batch >= max_batch {
                break;
            }
            match window.try_acquire_many(permits) {
                Ok(permit) => permit.forget(),
                Err(_) => break,
            }
        }
        self.ws
            .flush()
            .await
            .map_err(|source| ws_error(self.plan.index, source))?;
        Ok(self.stats.sent < limit)
    }

    /// Counts a native frame towards the next confirmation.
    async fn count_frame(&mut self, text: &str) -> Result<(), LoadError> {
        if self.shared.protocol != Protocol::Native {
            return Ok(());
        }
        let Some(seq) = native_seq(text) else {
            return Ok(());
        };
        self.confirm.last_seq = seq;
        self.confirm.unconfirmed += 1;
        if self.confirm.unconfirmed >= CONFIRM_FRAMES {
            self.send_confirm().await
        } else {
            self.confirm
                .due
                .get_or_insert_with(|| tokio::time::Instant::now() + CONFIRM_EVERY);
            Ok(())
        }
    }

    async fn send_confirm(&mut self) -> Result<(), LoadError> {
        self.confirm.unconfirmed = 0;
        self.confirm.due = None;
        send_now(
            &mut self.ws,
            self.plan.index,
            confirm(self.confirm.last_seq),
        )
        .await
    }

    async fn on_text(&mut self, text: &str) -> Result<(), LoadError> {
        self.count_frame(text).await?;
        match classify(self.shared.protocol, text) {
            Incoming::Delivery { sent_at_ns, sender } => {
                let now_ns = nanos_since(self.shared.base);
                let latency_us = now_ns.saturating_sub(sent_at_ns) / 1000;
                let histogram = self.stats.latency_us.get_or_insert_with(new_histogram);
                histogram.saturating_record(latency_us.max(1));
                self.stats.delivered += 1;
                let counters = &self.shared.counters;
                counters.delivered.fetch_add(1, Ordering::Relaxed);
                counters
                    .last_delivery_ns
                    .fetch_max(now_ns, Ordering::Relaxed);
                if let Some(window) = self.shared.windows.get(sender) {
                    window.add_permits(1);
                }
            }
            Incoming::Ack => {
                self.stats.acks += 1;
                self.shared.counters.acks.fetch_add(1, Ordering::Relaxed);
            }
            Incoming::EnginePing => {
                send_now(&mut self.ws, self.plan.index, ENGINE_PONG.to_owned()).await?;
            }
            Incoming::Error(reason) => self.note_error(reason),
            _ => {}
        }
        Ok(())
    }

    fn note_error(&mut self, reason: String) {
        self.stats.server_errors += 1;
        if self.stats.first_error.is_none() {
            self.stats.first_error = Some(reason);
        }
    }
}

/// Latency histogram in microseconds, up to one minute, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds are valid")
}

pub(crate) fn nanos_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}
