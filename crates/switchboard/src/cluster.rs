//! The node's link to the cluster (PROTOCOL.md §6): the Redis backplane
//! client on one side, the hub on the other. It moves values and does
//! nothing clever: the core decides, Redis stores.
//!
//! The node starts cut off (the core refuses what needs the others with
//! `unavailable`, `/readyz` answers 503) and keeps trying Redis until it
//! answers; every later failure is a `backplane_down` and every recovery a
//! `backplane_up`, after which the core resyncs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use switchboard_backplane::{Event, Events, RedisBackplane, Settings};
use switchboard_signal::cluster::store::StoreConfig;
use switchboard_signal::cluster::{Command, NodeId};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::hub::{BackplaneOut, Hub};

/// How long a first connection is retried between attempts, at most.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// The commands' way out: the client once Redis has answered; until then
/// they are dropped, and the core resyncs when the link comes up.
#[derive(Default)]
pub struct Backplane {
    client: OnceLock<RedisBackplane>,
    /// Redis answers: what `/readyz` says.
    ready: AtomicBool,
}

impl Backplane {
    /// Whether the store is reachable now.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until Redis has applied every command sent so far:
    /// a node that stops writes what its sessions got before it goes.
    pub async fn flush(&self, limit: Duration) {
        if let Some(client) = self.client.get() {
            let _ = tokio::time::timeout(limit, client.flush()).await;
        }
    }
}

impl BackplaneOut for Backplane {
    fn send(&self, cmd: Command) {
        if let Some(client) = self.client.get()
            && let Err(e) = client.send(&cmd)
        {
            // A full queue or a closed link: the client reports it as a
            // `Down`, and the core resyncs after the `Up`.
            tracing::debug!("backplane command dropped: {e}");
        }
    }
}

/// This node's id: `cluster.node_id`, or a random one.
pub fn node_id(cfg: &Config) -> NodeId {
    match &cfg.cluster.node_id {
        Some(id) => NodeId::new(id),
        None => {
            let mut b = [0u8; 9];
            rand::fill(&mut b);
            let id: String = b.iter().map(|x| format!("{x:02x}")).collect();
            NodeId::new(&id)
        }
    }
}

/// The store's bounds, the same on every node.
pub fn store_config(cfg: &Config) -> StoreConfig {
    StoreConfig {
        replay_frames: cfg.session.replay_frames,
        replay_bytes: cfg.session.replay_bytes,
        node_timeout: Duration::from_secs(cfg.cluster.node_timeout_secs.max(1)),
    }
}

/// Connects to Redis (retrying until it answers or `shutdown`), then feeds
/// the hub with what the store says, on a tracked task.
pub fn start(
    cfg: &Config,
    url: String,
    node: NodeId,
    hub: Arc<Hub>,
    backplane: Arc<Backplane>,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) {
    let mut settings = Settings::new(store_config(cfg));
    settings.prefix.clone_from(&cfg.cluster.key_prefix);
    // The core sends its own heartbeats (every third of node_timeout).
    settings.heartbeat = false;
    tasks.spawn(async move {
        let mut pause = Duration::from_millis(100);
        let events = loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                got = RedisBackplane::connect(&url, node.clone(), settings.clone()) => match got {
                    Ok((client, events)) => {
                        let _ = backplane.client.set(client);
                        break events;
                    }
                    Err(e) => {
                        tracing::warn!(%node, "cluster backplane unreachable ({e}); retrying");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(pause) => {}
                        }
                        pause = (pause * 2).min(RETRY_MAX);
                    }
                },
            }
        };
        tracing::info!(%node, "joined the cluster");
        // The client's first event is `Up`: the core resyncs then.
        feed(events, &hub, &backplane, &shutdown).await;
    });
}

async fn feed(mut events: Events, hub: &Hub, backplane: &Backplane, shutdown: &CancellationToken) {
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            e = events.recv() => match e {
                Some(e) => e,
                None => return,
            },
        };
        match event {
            Event::Push(push) => hub.push(push),
            Event::Applied(ok) => hub.persisted(ok),
            Event::Down(e) => {
                tracing::warn!("cluster backplane down: {e}");
                backplane.ready.store(false, Ordering::Relaxed);
                metrics::counter!("switchboard_cluster_backplane_down_total").increment(1);
                hub.backplane_down();
            }
            Event::Up => {
                tracing::info!("cluster backplane up: resyncing");
                backplane.ready.store(true, Ordering::Relaxed);
                hub.backplane_up();
            }
            _ => {}
        }
    }
}
