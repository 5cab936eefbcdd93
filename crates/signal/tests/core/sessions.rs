use std::time::Duration;

use serde_json::json;
use switchboard_signal::{Config, Disconnect, Identity};

use crate::harness::{H, ice, seq, strip};

fn pair(h: &mut H) -> (crate::harness::Client, crate::harness::Client) {
    let (a, b) = (h.connect(), h.connect());
    h.join(&a, "r");
    h.join(&b, "r");
    h.take(a.conn);
    (a, b)
}

#[test]
fn clean_close_says_bye_at_once() {
    let mut h = H::default();
    let (a, b) = pair(&mut h);
    h.join(&a, "s");
    h.join(&b, "s");
    h.take(a.conn);
    h.drop_conn(b.conn, Disconnect::Clean);
    let byes: Vec<_> = h.take(a.conn).into_iter().map(strip).collect();
    assert_eq!(
        byes,
        vec![
            json!({"type":"bye","room":"r","peer":b.peer}),
            json!({"type":"bye","room":"s","peer":b.peer})
        ]
    );
    assert_eq!(h.core.stats().sessions, 1);
    assert_eq!(h.core.poll_timeout(), None);
    // A later frame on the dead connection is ignored.
    h.send(b.conn, json!({"type":"ping"}));
    h.quiet(b.conn);
}

#[test]
fn abrupt_drop_waits_for_the_grace_period() {
    let mut h = H::default();
    let (a, b) = pair(&mut h);
    h.drop_conn(b.conn, Disconnect::Abrupt);
    h.quiet(a.conn);
    assert_eq!(h.core.poll_timeout(), Some(h.now + Duration::from_secs(20)));
    let stats = h.core.stats();
    assert_eq!((stats.sessions, stats.connected), (2, 1));
    // Messages to it still count as delivered: they wait for the resume.
    h.send(a.conn, json!({"type":"message","room":"r","data":1,"id":1}));
    h.expect(a.conn, json!({"type":"ack","delivered":1,"reply_to":1}));
    h.advance(Duration::from_secs(19));
    h.quiet(a.conn);
    h.advance(Duration::from_secs(1));
    h.expect(a.conn, json!({"type":"bye","room":"r","peer":b.peer}));
    assert_eq!(h.core.stats().sessions, 1);
    assert_eq!(h.core.poll_timeout(), None);
    // The session is gone: resuming it fails.
    let (conn, ok) = h.resume(&b, 0);
    assert!(!ok);
    h.expect_error(conn, "resume_failed", None);
    assert_eq!(h.next(conn)["type"], "welcome");
}

#[test]
fn resume_replays_missed_frames_exactly_once_in_order() {
    let mut h = H::default();
    let (a, b) = pair(&mut h);
    // b saw joined (seq 1) and one message (seq 2) before the drop.
    h.send(a.conn, json!({"type":"message","room":"r","data":"seen"}));
    let seen = h.next(b.conn);
    assert_eq!(seq(&seen), 2);
    // This one was in flight when the socket died: b never read it.
    h.send(
        a.conn,
        json!({"type":"message","room":"r","data":"in flight"}),
    );
    h.take(b.conn);
    h.drop_conn(b.conn, Disconnect::Abrupt);
    for i in 0..3 {
        h.send(a.conn, json!({"type":"message","room":"r","data":i}));
    }
    h.advance(Duration::from_secs(10));
    let (conn, ok) = h.resume(&b, 2);
    assert!(ok);
    let resumed = h.next(conn);
    assert_eq!(
        resumed,
        json!({"type":"resumed","session":b.session,"peer":b.peer})
    );
    let replay = h.take(conn);
    let got: Vec<_> = replay.iter().map(|v| (seq(v), v["data"].clone())).collect();
    assert_eq!(
        got,
        vec![
            (3, json!("in flight")),
            (4, json!(0)),
            (5, json!(1)),
            (6, json!(2))
        ]
    );
    // Then it carries on with the next seq, on the new connection only.
    h.send(a.conn, json!({"type":"message","room":"r","data":"after"}));
    let v = h.next(conn);
    assert_eq!((seq(&v), v["data"].clone()), (7, json!("after")));
    h.quiet(b.conn);
    // The grace timer was cancelled: no bye, ever.
    assert_eq!(h.core.poll_timeout(), None);
    h.advance(Duration::from_secs(60));
    h.quiet(a.conn);
    assert_eq!(h.core.stats().sessions, 2);
    // And b is still b to the others.
    h.send(b.conn, json!({"type":"ping"}));
    h.send(conn, json!({"type":"message","room":"r","data":"hi"}));
    h.expect(
        a.conn,
        json!({"type":"message","room":"r","from":b.peer,"data":"hi"}),
    );
}

#[test]
fn resume_with_nothing_missed_and_twice_in_a_row() {
    let mut h = H::default();
    let (a, b) = pair(&mut h);
    h.drop_conn(b.conn, Disconnect::Abrupt);
    let (c1, ok) = h.resume(&b, 1);
    assert!(ok);
    assert_eq!(h.take(c1).len(), 1, "only resumed");
    h.send(a.conn, json!({"type":"message","room":"r","data":1}));
    h.drop_conn(c1, Disconnect::Abrupt);
    h.send(a.conn, json!({"type":"message","room":"r","data":2}));
    let (c2, ok) = h.resume(&b, 2);
    assert!(ok);
    let frames = h.take(c2);
    assert_eq!(frames.len(), 2);
    assert_eq!((seq(&frames[1]), frames[1]["data"].clone()), (3, json!(2)));
}

#[test]
fn replay_overflow_fails_the_resume_and_starts_a_fresh_session() {
    let mut h = H::new(Config {
        replay_frames: 4,
        ..Config::default()
    });
    let (a, b) = pair(&mut h);
    h.drop_conn(b.conn, Disconnect::Abrupt);
    for i in 0..10 {
        h.send(a.conn, json!({"type":"message","room":"r","data":i}));
    }
    // b has seq 1..=11, keeps 8..=11; it saw only 1.
    let (conn, ok) = h.resume(&b, 1);
    assert!(!ok);
    let err = h.next(conn);
    assert!(
        err.get("seq").is_none(),
        "resume_failed is outside any session"
    );
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "resume_failed");
    let fresh = h.next(conn);
    let fresh = h.client_from_welcome(conn, &fresh);
    assert_ne!(fresh.session, b.session);
    assert_ne!(fresh.peer, b.peer);
    // The old presence ends now: the owner is starting over.
    h.expect(a.conn, json!({"type":"bye","room":"r","peer":b.peer}));
    assert_eq!(h.core.poll_timeout(), None);
    // The fresh session counts from 1.
    h.send(conn, json!({"type":"ping"}));
    assert_eq!(seq(&h.next(conn)), 1);
}

#[test]
fn resume_just_inside_the_buffer_works() {
    let mut h = H::new(Config {
        replay_frames: 4,
        ..Config::default()
    });
    let (a, b) = pair(&mut h);
    // Sent while b is connected (a session in grace evicts nothing).
    for i in 0..10 {
        h.send(a.conn, json!({"type":"message","room":"r","data":i}));
    }
    h.drop_conn(b.conn, Disconnect::Abrupt);
    let (conn, ok) = h.resume(&b, 7);
    assert!(ok);
    let frames = h.take(conn);
    let seqs: Vec<_> = frames[1..].iter().map(seq).collect();
    assert_eq!(seqs, vec![8, 9, 10, 11]);
}

#[test]
fn the_replay_byte_bound_keeps_the_newest_frames_that_fit() {
    let big = "x".repeat(1000);
    // b is sent seq 1 (joined), then 2..=11 (ten ~1 KiB messages); three
    // of them fit 4 KiB: 9, 10 and 11.
    let flooded = || {
        let mut h = H::new(Config {
            replay_bytes: 4096,
            ..Config::default()
        });
        let (a, b) = pair(&mut h);
        for i in 0..10 {
            h.send(a.conn, json!({"type":"message","room":"r","data":[i, big]}));
        }
        h.drop_conn(b.conn, Disconnect::Abrupt);
        (h, b)
    };
    let (mut h, b) = flooded();
    let (conn, ok) = h.resume(&b, 7);
    assert!(!ok, "a gap of four large frames no longer fits");
    assert_eq!(h.next(conn)["code"], "resume_failed");

    let (mut h, b) = flooded();
    let (conn, ok) = h.resume(&b, 8);
    assert!(ok, "the last three fit");
    let frames = h.take(conn);
    let data: Vec<_> = frames[1..].iter().map(|f| f["data"][0].clone()).collect();
    assert_eq!(data, vec![json!(7), json!(8), json!(9)]);

    // A single frame over the bound is still kept: the newest always is.
    let mut h = H::new(Config {
        replay_bytes: 100,
        ..Config::default()
    });
    let (a, b) = pair(&mut h);
    h.send(a.conn, json!({"type":"message","room":"r","data":big}));
    h.drop_conn(b.conn, Disconnect::Abrupt);
    let (conn, ok) = h.resume(&b, 1);
    assert!(ok);
    assert_eq!(h.take(conn)[1]["data"], json!(big));
}

#[test]
fn resume_failures_bad_token_unknown_session_future_seq() {
    let mut h = H::default();
    let (a, b) = pair(&mut h);
    h.drop_conn(b.conn, Disconnect::Abrupt);
    let conn = h.conn();
    let wrong = format!("{}x", &b.token[1..]);
    assert!(
        !h.core
            .resume(h.now, conn, &b.session, &wrong, 0, Identity::default(), ice)
    );
    h.pump();
    h.expect_error(conn, "resume_failed", None);
    assert_eq!(h.next(conn)["type"], "welcome");
    // A wrong token does not hurt the real session.
    h.quiet(a.conn);
    let conn = h.conn();
    assert!(
        !h.core
            .resume(h.now, conn, "nope", &b.token, 0, Identity::default(), ice)
    );
    h.pump();
    h.expect_error(conn, "resume_failed", None);
    assert_eq!(h.next(conn)["type"], "welcome");
    // last_seq ahead of what was sent.
    let (conn, ok) = h.resume(&b, 99);
    assert!(!ok);
    h.expect_error(conn, "resume_failed", None);
    h.expect(a.conn, json!({"type":"bye","room":"r","peer":b.peer}));
}

#[test]
fn resume_of_a_live_session_takes_it_over() {
    let mut h = H::default();
    let (a, b) = pair(&mut h);
    h.send(a.conn, json!({"type":"message","room":"r","data":1}));
    let (conn, ok) = h.resume(&b, 1);
    assert!(ok);
    assert_eq!(h.closes, vec![(b.conn, 4001, "taken over")]);
    assert_eq!(h.next(conn)["type"], "resumed");
    assert_eq!(seq(&h.next(conn)), 2);
    // The old connection is deaf and its end changes nothing.
    h.take(b.conn);
    h.send(b.conn, json!({"type":"ping"}));
    h.quiet(b.conn);
    h.drop_conn(b.conn, Disconnect::Clean);
    h.quiet(a.conn);
    assert_eq!(h.core.stats().connected, 2);
    h.send(a.conn, json!({"type":"message","room":"r","data":2}));
    assert_eq!(seq(&h.next(conn)), 3);
}

#[test]
fn many_sessions_keep_one_earliest_timer() {
    let mut h = H::new(Config {
        resume_grace: Duration::from_secs(5),
        ..Config::default()
    });
    let clients: Vec<_> = (0..1000).map(|_| h.connect()).collect();
    let watcher = h.connect();
    h.join(&watcher, "r");
    for c in &clients[..10] {
        h.join(c, "r");
    }
    h.take(watcher.conn);
    let start = h.now;
    for (i, c) in clients.iter().enumerate() {
        h.now = start + Duration::from_millis(i as u64);
        h.drop_conn(c.conn, Disconnect::Abrupt);
    }
    assert_eq!(h.core.poll_timeout(), Some(start + Duration::from_secs(5)));
    // Resume every other one; the rest expire.
    for c in clients.iter().step_by(2) {
        let (_, ok) = h.resume(c, 0);
        assert!(ok);
    }
    h.advance(Duration::from_secs(10));
    assert_eq!(h.core.stats().sessions, 501);
    assert_eq!(h.core.poll_timeout(), None);
    let byes = h.take(watcher.conn);
    assert_eq!(byes.len(), 5, "the five expired room members");
}
