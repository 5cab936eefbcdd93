//! CORS (PROTOCOL.md §5): `/api/ice-servers` and `/sdk/*` answer allowed
//! origins and their preflights; other origins get no CORS header; other
//! paths are not opened to other origins.

mod http_support;

use http_support::request;
use switchboard_testkit::Server;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const APP: &str = "http://app.example:3000";
const EVIL: &str = "http://evil.example";

async fn server(origins: &str) -> Server {
    Server::start(BIN, &[("SWITCHBOARD_AUTH__ALLOWED_ORIGINS", origins)], &[]).await
}

fn preflight(origin: &str) -> [(&str, &str); 3] {
    [
        ("Origin", origin),
        ("Access-Control-Request-Method", "GET"),
        ("Access-Control-Request-Headers", "authorization"),
    ]
}

#[tokio::test]
async fn an_allowed_origin_gets_its_preflight_and_its_answers() {
    let s = server(&format!("[\"{APP}\"]")).await;
    for path in ["/api/ice-servers", "/sdk/switchboard.js"] {
        let p = request(&s.http, "OPTIONS", path, &preflight(APP), b"").await;
        assert_eq!(p.status, 204, "{path}: {p:?}");
        assert_eq!(p.header("access-control-allow-origin"), Some(APP));
        let allowed = p
            .header("access-control-allow-headers")
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(
            allowed.contains("authorization") && allowed.contains("content-type"),
            "{p:?}"
        );
        assert!(
            p.header("access-control-allow-methods")
                .is_some_and(|m| m.contains("GET"))
        );
        assert!(
            p.header("vary").is_some_and(|v| v.contains("Origin")),
            "{p:?}"
        );

        let get = request(&s.http, "GET", path, &[("Origin", APP)], b"").await;
        assert_eq!(get.status, 200, "{path}: {get:?}");
        assert_eq!(get.header("access-control-allow-origin"), Some(APP));
        assert!(get.header("vary").is_some_and(|v| v.contains("Origin")));
    }
    let ice = request(&s.http, "GET", "/api/ice-servers", &[("Origin", APP)], b"").await;
    assert!(ice.json()["ice_servers"].is_array(), "{ice:?}");
    let sdk = request(
        &s.http,
        "GET",
        "/sdk/switchboard.js",
        &[("Origin", APP)],
        b"",
    )
    .await;
    assert!(
        sdk.body.contains("export function connect"),
        "{}",
        sdk.body.len()
    );
}

#[tokio::test]
async fn another_origin_gets_no_cors_headers() {
    let s = server(&format!("[\"{APP}\"]")).await;
    for path in ["/api/ice-servers", "/sdk/switchboard.js"] {
        let p = request(&s.http, "OPTIONS", path, &preflight(EVIL), b"").await;
        assert_eq!(p.status, 403, "{path}: {p:?}");
        assert!(!p.has_cors(), "{p:?}");
        // A plain GET is still served (a script may fetch it anyway), but
        // without the header the browser keeps it from the page.
        let get = request(&s.http, "GET", path, &[("Origin", EVIL)], b"").await;
        assert_eq!(get.status, 200);
        assert!(!get.has_cors(), "{get:?}");
        assert!(get.header("vary").is_some_and(|v| v.contains("Origin")));
    }
    // Without an Origin (not a browser's cross-origin request): as before.
    let plain = request(&s.http, "GET", "/api/ice-servers", &[], b"").await;
    assert_eq!(plain.status, 200);
    assert!(!plain.has_cors());
}

#[tokio::test]
async fn any_origin_is_allowed_when_the_list_is_empty() {
    let s = server("[]").await;
    let p = request(
        &s.http,
        "OPTIONS",
        "/api/ice-servers",
        &preflight(EVIL),
        b"",
    )
    .await;
    assert_eq!(p.status, 204, "{p:?}");
    assert_eq!(p.header("access-control-allow-origin"), Some(EVIL));
    let get = request(
        &s.http,
        "GET",
        "/sdk/switchboard.js",
        &[("Origin", EVIL)],
        b"",
    )
    .await;
    assert_eq!(get.header("access-control-allow-origin"), Some(EVIL));
}

#[tokio::test]
async fn other_paths_are_not_opened_to_other_origins() {
    let s = server("[]").await;
    for path in ["/", "/metrics", "/healthz"] {
        let get = request(&s.http, "GET", path, &[("Origin", APP)], b"").await;
        assert_eq!(get.status, 200, "{path}");
        assert!(!get.has_cors(), "{path}: {get:?}");
    }
    let p = request(&s.http, "OPTIONS", "/metrics", &preflight(APP), b"").await;
    assert!(!p.has_cors(), "{p:?}");
}
