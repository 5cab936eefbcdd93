//! The idle-memory run: open many connections that do nothing and read the
//! server's RSS as they pile up.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::error::LoadError;
use crate::peer::{PeerPlan, Phase, run_peer};
use crate::target::{
    Target, ensure_fd_room, new_shared, ready_or_failed, resolve, sample_server, stop_and_collect,
    wait_until,
};
use crate::wire::Protocol;

/// What an idle run does.
#[derive(Debug, Clone)]
pub struct IdleConfig {
    /// The server.
    pub target: Target,
    /// Connections to hold at the end.
    pub connections: usize,
    /// Join rooms of this many peers; 0 connects without joining.
    pub peers_per_room: usize,
    /// Intermediate connection counts at which to read the server's RSS.
    pub checkpoints: Vec<usize>,
    /// Time to let the server settle at each checkpoint before reading RSS.
    pub settle: Duration,
    /// How long to hold all connections before the last reading.
    pub hold: Duration,
    /// Rooms are named `<prefix><n>`.
    pub room_prefix: String,
}

/// One RSS reading with that many connections open.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct IdleStep {
    /// Connections open and ready.
    pub connections: usize,
    /// Server RSS, KiB (0 without `--server-pid`).
    pub rss_kib: u64,
    /// (RSS - RSS with none) / connections.
    pub kib_per_conn: f64,
    /// (RSS - RSS at the previous step) / connections added since.
    pub marginal_kib_per_conn: f64,
}

/// The result of an idle run; one JSON line on stdout.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Always `"idle"`.
    pub mode: &'static str,
    /// Dialect spoken.
    pub protocol: Protocol,
    /// Connections asked for.
    pub connections: usize,
    /// Connections that became ready.
    pub ready: usize,
    /// Peers per room (0: not joined).
    pub peers_per_room: usize,
    /// Server RSS before the first connection, KiB.
    pub rss_kib_baseline: u64,
    /// Readings at each checkpoint and with all connections.
    pub steps: Vec<IdleStep>,
    /// Server RSS after holding, KiB.
    pub rss_kib_after_hold: u64,
    /// Connections still open after holding.
    pub held: usize,
    /// Seconds held.
    pub hold_s: f64,
    /// Connections that failed or closed early.
    pub failed: usize,
    /// The first failure, as text.
    pub first_error: Option<String>,
}

/// Runs one idle-memory measurement.
pub async fn run_idle(cfg: &IdleConfig) -> Result<IdleReport, LoadError> {
    if cfg.connections == 0 {
        return Err(LoadError::Config(
            "--connections must be at least 1".to_owned(),
        ));
    }
    ensure_fd_room(cfg.connections)?;
    let (url, server) = resolve(&cfg.target).await?;
    let deadline = Instant::now() + cfg.target.timeout;
    let shared = Arc::new(new_shared(&cfg.target, url, server, Vec::new()));
    let counters = &shared.counters;

    let mut checkpoints: Vec<usize> = cfg
        .checkpoints
        .iter()
        .copied()
        .filter(|&c| c > 0 && c < cfg.connections)
        .collect();
    checkpoints.push(cfg.connections);
    checkpoints.sort_unstable();
    checkpoints.dedup();

    let rss_of =
        |pid| -> Result<u64, LoadError> { Ok(sample_server(pid)?.map_or(0, |s| s.rss_kib)) };
    let baseline = rss_of(cfg.target.server_pid)?;
    let (phase_tx, phase_rx) = watch::channel(Phase::Joining);
    let mut tasks = JoinSet::new();
    let mut steps = Vec::with_capacity(checkpoints.len());
    let (mut prev_conns, mut prev_rss) = (0usize, baseline);
    for &checkpoint in &checkpoints {
        for index in prev_conns..checkpoint {
            let room = (cfg.peers_per_room > 0)
                .then(|| format!("{}{}", cfg.room_prefix, index / cfg.peers_per_room));
            let plan = PeerPlan {
                index,
                room,
                sender: false,
                alt: false,
            };
            tasks.spawn(run_peer(plan, Arc::clone(&shared), phase_rx.clone()));
        }
        let all_in = wait_until(counters, deadline, |c| ready_or_failed(c) == checkpoint).await;
        if !all_in || counters.failed.load(Ordering::Relaxed) > 0 {
            break;
        }
        settle(cfg.settle, deadline).await;
        let rss = rss_of(cfg.target.server_pid)?;
        let ready = counters.ready.load(Ordering::Relaxed);
        steps.push(IdleStep {
            connections: ready,
            rss_kib: rss,
            kib_per_conn: per_conn(rss, baseline, ready),
            marginal_kib_per_conn: per_conn(rss, prev_rss, ready.saturating_sub(prev_conns)),
        });
        (prev_conns, prev_rss) = (checkpoint, rss);
    }

    let hold_start = Instant::now();
    if counters.failed.load(Ordering::Relaxed) == 0 {
        settle(cfg.hold, deadline).await;
    }
    let hold_s = hold_start.elapsed().as_secs_f64();
    let rss_after = rss_of(cfg.target.server_pid)?;
    let ready = counters.ready.load(Ordering::Relaxed);
    let collected = stop_and_collect(&phase_tx, tasks, Duration::from_secs(30)).await;
    // A peer that ended before Stop was dropped by the server while held.
    let dropped_early = collected
        .stats
        .iter()
        .filter(|s| s.first_error.is_some())
        .count();
    Ok(IdleReport {
        mode: "idle",
        protocol: cfg.target.protocol,
        connections: cfg.connections,
        ready,
        peers_per_room: cfg.peers_per_room,
        rss_kib_baseline: baseline,
        steps,
        rss_kib_after_hold: rss_after,
        held: ready.saturating_sub(dropped_early),
        hold_s,
        failed: collected.failed + dropped_early,
        first_error: collected.first_error,
    })
}

async fn settle(wait: Duration, deadline: Instant) {
    tokio::time::sleep_until((Instant::now() + wait).min(deadline)).await;
}

fn per_conn(rss: u64, from: u64, connections: usize) -> f64 {
    if connections == 0 {
        return 0.0;
    }
    (rss as f64 - from as f64) / connections as f64
}

impl IdleReport {
    /// A few lines for a person.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{:?} idle: {}/{} connections ready ({}), server RSS baseline {} KiB\n",
            self.protocol,
            self.ready,
            self.connections,
            if self.peers_per_room > 0 {
                format!("rooms of {}", self.peers_per_room)
            } else {
                "not joined".to_owned()
            },
            self.rss_kib_baseline
        );
        for step in &self.steps {
            out.push_str(&format!(
                "  {:>6} conns: RSS {} KiB, {:.2} KiB/conn overall, {:.2} KiB/conn since previous step\n",
                step.connections, step.rss_kib, step.kib_per_conn, step.marginal_kib_per_conn
            ));
        }
        out.push_str(&format!(
            "held {} connections for {:.1} s; RSS after hold {} KiB; {} failed\n",
            self.held, self.hold_s, self.rss_kib_after_hold, self.failed
        ));
        if let Some(err) = &self.first_error {
            out.push_str(&format!("first error: {err}\n"));
        }
        out
    }
}
