//! What operators see and do: the allocation view, revoke, and the
//! created/ended events, driven through the virtual-clock harness.

mod common;

use std::time::Duration;

use common::*;
use switchboard_stun::attr::{ChannelNumber, Lifetime};
use switchboard_stun::{ChannelData, Method};
use switchboard_turn::{AllocationEvent, AllocationId, EndReason, Transport};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn events(h: &mut Harness) -> Vec<AllocationEvent> {
    std::iter::from_fn(|| h.server.poll_allocation_event()).collect()
}

#[test]
fn view_lists_allocations_with_their_relayed_bytes() {
    let mut h = Harness::new(config());
    assert!(h.server.allocations().is_empty());
    let mut alice = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    let relayed = alice.allocate(&mut h);
    h.advance(SECS(10));
    let mut bob = Client::new(Transport::Tcp, "198.51.100.8:4000", "bob", "bob-pw");
    bob.allocate(&mut h);

    let peer = addr("93.184.216.20:7000");
    let relay_local = addr("10.0.0.2:50001");
    assert!(is_success(&alice.ask(
        &mut h,
        Method::CREATE_PERMISSION,
        |b| {
            b.add_xor_peer_address(peer);
        }
    )));
    assert!(is_success(&alice.ask(&mut h, Method::CHANNEL_BIND, |b| {
        b.add(&ChannelNumber(0x4000)).add_xor_peer_address(peer);
    })));
    // 5 bytes out by Send indication, 7 by ChannelData; 3 in by each way back.
    let send = alice.signed_with(switchboard_stun::MessageType::SEND_INDICATION, |b| {
        b.add_xor_peer_address(peer).add_data(b"hello");
    });
    assert_eq!(h.client_sends(alice.ft, &send).len(), 1);
    let mut frame = Vec::new();
    ChannelData::new(0x4000, b"channel")
        .unwrap()
        .encode(&mut frame, false);
    assert_eq!(h.client_sends(alice.ft, &frame).len(), 1);
    assert_eq!(h.peer_sends(relay_local, peer, b"abc").len(), 1);
    // Not permitted: dropped, and not counted.
    assert!(
        h.peer_sends(relay_local, addr("93.184.216.99:1"), b"zzzz")
            .is_empty()
    );

    let all = h.server.allocations();
    assert_eq!(all.len(), 2);
    let a = &all[0];
    assert_eq!(&*a.username, "alice");
    assert_eq!(a.five_tuple, alice.ft);
    assert_eq!(a.relayed, vec![relayed]);
    assert_eq!(a.created, h.start);
    assert_eq!(a.expires, h.start + SECS(600));
    assert_eq!((a.bytes_out, a.bytes_in), (12, 3));
    assert_eq!((a.permissions, a.channels), (1, 1));
    let b = &all[1];
    assert_eq!(&*b.username, "bob");
    assert_eq!(b.five_tuple.transport, Transport::Tcp);
    assert_eq!(b.created, h.start + SECS(10));
    assert_eq!((b.bytes_in, b.bytes_out), (0, 0));
    assert!(a.id < b.id, "ids grow");
    assert_eq!(h.server.allocation(a.id).as_ref(), Some(a));

    // A Refresh moves the expiry the view shows.
    assert!(is_success(&alice.ask(&mut h, Method::REFRESH, |b| {
        b.add(&Lifetime(900));
    })));
    let a = h.server.allocation(a.id).unwrap();
    assert_eq!(a.expires, h.now + SECS(900));
}

#[test]
fn revoke_ends_the_allocation_at_once() {
    let mut h = Harness::new(config());
    let mut alice = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    alice.allocate(&mut h);
    let mut bob = Client::udp("198.51.100.8:4000", "bob", "bob-pw");
    bob.allocate(&mut h);
    let peer = addr("93.184.216.20:7000");
    let relay_local = addr("10.0.0.2:50001");
    assert!(is_success(&alice.ask(&mut h, Method::CHANNEL_BIND, |b| {
        b.add(&ChannelNumber(0x4000)).add_xor_peer_address(peer);
    })));
    assert_eq!(h.peer_sends(relay_local, peer, b"before").len(), 1);
    let id = h.server.allocations()[0].id;
    let m = h.server.metrics();
    assert_eq!((m.allocations, m.permissions, m.channels), (2, 1, 1));

    assert!(h.server.revoke(h.now, id));
    h.drain();
    assert_eq!(h.released, vec![relay_local], "its relay port is released");
    let m = h.server.metrics();
    assert_eq!((m.allocations, m.permissions, m.channels), (1, 0, 0));
    assert_eq!(m.allocations_revoked, 1);
    assert_eq!(m.allocations_expired, 0);
    assert!(h.server.allocation(id).is_none());
    assert_eq!(h.server.allocations().len(), 1, "bob's stays");

    // Nothing is relayed either way, and a Refresh gets 437.
    let dropped = h.server.metrics().dropped;
    assert!(h.peer_sends(relay_local, peer, b"after").is_empty());
    let mut frame = Vec::new();
    ChannelData::new(0x4000, b"after")
        .unwrap()
        .encode(&mut frame, false);
    assert!(h.client_sends(alice.ft, &frame).is_empty());
    assert_eq!(h.server.metrics().dropped, dropped + 2);
    assert_eq!(
        error_code(&alice.ask(&mut h, Method::REFRESH, |_| {})),
        Some(437)
    );

    // Twice, unknown, or never issued: nothing happens.
    assert!(!h.server.revoke(h.now, id));
    assert!(!h.server.revoke(h.now, AllocationId(u64::MAX)));
    assert_eq!(h.server.metrics().allocations_revoked, 1);
    assert_eq!(h.server.allocations().len(), 1);
    h.drain();
    assert_eq!(h.released.len(), 1, "nothing more released");

    // Its timer no longer fires anything, and a new allocation gets a new id.
    h.advance(SECS(700));
    assert_eq!(h.server.metrics().allocations_expired, 1, "only bob's");
    alice.allocate(&mut h);
    let fresh = h.server.allocations();
    assert_eq!(fresh.len(), 1);
    assert!(fresh[0].id > id, "ids are never reused");
}

#[test]
fn lifecycle_events_for_every_way_an_allocation_ends() {
    let mut h = Harness::new(config());
    let mut expiring = Client::udp("198.51.100.1:4000", "alice", "alice-pw");
    let mut deleting = Client::udp("198.51.100.2:4000", "alice", "alice-pw");
    let mut closing = Client::new(Transport::Tls, "198.51.100.3:4000", "bob", "bob-pw");
    let mut revoked = Client::udp("198.51.100.4:4000", "bob", "bob-pw");
    let relayed: Vec<_> = [&mut expiring, &mut deleting, &mut closing, &mut revoked]
        .into_iter()
        .map(|c| c.allocate(&mut h))
        .collect();

    let created = events(&mut h);
    assert_eq!(created.len(), 4);
    for (event, relay) in created.iter().zip(&relayed) {
        let AllocationEvent::Created(view) = event else {
            panic!("created first: {event:?}");
        };
        assert_eq!(view.relayed, vec![*relay]);
    }
    let id_of = |i: usize| match &created[i] {
        AllocationEvent::Created(v) => v.id,
        _ => unreachable!(),
    };

    let peer = addr("93.184.216.20:7000");
    assert!(is_success(&deleting.ask(
        &mut h,
        Method::CREATE_PERMISSION,
        |b| {
            b.add_xor_peer_address(peer);
        }
    )));
    let send = deleting.signed_with(switchboard_stun::MessageType::SEND_INDICATION, |b| {
        b.add_xor_peer_address(peer).add_data(b"12345678");
    });
    assert_eq!(h.client_sends(deleting.ft, &send).len(), 1);
    assert!(is_success(&deleting.ask(&mut h, Method::REFRESH, |b| {
        b.add(&Lifetime(0));
    })));
    h.server.connection_closed(closing.ft);
    assert!(h.server.revoke(h.now, id_of(3)));
    h.advance(SECS(600));

    let ended: Vec<_> = events(&mut h)
        .into_iter()
        .map(|e| match e {
            AllocationEvent::Ended { allocation, reason } => (allocation, reason),
            other => panic!("only ends now: {other:?}"),
        })
        .collect();
    let summary: Vec<_> = ended
        .iter()
        .map(|(a, reason)| (a.id, a.username.to_string(), *reason))
        .collect();
    assert_eq!(
        summary,
        vec![
            (id_of(1), "alice".to_owned(), EndReason::Deleted),
            (id_of(2), "bob".to_owned(), EndReason::Closed),
            (id_of(3), "bob".to_owned(), EndReason::Revoked),
            (id_of(0), "alice".to_owned(), EndReason::Expired),
        ]
    );
    let (deleted, _) = &ended[0];
    assert_eq!(deleted.bytes_out, 8, "the final count comes with the end");
    assert_eq!(deleted.five_tuple, deleting.ft);
    assert_eq!(ended[1].0.five_tuple.transport, Transport::Tls);
    assert_eq!(h.server.metrics().allocation_events_dropped, 0);
}

#[test]
fn lifecycle_queue_is_bounded_and_can_be_off() {
    let mut config = config();
    config.max_queued_allocation_events = 2;
    let mut h = Harness::new(config);
    for i in 0..3 {
        let mut c = Client::udp(&format!("198.51.100.{}:4000", i + 1), "alice", "alice-pw");
        c.allocate(&mut h);
    }
    assert_eq!(h.server.metrics().allocation_events_dropped, 1);
    let kept = events(&mut h);
    assert_eq!(kept.len(), 2, "the oldest are kept");
    assert!(
        matches!(&kept[0], AllocationEvent::Created(v) if v.five_tuple.client == addr("198.51.100.1:4000"))
    );
    // Drained, there is room again.
    let id = h.server.allocations()[2].id;
    assert!(h.server.revoke(h.now, id));
    assert_eq!(events(&mut h).len(), 1);

    let mut off = common::config();
    off.max_queued_allocation_events = 0;
    let mut h = Harness::new(off);
    let mut c = Client::udp("198.51.100.1:4000", "alice", "alice-pw");
    c.allocate(&mut h);
    assert!(h.server.poll_allocation_event().is_none());
    assert_eq!(h.server.metrics().allocation_events_dropped, 0);
    assert_eq!(
        h.server.allocations().len(),
        1,
        "the view does not need events"
    );
}

#[test]
fn draining_refuses_new_allocations_and_keeps_the_old_ones() {
    let mut h = Harness::new(config());
    let mut old = Client::udp("198.51.100.1:4000", "alice", "alice-pw");
    old.allocate(&mut h);
    let peer = addr("93.184.216.20:7000");
    assert!(is_success(&old.ask(
        &mut h,
        Method::CREATE_PERMISSION,
        |b| {
            b.add_xor_peer_address(peer);
        }
    )));

    h.server.set_draining(true);
    assert!(h.server.is_draining());
    let mut new = Client::udp("198.51.100.2:4000", "bob", "bob-pw");
    let out = h.client_sends(new.ft, &new.plain(Method::ALLOCATE, udp_transport));
    new.learn(&out[0].bytes);
    let answer = new.ask(&mut h, Method::ALLOCATE, udp_transport);
    assert_eq!(error_code(&answer), Some(508));
    assert_eq!(h.server.metrics().draining_refusals, 1);
    assert_eq!(h.bind_requests.len(), 1, "no relay asked for");

    // The old allocation lives on: refreshed, permitted, relaying.
    assert!(is_success(&old.ask(&mut h, Method::REFRESH, |_| {})));
    assert!(is_success(&old.ask(
        &mut h,
        Method::CREATE_PERMISSION,
        |b| {
            b.add_xor_peer_address(peer);
        }
    )));
    assert_eq!(
        h.peer_sends(addr("10.0.0.2:50001"), peer, b"still").len(),
        1
    );

    h.server.set_draining(false);
    new.allocate(&mut h);
    assert_eq!(h.server.allocations().len(), 2);
}
