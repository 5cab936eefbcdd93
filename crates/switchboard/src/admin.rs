//! The admin API (PROTOCOL.md §8) on its own listener, `admin.listen`:
//! bearer token, JSON only, errors as `{"error":{"code","message"}}`.
//!
//! A new endpoint is one `.route(..)` line in [`router`]: the token check,
//! the body limit and the JSON errors wrap every route, and the fallback.

mod live;

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::{Value, json};
use switchboard_signal::{AdminError, AdminReply, AdminRequest};

use crate::hub::Hub;
use crate::state::Lifecycle;
use crate::turn::TurnService;

/// The largest request body the admin API reads. Its requests are small
/// JSON objects; anything larger is a mistake or an attack.
pub const MAX_BODY_BYTES: u64 = 64 * 1024;

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// `admin.token`; `None`: requests need none (a loopback listener only).
    pub token: Option<Arc<str>>,
    /// Drain and shutdown.
    pub life: Lifecycle,
    /// The signaling core's driver: room views and kicks go through
    /// [`Hub::admin`].
    pub hub: Arc<Hub>,
    /// STUN/TURN: drain, allocation views and revokes.
    pub turn: TurnService,
}

/// An admin request refused: the status and the JSON error body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Unreadable or invalid request.
    #[error("{0}")]
    BadRequest(String),
    /// No token, or the wrong one.
    #[error("a valid `Authorization: Bearer <admin.token>` header is required")]
    Unauthorized,
    /// No such endpoint (or room, peer, allocation).
    #[error("{0}")]
    NotFound(String),
    /// The endpoint exists, not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The body is over [`MAX_BODY_BYTES`].
    #[error("the request body is over {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// A core did not answer in time; asking again is safe.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// The stable word in `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::TooLarge => "too_large",
            Self::Unavailable(_) => "unavailable",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code(), "message": self.to_string()}});
        let mut r = (self.status(), axum::Json(body)).into_response();
        if matches!(self, Self::Unauthorized) {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

/// The admin API's routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/admin/api/drain", post(drain))
        .route("/admin/api/rooms", get(rooms))
        .route("/admin/api/rooms/{room}", get(room).delete(close_room))
        .route("/admin/api/rooms/{room}/peers/{peer}", delete(kick))
        .route("/admin/api/turn/allocations", get(allocations))
        .route("/admin/api/turn/allocations/{id}", delete(revoke))
        .merge(live::routes(state.clone()))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES as usize))
        .layer(axum::middleware::from_fn(limit_body))
        // The last layer runs first: the token before anything else.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .with_state(state)
}

/// `POST /admin/api/drain`: no new signaling sessions and no new TURN
/// allocations from now on; the open ones are served until they end.
/// Idempotent, so a drain the TURN core was too busy to take can be asked
/// again.
async fn drain(State(admin): State<AdminState>) -> Result<Response, ApiError> {
    if !admin.life.draining.is_cancelled() {
        tracing::info!("draining: new signaling sessions and TURN allocations are refused");
        admin.life.draining.cancel();
    }
    admin
        .turn
        .set_draining(true)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(axum::Json(json!({"draining": true})).into_response())
}

/// How long a room view or kick waits for the signaling core; in a
/// cluster that is a round trip to the store, so seconds mean it is down.
const SIGNAL_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// A view's `Instant` as Unix seconds, as the TURN views give theirs.
fn unix_secs_of(
    now: std::time::Instant,
    wall: std::time::SystemTime,
) -> impl Fn(std::time::Instant) -> Value {
    move |at| {
        let t = switchboard_signal::admin::wall_clock(at, now, wall);
        json!(
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        )
    }
}

async fn ask(admin: &AdminState, request: AdminRequest) -> Result<AdminReply, ApiError> {
    admin
        .hub
        .admin(request, SIGNAL_WAIT)
        .await
        .map_err(|e| match e {
            AdminError::NoSuchRoom | AdminError::NoSuchPeer => ApiError::NotFound(e.to_string()),
            _ => ApiError::Unavailable(e.to_string()),
        })
}

fn unexpected() -> ApiError {
    ApiError::Unavailable("the signaling core gave an unexpected answer".into())
}

/// `GET /admin/api/rooms`: every room (in a cluster, on every node).
async fn rooms(State(admin): State<AdminState>) -> Result<Response, ApiError> {
    let rooms = room_list(&admin).await?;
    Ok(axum::Json(json!({ "rooms": rooms })).into_response())
}

/// The rooms as `GET /admin/api/rooms` lists them (the live feed sends the
/// same).
async fn room_list(admin: &AdminState) -> Result<Vec<Value>, ApiError> {
    let AdminReply::Rooms(rooms) = ask(admin, AdminRequest::Rooms).await? else {
        return Err(unexpected());
    };
    let time = unix_secs_of(std::time::Instant::now(), std::time::SystemTime::now());
    Ok(rooms.iter().map(|r| r.to_json(&time)).collect())
}

/// `GET /admin/api/rooms/{room}`: one room and its peers.
async fn room(
    State(admin): State<AdminState>,
    Path(room): Path<String>,
) -> Result<Response, ApiError> {
    let AdminReply::Room(detail) = ask(&admin, AdminRequest::Room { room }).await? else {
        return Err(unexpected());
    };
    let time = unix_secs_of(std::time::Instant::now(), std::time::SystemTime::now());
    Ok(axum::Json(detail.to_json(&time)).into_response())
}

/// `DELETE /admin/api/rooms/{room}/peers/{peer}`: the peer gets `kicked`
/// and `left`, the others `bye`; its session stays.
async fn kick(
    State(admin): State<AdminState>,
    Path((room, peer)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    tracing::info!(%room, %peer, "admin: kick");
    let AdminReply::Kicked { peers } = ask(&admin, AdminRequest::Kick { room, peer }).await? else {
        return Err(unexpected());
    };
    Ok(axum::Json(json!({ "kicked": peers })).into_response())
}

/// `DELETE /admin/api/rooms/{room}`: every peer of the room is kicked.
async fn close_room(
    State(admin): State<AdminState>,
    Path(room): Path<String>,
) -> Result<Response, ApiError> {
    tracing::info!(%room, "admin: close room");
    let AdminReply::Kicked { peers } = ask(&admin, AdminRequest::CloseRoom { room }).await? else {
        return Err(unexpected());
    };
    Ok(axum::Json(json!({ "kicked": peers })).into_response())
}

/// `GET /admin/api/turn/allocations`: this node's TURN allocations.
async fn allocations(State(admin): State<AdminState>) -> Result<Response, ApiError> {
    let list = admin
        .turn
        .allocations()
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(axum::Json(json!({ "allocations": list })).into_response())
}

/// `DELETE /admin/api/turn/allocations/{id}`: the allocation ends at once.
async fn revoke(
    State(admin): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    tracing::info!(allocation = %id, "admin: revoke");
    let found = admin
        .turn
        .revoke(&id)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    if !found {
        return Err(ApiError::NotFound("no such allocation".into()));
    }
    Ok(axum::Json(json!({ "revoked": id })).into_response())
}

/// Every request needs the token, except those for the dashboard's own
/// files (see [`live::is_public_page`]): they hold no data, and the page
/// must load to ask for the token.
async fn require_token(State(admin): State<AdminState>, req: Request, next: Next) -> Response {
    if let Some(token) = admin.token.as_ref().filter(|_| !live::is_public_page(&req)) {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            metrics::counter!("switchboard_admin_unauthorized_total").increment(1);
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

/// Refuses a body announced larger than [`MAX_BODY_BYTES`] before it is
/// read. (One sent without a length, chunked, is capped by
/// `DefaultBodyLimit` in whichever extractor reads it.)
async fn limit_body(req: Request, next: Next) -> Response {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY_BYTES) {
        return ApiError::TooLarge.into_response();
    }
    next.run(req).await
}

/// Equal contents, in a time that depends on the lengths only: the token
/// must not be guessable byte by byte from response times.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-tokex"));
        assert!(!constant_time_eq(b"secret", b"secret-token"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
