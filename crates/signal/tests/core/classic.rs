use serde_json::{Value, json};
use switchboard_signal::{Config, Disconnect};

use crate::harness::H;

/// Joins a classic connection and returns its peer id.
fn classic_join(h: &mut H, conn: switchboard_signal::ConnId, room: &str) -> String {
    let ack = h.emit(conn, "join", vec![json!(room)], true);
    assert_eq!(ack, Some(json!({"ok":true})));
    let (event, args) = h.event(conn);
    assert_eq!(event, "joined");
    assert_eq!(args[0], json!(room));
    args[1].as_str().unwrap().to_owned()
}

#[test]
fn classic_and_native_peers_share_rooms() {
    let mut h = H::default();
    let n = h.connect();
    h.join(&n, "r");
    let c = h.classic();
    let cid = classic_join(&mut h, c, "r");
    h.expect(
        n.conn,
        json!({"type":"other_joined","room":"r","peer":cid,"meta":{}}),
    );

    // A second native peer sees both, in join order.
    let m = h.connect();
    let joined = h.join(&m, "r");
    assert_eq!(
        joined["peers"],
        json!([{"peer":n.peer,"meta":{}},{"peer":cid,"meta":{}}])
    );
    assert_eq!(
        h.event(c),
        ("otherjoin".into(), vec![json!("r"), json!(m.peer)])
    );
    h.take(n.conn);

    // classic -> native: `from` is the classic peer id.
    let data = json!({"type":"offer","sdp":"v=0"});
    let ack = h.emit(c, "message", vec![json!("r"), data.clone()], true);
    assert_eq!(ack, Some(json!({"delivered":2})));
    for x in [&n, &m] {
        h.expect(
            x.conn,
            json!({"type":"message","room":"r","from":cid,"data":data}),
        );
    }
    h.quiet_events(c);

    // native -> classic: message(room, data); `to` reaches a classic peer too.
    h.send(
        n.conn,
        json!({"type":"message","room":"r","data":{"candidate":"x"},"id":1}),
    );
    assert_eq!(
        h.event(c),
        ("message".into(), vec![json!("r"), json!({"candidate":"x"})])
    );
    h.expect(n.conn, json!({"type":"ack","delivered":2,"reply_to":1}));
    h.send(
        n.conn,
        json!({"type":"message","room":"r","to":cid,"data":5,"id":2}),
    );
    assert_eq!(h.event(c), ("message".into(), vec![json!("r"), json!(5)]));
    h.expect(n.conn, json!({"type":"ack","delivered":1,"reply_to":2}));
    h.take(m.conn);

    // Native leave: classic gets bye(room, id).
    h.send(m.conn, json!({"type":"leave","room":"r"}));
    assert_eq!(h.event(c), ("bye".into(), vec![json!("r"), json!(m.peer)]));
    h.expect(n.conn, json!({"type":"bye","room":"r","peer":m.peer}));

    // Classic leave: leaved to it, bye to the natives.
    assert_eq!(h.emit(c, "leave", vec![json!("r")], false), None);
    assert_eq!(h.event(c), ("leaved".into(), vec![json!("r"), json!(cid)]));
    h.expect(n.conn, json!({"type":"bye","room":"r","peer":cid}));

    // Rejoin, then a classic disconnect is final at once.
    classic_join(&mut h, c, "r");
    h.take(n.conn);
    h.drop_conn(c, Disconnect::Abrupt);
    h.expect(n.conn, json!({"type":"bye","room":"r","peer":cid}));
    assert_eq!(h.core.poll_timeout(), None);
    assert_eq!(h.core.stats().sessions, 2);
}

#[test]
fn classic_message_outside_a_room_reaches_nobody() {
    let mut h = H::new(Config {
        max_peers: 1,
        ..Config::default()
    });
    let n = h.connect();
    h.join(&n, "r");
    let c = h.classic();
    let ack = h.emit(c, "join", vec![json!("r")], true);
    assert_eq!(ack, Some(json!({"full":true})));
    let (event, args) = h.event(c);
    assert_eq!(event, "full");
    assert_eq!(args[0], json!("r"));
    assert!(args[1].is_string());

    let ack = h
        .emit(c, "message", vec![json!("r"), json!("hi")], true)
        .unwrap();
    assert_eq!(ack["code"], "not_in_room");
    assert_eq!(ack["delivered"], 0);
    let (event, args) = h.event(c);
    assert_eq!(event, "error");
    assert_eq!(args[0]["code"], "not_in_room");
    assert!(args[0]["message"].is_string());
    h.quiet(n.conn);

    // Without an ack: only the error event.
    assert_eq!(
        h.emit(c, "message", vec![json!("r"), json!("hi")], false),
        None
    );
    assert_eq!(h.event(c).0, "error");
    // Bad arguments and unknown events.
    h.emit(c, "join", vec![json!(5)], false);
    assert_eq!(h.event(c).1[0]["code"], "bad_request");
    h.emit(c, "join", vec![json!("")], false);
    assert_eq!(h.event(c).1[0]["code"], "bad_request");
    h.emit(c, "create or join", vec![json!("r")], false);
    assert_eq!(h.event(c).1[0]["code"], "bad_request");
    h.emit(c, "leave", vec![json!("r")], false);
    assert_eq!(h.event(c).1[0]["code"], "not_in_room");
    h.quiet_events(c);
}

#[test]
fn classic_size_and_rate_limits() {
    let mut h = H::new(Config {
        max_message_bytes: 50,
        rate_per_sec: 1,
        rate_burst: 4,
        ..Config::default()
    });
    let c = h.classic();
    classic_join(&mut h, c, "r");
    let big = Value::String("x".repeat(60));
    let ack = h.emit(c, "message", vec![json!("r"), big], true).unwrap();
    assert_eq!(ack["code"], "too_large");
    assert_eq!(h.event(c).1[0]["code"], "too_large");
    let ack = h.emit(c, "message", vec![json!("r"), json!("small")], true);
    assert_eq!(ack, Some(json!({"delivered":0})));
    h.emit(c, "message", vec![json!("r"), json!("small")], false);
    let ack = h
        .emit(c, "message", vec![json!("r"), json!("small")], true)
        .unwrap();
    assert_eq!(ack["code"], "rate_limited");
    assert_eq!(h.event(c).1[0]["code"], "rate_limited");
}

/// A Socket.IO recipient has a message only once the shell could queue its
/// event: when the shell reports it could not (`classic_refused`), a native
/// sender's ack does not count it (issue #12, item 13).
#[test]
fn a_native_ack_counts_only_the_socketio_events_the_shell_queued() {
    let mut h = H::default();
    let n = h.connect();
    h.join(&n, "r");
    let m = h.connect();
    h.join(&m, "r");
    let c = h.classic();
    let cid = classic_join(&mut h, c, "r");
    h.pump();
    let send = |h: &mut H, i: u64, to: Option<&str>| {
        let mut msg = json!({"type":"message","room":"r","data":{"i":i},"id":i});
        if let Some(to) = to {
            msg["to"] = json!(to);
        }
        let text = msg.to_string();
        let now = h.now;
        h.core.handle_text(now, n.conn, &text);
    };
    let ack_of = |h: &mut H, refuse: bool| -> Value {
        let mut ack = None;
        while let Some(out) = h.core.poll_output() {
            match out {
                switchboard_signal::Output::Classic { event, .. }
                    if refuse && event.event == "message" =>
                {
                    h.core.classic_refused();
                }
                switchboard_signal::Output::Frame { conn, frame } if conn == n.conn => {
                    let mut wire = Vec::new();
                    frame.write_to(&mut wire);
                    let v: Value = serde_json::from_slice(&wire).expect("json");
                    if v["type"] == "ack" {
                        ack = Some(v);
                    }
                }
                _ => {}
            }
        }
        ack.expect("an ack")
    };
    send(&mut h, 1, None);
    assert_eq!(ack_of(&mut h, false)["delivered"], 2);
    send(&mut h, 2, None);
    let ack = ack_of(&mut h, true);
    assert_eq!(
        (ack["delivered"].clone(), ack["reply_to"].clone()),
        (json!(1), json!(2))
    );
    // A `to` message for the Socket.IO peer alone: nobody has it.
    send(&mut h, 3, Some(&cid));
    assert_eq!(ack_of(&mut h, true)["delivered"], 0);
    send(&mut h, 4, Some(&cid));
    assert_eq!(ack_of(&mut h, false)["delivered"], 1);
    h.take(m.conn);
}
