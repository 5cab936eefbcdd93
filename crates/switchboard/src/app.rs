//! The process: binds every listener, serves until SIGTERM/SIGINT, then
//! shuts down in bounded time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use switchboard_signal::SignalCore;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::hub::Hub;
use crate::turn::TurnService;

/// Limits the connection tasks read on every frame.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Bounded outbound queue, in frames.
    pub outbound_queue_frames: usize,
    /// Bounded outbound queue, in bytes of frame bodies.
    pub outbound_queue_bytes: usize,
    /// The WebSocket layer's own cap. Frames between `limits.max_message_bytes`
    /// and this get `too_large` from the core and the connection stays open;
    /// beyond it the transport closes the connection (1009), since reading
    /// an unbounded frame would cost unbounded memory.
    pub transport_max_frame: usize,
    /// `limits.socketio_connect_timeout_secs`.
    pub socketio_connect_timeout: Duration,
    /// `limits.socketio_pending_per_ip`.
    pub socketio_pending_per_ip: usize,
}

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The signaling core's driver.
    pub hub: Arc<Hub>,
    /// Token and origin checks.
    pub auth: Arc<Authenticator>,
    /// STUN/TURN, for `ice_servers`.
    pub turn: Option<TurnService>,
    /// Caps the number of signaling connections.
    pub connections: Arc<Semaphore>,
    /// Per-connection limits.
    pub limits: ConnLimits,
    /// Server ping interval.
    pub heartbeat_interval: Duration,
    /// Silence after which a connection counts as dropped.
    pub heartbeat_timeout: Duration,
    /// Cancelled on shutdown.
    pub shutdown: CancellationToken,
    /// Cancelled once Socket.IO clients had their DISCONNECT (bounded): the
    /// HTTP listeners serve until then, for polling clients to fetch it.
    pub socketio_drained: CancellationToken,
    /// Every connection holds a token of it, so that shutdown can wait for
    /// their goodbyes (the HTTP server does not track upgraded connections).
    pub tasks: TaskTracker,
    /// The link to the cluster, when `cluster.redis_url` is set.
    pub cluster: Option<Arc<crate::cluster::Backplane>>,
    /// The close code of a graceful stop: 1001 for a node alone, 1012
    /// (service restart) in a cluster, whose clients resume on another
    /// node (PROTOCOL.md §6).
    pub stop_code: u16,
}

impl AppState {
    /// The `ice_servers` for a peer reaching us through `host`.
    pub fn ice_servers(&self, who: crate::turn::MintFor<'_>, host: &str) -> crate::turn::IceGrant {
        match &self.turn {
            Some(turn) => turn.ice_servers(who, host),
            None => crate::turn::IceGrant::default(),
        }
    }
}

/// The host name a client used, without the port: the host in the
/// `ice_servers` URLs when `turn.public_host` is not set.
pub fn request_host(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    strip_port(host).to_string()
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

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
    }
}

fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/ws", get(crate::ws::handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/ice-servers", get(ice_servers))
        .merge(crate::web::routes())
        .with_state(state.clone());
    // Socket.IO wraps the whole router, once (see `socketio::service`).
    Router::new().fallback_service(crate::socketio::service(&state, routes))
}

async fn healthz(State(app): State<AppState>) -> Response {
    if app.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        "ok\n".into_response()
    }
}

/// 503 while the node cannot reach its cluster backplane (or is stopping):
/// a load balancer sends new clients elsewhere.
async fn readyz(State(app): State<AppState>) -> Response {
    if app.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match &app.cluster {
        Some(bp) if !bp.ready() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster backplane unreachable\n",
        )
            .into_response(),
        _ => "ready\n".into_response(),
    }
}

async fn metrics(State(app): State<AppState>) -> Response {
    let (stats, counters) = app.hub.stats();
    export_counters(&counters);
    metrics::gauge!("switchboard_sessions").set(stats.sessions as f64);
    metrics::gauge!("switchboard_sessions_connected").set(stats.connected as f64);
    metrics::gauge!("switchboard_rooms").set(stats.rooms as f64);
    metrics::gauge!("switchboard_calls_ringing").set(stats.ringing_calls as f64);
    metrics::counter!("switchboard_log_lines_dropped_total")
        .absolute(crate::telemetry::dropped_log_lines());
    if let Some(turn) = &app.turn {
        turn.export_metrics();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::metrics_handle().render(),
    )
        .into_response()
}

fn export_counters(c: &switchboard_signal::Counters) {
    let pairs = [
        ("switchboard_requests_total", c.requests),
        ("switchboard_messages_total", c.messages),
        ("switchboard_deliveries_total", c.deliveries),
        ("switchboard_frames_total", c.frames),
        ("switchboard_sessions_started_total", c.sessions_started),
        ("switchboard_sessions_ended_total", c.sessions_ended),
        ("switchboard_resumes_total", c.resumes),
        ("switchboard_joins_total", c.joins),
        ("switchboard_rooms_full_total", c.rooms_full),
        ("switchboard_calls_total", c.calls),
    ];
    for (name, value) in pairs {
        metrics::counter!(name).absolute(value);
    }
    for (code, value) in c.errors_by_code() {
        metrics::counter!("switchboard_errors_total", "code" => code.as_str()).absolute(value);
    }
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn ice_servers(
    State(app): State<AppState>,
    axum::extract::ConnectInfo(remote): axum::extract::ConnectInfo<SocketAddr>,
    axum::extract::Query(q): axum::extract::Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let identity = match app.auth.identify(q.token.as_deref().or(bearer), None) {
        Ok(id) => id,
        Err(e) => return (StatusCode::UNAUTHORIZED, e.to_string()).into_response(),
    };
    // `user` is a verified `sub` here: this endpoint takes no `?user=`.
    let who = crate::turn::MintFor {
        source: remote.ip(),
        user: identity.user.as_deref(),
        peer: None,
    };
    let grant = app.ice_servers(who, &request_host(&headers));
    if grant.limited {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many TURN credentials; try again later\n",
        )
            .into_response();
    }
    let ttl = app
        .turn
        .as_ref()
        .map_or(0, TurnService::credential_ttl_secs);
    // The answer holds TURN credentials: no cache may keep or share them.
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({
            "ice_servers": grant.servers,
            "ttl": ttl,
        })),
    )
        .into_response()
}

fn bind_tcp(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Runs the server until a shutdown signal. `ready` receives the bound
/// addresses once every listener is up.
pub async fn run(cfg: Config, ready: impl FnOnce(&Bound)) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    // Install the recorder before anything records.
    let _ = crate::telemetry::metrics_handle();
    let tls = crate::tls::server_config(&cfg.tls)?;
    let turn = crate::turn::start(&cfg.turn, tls.clone(), shutdown.child_token())
        .await
        .context("starting STUN/TURN")?;

    let mut seed = [0u8; 32];
    rand::fill(&mut seed);
    let tasks = TaskTracker::new();
    let (hub, cluster) = match &cfg.cluster.redis_url {
        Some(url) => {
            let node = crate::cluster::node_id(&cfg);
            let backplane = Arc::new(crate::cluster::Backplane::default());
            let core = SignalCore::clustered(
                core_config(&cfg),
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
                &cfg,
                url.clone(),
                node,
                hub.clone(),
                backplane.clone(),
                shutdown.clone(),
                &tasks,
            );
            (hub, Some(backplane))
        }
        None => (Hub::new(SignalCore::new(core_config(&cfg), seed)), None),
    };
    let webhooks = crate::webhooks::start(&cfg, shutdown.clone(), &tasks)?;
    hub.set_webhooks(webhooks.clone());
    let stop_code = if cluster.is_some() { 1012 } else { 1001 };
    let state = AppState {
        hub: hub.clone(),
        auth: Arc::new(Authenticator::new(&cfg.auth)?),
        turn: Some(turn.clone()),
        connections: Arc::new(Semaphore::new(cfg.limits.max_connections)),
        limits: ConnLimits {
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
        },
        heartbeat_interval: Duration::from_secs(cfg.session.heartbeat_interval_secs.max(1)),
        heartbeat_timeout: Duration::from_secs(cfg.session.heartbeat_timeout_secs.max(1)),
        shutdown: shutdown.clone(),
        socketio_drained: CancellationToken::new(),
        tasks: tasks.clone(),
        cluster: cluster.clone(),
        stop_code,
    };
    tasks.spawn(hub.clone().run_timers(shutdown.clone()));

    let app = router(state.clone());
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
        router: app,
        admission: crate::serve::Admission::new(&http_limits),
        limits: http_limits,
        tasks: tasks.clone(),
        // Not `shutdown`: a polling Socket.IO client fetches its DISCONNECT
        // with one more request, so the listeners serve until that drain.
        stop: state.socketio_drained.clone(),
    };
    let http = tokio::net::TcpListener::from_std(bind_tcp(cfg.http.listen)?)?;
    let http_addr = http.local_addr()?;
    tasks.spawn(listener.clone().serve_plain(http));
    let https_addr = match &tls {
        Some(tls) => {
            let https = tokio::net::TcpListener::from_std(bind_tcp(cfg.http.tls_listen)?)?;
            let addr = https.local_addr()?;
            tasks.spawn(listener.serve_tls(https, tls.clone()));
            Some(addr)
        }
        None => None,
    };

    let bound = Bound {
        http: http_addr,
        https: https_addr,
        turn_udp: turn.local_udp(),
        turn_tcp: turn.local_tcp(),
        turn_tls: turn.local_tls(),
    };
    banner(&bound);
    ready(&bound);

    wait_for_signal().await;
    tracing::info!("shutting down: closing sessions with {stop_code}");
    shutdown.cancel();
    if let Some(bp) = &cluster {
        // What the sessions got is in Redis before their clients come back
        // elsewhere (the core sends nothing unwritten, but acks and counts
        // may still be queued).
        hub.close_all(stop_code, "service restart");
        bp.flush(Duration::from_secs(2)).await;
    } else {
        hub.close_all(stop_code, "server shutting down");
    }
    tasks.close();
    let limit = Duration::from_secs(cfg.http.shutdown_timeout_secs.max(1));
    if tokio::time::timeout(limit, async {
        tasks.wait().await;
        turn.closed().await
    })
    .await
    .is_err()
    {
        tracing::warn!("some connections did not close within {limit:?}; exiting anyway");
    }
    Ok(())
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
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn host_without_port() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:8080"), "::1");
        assert_eq!(strip_port("127.0.0.1:1"), "127.0.0.1");
    }
}
