//! The dashboard (`GET /admin/`) and its live feed (`GET /admin/api/live`).
//!
//! The page's files are public on the admin listener, so that the browser
//! can load the form that asks for the token; they hold no data. Every
//! request for data, the live feed included, needs the token like the rest
//! of the API. The feed is a Server-Sent Events stream read with `fetch`
//! (which, unlike `EventSource`, can send `Authorization`): a token in a URL
//! would end up in logs and the browser's history.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{AdminState, ApiError};

/// Live streams open at once: a handful of operators' tabs, not a fan-out
/// service. One more gets 503.
pub const MAX_LIVE_STREAMS: usize = 16;

/// How often a stream gets a snapshot.
pub const LIVE_PERIOD: Duration = Duration::from_secs(1);

/// A snapshot younger than this is sent again rather than built again, so
/// that sixteen tabs cost the cores one snapshot a second, not sixteen.
const SHARED_FOR: Duration = Duration::from_millis(900);

/// The dashboard's routes: the page, its files and the live feed.
pub fn routes(admin: AdminState) -> Router<AdminState> {
    let live = Arc::new(Live {
        streams: Arc::new(Semaphore::new(MAX_LIVE_STREAMS)),
        last: Mutex::new(None),
        admin,
    });
    Router::new()
        .route("/admin", get(|| async { Redirect::permanent("/admin/") }))
        .route("/admin/", get(|| async { page("index.html") }))
        .route(
            "/admin/{file}",
            get(|Path(file): Path<String>| async move { page(&file) }),
        )
        .route("/admin/api/live", get(stream))
        .with_state(live)
}

/// Whether `req` asks for the page or one of its files: the only requests
/// the admin listener answers without the token. Anything under
/// `/admin/api/` is never one.
pub fn is_public_page(req: &Request) -> bool {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return false;
    }
    match req.uri().path() {
        "/admin" | "/admin/" => true,
        path => path
            .strip_prefix("/admin/")
            .is_some_and(crate::web::is_admin_asset),
    }
}

/// One of the page's files, with headers that keep it from being framed or
/// from loading anything but its own files and the API.
fn page(file: &str) -> Response {
    if !crate::web::is_admin_asset(file) {
        return ApiError::NotFound("no such endpoint".into()).into_response();
    }
    let mut r = crate::web::admin_asset(file);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// What the live streams share.
struct Live {
    /// One permit per open stream.
    streams: Arc<Semaphore>,
    /// The last snapshot and when it was built; the lock also makes streams
    /// that tick together wait for one build instead of each building.
    last: Mutex<Option<(Instant, Bytes)>>,
    admin: AdminState,
}

impl Live {
    /// The current snapshot as one SSE event, shared while fresh.
    async fn event(&self) -> Bytes {
        let mut last = self.last.lock().await;
        if let Some((at, event)) = &*last
            && at.elapsed() < SHARED_FOR
        {
            return event.clone();
        }
        let body = snapshot(&self.admin).await.to_string();
        let event = Bytes::from(format!("event: snapshot\ndata: {body}\n\n"));
        *last = Some((Instant::now(), event.clone()));
        event
    }
}

/// A stream's own state: it holds its permit until the body is dropped,
/// which hyper does when the client goes.
struct Feed {
    live: Arc<Live>,
    _permit: OwnedSemaphorePermit,
    shutdown: CancellationToken,
    ticks: tokio::time::Interval,
}

/// `GET /admin/api/live`: `text/event-stream`, one `snapshot` event a
/// second (the first at once) until the client goes or the node stops.
async fn stream(State(live): State<Arc<Live>>) -> Result<Response, ApiError> {
    let permit = live.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::Unavailable(format!(
            "{MAX_LIVE_STREAMS} live streams are open already; close one"
        ))
    })?;
    let mut ticks = tokio::time::interval(LIVE_PERIOD);
    // A client that reads slowly gets the next snapshot, not a backlog.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let feed = Feed {
        shutdown: live.admin.life.shutdown.clone(),
        live,
        _permit: permit,
        ticks,
    };
    // Polled only when hyper has room to write: a slow reader holds one
    // event in flight, never a queue.
    let events = futures_util::stream::unfold(feed, |mut feed| async move {
        tokio::select! {
            () = feed.shutdown.cancelled() => None,
            _ = feed.ticks.tick() => {
                let event = feed.live.event().await;
                Some((Ok::<_, std::convert::Infallible>(event), feed))
            }
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
            // A reverse proxy in front must pass each event on at once.
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(events),
    )
        .into_response())
}

/// What the dashboard shows, at one moment: the counters `/metrics`
/// exports (totals: the page derives rates from successive snapshots), the
/// rooms as `GET /admin/api/rooms` lists them and the TURN allocations as
/// `GET /admin/api/turn/allocations` does. A part a core could not give in
/// time is `null`, with the reason in `unavailable`.
pub async fn snapshot(admin: &AdminState) -> Value {
    let (stats, counters) = admin.hub.stats();
    let errors_by_code: serde_json::Map<String, Value> = counters
        .errors_by_code()
        .filter(|&(_, n)| n > 0)
        .map(|(code, n)| (code.as_str().to_owned(), json!(n)))
        .collect();
    let errors: u64 = counters.errors_by_code().map(|(_, n)| n).sum();
    let mut unavailable = Vec::new();
    let rooms = match super::room_list(admin).await {
        Ok(rooms) => Value::Array(rooms),
        Err(e) => {
            unavailable.push(format!("rooms: {e}"));
            Value::Null
        }
    };
    let allocations = match admin.turn.allocations().await {
        Ok(list) => json!(list),
        Err(e) => {
            unavailable.push(format!("allocations: {e}"));
            Value::Null
        }
    };
    let time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    json!({
        "time_ms": time_ms,
        "draining": admin.life.draining.is_cancelled(),
        "counters": {
            "messages": counters.messages,
            "errors": errors,
            "deliveries": counters.deliveries,
            "requests": counters.requests,
            "joins": counters.joins,
            "sessions_started": counters.sessions_started,
            "calls": counters.calls,
        },
        "errors_by_code": errors_by_code,
        "gauges": {
            "sessions": stats.sessions,
            "connected": stats.connected,
            "rooms": stats.rooms,
            "ringing_calls": stats.ringing_calls,
        },
        "rooms": rooms,
        "allocations": allocations,
        "unavailable": unavailable,
    })
}
