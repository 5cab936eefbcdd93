//! Every rule of the TURN core, driven through the virtual-clock harness.

mod common;

use std::time::Duration;

use common::*;
use switchboard_stun::attr::{
    AdditionalAddressFamily, AddressErrorCode, AddressFamily, ChannelNumber, Data,
    RequestedAddressFamily, RequestedTransport, Software, XorPeerAddress, XorRelayedAddress,
};
use switchboard_stun::{AttrType, ChannelData, Class, Message, MessageType, Method};
use switchboard_turn::auth::mint_rest_credential;
use switchboard_turn::{Cidr, Event, Family, Source, Transport};

const SECS: fn(u64) -> Duration = Duration::from_secs;

#[test]
fn binding_needs_no_credentials_on_every_transport() {
    let mut h = Harness::new(config());
    for transport in [Transport::Udp, Transport::Tcp, Transport::Tls] {
        let mut c = Client::new(transport, "198.51.100.7:4000", "nobody", "x");
        let out = h.client_sends(c.ft, &c.plain(Method::BINDING, |_| {}));
        assert_eq!(out.len(), 1);
        let msg = Message::parse(&out[0].bytes).unwrap();
        assert_eq!(msg.message_type(), MessageType::BINDING_RESPONSE);
        assert_eq!(mapped(&out[0].bytes), Some(c.ft.client));
        assert!(msg.verify_fingerprint().is_ok());
        assert!(msg.get::<Software>().unwrap().is_some());
        assert_eq!(out[0].source, Source::Client(c.ft));
    }
    assert_eq!(h.server.metrics().binding_requests, 3);
}

#[test]
fn binding_with_unknown_required_attribute_gets_420() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "x", "y");
    let req = c.plain(Method::BINDING, |b| {
        b.add_raw(AttrType(0x7777), b"zz");
    });
    let out = h.client_sends(c.ft, &req);
    assert_eq!(error_code(&out[0].bytes), Some(420));
}

#[test]
fn allocate_challenge_then_success() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    let out = h.client_sends(c.ft, &c.plain(Method::ALLOCATE, udp_transport));
    assert_eq!(error_code(&out[0].bytes), Some(401));
    let msg = Message::parse(&out[0].bytes).unwrap();
    assert!(msg.contains(AttrType::REALM) && msg.contains(AttrType::NONCE));
    assert!(!msg.has_message_integrity());
    c.learn(&out[0].bytes);
    let req = c.signed(Method::ALLOCATE, udp_transport);
    let out = h.client_sends(c.ft, &req);
    assert_eq!(out.len(), 1);
    assert!(is_success(&out[0].bytes));
    assert_eq!(lifetime(&out[0].bytes), Some(600));
    assert_eq!(mapped(&out[0].bytes), Some(c.ft.client));
    let msg = Message::parse(&out[0].bytes).unwrap();
    assert_eq!(
        msg.get::<XorRelayedAddress>().unwrap().unwrap().0,
        addr("203.0.113.2:50001"),
        "the public address is advertised"
    );
    assert!(msg.verify_message_integrity(&c.key()).is_ok());
    assert!(msg.verify_fingerprint().is_ok());
    assert!(matches!(
        h.bind_requests[0],
        Event::BindRelay {
            family: Family::V4,
            even_port: false,
            ..
        }
    ));
    let m = h.server.metrics();
    assert_eq!((m.allocations, m.allocations_created), (1, 1));

    // A retransmission of the same Allocate gets the same answer again.
    let again = h.client_sends(c.ft, &req);
    assert!(is_success(&again[0].bytes));
    assert_eq!(h.server.allocation_count(), 1);
    // Another Allocate on the same 5-tuple is a mismatch.
    let out = c.ask(&mut h, Method::ALLOCATE, udp_transport);
    assert_eq!(error_code(&out), Some(437));
    assert!(
        Message::parse(&out)
            .unwrap()
            .verify_message_integrity(&c.key())
            .is_ok()
    );
}

#[test]
fn wrong_password_and_unknown_user_get_401() {
    let mut h = Harness::new(config());
    for (user, pass) in [("alice", "wrong"), ("mallory", "x")] {
        let mut c = Client::udp("198.51.100.7:4000", user, pass);
        let out = h.client_sends(c.ft, &c.plain(Method::ALLOCATE, udp_transport));
        c.learn(&out[0].bytes);
        let out = c.ask(&mut h, Method::ALLOCATE, udp_transport);
        assert_eq!(error_code(&out), Some(401));
        assert!(Message::parse(&out).unwrap().contains(AttrType::NONCE));
    }
    assert_eq!(h.server.metrics().auth_failures, 2);
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn wrong_realm_gets_401_and_missing_username_400() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    let out = h.client_sends(c.ft, &c.plain(Method::ALLOCATE, udp_transport));
    c.learn(&out[0].bytes);
    c.realm = "other".into();
    assert_eq!(
        error_code(&c.ask(&mut h, Method::ALLOCATE, udp_transport)),
        Some(401)
    );
    // MESSAGE-INTEGRITY without USERNAME.
    let req = c.plain(Method::ALLOCATE, |b| {
        udp_transport(b);
        b.add_message_integrity(&[0; 16]);
    });
    let out = h.client_sends(c.ft, &req);
    assert_eq!(error_code(&out[0].bytes), Some(400));
}

#[test]
fn nonce_expires_and_is_renewed_with_438() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    c.allocate(&mut h);
    h.advance(SECS(599));
    assert!(is_success(&c.ask(&mut h, Method::REFRESH, |_| {})));
    h.advance(SECS(1));
    let out = c.ask(&mut h, Method::REFRESH, |_| {});
    assert_eq!(error_code(&out), Some(438));
    let old = c.nonce.clone();
    c.learn(&out);
    assert_ne!(old, c.nonce);
    assert!(is_success(&c.ask(&mut h, Method::REFRESH, |_| {})));
}

#[test]
fn forged_or_foreign_nonce_gets_438() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    c.nonce = Some(b"0000000000000000000000000000000000000000".to_vec());
    assert_eq!(
        error_code(&c.ask(&mut h, Method::ALLOCATE, udp_transport)),
        Some(438)
    );
    // A nonce issued to another client address is not valid here.
    let mut other = Client::udp("198.51.100.8:4000", "alice", "alice-pw");
    let out = h.client_sends(other.ft, &other.plain(Method::ALLOCATE, udp_transport));
    other.learn(&out[0].bytes);
    c.nonce = other.nonce.clone();
    assert_eq!(
        error_code(&c.ask(&mut h, Method::ALLOCATE, udp_transport)),
        Some(438)
    );
}

#[test]
fn unauthenticated_flood_keeps_no_state() {
    let mut h = Harness::new(config());
    for i in 0..10_000u32 {
        let port = 1024 + (i % 60_000) as u16;
        let mut c = Client::udp(&format!("198.51.100.{}:{port}", i % 250), "alice", "bad");
        let out = h.client_sends(c.ft, &c.plain(Method::ALLOCATE, udp_transport));
        assert_eq!(error_code(&out[0].bytes), Some(401));
    }
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.server.poll_timeout(), None, "no timers either");
    assert!(h.bind_requests.is_empty());
}

#[test]
fn rest_credentials_with_rotation_and_expiry() {
    let mut config = config();
    config.credentials.add_rest_secret("old-secret");
    let mut h = Harness::new(config);
    for (i, secret) in ["rest-secret", "old-secret"].iter().enumerate() {
        let (user, pass) = mint_rest_credential(secret.as_bytes(), UNIX_NOW + 60, "peer-1");
        let mut c = Client::udp(&format!("198.51.100.7:{}", 4000 + i), &user, &pass);
        c.allocate(&mut h);
    }
    // Expired REST credential.
    let (user, pass) = mint_rest_credential(b"rest-secret", UNIX_NOW, "peer-1");
    let mut c = Client::udp("198.51.100.7:5000", &user, &pass);
    let out = h.client_sends(c.ft, &c.plain(Method::ALLOCATE, udp_transport));
    c.learn(&out[0].bytes);
    assert_eq!(
        error_code(&c.ask(&mut h, Method::ALLOCATE, udp_transport)),
        Some(401)
    );
    // Minted with an unknown secret.
    let (user, pass) = mint_rest_credential(b"unknown", UNIX_NOW + 60, "peer-1");
    let mut c = Client::udp("198.51.100.7:5001", &user, &pass);
    let out = h.client_sends(c.ft, &c.plain(Method::ALLOCATE, udp_transport));
    c.learn(&out[0].bytes);
    assert_eq!(
        error_code(&c.ask(&mut h, Method::ALLOCATE, udp_transport)),
        Some(401)
    );
}

#[test]
fn allocation_outlives_its_rest_credential_while_refreshed() {
    let mut h = Harness::new(config());
    let (user, pass) = mint_rest_credential(b"rest-secret", UNIX_NOW + 100, "p");
    let mut c = Client::udp("198.51.100.7:4000", &user, &pass);
    c.allocate(&mut h);
    h.advance(SECS(500));
    assert!(is_success(&c.ask(&mut h, Method::REFRESH, |_| {})));
}

#[test]
fn requested_transport_rules() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    let out = h.client_sends(c.ft, &c.plain(Method::ALLOCATE, udp_transport));
    c.learn(&out[0].bytes);
    let out = c.ask(&mut h, Method::ALLOCATE, |b| {
        b.add(&RequestedTransport::TCP);
    });
    assert_eq!(error_code(&out), Some(442));
    assert_eq!(
        error_code(&c.ask(&mut h, Method::ALLOCATE, |_| {})),
        Some(400)
    );
    let out = c.ask(&mut h, Method::ALLOCATE, |b| {
        udp_transport(b);
        b.add_raw(AttrType::DONT_FRAGMENT, &[]);
    });
    assert_eq!(error_code(&out), Some(420));
    let out = c.ask(&mut h, Method::ALLOCATE, |b| {
        udp_transport(b);
        b.add_raw(AttrType::RESERVATION_TOKEN, &[1; 8]);
    });
    assert_eq!(error_code(&out), Some(508));
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn even_port_is_passed_to_the_shell() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    let out = h.client_sends(c.ft, &c.plain(Method::ALLOCATE, udp_transport));
    c.learn(&out[0].bytes);
    let out = c.ask(&mut h, Method::ALLOCATE, |b| {
        udp_transport(b);
        b.add_raw(AttrType::EVEN_PORT, &[0]);
    });
    assert!(is_success(&out));
    assert!(matches!(
        h.bind_requests[0],
        Event::BindRelay {
            even_port: true,
            ..
        }
    ));
}

#[test]
fn quotas_per_user_and_total() {
    let mut config = config();
    config.max_allocations_per_user = 2;
    config.max_allocations = 3;
    let mut h = Harness::new(config);
    let mut alices: Vec<Client> = (0..3)
        .map(|i| Client::udp(&format!("198.51.100.7:{}", 4000 + i), "alice", "alice-pw"))
        .collect();
    alices[0].allocate(&mut h);
    alices[1].allocate(&mut h);
    let c = &mut alices[2];
    let out = h.client_sends(c.ft, &c.plain(Method::ALLOCATE, udp_transport));
    c.learn(&out[0].bytes);
    assert_eq!(
        error_code(&c.ask(&mut h, Method::ALLOCATE, udp_transport)),
        Some(486)
    );
    let mut bob = Client::udp("198.51.100.8:4000", "bob", "bob-pw");
    bob.allocate(&mut h);
    let mut bob2 = Client::udp("198.51.100.8:4001", "bob", "bob-pw");
    let out = h.client_sends(bob2.ft, &bob2.plain(Method::ALLOCATE, udp_transport));
    bob2.learn(&out[0].bytes);
    assert_eq!(
        error_code(&bob2.ask(&mut h, Method::ALLOCATE, udp_transport)),
        Some(486)
    );
    assert_eq!(h.server.metrics().quota_rejections, 2);
    // Freeing one of alice's makes room for her again.
    let out = alices[0].ask(&mut h, Method::REFRESH, |b| {
        b.add(&switchboard_stun::attr::Lifetime(0));
    });
    assert_eq!(lifetime(&out), Some(0));
    assert!(is_success(&alices[2].ask(
        &mut h,
        Method::ALLOCATE,
        udp_transport
    )));
}

#[test]
fn relay_bind_failure_gives_508_and_frees_quota() {
    let mut config = config();
    config.max_allocations_per_user = 1;
    let mut h = Harness::new(config);
    h.bind_ok = false;
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    let out = h.client_sends(c.ft, &c.plain(Method::ALLOCATE, udp_transport));
    c.learn(&out[0].bytes);
    let out = c.ask(&mut h, Method::ALLOCATE, udp_transport);
    assert_eq!(error_code(&out), Some(508));
    assert_eq!(h.server.metrics().relay_bind_failures, 1);
    h.bind_ok = true;
    assert!(is_success(&c.ask(&mut h, Method::ALLOCATE, udp_transport)));
}

#[test]
fn pending_allocation_of_a_closed_connection_releases_its_relay() {
    let mut h = Harness::new(config());
    h.auto_bind = false;
    let mut c = Client::new(Transport::Tcp, "198.51.100.7:4000", "alice", "alice-pw");
    let out = h.client_sends(c.ft, &c.plain(Method::ALLOCATE, udp_transport));
    c.learn(&out[0].bytes);
    let req = c.signed(Method::ALLOCATE, udp_transport);
    assert!(h.client_sends(c.ft, &req).is_empty(), "waits for the relay");
    // A retransmission while pending is not answered twice.
    assert!(h.client_sends(c.ft, &req).is_empty());
    h.server.connection_closed(c.ft);
    let (id, family) = h.pending_binds.pop().unwrap();
    h.answer_bind(id, family, true);
    assert!(h.drain().is_empty());
    assert_eq!(h.released.len(), 1);
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn refresh_rules_and_lifetimes() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    let mut stranger = Client::udp("198.51.100.9:4000", "alice", "alice-pw");
    stranger.nonce = c.nonce.clone();
    let out = h.client_sends(stranger.ft, &stranger.plain(Method::REFRESH, |_| {}));
    stranger.learn(&out[0].bytes);
    assert_eq!(
        error_code(&stranger.ask(&mut h, Method::REFRESH, |_| {})),
        Some(437)
    );

    let relay = c.allocate(&mut h);
    let out = c.ask(&mut h, Method::REFRESH, |b| {
        b.add(&switchboard_stun::attr::Lifetime(7200));
    });
    assert_eq!(lifetime(&out), Some(3600), "capped at the maximum");
    let out = c.ask(&mut h, Method::REFRESH, |b| {
        b.add(&switchboard_stun::attr::Lifetime(30));
    });
    assert_eq!(lifetime(&out), Some(30), "a refresh may shorten");
    h.advance(SECS(29));
    assert_eq!(h.server.allocation_count(), 1);
    h.advance(SECS(1));
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.released, vec![addr("10.0.0.2:50001")]);
    assert_eq!(relay, addr("203.0.113.2:50001"));
    assert_eq!(h.server.metrics().allocations_expired, 1);
    // Gone: refresh is a mismatch now.
    assert_eq!(
        error_code(&c.ask(&mut h, Method::REFRESH, |_| {})),
        Some(437)
    );
}

#[test]
fn allocate_lifetime_is_at_least_default_and_at_most_max() {
    let mut h = Harness::new(config());
    for (asked, granted) in [(10, 600), (1800, 1800), (100_000, 3600)] {
        let mut c = Client::udp(
            &format!("198.51.100.7:{}", 4000 + asked % 1000),
            "alice",
            "alice-pw",
        );
        let out = h.client_sends(c.ft, &c.plain(Method::ALLOCATE, udp_transport));
        c.learn(&out[0].bytes);
        let out = c.ask(&mut h, Method::ALLOCATE, |b| {
            udp_transport(b);
            b.add(&switchboard_stun::attr::Lifetime(asked));
        });
        assert_eq!(lifetime(&out), Some(granted));
    }
}

#[test]
fn other_username_on_an_allocation_gets_441() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    c.allocate(&mut h);
    let mut b = Client::udp("198.51.100.7:4000", "bob", "bob-pw");
    b.nonce = c.nonce.clone();
    assert_eq!(
        error_code(&b.ask(&mut h, Method::REFRESH, |_| {})),
        Some(441)
    );
    // Right user, bad integrity on the existing allocation: 401.
    c.password = "nope".into();
    assert_eq!(
        error_code(&c.ask(&mut h, Method::REFRESH, |_| {})),
        Some(401)
    );
}

#[test]
fn allocation_expires_without_refresh_and_timers_are_exact() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    c.allocate(&mut h);
    assert_eq!(h.server.poll_timeout(), Some(h.start + SECS(600)));
    h.advance(SECS(599));
    assert_eq!(h.server.allocation_count(), 1);
    h.advance(SECS(1));
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.server.metrics().allocations, 0);
}

#[test]
fn create_permission_policy_and_expiry() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    let relay = c.allocate(&mut h);
    let relay_local = addr("10.0.0.2:50001");
    let p1 = addr("93.184.216.20:7000");
    let p2 = addr("93.184.216.21:7000");
    // Peers may repeat; all are installed.
    let out = c.ask(&mut h, Method::CREATE_PERMISSION, |b| {
        b.add_xor_peer_address(p1).add_xor_peer_address(p2);
    });
    assert!(is_success(&out));
    assert_eq!(h.server.metrics().permissions, 2);
    // Any port of a permitted IP reaches the client.
    let out = h.peer_sends(relay_local, addr("93.184.216.21:9"), b"hi");
    assert_eq!(out.len(), 1);
    // Refused ranges, in every spelling; nothing is installed then.
    for bad in [
        "127.0.0.1:80",
        "100.64.0.1:80",
        "169.254.169.254:80",
        "10.0.0.1:1",
    ] {
        let out = c.ask(&mut h, Method::CREATE_PERMISSION, |b| {
            b.add_xor_peer_address(addr("93.184.216.30:1"))
                .add_xor_peer_address(addr(bad));
        });
        assert_eq!(error_code(&out), Some(403), "{bad}");
    }
    assert_eq!(h.server.metrics().permissions, 2);
    assert_eq!(h.server.metrics().denied_peers, 4);
    // The server's own relay addresses are always allowed (10.0.0.2 is private).
    let mut other = Client::udp("198.51.100.8:4000", "bob", "bob-pw");
    let other_relay = other.allocate(&mut h);
    assert!(is_success(&c.ask(&mut h, Method::CREATE_PERMISSION, |b| {
        b.add_xor_peer_address(addr("10.0.0.2:50002"));
    })));
    assert!(is_success(&c.ask(&mut h, Method::CREATE_PERMISSION, |b| {
        b.add_xor_peer_address(other_relay);
    })));
    let _ = relay;
    // No peer at all: 400. An IPv6 peer on an IPv4 relay: 443.
    assert_eq!(
        error_code(&c.ask(&mut h, Method::CREATE_PERMISSION, |_| {})),
        Some(400)
    );
    let out = c.ask(&mut h, Method::CREATE_PERMISSION, |b| {
        b.add_xor_peer_address(addr("[2606:4700::1]:1"));
    });
    assert_eq!(error_code(&out), Some(443));
    // Permissions last 300 s.
    h.advance(SECS(299));
    assert_eq!(h.peer_sends(relay_local, p1, b"x").len(), 1);
    h.advance(SECS(1));
    assert!(h.peer_sends(relay_local, p1, b"x").is_empty());
    assert_eq!(h.server.metrics().permissions, 0);
}

#[test]
fn allowed_peer_ranges_open_loopback() {
    let mut config = config();
    config.policy.allow("127.0.0.0/8".parse::<Cidr>().unwrap());
    let mut h = Harness::new(config);
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    c.allocate(&mut h);
    assert!(is_success(&c.ask(&mut h, Method::CREATE_PERMISSION, |b| {
        b.add_xor_peer_address(addr("127.0.0.1:9"));
    })));
    assert_eq!(
        error_code(&c.ask(&mut h, Method::CREATE_PERMISSION, |b| {
            b.add_xor_peer_address(addr("192.168.0.1:9"));
        })),
        Some(403)
    );
}

#[test]
fn send_and_data_indications() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    c.allocate(&mut h);
    let relay_local = addr("10.0.0.2:50001");
    let peer = addr("93.184.216.20:7000");
    let send = |c: &mut Client| {
        c.signed_with(MessageType::SEND_INDICATION, |b| {
            b.add_xor_peer_address(peer).add_data(b"hello");
        })
    };
    // No permission yet: dropped silently.
    assert!(h.client_sends(c.ft, &send(&mut c)).is_empty());
    assert!(h.peer_sends(relay_local, peer, b"x").is_empty());
    assert!(is_success(&c.ask(&mut h, Method::CREATE_PERMISSION, |b| {
        b.add_xor_peer_address(peer);
    })));
    let out = h.client_sends(c.ft, &send(&mut c));
    assert_eq!(
        out,
        vec![Sent {
            source: Source::Relay(relay_local),
            to: peer,
            bytes: b"hello".to_vec()
        }]
    );
    let out = h.peer_sends(relay_local, peer, b"world");
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].source, out[0].to),
        (Source::Client(c.ft), c.ft.client)
    );
    let msg = Message::parse(&out[0].bytes).unwrap();
    assert_eq!(msg.message_type(), MessageType::DATA_INDICATION);
    assert_eq!(msg.get::<XorPeerAddress>().unwrap().unwrap().0, peer);
    assert_eq!(msg.get::<Data>().unwrap().unwrap().0, b"world");
    let m = h.server.metrics();
    assert_eq!(
        (
            m.packets_to_peers,
            m.bytes_to_peers,
            m.packets_to_clients,
            m.bytes_to_clients
        ),
        (1, 5, 1, 5)
    );
    // Unknown relay address: dropped.
    assert!(h.peer_sends(addr("10.0.0.2:1"), peer, b"x").is_empty());
}

#[test]
fn channel_bind_rules_and_channel_data() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    c.allocate(&mut h);
    let relay_local = addr("10.0.0.2:50001");
    let p1 = addr("93.184.216.20:7000");
    let p2 = addr("93.184.216.21:7000");
    let bind = |c: &mut Client, h: &mut Harness, n: u16, p| {
        c.ask(h, Method::CHANNEL_BIND, |b| {
            b.add(&ChannelNumber(n)).add_xor_peer_address(p);
        })
    };
    for bad in [0x3FFF, 0x5000, 0x7FFE, 0xFFFF] {
        assert_eq!(
            error_code(&bind(&mut c, &mut h, bad, p1)),
            Some(400),
            "{bad:#x}"
        );
    }
    assert_eq!(
        error_code(&bind(&mut c, &mut h, 0x4000, addr("127.0.0.1:1"))),
        Some(403)
    );
    assert!(is_success(&bind(&mut c, &mut h, 0x4000, p1)));
    assert!(
        is_success(&bind(&mut c, &mut h, 0x4000, p1)),
        "same pair refreshes"
    );
    assert_eq!(
        error_code(&bind(&mut c, &mut h, 0x4000, p2)),
        Some(400),
        "channel taken"
    );
    assert_eq!(
        error_code(&bind(&mut c, &mut h, 0x4001, p1)),
        Some(400),
        "peer taken"
    );
    assert!(is_success(&bind(&mut c, &mut h, 0x4FFF, p2)));
    let m = h.server.metrics();
    assert_eq!((m.channels, m.permissions), (2, 2));

    // Client to peer.
    let mut frame = Vec::new();
    ChannelData::new(0x4000, b"abc")
        .unwrap()
        .encode(&mut frame, false);
    let out = h.client_sends(c.ft, &frame);
    assert_eq!(
        out,
        vec![Sent {
            source: Source::Relay(relay_local),
            to: p1,
            bytes: b"abc".to_vec()
        }]
    );
    // Unbound channel: dropped.
    frame.clear();
    ChannelData::new(0x4444, b"abc")
        .unwrap()
        .encode(&mut frame, false);
    assert!(h.client_sends(c.ft, &frame).is_empty());
    // Peer to client uses the channel.
    let out = h.peer_sends(relay_local, p2, b"xyz");
    let cd = ChannelData::parse(&out[0].bytes).unwrap();
    assert_eq!((cd.channel(), cd.data()), (0x4FFF, &b"xyz"[..]));
    assert_eq!(out[0].bytes.len(), 7, "no padding on UDP");

    // The permission a channel installs lasts 300 s, the channel 600 s;
    // refreshing the binding refreshes both.
    h.advance(SECS(290));
    assert!(is_success(&bind(&mut c, &mut h, 0x4000, p1)));
    h.advance(SECS(20));
    assert_eq!(h.peer_sends(relay_local, p1, b"1").len(), 1);
    assert!(
        h.peer_sends(relay_local, p2, b"2").is_empty(),
        "p2's permission expired"
    );
    assert!(is_success(&c.ask(&mut h, Method::REFRESH, |_| {})));
    h.advance(SECS(290));
    assert_eq!(h.server.metrics().channels, 1, "0x4FFF expired at 600 s");
    h.advance(SECS(300));
    assert_eq!(h.server.metrics().channels, 0);
    ChannelData::new(0x4000, b"abc")
        .unwrap()
        .encode(&mut frame, false);
    assert!(h.client_sends(c.ft, &frame[frame.len() - 7..]).is_empty());
}

#[test]
fn channel_data_on_streams_is_padded() {
    let mut h = Harness::new(config());
    let mut c = Client::new(Transport::Tcp, "198.51.100.7:4000", "alice", "alice-pw");
    c.allocate(&mut h);
    let peer = addr("93.184.216.20:7000");
    assert!(is_success(&c.ask(&mut h, Method::CHANNEL_BIND, |b| {
        b.add(&ChannelNumber(0x4001)).add_xor_peer_address(peer);
    })));
    let out = h.peer_sends(addr("10.0.0.2:50001"), peer, b"12345");
    assert_eq!(out[0].bytes.len(), 12);
    assert_eq!(
        switchboard_stun::stream_frame_len(&out[0].bytes),
        Ok(Some(12))
    );
    // A padded frame from the client is accepted.
    let mut frame = Vec::new();
    ChannelData::new(0x4001, b"12345")
        .unwrap()
        .encode(&mut frame, true);
    assert_eq!(h.client_sends(c.ft, &frame)[0].bytes, b"12345");
    // Closing the connection ends the allocation.
    h.server.connection_closed(c.ft);
    let _ = h.drain();
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.released.len(), 1);
}

#[test]
fn address_families() {
    // IPv4-only host.
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    let out = h.client_sends(c.ft, &c.plain(Method::ALLOCATE, udp_transport));
    c.learn(&out[0].bytes);
    let v6 = |b: &mut switchboard_stun::MessageBuilder<'_>| {
        udp_transport(b);
        b.add(&RequestedAddressFamily(AddressFamily::V6));
    };
    assert_eq!(error_code(&c.ask(&mut h, Method::ALLOCATE, v6)), Some(440));
    let both = |b: &mut switchboard_stun::MessageBuilder<'_>| {
        udp_transport(b);
        b.add(&RequestedAddressFamily(AddressFamily::V4));
        b.add(&AdditionalAddressFamily(AddressFamily::V6));
    };
    assert_eq!(
        error_code(&c.ask(&mut h, Method::ALLOCATE, both)),
        Some(400)
    );
    let extra_v4 = |b: &mut switchboard_stun::MessageBuilder<'_>| {
        udp_transport(b);
        b.add(&AdditionalAddressFamily(AddressFamily::V4));
    };
    assert_eq!(
        error_code(&c.ask(&mut h, Method::ALLOCATE, extra_v4)),
        Some(400)
    );
    let dual = |b: &mut switchboard_stun::MessageBuilder<'_>| {
        udp_transport(b);
        b.add(&AdditionalAddressFamily(AddressFamily::V6));
    };
    let out = c.ask(&mut h, Method::ALLOCATE, dual);
    assert!(
        is_success(&out),
        "dual on a v4 host gives v4 and says why not v6"
    );
    let msg = Message::parse(&out).unwrap();
    assert_eq!(msg.get_all::<XorRelayedAddress>().count(), 1);
    let e = msg.get::<AddressErrorCode>().unwrap().unwrap();
    assert_eq!((e.family, e.code), (AddressFamily::V6, 440));

    // Dual-stack host.
    let mut config = config();
    config.relay_ipv6 = true;
    let mut h = Harness::new(config);
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    let out = h.client_sends(c.ft, &c.plain(Method::ALLOCATE, udp_transport));
    c.learn(&out[0].bytes);
    let out = c.ask(&mut h, Method::ALLOCATE, dual);
    let msg = Message::parse(&out).unwrap();
    let relays: Vec<_> = msg
        .get_all::<XorRelayedAddress>()
        .map(|r| r.unwrap().0)
        .collect();
    assert_eq!(relays.len(), 2);
    assert!(relays[0].is_ipv4() && relays[1].is_ipv6());
    // Each family relays from its own socket.
    let v6_peer = addr("[2606:4700::1]:5000");
    assert!(is_success(&c.ask(&mut h, Method::CREATE_PERMISSION, |b| {
        b.add_xor_peer_address(v6_peer);
    })));
    let send = c.signed_with(MessageType::SEND_INDICATION, |b| {
        b.add_xor_peer_address(v6_peer).add_data(b"6");
    });
    let out = h.client_sends(c.ft, &send);
    assert_eq!(out[0].source, Source::Relay(addr("[fd00::2]:50002")));
    for bad in [
        "[fd00::9]:1",
        "[::ffff:127.0.0.1]:80",
        "[::1]:80",
        "[fe80::1]:80",
        "[64:ff9b::a9fe:a9fe]:80",
    ] {
        let out = c.ask(&mut h, Method::CREATE_PERMISSION, |b| {
            b.add_xor_peer_address(addr(bad));
        });
        assert_eq!(error_code(&out), Some(403), "{bad}");
    }
    // An IPv6-only allocation.
    let mut c6 = Client::udp("198.51.100.7:4001", "bob", "bob-pw");
    let out = h.client_sends(c6.ft, &c6.plain(Method::ALLOCATE, udp_transport));
    c6.learn(&out[0].bytes);
    let out = c6.ask(&mut h, Method::ALLOCATE, v6);
    let msg = Message::parse(&out).unwrap();
    assert!(msg.get::<XorRelayedAddress>().unwrap().unwrap().0.is_ipv6());
    let out = c6.ask(&mut h, Method::REFRESH, |b| {
        b.add(&RequestedAddressFamily(AddressFamily::V4));
    });
    assert_eq!(error_code(&out), Some(443));
}

#[test]
fn unknown_methods_and_stray_messages() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    let out = h.client_sends(c.ft, &c.plain(Method::new(0x0AB).unwrap(), |_| {}));
    assert_eq!(error_code(&out[0].bytes), Some(400));
    // Responses and unknown indications from clients are ignored.
    let mut buf = Vec::new();
    let b = switchboard_stun::MessageBuilder::new(&mut buf, MessageType::BINDING_RESPONSE, c.tid());
    let bytes = b.finish().unwrap().to_vec();
    assert!(h.client_sends(c.ft, &bytes).is_empty());
    let ind = c.plain(Method::BINDING, |_| {});
    let mut ind = ind.clone();
    ind[1] |= 0x10; // make it an indication
    let _ = h.client_sends(c.ft, &ind);
    let _ = Class::Indication;
}

#[test]
fn garbage_never_panics_and_leaves_no_state() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    let relay_local = {
        c.allocate(&mut h);
        addr("10.0.0.2:50001")
    };
    let valid = c.signed(Method::REFRESH, |_| {});
    // xorshift: deterministic and dependency-free.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..20_000 {
        let len = (next() % 120) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 3 == 0 && !bytes.is_empty() {
            bytes[0] &= 0x3F; // looks like STUN
            if bytes.len() >= 8 {
                bytes[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
            }
        }
        if i % 5 == 0 {
            // A truncated or bit-flipped valid request.
            bytes = valid[..(next() as usize % valid.len())].to_vec();
            if let Some(b) = bytes.last_mut() {
                *b ^= 1;
            }
        }
        let _ = h.client_sends(c.ft, &bytes);
        let _ = h.peer_sends(relay_local, addr("93.184.216.20:1"), &bytes);
    }
    assert_eq!(h.server.allocation_count(), 1);
    assert!(is_success(&c.ask(&mut h, Method::REFRESH, |_| {})));
}

#[test]
fn rfc5766_channel_numbers_when_allowed() {
    let mut config = config();
    config.allow_rfc5766_channels = true;
    let mut h = Harness::new(config);
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    c.allocate(&mut h);
    let peer = addr("93.184.216.20:7000");
    let bind = |c: &mut Client, h: &mut Harness, n: u16| {
        c.ask(h, Method::CHANNEL_BIND, |b| {
            b.add(&ChannelNumber(n)).add_xor_peer_address(peer);
        })
    };
    assert_eq!(error_code(&bind(&mut c, &mut h, 0x7FFF)), Some(400));
    assert!(is_success(&bind(&mut c, &mut h, 0x657F)));
    let mut frame = Vec::new();
    ChannelData::new(0x657F, b"old")
        .unwrap()
        .encode(&mut frame, false);
    assert_eq!(h.client_sends(c.ft, &frame)[0].bytes, b"old");
    let out = h.peer_sends(addr("10.0.0.2:50001"), peer, b"back");
    assert_eq!(ChannelData::parse(&out[0].bytes).unwrap().channel(), 0x657F);
}

#[test]
fn even_port_reservation_and_token() {
    let mut h = Harness::new(config());
    let mut rtp = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    let out = h.client_sends(rtp.ft, &rtp.plain(Method::ALLOCATE, udp_transport));
    rtp.learn(&out[0].bytes);
    let out = rtp.ask(&mut h, Method::ALLOCATE, |b| {
        udp_transport(b);
        b.add(&switchboard_stun::attr::EvenPort { reserve: true });
    });
    assert!(is_success(&out));
    let msg = Message::parse(&out).unwrap();
    let relayed = msg.get::<XorRelayedAddress>().unwrap().unwrap().0;
    let token = msg
        .get::<switchboard_stun::attr::ReservationToken>()
        .unwrap()
        .expect("token")
        .0;
    assert!(matches!(
        h.bind_requests[..],
        [Event::BindRelay { even_port: true, exact: None, .. }, Event::BindRelay { exact: Some(next), .. }]
            if next.port() == 50002
    ));
    // The RTCP allocation takes the reserved port without binding anything.
    let mut rtcp = Client::udp("198.51.100.7:4001", "alice", "alice-pw");
    rtcp.nonce = None;
    let out = h.client_sends(rtcp.ft, &rtcp.plain(Method::ALLOCATE, udp_transport));
    rtcp.learn(&out[0].bytes);
    let with_token = |b: &mut switchboard_stun::MessageBuilder<'_>| {
        udp_transport(b);
        b.add(&switchboard_stun::attr::ReservationToken(token));
    };
    let out = rtcp.ask(&mut h, Method::ALLOCATE, with_token);
    assert!(is_success(&out), "{:?}", error_code(&out));
    let rtcp_relay = Message::parse(&out)
        .unwrap()
        .get::<XorRelayedAddress>()
        .unwrap()
        .unwrap()
        .0;
    assert_eq!(rtcp_relay.port(), relayed.port() + 1);
    assert_eq!(h.bind_requests.len(), 2);
    // A token works once.
    let mut again = Client::udp("198.51.100.7:4002", "alice", "alice-pw");
    let out = h.client_sends(again.ft, &again.plain(Method::ALLOCATE, udp_transport));
    again.learn(&out[0].bytes);
    assert_eq!(
        error_code(&again.ask(&mut h, Method::ALLOCATE, with_token)),
        Some(508)
    );
}

#[test]
fn unused_reservations_expire_and_failed_ones_are_not_fatal() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    let out = h.client_sends(c.ft, &c.plain(Method::ALLOCATE, udp_transport));
    c.learn(&out[0].bytes);
    let even = |b: &mut switchboard_stun::MessageBuilder<'_>| {
        udp_transport(b);
        b.add(&switchboard_stun::attr::EvenPort { reserve: true });
    };
    assert!(is_success(&c.ask(&mut h, Method::ALLOCATE, even)));
    h.advance(SECS(29));
    assert!(h.released.is_empty());
    h.advance(SECS(1));
    assert_eq!(
        h.released,
        vec![addr("10.0.0.2:50002")],
        "the reserved socket is let go"
    );

    h.reserve_ok = false;
    let mut d = Client::udp("198.51.100.7:4001", "alice", "alice-pw");
    let out = h.client_sends(d.ft, &d.plain(Method::ALLOCATE, udp_transport));
    d.learn(&out[0].bytes);
    let out = d.ask(&mut h, Method::ALLOCATE, even);
    assert!(is_success(&out));
    assert!(
        !Message::parse(&out)
            .unwrap()
            .contains(AttrType::RESERVATION_TOKEN)
    );
}

#[test]
fn own_relay_exception_does_not_open_other_ports_on_that_ip() {
    // Relays live on a private address (10.0.0.2) that the policy denies;
    // only the exact relay addresses are allowed as peers.
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    c.allocate(&mut h);
    let own_relay = addr("10.0.0.2:50001");
    assert!(is_success(&c.ask(&mut h, Method::CREATE_PERMISSION, |b| {
        b.add_xor_peer_address(own_relay);
    })));
    // The permission is per IP, but another port on it stays unreachable.
    let other_port = addr("10.0.0.2:53");
    let send = c.signed_with(MessageType::SEND_INDICATION, |b| {
        b.add_xor_peer_address(other_port).add_data(b"probe");
    });
    assert!(h.client_sends(c.ft, &send).is_empty());
    assert!(h.server.metrics().denied_peers >= 1);
    // The relay address itself still works.
    let send = c.signed_with(MessageType::SEND_INDICATION, |b| {
        b.add_xor_peer_address(own_relay).add_data(b"hello");
    });
    assert_eq!(h.client_sends(c.ft, &send).len(), 1);
}

#[test]
fn permissions_per_allocation_are_capped() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    c.allocate(&mut h);
    // 1,024 distinct public peers in batches of 128: all granted.
    for batch in 0..8u32 {
        let answer = c.ask(&mut h, Method::CREATE_PERMISSION, |b| {
            for i in 0..128u32 {
                let n = batch * 128 + i;
                let ip = std::net::Ipv4Addr::new(93, 184, (n / 250) as u8, (n % 250 + 1) as u8);
                b.add_xor_peer_address(std::net::SocketAddr::from((ip, 7000)));
            }
        });
        assert!(is_success(&answer), "batch {batch}");
    }
    // One more is refused with 508, and nothing else changes.
    let answer = c.ask(&mut h, Method::CREATE_PERMISSION, |b| {
        b.add_xor_peer_address(addr("93.184.200.1:7000"));
    });
    assert_eq!(error_code(&answer), Some(508));
}
