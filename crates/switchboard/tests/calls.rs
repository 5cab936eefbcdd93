//! PROTOCOL.md §3, direct calls, over real WebSockets: one test per row.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_testkit::{Client, Server};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

async fn user(s: &Server, name: &str) -> Client {
    Client::connect(&s.ws_url(&format!("user={name}"))).await
}

async fn ring(caller: &mut Client, to: &str) -> String {
    let r = caller
        .request(json!({"type":"call","to":to,"meta":{"video":true}}), 1)
        .await;
    assert_eq!(r["type"], "ringing", "{r}");
    r["call"].as_str().expect("call id").to_string()
}

#[tokio::test]
async fn call_rings_every_device_and_accept_makes_a_private_room() {
    let s = Server::start(BIN, &[], &[]).await;
    let mut alice = user(&s, "alice").await;
    let mut bob_phone = user(&s, "bob").await;
    let mut bob_laptop = user(&s, "bob").await;
    let call = ring(&mut alice, "bob").await;
    for dev in [&mut bob_phone, &mut bob_laptop] {
        let inc = dev.recv_type("incoming_call").await;
        assert_eq!(inc["call"], call);
        assert_eq!(inc["from"], "alice");
        assert_eq!(inc["meta"], json!({"video":true}));
    }

    bob_laptop.send(json!({"type":"accept","call":call})).await;
    let accepted = alice.recv_type("accepted").await;
    assert_eq!(accepted["call"], call);
    let room = accepted["room"].as_str().expect("room").to_string();
    let joined_a = alice.recv_type("joined").await;
    assert_eq!(joined_a["room"], room);
    let joined_b = bob_laptop.recv_type("joined").await;
    assert_eq!(joined_b["room"], room);
    // Both are peers of R: one sees the other in `peers` or via other_joined.
    let b_in_peers = joined_a["peers"]
        .as_array()
        .is_some_and(|p| p.iter().any(|x| x["peer"] == bob_laptop.peer()));
    let a_in_peers = joined_b["peers"]
        .as_array()
        .is_some_and(|p| p.iter().any(|x| x["peer"] == alice.peer()));
    assert!(b_in_peers || a_in_peers, "{joined_a} {joined_b}");
    if !b_in_peers {
        assert_eq!(
            alice.recv_type("other_joined").await["peer"],
            bob_laptop.peer()
        );
    }
    if !a_in_peers {
        assert_eq!(
            bob_laptop.recv_type("other_joined").await["peer"],
            alice.peer()
        );
    }
    let ended = bob_phone.recv_type("call_ended").await;
    assert_eq!(ended["call"], call);
    assert_eq!(ended["reason"], "answered_elsewhere");

    // They talk in R with ordinary messages.
    let ack = alice
        .request(
            json!({"type":"message","room":room,"data":{"kind":"offer","sdp":"x"}}),
            2,
        )
        .await;
    assert_eq!(ack["delivered"], 1);
    assert_eq!(
        bob_laptop.recv_type("message").await["data"]["kind"],
        "offer"
    );
    // Nobody else may walk in.
    let e = bob_phone
        .request(json!({"type":"join","room":room}), 3)
        .await;
    assert_eq!(e["code"], "forbidden");
}

#[tokio::test]
async fn unknown_or_offline_users_cannot_be_called() {
    let s = Server::start(BIN, &[], &[]).await;
    let mut alice = user(&s, "alice").await;
    let e = alice.request(json!({"type":"call","to":"nobody"}), 1).await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["code"], "no_such_user");
}

#[tokio::test]
async fn decline_and_cancel() {
    let s = Server::start(BIN, &[], &[]).await;
    let mut alice = user(&s, "alice").await;
    let mut bob = user(&s, "bob").await;

    let call = ring(&mut alice, "bob").await;
    bob.recv_type("incoming_call").await;
    bob.send(json!({"type":"decline","call":call})).await;
    assert_eq!(alice.recv_type("declined").await["call"], call);

    let call = ring(&mut alice, "bob").await;
    bob.recv_type("incoming_call").await;
    alice.send(json!({"type":"cancel","call":call})).await;
    let ended = bob.recv_type("call_ended").await;
    assert_eq!(ended["call"], call);
    assert_eq!(ended["reason"], "cancelled");
    // Too late now.
    let e = bob.request(json!({"type":"accept","call":call}), 9).await;
    assert_eq!(e["code"], "no_such_call");
}

#[tokio::test]
async fn nobody_answers() {
    let s = Server::start(BIN, &[("SWITCHBOARD_CALLS__RING_TIMEOUT_SECS", "1")], &[]).await;
    let mut alice = user(&s, "alice").await;
    let mut bob = user(&s, "bob").await;
    let call = ring(&mut alice, "bob").await;
    bob.recv_type("incoming_call").await;
    for side in [&mut alice, &mut bob] {
        let ended = side.recv_type("call_ended").await;
        assert_eq!(ended["call"], call);
        assert_eq!(ended["reason"], "no_answer");
    }
}

#[tokio::test]
async fn the_other_side_leaving_for_good_ends_the_ringing_call() {
    let s = Server::start(BIN, &[("SWITCHBOARD_SESSION__RESUME_GRACE_SECS", "1")], &[]).await;
    let mut alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let mut carol = user(&s, "carol").await;

    // The callee closes cleanly: gone at once.
    let call = ring(&mut alice, "bob").await;
    bob.close(1000).await;
    let ended = alice.recv_type("call_ended").await;
    assert_eq!(
        (ended["call"].clone(), ended["reason"].clone()),
        (Value::from(call), Value::from("gone"))
    );

    // The caller drops and never resumes: gone after the grace period.
    let call = ring(&mut alice, "carol").await;
    carol.recv_type("incoming_call").await;
    alice.cut();
    let ended = carol.recv_type("call_ended").await;
    assert_eq!(ended["call"], call);
    assert_eq!(ended["reason"], "gone");
}

#[tokio::test]
async fn two_devices_accepting_at_once_exactly_one_wins() {
    let s = Server::start(BIN, &[], &[]).await;
    let mut alice = user(&s, "alice").await;
    let mut phone = user(&s, "bob").await;
    let mut laptop = user(&s, "bob").await;
    let call = ring(&mut alice, "bob").await;
    phone.recv_type("incoming_call").await;
    laptop.recv_type("incoming_call").await;
    phone
        .send(json!({"type":"accept","call":call,"id":1}))
        .await;
    laptop
        .send(json!({"type":"accept","call":call,"id":1}))
        .await;
    let mut winners = 0;
    for dev in [&mut phone, &mut laptop] {
        let v = dev.recv().await;
        match v["type"].as_str() {
            Some("joined") => winners += 1,
            Some("error") => assert_eq!(v["code"], "no_such_call"),
            Some("call_ended") => {
                assert_eq!(v["reason"], "answered_elsewhere");
                let e = dev.recv_type("error").await;
                assert_eq!(e["code"], "no_such_call");
            }
            _ => panic!("unexpected {v}"),
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(alice.recv_type("accepted").await["call"], call);
}

#[tokio::test]
async fn a_callee_can_ring_for_several_calls_and_answer_each() {
    let s = Server::start(BIN, &[], &[]).await;
    let mut alice = user(&s, "alice").await;
    let mut carol = user(&s, "carol").await;
    let mut bob = user(&s, "bob").await;
    let c1 = ring(&mut alice, "bob").await;
    let c2 = ring(&mut carol, "bob").await;
    assert_ne!(c1, c2);
    bob.recv_type("incoming_call").await;
    bob.recv_type("incoming_call").await;
    bob.send(json!({"type":"decline","call":c1})).await;
    assert_eq!(alice.recv_type("declined").await["call"], c1);
    bob.send(json!({"type":"accept","call":c2})).await;
    assert_eq!(carol.recv_type("accepted").await["call"], c2);
    bob.recv_type("joined").await;
    alice.expect_silence(Duration::from_millis(200)).await;
}
