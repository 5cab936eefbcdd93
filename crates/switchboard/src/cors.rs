//! CORS for what a page on another origin may use (PROTOCOL.md §5):
//! `/api/ice-servers` and the SDK under `/sdk/`. Small on purpose: an
//! origin in `auth.allowed_origins` (any origin when that list is empty)
//! gets `Access-Control-Allow-Origin` echoing it, and its `OPTIONS`
//! preflight is answered here; any other origin gets no CORS header at all,
//! so the browser keeps the answer from the page.
//!
//! The origin is echoed rather than `*` in both cases, so that the answer
//! is the same shape whether or not a list is set, with `Vary: Origin` so
//! that a cache never hands one origin's answer to another.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::Authenticator;

/// How long a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE: HeaderValue = HeaderValue::from_static("600");
const ALLOW_METHODS: HeaderValue = HeaderValue::from_static("GET, HEAD, OPTIONS");
const ALLOW_HEADERS: HeaderValue = HeaderValue::from_static("authorization, content-type");

/// The middleware of the cross-origin routes (`axum::middleware::from_fn_with_state`).
pub async fn layer(State(auth): State<Arc<Authenticator>>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allowed = origin
        .as_ref()
        .and_then(|o| o.to_str().ok())
        .filter(|o| auth.check_origin(Some(o)).is_ok())
        .and_then(|_| origin.clone());
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = match (preflight, &allowed) {
        (true, Some(origin)) => {
            let mut r = StatusCode::NO_CONTENT.into_response();
            let h = r.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
            h.insert(header::ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE);
            r
        }
        // A preflight from an origin we do not serve: refused, and nothing
        // in the answer lets the browser go on.
        (true, None) => (StatusCode::FORBIDDEN, "origin not allowed\n").into_response(),
        (false, Some(origin)) => {
            let mut r = next.run(req).await;
            r.headers_mut()
                .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            r
        }
        (false, None) => next.run(req).await,
    };
    vary_origin(response.headers_mut());
    response
}

fn vary_origin(h: &mut HeaderMap) {
    let already = h.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case("origin"))
        })
    });
    if !already {
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}
