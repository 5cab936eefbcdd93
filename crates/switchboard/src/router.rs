//! The HTTP routes of the public listeners, and the small handlers that
//! need no module of their own: the probes, `/metrics` and
//! `/api/ice-servers` (with CORS, as the SDK).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::ice::{MintFor, request_host};
use crate::state::{AppState, Health, IceApi, MetricsSources};

/// Every route of the HTTP and HTTPS listeners.
pub fn router(state: AppState) -> Router {
    // What a page on another origin may use (PROTOCOL.md §5).
    let cross_origin = Router::new()
        .route("/api/ice-servers", get(ice_servers))
        .merge(crate::web::sdk_routes())
        .layer(axum::middleware::from_fn_with_state(
            state.ice_api.auth.clone(),
            crate::cors::layer,
        ));
    let routes = Router::new()
        .route("/ws", get(crate::ws::handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(cross_origin)
        .merge(crate::web::app_routes())
        .with_state(state.clone());
    // Socket.IO wraps the whole router, once (see `socketio::service`).
    Router::new().fallback_service(crate::socketio::service(&state.signaling, routes))
}

async fn healthz(State(health): State<Health>) -> Response {
    if health.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        "ok\n".into_response()
    }
}

/// 503 while the node cannot reach its cluster backplane (or is stopping,
/// or draining):
/// a load balancer sends new clients elsewhere.
async fn readyz(State(health): State<Health>) -> Response {
    if health.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    if health.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    match &health.cluster {
        Some(bp) if !bp.ready() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster backplane unreachable\n",
        )
            .into_response(),
        _ => "ready\n".into_response(),
    }
}

async fn metrics(State(src): State<MetricsSources>) -> Response {
    let (stats, counters) = src.hub.stats();
    export_counters(&counters);
    metrics::gauge!("switchboard_sessions").set(stats.sessions as f64);
    metrics::gauge!("switchboard_sessions_connected").set(stats.connected as f64);
    metrics::gauge!("switchboard_rooms").set(stats.rooms as f64);
    metrics::gauge!("switchboard_calls_ringing").set(stats.ringing_calls as f64);
    metrics::counter!("switchboard_log_lines_dropped_total")
        .absolute(crate::telemetry::dropped_log_lines());
    if let Some(turn) = &src.turn {
        turn.export_metrics();
    }
    if let Some(media) = &src.media
        && let Some(s) = media.stats().await
    {
        export_media(&s);
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

fn export_media(s: &crate::media::MediaStats) {
    let gauges = [
        ("switchboard_sfu_rooms", s.rooms),
        ("switchboard_sfu_peers", s.peers),
        ("switchboard_sfu_peers_connected", s.connected_peers),
        ("switchboard_sfu_published_tracks", s.published_tracks),
        ("switchboard_sfu_forwarded_tracks", s.forwarded_tracks),
    ];
    for (name, value) in gauges {
        metrics::gauge!(name).set(value as f64);
    }
    let counters = [
        ("switchboard_sfu_forwarded_frames_total", s.forwarded_frames),
        ("switchboard_sfu_forwarded_bytes_total", s.forwarded_bytes),
        ("switchboard_sfu_peers_failed_total", s.peers_failed),
        (
            "switchboard_sfu_dropped_datagrams_total",
            s.dropped_datagrams,
        ),
        (
            "switchboard_sfu_rate_limited_datagrams_total",
            s.rate_limited_datagrams,
        ),
        ("switchboard_sfu_signals_refused_total", s.signals_refused),
        ("switchboard_sfu_send_failures_total", s.send_failures),
    ];
    for (name, value) in counters {
        metrics::counter!(name).absolute(value);
    }
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn ice_servers(
    State(api): State<IceApi>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let identity = match api.auth.identify(q.token.as_deref().or(bearer), None) {
        Ok(id) => id,
        Err(e) => return (StatusCode::UNAUTHORIZED, e.to_string()).into_response(),
    };
    // `user` is a verified `sub` here: this endpoint takes no `?user=`.
    let who = MintFor {
        source: remote.ip(),
        user: identity.user.as_deref(),
        peer: None,
    };
    let grant = api.ice.grant(who, &request_host(&headers));
    if grant.limited {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many TURN credentials; try again later\n",
        )
            .into_response();
    }
    // The answer holds TURN credentials: no cache may keep or share them.
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({
            "ice_servers": grant.servers,
            "ttl": api.ice.credential_ttl_secs(),
        })),
    )
        .into_response()
}
