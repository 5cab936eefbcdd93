//! STUN/TURN service: the tokio shell around the sans-IO
//! [`switchboard_turn::TurnServer`].
//!
//! UDP runs on reactor threads (`reactor.rs`): one per listener socket
//! (SO_REUSEPORT, one per CPU), each waiting on its listener and a share of
//! the relay sockets. TCP/TLS runs on tokio: one task per connection, one
//! accept loop per stream listener, and one timer task. All share one core
//! behind a std `Mutex` (see `driver.rs` for why). Relay sockets are bound
//! synchronously when the core asks for them (`Event::BindRelay`), and
//! answered with `TurnServer::relay_bound` right away.
//!
//! Credentials for signaling clients are minted by `crate::ice`, which
//! shares only the REST secret with this service.

mod admin;
mod config;
mod driver;
mod exported;
mod per_ip;
mod reactor;
mod reload;
mod stream;
mod udp;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine as _;
use switchboard_turn::{Cidr, Metrics, PeerPolicy, ServerConfig, TurnServer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use admin::{ADMIN_WAIT, EndReason, TurnAdminError, TurnAllocation, TurnAllocationEvent};
pub use config::{PortRange, PortRangeError, TurnSettings};
use driver::{RelayPlan, Shared, timer_loop};
use per_ip::ConnectionsPerSource;
/// How a limit counts sources (an IPv6 /64 is one), shared with `crate::ice`.
pub(crate) use per_ip::source_key;
use reactor::Reactor;
pub use reload::{TURN_RELOADABLE_KEYS, TurnReloadError};
pub use stream::TlsHandoff;
use stream::{StreamContext, accept_loop};
use udp::UdpEndpoint;
/// The media socket (`crate::media`) asks the kernel for as little as TURN does.
pub(crate) use udp::{RecvBuffers, quiet_receive};

/// Attempts at finding a port free for both UDP and TCP when `listen` has port 0.
const SHARED_PORT_ATTEMPTS: usize = 16;

/// Handle on the running STUN/TURN service. Cheap to clone.
#[derive(Clone)]
pub struct TurnService {
    inner: Arc<ServiceInner>,
}

struct ServiceInner {
    shared: Option<Arc<Shared>>,
    udp: Option<SocketAddr>,
    tcp: Option<SocketAddr>,
    tls: Option<SocketAddr>,
    /// Entry for TURN-over-TLS connections accepted on the one TLS port.
    handoff: Option<TlsHandoff>,
    tasks: TaskTracker,
}

impl std::fmt::Debug for TurnService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnService")
            .field("udp", &self.inner.udp)
            .field("tcp", &self.inner.tcp)
            .field("tls", &self.inner.tls)
            .finish_non_exhaustive()
    }
}

impl TurnService {
    /// The bound UDP listener address, `None` when TURN is disabled.
    pub fn local_udp(&self) -> Option<SocketAddr> {
        self.inner.udp
    }

    /// The bound TCP listener address.
    pub fn local_tcp(&self) -> Option<SocketAddr> {
        self.inner.tcp
    }

    /// The bound TLS listener address, when a certificate was given.
    pub fn local_tls(&self) -> Option<SocketAddr> {
        self.inner.tls
    }

    /// Where TURN-over-TLS connections accepted elsewhere (the one TLS
    /// port shared with HTTPS) are served; `None` when TURN is disabled.
    pub fn tls_handoff(&self) -> Option<TlsHandoff> {
        self.inner.handoff.clone()
    }

    /// A snapshot of the core's counters.
    pub fn metrics(&self) -> Metrics {
        self.inner
            .shared
            .as_ref()
            .map(|s| s.lock().server.metrics())
            .unwrap_or_default()
    }

    /// Datagrams and stream frames dropped because a socket buffer or a
    /// connection's queue was full.
    pub fn send_failures(&self) -> u64 {
        self.inner
            .shared
            .as_ref()
            .map_or(0, |s| s.lock().io.send_failures)
    }

    /// Pushes the counters into the process's `metrics` recorder (for
    /// `/metrics`), each with its `# HELP`.
    pub fn export_metrics(&self) {
        exported::export(&self.metrics(), self.send_failures());
    }

    /// Lets clients relay to `peers`, this host's own service addresses
    /// (the SFU's media socket), which the peer policy refuses otherwise.
    /// Kept across reloads. A no-op when TURN is disabled.
    pub fn allow_service_peers(&self, peers: Vec<SocketAddr>) {
        let Some(shared) = &self.inner.shared else {
            return;
        };
        let mut core = shared.lock();
        let mut config = core.server.config().clone();
        config.service_peers = peers;
        core.server.reconfigure(config);
    }

    /// Waits until every task of the service has ended (after shutdown).
    pub async fn closed(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

/// Binds the listeners and starts serving STUN/TURN. Returns once every
/// listener is bound; the service stops when `shutdown` is cancelled.
pub async fn start(
    settings: &TurnSettings,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> anyhow::Result<TurnService> {
    let mut secrets: Vec<String> = settings
        .rest_secret
        .iter()
        .chain(settings.rest_secrets.iter())
        .filter(|s| !s.is_empty())
        .cloned()
        .collect();
    if secrets.is_empty() {
        let mut random = [0u8; 32];
        rand::fill(&mut random);
        secrets.push(base64::engine::general_purpose::STANDARD_NO_PAD.encode(random));
    }
    let tasks = TaskTracker::new();
    if !settings.enabled {
        return Ok(TurnService {
            inner: Arc::new(ServiceInner {
                shared: None,
                udp: None,
                tcp: None,
                tls: None,
                handoff: None,
                tasks,
            }),
        });
    }

    let config = server_config(settings, &secrets)?;
    let (udp, tcp) = bind_udp_and_tcp(settings)?;
    let udp_local = udp.first().map(|ep| ep.local).context("no UDP listener")?;
    let tcp_local = tcp.local_addr()?;
    let tls_listener = match &tls {
        Some(_) => Some(
            TcpListener::bind(settings.tls_listen)
                .await
                .with_context(|| format!("binding turn.tls_listen {}", settings.tls_listen))?,
        ),
        None => None,
    };
    let tls_local = tls_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;

    let mut config = config;
    let listen_ip = udp_local.ip();
    config.relay_ipv4 = settings.relay_ip.is_some_and(|ip| ip.is_ipv4()) || listen_ip.is_ipv4();
    config.relay_ipv6 = settings.relay_ip.is_some_and(|ip| ip.is_ipv6())
        || settings.relay_ipv6.is_some()
        || listen_ip.is_ipv6();
    let plan = RelayPlan {
        ports: settings.relay_ports,
        relay_ip: settings.relay_ip,
        relay_ipv6: settings.relay_ipv6,
        external_ip: settings.external_ip,
    };
    let server = TurnServer::new(config, Instant::now());
    let (reactors, handles): (Vec<_>, Vec<_>) = udp
        .iter()
        .map(|endpoint| Reactor::new(endpoint.clone()))
        .collect::<std::io::Result<Vec<_>>>()
        .context("creating the UDP reactors")?
        .into_iter()
        .unzip();
    // The service's own token, so that a failed start can stop the threads
    // it started without shutting the whole process down.
    let service_shutdown = shutdown.child_token();
    let shared = Arc::new(Shared::new(
        server,
        udp,
        handles,
        plan,
        service_shutdown.clone(),
        tasks.clone(),
    ));
    let mut threads = Vec::with_capacity(reactors.len());
    for (index, reactor) in reactors.into_iter().enumerate() {
        match reactor.spawn(shared.clone(), index) {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                service_shutdown.cancel();
                for handle in &shared.reactors {
                    handle.wake();
                }
                return Err(anyhow::Error::new(e).context("starting a UDP reactor thread"));
            }
        }
    }
    tasks.spawn(reactor::join_at_shutdown(shared.clone(), threads));
    tasks.spawn(timer_loop(shared.clone()));
    let ctx = StreamContext {
        shared: shared.clone(),
        connections: Arc::new(Semaphore::new(settings.max_connections.max(1))),
        per_source: ConnectionsPerSource::new(settings.max_connections_per_ip),
        idle_timeout: Duration::from_secs(settings.max_lifetime_secs.max(60) + 60),
        allocate_within: Duration::from_secs(settings.allocate_within_secs.max(1)),
    };
    let handoff = TlsHandoff::new(ctx.clone());
    tasks.spawn(accept_loop(ctx.clone(), tcp, None));
    if let (Some(listener), Some(tls)) = (tls_listener, tls) {
        tasks.spawn(accept_loop(
            ctx,
            listener,
            Some(tokio_rustls::TlsAcceptor::from(tls)),
        ));
    }
    tracing::info!(udp = %udp_local, tcp = %tcp_local, tls = ?tls_local, realm = %settings.realm, "STUN/TURN listening");

    Ok(TurnService {
        inner: Arc::new(ServiceInner {
            shared: Some(shared),
            udp: Some(udp_local),
            tcp: Some(tcp_local),
            tls: tls_local,
            handoff: Some(handoff),
            tasks,
        }),
    })
}

fn server_config(settings: &TurnSettings, secrets: &[String]) -> anyhow::Result<ServerConfig> {
    let mut nonce_secret = [0u8; 32];
    rand::fill(&mut nonce_secret);
    let mut config = ServerConfig::new(settings.realm.clone(), nonce_secret.to_vec());
    for (name, password) in &settings.users {
        config.credentials.add_user(name.clone(), password.clone());
    }
    for secret in secrets {
        config.credentials.add_rest_secret(secret.as_bytes());
    }
    let mut policy = PeerPolicy::new();
    for range in &settings.allowed_peer_ranges {
        policy.allow(range.parse::<Cidr>().context("turn.allowed_peer_ranges")?);
    }
    for range in &settings.denied_peer_ranges {
        policy.deny(range.parse::<Cidr>().context("turn.denied_peer_ranges")?);
    }
    config.policy = policy;
    config.allow_rfc5766_channels = settings.allow_rfc5766_channels;
    config.max_allocations = settings.max_allocations;
    config.max_allocations_per_user = settings.max_allocations_per_user;
    config.max_allocations_per_ip = settings.max_allocations_per_ip;
    config.max_request_bytes = settings.max_request_bytes;
    config.challenges_per_ip_per_sec = settings.challenges_per_ip_per_sec;
    config.own_addresses = own_addresses(settings);
    config.max_lifetime = Duration::from_secs(settings.max_lifetime_secs.max(1));
    config.default_lifetime = config.default_lifetime.min(config.max_lifetime);
    config.nonce_lifetime = Duration::from_secs(settings.nonce_lifetime_secs.max(1));
    Ok(config)
}

/// This host's addresses as configured, refused as TURN peers (the core
/// adds the ones clients reach and relays get, which covers wildcard
/// listeners).
fn own_addresses(settings: &TurnSettings) -> Vec<IpAddr> {
    let relay_ipv6 = settings.relay_ipv6.map(IpAddr::V6);
    [settings.listen.ip(), settings.tls_listen.ip()]
        .into_iter()
        .chain(settings.external_ip)
        .chain(settings.relay_ip)
        .chain(relay_ipv6)
        .filter(|ip| !ip.is_unspecified())
        .collect()
}

/// UDP sockets (one per CPU) and a TCP listener on the same port. With port
/// 0 the UDP port is chosen first and TCP must follow it; a port taken for
/// TCP by someone else means trying again.
fn bind_udp_and_tcp(
    settings: &TurnSettings,
) -> anyhow::Result<(Vec<Arc<UdpEndpoint>>, TcpListener)> {
    let count = match settings.udp_sockets {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let attempts = if settings.listen.port() == 0 {
        SHARED_PORT_ATTEMPTS
    } else {
        1
    };
    let mut last_error = None;
    for _ in 0..attempts {
        let first = UdpEndpoint::listener(settings.listen)
            .with_context(|| format!("binding turn.listen {} (UDP)", settings.listen))?;
        let addr = first.local;
        let tcp = match std::net::TcpListener::bind(addr) {
            Ok(tcp) => tcp,
            Err(e) => {
                last_error = Some(
                    anyhow::Error::new(e).context(format!("binding turn.listen {addr} (TCP)")),
                );
                continue;
            }
        };
        tcp.set_nonblocking(true)?;
        let mut sockets = vec![Arc::new(first)];
        for _ in 1..count {
            let more = UdpEndpoint::listener(addr)
                .with_context(|| format!("binding turn.listen {addr} (UDP)"))?;
            sockets.push(Arc::new(more));
        }
        return Ok((sockets, TcpListener::from_std(tcp)?));
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("binding turn.listen {}", settings.listen)))
}
