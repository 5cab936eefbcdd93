use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use switchboard_signal::{Config, Identity, OutFrame, Output};

use crate::harness::{H, seq};

#[test]
fn welcome_gives_fresh_unguessable_ids() {
    let mut h = H::default();
    let conn = h.conn();
    h.core.connect(
        h.now,
        conn,
        Identity::default(),
        switchboard_signal::Face::Native,
        crate::harness::ice,
    );
    h.pump();
    let w = h.next(conn);
    assert_eq!(w["protocol"], 1);
    assert!(w.get("seq").is_none());
    let peer = w["peer"].as_str().unwrap();
    assert_eq!(
        w["ice_servers"],
        json!([{"urls":["stun:example.test:3478"],"username":format!("1700000000:{peer}"),"credential":"c2VjcmV0"}])
    );
    let mut seen = HashSet::new();
    for _ in 0..50 {
        let c = h.connect();
        for id in [&c.session, &c.token, &c.peer] {
            assert!(
                id.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'),
                "{id}"
            );
            assert!(seen.insert(id.clone()), "repeated id {id}");
        }
        assert!(c.token.len() >= 40, "resume token too short");
        assert!(c.peer.len() <= 16, "peer id should be short");
    }
}

#[test]
fn join_lists_peers_in_join_order_and_announces_the_newcomer() {
    let mut h = H::default();
    let (a, b, c) = (h.connect(), h.connect(), h.connect());
    h.send(
        a.conn,
        json!({"type":"join","room":"r","meta":{"name":"A"},"id":1}),
    );
    h.expect(
        a.conn,
        json!({"type":"joined","room":"r","peer":a.peer,"peers":[],"media":"mesh","reply_to":1}),
    );
    h.send(b.conn, json!({"type":"join","room":"r","id":"x"}));
    h.expect(
        b.conn,
        json!({"type":"joined","room":"r","peer":b.peer,"peers":[{"peer":a.peer,"meta":{"name":"A"}}],"media":"mesh","reply_to":"x"}),
    );
    h.expect(
        a.conn,
        json!({"type":"other_joined","room":"r","peer":b.peer,"meta":{}}),
    );
    h.send(c.conn, json!({"type":"join","room":"r","meta":{"n":3}}));
    h.expect(
        c.conn,
        json!({"type":"joined","room":"r","peer":c.peer,"peers":[
            {"peer":a.peer,"meta":{"name":"A"}},{"peer":b.peer,"meta":{}}],"media":"mesh"}),
    );
    for x in [&a, &b] {
        h.expect(
            x.conn,
            json!({"type":"other_joined","room":"r","peer":c.peer,"meta":{"n":3}}),
        );
    }
    assert_eq!(h.core.stats().rooms, 1);

    h.send(b.conn, json!({"type":"leave","room":"r","id":2}));
    h.expect(b.conn, json!({"type":"left","room":"r","reply_to":2}));
    for x in [&a, &c] {
        h.expect(x.conn, json!({"type":"bye","room":"r","peer":b.peer}));
    }
    h.send(b.conn, json!({"type":"leave","room":"r","id":3}));
    h.expect_error(b.conn, "not_in_room", Some(json!(3)));
    h.send(a.conn, json!({"type":"join","room":"r","id":4}));
    h.expect_error(a.conn, "already_joined", Some(json!(4)));
    for x in [&a, &b, &c] {
        h.quiet(x.conn);
    }
    h.send(a.conn, json!({"type":"leave","room":"r"}));
    h.send(c.conn, json!({"type":"leave","room":"r"}));
    assert_eq!(h.core.stats().rooms, 0, "a room ends with its last peer");
}

#[test]
fn room_names_are_checked() {
    let mut h = H::default();
    let a = h.connect();
    let long = "é".repeat(64); // 128 bytes
    h.join(&a, &long);
    h.join(&a, "日本語 room");
    for bad in [
        String::new(),
        format!("{long}x"),
        "a\u{0}b".into(),
        "tab\there".into(),
        "c1\u{85}".into(),
    ] {
        h.send(a.conn, json!({"type":"join","room":bad,"id":"n"}));
        h.expect_error(a.conn, "bad_request", Some(json!("n")));
    }
}

#[test]
fn capacity_gives_full_and_zero_means_unlimited() {
    let mut h = H::new(Config {
        max_peers: 2,
        ..Config::default()
    });
    let (a, b, c) = (h.connect(), h.connect(), h.connect());
    h.join(&a, "r");
    h.join(&b, "r");
    h.send(c.conn, json!({"type":"join","room":"r","id":9}));
    h.expect(c.conn, json!({"type":"full","room":"r","reply_to":9}));
    h.take(a.conn);
    h.quiet(a.conn);
    h.send(c.conn, json!({"type":"message","room":"r","data":1,"id":1}));
    h.expect_error(c.conn, "not_in_room", Some(json!(1)));

    let mut h = H::default();
    let clients: Vec<_> = (0..40).map(|_| h.connect()).collect();
    for c in &clients {
        h.join(c, "big");
    }
    assert_eq!(h.core.stats().rooms, 1);
}

#[test]
fn token_rooms_and_room_limit_give_forbidden() {
    let mut h = H::new(Config {
        max_rooms_per_session: 2,
        ..Config::default()
    });
    let scoped = h.connect_as(Identity {
        rooms: Some(vec!["ok".into()]),
        ..Identity::default()
    });
    h.join(&scoped, "ok");
    h.send(scoped.conn, json!({"type":"join","room":"nope","id":1}));
    h.expect_error(scoped.conn, "forbidden", Some(json!(1)));

    let a = h.connect();
    h.join(&a, "1");
    h.join(&a, "2");
    h.send(a.conn, json!({"type":"join","room":"3","id":1}));
    h.expect_error(a.conn, "forbidden", Some(json!(1)));
    h.send(a.conn, json!({"type":"leave","room":"1"}));
    h.next(a.conn);
    h.join(&a, "3");
}

#[test]
fn messages_fan_out_with_contiguous_seq_and_acks() {
    let mut h = H::default();
    let (a, b, c) = (h.connect(), h.connect(), h.connect());
    for x in [&a, &b, &c] {
        h.join(x, "r");
    }
    let other = h.connect();
    h.join(&other, "elsewhere");
    for x in [&a, &b, &c] {
        h.take(x.conn);
    }
    h.send(
        a.conn,
        json!({"type":"message","room":"r","data":{"kind":"offer","sdp":"v=0\r\n"},"id":"m1"}),
    );
    for x in [&b, &c] {
        h.expect(
            x.conn,
            json!({"type":"message","room":"r","from":a.peer,"data":{"kind":"offer","sdp":"v=0\r\n"}}),
        );
    }
    h.expect(a.conn, json!({"type":"ack","delivered":2,"reply_to":"m1"}));
    h.quiet(other.conn);

    // Without an id: no ack. With `to`: only that peer.
    h.send(a.conn, json!({"type":"message","room":"r","data":null}));
    h.send(
        a.conn,
        json!({"type":"message","room":"r","to":c.peer,"data":[1,2],"id":7}),
    );
    h.expect(a.conn, json!({"type":"ack","delivered":1,"reply_to":7}));
    h.quiet(a.conn);
    h.expect(
        b.conn,
        json!({"type":"message","room":"r","from":a.peer,"data":null}),
    );
    h.quiet(b.conn);
    h.expect(
        c.conn,
        json!({"type":"message","room":"r","from":a.peer,"data":null}),
    );
    h.expect(
        c.conn,
        json!({"type":"message","room":"r","from":a.peer,"data":[1,2]}),
    );

    h.send(
        a.conn,
        json!({"type":"message","room":"r","to":other.peer,"data":1,"id":8}),
    );
    h.expect_error(a.conn, "no_such_peer", Some(json!(8)));
    h.send(
        a.conn,
        json!({"type":"message","room":"r","to":"nobody","data":1}),
    );
    h.expect_error(a.conn, "no_such_peer", None);
    h.send(
        a.conn,
        json!({"type":"message","room":"elsewhere","data":1,"id":9}),
    );
    h.expect_error(a.conn, "not_in_room", Some(json!(9)));
    h.send(a.conn, json!({"type":"ping","id":10}));
    h.expect(a.conn, json!({"type":"pong","reply_to":10}));

    // Everything c got so far, from its first frame, is numbered 1, 2, 3, ...
    let mut h2 = H::default();
    let (x, y) = (h2.connect(), h2.connect());
    h2.join(&x, "r");
    h2.join(&y, "r");
    for i in 0..20 {
        h2.send(x.conn, json!({"type":"message","room":"r","data":i,"id":i}));
        h2.send(y.conn, json!({"type":"ping"}));
    }
    h2.send(x.conn, json!({"type":"bogus"}));
    let all = h2.take(x.conn);
    let seqs: Vec<u64> = all.iter().map(seq).collect();
    assert_eq!(
        seqs,
        (2..=all.len() as u64 + 1).collect::<Vec<_>>(),
        "joined was 1"
    );
    let all = h2.take(y.conn);
    let seqs: Vec<u64> = all.iter().map(seq).collect();
    assert_eq!(seqs, (2..=all.len() as u64 + 1).collect::<Vec<_>>());
}

#[test]
fn a_fan_out_shares_one_serialized_body() {
    let mut h = H::default();
    let clients: Vec<_> = (0..5).map(|_| h.connect()).collect();
    for c in &clients {
        h.join(c, "r");
    }
    for c in &clients {
        h.take(c.conn);
    }
    h.core.handle_text(
        h.now,
        clients[0].conn,
        r#"{"type":"message","room":"r","data":{"x":"y"}}"#,
    );
    let mut bodies = Vec::new();
    while let Some(out) = h.core.poll_output() {
        if let Output::Frame { frame, .. } = out {
            bodies.push(frame);
        }
    }
    assert_eq!(bodies.len(), 4);
    let ptr = bodies[0].body.as_ptr();
    assert!(
        bodies.iter().all(|f| f.body.as_ptr() == ptr),
        "serialized once, shared"
    );
}

#[test]
fn write_to_splices_seq() {
    let f = OutFrame {
        seq: Some(42),
        body: bytes::Bytes::from_static(br#"{"type":"pong"}"#),
    };
    let mut out = Vec::new();
    f.write_to(&mut out);
    assert_eq!(out, br#"{"seq":42,"type":"pong"}"#);
    let f = OutFrame {
        seq: None,
        body: bytes::Bytes::from_static(br#"{"type":"welcome"}"#),
    };
    out.clear();
    f.write_to(&mut out);
    assert_eq!(out, br#"{"type":"welcome"}"#);
}

#[test]
fn bad_frames_get_bad_request_and_the_connection_stays_usable() {
    let mut h = H::new(Config {
        max_message_bytes: 200,
        ..Config::default()
    });
    let a = h.connect();
    for text in [
        "not json",
        "[1,2]",
        "\"str\"",
        "{}",
        r#"{"type":"fly"}"#,
        r#"{"type":"join"}"#,
        r#"{"type":"join","room":7}"#,
        r#"{"type":"message","room":"r"}"#,
        r#"{"type":"join","room":"r","meta":"str"}"#,
        r#"{"type":"accept"}"#,
        r#"{"type":"ping"} trailing"#,
    ] {
        h.text(a.conn, text);
        h.expect_error(a.conn, "bad_request", None);
    }
    h.text(a.conn, r#"{"type":"fly","id":5}"#);
    h.expect_error(a.conn, "bad_request", Some(json!(5)));
    h.text(a.conn, r#"{"type":"join","room":false,"id":"q"}"#);
    h.expect_error(a.conn, "bad_request", Some(json!("q")));

    h.core.handle_binary(h.now, a.conn);
    h.pump();
    h.expect_error(a.conn, "bad_request", None);

    let exact = format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(200 - 23));
    assert_eq!(exact.len(), 200);
    h.text(a.conn, &exact);
    assert_eq!(h.next(a.conn)["type"], "pong");
    let over = format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(201 - 23));
    h.text(a.conn, &over);
    h.expect_error(a.conn, "too_large", None);
    h.send(a.conn, json!({"type":"ping","id":1}));
    h.expect(a.conn, json!({"type":"pong","reply_to":1}));
}

#[test]
fn rate_limit_answers_every_refused_request() {
    let mut h = H::new(Config {
        rate_per_sec: 2,
        rate_burst: 3,
        ..Config::default()
    });
    let a = h.connect();
    for i in 0..3 {
        h.send(a.conn, json!({"type":"ping","id":i}));
        h.expect(a.conn, json!({"type":"pong","reply_to":i}));
    }
    for i in 3..10 {
        h.send(a.conn, json!({"type":"ping","id":i}));
        h.expect_error(a.conn, "rate_limited", Some(json!(i)));
    }
    h.text(a.conn, "garbage");
    h.expect_error(a.conn, "rate_limited", None);
    h.advance(Duration::from_millis(500));
    h.send(a.conn, json!({"type":"ping"}));
    h.expect(a.conn, json!({"type":"pong"}));
    h.send(a.conn, json!({"type":"ping"}));
    h.expect_error(a.conn, "rate_limited", None);
    // Another session has its own bucket.
    let b = h.connect();
    h.send(b.conn, json!({"type":"ping"}));
    h.expect(b.conn, json!({"type":"pong"}));
}
