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

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use switchboard_signal::Event;
use tokio::sync::{mpsc, watch};
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

    /// The `event` name on the wire.
    pub fn name(&self) -> &'static str {
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
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// What a hub or the TURN service hands over.
enum Intake {
    Signal(Event, Instant, SystemTime),
    Hook(HookEvent, Instant, SystemTime),
    /// New settings, in line with the events: those pushed before it are
    /// sent with the old secret, those after with the new one.
    Reconfigure(Box<Plan>),
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
    /// `webhooks.queue`.
    cap: AtomicUsize,
    /// URLs configured: 0 means off, and nothing is queued.
    targets: AtomicUsize,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("targets", &self.inner.targets.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// A signaling core's event. Called under the hub's lock, so that
    /// events reach the router in the core's order: it only queues.
    pub fn observe(&self, event: &Event) {
        if self.is_on() && translate::is_relevant(event) {
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
        if self.is_on() {
            self.push(Intake::Hook(event, Instant::now(), SystemTime::now()));
        }
    }

    /// Whether any URL is configured.
    pub fn is_on(&self) -> bool {
        self.inner.targets.load(Ordering::Relaxed) > 0
    }

    /// Applies a new `[webhooks]` (and `cluster.node_id`), e.g. on reload.
    /// A URL that stays at the same place in `urls` keeps its queue and its
    /// lanes; the new timeout, retry span and address rule apply from the
    /// next attempt, the new secret from the next event. A URL removed or
    /// replaced is dropped with what it held. Refused, changing nothing,
    /// when the section does not validate.
    pub fn reconfigure(&self, cfg: &Config) -> anyhow::Result<()> {
        let plan = Plan::new(cfg)?;
        let s = &self.inner;
        s.cap.store(plan.queue, Ordering::Relaxed);
        s.targets.store(plan.urls.len(), Ordering::Relaxed);
        // Past the cap: a reload is never dropped.
        s.held.fetch_add(1, Ordering::AcqRel);
        if s.intake.send(Intake::Reconfigure(Box::new(plan))).is_err() {
            s.held.fetch_sub(1, Ordering::AcqRel);
        }
        Ok(())
    }

    fn push(&self, item: Intake) {
        let s = &self.inner;
        let cap = s.cap.load(Ordering::Relaxed);
        // Bounded even if the router stalls: reserve a slot or drop.
        let reserved = s
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok();
        if !reserved || s.intake.send(item).is_err() {
            if reserved {
                s.held.fetch_sub(1, Ordering::AcqRel);
            }
            for target in 0..s.targets.load(Ordering::Relaxed) {
                deliver::dropped(target);
            }
        }
    }
}

/// How attempts are made, shared by every URL's task; replaced whole on a
/// reload.
#[derive(Clone)]
pub(crate) struct Live {
    pub(crate) client: http::Client,
    /// An event is retried until this long after it happened.
    pub(crate) retry: Duration,
}

/// A checked `[webhooks]`, ready to apply.
struct Plan {
    urls: Vec<(String, Endpoint)>,
    live: Live,
    queue: usize,
    node: String,
    secret: Vec<u8>,
}

impl Plan {
    fn new(cfg: &Config) -> anyhow::Result<Self> {
        let wh = &cfg.webhooks;
        wh.validate()?;
        let allow_private = wh.allow_private;
        let mut urls = Vec::with_capacity(wh.urls.len());
        for (index, url) in wh.urls.iter().enumerate() {
            let endpoint =
                Endpoint::parse(url).map_err(|e| anyhow::anyhow!("webhooks.urls: {e}"))?;
            if !allow_private
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
            urls.push((url.clone(), endpoint));
        }
        let client = if urls.is_empty() {
            // Off: no need to read the system's certificates.
            http::Client::without_roots(Duration::from_secs(1), false)?
        } else {
            http::Client::new(Duration::from_secs(wh.timeout_secs.max(1)), allow_private)?
        };
        Ok(Plan {
            urls,
            live: Live {
                client,
                retry: Duration::from_secs(wh.retry_secs),
            },
            queue: wh.queue.max(1),
            node: node_name(cfg),
            secret: wh.secret.clone().unwrap_or_default().into_bytes(),
        })
    }
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

/// Starts the router and one delivery task per URL. With no URL, the
/// handle is off (nothing is queued) until a [`Webhooks::reconfigure`]
/// gives it some.
pub fn start(
    cfg: &Config,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<Webhooks> {
    let plan = Plan::new(cfg)?;
    deliver::describe_metrics();
    let (tx, rx) = mpsc::unbounded_channel();
    let hooks = Webhooks {
        inner: Arc::new(Shared {
            intake: tx,
            held: AtomicUsize::new(0),
            cap: AtomicUsize::new(plan.queue),
            targets: AtomicUsize::new(0),
        }),
    };
    let (live, _) = watch::channel(plan.live.clone());
    let mut router = Router {
        rx,
        shared: hooks.inner.clone(),
        translate: translate::Translator::default(),
        node: String::new(),
        secret: Vec::new(),
        targets: Vec::new(),
        live,
        shutdown: shutdown.clone(),
        tasks: tasks.clone(),
    };
    let urls = plan.urls.len();
    router.apply(plan);
    hooks.inner.targets.store(urls, Ordering::Relaxed);
    tasks.spawn(router.run(shutdown));
    if urls > 0 {
        tracing::info!(urls, "webhooks on");
    }
    Ok(hooks)
}

/// Turns intake into payloads and offers them to every URL.
struct Router {
    rx: mpsc::UnboundedReceiver<Intake>,
    shared: Arc<Shared>,
    translate: translate::Translator,
    node: String,
    secret: Vec<u8>,
    targets: Vec<deliver::Target>,
    live: watch::Sender<Live>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
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
                Intake::Reconfigure(plan) => {
                    self.apply(*plan);
                    continue;
                }
            };
            if self.targets.is_empty() {
                // Pushed just before a reload turned webhooks off.
                out.clear();
                continue;
            }
            for event in out.drain(..) {
                let payload = Arc::new(self.payload(&event, happened, wall));
                for target in &self.targets {
                    target.offer(payload.clone());
                }
            }
        }
    }

    /// Keeps each URL that is at the same index as before, starts the new
    /// ones, lets go of the rest (their tasks end with what they held).
    fn apply(&mut self, plan: Plan) {
        self.node = plan.node;
        self.secret = plan.secret;
        self.live.send_replace(plan.live);
        let mut old: Vec<Option<deliver::Target>> = std::mem::take(&mut self.targets)
            .into_iter()
            .map(Some)
            .collect();
        for (index, (url, endpoint)) in plan.urls.into_iter().enumerate() {
            let kept = old
                .get_mut(index)
                .and_then(|slot| slot.take_if(|t| t.url() == url));
            let target = match kept {
                Some(mut t) => {
                    t.set_cap(plan.queue);
                    t
                }
                None => deliver::spawn(
                    index,
                    url,
                    endpoint,
                    self.live.subscribe(),
                    plan.queue,
                    self.shutdown.clone(),
                    &self.tasks,
                ),
            };
            self.targets.push(target);
        }
        for index in self.targets.len()..old.len() {
            deliver::forget(index);
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
    fn every_name_is_the_one_on_the_wire() {
        let addr: SocketAddr = ([192, 0, 2, 1], 3478).into();
        let s = || "x".to_owned();
        let all = [
            HookEvent::RoomStarted { room: s() },
            HookEvent::RoomFinished { room: s() },
            HookEvent::PeerJoined {
                room: s(),
                peer: s(),
                user: None,
                peers: 1,
            },
            HookEvent::PeerLeft {
                room: s(),
                peer: s(),
                user: None,
                peers: 0,
                reason: s(),
            },
            HookEvent::CallStarted {
                call: s(),
                peer: s(),
                user: None,
                callee: s(),
            },
            HookEvent::CallEnded {
                call: s(),
                reason: s(),
                room: None,
            },
            HookEvent::AllocationCreated {
                allocation: s(),
                username: s(),
                client: addr,
                relayed: addr,
            },
            HookEvent::AllocationEnded {
                allocation: s(),
                username: s(),
                client: addr,
                reason: s(),
                bytes_in: 1,
                bytes_out: 2,
            },
        ];
        for event in all {
            let v = serde_json::to_value(&event).expect("serializes");
            assert_eq!(v["event"], event.name());
        }
        let v = serde_json::to_value(HookEvent::AllocationCreated {
            allocation: s(),
            username: s(),
            client: addr,
            relayed: addr,
        })
        .expect("serializes");
        assert_eq!(v["client"], "192.0.2.1:3478");
    }

    /// A receiver that answers 204 to everything and passes on each
    /// request's signature and body.
    async fn receiver() -> (String, mpsc::UnboundedReceiver<(String, String)>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/in", listener.local_addr().expect("addr"));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Connection: close and a small body: read to the end of it.
                let request = loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        break None;
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length: ")
                                    .map(str::to_owned)
                            })
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if body.len() >= len {
                            let sig = head
                                .lines()
                                .find_map(|l| l.strip_prefix("switchboard-signature: "))
                                .unwrap_or("")
                                .to_owned();
                            break Some((sig, body.to_owned()));
                        }
                    }
                    if n == 0 {
                        break None;
                    }
                };
                let _ = sock.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
                if let Some(r) = request {
                    let _ = tx.send(r);
                }
            }
        });
        (url, rx)
    }

    fn config(urls: &[&str], secret: &str) -> Config {
        let mut cfg = Config::default();
        cfg.webhooks.urls = urls.iter().map(|u| (*u).to_owned()).collect();
        cfg.webhooks.secret = Some(secret.to_owned());
        cfg.webhooks.allow_private = true;
        cfg.cluster.node_id = Some("n1".to_owned());
        cfg
    }

    /// The next request: its value, and whether its signature is right
    /// under `secret`.
    async fn recv(
        rx: &mut mpsc::UnboundedReceiver<(String, String)>,
        secret: &str,
    ) -> serde_json::Value {
        let (sig, body) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a request within 10 s")
            .expect("the receiver runs");
        assert_eq!(sig, sign(secret.as_bytes(), body.as_bytes()), "{body}");
        serde_json::from_str(&body).expect("json")
    }

    #[tokio::test]
    async fn a_reload_turns_webhooks_on_moves_them_and_turns_them_off() {
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let hooks = start(&Config::default(), shutdown.clone(), &tasks).expect("starts");
        assert!(!hooks.is_on());
        let room = |r: &str| HookEvent::RoomStarted { room: r.to_owned() };
        hooks.emit(room("before"));

        let (url_a, mut a) = receiver().await;
        let (url_b, mut b) = receiver().await;
        hooks
            .reconfigure(&config(&[&url_a], "0123456789abcdef-one"))
            .expect("valid");
        assert!(hooks.is_on());
        hooks.emit(room("one"));
        let v = recv(&mut a, "0123456789abcdef-one").await;
        assert_eq!(v["room"], "one", "nothing from before it was on");
        assert_eq!(v["node"], "n1");

        assert!(
            hooks
                .reconfigure(&config(&["ftp://nope/"], "0123456789abcdef-two"))
                .is_err(),
            "a bad section is refused"
        );
        hooks
            .reconfigure(&config(&[&url_b], "0123456789abcdef-two"))
            .expect("valid");
        hooks.emit(room("two"));
        let v = recv(&mut b, "0123456789abcdef-two").await;
        assert_eq!(v["room"], "two");

        hooks.reconfigure(&Config::default()).expect("valid");
        assert!(!hooks.is_on());
        hooks.emit(room("three"));
        shutdown.cancel();
        tasks.close();
        tokio::time::timeout(Duration::from_secs(10), tasks.wait())
            .await
            .expect("every task ends at shutdown");
        assert!(
            a.try_recv().is_err() && b.try_recv().is_err(),
            "nothing more"
        );
    }

    #[test]
    fn a_full_intake_drops_without_blocking() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let hooks = Webhooks {
            inner: Arc::new(Shared {
                intake: tx,
                held: AtomicUsize::new(0),
                cap: AtomicUsize::new(2),
                targets: AtomicUsize::new(1),
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
