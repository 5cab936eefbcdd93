//! `/metrics` read by Prometheus's own checker (`promtool check metrics`,
//! Debian's `prometheus` package): it parses the text format and lints it
//! (every metric has `# HELP`, counters end in `_total`, ...), after the
//! server has done a bit of everything so that the lazily registered
//! metrics are there too.

mod turn_support;

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::json;
use switchboard_testkit::{Client, Server, http_get};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; ./test.sh installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("writing to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[tokio::test]
async fn every_metric_passes_promtool_and_the_gauges_are_there() {
    // Webhooks to a port nobody listens on, so their metrics exist too.
    let s = Server::start(
        BIN,
        &[
            ("SWITCHBOARD_TURN__USERS", "{alice=\"alice-pw\"}"),
            (
                "SWITCHBOARD_WEBHOOKS__URLS",
                "[\"http://127.0.0.1:9/hook\"]",
            ),
            (
                "SWITCHBOARD_WEBHOOKS__SECRET",
                "a webhook secret, 32 bytes long!",
            ),
            ("SWITCHBOARD_WEBHOOKS__ALLOW_PRIVATE", "true"),
        ],
        &[],
    )
    .await;
    let mut a = Client::connect(&s.ws_url("")).await;
    let mut b = Client::connect(&s.ws_url("")).await;
    a.join("r").await;
    b.join("r").await;
    a.recv_type("other_joined").await;
    let ack = a
        .request(json!({"type":"message","room":"r","data":{"x":1}}), 1)
        .await;
    assert_eq!(ack["delivered"], 1);
    let err = a.request(json!({"type":"no-such-type"}), 2).await;
    assert_eq!(err["type"], "error");
    let (status, _) = http_get(&s.http, "/socket.io/?EIO=4&transport=polling", &[]).await;
    assert_eq!(status, 200);
    let turn_udp: std::net::SocketAddr = s.ready["turn_udp"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("READY names the TURN UDP listener");
    let mut alloc =
        turn_support::TurnClient::new(turn_support::Conn::udp(turn_udp).await, "alice", "alice-pw");
    alloc.allocate().await.expect("allocate");

    let (status, text) = http_get(&s.http, "/metrics", &[]).await;
    assert_eq!(status, 200);
    let (ok, said) = promtool_check(&text);
    assert!(ok, "promtool check metrics: {said}\n{text}");
    assert!(said.trim().is_empty(), "promtool has remarks: {said}");
    for family in [
        "switchboard_rooms",
        "switchboard_sessions",
        "switchboard_sessions_connected",
        "switchboard_messages_total",
        "switchboard_errors_total",
        "switchboard_webhook_queue",
    ] {
        let help = format!("# HELP {family} ");
        assert!(text.contains(&help), "{family} has no HELP:\n{text}");
    }
    let gauge = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(gauge("switchboard_rooms"), Some(1.0), "{text}");
    assert_eq!(gauge("switchboard_sessions_connected"), Some(2.0), "{text}");
    assert_eq!(gauge("switchboard_turn_allocations"), Some(1.0), "{text}");
}
