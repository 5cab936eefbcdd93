//! The web client and SDK, embedded in the binary (read from disk in debug
//! builds, so editing web/ needs no rebuild while developing).

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "../../web/"]
struct Assets;

/// `/sdk/*`: the SDK module, which pages on other origins import (the
/// router puts CORS around it).
pub fn sdk_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route(
        "/sdk/{*path}",
        get(|Path(p): Path<String>| async move { asset(&format!("sdk/{p}")) }),
    )
}

/// `/` (the app) and the app's other files.
pub fn app_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { asset("app/index.html") }))
        .route(
            "/{*path}",
            get(|Path(p): Path<String>| async move { asset(&format!("app/{p}")) }),
        )
}

/// The admin dashboard's file `name` (a bare file name under
/// `web/admin/`), for the admin listener alone: the public router never
/// maps a path onto `admin/`.
pub fn admin_asset(name: &str) -> Response {
    if !is_admin_asset(name) {
        return StatusCode::NOT_FOUND.into_response();
    }
    asset(&format!("admin/{name}"))
}

/// Whether `name` is one of the dashboard's files: the only paths the admin
/// listener serves without its token.
pub fn is_admin_asset(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('/')
        && name != ".."
        && Assets::get(&format!("admin/{name}")).is_some()
}

fn asset(path: &str) -> Response {
    if path.split('/').any(|seg| seg == "..") {
        return StatusCode::NOT_FOUND.into_response();
    }
    match Assets::get(path) {
        Some(file) => {
            let mime = file.metadata.mimetype().to_string();
            (
                [
                    (header::CONTENT_TYPE, mime),
                    (header::CACHE_CONTROL, "no-cache".to_string()),
                ],
                file.data.into_owned(),
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}
