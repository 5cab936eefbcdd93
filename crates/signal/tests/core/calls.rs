use std::time::Duration;

use serde_json::{Value, json};
use switchboard_signal::{Config, Disconnect};

use crate::harness::{Client, H, strip, user};

struct Setup {
    h: H,
    alice: Client,
    bob1: Client,
    bob2: Client,
}

fn setup() -> Setup {
    let mut h = H::new(Config {
        ring_timeout: Duration::from_secs(30),
        ..Config::default()
    });
    let alice = h.connect_as(user("alice"));
    let bob1 = h.connect_as(user("bob"));
    let bob2 = h.connect_as(user("bob"));
    Setup {
        h,
        alice,
        bob1,
        bob2,
    }
}

/// Alice rings bob; returns the call id after checking both sides.
fn ring(s: &mut Setup) -> String {
    let h = &mut s.h;
    h.send(
        s.alice.conn,
        json!({"type":"call","to":"bob","meta":{"video":true},"id":1}),
    );
    let ringing = h.next(s.alice.conn);
    assert_eq!(ringing["type"], "ringing");
    assert_eq!(ringing["reply_to"], 1);
    let call = ringing["call"].as_str().unwrap().to_owned();
    for b in [&s.bob1, &s.bob2] {
        h.expect(
            b.conn,
            json!({"type":"incoming_call","call":call,"from":"alice","meta":{"video":true}}),
        );
    }
    assert_eq!(h.core.stats().ringing_calls, 1);
    call
}

#[test]
fn accept_makes_a_private_room_for_the_two() {
    let mut s = setup();
    let call = ring(&mut s);
    let h = &mut s.h;
    h.send(s.bob2.conn, json!({"type":"accept","call":call,"id":"a"}));
    let accepted = h.next(s.alice.conn);
    assert_eq!(accepted["type"], "accepted");
    assert_eq!(accepted["call"], json!(call));
    let room = accepted["room"].as_str().unwrap().to_owned();
    assert!(room.starts_with("call-") && room.len() >= 25, "{room}");
    h.expect(
        s.alice.conn,
        json!({"type":"joined","room":room,"peer":s.alice.peer,"peers":[],"media":"mesh"}),
    );
    h.expect(
        s.bob2.conn,
        json!({"type":"joined","room":room,"peer":s.bob2.peer,
               "peers":[{"peer":s.alice.peer,"meta":{"video":true}}],"media":"mesh","reply_to":"a"}),
    );
    h.expect(
        s.alice.conn,
        json!({"type":"other_joined","room":room,"peer":s.bob2.peer,"meta":{}}),
    );
    h.expect(
        s.bob1.conn,
        json!({"type":"call_ended","call":call,"reason":"answered_elsewhere"}),
    );
    assert_eq!(h.core.stats().ringing_calls, 0);
    assert_eq!(h.core.poll_timeout(), None, "ring timer cancelled");

    // They talk there with ordinary messages.
    h.send(
        s.alice.conn,
        json!({"type":"message","room":room,"data":{"kind":"offer"},"id":2}),
    );
    h.expect(
        s.bob2.conn,
        json!({"type":"message","room":room,"from":s.alice.peer,"data":{"kind":"offer"}}),
    );
    h.expect(
        s.alice.conn,
        json!({"type":"ack","delivered":1,"reply_to":2}),
    );

    // Nobody else gets in, not even bob's other connection.
    h.send(s.bob1.conn, json!({"type":"join","room":room,"id":3}));
    h.expect_error(s.bob1.conn, "forbidden", Some(json!(3)));
    let eve = h.connect();
    h.send(eve.conn, json!({"type":"join","room":room}));
    h.expect_error(eve.conn, "forbidden", None);

    // A second accept, and a cancel crossing the accept, find no call.
    h.send(s.bob1.conn, json!({"type":"accept","call":call,"id":4}));
    h.expect_error(s.bob1.conn, "no_such_call", Some(json!(4)));
    h.send(s.alice.conn, json!({"type":"cancel","call":call,"id":5}));
    h.expect_error(s.alice.conn, "no_such_call", Some(json!(5)));
    for c in [&s.alice, &s.bob1, &s.bob2] {
        h.quiet(c.conn);
    }
}

#[test]
fn decline_tells_the_caller_and_the_other_connections() {
    let mut s = setup();
    let call = ring(&mut s);
    let h = &mut s.h;
    h.send(s.bob1.conn, json!({"type":"decline","call":call}));
    h.expect(s.alice.conn, json!({"type":"declined","call":call}));
    h.expect(
        s.bob2.conn,
        json!({"type":"call_ended","call":call,"reason":"declined"}),
    );
    h.quiet(s.bob1.conn);
    h.send(s.bob2.conn, json!({"type":"accept","call":call}));
    h.expect_error(s.bob2.conn, "no_such_call", None);
    assert_eq!(h.core.poll_timeout(), None);
}

#[test]
fn cancel_reaches_every_rung_connection() {
    let mut s = setup();
    let call = ring(&mut s);
    let h = &mut s.h;
    h.send(s.alice.conn, json!({"type":"cancel","call":call}));
    for b in [&s.bob1, &s.bob2] {
        h.expect(
            b.conn,
            json!({"type":"call_ended","call":call,"reason":"cancelled"}),
        );
    }
    h.quiet(s.alice.conn);
    h.send(s.bob1.conn, json!({"type":"accept","call":call,"id":1}));
    h.expect_error(s.bob1.conn, "no_such_call", Some(json!(1)));
}

#[test]
fn only_the_right_party_may_act() {
    let mut s = setup();
    let call = ring(&mut s);
    let h = &mut s.h;
    let carol = h.connect_as(user("carol"));
    let anon = h.connect();
    // The caller cannot accept or decline; the callee cannot cancel.
    for (c, ty) in [
        (&s.alice, "accept"),
        (&s.alice, "decline"),
        (&s.bob1, "cancel"),
        (&carol, "accept"),
        (&anon, "decline"),
        (&carol, "cancel"),
    ] {
        h.send(c.conn, json!({"type":ty,"call":call,"id":ty}));
        h.expect_error(c.conn, "no_such_call", Some(json!(ty)));
    }
    h.send(s.bob1.conn, json!({"type":"accept","call":"made-up"}));
    h.expect_error(s.bob1.conn, "no_such_call", None);
    assert_eq!(h.core.stats().ringing_calls, 1);
}

#[test]
fn nobody_answers() {
    let mut s = setup();
    let call = ring(&mut s);
    let h = &mut s.h;
    h.advance(Duration::from_secs(29));
    h.quiet(s.alice.conn);
    h.advance(Duration::from_secs(1));
    let ended = json!({"type":"call_ended","call":call,"reason":"no_answer"});
    for c in [&s.alice, &s.bob1, &s.bob2] {
        h.expect(c.conn, ended.clone());
    }
    assert_eq!(h.core.stats().ringing_calls, 0);
    h.send(s.bob1.conn, json!({"type":"accept","call":call}));
    h.expect_error(s.bob1.conn, "no_such_call", None);
}

#[test]
fn unknown_or_offline_users() {
    let mut s = setup();
    let h = &mut s.h;
    h.send(s.alice.conn, json!({"type":"call","to":"zed","id":1}));
    h.expect_error(s.alice.conn, "no_such_user", Some(json!(1)));
    h.drop_conn(s.bob1.conn, Disconnect::Clean);
    h.drop_conn(s.bob2.conn, Disconnect::Clean);
    h.send(s.alice.conn, json!({"type":"call","to":"bob"}));
    h.expect_error(s.alice.conn, "no_such_user", None);
    // Calling yourself rings only your other connections.
    h.send(s.alice.conn, json!({"type":"call","to":"alice"}));
    h.expect_error(s.alice.conn, "no_such_user", None);
    // An anonymous caller is announced with from: null, meta {}.
    let anon = h.connect();
    h.send(anon.conn, json!({"type":"call","to":"alice"}));
    let call = h.next(anon.conn)["call"].clone();
    h.expect(
        s.alice.conn,
        json!({"type":"incoming_call","call":call,"from":Value::Null,"meta":{}}),
    );
}

#[test]
fn caller_gone_for_good_ends_the_ringing() {
    let mut s = setup();
    let call = ring(&mut s);
    let h = &mut s.h;
    // A drop is not yet "gone": it may resume.
    h.drop_conn(s.alice.conn, Disconnect::Abrupt);
    h.quiet(s.bob1.conn);
    h.advance(Duration::from_secs(20));
    let gone = json!({"type":"call_ended","call":call,"reason":"gone"});
    for b in [&s.bob1, &s.bob2] {
        h.expect(b.conn, gone.clone());
    }
    assert_eq!(h.core.stats().ringing_calls, 0);
    // The ring timer went with it.
    assert_eq!(h.core.poll_timeout(), None);
}

#[test]
fn callee_gone_only_when_every_rung_connection_is() {
    let mut s = setup();
    let call = ring(&mut s);
    let h = &mut s.h;
    h.drop_conn(s.bob1.conn, Disconnect::Clean);
    h.quiet(s.alice.conn);
    assert_eq!(h.core.stats().ringing_calls, 1);
    h.drop_conn(s.bob2.conn, Disconnect::Clean);
    h.expect(
        s.alice.conn,
        json!({"type":"call_ended","call":call,"reason":"gone"}),
    );
    assert_eq!(h.core.stats().ringing_calls, 0);
}

#[test]
fn several_calls_ring_one_callee_at_once() {
    let mut s = setup();
    let first = ring(&mut s);
    let carol = s.h.connect_as(user("carol"));
    let h = &mut s.h;
    h.advance(Duration::from_secs(10));
    h.send(carol.conn, json!({"type":"call","to":"bob"}));
    let second = h.next(carol.conn)["call"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    for b in [&s.bob1, &s.bob2] {
        assert_eq!(h.next(b.conn)["call"], json!(second));
    }
    assert_eq!(h.core.stats().ringing_calls, 2);
    h.send(s.bob1.conn, json!({"type":"accept","call":second}));
    h.take(carol.conn);
    h.take(s.bob1.conn);
    h.expect(
        s.bob2.conn,
        json!({"type":"call_ended","call":second,"reason":"answered_elsewhere"}),
    );
    // The first still rings, and times out on its own schedule.
    h.advance(Duration::from_secs(20));
    let frames: Vec<_> = h.take(s.bob2.conn).into_iter().map(strip).collect();
    assert_eq!(
        frames,
        vec![json!({"type":"call_ended","call":first,"reason":"no_answer"})]
    );
    h.expect(
        s.alice.conn,
        json!({"type":"call_ended","call":first,"reason":"no_answer"}),
    );
}

#[test]
fn a_caller_in_grace_still_gets_the_answer_on_resume() {
    let mut s = setup();
    let call = ring(&mut s);
    let h = &mut s.h;
    h.drop_conn(s.alice.conn, Disconnect::Abrupt);
    h.send(s.bob1.conn, json!({"type":"accept","call":call}));
    let (conn, ok) = h.resume(&s.alice, 1);
    assert!(ok);
    let types: Vec<_> = h.take(conn).iter().map(|v| v["type"].clone()).collect();
    assert_eq!(types, vec!["resumed", "accepted", "joined", "other_joined"]);
}
