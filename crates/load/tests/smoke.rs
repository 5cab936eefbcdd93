//! Runs the load tool's library against a tiny in-test relay that speaks the
//! native protocol's join/message/ack subset, on a port chosen at run time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_load::{IdleConfig, Protocol, Target, TrafficConfig, run_idle, run_traffic};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

type Rooms = Arc<Mutex<HashMap<String, Vec<(u64, mpsc::UnboundedSender<Message>)>>>>;

async fn start_relay() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let rooms = Rooms::default();
    tokio::spawn(async move {
        let mut next = 0;
        while let Ok((stream, _)) = listener.accept().await {
            next += 1;
            tokio::spawn(serve(stream, next, Arc::clone(&rooms)));
        }
    });
    addr
}

async fn serve(stream: TcpStream, conn: u64, rooms: Rooms) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if sink.send(frame).await.is_err() {
                break;
            }
        }
    });
    let _ = tx.send(Message::text(r#"{"type":"welcome","protocol":1}"#));
    let mut joined = Vec::new();
    while let Some(Ok(Message::Text(text))) = source.next().await {
        let Ok(request) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        let room = request["room"].as_str().unwrap_or_default().to_owned();
        match request["type"].as_str() {
            Some("join") => {
                rooms
                    .lock()
                    .expect("rooms lock")
                    .entry(room.clone())
                    .or_default()
                    .push((conn, tx.clone()));
                joined.push(room.clone());
                let _ = tx.send(Message::text(
                    json!({"type":"joined","room":room,"seq":1}).to_string(),
                ));
            }
            Some("message") => {
                let relayed =
                    json!({"type":"message","room":room,"from":conn,"data":request["data"]})
                        .to_string();
                let mut delivered = 0;
                if let Some(members) = rooms.lock().expect("rooms lock").get(&room) {
                    for (_, member) in members.iter().filter(|(id, _)| *id != conn) {
                        if member.send(Message::text(relayed.clone())).is_ok() {
                            delivered += 1;
                        }
                    }
                }
                if !request["id"].is_null() {
                    let _ = tx.send(Message::text(
                        json!({"type":"ack","delivered":delivered,"reply_to":request["id"]})
                            .to_string(),
                    ));
                }
            }
            _ => {}
        }
    }
    let mut map = rooms.lock().expect("rooms lock");
    for room in joined {
        if let Some(members) = map.get_mut(&room) {
            members.retain(|(id, _)| *id != conn);
        }
    }
    drop(map);
    drop(tx);
    writer.abort();
}

fn target(addr: SocketAddr) -> Target {
    Target {
        protocol: Protocol::Native,
        url: format!("ws://{addr}/ws"),
        server_pid: Some(std::process::id()),
        source_ips: 4,
        connect_concurrency: 8,
        timeout: Duration::from_secs(20),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_counts_every_delivery_and_ack() {
    let addr = start_relay().await;
    let report = run_traffic(&TrafficConfig {
        target: target(addr),
        rooms: 4,
        peers_per_room: 2,
        senders_per_room: 1,
        data_size: 300,
        window: 8,
        duration: Duration::from_secs(10),
        count: Some(100),
        rate: None,
        with_id: true,
        room_prefix: "smoke-".to_owned(),
        drain_timeout: Duration::from_secs(5),
        url2: None,
    })
    .await
    .expect("traffic run");
    assert_eq!(report.sent, 400);
    assert_eq!(report.expected, 400);
    assert_eq!(report.delivered, 400);
    assert_eq!(report.lost, 0);
    assert_eq!(report.acks, 400);
    assert_eq!(report.peer_errors, 0, "{:?}", report.first_error);
    assert!(report.latency.max_us >= report.latency.p50_us);
    assert!(report.server.is_some());
    let line = serde_json::to_string(&report).expect("json");
    assert!(line.contains(r#""mode":"traffic""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_three_peer_rooms_fan_out_without_ids() {
    let addr = start_relay().await;
    let report = run_traffic(&TrafficConfig {
        target: target(addr),
        rooms: 3,
        peers_per_room: 3,
        senders_per_room: 2,
        data_size: 40,
        window: 4,
        duration: Duration::from_secs(10),
        count: Some(50),
        rate: Some(3000.0),
        with_id: false,
        room_prefix: "fan-".to_owned(),
        drain_timeout: Duration::from_secs(5),
        url2: None,
    })
    .await
    .expect("traffic run");
    // 3 rooms x 2 senders x 50 messages, each reaching the 2 other peers.
    assert_eq!(report.sent, 300);
    assert_eq!(report.delivered, 600);
    assert_eq!(report.acks, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_holds_every_connection() {
    let addr = start_relay().await;
    let report = run_idle(&IdleConfig {
        target: target(addr),
        connections: 40,
        peers_per_room: 2,
        checkpoints: vec![10, 25],
        settle: Duration::from_millis(10),
        hold: Duration::from_millis(100),
        room_prefix: "idle-".to_owned(),
    })
    .await
    .expect("idle run");
    assert_eq!(report.ready, 40);
    assert_eq!(report.held, 40);
    assert_eq!(report.failed, 0, "{:?}", report.first_error);
    let counts: Vec<usize> = report.steps.iter().map(|s| s.connections).collect();
    assert_eq!(counts, vec![10, 25, 40]);
}

#[tokio::test]
async fn refuses_non_loopback_targets() {
    let mut target = target("127.0.0.1:9".parse().expect("addr"));
    target.url = "ws://192.0.2.1:80/ws".to_owned();
    let result = run_idle(&IdleConfig {
        target,
        connections: 1,
        peers_per_room: 0,
        checkpoints: Vec::new(),
        settle: Duration::ZERO,
        hold: Duration::ZERO,
        room_prefix: String::new(),
    })
    .await;
    // Refused before any connection is tried, for the right reason.
    let err = result.expect_err("a non-loopback target must be refused");
    assert!(err.to_string().contains("only loopback"), "{err}");
}
