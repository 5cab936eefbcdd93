//! Minting TURN credentials: whose name they carry, and the limit per
//! source address on how many one client may take.

mod turn_support;

use std::net::IpAddr;

use switchboard::ice::MintFor;
use switchboard_testkit::{Client, Server, http_get};
use turn_support::*;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

#[tokio::test]
async fn a_verified_user_names_the_credential_across_sessions() {
    let server = start(&settings(), None).await;
    let who = |peer| MintFor {
        source: [127, 0, 0, 1].into(),
        user: Some("user-7"),
        peer: Some(peer),
    };
    for peer in ["peer-a", "peer-b"] {
        let ice = server.ice.grant(who(peer), "localhost").servers;
        let username = ice[0].username.clone().unwrap();
        assert!(username.ends_with(":user-7"), "{username}");
    }
    let ice = server
        .ice
        .grant(mint_for(Some("peer-c")), "localhost")
        .servers;
    assert!(ice[0].username.as_deref().unwrap().ends_with(":peer-c"));
    let anonymous = server.ice.grant(mint_for(None), "localhost").servers;
    let name = anonymous[0].username.clone().unwrap();
    assert!(name.contains(":anon-"), "{name}");
}

#[tokio::test]
async fn minting_is_limited_per_source() {
    let mut s = settings();
    s.mint_per_ip_per_minute = 3;
    let server = start(&s, None).await;
    let from = |ip: IpAddr| MintFor {
        source: ip,
        user: None,
        peer: Some("p"),
    };
    let a: IpAddr = "192.0.2.1".parse().unwrap();
    for _ in 0..3 {
        let grant = server.ice.grant(from(a), "localhost");
        assert!(!grant.limited);
        assert!(grant.servers[0].credential.is_some());
    }
    let grant = server.ice.grant(from(a), "localhost");
    assert!(grant.limited);
    assert_eq!(grant.servers.len(), 1);
    let stun = &grant.servers[0];
    assert_eq!(stun.urls.len(), 1);
    assert!(stun.urls[0].starts_with("stun:"), "{:?}", stun.urls);
    assert_eq!(
        (stun.username.as_deref(), stun.credential.as_deref()),
        (None, None)
    );
    // Another source (and another /64) is not affected.
    assert!(
        !server
            .ice
            .grant(from("192.0.2.2".parse().unwrap()), "h")
            .limited
    );
    let v6 = |s: &str| from(s.parse().unwrap());
    for _ in 0..3 {
        assert!(!server.ice.grant(v6("2001:db8:0:1::1"), "h").limited);
    }
    assert!(
        server.ice.grant(v6("2001:db8:0:1::2"), "h").limited,
        "same /64"
    );
}

/// Over the limit, `welcome` still comes with STUN alone, and the HTTP API
/// answers 429.
#[tokio::test]
async fn limited_sources_get_stun_only_welcomes_and_429() {
    let s = Server::start(
        BIN,
        &[("SWITCHBOARD_TURN__MINT_PER_IP_PER_MINUTE", "2")],
        &[],
    )
    .await;
    let first = Client::connect(&s.ws_url("")).await;
    let ice = &first.hello["ice_servers"];
    assert!(ice[0]["credential"].is_string(), "{ice}");
    let (status, body) = http_get(&s.http, "/api/ice-servers", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(":anon-"), "{body}");
    let limited = Client::connect(&s.ws_url("")).await;
    let ice = &limited.hello["ice_servers"];
    assert_eq!(limited.hello["type"], "welcome");
    assert_eq!(ice.as_array().map(Vec::len), Some(1), "{ice}");
    assert!(
        ice[0].get("credential").is_none_or(|c| c.is_null()),
        "{ice}"
    );
    assert!(
        ice[0]["urls"][0].as_str().unwrap().starts_with("stun:"),
        "{ice}"
    );
    let (status, _) = http_get(&s.http, "/api/ice-servers", &[]).await;
    assert_eq!(status, 429);
}
