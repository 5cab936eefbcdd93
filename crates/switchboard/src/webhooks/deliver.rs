//! Delivery to one URL: a lane per room (per order key), the head of each
//! lane in flight, retried with exponential backoff and jitter until it
//! succeeds or `webhooks.retry_secs` have passed since the event; only then
//! does its lane move on. Lanes run in parallel, at most [`MAX_IN_FLIGHT`]
//! at once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::http::{AttemptError, Endpoint};
use super::{Live, Payload};

/// Lanes (rooms) being delivered to one URL at once: each holds at most one
/// request, or waits for its next retry.
pub(crate) const MAX_IN_FLIGHT: usize = 32;

/// The first retry waits about this long; each next one twice as long.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);

/// No retry waits longer than this.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The wait before retry number `retry` (1 for the first), given `unit`, a
/// uniform random number in [0, 1): half the exponential step, plus up to
/// as much again at random, so that receivers coming back are not hit by
/// every node at once.
pub(crate) fn backoff(retry: u32, unit: f64) -> Duration {
    let step = BACKOFF_FIRST
        .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
        .min(BACKOFF_MAX);
    let half = step / 2;
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.0
    };
    half + half.mul_f64(unit)
}

/// The URL's counters and gauge: metrics carry the URL's index in
/// `webhooks.urls`, not the URL (its path or query may hold a secret).
fn label(target: usize) -> String {
    target.to_string()
}

/// An event this URL will never get: the queue was full.
pub(crate) fn dropped(target: usize) {
    metrics::counter!("switchboard_webhook_dropped_total", "target" => label(target)).increment(1);
}

/// `# HELP` for every webhook metric.
pub(crate) fn describe_metrics() {
    metrics::describe_counter!(
        "switchboard_webhook_delivered_total",
        "Webhook events a receiver answered with 2xx, by index in webhooks.urls"
    );
    metrics::describe_counter!(
        "switchboard_webhook_failed_attempts_total",
        "Webhook attempts that failed (non-2xx, no answer in time, refused address) and will be retried or given up"
    );
    metrics::describe_counter!(
        "switchboard_webhook_refused_total",
        "Webhook attempts refused because the receiver's address is not public (webhooks.allow_private is off)"
    );
    metrics::describe_counter!(
        "switchboard_webhook_dropped_total",
        "Webhook events dropped because the queue (webhooks.queue) was full"
    );
    metrics::describe_counter!(
        "switchboard_webhook_given_up_total",
        "Webhook events still undelivered webhooks.retry_secs after they happened"
    );
    metrics::describe_gauge!(
        "switchboard_webhook_queue",
        "Webhook events held for a receiver: waiting, in flight or between retries"
    );
}

/// The router's side of one URL.
pub(crate) struct Target {
    index: usize,
    url: String,
    tx: mpsc::UnboundedSender<Arc<Payload>>,
    /// Events held for this URL, from `offer` to delivered or given up.
    held: Arc<AtomicUsize>,
    cap: usize,
}

impl Target {
    /// Queues `p` for this URL, or drops and counts it when the queue is
    /// full. Never waits.
    pub(crate) fn offer(&self, p: Arc<Payload>) {
        let admitted = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.cap).then_some(n + 1)
            });
        match admitted {
            Ok(n) => {
                metrics::gauge!("switchboard_webhook_queue", "target" => label(self.index))
                    .set((n + 1) as f64);
                if self.tx.send(p).is_err() {
                    // The delivery task is gone (shutdown).
                    self.held.fetch_sub(1, Ordering::AcqRel);
                }
            }
            Err(_) => {
                dropped(self.index);
                tracing::debug!(target = self.index, "webhook queue full: event dropped");
            }
        }
    }

    /// The URL as configured.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// A new `webhooks.queue`: what is held beyond it stays.
    pub(crate) fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
    }
}

/// Starts the delivery task of one URL. It ends at shutdown, or once its
/// [`Target`] is dropped (the URL was removed), with what it held.
pub(crate) fn spawn(
    index: usize,
    url: String,
    endpoint: Endpoint,
    live: watch::Receiver<Live>,
    cap: usize,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> Target {
    let (tx, rx) = mpsc::unbounded_channel();
    let held = Arc::new(AtomicUsize::new(0));
    metrics::gauge!("switchboard_webhook_queue", "target" => label(index)).set(0.0);
    for name in [
        "switchboard_webhook_delivered_total",
        "switchboard_webhook_failed_attempts_total",
        "switchboard_webhook_refused_total",
        "switchboard_webhook_dropped_total",
        "switchboard_webhook_given_up_total",
    ] {
        // Listed at 0 from the start, so that a rate() has a baseline.
        metrics::counter!(name, "target" => label(index)).increment(0);
    }
    let worker = Worker {
        index,
        endpoint: Arc::new(endpoint),
        live,
        held: held.clone(),
    };
    tasks.spawn(worker.run(rx, shutdown));
    Target {
        index,
        url,
        tx,
        held,
        cap,
    }
}

/// The URL at `index` is gone: its gauge reads 0.
pub(crate) fn forget(index: usize) {
    metrics::gauge!("switchboard_webhook_queue", "target" => label(index)).set(0.0);
}

/// The order of delivery: per key, one event at a time, in arrival order;
/// keys side by side, at most `max` at once, the ones waiting longest
/// first. Pure bookkeeping, tested on its own.
#[derive(Debug)]
pub(crate) struct Lanes<T> {
    lanes: HashMap<String, VecDeque<T>>,
    /// Keys whose head may start, oldest first.
    ready: VecDeque<String>,
    active: usize,
    max: usize,
}

impl<T: Clone> Lanes<T> {
    pub(crate) fn new(max: usize) -> Self {
        Lanes {
            lanes: HashMap::new(),
            ready: VecDeque::new(),
            active: 0,
            max: max.max(1),
        }
    }

    /// Queues `item` behind whatever its key already has.
    pub(crate) fn push(&mut self, key: &str, item: T) {
        match self.lanes.get_mut(key) {
            Some(lane) => lane.push_back(item),
            None => {
                self.lanes.insert(key.to_owned(), VecDeque::from([item]));
                self.ready.push_back(key.to_owned());
            }
        }
    }

    /// The next head to deliver, if a slot is free: its key is busy until
    /// [`Lanes::done`].
    pub(crate) fn start(&mut self) -> Option<(String, T)> {
        if self.active >= self.max {
            return None;
        }
        let key = self.ready.pop_front()?;
        let head = self.lanes.get(&key)?.front()?.clone();
        self.active += 1;
        Some((key, head))
    }

    /// The head of `key` is finished (delivered or given up): the next
    /// one of that key may start.
    pub(crate) fn done(&mut self, key: &str) {
        self.active = self.active.saturating_sub(1);
        let Some(lane) = self.lanes.get_mut(key) else {
            return;
        };
        lane.pop_front();
        if lane.is_empty() {
            self.lanes.remove(key);
        } else {
            self.ready.push_back(key.to_owned());
        }
    }
}

struct Worker {
    index: usize,
    endpoint: Arc<Endpoint>,
    /// The client and retry span in force (a reload replaces them).
    live: watch::Receiver<Live>,
    held: Arc<AtomicUsize>,
}

impl Worker {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Arc<Payload>>, shutdown: CancellationToken) {
        let mut lanes = Lanes::new(MAX_IN_FLIGHT);
        let mut flying = FuturesUnordered::new();
        loop {
            while let Some((key, p)) = lanes.start() {
                flying.push(self.deliver(key, p));
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                p = rx.recv() => match p {
                    Some(p) => {
                        let key = p.key.clone();
                        lanes.push(&key, p);
                    }
                    None => return,
                },
                Some(key) = flying.next(), if !flying.is_empty() => {
                    lanes.done(&key);
                    let n = self.held.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
                    metrics::gauge!("switchboard_webhook_queue", "target" => label(self.index))
                        .set(n as f64);
                }
            }
        }
    }

    /// Delivers `p` or gives it up; returns its key.
    async fn deliver(&self, key: String, p: Arc<Payload>) -> String {
        let target = label(self.index);
        let mut retry = 0u32;
        loop {
            let Live {
                client,
                retry: span,
            } = self.live.borrow().clone();
            let deadline = p.happened + span;
            let result = client.post(&self.endpoint, &p).await;
            match result {
                Ok(status) => {
                    metrics::counter!("switchboard_webhook_delivered_total", "target" => target)
                        .increment(1);
                    tracing::debug!(target = self.index, id = %p.id, event = p.event, status, "webhook delivered");
                    return key;
                }
                Err(e) => {
                    metrics::counter!("switchboard_webhook_failed_attempts_total", "target" => target.clone())
                        .increment(1);
                    if e.is_refusal() {
                        metrics::counter!("switchboard_webhook_refused_total", "target" => target.clone())
                            .increment(1);
                    }
                    self.log_failure(&p, &e, retry);
                }
            }
            retry += 1;
            let wait = backoff(retry, rand::random::<f64>());
            if Instant::now() + wait > deadline {
                metrics::counter!("switchboard_webhook_given_up_total", "target" => target)
                    .increment(1);
                tracing::warn!(
                    target = self.index,
                    url = %self.endpoint.origin(),
                    id = %p.id,
                    event = p.event,
                    attempts = retry,
                    "webhook given up after webhooks.retry_secs"
                );
                return key;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// The first failure of an event and refusals at warn; retries at debug
    /// (a receiver that is down would otherwise fill the log).
    fn log_failure(&self, p: &Payload, e: &AttemptError, retry: u32) {
        if retry == 0 || e.is_refusal() {
            tracing::warn!(target = self.index, url = %self.endpoint.origin(), id = %p.id, event = p.event, error = %e, "webhook attempt failed");
        } else {
            tracing::debug!(target = self.index, id = %p.id, retry, error = %e, "webhook retry failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_a_cap() {
        // Low and high ends of each step's jitter range.
        let expect_ms = [(250, 500), (500, 1000), (1000, 2000), (2000, 4000)];
        for (i, (lo, hi)) in expect_ms.into_iter().enumerate() {
            let retry = i as u32 + 1;
            assert_eq!(
                backoff(retry, 0.0),
                Duration::from_millis(lo),
                "retry {retry}"
            );
            assert_eq!(
                backoff(retry, 1.0),
                Duration::from_millis(hi),
                "retry {retry}"
            );
            let mid = backoff(retry, 0.5);
            assert!(mid > Duration::from_millis(lo) && mid < Duration::from_millis(hi));
        }
        assert_eq!(backoff(8, 1.0), BACKOFF_MAX);
        assert_eq!(backoff(1000, 1.0), BACKOFF_MAX);
        assert_eq!(backoff(1000, 0.0), BACKOFF_MAX / 2);
        // Out-of-range randomness is clamped, never a panic.
        assert_eq!(backoff(1, 7.0), Duration::from_millis(500));
        assert_eq!(backoff(1, -1.0), Duration::from_millis(250));
        assert_eq!(backoff(1, f64::NAN), Duration::from_millis(250));
    }

    #[test]
    fn one_room_goes_one_at_a_time_in_order_rooms_go_side_by_side() {
        let mut lanes = Lanes::new(2);
        lanes.push("a", 1);
        lanes.push("a", 2);
        lanes.push("b", 10);
        lanes.push("c", 20);
        lanes.push("a", 3);
        // Room a's head and room b's head; a's next waits for a's head, c
        // for a free slot.
        assert_eq!(lanes.start(), Some(("a".into(), 1)));
        assert_eq!(lanes.start(), Some(("b".into(), 10)));
        assert_eq!(lanes.start(), None);
        lanes.done("b");
        assert_eq!(lanes.start(), Some(("c".into(), 20)));
        assert_eq!(lanes.start(), None, "a is busy, no slot anyway");
        lanes.done("c");
        assert_eq!(lanes.start(), None, "a's next waits for a's head");
        lanes.done("a");
        assert_eq!(lanes.start(), Some(("a".into(), 2)));
        lanes.push("b", 11);
        assert_eq!(lanes.start(), Some(("b".into(), 11)));
        lanes.done("a");
        lanes.done("b");
        assert_eq!(lanes.start(), Some(("a".into(), 3)));
        lanes.done("a");
        assert_eq!(lanes.start(), None);
        assert!(lanes.lanes.is_empty());
        assert_eq!(lanes.active, 0);
    }

    #[test]
    fn a_long_lane_does_not_starve_the_others() {
        let mut lanes = Lanes::new(1);
        for n in 0..5 {
            lanes.push("busy", n);
        }
        lanes.push("quiet", 100);
        let mut order = Vec::new();
        while let Some((key, n)) = lanes.start() {
            order.push(n);
            lanes.done(&key);
        }
        // The quiet room's event goes second, not after the busy backlog.
        assert_eq!(order, [0, 100, 1, 2, 3, 4]);
    }
}
