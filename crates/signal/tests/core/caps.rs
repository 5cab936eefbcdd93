//! The caps of issue #12: meta size and a room's listing budget (join
//! amplification), ringing calls per caller, sessions in grace per user
//! and per source IP, and the cost of a rate-limited frame.

use std::net::{IpAddr, Ipv4Addr};

use serde_json::json;
use switchboard_signal::{Config, Disconnect, Identity, MEMBER_ENTRY_BYTES};

use crate::harness::{H, user};

fn meta_of(len: usize) -> serde_json::Value {
    // {"m":"xxx"} is 8 bytes around the x's.
    json!({"m": "x".repeat(len - 8)})
}

#[test]
fn a_meta_over_the_cap_is_too_large_and_changes_nothing() {
    let mut h = H::default();
    let a = h.connect();
    let b = h.connect();
    h.join(&a, "r");
    h.send(
        b.conn,
        json!({"type":"join","room":"r","meta":meta_of(4097),"id":1}),
    );
    h.expect_error(b.conn, "too_large", Some(json!(1)));
    h.quiet(a.conn);
    h.send(
        b.conn,
        json!({"type":"join","room":"r","meta":meta_of(4096),"id":2}),
    );
    assert_eq!(h.next(b.conn)["type"], "joined");
    assert_eq!(h.next(a.conn)["type"], "other_joined");
    // Calls carry meta to the callee too.
    let c = h.connect_as(user("carol"));
    h.send(
        a.conn,
        json!({"type":"call","to":"carol","meta":meta_of(5000),"id":3}),
    );
    h.expect_error(a.conn, "too_large", Some(json!(3)));
    h.quiet(c.conn);
}

#[test]
fn a_room_over_its_listing_budget_is_full() {
    let entry = 100 + MEMBER_ENTRY_BYTES;
    let mut h = H::new(Config {
        max_room_meta_bytes: 3 * entry,
        ..Config::default()
    });
    let clients: Vec<_> = (0..4).map(|_| h.connect()).collect();
    for c in &clients[..3] {
        h.send(
            c.conn,
            json!({"type":"join","room":"r","meta":meta_of(100)}),
        );
        assert_eq!(h.next(c.conn)["type"], "joined");
    }
    let last = &clients[3];
    h.send(
        last.conn,
        json!({"type":"join","room":"r","meta":meta_of(100),"id":9}),
    );
    h.expect(last.conn, json!({"type":"full","room":"r","reply_to":9}));
    // One leaves: there is room again.
    h.send(clients[0].conn, json!({"type":"leave","room":"r"}));
    h.send(
        last.conn,
        json!({"type":"join","room":"r","meta":meta_of(100)}),
    );
    let joined = h.take(last.conn);
    assert_eq!(
        joined.last().map(|f| f["type"].clone()),
        Some(json!("joined"))
    );
}

#[test]
fn the_default_budget_bounds_joined() {
    // With the defaults a room of max-meta members stops well short of
    // what a join would otherwise have to list.
    let c = Config::default();
    let members = c.max_room_meta_bytes / (c.max_meta_bytes + MEMBER_ENTRY_BYTES);
    assert!(members >= 32, "{members}");
    assert!(c.max_room_meta_bytes <= c.replay_bytes / 2);
}

#[test]
fn ringing_calls_per_caller_are_capped() {
    let mut h = H::new(Config {
        max_ringing_per_caller: 2,
        ..Config::default()
    });
    let alice = h.connect_as(user("alice"));
    let bob = h.connect_as(user("bob"));
    let mut calls = Vec::new();
    for i in 0..2 {
        h.send(alice.conn, json!({"type":"call","to":"bob","id":i}));
        let ringing = h.next(alice.conn);
        assert_eq!(ringing["type"], "ringing");
        calls.push(ringing["call"].as_str().expect("call").to_owned());
    }
    h.take(bob.conn);
    h.send(alice.conn, json!({"type":"call","to":"bob","id":2}));
    h.expect_error(alice.conn, "rate_limited", Some(json!(2)));
    h.quiet(bob.conn);
    assert_eq!(h.core.stats().ringing_calls, 2);
    // Being rung does not count: bob may still call alice.
    h.send(bob.conn, json!({"type":"call","to":"alice","id":3}));
    assert_eq!(h.next(bob.conn)["type"], "ringing");
    // One stops ringing: alice may call again.
    h.send(alice.conn, json!({"type":"cancel","call":calls[0]}));
    h.send(alice.conn, json!({"type":"call","to":"bob","id":4}));
    let frames = h.take(alice.conn);
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "ringing" && f["reply_to"] == 4),
        "{frames:?}"
    );
}

fn from_ip(last: u8, name: Option<&str>) -> Identity {
    Identity {
        user: name.map(str::to_owned),
        source_ip: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))),
        ..Identity::default()
    }
}

#[test]
fn sessions_in_grace_per_user_are_capped_oldest_first() {
    let mut h = H::new(Config {
        max_suspended_per_user: 2,
        ..Config::default()
    });
    let watcher = h.connect();
    h.join(&watcher, "r");
    let mut bobs = Vec::new();
    for i in 0..3 {
        let b = h.connect_as(from_ip(i, Some("bob")));
        h.join(&b, "r");
        bobs.push(b);
    }
    h.take(watcher.conn);
    h.drop_conn(bobs[0].conn, Disconnect::Abrupt);
    h.drop_conn(bobs[1].conn, Disconnect::Abrupt);
    h.quiet(watcher.conn);
    // The third in grace ends the first at once.
    h.drop_conn(bobs[2].conn, Disconnect::Abrupt);
    h.expect(
        watcher.conn,
        json!({"type":"bye","room":"r","peer":bobs[0].peer}),
    );
    h.quiet(watcher.conn);
    let (conn, ok) = h.resume(&bobs[0], 1);
    assert!(!ok);
    assert_eq!(h.next(conn)["code"], "resume_failed");
    // A resumed session no longer counts.
    let (_, ok) = h.resume(&bobs[1], 1);
    assert!(ok);
    let carol = h.connect_as(from_ip(9, Some("bob")));
    h.drop_conn(carol.conn, Disconnect::Abrupt);
    h.quiet(watcher.conn);
    assert_eq!(h.core.stats().sessions, 5);
}

#[test]
fn sessions_in_grace_per_source_ip_are_capped() {
    let mut h = H::new(Config {
        max_suspended_per_ip: 2,
        ..Config::default()
    });
    let watcher = h.connect();
    h.join(&watcher, "r");
    let anon: Vec<_> = (0..3)
        .map(|_| {
            let c = h.connect_as(from_ip(7, None));
            h.join(&c, "r");
            c
        })
        .collect();
    let elsewhere = h.connect_as(from_ip(8, None));
    h.take(watcher.conn);
    h.drop_conn(elsewhere.conn, Disconnect::Abrupt);
    for c in &anon[..2] {
        h.drop_conn(c.conn, Disconnect::Abrupt);
    }
    h.quiet(watcher.conn);
    h.drop_conn(anon[2].conn, Disconnect::Abrupt);
    h.expect(
        watcher.conn,
        json!({"type":"bye","room":"r","peer":anon[0].peer}),
    );
    h.quiet(watcher.conn);
    // The watcher, two of 192.0.2.7 and the one of 192.0.2.8.
    assert_eq!(h.core.stats().sessions, 4);
}

#[test]
fn a_rate_limited_frame_is_not_parsed() {
    let mut h = H::new(Config {
        rate_per_sec: 1,
        rate_burst: 1,
        ..Config::default()
    });
    let a = h.connect();
    h.send(a.conn, json!({"type":"ping"}));
    h.expect(a.conn, json!({"type":"pong"}));
    // The id near the start is found by a bounded scan ...
    h.text(a.conn, r#"{"id":5,"type":"ping"}"#);
    h.expect_error(a.conn, "rate_limited", Some(json!(5)));
    // ... but one behind a long value is not: the frame is not parsed.
    let far = format!(
        r#"{{"type":"message","room":"r","data":"{}","id":6}}"#,
        "x".repeat(1000)
    );
    h.text(a.conn, &far);
    h.expect_error(a.conn, "rate_limited", None);
    // Broken JSON is not looked at beyond the scan either.
    h.text(a.conn, r#"{"id":7,"type":"#);
    h.expect_error(a.conn, "rate_limited", Some(json!(7)));
}

#[test]
fn reconfigure_applies_to_the_next_join_and_keeps_who_is_in() {
    let mut h = H::new(Config {
        max_peers: 3,
        ..Config::default()
    });
    let clients: Vec<_> = (0..3).map(|_| h.connect()).collect();
    for c in &clients[..2] {
        h.join(c, "r");
    }
    let mut tighter = h.core.config().clone();
    tighter.max_peers = 2;
    tighter.max_message_bytes = 100;
    tighter.replay_frames = 1;
    h.core.reconfigure(tighter);
    let _ = h.take(clients[0].conn);
    let _ = h.take(clients[1].conn);
    // The two in stay in and talk; the third finds the room full now.
    h.send(clients[2].conn, json!({"type":"join","room":"r","id":1}));
    h.expect(
        clients[2].conn,
        json!({"type":"full","room":"r","reply_to":1}),
    );
    h.send(
        clients[0].conn,
        json!({"type":"message","room":"r","data":"x".repeat(200)}),
    );
    h.expect_error(clients[0].conn, "too_large", None);
    h.send(
        clients[0].conn,
        json!({"type":"message","room":"r","data":"hi"}),
    );
    assert_eq!(h.next(clients[1].conn)["data"], "hi");
    assert_eq!(
        h.core.config().replay_frames,
        Config::default().replay_frames,
        "the replay buffers' size is a restart's"
    );
}
