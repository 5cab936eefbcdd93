//! Webhooks (PROTOCOL.md §8): lifecycle events POSTed as signed JSON to the
//! operator's URLs, at least once, in order per room, never on the
//! signaling hot path.
//!
//! The pieces, from the hub's lock to the receiver:
//! - [`Webhooks::observe`] (under the hub's lock, so in the core's order)
//!   and [`Webhooks::emit`] (anything else, e.g. TURN allocations) only
//!   stamp the time and push onto the intake: no IO, no JSON, no wait. A
//!   full intake drops the event and counts it.
//! - One router task turns the core's events into [`HookEvent`]s (which
//!   needs a little state: which rooms this node has, which user a peer
//!   is), gives each an id, writes and signs its body once, and offers it
//!   to every URL.
//! - One task per URL ([`deliver`]) keeps a lane per room, sends the head of
//!   each lane (a bounded number at once) and retries it with backoff until
//!   it succeeds or `retry_secs` have passed; only then does the lane move
//!   on. A slow URL holds back nobody but itself.
//! - [`http`] opens each connection itself, to an address it has checked
//!   (the SSRF guard), and follows no redirect.

mod deliver;
mod http;
mod translate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use switchboard_signal::Event;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::http::{Endpoint, UrlError, is_public};

use crate::config::Config;

/// The header that carries the body's signature.
pub const SIGNATURE_HEADER: &str = "Switchboard-Signature";

/// Something a receiver hears about. `event` on the wire is the variant's
/// snake_case name; the fields are the variant's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum HookEvent {
    /// The first peer of a room on this node joined.
    RoomStarted {
        /// Room name.
        room: String,
    },
    /// The last peer of a room on this node left.
    RoomFinished {
        /// Room name.
        room: String,
    },
    /// A peer entered a room.
    PeerJoined {
        /// Room name.
        room: String,
        /// Peer id.
        peer: String,
        /// The peer's user id, when it has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        /// Peers in the room now, this one included.
        peers: usize,
    },
    /// A peer left a room.
    PeerLeft {
        /// Room name.
        room: String,
        /// Peer id.
        peer: String,
        /// The peer's user id, when it has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        /// Peers still in the room.
        peers: usize,
        /// `leave`, `closed`, `grace_expired`, ...
        reason: String,
    },
    /// A call started ringing.
    CallStarted {
        /// Call id.
        call: String,
        /// The caller's peer id.
        peer: String,
        /// The caller's user id, when it has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        /// The callee's user id.
        callee: String,
    },
    /// A call is over: unanswered (`declined`, `cancelled`, `no_answer`,
    /// `gone`), or answered and its room finished (`finished`).
    CallEnded {
        /// Call id.
        call: String,
        /// Why.
        reason: String,
        /// The call's room, when it was answered.
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<String>,
    },
    /// A TURN allocation was made.
    AllocationCreated {
        /// Allocation id (the one the admin API lists).
        allocation: String,
        /// TURN username.
        username: String,
        /// The client's address as the server sees it.
        client: SocketAddr,
        /// The relayed address.
        relayed: SocketAddr,
    },
    /// A TURN allocation ended.
    AllocationEnded {
        /// Allocation id.
        allocation: String,
        /// TURN username.
        username: String,
        /// The client's address.
        client: SocketAddr,
        /// `expired`, `deleted`, `revoked`, ...
        reason: String,
        /// Bytes relayed from peers to the client.
        bytes_in: u64,
        /// Bytes relayed from the client to peers.
        bytes_out: u64,
    },
}

impl HookEvent {
    /// Events with the same key are delivered strictly in order: a room's
    /// events, a call's, an allocation's.
    pub fn order_key(&self) -> String {
        match self {
            HookEvent::RoomStarted { room }
            | HookEvent::RoomFinished { room }
            | HookEvent::PeerJoined { room, .. }
            | HookEvent::PeerLeft { room, .. } => format!("room:{room}"),
            HookEvent::CallStarted { call, .. } | HookEvent::CallEnded { call, .. } => {
                format!("call:{call}")
            }
            HookEvent::AllocationCreated { allocation, .. }
            | HookEvent::AllocationEnded { allocation, .. } => format!("allocation:{allocation}"),
        }
    }
}

/// The JSON body: the envelope, then the event's own fields.
#[derive(Serialize)]
struct Body<'a> {
    id: &'a str,
    /// Unix time in milliseconds.
    time: u64,
    node: &'a str,
    #[serde(flatten)]
    event: &'a HookEvent,
}

/// One event, ready to send to any URL: written and signed once.
#[derive(Debug)]
pub(crate) struct Payload {
    /// Unique; the same on every retry and every URL.
    pub(crate) id: String,
    /// See [`HookEvent::order_key`].
    pub(crate) key: String,
    /// The `event` name, for logs.
    pub(crate) event: &'static str,
    pub(crate) body: String,
    /// `sha256=<hex>`.
    pub(crate) signature: String,
    /// When it happened: retries stop `retry_secs` after this.
    pub(crate) happened: Instant,
}

impl HookEvent {
    fn name(&self) -> &'static str {
        match self {
            HookEvent::RoomStarted { .. } => "room_started",
            HookEvent::RoomFinished { .. } => "room_finished",
            HookEvent::PeerJoined { .. } => "peer_joined",
            HookEvent::PeerLeft { .. } => "peer_left",
            HookEvent::CallStarted { .. } => "call_started",
            HookEvent::CallEnded { .. } => "call_ended",
            HookEvent::AllocationCreated { .. } => "allocation_created",
            HookEvent::AllocationEnded { .. } => "allocation_ended",
        }
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// What a hub or the TURN service hands over.
enum Intake {
    Signal(Event, Instant, SystemTime),
    Hook(HookEvent, Instant, SystemTime),
}

/// The handle every producer holds. Cloning is cheap.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Shared>,
}

struct Shared {
    intake: mpsc::UnboundedSender<Intake>,
    /// Items in `intake` not yet taken by the router.
    held: AtomicUsize,
    cap: usize,
    targets: usize,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("targets", &self.inner.targets)
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// A signaling core's event. Called under the hub's lock, so that
    /// events reach the router in the core's order: it only queues.
    pub fn observe(&self, event: &Event) {
        if translate::is_relevant(event) {
            self.push(Intake::Signal(
                event.clone(),
                Instant::now(),
                SystemTime::now(),
            ));
        }
    }

    /// Any other event, e.g. from the TURN service. Never blocks: a full
    /// queue drops the event and counts it. Events with the same
    /// [`HookEvent::order_key`] are delivered in the order emitted.
    pub fn emit(&self, event: HookEvent) {
        self.push(Intake::Hook(event, Instant::now(), SystemTime::now()));
    }

    fn push(&self, item: Intake) {
        let s = &self.inner;
        // Bounded even if the router stalls: reserve a slot or drop.
        let reserved = s
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < s.cap).then_some(n + 1)
            })
            .is_ok();
        if !reserved || s.intake.send(item).is_err() {
            if reserved {
                s.held.fetch_sub(1, Ordering::AcqRel);
            }
            for target in 0..s.targets {
                deliver::dropped(target);
            }
        }
    }
}

/// Settings of the delivery, from `[webhooks]`.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) retry: Duration,
    pub(crate) queue: usize,
    pub(crate) allow_private: bool,
    pub(crate) timeout: Duration,
}

/// The `node` of every event: `cluster.node_id`, else the host name.
fn node_name(cfg: &Config) -> String {
    if let Some(id) = &cfg.cluster.node_id {
        return id.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "switchboard".to_owned())
}

/// Starts the router and one delivery task per URL; `None` when no URL is
/// configured (then nothing runs and nothing is queued).
pub fn start(
    cfg: &Config,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<Option<Webhooks>> {
    let wh = &cfg.webhooks;
    if wh.urls.is_empty() {
        return Ok(None);
    }
    deliver::describe_metrics();
    let settings = Settings {
        retry: Duration::from_secs(wh.retry_secs),
        queue: wh.queue.max(1),
        allow_private: wh.allow_private,
        timeout: Duration::from_secs(wh.timeout_secs.max(1)),
    };
    let client = http::Client::new(settings.timeout, settings.allow_private)?;
    let mut targets = Vec::with_capacity(wh.urls.len());
    for (index, url) in wh.urls.iter().enumerate() {
        let endpoint = Endpoint::parse(url).map_err(|e| anyhow::anyhow!("webhooks.urls: {e}"))?;
        if !settings.allow_private
            && let Some(ip) = endpoint.literal_ip()
            && !is_public(ip)
        {
            tracing::warn!(
                target = index,
                %ip,
                "webhooks.urls[{index}] is a private address: every delivery to it will be \
                 refused unless webhooks.allow_private is set"
            );
        }
        targets.push(deliver::spawn(
            index,
            endpoint,
            client.clone(),
            settings.clone(),
            shutdown.clone(),
            tasks,
        ));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let hooks = Webhooks {
        inner: Arc::new(Shared {
            intake: tx,
            held: AtomicUsize::new(0),
            cap: settings.queue,
            targets: targets.len(),
        }),
    };
    let router = Router {
        rx,
        shared: hooks.inner.clone(),
        translate: translate::Translator::default(),
        node: node_name(cfg),
        secret: wh.secret.clone().unwrap_or_default().into_bytes(),
        targets,
    };
    tasks.spawn(router.run(shutdown));
    tracing::info!(urls = wh.urls.len(), "webhooks on");
    Ok(Some(hooks))
}

/// Turns intake into payloads and offers them to every URL.
struct Router {
    rx: mpsc::UnboundedReceiver<Intake>,
    shared: Arc<Shared>,
    translate: translate::Translator,
    node: String,
    secret: Vec<u8>,
    targets: Vec<deliver::Target>,
}

impl Router {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut out = Vec::new();
        loop {
            let item = tokio::select! {
                () = shutdown.cancelled() => return,
                item = self.rx.recv() => match item {
                    Some(item) => item,
                    None => return,
                },
            };
            self.shared.held.fetch_sub(1, Ordering::AcqRel);
            let (happened, wall) = match item {
                Intake::Signal(event, at, wall) => {
                    self.translate.signal(&event, &mut out);
                    (at, wall)
                }
                Intake::Hook(event, at, wall) => {
                    out.push(event);
                    (at, wall)
                }
            };
            for event in out.drain(..) {
                let payload = Arc::new(self.payload(&event, happened, wall));
                for target in &self.targets {
                    target.offer(payload.clone());
                }
            }
        }
    }

    fn payload(&self, event: &HookEvent, happened: Instant, wall: SystemTime) -> Payload {
        let id = format!("{:032x}", rand::random::<u128>());
        let time = wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let body = serde_json::to_string(&Body {
            id: &id,
            time,
            node: &self.node,
            event,
        })
        // Strings, numbers and addresses only: serializing cannot fail.
        .unwrap_or_else(|e| unreachable!("a webhook body serializes: {e}"));
        Payload {
            signature: sign(&self.secret, body.as_bytes()),
            key: event.order_key(),
            event: event.name(),
            id,
            body,
            happened,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently:
    /// `printf '%s' BODY | openssl dgst -sha256 -hmac 'It is a secret to everybody'`.
    #[test]
    fn the_signature_matches_openssl() {
        let body = r#"{"id":"00000000000000000000000000000001","event":"room_started","time":1700000000000,"node":"n1","room":"r"}"#;
        assert_eq!(
            sign(b"It is a secret to everybody", body.as_bytes()),
            "sha256=384f4057284ee0db060b6937813039eb6a8d61cba03f66148d96d27eb1d9c664"
        );
    }

    #[test]
    fn a_body_is_the_envelope_and_the_event_fields() {
        let event = HookEvent::PeerJoined {
            room: "r".into(),
            peer: "p".into(),
            user: None,
            peers: 2,
        };
        let body = serde_json::to_value(Body {
            id: "i",
            time: 5,
            node: "n",
            event: &event,
        })
        .expect("serializes");
        assert_eq!(
            body,
            serde_json::json!({"id":"i","time":5,"node":"n","event":"peer_joined","room":"r","peer":"p","peers":2})
        );
        assert_eq!(event.name(), "peer_joined");
        assert_eq!(event.order_key(), "room:r");
    }

    #[test]
    fn a_full_intake_drops_without_blocking() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let hooks = Webhooks {
            inner: Arc::new(Shared {
                intake: tx,
                held: AtomicUsize::new(0),
                cap: 2,
                targets: 0,
            }),
        };
        for n in 0..5 {
            hooks.emit(HookEvent::RoomStarted {
                room: n.to_string(),
            });
        }
        let mut got = 0;
        while rx.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, 2);
    }
}
