//! The message-rate run: N peers in R rooms, senders flood their rooms with
//! a bounded window, receivers time every delivery.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::error::LoadError;
use crate::peer::{PeerPlan, Phase, nanos_since, new_histogram, run_peer};
use crate::procstat::{self, ProcSample};
use crate::target::{
    Target, ensure_fd_room, new_shared, ready_or_failed, resolve, sample_server, stop_and_collect,
    wait_until,
};
use crate::wire::Protocol;

/// What a traffic run does.
#[derive(Debug, Clone)]
pub struct TrafficConfig {
    /// The server.
    pub target: Target,
    /// Number of rooms.
    pub rooms: usize,
    /// Peers in each room (at least 2).
    pub peers_per_room: usize,
    /// How many peers of each room send (the first ones).
    pub senders_per_room: usize,
    /// Length of the `data` string of each message.
    pub data_size: usize,
    /// Messages each sender may have undelivered at once.
    pub window: usize,
    /// How long senders send (an upper bound when `count` is given).
    pub duration: Duration,
    /// Messages per sender; unbounded (until `duration`) when `None`.
    pub count: Option<u64>,
    /// Messages per second offered by all senders together, spread evenly;
    /// as fast as the window allows when `None`.
    pub rate: Option<f64>,
    /// Give every message an `id` (native) or an ack callback (Socket.IO),
    /// so the server acknowledges it.
    pub with_id: bool,
    /// Rooms are named `<prefix><n>`.
    pub room_prefix: String,
    /// How long to wait for messages still on the way after sending stops.
    pub drain_timeout: Duration,
    /// A second server (another node of a cluster): the peers at odd
    /// places in each room connect there, so that every message crosses
    /// from one server to the other.
    pub url2: Option<String>,
}

/// Latency from send to delivery, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest seen.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
}

/// Resource use of one process over the measured window.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcessUse {
    /// CPU time spent in the window (user + system), µs.
    pub cpu_us: u64,
    /// CPU µs per delivered message.
    pub cpu_us_per_msg: f64,
    /// CPU time as a share of one core over the window.
    pub cores: f64,
    /// RSS before the window, KiB.
    pub rss_kib_before: u64,
    /// RSS after the window, KiB.
    pub rss_kib_after: u64,
}

/// The result of a traffic run; one JSON line on stdout.
#[derive(Debug, Clone, Serialize)]
pub struct TrafficReport {
    /// Always `"traffic"`.
    pub mode: &'static str,
    /// Dialect spoken.
    pub protocol: Protocol,
    /// Rooms.
    pub rooms: usize,
    /// Peers in all.
    pub peers: usize,
    /// Sending peers.
    pub senders: usize,
    /// Length of `data`.
    pub data_bytes: usize,
    /// Window per sender.
    pub window: usize,
    /// Offered rate, messages/s (all senders), when paced.
    pub rate: Option<f64>,
    /// Whether messages asked for acks.
    pub with_id: bool,
    /// From the start of sending to the last delivery, seconds.
    pub elapsed_s: f64,
    /// Messages sent.
    pub sent: u64,
    /// Deliveries expected (sent × receivers per message).
    pub expected: u64,
    /// Deliveries seen.
    pub delivered: u64,
    /// Expected minus seen.
    pub lost: u64,
    /// Acknowledgements seen.
    pub acks: u64,
    /// Deliveries per second.
    pub msgs_per_s: f64,
    /// Delivery latency.
    pub latency: Latency,
    /// The server process, when `--server-pid` was given.
    pub server: Option<ProcessUse>,
    /// The load tool itself, to tell whether it was the bottleneck.
    pub client: Option<ProcessUse>,
    /// Peers that ended early or reported a server error.
    pub peer_errors: u64,
    /// The first such error, as text.
    pub first_error: Option<String>,
}

/// Runs one traffic measurement.
pub async fn run_traffic(cfg: &TrafficConfig) -> Result<TrafficReport, LoadError> {
    validate(cfg)?;
    let peers = cfg.rooms * cfg.peers_per_room;
    ensure_fd_room(peers)?;
    let (url, server) = resolve(&cfg.target).await?;
    let deadline = Instant::now() + cfg.target.timeout;
    let receivers = u32::try_from(cfg.peers_per_room - 1)
        .map_err(|_| LoadError::Config("too many peers per room".to_owned()))?;
    let is_sender = |index: usize| index % cfg.peers_per_room < cfg.senders_per_room;
    let windows = (0..peers)
        .map(|index| {
            let permits = if is_sender(index) {
                cfg.window.saturating_mul(receivers as usize)
            } else {
                0
            };
            Arc::new(Semaphore::new(permits))
        })
        .collect();
    let mut shared = new_shared(&cfg.target, url, server, windows);
    if let Some(url2) = &cfg.url2 {
        let second = Target {
            url: url2.clone(),
            ..cfg.target.clone()
        };
        shared.alt = Some(resolve(&second).await?);
    }
    shared.data_size = cfg.data_size;
    shared.with_id = cfg.with_id;
    shared.count_per_sender = cfg.count;
    let senders = cfg.rooms * cfg.senders_per_room;
    shared.send_interval = cfg
        .rate
        .map(|rate| Duration::from_secs_f64(senders as f64 / rate));
    shared.deliveries_per_message = receivers;
    let shared = Arc::new(shared);

    let (phase_tx, phase_rx) = watch::channel(Phase::Joining);
    let mut tasks = JoinSet::new();
    for index in 0..peers {
        let plan = PeerPlan {
            index,
            room: Some(format!("{}{}", cfg.room_prefix, index / cfg.peers_per_room)),
            sender: is_sender(index),
            alt: (index % cfg.peers_per_room) % 2 == 1,
        };
        tasks.spawn(run_peer(plan, Arc::clone(&shared), phase_rx.clone()));
    }
    let counters = &shared.counters;
    let all_in = wait_until(counters, deadline, |c| ready_or_failed(c) == peers).await;
    if !all_in || counters.failed.load(Ordering::Relaxed) > 0 {
        let collected = stop_and_collect(&phase_tx, tasks, Duration::from_secs(5)).await;
        return Err(LoadError::NotAllJoined {
            ready: counters.ready.load(Ordering::Relaxed),
            peers,
            first_error: collected
                .first_error
                .unwrap_or_else(|| "timed out".to_owned()),
        });
    }

    let server_before = sample_server(cfg.target.server_pid)?;
    let client_before = procstat::sample(std::process::id()).ok();
    let start_ns = nanos_since(shared.base);
    phase_tx.send_replace(Phase::Sending);
    let send_end = (Instant::now() + cfg.duration).min(deadline);
    wait_until(counters, send_end, |c| {
        c.senders_done.load(Ordering::Relaxed) == senders
    })
    .await;
    phase_tx.send_replace(Phase::Draining);
    let drain_end = (Instant::now() + cfg.drain_timeout).min(deadline);
    let receivers_per_msg = u64::from(receivers);
    // The bare relay never acknowledges; elsewhere an id asks for one ack per message.
    let acks_expected = cfg.with_id && cfg.target.protocol != Protocol::Bare;
    wait_until(counters, drain_end, |c| {
        let sent = c.sent.load(Ordering::Relaxed);
        c.senders_done.load(Ordering::Relaxed) == senders
            && c.delivered.load(Ordering::Relaxed) >= sent * receivers_per_msg
            && (!acks_expected || c.acks.load(Ordering::Relaxed) >= sent)
    })
    .await;
    let end_ns = nanos_since(shared.base);
    let server_after = sample_server(cfg.target.server_pid)?;
    let client_after = procstat::sample(std::process::id()).ok();

    let collected = stop_and_collect(&phase_tx, tasks, Duration::from_secs(10)).await;
    let mut histogram = new_histogram();
    let (mut sent, mut delivered, mut acks, mut peer_errors) = (0u64, 0u64, 0u64, 0u64);
    for stats in &collected.stats {
        sent += stats.sent;
        delivered += stats.delivered;
        acks += stats.acks;
        peer_errors += stats.server_errors;
        if let Some(h) = &stats.latency_us {
            // Same bounds everywhere, so adding cannot fail.
            let _ = histogram.add(h);
        }
    }
    peer_errors += collected.failed as u64;
    let last_ns = counters
        .last_delivery_ns
        .load(Ordering::Relaxed)
        .max(start_ns);
    let elapsed_s = (last_ns - start_ns) as f64 / 1e9;
    let window_s = (end_ns - start_ns) as f64 / 1e9;
    let expected = sent * receivers_per_msg;
    Ok(TrafficReport {
        mode: "traffic",
        protocol: cfg.target.protocol,
        rooms: cfg.rooms,
        peers,
        senders,
        data_bytes: cfg.data_size,
        window: cfg.window,
        rate: cfg.rate,
        with_id: cfg.with_id,
        elapsed_s,
        sent,
        expected,
        delivered,
        lost: expected.saturating_sub(delivered),
        acks,
        msgs_per_s: if elapsed_s > 0.0 {
            delivered as f64 / elapsed_s
        } else {
            0.0
        },
        latency: latency_of(&histogram),
        server: process_use(server_before, server_after, delivered, window_s),
        client: process_use(client_before, client_after, delivered, window_s),
        peer_errors,
        first_error: collected.first_error,
    })
}

fn validate(cfg: &TrafficConfig) -> Result<(), LoadError> {
    let fail = |what: &str| Err(LoadError::Config(what.to_owned()));
    if cfg.rooms == 0 {
        return fail("--rooms must be at least 1");
    }
    if cfg.peers_per_room < 2 {
        return fail("--peers-per-room must be at least 2 for a traffic run");
    }
    if cfg.senders_per_room == 0 || cfg.senders_per_room > cfg.peers_per_room {
        return fail("--senders-per-room must be between 1 and --peers-per-room");
    }
    if cfg.window == 0 {
        return fail("--window must be at least 1");
    }
    if cfg
        .rate
        .is_some_and(|rate| !(rate.is_finite() && rate >= 0.001))
    {
        return fail("--rate must be a positive number of messages per second");
    }
    if cfg.count == Some(0) {
        return fail("--count must be at least 1");
    }
    Ok(())
}

fn latency_of(histogram: &hdrhistogram::Histogram<u64>) -> Latency {
    if histogram.is_empty() {
        return Latency::default();
    }
    Latency {
        p50_us: histogram.value_at_quantile(0.50),
        p90_us: histogram.value_at_quantile(0.90),
        p99_us: histogram.value_at_quantile(0.99),
        max_us: histogram.max(),
        mean_us: histogram.mean(),
    }
}

fn process_use(
    before: Option<ProcSample>,
    after: Option<ProcSample>,
    delivered: u64,
    window_s: f64,
) -> Option<ProcessUse> {
    let (before, after) = (before?, after?);
    let cpu_us = after.cpu_us.saturating_sub(before.cpu_us);
    Some(ProcessUse {
        cpu_us,
        cpu_us_per_msg: if delivered > 0 {
            cpu_us as f64 / delivered as f64
        } else {
            0.0
        },
        cores: if window_s > 0.0 {
            cpu_us as f64 / 1e6 / window_s
        } else {
            0.0
        },
        rss_kib_before: before.rss_kib,
        rss_kib_after: after.rss_kib,
    })
}

impl TrafficReport {
    /// A few lines for a person.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{:?} {} rooms x {} peers, {} B, window {}, rate {}, ids {}: {} sent, {}/{} delivered ({} lost), {} acks in {:.2} s\n\
             rate {:.0} msg/s; latency p50 {} us, p99 {} us, max {} us\n",
            self.protocol,
            self.rooms,
            self.peers / self.rooms.max(1),
            self.data_bytes,
            self.window,
            self.rate.map_or("max".to_owned(), |r| format!("{r:.0}/s")),
            self.with_id,
            self.sent,
            self.delivered,
            self.expected,
            self.lost,
            self.acks,
            self.elapsed_s,
            self.msgs_per_s,
            self.latency.p50_us,
            self.latency.p99_us,
            self.latency.max_us,
        );
        if let Some(server) = &self.server {
            out.push_str(&format!(
                "server: {:.2} CPU us/msg ({:.2} cores), RSS {} -> {} KiB\n",
                server.cpu_us_per_msg, server.cores, server.rss_kib_before, server.rss_kib_after
            ));
        }
        if let Some(client) = &self.client {
            out.push_str(&format!(
                "load tool: {:.2} CPU us/msg ({:.2} cores)\n",
                client.cpu_us_per_msg, client.cores
            ));
        }
        if self.peer_errors > 0 {
            out.push_str(&format!(
                "{} peer errors, first: {}\n",
                self.peer_errors,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        out
    }
}
