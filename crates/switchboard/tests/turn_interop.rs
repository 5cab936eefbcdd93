//! Interop with coturn's own test clients: `turnutils_uclient` relays
//! through our server to `turnutils_peer` (both from Debian's `coturn`
//! package), over UDP, TCP and TLS, with static and REST credentials, at a
//! paced rate, and every message must come back.

mod turn_support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use turn_support::*;

const UCLIENT: &str = "turnutils_uclient";
const CLIENTS: u32 = 4;
const MESSAGES: u32 = 150;

/// True when the coturn tools are there; otherwise skips loudly, except in
/// CI where their absence is a failure.
fn coturn_available() -> bool {
    if have(UCLIENT) && have(PEER) {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{UCLIENT}/{PEER} missing in CI: apt-get install -y coturn"
    );
    eprintln!(
        "\n*** SKIPPING coturn interop: {UCLIENT}/{PEER} not installed (apt-get install -y coturn) ***\n"
    );
    false
}

/// Totals from uclient's last report.
#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    sent: u64,
    received: u64,
    lost_line: bool,
}

fn parse_totals(output: &str) -> Totals {
    let mut totals = Totals::default();
    for line in output.lines() {
        if let Some(rest) = line.split("start_mclient: tot_send_msgs=").nth(1)
            && let Some((sent, received)) = rest.split_once(", tot_recv_msgs=")
            && let (Ok(sent), Ok(received)) = (sent.trim().parse(), received.trim().parse())
        {
            totals.sent = sent;
            totals.received = received;
        }
        if line.contains("Total lost packets 0 (0.000000%)") {
            totals.lost_line = true;
        }
    }
    totals
}

async fn run_uclient(args: &[&str], server: SocketAddr, peer: SocketAddr) -> String {
    let port = server.port().to_string();
    let peer_port = peer.port().to_string();
    let messages = MESSAGES.to_string();
    let clients = CLIENTS.to_string();
    let mut cmd = Command::new(UCLIENT);
    // -z 5: one message per 5 ms per client, a paced rate that a loaded CI
    // machine keeps up with.
    cmd.args(["-n", &messages, "-m", &clients, "-l", "180", "-z", "5"])
        .args(["-p", &port, "-e", "127.0.0.1", "-r", &peer_port])
        .args(args)
        .arg("127.0.0.1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("uclient finishes in time")
        .expect("uclient runs");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text
}

async fn check(label: &str, args: &[&str], server: SocketAddr, peer: SocketAddr) {
    let output = run_uclient(args, server, peer).await;
    let totals = parse_totals(&output);
    let expected = u64::from(CLIENTS * MESSAGES);
    let tail: Vec<&str> = output.lines().rev().take(15).collect();
    assert_eq!(
        totals,
        Totals {
            sent: expected,
            received: expected,
            lost_line: true
        },
        "{label}: uclient output (last lines, reversed):\n{}",
        tail.join("\n")
    );
}

fn interop_settings(relay_ports: &str) -> switchboard::turn::TurnSettings {
    let mut s = settings();
    s.allowed_peer_ranges = vec!["127.0.0.0/8".into()];
    s.rest_secret = Some("interop-secret".into());
    // RTP/RTCP pairs reserve the port after an even relay port. The
    // server only hands out even ports whose successor it could bind too
    // (uclient's probe allocations outlive their pairs and keep odd ports
    // of otherwise free pairs; a pair without its reservation made uclient
    // ask for token 0 and fail with 508). Disjoint ranges outside Linux's
    // ephemeral range (32768-60999) keep the two servers of this file and
    // other processes out of each other's way all the same.
    s.relay_ports = relay_ports.parse().expect("port range");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_uclient_over_udp_and_tcp() {
    if !coturn_available() {
        return;
    }
    let server = start(&interop_settings("61000-62999"), None).await;
    let (_peer, peer) = start_echo_peer().await;
    let udp = server.service.local_udp().unwrap();
    // Without -c uclient allocates RTP/RTCP pairs: EVEN-PORT with the R bit,
    // then RESERVATION-TOKEN; -c leaves the RTCP allocation out.
    check(
        "UDP, static user, RTP+RTCP pairs (EVEN-PORT reservations)",
        &["-u", "alice", "-w", "alice-pw"],
        udp,
        peer,
    )
    .await;
    check(
        "TCP, static user, RTP+RTCP pairs",
        &["-t", "-u", "alice", "-w", "alice-pw"],
        udp,
        peer,
    )
    .await;
    check(
        "UDP, REST secret",
        &["-c", "-W", "interop-secret", "-u", "uclient"],
        udp,
        peer,
    )
    .await;
    check(
        "TCP, REST secret",
        &["-c", "-t", "-W", "interop-secret", "-u", "uclient"],
        udp,
        peer,
    )
    .await;
    check(
        "UDP, client to client, Send",
        &["-c", "-y", "-s", "-u", "alice", "-w", "alice-pw"],
        udp,
        peer,
    )
    .await;
    let m = server.service.metrics();
    assert!(m.allocations_created >= u64::from(CLIENTS) * 6, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_uclient_over_tls() {
    if !coturn_available() {
        return;
    }
    let (server_tls, _) = tls_pair();
    let server = start(&interop_settings("63000-64999"), Some(server_tls)).await;
    let (_peer, peer) = start_echo_peer().await;
    let tls = server.service.local_tls().unwrap();
    check(
        "TLS, static user",
        &["-c", "-t", "-S", "-u", "alice", "-w", "alice-pw"],
        tls,
        peer,
    )
    .await;
}

#[test]
fn parses_uclient_totals() {
    let text = "7: : start_mclient: msz=4, tot_send_msgs=691, tot_recv_msgs=690, tot_send_bytes ~ 1\n\
                7: : start_mclient: tot_send_msgs=800, tot_recv_msgs=799\n\
                7: : Total lost packets 1 (0.125000%), total send dropped 0 (0.000000%)\n";
    assert_eq!(
        parse_totals(text),
        Totals {
            sent: 800,
            received: 799,
            lost_line: false
        }
    );
}
