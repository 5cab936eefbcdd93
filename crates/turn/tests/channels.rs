//! RFC 8656 §12 on the virtual clock: after a channel binding expires, its
//! number and its peer stay reserved for each other for five minutes.

mod common;

use std::time::Duration;

use common::*;
use switchboard_stun::attr::{ChannelNumber, Lifetime};
use switchboard_stun::{ChannelData, Method};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn bind(c: &mut Client, h: &mut Harness, n: u16, peer: std::net::SocketAddr) -> Option<u16> {
    let answer = c.ask(h, Method::CHANNEL_BIND, |b| {
        b.add(&ChannelNumber(n)).add_xor_peer_address(peer);
    });
    if is_success(&answer) {
        None
    } else {
        Some(error_code(&answer).unwrap_or(0))
    }
}

#[test]
fn expired_channel_and_peer_are_held_for_five_minutes() {
    let mut config = config();
    // Keeps 438s out of the way: nonces are not what this test is about.
    config.nonce_lifetime = SECS(7200);
    let mut h = Harness::new(config);
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    c.allocate(&mut h);
    assert!(is_success(&c.ask(&mut h, Method::REFRESH, |b| {
        b.add(&Lifetime(3600));
    })));
    let p1 = addr("93.184.216.20:7000");
    let p2 = addr("93.184.216.21:7000");
    let p3 = addr("93.184.216.22:7000");
    assert_eq!(bind(&mut c, &mut h, 0x4000, p1), None);
    assert_eq!(bind(&mut c, &mut h, 0x4001, p3), None);
    assert_eq!(h.server.metrics().channels, 2);

    h.advance(SECS(600));
    assert_eq!(h.server.metrics().channels, 0, "both expired at 600 s");
    let mut frame = Vec::new();
    ChannelData::new(0x4000, b"late")
        .expect("channel")
        .encode(&mut frame, false);
    assert!(
        h.client_sends(c.ft, &frame).is_empty(),
        "a held channel relays nothing"
    );
    assert_eq!(
        bind(&mut c, &mut h, 0x4000, p2),
        Some(400),
        "channel held for p1"
    );
    assert_eq!(
        bind(&mut c, &mut h, 0x4002, p1),
        Some(400),
        "p1 held for 0x4000"
    );
    // The same pair may come back at once.
    assert_eq!(bind(&mut c, &mut h, 0x4001, p3), None);
    assert_eq!(h.server.metrics().channels, 1);

    h.advance(SECS(299));
    assert_eq!(bind(&mut c, &mut h, 0x4000, p2), Some(400));
    assert_eq!(bind(&mut c, &mut h, 0x4002, p1), Some(400));
    h.advance(SECS(1));
    assert_eq!(
        bind(&mut c, &mut h, 0x4000, p2),
        None,
        "free five minutes after expiry"
    );
    assert_eq!(bind(&mut c, &mut h, 0x4002, p1), None);
    assert_eq!(h.server.metrics().channels, 3);
    // The revived 0x4001 binding is held from its own, later expiry.
    h.advance(SECS(300));
    assert_eq!(h.server.metrics().channels, 2, "0x4001 expired");
    assert_eq!(bind(&mut c, &mut h, 0x4001, p2), Some(400));
    assert_eq!(bind(&mut c, &mut h, 0x4003, p3), Some(400));
}
