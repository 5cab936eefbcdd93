//! Webhooks (PROTOCOL.md §8, docs/webhooks.md) from the outside: a real
//! switchboard process, real signaling clients, and a real HTTP receiver
//! in the test on 127.0.0.1 that fails, hangs, answers slowly or is down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use switchboard_testkit::{Client, Server, WAIT, http_get};
use tokio::sync::Notify;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const SECRET: &str = "a webhook secret, 32 bytes long!";

/// What the receiver does with one request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// 500 at once.
    Fail,
    /// Nothing for far longer than the sender's timeout.
    Hang,
    /// 200 after a while.
    Slow,
    /// 307 to `/internal`.
    Redirect,
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Hit {
    path: String,
    signature: String,
    body: String,
}

#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    arrived: Arc<Notify>,
    script: fn(usize) -> Answer,
    count: Arc<AtomicUsize>,
}

impl Receiver {
    /// A receiver on a free port of 127.0.0.1 answering request `n` with
    /// `script(n)`.
    async fn start(script: fn(usize) -> Answer) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let r = Receiver {
            addr: listener.local_addr().expect("addr"),
            hits: Arc::default(),
            arrived: Arc::default(),
            script,
            count: Arc::default(),
        };
        let app = axum::Router::new().fallback(hook).with_state(r.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        r
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("lock").clone()
    }

    /// Waits until `done` holds for the hits so far; bounded.
    async fn until(&self, limit: Duration, what: &str, done: impl Fn(&[Hit]) -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let arrived = self.arrived.notified();
            if done(&self.hits()) {
                return;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!("{what}: not within {limit:?}; got {:#?}", self.hits());
            }
        }
    }
}

async fn hook(State(r): State<Receiver>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let n = r.count.fetch_add(1, Ordering::SeqCst);
    let signature = headers
        .get("switchboard-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    r.hits.lock().expect("lock").push(Hit {
        path: uri.path().to_owned(),
        signature,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    r.arrived.notify_waiters();
    match (r.script)(n) {
        Answer::Fail => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::OK.into_response()
        }
        Answer::Slow => {
            tokio::time::sleep(Duration::from_millis(150)).await;
            StatusCode::NO_CONTENT.into_response()
        }
        Answer::Redirect => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, "/internal")],
        )
            .into_response(),
    }
}

/// `sha256=<hex>` computed here, independently of the server's code.
fn expected_signature(body: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

async fn server(urls: &[String], extra: &[(&str, &str)]) -> Server {
    let urls = serde_json::to_string(urls).expect("json");
    let mut env = vec![
        ("SWITCHBOARD_WEBHOOKS__URLS", urls.as_str()),
        ("SWITCHBOARD_WEBHOOKS__SECRET", SECRET),
    ];
    env.extend_from_slice(extra);
    Server::start(BIN, &env, &[]).await
}

/// The value of `name{target="N"}` in `/metrics` (0 when absent).
async fn metric(s: &Server, name: &str, target: usize) -> f64 {
    let (status, text) = http_get(&s.http, "/metrics", &[]).await;
    assert_eq!(status, 200);
    let prefix = format!("{name}{{target=\"{target}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls `/metrics` until `name{target}` satisfies `ok`; bounded.
async fn metric_until(s: &Server, name: &str, target: usize, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = metric(s, name, target).await;
        if ok(v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{{target={target}}} is still {v} after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The order key of a delivered body, as the docs define it.
fn lane(v: &Value) -> String {
    match v.get("room").and_then(Value::as_str) {
        Some(room) if !v["event"].as_str().unwrap_or("").starts_with("call_") => {
            format!("room:{room}")
        }
        _ => format!("call:{}", v["call"].as_str().unwrap_or("")),
    }
}

/// Per lane, the events as delivered, a retry of the same id counted once:
/// `event` or `event:peer`. Panics when an id comes back after a later
/// event of its lane (out of order), or a signature is wrong.
fn lanes(hits: &[Hit]) -> HashMap<String, Vec<(String, Value)>> {
    let mut lanes: HashMap<String, Vec<(String, Value)>> = HashMap::new();
    for hit in hits {
        assert_eq!(
            hit.signature,
            expected_signature(&hit.body),
            "bad signature on {}",
            hit.body
        );
        let v: Value = serde_json::from_str(&hit.body).expect("a JSON body");
        let id = v["id"].as_str().expect("id").to_owned();
        let seen = lanes.entry(lane(&v)).or_default();
        if seen.last().is_some_and(|(last, _)| *last == id) {
            continue; // a retry of the head
        }
        assert!(
            seen.iter().all(|(other, _)| *other != id),
            "{id} came back after a later event of its lane: {hits:#?}"
        );
        seen.push((id, v));
    }
    lanes
}

fn names(lane: &[(String, Value)]) -> Vec<String> {
    lane.iter()
        .map(|(_, v)| match v.get("peer").and_then(Value::as_str) {
            Some(p) if v["event"] != "call_started" => {
                format!("{}:{p}", v["event"].as_str().unwrap_or(""))
            }
            _ => v["event"].as_str().unwrap_or("").to_owned(),
        })
        .collect()
}

#[tokio::test]
async fn every_event_arrives_in_order_per_room_signed_despite_failures_and_slowness() {
    // The first attempt gets a 500, the second no answer; the rest wait.
    let rx = Receiver::start(|n| match n {
        0 => Answer::Fail,
        1 => Answer::Hang,
        _ => Answer::Slow,
    })
    .await;
    let s = server(
        &[rx.url("/hook?k=v")],
        &[
            ("SWITCHBOARD_WEBHOOKS__ALLOW_PRIVATE", "true"),
            ("SWITCHBOARD_WEBHOOKS__TIMEOUT_SECS", "1"),
            ("SWITCHBOARD_WEBHOOKS__RETRY_SECS", "60"),
        ],
    )
    .await;
    let started = std::time::SystemTime::now();
    let mut a = Client::connect(&s.ws_url("user=alice")).await;
    let mut b = Client::connect(&s.ws_url("user=bob")).await;
    let (pa, pb) = (a.peer(), b.peer());
    for room in ["r1", "r2"] {
        a.join(room).await;
        b.join(room).await;
        a.recv_type("other_joined").await;
    }
    let ack = a
        .request(json!({"type":"message","room":"r1","data":{"x":1}}), 1)
        .await;
    assert_eq!(ack["delivered"], 1);
    assert_eq!(
        a.request(json!({"type":"leave","room":"r1"}), 2).await["type"],
        "left"
    );
    b.recv_type("bye").await;
    assert_eq!(
        b.request(json!({"type":"leave","room":"r1"}), 3).await["type"],
        "left"
    );
    let ringing = a.request(json!({"type":"call","to":"bob"}), 4).await;
    let call = ringing["call"].as_str().expect("call id").to_owned();
    b.recv_type("incoming_call").await;
    b.send(json!({"type":"decline","call":call})).await;
    a.recv_type("declined").await;
    a.close(1000).await;
    b.recv_type("bye").await;
    b.close(1000).await;

    let room = |a: &str, b: &str| {
        vec![
            "room_started".to_owned(),
            format!("peer_joined:{a}"),
            format!("peer_joined:{b}"),
            format!("peer_left:{a}"),
            format!("peer_left:{b}"),
            "room_finished".to_owned(),
        ]
    };
    let expected: HashMap<String, Vec<String>> = HashMap::from([
        ("room:r1".to_owned(), room(&pa, &pb)),
        ("room:r2".to_owned(), room(&pa, &pb)),
        (
            format!("call:{call}"),
            vec!["call_started".to_owned(), "call_ended".to_owned()],
        ),
    ]);
    let complete = |hits: &[Hit]| {
        let got = lanes(hits);
        expected
            .iter()
            .all(|(k, want)| got.get(k).is_some_and(|l| l.len() >= want.len()))
    };
    rx.until(Duration::from_secs(30), "every event delivered", complete)
        .await;
    let got = lanes(&rx.hits());
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for (key, want) in &expected {
        assert_eq!(&names(&got[key]), want, "lane {key}");
    }
    // The failed and the hung attempt were retried, byte for byte.
    let hits = rx.hits();
    for failed in &hits[..2] {
        assert!(
            hits.iter().filter(|h| h.body == failed.body).count() >= 2,
            "{} is retried: {hits:#?}",
            failed.body
        );
    }

    // The envelope and the fields a receiver uses.
    let mut ids = std::collections::HashSet::new();
    let since = started
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    for (_, v) in got.values().flatten() {
        assert!(
            ids.insert(v["id"].as_str().expect("id").to_owned()),
            "ids are unique"
        );
        assert!(v["node"].as_str().is_some_and(|n| !n.is_empty()), "{v}");
        let t = v["time"].as_u64().expect("time in unix ms");
        assert!(t + 1000 >= since && t < since + 120_000, "{v}");
    }
    assert_eq!(ids.len(), 14);
    assert!(hits.iter().all(|h| h.path == "/hook"));
    let r1 = &got["room:r1"];
    assert_eq!(r1[1].1["user"], "alice");
    assert_eq!(r1[2].1["user"], "bob");
    assert_eq!(r1[3].1["reason"], "leave");
    assert_eq!(r1[4].1["peers"], 0);
    let r2 = &got["room:r2"];
    assert_eq!(r2[3].1["reason"], "closed");
    let call_lane = &got[&format!("call:{call}")];
    assert_eq!(call_lane[0].1["peer"], pa);
    assert_eq!(call_lane[0].1["user"], "alice");
    assert_eq!(call_lane[0].1["callee"], "bob");
    assert_eq!(call_lane[1].1["reason"], "declined");

    // The last answers may still be on their way back to the server.
    metric_until(&s, "switchboard_webhook_delivered_total", 0, |v| v >= 14.0).await;
    assert!(metric(&s, "switchboard_webhook_failed_attempts_total", 0).await >= 2.0);
    assert_eq!(
        metric(&s, "switchboard_webhook_given_up_total", 0).await,
        0.0
    );
    assert_eq!(
        metric(&s, "switchboard_webhook_dropped_total", 0).await,
        0.0
    );
    metric_until(&s, "switchboard_webhook_queue", 0, |v| v == 0.0).await;
}

/// A message from `a` to `b` in `room`: the time until `a` has its ack
/// and `b` the message.
async fn round_trip(a: &mut Client, b: &mut Client, room: &str, id: u64) -> Duration {
    let t = Instant::now();
    let ack = a
        .request(json!({"type":"message","room":room,"data":{"n":id}}), id)
        .await;
    assert_eq!(ack["delivered"], 1, "{ack}");
    let got = b.recv_type("message").await;
    assert_eq!(got["data"]["n"], id);
    t.elapsed()
}

#[tokio::test]
async fn a_receiver_down_longer_than_the_queue_holds_costs_signaling_nothing() {
    // Down: it takes connections and never says a word.
    let down = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let down_addr = down.local_addr().expect("addr");
    let held = Arc::new(AtomicUsize::new(0));
    let accepted = held.clone();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((sock, _)) = down.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            open.push(sock);
        }
    });
    const QUEUE: usize = 5;
    let s = server(
        &[format!("http://{down_addr}/hook")],
        &[
            ("SWITCHBOARD_WEBHOOKS__ALLOW_PRIVATE", "true"),
            ("SWITCHBOARD_WEBHOOKS__TIMEOUT_SECS", "1"),
            ("SWITCHBOARD_WEBHOOKS__QUEUE", "5"),
        ],
    )
    .await;
    let mut a = Client::connect(&s.ws_url("")).await;
    let mut b = Client::connect(&s.ws_url("")).await;
    a.join("talk").await;
    b.join("talk").await;
    a.recv_type("other_joined").await;
    // Warm up the path once, then measure while a third peer churns rooms:
    // each cycle makes 4 events that the queue cannot hold.
    round_trip(&mut a, &mut b, "talk", 1).await;
    let mut c = Client::connect(&s.ws_url("")).await;
    const CYCLES: u64 = 40;
    let mut rtts = Vec::new();
    for i in 0..CYCLES {
        let room = format!("churn-{i}");
        c.join(&room).await;
        let left = c.request(json!({"type":"leave","room":room}), i + 1).await;
        assert_eq!(left["type"], "left");
        rtts.push(round_trip(&mut a, &mut b, "talk", 100 + i).await);
    }
    rtts.sort();
    let worst = *rtts.last().expect("samples");
    let median = rtts[rtts.len() / 2];
    eprintln!("round trips while the receiver is down: median {median:?}, worst {worst:?}");
    assert!(
        worst < Duration::from_millis(50),
        "signaling round trips must stay under 50 ms: median {median:?}, worst {worst:?}"
    );

    // Everything past the queue was dropped and counted: 3 events for the
    // pair's room, 4 per churn cycle, QUEUE of them held.
    let made = 3 + 4 * CYCLES as usize;
    let dropped = metric_until(&s, "switchboard_webhook_dropped_total", 0, |v| {
        v >= (made - QUEUE) as f64
    })
    .await;
    assert_eq!(dropped, (made - QUEUE) as f64);
    assert_eq!(
        metric(&s, "switchboard_webhook_queue", 0).await,
        QUEUE as f64
    );
    assert_eq!(
        metric(&s, "switchboard_webhook_delivered_total", 0).await,
        0.0
    );
    metric_until(&s, "switchboard_webhook_failed_attempts_total", 0, |v| {
        v >= 1.0
    })
    .await;
    assert!(held.load(Ordering::SeqCst) >= 1, "the sender did try");
}

#[tokio::test]
async fn a_receiver_on_a_private_address_is_refused_without_allow_private() {
    let rx = Receiver::start(|_| Answer::Slow).await;
    let by_name = format!("http://localhost:{}/by-name", rx.addr.port());
    let s = server(
        &[rx.url("/by-ip"), by_name],
        &[("SWITCHBOARD_WEBHOOKS__RETRY_SECS", "0")],
    )
    .await;
    let mut a = Client::connect(&s.ws_url("")).await;
    a.join("r").await;
    for target in [0, 1] {
        metric_until(&s, "switchboard_webhook_refused_total", target, |v| {
            v >= 1.0
        })
        .await;
        // retry_secs = 0: one attempt each, then given up.
        metric_until(&s, "switchboard_webhook_given_up_total", target, |v| {
            v >= 2.0
        })
        .await;
        assert_eq!(
            metric(&s, "switchboard_webhook_delivered_total", target).await,
            0.0
        );
    }
    assert!(
        rx.hits().is_empty(),
        "no request reached the receiver: {:?}",
        rx.hits()
    );
    assert_eq!(rx.count.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let rx = Receiver::start(|_| Answer::Redirect).await;
    let s = server(
        &[rx.url("/hook")],
        &[
            ("SWITCHBOARD_WEBHOOKS__ALLOW_PRIVATE", "true"),
            ("SWITCHBOARD_WEBHOOKS__RETRY_SECS", "0"),
        ],
    )
    .await;
    let mut a = Client::connect(&s.ws_url("")).await;
    a.join("r").await;
    metric_until(&s, "switchboard_webhook_given_up_total", 0, |v| v >= 2.0).await;
    assert_eq!(
        metric(&s, "switchboard_webhook_delivered_total", 0).await,
        0.0
    );
    let hits = rx.hits();
    assert_eq!(hits.len(), 2, "one attempt per event: {hits:#?}");
    assert!(
        hits.iter().all(|h| h.path == "/hook"),
        "the redirect to /internal was not followed: {hits:#?}"
    );
}

#[tokio::test]
async fn a_bad_webhook_url_is_refused_at_start() {
    for (url, secret) in [
        ("ftp://127.0.0.1/hook", SECRET),
        ("http://user:pw@example.com/", SECRET),
        ("http://127.0.0.1/hook", ""),
    ] {
        let out = tokio::process::Command::new(BIN)
            .arg("--print-config")
            .env("SWITCHBOARD_WEBHOOKS__URLS", format!("[\"{url}\"]"))
            .env("SWITCHBOARD_WEBHOOKS__SECRET", secret)
            .output()
            .await
            .expect("runs");
        assert!(!out.status.success(), "{url} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("webhooks"), "the error names the key: {err}");
    }
}

#[tokio::test]
async fn an_https_receiver_must_have_a_certificate_the_system_trusts() {
    // A self-signed certificate: the TLS handshake must fail, so no event
    // goes to a receiver that cannot prove who it is.
    let tls = switchboard::tls::server_config(&switchboard::config::TlsConfig {
        self_signed: true,
        ..Default::default()
    })
    .expect("a certificate")
    .expect("TLS on");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let handshakes = Arc::new(AtomicUsize::new(0));
    let (c, h) = (connections.clone(), handshakes.clone());
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            if let Ok(Ok(_)) = tokio::time::timeout(WAIT, acceptor.accept(sock)).await {
                h.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let s = server(
        &[format!("https://localhost:{port}/hook")],
        &[
            ("SWITCHBOARD_WEBHOOKS__ALLOW_PRIVATE", "true"),
            ("SWITCHBOARD_WEBHOOKS__RETRY_SECS", "0"),
        ],
    )
    .await;
    let mut a = Client::connect(&s.ws_url("")).await;
    a.join("r").await;
    metric_until(&s, "switchboard_webhook_given_up_total", 0, |v| v >= 2.0).await;
    assert_eq!(
        metric(&s, "switchboard_webhook_delivered_total", 0).await,
        0.0
    );
    assert!(connections.load(Ordering::SeqCst) >= 1, "TLS was tried");
    assert_eq!(handshakes.load(Ordering::SeqCst), 0, "and refused");
}

#[tokio::test]
async fn a_hanging_receiver_holds_back_no_other() {
    let hanging = Receiver::start(|_| Answer::Hang).await;
    let good = Receiver::start(|_| Answer::Slow).await;
    let s = server(
        &[hanging.url("/hook"), good.url("/hook")],
        &[
            ("SWITCHBOARD_WEBHOOKS__ALLOW_PRIVATE", "true"),
            ("SWITCHBOARD_WEBHOOKS__TIMEOUT_SECS", "30"),
        ],
    )
    .await;
    let t = Instant::now();
    let mut a = Client::connect(&s.ws_url("")).await;
    let peer = a.peer();
    a.join("r").await;
    a.close(1000).await;
    // All four events of the room, one after the other at 150 ms each, long
    // before the hanging receiver's first attempt times out.
    good.until(
        Duration::from_secs(10),
        "the good receiver's events",
        |hits| lanes(hits).get("room:r").is_some_and(|l| l.len() == 4),
    )
    .await;
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let got = lanes(&good.hits());
    assert_eq!(
        names(&got["room:r"]),
        [
            "room_started".to_owned(),
            format!("peer_joined:{peer}"),
            format!("peer_left:{peer}"),
            "room_finished".to_owned()
        ]
    );
    // The hanging one got the room's first event and waits on it.
    assert_eq!(hanging.hits().len(), 1, "{:#?}", hanging.hits());
}

mod turn_support;

#[tokio::test]
async fn turn_allocations_are_announced_when_made_and_when_they_end() {
    let rx = Receiver::start(|_| Answer::Slow).await;
    let s = server(
        &[rx.url("/hook")],
        &[
            ("SWITCHBOARD_WEBHOOKS__ALLOW_PRIVATE", "true"),
            ("SWITCHBOARD_TURN__USERS", "{alice=\"alice-pw\"}"),
        ],
    )
    .await;
    let turn_udp: SocketAddr = s.ready["turn_udp"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("READY names the TURN UDP listener");
    let mut alloc =
        turn_support::TurnClient::new(turn_support::Conn::udp(turn_udp).await, "alice", "alice-pw");
    let relayed = alloc.allocate().await.expect("allocate");
    // A Refresh with lifetime 0 deletes it.
    let gone = alloc
        .ask(switchboard_stun::Method::REFRESH, |m| {
            m.add_lifetime(0);
        })
        .await;
    assert!(turn_support::is_success(&gone), "the delete succeeds");

    let of = |hits: &[Hit], name: &str| {
        hits.iter()
            .filter_map(|h| serde_json::from_str::<Value>(&h.body).ok())
            .filter(|v| v["event"] == name)
            .collect::<Vec<_>>()
    };
    rx.until(WAIT, "allocation_created and allocation_ended", |hits| {
        !of(hits, "allocation_created").is_empty() && !of(hits, "allocation_ended").is_empty()
    })
    .await;
    let hits = rx.hits();
    for h in &hits {
        assert_eq!(h.signature, expected_signature(&h.body), "signed");
    }
    let created = &of(&hits, "allocation_created")[0];
    let ended = &of(&hits, "allocation_ended")[0];
    assert_eq!(created["username"], "alice");
    assert_eq!(created["relayed"], relayed.to_string());
    assert_eq!(ended["reason"], "deleted");
    assert_eq!(
        created["allocation"], ended["allocation"],
        "{created} {ended}"
    );
    let order: Vec<&str> = hits
        .iter()
        .filter_map(|h| serde_json::from_str::<Value>(&h.body).ok())
        .filter_map(|v| v["event"].as_str().map(str::to_owned))
        .filter(|e| e.starts_with("allocation_"))
        .map(|e| {
            if e == "allocation_created" {
                "created"
            } else {
                "ended"
            }
        })
        .collect();
    assert_eq!(order, ["created", "ended"], "in order");
}
