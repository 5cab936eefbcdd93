//! The server under test and the things every run mode needs around it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::error::LoadError;
use crate::peer::{Counters, PeerStats, Phase, RunShared};
use crate::procstat::{self, ProcSample};
use crate::wire::Protocol;

/// The server a run talks to.
#[derive(Debug, Clone)]
pub struct Target {
    /// Dialect to speak.
    pub protocol: Protocol,
    /// `ws://HOST:PORT[/path]`; without a path, the protocol's usual one.
    pub url: String,
    /// Server process to measure (CPU time, RSS), when known.
    pub server_pid: Option<u32>,
    /// Number of loopback source addresses (127.0.0.1..=N) to spread
    /// connections over.
    pub source_ips: u8,
    /// Connections being opened at once.
    pub connect_concurrency: usize,
    /// Upper bound for the whole run.
    pub timeout: Duration,
}

/// Splits `ws://authority/path` and resolves the authority. Only loopback
/// servers are accepted: this tool floods whatever it points at.
pub(crate) async fn resolve(target: &Target) -> Result<(String, SocketAddr), LoadError> {
    let bad = |reason| LoadError::BadUrl {
        url: target.url.clone(),
        reason,
    };
    let rest = target
        .url
        .strip_prefix("ws://")
        .ok_or_else(|| bad("only ws:// URLs are supported"))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    let path = if path.is_empty() || path == "/" {
        target.protocol.default_path()
    } else {
        path
    };
    let server = tokio::net::lookup_host(authority)
        .await
        .map_err(|_| bad("host does not resolve"))?
        .next()
        .ok_or_else(|| bad("host does not resolve"))?;
    if !server.ip().is_loopback() {
        return Err(bad("only loopback servers may be targeted"));
    }
    Ok((format!("ws://{authority}{path}"), server))
}

/// Raises this process's open-file soft limit to its hard limit and checks
/// that `connections` sockets fit under it.
pub(crate) fn ensure_fd_room(connections: usize) -> Result<u64, LoadError> {
    let limit = rlimit::increase_nofile_limit(u64::MAX)
        .map_err(|err| LoadError::Config(format!("cannot raise RLIMIT_NOFILE: {err}")))?;
    // Leave room for stdio, the runtime's own descriptors and /proc reads.
    let needed = u64::try_from(connections)
        .unwrap_or(u64::MAX)
        .saturating_add(64);
    if needed > limit {
        return Err(LoadError::Config(format!(
            "{connections} connections need about {needed} file descriptors, the limit is {limit}"
        )));
    }
    Ok(limit)
}

pub(crate) fn new_shared(
    target: &Target,
    url: String,
    server: SocketAddr,
    windows: Vec<Arc<Semaphore>>,
) -> RunShared {
    RunShared {
        protocol: target.protocol,
        url,
        server,
        alt: None,
        source_ips: target.source_ips.max(1),
        base: std::time::Instant::now(),
        data_size: 0,
        with_id: false,
        count_per_sender: None,
        send_interval: None,
        windows,
        deliveries_per_message: 1,
        connect_gate: Semaphore::new(target.connect_concurrency.max(1)),
        handshake_timeout: target.timeout.min(Duration::from_secs(30)),
        counters: Counters::default(),
    }
}

/// Samples the server process, when there is one.
pub(crate) fn sample_server(pid: Option<u32>) -> Result<Option<ProcSample>, LoadError> {
    pid.map(procstat::sample).transpose()
}

/// Waits until `done` holds or `deadline` passes; returns whether it holds.
/// Peers signal progress on readiness and senders finishing; deliveries are
/// not signalled (too frequent), so the condition is also polled.
pub(crate) async fn wait_until(
    counters: &Counters,
    deadline: Instant,
    done: impl Fn(&Counters) -> bool,
) -> bool {
    const POLL: Duration = Duration::from_millis(5);
    loop {
        if done(counters) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let step = POLL.min(deadline - now);
        let _ = tokio::time::timeout(step, counters.progress.notified()).await;
    }
}

/// Outcome of every peer task after the run stopped.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub(crate) stats: Vec<PeerStats>,
    pub(crate) failed: usize,
    pub(crate) first_error: Option<String>,
}

/// Tells every peer to stop and gathers their stats, waiting at most `grace`.
pub(crate) async fn stop_and_collect(
    phase: &watch::Sender<Phase>,
    mut tasks: JoinSet<Result<PeerStats, LoadError>>,
    grace: Duration,
) -> Collected {
    phase.send_replace(Phase::Stop);
    let deadline = Instant::now() + grace;
    let mut out = Collected::default();
    while !tasks.is_empty() {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok(Ok(stats)))) => {
                if out.first_error.is_none() {
                    out.first_error.clone_from(&stats.first_error);
                }
                out.stats.push(stats);
            }
            Ok(Some(Ok(Err(err)))) => {
                out.failed += 1;
                out.first_error.get_or_insert_with(|| err.to_string());
            }
            Ok(Some(Err(join_error))) => {
                out.failed += 1;
                out.first_error
                    .get_or_insert_with(|| join_error.to_string());
            }
            Ok(None) => break,
            Err(_) => {
                out.failed += tasks.len();
                out.first_error
                    .get_or_insert_with(|| "peers did not stop in time".to_owned());
                tasks.abort_all();
                break;
            }
        }
    }
    out
}

pub(crate) fn ready_or_failed(counters: &Counters) -> usize {
    counters.ready.load(Ordering::Relaxed) + counters.failed.load(Ordering::Relaxed)
}
