//! `TurnServer::reconfigure`: new users, secrets, policy and quotas apply
//! to new requests at once; live allocations and nonces are untouched.

mod common;

use common::*;
use switchboard_stun::Method;
use switchboard_turn::auth::mint_rest_credential;
use switchboard_turn::{Cidr, ServerConfig};

fn reloaded() -> ServerConfig {
    // Another realm and nonce secret: both must be ignored.
    let mut c = ServerConfig::new("other.realm", b"another-secret".to_vec());
    c.credentials.add_user("carol", "carol-pw");
    c.credentials.add_rest_secret("new-rest-secret");
    c.policy.allow("127.0.0.0/8".parse::<Cidr>().unwrap());
    c.max_allocations_per_user = 1;
    c
}

#[test]
fn reconfigure_changes_new_requests_and_keeps_allocations() {
    let mut h = Harness::new(config());
    let mut alice = Client::udp("198.51.100.1:4000", "alice", "alice-pw");
    alice.allocate(&mut h);
    let peer = addr("93.184.216.20:7000");
    assert!(is_success(&alice.ask(
        &mut h,
        Method::CREATE_PERMISSION,
        |b| {
            b.add_xor_peer_address(peer);
        }
    )));
    // A client that got its nonce before the reload.
    let mut carol = Client::udp("198.51.100.3:4000", "carol", "carol-pw");
    let out = h.client_sends(carol.ft, &carol.plain(Method::ALLOCATE, udp_transport));
    carol.learn(&out[0].bytes);

    h.server.reconfigure(reloaded());
    assert_eq!(h.server.config().realm, REALM, "the realm stays");

    // Alice's allocation lives on with the key it was made with.
    assert!(is_success(&alice.ask(&mut h, Method::REFRESH, |_| {})));
    assert!(is_success(&alice.ask(
        &mut h,
        Method::CREATE_PERMISSION,
        |b| {
            b.add_xor_peer_address(peer);
        }
    )));
    assert_eq!(
        h.peer_sends(addr("10.0.0.2:50001"), peer, b"x").len(),
        1,
        "still relayed"
    );
    // The new policy applies to her new permissions at once.
    assert!(is_success(&alice.ask(
        &mut h,
        Method::CREATE_PERMISSION,
        |b| {
            b.add_xor_peer_address(addr("127.0.0.1:9"));
        }
    )));

    // A removed user cannot make a new allocation; an added one can, with
    // the nonce from before (no 438), and the new per-user quota holds.
    let mut again = Client::udp("198.51.100.2:4000", "alice", "alice-pw");
    let out = h.client_sends(again.ft, &again.plain(Method::ALLOCATE, udp_transport));
    again.learn(&out[0].bytes);
    assert_eq!(
        error_code(&again.ask(&mut h, Method::ALLOCATE, udp_transport)),
        Some(401)
    );
    let answer = carol.ask(&mut h, Method::ALLOCATE, udp_transport);
    assert!(is_success(&answer), "{:?}", error_code(&answer));
    let mut carol2 = Client::udp("198.51.100.4:4000", "carol", "carol-pw");
    let out = h.client_sends(carol2.ft, &carol2.plain(Method::ALLOCATE, udp_transport));
    carol2.learn(&out[0].bytes);
    assert_eq!(
        error_code(&carol2.ask(&mut h, Method::ALLOCATE, udp_transport)),
        Some(486)
    );

    // REST: the old secret is gone, the new one works.
    for (secret, expected) in [("rest-secret", Some(401)), ("new-rest-secret", None)] {
        let (user, pw) = mint_rest_credential(secret.as_bytes(), UNIX_NOW + 600, "dave");
        let mut dave = Client::udp("198.51.100.5:4000", &user, &pw);
        let out = h.client_sends(dave.ft, &dave.plain(Method::ALLOCATE, udp_transport));
        dave.learn(&out[0].bytes);
        let answer = dave.ask(&mut h, Method::ALLOCATE, udp_transport);
        assert_eq!(error_code(&answer), expected, "{secret}");
    }
    assert_eq!(h.server.allocations().len(), 3);
}

#[test]
fn reconfigure_without_a_secret_keeps_the_running_ones() {
    let mut h = Harness::new(config());
    let mut next = ServerConfig::new(REALM, b"x".to_vec());
    next.credentials.add_user("alice", "alice-pw");
    let running = h.server.config().credentials.clone();
    next.credentials.inherit_rest_secrets(&running);
    h.server.reconfigure(next);
    let (user, pw) = mint_rest_credential(b"rest-secret", UNIX_NOW + 600, "dave");
    let mut dave = Client::udp("198.51.100.5:4000", &user, &pw);
    dave.allocate(&mut h);
    assert_eq!(h.server.allocations().len(), 1);
}
