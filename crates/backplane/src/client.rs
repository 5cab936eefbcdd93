//! The async client: a writer connection that runs the node's commands in
//! order, a subscriber connection on the node's channel, and a ticker for
//! heartbeats and sweeps.
//!
//! # Why commands carry the link events their sender had seen
//! The node counts the answers to its `Persist`s and `Resumed`s to match
//! them with the commands, and starts counting afresh at every
//! `backplane_up`. An answer from before a down/up must never be taken for
//! one after it, so every command is tagged with how many link events
//! ([`Event::Up`], [`Event::Down`]) the caller had read through [`Events`]
//! when it sent it, and runs only if that is every link event the client
//! has sent and the last was `Up`. The answers go out under the lock that
//! orders the link events, and only if no link event came in between: so
//! the caller reads an [`Event::Applied`] in the same up period as it sent
//! its command.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Client, Cmd};
use switchboard_signal::cluster::store::StoreConfig;
use switchboard_signal::cluster::{Command, NodeId, Push};
use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::codec::{self, Args as _, Encoded};

/// The Lua store, with the core's constant filled in.
fn script_source() -> String {
    include_str!("store.lua").replace(
        "__MEMBER_ENTRY_BYTES__",
        &switchboard_signal::MEMBER_ENTRY_BYTES.to_string(),
    )
}

/// Commands sent in one script call at most: bounds the time one round
/// trip holds the queue, and Redis.
const BATCH: usize = 512;
/// Bytes of arguments one script call stops taking commands at: keeps one
/// call (a single Redis command) small.
const BATCH_BYTES: usize = 1 << 20;
/// A round trip of at least this many commands (a busy node) that leaves
/// some waiting, but fewer than `ROUND_MIN`...
const ROUND_BUSY: usize = 4;
const ROUND_MIN: usize = 64;
/// ...lets the next one start no sooner than this after it started.
const ROUND_GAP: Duration = Duration::from_millis(1);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// How the client runs. [`Settings::new`] gives the defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Settings {
    /// Key and channel prefix (default `sb`): nodes sharing a prefix are one
    /// cluster.
    pub prefix: String,
    /// Replay bounds and node timeout, the same on every node.
    pub store: StoreConfig,
    /// Send [`Command::Heartbeat`] every third of `node_timeout` (turn off
    /// if the core emits its own).
    pub heartbeat: bool,
    /// Run [`RedisBackplane::sweep`] every third of `node_timeout`.
    pub sweep: bool,
    /// How long a connect, a pipeline or a ping may take before the link
    /// counts as down.
    pub response_timeout: Duration,
    /// Capacity of the event channel handed to the caller.
    pub events: usize,
    /// Capacity of the command queue; a command that finds it full is
    /// dropped and the link goes down and up (the core resyncs).
    pub queue: usize,
    /// For `rediss://`: the PEM of the CA that signed Redis' certificate,
    /// trusted instead of the system's roots.
    #[cfg(feature = "tls")]
    pub tls_root_ca: Option<Vec<u8>>,
}

impl Settings {
    /// Defaults around `store`: prefix `sb`, heartbeats and sweeps on, 5 s
    /// timeouts, 4096 events, 65536 queued commands.
    #[must_use]
    pub fn new(store: StoreConfig) -> Self {
        Settings {
            prefix: "sb".to_owned(),
            store,
            heartbeat: true,
            sweep: true,
            response_timeout: Duration::from_secs(5),
            events: 4096,
            queue: 65536,
            #[cfg(feature = "tls")]
            tls_root_ca: None,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::new(StoreConfig::default())
    }
}

/// Why the backplane failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis refused or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer within `response_timeout`.
    #[error("redis did not answer in time")]
    Timeout,
    /// The subscription on the node channel ended.
    #[error("the subscription was cut")]
    Disconnected,
    /// The command queue was full: a command was dropped.
    #[error("the command queue is full")]
    QueueFull,
    /// The command is of a kind this version cannot carry.
    #[error(transparent)]
    Unsupported(#[from] codec::Unsupported),
    /// Commands were dropped while the link was down.
    #[error("the backplane was down")]
    Down,
    /// The client's tasks are gone.
    #[error("the backplane client is closed")]
    Closed,
    /// Bad settings.
    #[error("invalid settings: {0}")]
    Settings(&'static str),
    /// Redis answered a pipeline with something the scripts never return.
    #[error("unexpected reply from Redis")]
    BadReply,
}

/// What the client hands the caller, through [`Events`].
///
/// The first event is always [`Event::Up`]; then `Down` and `Up` alternate.
/// Pushes come in the order the store produced them, and `Applied`
/// answers in the order their commands were sent; the two streams are
/// read off two connections, so a push and an answer may come in either
/// order.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A push from the store for this node (call `handle_push`).
    Push(Push),
    /// Whether the store applied the oldest unanswered
    /// [`Command::Persist`] or [`Command::Resumed`] sent since the last
    /// [`Event::Up`] (call `persisted`). Every one that is not dropped by
    /// a [`Event::Down`] gets exactly one, in order.
    Applied(bool),
    /// The link to Redis failed: commands are dropped, pushes may be lost
    /// and unanswered commands get no answer until [`Event::Up`] (call
    /// `backplane_down` on the core).
    Down(Error),
    /// The link is up, at connect and after a [`Event::Down`] (call
    /// `backplane_up`: the core resyncs). Commands sent before the caller
    /// read it are dropped.
    Up,
}

/// The client's events, in order. Read them here (not through another
/// channel): the client learns from it which link events the caller has
/// seen (see [`RedisBackplane::send`]). Both methods are cancel-safe.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
    seen: Arc<AtomicU64>,
}

impl Events {
    /// The next event; `None` once the client is dropped.
    pub async fn recv(&mut self) -> Option<Event> {
        let ev = self.rx.recv().await;
        self.note(ev.as_ref());
        ev
    }

    /// The next event if one is ready.
    ///
    /// # Errors
    /// Empty, or disconnected once the client is dropped.
    pub fn try_recv(&mut self) -> Result<Event, mpsc::error::TryRecvError> {
        let ev = self.rx.try_recv();
        self.note(ev.as_ref().ok());
        ev
    }

    fn note(&self, ev: Option<&Event>) {
        if matches!(ev, Some(Event::Up | Event::Down(_))) {
            self.seen.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A command as it goes to Redis.
#[derive(Clone)]
enum Call {
    /// An op of the store's script; `frames` when it reads or rewrites a
    /// session's kept frames, so that an `Append` sent after it must run
    /// after it.
    Script { args: Encoded, frames: bool },
    /// A [`Command::Append`]: a plain `RPUSH` to the epoch's list, and an
    /// `LTRIM` to the newest `keep`.
    Append {
        key: String,
        entry: Vec<u8>,
        keep: Option<u32>,
    },
    /// A [`Command::Forward`]: a plain `PUBLISH` of the push.
    Publish { channel: String, payload: Vec<u8> },
}

impl Call {
    /// Its size on the wire, about.
    fn bytes(&self) -> usize {
        match self {
            Call::Script { args, .. } => args.bytes(),
            Call::Append { key, entry, .. } => key.len() + entry.len() + 48,
            Call::Publish { channel, payload } => channel.len() + payload.len() + 32,
        }
    }
}

enum Op {
    Cmd {
        call: Call,
        /// The link events the caller had read when it sent it; `None` for
        /// the ticker's, which run whenever the link is up.
        tag: Option<u64>,
        /// Whether the caller waits for [`Event::Applied`].
        answered: bool,
    },
    Flush(oneshot::Sender<Result<(), Error>>),
}

#[derive(Clone, Copy)]
enum Side {
    Reader,
    Writer,
}

#[derive(Default)]
struct LinkState {
    reader: bool,
    writer: bool,
    reported: bool,
}

/// Whether both connections are up, and what the caller was last told.
struct Link {
    /// Held while a link event or an answer goes into the channel, so that
    /// the check of `emitted` and the send are one step.
    state: Mutex<LinkState>,
    /// Link events sent so far: odd while the caller was last told `Up`.
    emitted: AtomicU64,
    overflow: AtomicBool,
    events: mpsc::Sender<Event>,
    /// Wakes a side whose connection must prove itself (see `down`).
    recheck_reader: Notify,
    recheck_writer: Notify,
}

impl Link {
    async fn down(&self, side: Side, err: Error) {
        let mut s = self.state.lock().await;
        match side {
            Side::Reader => s.reader = false,
            Side::Writer => s.writer = false,
        }
        if s.reported {
            s.reported = false;
            // Whatever cut one connection (Redis killed and restarted) may
            // have cut the other without its noticing yet: it answers a
            // PING before the next `Up`, not after.
            s.reader = false;
            s.writer = false;
            match side {
                Side::Reader => self.recheck_writer.notify_one(),
                Side::Writer => self.recheck_reader.notify_one(),
            }
            self.emitted.fetch_add(1, Ordering::SeqCst);
            tracing::warn!(error = %err, "backplane down");
            let _ = self.events.send(Event::Down(err)).await;
        } else {
            tracing::debug!(error = %err, "backplane still down");
        }
    }

    async fn is_confirmed(&self, side: Side) -> bool {
        let s = self.state.lock().await;
        match side {
            Side::Reader => s.reader,
            Side::Writer => s.writer,
        }
    }

    async fn up(&self, side: Side) {
        let mut s = self.state.lock().await;
        match side {
            Side::Reader => s.reader = true,
            Side::Writer => s.writer = true,
        }
        if s.reader && s.writer && !s.reported {
            s.reported = true;
            self.emitted.fetch_add(1, Ordering::SeqCst);
            tracing::info!("backplane up");
            let _ = self.events.send(Event::Up).await;
        }
    }

    /// Hands the caller the answers of commands that ran while `emitted`
    /// was `at`; none if a link event came since (the caller dropped its
    /// count of unanswered commands then).
    async fn answers(&self, at: u64, answers: Vec<bool>) {
        if answers.is_empty() {
            return;
        }
        let _s = self.state.lock().await;
        if self.emitted.load(Ordering::SeqCst) != at {
            tracing::debug!(n = answers.len(), "answers from before a down dropped");
            return;
        }
        for ok in answers {
            let _ = self.events.send(Event::Applied(ok)).await;
        }
    }
}

/// One node's client of the Redis backplane. Dropping it stops its tasks
/// (call [`RedisBackplane::flush`] first to have every command applied).
pub struct RedisBackplane {
    node: NodeId,
    prefix: String,
    ops: mpsc::Sender<Op>,
    link: Arc<Link>,
    /// Link events the caller has read ([`Events`]).
    seen: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("node", &self.node)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisBackplane {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn with_timeout<T>(
    limit: Duration,
    f: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, Error> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(Error::Timeout),
    }
}

async fn open_writer(
    client: &Client,
    script: &str,
    limit: Duration,
) -> Result<MultiplexedConnection, Error> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(limit)
        .set_response_timeout(limit);
    let mut conn = with_timeout(
        limit,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await?;
    // After a Redis restart the script cache is empty: load it on every
    // connect, before the first EVALSHA.
    let _: String = with_timeout(
        limit,
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(script)
            .query_async(&mut conn),
    )
    .await?;
    Ok(conn)
}

async fn open_reader(
    client: &Client,
    channel: &str,
    limit: Duration,
) -> Result<(PubSubSink, PubSubStream), Error> {
    let pubsub = with_timeout(limit, client.get_async_pubsub()).await?;
    let (mut sink, stream) = pubsub.split();
    with_timeout(limit, sink.subscribe(channel)).await?;
    Ok((sink, stream))
}

#[cfg(feature = "tls")]
fn open_client(url: &str, settings: &Settings) -> Result<Client, Error> {
    // rustls needs a process-wide provider when more than one is compiled
    // in; ring is the workspace's. Already installed (by us or the shell)
    // is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(match &settings.tls_root_ca {
        Some(ca) => Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            },
        )?,
        None => Client::open(url)?,
    })
}

#[cfg(not(feature = "tls"))]
fn open_client(url: &str, _settings: &Settings) -> Result<Client, Error> {
    Ok(Client::open(url)?)
}

fn backoff(b: &mut Duration) -> Duration {
    let now = *b;
    *b = (*b * 2).min(BACKOFF_MAX);
    now
}

impl RedisBackplane {
    /// Connects node `node` to the Redis at `url` (`redis://[:password@]host[:port][/db]`,
    /// or `rediss://` with the `tls` feature). Returns once both connections
    /// are up, with [`Event::Up`] waiting in [`Events`]; from then on
    /// failures are [`Event::Down`]s, and the client reconnects by itself.
    ///
    /// # Errors
    /// A bad URL or settings, or Redis unreachable at start.
    pub async fn connect(
        url: &str,
        node: NodeId,
        settings: Settings,
    ) -> Result<(RedisBackplane, Events), Error> {
        if settings.prefix.is_empty() {
            return Err(Error::Settings("empty prefix"));
        }
        if node.0.is_empty() {
            return Err(Error::Settings("empty node id"));
        }
        if settings.store.node_timeout < Duration::from_millis(3) {
            return Err(Error::Settings("node_timeout below 3 ms"));
        }
        if settings.events == 0 || settings.queue == 0 {
            return Err(Error::Settings("zero capacity"));
        }
        let client = open_client(url, &settings)?;
        let script = script_source();
        let sha = redis::Script::new(&script).get_hash().to_owned();
        let limit = settings.response_timeout;
        let channel = format!("{}:node:{}", settings.prefix, node);
        let conn = open_writer(&client, &script, limit).await?;
        let sub = open_reader(&client, &channel, limit).await?;

        let (events, events_rx) = mpsc::channel(settings.events);
        let (ops, ops_rx) = mpsc::channel(settings.queue);
        // The first link event; the channel is new, so there is room.
        events.try_send(Event::Up).map_err(|_| Error::Closed)?;
        let link = Arc::new(Link {
            state: Mutex::new(LinkState {
                reader: true,
                writer: true,
                reported: true,
            }),
            emitted: AtomicU64::new(1),
            overflow: AtomicBool::new(false),
            events: events.clone(),
            recheck_reader: Notify::new(),
            recheck_writer: Notify::new(),
        });
        let seen = Arc::new(AtomicU64::new(0));
        let store = settings.store;
        let fixed = [
            store.replay_frames.to_string(),
            store.replay_bytes.to_string(),
            store.node_timeout.as_millis().to_string(),
        ];
        let head = Head {
            sha,
            prefix: settings.prefix.clone(),
            node: node.0.to_string(),
            fixed,
        };
        let mut bp = RedisBackplane {
            node,
            prefix: settings.prefix.clone(),
            ops,
            link: link.clone(),
            seen: seen.clone(),
            tasks: Vec::new(),
        };
        let every = store.node_timeout / 3;
        bp.tasks.push(tokio::spawn(writer(
            client.clone(),
            script,
            limit,
            conn,
            head,
            ops_rx,
            link.clone(),
        )));
        bp.tasks.push(tokio::spawn(reader(
            client, channel, limit, every, sub, events, link,
        )));
        if settings.heartbeat || settings.sweep {
            let heartbeat = settings.heartbeat.then(|| script_call(&Command::Heartbeat));
            let heartbeat = heartbeat.transpose()?;
            let sweep = settings.sweep.then(sweep_call);
            bp.tasks.push(tokio::spawn(ticker(
                bp.ops.clone(),
                every,
                heartbeat,
                sweep,
            )));
        }
        Ok((
            bp,
            Events {
                rx: events_rx,
                seen,
            },
        ))
    }

    /// This node's id.
    #[must_use]
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    fn enqueue(&self, op: Op) -> Result<(), Error> {
        match self.ops.try_send(op) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                // A lost command leaves the store and the core disagreeing:
                // the writer turns this into a down/up, and the core resyncs.
                self.link.overflow.store(true, Ordering::SeqCst);
                Err(Error::QueueFull)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Error::Closed),
        }
    }

    /// Queues `cmd`; commands run in the order they were sent. Their
    /// answers come back as [`Event::Push`]es, and for a
    /// [`Command::Persist`] or [`Command::Resumed`] also as one
    /// [`Event::Applied`].
    ///
    /// A command runs only if, when it was sent, the caller had read every
    /// link event the client had sent and the last was [`Event::Up`]: one
    /// sent while the link is down, or before the caller read of it, is
    /// dropped (the core resyncs after `Up`), and gets no `Applied`.
    ///
    /// # Errors
    /// [`Error::Down`] when the last link event the caller read was
    /// [`Event::Down`] (or it has not read the first `Up`): nothing is
    /// queued. [`Error::QueueFull`], [`Error::Closed`], or
    /// [`Error::Unsupported`].
    pub fn send(&self, cmd: &Command) -> Result<(), Error> {
        let seen = self.seen.load(Ordering::SeqCst);
        if seen.is_multiple_of(2) {
            return Err(Error::Down);
        }
        let call = match cmd {
            Command::Append {
                session,
                epoch,
                seq,
                body,
                keep,
            } => Call::Append {
                key: codec::frames_key(&self.prefix, session, *epoch),
                entry: codec::frame_entry(*seq, body),
                keep: *keep,
            },
            Command::Forward {
                to,
                room,
                event,
                sessions,
            } => Call::Publish {
                channel: format!("{}:node:{}", self.prefix, to),
                payload: codec::encode_push(&Push::Deliver {
                    from: self.node.clone(),
                    req: None,
                    room: room.clone(),
                    event: event.clone(),
                    sessions: sessions.clone(),
                })
                .ok_or(codec::Unsupported)?,
            },
            _ => Call::Script {
                args: script_call(cmd)?,
                frames: touches_frames(cmd),
            },
        };
        self.enqueue(Op::Cmd {
            call,
            tag: Some(seen),
            answered: codec::answered(cmd),
        })
    }

    /// Queues a sweep: every node silent for `node_timeout` (by Redis' clock)
    /// is declared dead, and the live nodes get [`Push::NodeDied`]. Any node
    /// may run it; the ticker does, every third of `node_timeout`, unless
    /// [`Settings::sweep`] is off.
    ///
    /// # Errors
    /// [`Error::QueueFull`] or [`Error::Closed`].
    pub fn sweep(&self) -> Result<(), Error> {
        self.enqueue(Op::Cmd {
            call: Call::Script {
                args: sweep_call(),
                frames: false,
            },
            tag: None,
            answered: false,
        })
    }

    /// Waits until every command sent before has been applied by Redis
    /// and its [`Event::Applied`], if any, is in [`Events`] (so keep
    /// reading events meanwhile if thousands may be waiting). While Redis
    /// is unreachable, waits until the client has reconnected.
    ///
    /// # Errors
    /// [`Error::Down`] when some sent since the last flush were dropped
    /// (the link was down, or went down and up since they were sent);
    /// [`Error::Closed`].
    pub async fn flush(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(Op::Flush(tx))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }
}

fn script_call(cmd: &Command) -> Result<Encoded, Error> {
    let mut call = Encoded::for_command(cmd);
    codec::command_args(cmd, &mut call)?;
    Ok(call)
}

/// Whether the script op of `cmd` reads or rewrites kept frames.
fn touches_frames(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Persist { .. }
            | Command::Trim { .. }
            | Command::End { .. }
            | Command::Take { .. }
            | Command::Resumed { .. }
            | Command::Register(_)
            | Command::Adopt { .. }
            | Command::Resync { .. }
            | Command::Drop { .. }
    )
}

fn sweep_call() -> Encoded {
    let mut call = Encoded::default();
    call.text("sweep");
    call
}

/// What every script call of a node starts with.
struct Head {
    sha: String,
    prefix: String,
    node: String,
    /// Replay bounds and node timeout.
    fixed: [String; 3],
}

impl Head {
    /// A call with room for `args` more arguments of `bytes` in all: one
    /// allocation instead of a Vec doubling through a batch's ~100 KiB.
    fn call(&self, args: usize, bytes: usize) -> Cmd {
        let mut cmd = Cmd::with_capacity(args + 8, bytes + 256);
        cmd.arg("EVALSHA");
        cmd.arg(&self.sha).arg(0).arg(&self.prefix).arg(&self.node);
        for f in &self.fixed {
            cmd.arg(f);
        }
        cmd
    }
}

/// One round trip: a pipeline of script calls and plain appends. An
/// append runs before the script ops queued before it (it only adds to an
/// epoch's list, which no op but those marked `frames` reads) unless one
/// of those is marked `frames`: then the script call so far goes first.
struct Round {
    pipe: redis::Pipeline,
    /// The script call being filled, and which of its ops the caller
    /// waits for.
    script: Option<(Cmd, Vec<bool>)>,
    /// Whether an op of `script` touches frames.
    barrier: bool,
    /// Forwarded pushes not in `pipe` yet, by channel: each channel's go
    /// as one `PUBLISH`, before the next script call (which must run after
    /// them).
    forwards: Vec<(String, Vec<Vec<u8>>)>,
    /// Appends not in `pipe` yet, in order: per list, one `RPUSH` of all
    /// its entries, then one `LTRIM` to what the last cut keeps (a cut,
    /// then an append, is the append, then a cut keeping one more).
    appends: Vec<(String, Vec<u8>, Option<u32>)>,
    /// Per script call in `pipe`, which of its ops the caller waits for.
    calls: Vec<Vec<bool>>,
    /// Per answer the caller waits for, in order: the script call it is
    /// in, or `None` for an append (always applied).
    answers: Vec<Option<usize>>,
    /// Arguments and bytes of the batch's script ops: sizes the first call.
    size: (usize, usize),
}

impl Round {
    fn new(batch: &[Op]) -> Self {
        let size = batch.iter().fold((0, 0), |(n, b), op| match op {
            Op::Cmd {
                call: Call::Script { args, .. },
                ..
            } => (n + 1 + args.count(), b + 8 + args.data_len()),
            _ => (n, b),
        });
        Round {
            pipe: redis::Pipeline::with_capacity(4),
            script: None,
            barrier: false,
            forwards: Vec::new(),
            appends: Vec::new(),
            calls: Vec::new(),
            answers: Vec::new(),
            size,
        }
    }

    fn flush_appends(&mut self) {
        // Stable: a list's entries stay in order.
        self.appends.sort_by(|a, b| a.0.cmp(&b.0));
        let mut appends = std::mem::take(&mut self.appends).into_iter().peekable();
        while let Some((key, entry, keep)) = appends.next() {
            let mut cut = keep;
            let rpush = self.pipe.cmd("RPUSH").arg(&key).arg(entry);
            while let Some((_, entry, keep)) = appends.next_if(|(k, _, _)| *k == key) {
                rpush.arg(entry);
                cut = keep.or(cut.map(|c| c.saturating_add(1)));
            }
            rpush.ignore();
            if let Some(keep) = cut {
                let from = -i64::from(keep.max(1));
                self.pipe.cmd("LTRIM").arg(&key).arg(from).arg(-1).ignore();
            }
        }
    }

    fn flush_forwards(&mut self) {
        for (channel, mut items) in self.forwards.drain(..) {
            let payload = if items.len() == 1 {
                items.pop().unwrap_or_default()
            } else {
                codec::encode_batch(&items)
            };
            self.pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
        }
    }

    fn close_script(&mut self) {
        self.flush_appends();
        self.flush_forwards();
        if let Some((cmd, wanted)) = self.script.take() {
            self.pipe.add_command(cmd);
            self.calls.push(wanted);
        }
        self.barrier = false;
    }

    fn add(&mut self, head: &Head, call: Call, answered: bool) {
        match call {
            Call::Script { args, frames } => {
                let (n, b) = std::mem::take(&mut self.size);
                let (cmd, wanted) = self
                    .script
                    .get_or_insert_with(|| (head.call(n, b), Vec::new()));
                cmd.arg(args.count());
                for a in args.args() {
                    cmd.arg(a);
                }
                wanted.push(answered);
                if answered {
                    self.answers.push(Some(self.calls.len()));
                }
                self.barrier |= frames;
            }
            Call::Append { key, entry, keep } => {
                if self.barrier {
                    self.close_script();
                }
                self.appends.push((key, entry, keep));
                if answered {
                    self.answers.push(None);
                }
            }
            Call::Publish { channel, payload } => {
                // After every op sent before it: a message goes out in
                // order with the events the script routes.
                if self.script.is_some() {
                    self.close_script();
                }
                match self.forwards.iter_mut().find(|(c, _)| *c == channel) {
                    Some((_, items)) => items.push(payload),
                    None => self.forwards.push((channel, vec![payload])),
                }
            }
        }
    }

    /// Runs the round; the answers the caller waits for, in order.
    async fn run(
        mut self,
        c: &mut MultiplexedConnection,
        limit: Duration,
    ) -> Result<Vec<bool>, Error> {
        self.close_script();
        // Nothing to send means nothing to answer.
        if self.pipe.is_empty() {
            return Ok(Vec::new());
        }
        let replies: Vec<redis::Value> = with_timeout(limit, self.pipe.query_async(c)).await?;
        if replies.len() != self.calls.len() {
            return Err(Error::BadReply);
        }
        let mut per_call = Vec::with_capacity(replies.len());
        for (reply, wanted) in replies.iter().zip(&self.calls) {
            per_call.push(applied(reply, wanted)?.into_iter());
        }
        let mut out = Vec::with_capacity(self.answers.len());
        for slot in self.answers {
            out.push(match slot {
                None => true,
                Some(i) => per_call
                    .get_mut(i)
                    .and_then(Iterator::next)
                    .ok_or(Error::BadReply)?,
            });
        }
        Ok(out)
    }
}

/// Fails the flushes and drops the commands of `batch`; returns whether
/// it ended with the caller's commands dropped after its last flush (the
/// ticker's do not count: nobody flushes for them).
fn drop_batch(batch: Vec<Op>, mut dropped: bool) -> bool {
    let mut n = 0usize;
    for op in batch {
        match op {
            Op::Cmd { tag, .. } => {
                n += 1;
                dropped |= tag.is_some();
            }
            Op::Flush(tx) => {
                let _ = tx.send(Err(Error::Down));
                dropped = false;
            }
        }
    }
    if n > 0 {
        tracing::debug!(dropped = n, "backplane commands dropped while down");
    }
    dropped
}

fn drain(rx: &mut mpsc::Receiver<Op>, dropped: bool) -> bool {
    let mut batch = Vec::new();
    while let Ok(op) = rx.try_recv() {
        batch.push(op);
    }
    drop_batch(batch, dropped)
}

/// What the script answers: per command of the batch `1` applied, `0`
/// refused; the answers of those `answered` (as many as `answered` is
/// long).
fn applied(v: &redis::Value, answered: &[bool]) -> Result<Vec<bool>, Error> {
    let r: &[u8] = match v {
        redis::Value::BulkString(r) => r,
        redis::Value::SimpleString(r) => r.as_bytes(),
        _ => return Err(Error::BadReply),
    };
    if r.len() != answered.len() {
        return Err(Error::BadReply);
    }
    let mut out = Vec::new();
    for (&b, &wanted) in r.iter().zip(answered) {
        let ok = match b {
            b'1' => true,
            b'0' => false,
            _ => return Err(Error::BadReply),
        };
        if wanted {
            out.push(ok);
        }
    }
    Ok(out)
}

async fn writer(
    client: Client,
    script: String,
    limit: Duration,
    conn: MultiplexedConnection,
    head: Head,
    mut rx: mpsc::Receiver<Op>,
    link: Arc<Link>,
) {
    let mut conn = Some(conn);
    let mut wait = BACKOFF_MIN;
    // Commands dropped since the last flush was answered.
    let mut dropped = false;
    loop {
        let mut c = match conn.take() {
            Some(c) => c,
            None => match open_writer(&client, &script, limit).await {
                Ok(c) => {
                    // What was queued while down belongs to before the
                    // resync that follows `Up`.
                    dropped = drain(&mut rx, dropped);
                    wait = BACKOFF_MIN;
                    link.up(Side::Writer).await;
                    c
                }
                Err(e) => {
                    link.down(Side::Writer, e).await;
                    tokio::time::sleep(backoff(&mut wait)).await;
                    continue;
                }
            },
        };
        loop {
            let first = tokio::select! {
                op = rx.recv() => match op {
                    Some(op) => Some(op),
                    None => return,
                },
                () = link.recheck_writer.notified() => None,
            };
            if !link.is_confirmed(Side::Writer).await {
                if let Err(e) =
                    with_timeout(limit, redis::cmd("PING").query_async::<()>(&mut c)).await
                {
                    link.down(Side::Writer, e).await;
                    break;
                }
                link.up(Side::Writer).await;
            }
            let Some(first) = first else {
                continue;
            };
            let mut bytes = match &first {
                Op::Cmd { call, .. } => call.bytes(),
                Op::Flush(_) => 0,
            };
            let mut batch = vec![first];
            while batch.len() < BATCH && bytes < BATCH_BYTES {
                match rx.try_recv() {
                    Ok(op) => {
                        if let Op::Cmd { call, .. } = &op {
                            bytes += call.bytes();
                        }
                        batch.push(op);
                    }
                    Err(_) => break,
                }
            }
            if link.overflow.swap(false, Ordering::SeqCst) {
                dropped = drop_batch(batch, dropped);
                dropped = drain(&mut rx, dropped);
                link.down(Side::Writer, Error::QueueFull).await;
                link.up(Side::Writer).await;
                continue;
            }
            let at = link.emitted.load(Ordering::SeqCst);
            if at.is_multiple_of(2) {
                // The subscriber is down: nothing may be applied whose
                // answers would be lost; check our own connection meanwhile.
                dropped = drop_batch(batch, dropped);
                if let Err(e) =
                    with_timeout(limit, redis::cmd("PING").query_async::<()>(&mut c)).await
                {
                    link.down(Side::Writer, e).await;
                    break;
                }
                link.up(Side::Writer).await;
                continue;
            }
            let busy = batch.len() >= ROUND_BUSY;
            let mut round = Round::new(&batch);
            let mut callers = false;
            // Each flush with whether a command before it was dropped.
            let mut flushes = Vec::new();
            for op in batch {
                match op {
                    // Sent before the caller knew of the last link event:
                    // it belongs to before the resync that follows it.
                    Op::Cmd { tag: Some(t), .. } if t != at => dropped = true,
                    Op::Cmd {
                        call,
                        answered,
                        tag,
                        ..
                    } => {
                        callers |= tag.is_some();
                        round.add(&head, call, answered);
                    }
                    Op::Flush(tx) => {
                        flushes.push((tx, std::mem::take(&mut dropped)));
                    }
                }
            }
            let started = tokio::time::Instant::now();
            let result = round.run(&mut c, limit).await;
            match result {
                Ok(answers) => {
                    link.answers(at, answers).await;
                    for (tx, lost) in flushes {
                        let _ = tx.send(if lost { Err(Error::Down) } else { Ok(()) });
                    }
                    // Busy, but not enough waiting for a full round: let
                    // more come, so that Redis and this node pay a round
                    // trip's system calls for more commands. Under a light
                    // load (a round of a few commands), nothing waits.
                    let waiting = rx.len();
                    if busy && waiting > 0 && waiting < ROUND_MIN {
                        tokio::time::sleep_until(started + ROUND_GAP).await;
                    }
                }
                Err(e) => {
                    for (tx, _) in flushes {
                        let _ = tx.send(Err(Error::Down));
                    }
                    // Whether the last commands ran is unknown: the resync
                    // after `Up` settles it.
                    dropped |= callers;
                    link.down(Side::Writer, e).await;
                    break;
                }
            }
        }
    }
}

async fn reader(
    client: Client,
    channel: String,
    limit: Duration,
    every: Duration,
    sub: (PubSubSink, PubSubStream),
    events: mpsc::Sender<Event>,
    link: Arc<Link>,
) {
    let mut sub = Some(sub);
    let mut wait = BACKOFF_MIN;
    loop {
        let (mut sink, mut stream) = match sub.take() {
            Some(s) => s,
            None => match open_reader(&client, &channel, limit).await {
                Ok(s) => {
                    wait = BACKOFF_MIN;
                    link.up(Side::Reader).await;
                    s
                }
                Err(e) => {
                    link.down(Side::Reader, e).await;
                    tokio::time::sleep(backoff(&mut wait)).await;
                    continue;
                }
            },
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        link.down(Side::Reader, Error::Disconnected).await;
                        break;
                    };
                    let payload = Bytes::copy_from_slice(msg.get_payload_bytes());
                    match codec::decode_pushes(payload) {
                        Ok(pushes) => {
                            for push in pushes {
                                if events.send(Event::Push(push)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, len = msg.get_payload_bytes().len(),
                                channel = %channel, "malformed backplane push dropped");
                        }
                    }
                }
                _ = tick.tick() => {
                    // A half-open connection delivers nothing and ends
                    // nothing: only an answer proves it alive.
                    if let Err(e) = with_timeout(limit, sink.ping::<redis::Value>()).await {
                        link.down(Side::Reader, e).await;
                        break;
                    }
                    link.up(Side::Reader).await;
                }
                () = link.recheck_reader.notified() => {
                    if let Err(e) = with_timeout(limit, sink.ping::<redis::Value>()).await {
                        link.down(Side::Reader, e).await;
                        break;
                    }
                    link.up(Side::Reader).await;
                }
            }
        }
    }
}

async fn ticker(
    ops: mpsc::Sender<Op>,
    every: Duration,
    heartbeat: Option<Encoded>,
    sweep: Option<Encoded>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Skipped when the queue is full: that already means down.
        for args in heartbeat.iter().chain(&sweep) {
            let _ = ops.try_send(Op::Cmd {
                call: Call::Script {
                    args: args.clone(),
                    frames: false,
                },
                tag: None,
                answered: false,
            });
        }
    }
}
