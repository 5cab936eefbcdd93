//! The operator's view of TURN through `TurnService`: allocations listed
//! with their relayed bytes, revoked at once (the relay stops, the port is
//! released, a stream client is hung up), and the created/ended events.
//! Over real sockets, with this crate's test client and with coturn's
//! `turnutils_uclient`.

mod turn_support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use switchboard::turn::{EndReason, TurnAllocation, TurnAllocationEvent, TurnService};
use switchboard_stun::attr::{Data, XorPeerAddress};
use switchboard_stun::{Message, MessageType, Method};
use tokio::net::UdpSocket;
use tokio::process::Command;
use tokio::sync::broadcast;
use turn_support::*;

/// How long "nothing arrives" is watched for: far longer than a loopback
/// round trip, which is what the positive checks before it take.
const QUIET: Duration = Duration::from_millis(300);

fn admin_settings() -> switchboard::turn::TurnSettings {
    let mut s = settings();
    s.allowed_peer_ranges = vec!["127.0.0.0/8".into()];
    s
}

async fn next_event(rx: &mut broadcast::Receiver<TurnAllocationEvent>) -> TurnAllocationEvent {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("an allocation event in time")
        .expect("no lag")
}

/// The allocations, polled until `ready` holds for them (bounded).
async fn allocations_until(
    service: &TurnService,
    what: &str,
    ready: impl Fn(&[TurnAllocation]) -> bool,
) -> Vec<TurnAllocation> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = service.allocations().await.expect("the core answers");
        if ready(&all) {
            return all;
        }
        assert!(Instant::now() < deadline, "never {what}: {all:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn create_permission(client: &mut TurnClient, peer: SocketAddr) {
    let answer = client
        .ask(Method::CREATE_PERMISSION, |b| {
            b.add_xor_peer_address(peer);
        })
        .await;
    assert!(is_success(&answer), "{:?}", error_code(&answer));
}

/// The data of a Data indication from `peer`.
fn data_from(bytes: &[u8], peer: SocketAddr) -> Vec<u8> {
    let msg = Message::parse(bytes).expect("a STUN message");
    assert_eq!(msg.message_type(), MessageType::DATA_INDICATION);
    assert_eq!(msg.get::<XorPeerAddress>().unwrap().unwrap().0, peer);
    msg.get::<Data<'_>>().unwrap().unwrap().0.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_allocation_is_listed_then_revoked_and_its_relay_stops() {
    let server = start(&admin_settings(), None).await;
    let service = &server.service;
    let mut events = service.allocation_events().expect("TURN is on");
    let udp = Conn::udp(service.local_udp().unwrap()).await;
    let Conn::Udp(socket, _) = &udp else {
        unreachable!()
    };
    let client_addr = socket.local_addr().unwrap();
    let mut client = TurnClient::new(udp, "alice", "alice-pw");
    let before = SystemTime::now();
    let relayed = client.allocate().await.expect("allocated");

    let peer = peer().await;
    let peer_addr = peer.local_addr().unwrap();
    create_permission(&mut client, peer_addr).await;
    client.send_indication(peer_addr, b"hello").await;
    let (got, from) = peer_recv(&peer).await.expect("relayed to the peer");
    assert_eq!((got.as_slice(), from), (&b"hello"[..], relayed));
    peer.send_to(b"back", relayed).await.unwrap();
    let answer = client.conn.recv().await.expect("relayed to the client");
    assert_eq!(data_from(&answer, peer_addr), b"back");

    let TurnAllocationEvent::Created(created) = next_event(&mut events).await else {
        panic!("created first");
    };
    // Counted under the core's lock as they are relayed: already there.
    let all = service.allocations().await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    let a = &all[0];
    assert_eq!(a.id, created.id);
    assert_eq!(a.username, "alice");
    assert_eq!(a.client, client_addr);
    assert_eq!(a.transport, "udp");
    assert_eq!(a.relayed, relayed);
    assert_eq!((a.bytes_out, a.bytes_in), (5, 4));
    assert_eq!((a.permissions, a.channels), (1, 0));
    let slack = Duration::from_secs(2);
    assert!(a.created + slack >= before && a.created <= SystemTime::now() + slack);
    let lifetime = a.expires.duration_since(a.created).unwrap();
    assert!(
        lifetime.abs_diff(Duration::from_secs(600)) <= slack,
        "{lifetime:?}"
    );
    let json = serde_json::to_value(a).unwrap();
    for key in [
        "id",
        "username",
        "client",
        "relayed",
        "created",
        "expires",
        "bytes_in",
        "bytes_out",
    ] {
        assert!(json.get(key).is_some(), "{key} in {json}");
    }

    assert!(service.revoke(&a.id).await.unwrap());
    match next_event(&mut events).await {
        TurnAllocationEvent::Ended { allocation, reason } => {
            assert_eq!(reason, EndReason::Revoked);
            assert_eq!(allocation.id, a.id);
            assert_eq!((allocation.bytes_out, allocation.bytes_in), (5, 4));
        }
        other => panic!("ended next: {other:?}"),
    }
    assert!(service.allocations().await.unwrap().is_empty());
    let m = service.metrics();
    assert_eq!((m.allocations, m.allocations_revoked), (0, 1));

    // The client's Refresh now gets 437 Allocation Mismatch.
    let refresh = client.ask(Method::REFRESH, |_| {}).await;
    assert_eq!(error_code(&refresh), Some(437));
    // The relay port was released: it can be bound again.
    let rebound = UdpSocket::bind(relayed).await;
    assert!(rebound.is_ok(), "relay port still held: {rebound:?}");
    drop(rebound);
    // And nothing is relayed any more, either way.
    client.send_indication(peer_addr, b"after").await;
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(QUIET, peer.recv_from(&mut buf))
            .await
            .is_err(),
        "relayed after revoke"
    );

    // Unknown, repeated and malformed ids change nothing.
    for id in [a.id.as_str(), "ffffffffffffffff", "", "not-an-id", "+1"] {
        assert!(!service.revoke(id).await.unwrap(), "{id:?}");
    }
    assert_eq!(service.metrics().allocations_revoked, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_stream_allocation_hangs_up_its_connection() {
    let (server_tls, client_tls) = tls_pair();
    let server = start(&admin_settings(), Some(server_tls)).await;
    let service = &server.service;
    let mut events = service.allocation_events().unwrap();
    let tcp = TurnClient::new(
        Conn::tcp(service.local_tcp().unwrap()).await,
        "alice",
        "alice-pw",
    );
    let tls = TurnClient::new(
        Conn::tls(service.local_tls().unwrap(), client_tls).await,
        "alice",
        "alice-pw",
    );
    let mut kept = TurnClient::new(
        Conn::tcp(service.local_tcp().unwrap()).await,
        "alice",
        "alice-pw",
    );
    let kept_relay = kept.allocate().await.unwrap();
    for (mut client, transport) in [(tcp, "tcp"), (tls, "tls")] {
        let relayed = client.allocate().await.expect("allocated");
        let all = service.allocations().await.unwrap();
        let mine: Vec<_> = all.iter().filter(|a| a.relayed == relayed).collect();
        assert_eq!(mine.len(), 1, "{all:?}");
        assert_eq!(mine[0].transport, transport);
        assert!(service.revoke(&mine[0].id).await.unwrap());
        // The server closes the connection: end of stream, not a timeout.
        let started = Instant::now();
        assert!(client.conn.recv().await.is_none(), "{transport}: hung up");
        assert!(started.elapsed() < WAIT, "{transport}: closed, not silent");
        let left = service.allocations().await.unwrap();
        assert!(left.iter().all(|a| a.relayed != relayed), "{left:?}");
    }
    let mut ends = Vec::new();
    while ends.len() < 2 {
        if let TurnAllocationEvent::Ended { allocation, reason } = next_event(&mut events).await {
            ends.push((allocation.transport, reason));
        }
    }
    assert_eq!(
        ends,
        [("tcp", EndReason::Revoked), ("tls", EndReason::Revoked)],
        "revoked, not counted again as closed"
    );
    // The other connection's allocation was left alone.
    let all = service.allocations().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].relayed, kept_relay);
    assert!(is_success(&kept.ask(Method::REFRESH, |_| {}).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_reach_every_subscriber_and_disabled_turn_is_empty() {
    let server = start(&admin_settings(), None).await;
    let service = &server.service;
    let mut first = service.allocation_events().unwrap();
    let mut second = service.allocation_events().unwrap();
    let mut client = TurnClient::new(
        Conn::udp(service.local_udp().unwrap()).await,
        "alice",
        "alice-pw",
    );
    client.allocate().await.unwrap();
    let answer = client
        .ask(Method::REFRESH, |b| {
            b.add(&switchboard_stun::attr::Lifetime(0));
        })
        .await;
    assert!(is_success(&answer));
    for rx in [&mut first, &mut second] {
        assert_eq!(next_event(rx).await.name(), "allocation_created");
        let ended = next_event(rx).await;
        assert_eq!(ended.name(), "allocation_ended");
        assert!(matches!(
            ended,
            TurnAllocationEvent::Ended {
                reason: EndReason::Deleted,
                ..
            }
        ));
        assert_eq!(ended.allocation().username, "alice");
    }

    let mut off = admin_settings();
    off.enabled = false;
    let disabled = start(&off, None).await;
    assert!(disabled.service.allocations().await.unwrap().is_empty());
    assert!(!disabled.service.revoke("1").await.unwrap());
    assert!(disabled.service.allocation_events().is_none());
}

const UCLIENT: &str = "turnutils_uclient";

/// `(sent, received)` from uclient's final report.
fn totals(output: &str) -> Option<(u64, u64)> {
    output.lines().rev().find_map(|line| {
        let rest = line.split("start_mclient: tot_send_msgs=").nth(1)?;
        let (sent, received) = rest.split_once(", tot_recv_msgs=")?;
        Some((sent.trim().parse().ok()?, received.trim().parse().ok()?))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_uclient_loses_its_relay_when_revoked() {
    if !(have(UCLIENT) && have(PEER)) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{UCLIENT}/{PEER} missing in CI: apt-get install -y coturn"
        );
        eprintln!(
            "\n*** SKIPPING: {UCLIENT}/{PEER} not installed (apt-get install -y coturn) ***\n"
        );
        return;
    }
    let mut s = admin_settings();
    // Outside Linux's ephemeral range and turn_interop's ranges.
    s.relay_ports = "60000-60999".parse().unwrap();
    let server = start(&s, None).await;
    let service = &server.service;
    let (_peer, peer) = start_echo_peer().await;
    const MESSAGES: u64 = 1500;
    // One client, no RTCP allocation, a message every 5 ms: 7.5 s of
    // traffic, of which the revoke takes all but the first echoes.
    let mut uclient = Command::new(UCLIENT);
    uclient
        .args(["-c", "-n", &MESSAGES.to_string(), "-m", "1", "-l", "100"])
        .args(["-z", "5", "-u", "alice", "-w", "alice-pw"])
        .args(["-p", &service.local_udp().unwrap().port().to_string()])
        .args(["-e", "127.0.0.1", "-r", &peer.port().to_string()])
        .arg("127.0.0.1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let run = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(90), uclient.output()).await
    });

    // Echoes are coming back through the relay: then revoke it.
    let all = allocations_until(service, "relaying", |all| {
        all.iter().any(|a| a.bytes_in > 0 && a.bytes_out > 0)
    })
    .await;
    let live: Vec<&TurnAllocation> = all
        .iter()
        .filter(|a| a.bytes_in > 0 && a.bytes_out > 0)
        .collect();
    assert_eq!(live.len(), 1, "{all:?}");
    let target = live[0].clone();
    assert_eq!(
        (target.username.as_str(), target.transport),
        ("alice", "udp")
    );
    assert!(service.revoke(&target.id).await.unwrap());
    let left = service.allocations().await.unwrap();
    assert!(left.iter().all(|a| a.id != target.id), "{left:?}");

    let output = run
        .await
        .unwrap()
        .expect("uclient finishes in time")
        .expect("uclient runs");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    let (sent, received) =
        totals(&text).unwrap_or_else(|| panic!("uclient's totals:\n{}", tail.join("\n")));
    eprintln!("uclient: {received} of {sent} echoed, the rest after the revoke");
    assert_eq!(sent, MESSAGES, "uclient kept sending:\n{}", tail.join("\n"));
    assert!(
        received < MESSAGES / 2,
        "echoes stopped with the relay: {received} of {sent}\n{}",
        tail.join("\n")
    );
    assert!(received > 0, "some came back before: {}", tail.join("\n"));
    assert!(service.metrics().allocations_revoked >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_refuses_new_allocations_and_keeps_relaying_the_old() {
    let server = start(&admin_settings(), None).await;
    let service = &server.service;
    let udp = service.local_udp().unwrap();
    let mut old = TurnClient::new(Conn::udp(udp).await, "alice", "alice-pw");
    let relayed = old.allocate().await.unwrap();
    let peer = peer().await;
    let peer_addr = peer.local_addr().unwrap();
    create_permission(&mut old, peer_addr).await;

    service.set_draining(true).await.unwrap();
    let mut new = TurnClient::new(Conn::udp(udp).await, "alice", "alice-pw");
    assert_eq!(new.allocate().await, Err(508));
    let mut over_tcp = TurnClient::new(
        Conn::tcp(service.local_tcp().unwrap()).await,
        "alice",
        "alice-pw",
    );
    assert_eq!(over_tcp.allocate().await, Err(508));
    assert_eq!(service.metrics().draining_refusals, 2);

    assert!(is_success(&old.ask(Method::REFRESH, |_| {}).await));
    old.send_indication(peer_addr, b"still").await;
    let (got, from) = peer_recv(&peer).await.expect("still relayed");
    assert_eq!((got.as_slice(), from), (&b"still"[..], relayed));
    assert_eq!(service.allocations().await.unwrap().len(), 1);

    service.set_draining(false).await.unwrap();
    assert!(new.allocate().await.is_ok());
    assert_eq!(service.allocations().await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_users_for_new_allocations_and_drops_none() {
    let server = start(&admin_settings(), None).await;
    let service = &server.service;
    let udp = service.local_udp().unwrap();
    let mut alice = TurnClient::new(Conn::udp(udp).await, "alice", "alice-pw");
    let relayed = alice.allocate().await.unwrap();
    let peer = peer().await;
    let peer_addr = peer.local_addr().unwrap();
    create_permission(&mut alice, peer_addr).await;

    let mut next = admin_settings();
    next.users.clear();
    next.users.insert("bob".into(), "bob-pw".into());
    service.reload(&next).await.expect("valid settings");

    // Alice's allocation was not dropped: it refreshes and relays.
    assert!(is_success(&alice.ask(Method::REFRESH, |_| {}).await));
    alice.send_indication(peer_addr, b"kept").await;
    let (got, from) = peer_recv(&peer).await.expect("still relayed");
    assert_eq!((got.as_slice(), from), (&b"kept"[..], relayed));
    // New allocations follow the new users.
    let mut again = TurnClient::new(Conn::udp(udp).await, "alice", "alice-pw");
    assert_eq!(again.allocate().await, Err(401));
    let mut bob = TurnClient::new(Conn::udp(udp).await, "bob", "bob-pw");
    assert!(bob.allocate().await.is_ok());

    // A broken one is refused and the running one stays.
    let mut broken = admin_settings();
    broken.denied_peer_ranges = vec!["not-a-range".into()];
    let refused = service.reload(&broken).await;
    assert!(
        matches!(refused, Err(switchboard::turn::TurnReloadError::Invalid(_))),
        "{refused:?}"
    );
    let mut bob2 = TurnClient::new(Conn::udp(udp).await, "bob", "bob-pw");
    assert!(bob2.allocate().await.is_ok(), "bob is still a user");
    let mut alice3 = TurnClient::new(Conn::udp(udp).await, "alice", "alice-pw");
    assert_eq!(alice3.allocate().await, Err(401), "alice is still not");
    assert_eq!(service.allocations().await.unwrap().len(), 3);
    assert!(switchboard::turn::TURN_RELOADABLE_KEYS.contains(&"users"));
}
