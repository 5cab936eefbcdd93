//! The process: starts every listener, serves until SIGTERM/SIGINT, then
//! shuts down in bounded time. SIGHUP reloads the configuration in between
//! (see [`crate::reload`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use switchboard_signal::{MediaKind, SignalCore};
use tokio::sync::Semaphore;

use crate::auth::Authenticator;
use crate::cluster::Backplane;
use crate::config::{Cli, Config, RoomMedia};
use crate::hub::Hub;
use crate::ice::{IceServers, LocalTurn};
use crate::reload::Reloader;
use crate::state::{
    AppState, ConnLimits, Health, IceApi, Lifecycle, LiveLimits, MetricsSources, Signaling,
};
use crate::turn::TurnService;

/// Addresses actually bound (ports may have been 0), printed on the
/// `READY` line for tests and scripts.
#[derive(Debug, Clone, Serialize)]
pub struct Bound {
    /// Plain HTTP.
    pub http: SocketAddr,
    /// HTTPS, when TLS is on.
    pub https: Option<SocketAddr>,
    /// STUN/TURN over UDP.
    pub turn_udp: Option<SocketAddr>,
    /// STUN/TURN over TCP.
    pub turn_tcp: Option<SocketAddr>,
    /// STUN/TURN over TLS.
    pub turn_tls: Option<SocketAddr>,
    /// The admin API, when it listens.
    pub admin: Option<SocketAddr>,
    /// The SFU's media socket (UDP), when it listens.
    pub media: Option<SocketAddr>,
}

pub(crate) fn core_config(cfg: &Config) -> switchboard_signal::Config {
    switchboard_signal::Config {
        max_peers: cfg.rooms.max_peers,
        max_rooms_per_session: cfg.limits.max_rooms_per_session,
        max_message_bytes: cfg.limits.max_message_bytes,
        rate_per_sec: cfg.limits.rate_per_sec,
        rate_burst: cfg.limits.rate_burst,
        resume_grace: cfg.session.resume_grace(),
        replay_frames: cfg.session.replay_frames,
        replay_bytes: cfg.session.replay_bytes,
        ring_timeout: Duration::from_secs(cfg.calls.ring_timeout_secs),
        max_meta_bytes: cfg.limits.max_meta_bytes,
        max_room_meta_bytes: cfg.limits.max_room_meta_bytes,
        max_ringing_per_caller: cfg.calls.max_ringing_per_caller,
        max_suspended_per_user: cfg.session.max_suspended_per_user,
        max_suspended_per_ip: cfg.session.max_suspended_per_ip,
        default_media: match cfg.rooms.media {
            RoomMedia::Mesh => MediaKind::Mesh,
            RoomMedia::Sfu => MediaKind::Sfu,
        },
    }
}

fn bind_tcp(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Runs the server until a shutdown signal. `ready` receives the bound
/// addresses once every listener is up. A SIGHUP reads the certificate
/// files again, and nothing else: see [`run_reloading`].
pub async fn run(cfg: Config, ready: impl FnOnce(&Bound)) -> anyhow::Result<()> {
    serve(cfg, None, ready).await
}

/// [`run`], where a SIGHUP loads the configuration again as `cli` did at
/// start (its file, the environment, its flags) when it names a file.
pub async fn run_reloading(
    cfg: Config,
    cli: Cli,
    ready: impl FnOnce(&Bound),
) -> anyhow::Result<()> {
    let source = cli.config.is_some().then_some(cli);
    serve(cfg, source, ready).await
}

async fn serve(cfg: Config, source: Option<Cli>, ready: impl FnOnce(&Bound)) -> anyhow::Result<()> {
    // Before anything can announce READY: a SIGTERM that arrives before
    // the handlers exist would kill the process with no goodbyes, and a
    // SIGHUP would kill it outright (its default action).
    let mut stop = StopSignals::install();
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")?;
    let mut node = Node::start(cfg, source).await?;
    banner(&node.bound);
    ready(&node.bound);
    loop {
        #[cfg(unix)]
        let reload = hup.recv();
        #[cfg(not(unix))]
        let reload = std::future::pending::<Option<()>>();
        tokio::select! {
            () = stop.recv() => break,
            Some(()) = reload => {
                // Logged and counted there; the node serves on either way.
                let _ = node.reloader.reload().await;
            }
        }
    }
    node.shutdown().await;
    Ok(())
}

/// A running node: what shutdown needs to reach.
struct Node {
    bound: Bound,
    life: Lifecycle,
    hub: Arc<Hub>,
    cluster: Option<Arc<Backplane>>,
    turn: TurnService,
    shutdown_timeout: Duration,
    reloader: Reloader,
}

impl Node {
    /// Binds every listener and starts serving.
    async fn start(mut cfg: Config, source: Option<Cli>) -> anyhow::Result<Self> {
        // Install the recorder before anything records.
        let _ = crate::telemetry::metrics_handle();
        crate::metrics_help::describe();
        crate::reload::describe_metrics();
        // TURN checks and `ice_servers` mints with the same secret, a random
        // one when none is configured.
        crate::ice::ensure_rest_secret(&mut cfg.turn);
        let stop_code = if cfg.cluster.redis_url.is_some() {
            1012
        } else {
            1001
        };
        let life = Lifecycle::new(stop_code);
        let certs = crate::tls::CertStore::from_config(&cfg.tls)?;
        let tls = certs.as_ref().map(crate::tls::CertStore::server_config);
        // One TLS port (PROTOCOL.md §8): bound here, TURN binds no TLS listener of its own.
        let one_port = match &tls {
            Some(_) if crate::one_port::shares_port(&cfg) => {
                Some(tokio::net::TcpListener::from_std(
                    bind_tcp(cfg.http.tls_listen).context("http.tls_listen = turn.tls_listen")?,
                )?)
            }
            _ => None,
        };
        let one_port_addr = one_port.as_ref().map(|l| l.local_addr()).transpose()?;
        let turn_tls = tls.clone().filter(|_| one_port.is_none());
        let turn = crate::turn::start(&cfg.turn, turn_tls, life.shutdown.child_token())
            .await
            .context("starting STUN/TURN")?;
        let local_turn = LocalTurn {
            tls: turn.local_tls().or(one_port_addr),
            ..LocalTurn::of(&turn)
        };
        let ice = Arc::new(IceServers::new(&cfg.turn, local_turn)?);
        let (hub, cluster) = start_hub(&cfg, &life);
        let webhooks = crate::webhooks::start(&cfg, life.shutdown.clone(), &life.tasks)?;
        hub.set_webhooks(webhooks.clone());
        forward_allocation_events(&turn, webhooks.clone(), &life);
        let media = start_media(&cfg, &life, &hub, &turn)?;
        let auth = Arc::new(Authenticator::new(&cfg.auth)?);
        let connections = Arc::new(Semaphore::new(cfg.limits.max_connections));
        let limits = LiveLimits::new(conn_limits(&cfg));
        let state = AppState {
            signaling: Signaling {
                hub: hub.clone(),
                auth: auth.clone(),
                ice: ice.clone(),
                connections: connections.clone(),
                limits: limits.clone(),
                life: life.clone(),
            },
            ice_api: IceApi {
                auth: auth.clone(),
                ice: ice.clone(),
            },
            health: Health {
                shutdown: life.shutdown.clone(),
                draining: life.draining.clone(),
                cluster: cluster.clone(),
            },
            metrics: MetricsSources {
                hub: hub.clone(),
                turn: Some(turn.clone()),
                media: media.clone(),
            },
        };
        life.tasks
            .spawn(hub.clone().run_timers(life.shutdown.clone()));

        let http_limits = crate::serve::HttpLimits::from_config(&cfg);
        if cfg.limits.max_http_connections != 0
            && cfg.limits.max_http_connections <= cfg.limits.max_connections
        {
            tracing::warn!(
                "limits.max_http_connections ({}) is not above limits.max_connections ({}): \
                 WebSockets can take every HTTP connection, leaving none for the API",
                cfg.limits.max_http_connections,
                cfg.limits.max_connections
            );
        }
        let listener = crate::serve::Listener {
            router: crate::router::router(state),
            admission: crate::serve::Admission::new(&http_limits),
            limits: http_limits,
            tasks: life.tasks.clone(),
            // Not `shutdown`: a polling Socket.IO client fetches its DISCONNECT
            // with one more request, so the listeners serve until that drain.
            stop: life.socketio_drained.clone(),
        };
        let http = tokio::net::TcpListener::from_std(bind_tcp(cfg.http.listen)?)?;
        let http_addr = http.local_addr()?;
        life.tasks.spawn(listener.clone().serve_plain(http));
        let https_addr = match (&tls, one_port) {
            (Some(tls), Some(shared)) => {
                let source: crate::one_port::TlsConfigSource = Arc::new({
                    let tls = tls.clone();
                    move || tls.clone()
                });
                let one = crate::one_port::OnePort::new(listener, source, turn.tls_handoff());
                life.tasks.spawn(one.serve(shared));
                one_port_addr
            }
            (Some(tls), None) => {
                let https = tokio::net::TcpListener::from_std(bind_tcp(cfg.http.tls_listen)?)?;
                let addr = https.local_addr()?;
                life.tasks.spawn(listener.serve_tls(https, tls.clone()));
                Some(addr)
            }
            (None, _) => None,
        };

        let admin = start_admin(&cfg, &life, &hub, &turn)?;

        let bound = Bound {
            http: http_addr,
            https: https_addr,
            turn_udp: turn.local_udp(),
            turn_tcp: turn.local_tcp(),
            turn_tls: local_turn.tls,
            admin,
            media: media.as_ref().map(crate::media::MediaLink::local),
        };
        let reloader = Reloader {
            cli: source,
            certs,
            auth,
            ice,
            hub: hub.clone(),
            turn: turn.clone(),
            webhooks,
            limits,
            connections,
            shutdown: life.shutdown.clone(),
            tasks: life.tasks.clone(),
            running: cfg,
        };
        Ok(Self {
            bound,
            life,
            hub,
            cluster,
            turn,
            shutdown_timeout: Duration::from_secs(
                reloader.running.http.shutdown_timeout_secs.max(1),
            ),
            reloader,
        })
    }

    /// Closes every session with the stop code and waits, bounded, for the
    /// connections' goodbyes.
    async fn shutdown(self) {
        let stop_code = self.life.stop_code;
        tracing::info!("shutting down: closing sessions with {stop_code}");
        self.life.shutdown.cancel();
        if let Some(bp) = &self.cluster {
            // What the sessions got is in Redis before their clients come back
            // elsewhere (the core sends nothing unwritten, but acks and counts
            // may still be queued). The SFU rooms this node relays move
            // first, so that their members offer to the new media node
            // while this one still answers.
            self.hub.media_away();
            self.hub.close_all(stop_code, "service restart");
            bp.flush(Duration::from_secs(2)).await;
        } else {
            self.hub.close_all(stop_code, "server shutting down");
        }
        self.life.tasks.close();
        let limit = self.shutdown_timeout;
        if tokio::time::timeout(limit, async {
            self.life.tasks.wait().await;
            self.turn.closed().await
        })
        .await
        .is_err()
        {
            tracing::warn!("some connections did not close within {limit:?}; exiting anyway");
        }
    }
}

/// The admin API's listener (PROTOCOL.md §8), when `admin.listen` is set.
///
/// The default address is a convenience, not a promise: when it is taken
/// (another node on the same host, a test run) the node starts without
/// its admin API and says so. An address set on purpose must bind.
fn start_admin(
    cfg: &Config,
    life: &Lifecycle,
    hub: &Arc<Hub>,
    turn: &TurnService,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(addr) = cfg.admin.listen_addr()? else {
        return Ok(None);
    };
    let std_listener = match bind_tcp(addr) {
        Ok(l) => l,
        Err(e) if cfg.admin.listen.trim() == crate::config::DEFAULT_ADMIN_LISTEN => {
            tracing::warn!(
                "admin API off: {e:#}; set admin.listen to another address (or \"\" to silence this)"
            );
            return Ok(None);
        }
        Err(e) => return Err(e.context("admin.listen")),
    };
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let bound = listener.local_addr()?;
    let state = crate::admin::AdminState {
        token: cfg.admin.token().map(Arc::from),
        life: life.clone(),
        hub: hub.clone(),
        turn: turn.clone(),
    };
    let limits = crate::serve::HttpLimits {
        // A handful of operators and scripts, never thousands of clients.
        max_connections: 64,
        max_per_ip: 0,
        ..crate::serve::HttpLimits::from_config(cfg)
    };
    let admin = crate::serve::Listener {
        router: crate::admin::router(state),
        admission: crate::serve::Admission::new(&limits),
        limits,
        tasks: life.tasks.clone(),
        stop: life.shutdown.clone(),
    };
    life.tasks.spawn(admin.serve_plain(listener));
    if cfg.admin.token().is_none() {
        tracing::info!(%bound, "admin API listening, without a token (loopback only)");
    } else {
        tracing::info!(%bound, "admin API listening");
    }
    Ok(Some(bound))
}

/// The SFU (PROTOCOL.md §7), when `media.listen` is set and binds: its
/// driver takes the hub's SFU rooms, and TURN lets clients relay to it.
fn start_media(
    cfg: &Config,
    life: &Lifecycle,
    hub: &Arc<Hub>,
    turn: &TurnService,
) -> anyhow::Result<Option<crate::media::MediaLink>> {
    let link = crate::media::start(&cfg.media, hub, life)?;
    let Some(link) = link else {
        // `validate` refused this with media off on purpose; here the
        // default address was taken.
        anyhow::ensure!(
            cfg.rooms.media == RoomMedia::Mesh,
            "rooms.media = \"sfu\" needs the SFU, and media.listen {} could not be bound",
            cfg.media.listen
        );
        return Ok(None);
    };
    hub.set_media(link.clone());
    let reachable = crate::media::reachable_addresses(link.local(), cfg.media.public_ip)?;
    tracing::debug!(?reachable, "TURN clients may relay to the SFU");
    turn.allow_service_peers(reachable);
    Ok(Some(link))
}

/// The signaling core's driver, clustered when `cluster.redis_url` is set.
fn start_hub(cfg: &Config, life: &Lifecycle) -> (Arc<Hub>, Option<Arc<Backplane>>) {
    let mut seed = [0u8; 32];
    rand::fill(&mut seed);
    let Some(url) = &cfg.cluster.redis_url else {
        return (Hub::new(SignalCore::new(core_config(cfg), seed)), None);
    };
    let node = crate::cluster::node_id(cfg);
    let backplane = Arc::new(Backplane::default());
    let core = SignalCore::clustered(
        core_config(cfg),
        seed,
        switchboard_signal::ClusterConfig {
            node: node.clone(),
            node_timeout: Duration::from_secs(cfg.cluster.node_timeout_secs.max(1)),
        },
    );
    let out: Arc<dyn crate::hub::BackplaneOut> = backplane.clone();
    let hub = Hub::with_backplane(core, Some(out));
    tracing::info!(%node, "cluster node: rooms and sessions shared through Redis");
    crate::cluster::start(
        cfg,
        url.clone(),
        node,
        hub.clone(),
        backplane.clone(),
        life.shutdown.clone(),
        &life.tasks,
    );
    (hub, Some(backplane))
}

/// The connection tasks' limits, from `[session]` and `[limits]`.
pub(crate) fn conn_limits(cfg: &Config) -> ConnLimits {
    ConnLimits {
        // A slow reader is closed once its queue is full; everything
        // queued must still be in its replay buffer for the resume.
        outbound_queue_frames: cfg
            .session
            .outbound_queue_frames
            .min(cfg.session.replay_frames / 2)
            .max(1),
        // The same in bytes: what was queued but unsent when a slow
        // reader is closed is still in replay (PROTOCOL.md §1).
        outbound_queue_bytes: (cfg.session.replay_bytes / 2).max(1),
        transport_max_frame: (cfg.limits.max_message_bytes.saturating_mul(4)).max(1 << 20),
        socketio_connect_timeout: Duration::from_secs(
            cfg.limits.socketio_connect_timeout_secs.max(1),
        ),
        socketio_pending_per_ip: cfg.limits.socketio_pending_per_ip,
        heartbeat_interval: Duration::from_secs(cfg.session.heartbeat_interval_secs.max(1)),
        heartbeat_timeout: Duration::from_secs(cfg.session.heartbeat_timeout_secs.max(1)),
    }
}

fn banner(b: &Bound) {
    let port = b.http.port();
    tracing::info!("switchboard {} ready", env!("CARGO_PKG_VERSION"));
    tracing::info!("  web client:  http://localhost:{port}/  (open it in two tabs for a call)");
    tracing::info!(
        "  signaling:   ws://localhost:{port}/ws   socket.io: http://localhost:{port}/socket.io/"
    );
    if let Some(https) = b.https {
        tracing::info!("  https:       https://localhost:{}/", https.port());
    }
    if let (Some(udp), Some(tcp)) = (b.turn_udp, b.turn_tcp) {
        tracing::info!("  STUN/TURN:   udp {udp}, tcp {tcp}");
    }
    if let Some(tls) = b.turn_tls {
        tracing::info!("  TURN/TLS:    {tls}");
    }
    if let Some(admin) = b.admin {
        tracing::info!("  admin API:   http://{admin}/admin/api/");
    }
    if let Some(media) = b.media {
        tracing::info!("  SFU media:   udp {media}");
    }
}

/// TURN's `allocation_created` / `allocation_ended` to the webhooks. Rare
/// events, off the relay path: the TURN shell only converts them while
/// somebody listens.
fn forward_allocation_events(
    turn: &TurnService,
    hooks: crate::webhooks::Webhooks,
    life: &Lifecycle,
) {
    use crate::turn::TurnAllocationEvent;
    use crate::webhooks::HookEvent;
    use tokio::sync::broadcast::error::RecvError;
    let Some(mut events) = turn.allocation_events() else {
        return;
    };
    metrics::describe_counter!(
        "switchboard_webhook_allocation_events_lagged_total",
        "TURN allocation events the webhooks missed because they fell behind"
    );
    let stop = life.shutdown.clone();
    life.tasks.spawn(async move {
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => return,
                e = events.recv() => e,
            };
            let hook = match event {
                Ok(TurnAllocationEvent::Created(a)) => HookEvent::AllocationCreated {
                    allocation: a.id,
                    username: a.username,
                    client: a.client,
                    relayed: a.relayed,
                },
                Ok(TurnAllocationEvent::Ended {
                    allocation: a,
                    reason,
                }) => HookEvent::AllocationEnded {
                    allocation: a.id,
                    username: a.username,
                    client: a.client,
                    reason: reason.as_str().into(),
                    bytes_in: a.bytes_in,
                    bytes_out: a.bytes_out,
                },
                Err(RecvError::Lagged(n)) => {
                    metrics::counter!("switchboard_webhook_allocation_events_lagged_total")
                        .increment(n);
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            hooks.emit(hook);
        }
    });
}

/// SIGINT and SIGTERM, caught from the moment they are installed.
struct StopSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Waits for a stop signal.
    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = next(&mut self.term) => {}
                () = next(&mut self.int) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
