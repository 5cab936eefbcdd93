//! Lifecycle events and counters, as the shell reads them for logs and
//! `/metrics`.

use std::time::Duration;

use serde_json::json;
use switchboard_signal::{
    CallEndReason, Config, Disconnect, EndReason, ErrorCode, Event, Face, LeaveReason,
    ResumeFailReason,
};

use crate::harness::{Client, H, user};

fn events(h: &mut H) -> Vec<Event> {
    let mut out = Vec::new();
    // Bounded: the queue never holds more than its cap.
    for _ in 0..switchboard_signal::EVENT_QUEUE_CAP + 1 {
        match h.core.poll_event() {
            Some(e) => out.push(e),
            None => break,
        }
    }
    out
}

fn started(c: &Client, user: Option<&str>) -> Event {
    Event::SessionStarted {
        conn: c.conn,
        session: c.session.clone(),
        peer: c.peer.clone(),
        user: user.map(str::to_owned),
        face: Face::Native,
    }
}

fn joined(c: &Client, room: &str, peers: usize) -> Event {
    Event::Joined {
        peer: c.peer.clone(),
        room: room.into(),
        peers,
    }
}

fn left(c: &Client, room: &str, peers: usize, reason: LeaveReason) -> Event {
    Event::Left {
        peer: c.peer.clone(),
        room: room.into(),
        peers,
        reason,
    }
}

#[test]
fn joins_leaves_and_a_full_room() {
    let mut h = H::new(Config {
        max_peers: 2,
        ..Config::default()
    });
    let (a, b, c) = (h.connect(), h.connect(), h.connect());
    assert_eq!(
        events(&mut h),
        vec![started(&a, None), started(&b, None), started(&c, None)]
    );
    h.join(&a, "r");
    h.join(&b, "r");
    h.send(c.conn, json!({"type":"join","room":"r"}));
    h.send(a.conn, json!({"type":"leave","room":"r"}));
    h.send(b.conn, json!({"type":"leave","room":"r"}));
    assert_eq!(
        events(&mut h),
        vec![
            joined(&a, "r", 1),
            joined(&b, "r", 2),
            Event::RoomFull {
                peer: c.peer.clone(),
                room: "r".into()
            },
            left(&a, "r", 1, LeaveReason::Requested),
            left(&b, "r", 0, LeaveReason::Requested),
        ]
    );
    // A refused leave is no event.
    h.send(b.conn, json!({"type":"leave","room":"r"}));
    assert_eq!(events(&mut h), vec![]);
}

#[test]
fn a_clean_close_ends_the_session_at_once() {
    let mut h = H::default();
    let (a, b) = (h.connect(), h.connect());
    h.join(&a, "r");
    h.join(&b, "r");
    let _ = events(&mut h);
    h.drop_conn(b.conn, Disconnect::Clean);
    let closed = LeaveReason::SessionEnded(EndReason::Closed);
    assert_eq!(
        events(&mut h),
        vec![
            left(&b, "r", 1, closed),
            Event::SessionEnded {
                session: b.session.clone(),
                peer: b.peer.clone(),
                reason: EndReason::Closed,
            },
        ]
    );
}

#[test]
fn grace_expiry_and_resume() {
    let mut h = H::default();
    let (a, b) = (h.connect(), h.connect());
    h.join(&a, "r");
    h.join(&b, "r");
    h.send(a.conn, json!({"type":"message","room":"r","data":1}));
    let _ = events(&mut h);

    // Dropped, then resumed within the grace period: one frame replayed.
    h.drop_conn(b.conn, Disconnect::Abrupt);
    let until = h.now + Duration::from_secs(20);
    assert_eq!(
        events(&mut h),
        vec![Event::Suspended {
            conn: b.conn,
            peer: b.peer.clone(),
            until,
        }]
    );
    let (conn, ok) = h.resume(&b, 1);
    assert!(ok);
    assert_eq!(
        events(&mut h),
        vec![Event::SessionResumed {
            conn,
            session: b.session.clone(),
            peer: b.peer.clone(),
            replayed: 1,
        }]
    );
    let b = Client { conn, ..b };

    // Dropped again and never back.
    h.drop_conn(b.conn, Disconnect::Abrupt);
    let _ = events(&mut h);
    h.advance(Duration::from_secs(19));
    assert_eq!(events(&mut h), vec![]);
    h.advance(Duration::from_secs(1));
    assert_eq!(
        events(&mut h),
        vec![
            left(
                &b,
                "r",
                1,
                LeaveReason::SessionEnded(EndReason::GraceExpired)
            ),
            Event::SessionEnded {
                session: b.session.clone(),
                peer: b.peer.clone(),
                reason: EndReason::GraceExpired,
            },
        ]
    );
    let c = h.core.counters();
    assert_eq!((c.resumes, c.resumes_failed), (1, 0));
    assert_eq!((c.sessions_started, c.sessions_ended), (2, 1));
}

#[test]
fn failed_resumes() {
    let mut h = H::new(Config {
        replay_frames: 1,
        ..Config::default()
    });
    let (a, b) = (h.connect(), h.connect());
    h.join(&a, "r");
    h.join(&b, "r");
    for n in 0..3 {
        h.send(a.conn, json!({"type":"message","room":"r","data":n}));
    }
    h.drop_conn(b.conn, Disconnect::Abrupt);
    let _ = events(&mut h);

    // A wrong token leaves the session alone.
    let wrong = Client {
        conn: b.conn,
        session: b.session.clone(),
        token: "nope".into(),
        peer: b.peer.clone(),
    };
    let (conn, ok) = h.resume(&wrong, 0);
    assert!(!ok);
    let got = events(&mut h);
    assert_eq!(
        got[0],
        Event::ResumeFailed {
            conn,
            reason: ResumeFailReason::Unknown
        }
    );
    assert!(matches!(&got[1], Event::SessionStarted { conn: c, .. } if *c == conn));
    assert_eq!(got.len(), 2);

    // The right owner, but frames 1 and 2 are gone: the old session ends.
    let (conn, ok) = h.resume(&b, 0);
    assert!(!ok);
    let got = events(&mut h);
    let over = LeaveReason::SessionEnded(EndReason::StartedOver);
    assert_eq!(
        got[..3],
        [
            left(&b, "r", 1, over),
            Event::SessionEnded {
                session: b.session.clone(),
                peer: b.peer.clone(),
                reason: EndReason::StartedOver,
            },
            Event::ResumeFailed {
                conn,
                reason: ResumeFailReason::FramesLost
            },
        ]
    );
    assert!(matches!(&got[3], Event::SessionStarted { conn: c, .. } if *c == conn));
    let c = h.core.counters();
    assert_eq!((c.resumes, c.resumes_failed), (0, 2));
    assert_eq!(c.errors(ErrorCode::ResumeFailed), 2);
    assert_eq!(c.sessions_started, 4);
}

/// Alice rings bob; returns the call id.
fn ring(h: &mut H, alice: &Client) -> String {
    h.take(alice.conn);
    h.send(alice.conn, json!({"type":"call","to":"bob"}));
    let ringing = h.next(alice.conn);
    assert_eq!(ringing["type"], "ringing", "{ringing}");
    ringing["call"].as_str().unwrap().to_owned()
}

#[test]
fn calls_start_and_end() {
    let mut h = H::default();
    let alice = h.connect_as(user("alice"));
    let bob = h.connect_as(user("bob"));
    assert_eq!(
        events(&mut h),
        vec![started(&alice, Some("alice")), started(&bob, Some("bob"))]
    );

    // Declined.
    let call = ring(&mut h, &alice);
    h.send(bob.conn, json!({"type":"decline","call":call}));
    assert_eq!(
        events(&mut h),
        vec![
            Event::CallStarted {
                call: call.clone(),
                caller: alice.peer.clone(),
                callee: "bob".into(),
                rung: 1,
            },
            Event::CallEnded {
                call,
                reason: CallEndReason::Declined
            },
        ]
    );

    // Unanswered.
    let call = ring(&mut h, &alice);
    let _ = events(&mut h);
    h.advance(Duration::from_secs(30));
    assert_eq!(
        events(&mut h),
        vec![Event::CallEnded {
            call,
            reason: CallEndReason::NoAnswer
        }]
    );

    // Accepted: both join the call room.
    let call = ring(&mut h, &alice);
    let _ = events(&mut h);
    h.send(bob.conn, json!({"type":"accept","call":call}));
    let got = events(&mut h);
    let Event::CallAccepted { call: id, room } = &got[0] else {
        panic!("{got:?}");
    };
    assert_eq!(id, &call);
    assert!(room.starts_with("call-"));
    assert_eq!(got[1..], [joined(&alice, room, 1), joined(&bob, room, 2)]);
    assert_eq!(h.core.counters().calls, 3);
}

#[test]
fn counters_after_a_scripted_exchange() {
    let mut h = H::new(Config {
        rate_per_sec: 1,
        rate_burst: 8,
        max_message_bytes: 100,
        ..Config::default()
    });
    let (a, b, c) = (h.connect(), h.connect(), h.connect());
    for x in [&a, &b, &c] {
        h.join(x, "r");
    }
    // 2 messages to everyone else, 1 to one peer: 3 messages, 5 copies.
    h.send(a.conn, json!({"type":"message","room":"r","data":1}));
    h.send(a.conn, json!({"type":"message","room":"r","data":2,"id":1}));
    h.send(
        a.conn,
        json!({"type":"message","room":"r","to":b.peer,"data":3}),
    );
    // Refused ones are not messages.
    h.send(a.conn, json!({"type":"message","room":"nope","data":4}));
    h.text(a.conn, &"x".repeat(101));
    h.text(a.conn, "{");
    h.core.handle_binary(h.now, a.conn);
    h.pump();
    // 8 tokens are spent (1 join + 7 requests): rate limited from here.
    h.send(a.conn, json!({"type":"ping"}));
    h.send(a.conn, json!({"type":"ping"}));

    let n = h.core.counters();
    assert_eq!(n.requests, 3 + 7 + 2);
    assert_eq!((n.messages, n.deliveries), (3, 5));
    assert_eq!((n.sessions_started, n.joins, n.rooms_full), (3, 3, 0));
    // welcomes 3, joined 3, other_joined 3, copies 5, ack 1, errors 4 + 2.
    assert_eq!(n.frames, 3 + 3 + 3 + 5 + 1 + 6);
    let errors: Vec<_> = n.errors_by_code().filter(|&(_, k)| k > 0).collect();
    assert_eq!(
        errors,
        vec![
            (ErrorCode::BadRequest, 2),
            (ErrorCode::TooLarge, 1),
            (ErrorCode::NotInRoom, 1),
            (ErrorCode::RateLimited, 2),
        ]
    );
    assert_eq!((n.resumes, n.calls, n.events_dropped), (0, 0, 0));
}

#[test]
fn classic_errors_are_counted() {
    let mut h = H::default();
    let conn = h.classic();
    let ack = h.emit(conn, "message", vec![json!("r"), json!(1)], true);
    assert_eq!(ack.unwrap()["code"], "not_in_room");
    h.emit(conn, "wave", vec![], false);
    let n = h.core.counters();
    assert_eq!(n.requests, 2);
    assert_eq!(n.errors(ErrorCode::NotInRoom), 1);
    assert_eq!(n.errors(ErrorCode::BadRequest), 1);
    assert_eq!(n.frames, 2);
    h.drop_conn(conn, Disconnect::Clean);
    let got = events(&mut h);
    assert!(matches!(
        got[0],
        Event::SessionStarted {
            face: Face::Classic,
            ..
        }
    ));
    assert!(matches!(
        got[1],
        Event::SessionEnded {
            reason: EndReason::Closed,
            ..
        }
    ));
}
