//! The admin API (PROTOCOL.md §8) on its own listener, `admin.listen`:
//! bearer token, JSON only, errors as `{"error":{"code","message"}}`.
//!
//! A new endpoint is one `.route(..)` line in [`router`]: the token check,
//! the body limit and the JSON errors wrap every route, and the fallback.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

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

async fn require_token(State(admin): State<AdminState>, req: Request, next: Next) -> Response {
    if let Some(token) = &admin.token {
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
