//! The limits that keep one client from taking the TURN server for itself
//! (issue #12: quotas, permission caps, reservations, request size,
//! challenge rate, the server's own addresses), on the virtual clock.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::*;
use switchboard_stun::attr::{ChannelNumber, EvenPort, Lifetime, ReservationToken};
use switchboard_stun::{AttrType, ChannelData, Message, MessageBuilder, Method};
use switchboard_turn::auth::mint_rest_credential;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// The 401 dance if needed, then an Allocate with `fill`; the answer.
fn try_allocate(
    c: &mut Client,
    h: &mut Harness,
    fill: impl FnOnce(&mut MessageBuilder<'_>),
) -> Vec<u8> {
    if c.nonce.is_none() {
        let out = h.client_sends(c.ft, &c.plain(Method::ALLOCATE, udp_transport));
        assert_eq!(error_code(&out[0].bytes), Some(401));
        c.learn(&out[0].bytes);
    }
    c.ask(h, Method::ALLOCATE, fill)
}

fn rest_client(client: &str, expiry_offset: u64, id: &str) -> Client {
    let (user, pass) = mint_rest_credential(b"rest-secret", UNIX_NOW + expiry_offset, id);
    Client::udp(client, &user, &pass)
}

fn delete(c: &mut Client, h: &mut Harness) {
    let out = c.ask(h, Method::REFRESH, |b| {
        b.add(&Lifetime(0));
    });
    assert!(is_success(&out));
}

#[test]
fn rest_quota_counts_the_identity_not_the_minted_name() {
    let mut config = common::config();
    config.max_allocations_per_user = 2;
    let mut h = Harness::new(config);
    // Every session mints a fresh "<expiry>:<id>"; the id is who counts.
    let mut sessions: Vec<Client> = (0..3)
        .map(|i| rest_client(&format!("198.51.100.7:{}", 4000 + i), 600 + i, "sub-1"))
        .collect();
    assert!(is_success(&try_allocate(
        &mut sessions[0],
        &mut h,
        udp_transport
    )));
    assert!(is_success(&try_allocate(
        &mut sessions[1],
        &mut h,
        udp_transport
    )));
    assert_eq!(
        error_code(&try_allocate(&mut sessions[2], &mut h, udp_transport)),
        Some(486)
    );
    // Another identity has its own quota.
    let mut other = rest_client("198.51.100.8:4000", 600, "sub-2");
    assert!(is_success(&try_allocate(&mut other, &mut h, udp_transport)));
    // A static user named like the REST id is someone else.
    let mut config = switchboard_turn::ServerConfig::new(REALM, b"nonce-secret".to_vec());
    config.credentials.add_user("sub-1", "pw");
    config.credentials.add_rest_secret("rest-secret");
    config.max_allocations_per_user = 1;
    let mut h = Harness::new(config);
    let mut rest = rest_client("198.51.100.7:4000", 600, "sub-1");
    let mut stat = Client::udp("198.51.100.7:4001", "sub-1", "pw");
    assert!(is_success(&try_allocate(&mut rest, &mut h, udp_transport)));
    assert!(is_success(&try_allocate(&mut stat, &mut h, udp_transport)));
    assert_eq!(h.server.metrics().quota_rejections, 0);
}

#[test]
fn per_source_cap_counts_every_user_from_that_address() {
    let mut config = common::config();
    config.max_allocations_per_ip = 3;
    let mut h = Harness::new(config);
    let mut clients: Vec<Client> = (0..4)
        .map(|i| {
            rest_client(
                &format!("198.51.100.7:{}", 4000 + i),
                600,
                &format!("id-{i}"),
            )
        })
        .collect();
    for c in &mut clients[..3] {
        assert!(is_success(&try_allocate(c, &mut h, udp_transport)));
    }
    let out = try_allocate(&mut clients[3], &mut h, udp_transport);
    assert_eq!(error_code(&out), Some(486));
    assert!(
        Message::parse(&out)
            .unwrap()
            .verify_message_integrity(&clients[3].key())
            .is_ok()
    );
    // Static users count against the same source.
    let mut alice = Client::udp("198.51.100.7:5000", "alice", "alice-pw");
    assert_eq!(
        error_code(&try_allocate(&mut alice, &mut h, udp_transport)),
        Some(486)
    );
    // Another source is not affected.
    let mut elsewhere = rest_client("198.51.100.9:4000", 600, "id-9");
    assert!(is_success(&try_allocate(
        &mut elsewhere,
        &mut h,
        udp_transport
    )));
    assert_eq!(h.server.metrics().quota_rejections, 2);
    // Deleting one frees its slot.
    delete(&mut clients[0], &mut h);
    assert!(is_success(&clients[3].ask(
        &mut h,
        Method::ALLOCATE,
        udp_transport
    )));

    // IPv6 sources are counted per /64, which one client can walk freely.
    let mut config = common::config();
    config.max_allocations_per_ip = 1;
    config.policy.allow("2001:db8::/32".parse().unwrap());
    let mut h = Harness::new(config);
    let mut first = rest_client("[2001:db8:1:2::1]:4000", 600, "a");
    let mut same_64 = rest_client("[2001:db8:1:2::ffff]:4000", 600, "b");
    let mut other_64 = rest_client("[2001:db8:1:3::1]:4000", 600, "c");
    assert!(is_success(&try_allocate(&mut first, &mut h, udp_transport)));
    assert_eq!(
        error_code(&try_allocate(&mut same_64, &mut h, udp_transport)),
        Some(486)
    );
    assert!(is_success(&try_allocate(
        &mut other_64,
        &mut h,
        udp_transport
    )));

    // 0 turns the cap off.
    let mut config = common::config();
    config.max_allocations_per_ip = 0;
    let mut h = Harness::new(config);
    for i in 0..40 {
        let mut c = rest_client(&format!("198.51.100.7:{}", 4000 + i), 600, &format!("{i}"));
        assert!(is_success(&try_allocate(&mut c, &mut h, udp_transport)));
    }
}

#[test]
fn channel_bind_counts_against_the_permission_cap() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    c.allocate(&mut h);
    let peer = |n: u32| {
        let ip = Ipv4Addr::new(93, 184, (n / 250) as u8, (n % 250 + 1) as u8);
        SocketAddr::from((ip, 7000))
    };
    // 1,023 permissions by CreatePermission, then one by ChannelBind: the cap.
    for batch in 0..8u32 {
        let answer = c.ask(&mut h, Method::CREATE_PERMISSION, |b| {
            for i in 0..128u32 {
                let n = batch * 128 + i;
                if n < 1023 {
                    b.add_xor_peer_address(peer(n));
                }
            }
        });
        assert!(is_success(&answer), "batch {batch}");
    }
    let bind = |c: &mut Client, h: &mut Harness, number: u16, p: SocketAddr| {
        c.ask(h, Method::CHANNEL_BIND, |b| {
            b.add(&ChannelNumber(number)).add_xor_peer_address(p);
        })
    };
    assert!(is_success(&bind(&mut c, &mut h, 0x4000, peer(1023))));
    assert_eq!(h.server.metrics().permissions, 1024);
    // A channel to a peer without a permission would be the 1,025th.
    assert_eq!(
        error_code(&bind(&mut c, &mut h, 0x4001, peer(2000))),
        Some(508)
    );
    let m = h.server.metrics();
    assert_eq!((m.permissions, m.channels), (1024, 1), "nothing changed");
    // Binding or refreshing a channel to an already permitted peer is fine.
    assert!(is_success(&bind(&mut c, &mut h, 0x4001, peer(5))));
    assert!(is_success(&bind(&mut c, &mut h, 0x4000, peer(1023))));
    // Once permissions expire, there is room again.
    h.advance(SECS(301));
    assert!(is_success(&bind(&mut c, &mut h, 0x4002, peer(2000))));
}

#[test]
fn reservations_hold_a_quota_slot_until_used_or_expired() {
    let mut config = common::config();
    config.max_allocations_per_user = 2;
    config.max_allocations_per_ip = 3;
    let mut h = Harness::new(config);
    let even = |b: &mut MessageBuilder<'_>| {
        udp_transport(b);
        b.add(&EvenPort { reserve: true });
    };
    let mut rtp = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    let out = try_allocate(&mut rtp, &mut h, even);
    assert!(is_success(&out));
    let token = Message::parse(&out)
        .unwrap()
        .get::<ReservationToken>()
        .unwrap()
        .expect("token")
        .0;
    // The allocation and the held port are alice's two slots.
    let mut more = Client::udp("198.51.100.7:4001", "alice", "alice-pw");
    assert_eq!(
        error_code(&try_allocate(&mut more, &mut h, udp_transport)),
        Some(486)
    );
    // ... and two of the source's three.
    let mut bob = Client::udp("198.51.100.7:4002", "bob", "bob-pw");
    assert!(is_success(&try_allocate(&mut bob, &mut h, udp_transport)));
    let mut bob2 = Client::udp("198.51.100.7:4003", "bob", "bob-pw");
    assert_eq!(
        error_code(&try_allocate(&mut bob2, &mut h, udp_transport)),
        Some(486)
    );
    // Using the token moves the slot to the new allocation: still two.
    let out = try_allocate(&mut more, &mut h, |b| {
        udp_transport(b);
        b.add(&ReservationToken(token));
    });
    assert!(is_success(&out), "{:?}", error_code(&out));
    let mut third = Client::udp("198.51.100.7:4004", "alice", "alice-pw");
    assert_eq!(
        error_code(&try_allocate(&mut third, &mut h, udp_transport)),
        Some(486)
    );

    // A reservation nobody uses holds its slot until it expires (30 s).
    delete(&mut more, &mut h);
    delete(&mut rtp, &mut h);
    delete(&mut bob, &mut h);
    let mut rtp = Client::udp("198.51.100.7:4010", "alice", "alice-pw");
    assert!(is_success(&try_allocate(&mut rtp, &mut h, even)));
    let mut late = Client::udp("198.51.100.7:4011", "alice", "alice-pw");
    assert_eq!(
        error_code(&try_allocate(&mut late, &mut h, udp_transport)),
        Some(486)
    );
    h.advance(SECS(30));
    assert!(is_success(&late.ask(
        &mut h,
        Method::ALLOCATE,
        udp_transport
    )));

    // Without room for a second slot, EVEN-PORT R gets no token.
    let mut config = common::config();
    config.max_allocations_per_user = 1;
    let mut h = Harness::new(config);
    let mut solo = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    let out = try_allocate(&mut solo, &mut h, even);
    assert!(is_success(&out));
    assert!(
        !Message::parse(&out)
            .unwrap()
            .contains(AttrType::RESERVATION_TOKEN)
    );
    assert_eq!(h.bind_requests.len(), 1, "no port reserved");
}

#[test]
fn oversized_requests_get_400_before_any_credential_check() {
    let mut h = Harness::new(common::config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "wrong-password");
    let out = h.client_sends(c.ft, &c.plain(Method::ALLOCATE, udp_transport));
    c.learn(&out[0].bytes);
    // 3 KB of a comprehension-optional attribute: ignorable, but what a
    // failed check would have to HMAC.
    let padded = |b: &mut MessageBuilder<'_>| {
        udp_transport(b);
        b.add_raw(AttrType(0x8123), &[0u8; 3000]);
    };
    let answer = c.ask(&mut h, Method::ALLOCATE, padded);
    assert_eq!(error_code(&answer), Some(400));
    let msg = Message::parse(&answer).unwrap();
    assert!(!msg.contains(AttrType::NONCE) && !msg.has_message_integrity());
    let m = h.server.metrics();
    assert_eq!((m.auth_failures, m.oversized_requests), (0, 1), "no HMAC");
    // With the right password the same request is still too large.
    let mut alice = Client::udp("198.51.100.7:4001", "alice", "alice-pw");
    assert_eq!(
        error_code(&try_allocate(&mut alice, &mut h, padded)),
        Some(400)
    );
    assert_eq!(h.server.allocation_count(), 0);
    // Within the limit it goes through.
    let fits = |b: &mut MessageBuilder<'_>| {
        udp_transport(b);
        b.add_raw(AttrType(0x8123), &[0u8; 1500]);
    };
    assert!(is_success(&alice.ask(&mut h, Method::ALLOCATE, fits)));
    // Send indications carry the relayed payload and are not limited.
    let peer = addr("93.184.216.34:7000");
    assert!(is_success(&alice.ask(
        &mut h,
        Method::CREATE_PERMISSION,
        |b| {
            b.add_xor_peer_address(peer);
        }
    )));
    let send = alice.signed_with(switchboard_stun::MessageType::SEND_INDICATION, |b| {
        b.add_xor_peer_address(peer).add_data(&[7u8; 8000]);
    });
    let out = h.client_sends(alice.ft, &send);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].bytes.len(), 8000);
}

#[test]
fn challenges_are_rate_limited_per_source() {
    let mut config = common::config();
    config.challenges_per_ip_per_sec = 5;
    let mut h = Harness::new(config);
    let flood = |h: &mut Harness, ip: &str, count: u16| {
        (0..count)
            .filter(|i| {
                let mut c = Client::udp(&format!("{ip}:{}", 10_000 + i), "alice", "bad");
                let out = h.client_sends(c.ft, &c.plain(Method::ALLOCATE, udp_transport));
                match out.first() {
                    Some(answer) => {
                        assert_eq!(error_code(&answer.bytes), Some(401));
                        true
                    }
                    None => false,
                }
            })
            .count()
    };
    // A burst of two seconds' worth, then silence.
    assert_eq!(flood(&mut h, "198.51.100.7", 50), 10);
    assert_eq!(h.server.metrics().challenges_dropped, 40);
    // Another source is not affected.
    assert_eq!(flood(&mut h, "198.51.100.8", 3), 3);
    // The bucket refills at the rate.
    h.advance(SECS(1));
    assert_eq!(flood(&mut h, "198.51.100.7", 50), 5);
    // Wrong passwords (401 after the HMAC) and stale nonces (438) draw on
    // the same bucket.
    h.advance(SECS(2));
    let mut c = Client::udp("198.51.100.7:4000", "alice", "bad");
    let out = h.client_sends(c.ft, &c.plain(Method::ALLOCATE, udp_transport));
    c.learn(&out[0].bytes);
    let answered = (0..20)
        .filter(|_| {
            let out = h.client_sends(c.ft, &c.signed(Method::ALLOCATE, udp_transport));
            out.first().map(|s| error_code(&s.bytes)) == Some(Some(401))
        })
        .count();
    assert_eq!(answered, 9);
    c.nonce = Some(b"forged".to_vec());
    assert!(
        h.client_sends(c.ft, &c.signed(Method::ALLOCATE, udp_transport))
            .is_empty()
    );
    // Other answers are not limited: they are no larger than the request.
    let out = h.client_sends(c.ft, &c.plain(Method::BINDING, |_| {}));
    assert_eq!(out.len(), 1);
}

#[test]
fn the_servers_own_addresses_are_no_peers_but_live_relays_are() {
    // The harness's server (192.0.2.10), relays (10.0.0.2) and advertised
    // relays (203.0.113.2) sit in ranges the default policy refuses
    // anyway: open them, as a public host's addresses would be.
    let mut config = common::config();
    for range in ["192.0.2.0/24", "10.0.0.0/8", "203.0.113.0/24"] {
        config.policy.allow(range.parse().unwrap());
    }
    config.own_addresses = vec!["93.184.216.1".parse().unwrap()];
    let mut h = Harness::new(config);
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    let relayed = c.allocate(&mut h);
    assert_eq!(relayed, addr("203.0.113.2:50001"));
    let permit = |c: &mut Client, h: &mut Harness, peer: &str| {
        error_code(&c.ask(h, Method::CREATE_PERMISSION, |b| {
            b.add_xor_peer_address(addr(peer));
        }))
    };
    for own in [
        "192.0.2.10:3478",  // the listener the client reached
        "192.0.2.10:22",    // any other service on that address
        "10.0.0.2:53",      // the relay's local address
        "203.0.113.2:3478", // the advertised (external) address
        "93.184.216.1:161", // configured by the shell
    ] {
        assert_eq!(permit(&mut c, &mut h, own), Some(403), "{own}");
    }
    // Neighbours in the opened ranges are fine.
    assert_eq!(permit(&mut c, &mut h, "192.0.2.11:3478"), None);
    assert_eq!(permit(&mut c, &mut h, "10.0.0.3:53"), None);
    // The exact relay addresses of live allocations are allowed peers.
    let mut d = Client::udp("198.51.100.8:4000", "bob", "bob-pw");
    let other_relay = d.allocate(&mut h);
    let other_local = addr("10.0.0.2:50002");
    assert_eq!(permit(&mut c, &mut h, &other_relay.to_string()), None);
    assert_eq!(permit(&mut c, &mut h, &other_local.to_string()), None);
    // A Send indication to another port of that IP is dropped, although
    // the permission (per IP) is there.
    let send = |c: &mut Client, h: &mut Harness, peer: SocketAddr| {
        let ind = c.signed_with(switchboard_stun::MessageType::SEND_INDICATION, |b| {
            b.add_xor_peer_address(peer).add_data(b"probe");
        });
        h.client_sends(c.ft, &ind).len()
    };
    assert_eq!(send(&mut c, &mut h, addr("203.0.113.2:3478")), 0);
    assert_eq!(send(&mut c, &mut h, other_relay), 1);
    // A channel to it relays too (found by the turn_server fuzz target: the
    // channel outlived the relay it pointed at).
    let bound = c.ask(&mut h, Method::CHANNEL_BIND, |b| {
        b.add(&ChannelNumber(0x4000))
            .add_xor_peer_address(other_relay);
    });
    assert!(is_success(&bound));
    let mut frame = Vec::new();
    ChannelData::new(0x4000, b"probe")
        .expect("channel data")
        .encode(&mut frame, false);
    assert_eq!(h.client_sends(c.ft, &frame).len(), 1);
    // Once that allocation is gone, its address is just a port on this host.
    delete(&mut d, &mut h);
    assert_eq!(send(&mut c, &mut h, other_relay), 0);
    assert_eq!(
        h.client_sends(c.ft, &frame).len(),
        0,
        "channel to a gone relay"
    );
    assert_eq!(permit(&mut c, &mut h, &other_relay.to_string()), Some(403));

    // Loopback follows the policy alone: opening it (as the tests do to
    // relay between processes on one machine) opens the whole host.
    let mut config = common::config();
    config.policy.allow("127.0.0.0/8".parse().unwrap());
    config.own_addresses = vec!["127.0.0.1".parse().unwrap()];
    let mut h = Harness::new(config);
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    c.allocate(&mut h);
    assert_eq!(permit(&mut c, &mut h, "127.0.0.1:9"), None);
}

#[test]
fn service_peers_are_allowed_and_nothing_else_on_their_ips() {
    // The SFU's media socket on an own address and on loopback: both are
    // refused by default, both are peers once named as services.
    let mut config = common::config();
    config.own_addresses = vec!["93.184.216.1".parse().unwrap()];
    config.service_peers = vec![addr("93.184.216.1:3480"), addr("127.0.0.1:3480")];
    let mut h = Harness::new(config);
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    c.allocate(&mut h);
    let permit = |c: &mut Client, h: &mut Harness, peer: &str| {
        error_code(&c.ask(h, Method::CREATE_PERMISSION, |b| {
            b.add_xor_peer_address(addr(peer));
        }))
    };
    assert_eq!(permit(&mut c, &mut h, "93.184.216.1:3480"), None);
    assert_eq!(permit(&mut c, &mut h, "127.0.0.1:3480"), None);
    for other in ["93.184.216.1:3481", "127.0.0.1:22", "127.0.0.2:3480"] {
        assert_eq!(permit(&mut c, &mut h, other), Some(403), "{other}");
    }
    let send = |c: &mut Client, h: &mut Harness, peer: SocketAddr| {
        let ind = c.signed_with(switchboard_stun::MessageType::SEND_INDICATION, |b| {
            b.add_xor_peer_address(peer).add_data(b"media");
        });
        h.client_sends(c.ft, &ind).len()
    };
    assert_eq!(send(&mut c, &mut h, addr("93.184.216.1:3480")), 1);
    assert_eq!(send(&mut c, &mut h, addr("93.184.216.1:3481")), 0);
    let bound = c.ask(&mut h, Method::CHANNEL_BIND, |b| {
        b.add(&ChannelNumber(0x4001))
            .add_xor_peer_address(addr("93.184.216.1:3480"));
    });
    assert!(is_success(&bound));
    let mut frame = Vec::new();
    ChannelData::new(0x4001, b"media")
        .expect("channel data")
        .encode(&mut frame, false);
    assert_eq!(
        h.client_sends(c.ft, &frame).len(),
        1,
        "a channel to the SFU relays"
    );
}
