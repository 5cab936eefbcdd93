//! The SFU's shell (PROTOCOL.md §7): one UDP socket on `media.listen` for
//! every peer, and one driver task that owns the sans-IO
//! [`switchboard_sfu::Sfu`] and moves datagrams, signals and the clock
//! between it, the socket and the signaling [`Hub`].
//!
//! The hub hands its `MediaOutput`s over a [`MediaLink`] and never waits:
//! membership changes (rare) always go through, a `media` request finds the
//! driver busy at [`MAX_PENDING_SIGNALS`] and gets `unavailable`. One
//! ordered channel carries both, so a signal is never handled before the
//! join it follows.

pub mod config;
mod driver;
mod signal;
mod udp;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use crate::config::MediaConfig;
use crate::hub::Hub;
use crate::state::Lifecycle;

pub use driver::MediaStats;

/// `media` requests queued for the driver at most; beyond, they are
/// refused with `unavailable` rather than making the hub wait.
pub const MAX_PENDING_SIGNALS: usize = 1024;

/// How long `/metrics` waits for the driver's counters.
const STATS_WAIT: Duration = Duration::from_secs(1);

/// What the hub tells the driver, in the core's order.
#[derive(Debug)]
pub(crate) enum ToDriver {
    /// A peer entered an SFU room; `reached` is the local IP of its
    /// signaling connection, when known.
    Joined {
        room: String,
        peer: String,
        reached: Option<IpAddr>,
    },
    /// The peer left the room, however.
    Left { room: String, peer: String },
    /// A `media` request's data (validated as JSON by the core).
    Signal {
        room: String,
        peer: String,
        data: Box<RawValue>,
    },
    /// `/metrics` asks.
    Stats(oneshot::Sender<MediaStats>),
}

/// Counters the shell keeps itself (the core counts the rest).
#[derive(Debug, Default)]
pub(crate) struct ShellCounters {
    /// `media` requests refused because the driver was behind.
    pub(crate) signals_refused: AtomicU64,
    /// Datagrams the socket would not take (full send buffer).
    pub(crate) send_failures: AtomicU64,
}

/// The hub's end of the driver's queue. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MediaLink {
    tx: mpsc::UnboundedSender<ToDriver>,
    pending_signals: Arc<AtomicUsize>,
    counters: Arc<ShellCounters>,
    local: SocketAddr,
}

/// The driver is gone (stopping) or too far behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// [`MAX_PENDING_SIGNALS`] are waiting.
    Busy,
    /// The driver has stopped.
    Stopped,
}

impl MediaLink {
    /// The media socket's bound address.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// A peer entered an SFU room. Never refused while the driver runs.
    pub fn joined(&self, room: String, peer: String, reached: Option<IpAddr>) {
        let _ = self.tx.send(ToDriver::Joined {
            room,
            peer,
            reached,
        });
    }

    /// A peer left an SFU room.
    pub fn left(&self, room: String, peer: String) {
        let _ = self.tx.send(ToDriver::Left { room, peer });
    }

    /// A `media` request, unless the driver is [`MAX_PENDING_SIGNALS`]
    /// behind.
    pub fn signal(&self, room: String, peer: String, data: Box<RawValue>) -> Result<(), Refused> {
        if self.pending_signals.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING_SIGNALS {
            self.pending_signals.fetch_sub(1, Ordering::AcqRel);
            self.counters
                .signals_refused
                .fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Busy);
        }
        self.tx
            .send(ToDriver::Signal { room, peer, data })
            .map_err(|_| {
                self.pending_signals.fetch_sub(1, Ordering::AcqRel);
                Refused::Stopped
            })
    }

    /// The SFU's counters, `None` when the driver did not answer in time.
    pub async fn stats(&self) -> Option<MediaStats> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(ToDriver::Stats(tx)).ok()?;
        let mut stats = tokio::time::timeout(STATS_WAIT, rx).await.ok()?.ok()?;
        stats.signals_refused = self.counters.signals_refused.load(Ordering::Relaxed);
        stats.send_failures = self.counters.send_failures.load(Ordering::Relaxed);
        Some(stats)
    }
}

/// Binds `media.listen` and starts the driver; `None` when the SFU is off
/// (`media.listen = ""`).
///
/// The default address is a convenience, as `admin.listen`'s is: when it
/// is taken (two nodes on one host) the node starts without the SFU and
/// says so. An address set on purpose must bind.
pub fn start(
    cfg: &MediaConfig,
    hub: &Arc<Hub>,
    life: &Lifecycle,
) -> anyhow::Result<Option<MediaLink>> {
    let Some(addr) = cfg.listen_addr()? else {
        return Ok(None);
    };
    let socket = match udp::MediaSocket::bind(addr) {
        Ok(socket) => socket,
        Err(e) if cfg.is_default_listen() => {
            tracing::warn!(
                "SFU off: binding media.listen {addr}: {e}; set media.listen to another address (or \"\" to silence this)"
            );
            return Ok(None);
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("binding media.listen {addr}"))),
    };
    let local = socket.local();
    let (tx, rx) = mpsc::unbounded_channel();
    let link = MediaLink {
        tx,
        pending_signals: Arc::new(AtomicUsize::new(0)),
        counters: Arc::new(ShellCounters::default()),
        local,
    };
    let driver = driver::Driver::new(
        socket,
        sfu_config(cfg),
        cfg.public_ip,
        hub.clone(),
        rx,
        link.clone(),
        life.shutdown.clone(),
    );
    life.tasks.spawn(driver.run());
    tracing::info!(%local, public_ip = ?cfg.public_ip, "SFU media socket listening");
    Ok(Some(link))
}

/// The core's settings from `[media]`; the rest keep the core's defaults.
fn sfu_config(cfg: &MediaConfig) -> switchboard_sfu::SfuConfig {
    let mut config = switchboard_sfu::SfuConfig::default();
    config.connect_timeout = Duration::from_secs(cfg.connect_timeout_secs.max(1));
    config.answer_timeout = Duration::from_secs(cfg.answer_timeout_secs.max(1));
    config.peer_max_bitrate_bps = cfg.peer_max_kbps.saturating_mul(1000);
    config.peer_max_datagram_rate = cfg.peer_max_datagrams_per_sec;
    config.peer_flood_timeout = Duration::from_secs(cfg.peer_flood_secs);
    config
}

/// Where peers reach the media socket: `public_ip`, else the bound IP,
/// else every address of this host's interfaces (the socket listens on
/// all of them), each with the socket's port. What TURN must let its
/// clients relay to (PROTOCOL.md §7).
pub fn reachable_addresses(
    local: SocketAddr,
    public_ip: Option<IpAddr>,
) -> anyhow::Result<Vec<SocketAddr>> {
    let port = local.port();
    let mut ips: Vec<IpAddr> = public_ip.into_iter().collect();
    if !local.ip().is_unspecified() {
        ips.push(local.ip());
    } else {
        ips.push(match local {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
        let interfaces = nix::ifaddrs::getifaddrs().context("listing the host's addresses")?;
        for interface in interfaces {
            let Some(address) = interface.address else {
                continue;
            };
            let ip = match (local, address.as_sockaddr_in(), address.as_sockaddr_in6()) {
                (SocketAddr::V4(_), Some(v4), _) => IpAddr::V4(v4.ip()),
                (SocketAddr::V6(_), _, Some(v6)) => IpAddr::V6(v6.ip()),
                _ => continue,
            };
            ips.push(ip);
        }
    }
    ips.sort_unstable();
    ips.dedup();
    Ok(ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> (MediaLink, mpsc::UnboundedReceiver<ToDriver>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let link = MediaLink {
            tx,
            pending_signals: Arc::new(AtomicUsize::new(0)),
            counters: Arc::new(ShellCounters::default()),
            local: "127.0.0.1:3480".parse().expect("addr"),
        };
        (link, rx)
    }

    fn data() -> Box<RawValue> {
        RawValue::from_string(r#"{"kind":"offer","sdp":"v=0"}"#.to_owned()).expect("json")
    }

    #[test]
    fn a_driver_behind_refuses_signals_but_never_joins_or_leaves() {
        let (link, mut rx) = link();
        link.joined("r".into(), "a".into(), None);
        for _ in 0..MAX_PENDING_SIGNALS {
            link.signal("r".into(), "a".into(), data())
                .expect("room in the queue");
        }
        assert_eq!(
            link.signal("r".into(), "a".into(), data()),
            Err(Refused::Busy)
        );
        assert_eq!(link.counters.signals_refused.load(Ordering::Relaxed), 1);
        link.left("r".into(), "a".into());
        // In order: the join, every signal taken, the leave.
        assert!(matches!(rx.try_recv(), Ok(ToDriver::Joined { .. })));
        for _ in 0..MAX_PENDING_SIGNALS {
            assert!(matches!(rx.try_recv(), Ok(ToDriver::Signal { .. })));
        }
        assert!(matches!(rx.try_recv(), Ok(ToDriver::Left { .. })));
        // The driver counts a signal out when it takes it: room again.
        link.pending_signals.fetch_sub(1, Ordering::AcqRel);
        assert_eq!(link.signal("r".into(), "a".into(), data()), Ok(()));
        drop(rx);
        link.pending_signals.store(0, Ordering::Release);
        assert_eq!(
            link.signal("r".into(), "a".into(), data()),
            Err(Refused::Stopped)
        );
    }

    #[test]
    fn reachable_addresses_follow_the_binding() {
        let public: IpAddr = "203.0.113.7".parse().expect("ip");
        let bound: SocketAddr = "127.0.0.1:3480".parse().expect("addr");
        assert_eq!(
            reachable_addresses(bound, Some(public)).expect("lists"),
            [
                "127.0.0.1:3480".parse().expect("addr"),
                "203.0.113.7:3480".parse().expect("addr")
            ]
        );
        let any: SocketAddr = "0.0.0.0:3480".parse().expect("addr");
        let all = reachable_addresses(any, None).expect("lists");
        assert!(
            all.contains(&"127.0.0.1:3480".parse().expect("addr")),
            "{all:?}"
        );
        assert!(
            all.iter().all(|a| a.port() == 3480 && a.is_ipv4()),
            "{all:?}"
        );
    }
}
