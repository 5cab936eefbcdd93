//! Rough throughput of the core alone: `rooms` rooms of `peers` peers, every
//! peer sending messages with an id (so each costs a parse, one fan-out
//! serialization, `peers - 1` deliveries and an ack), outputs written out
//! with `write_to` as the shell does.
//!
//! `cargo run --release -p switchboard-signal --example fanout [rooms] [peers] [rounds]`
//! (or `... --example fanout idle` for the memory of idle sessions)

use std::time::{Duration, Instant};

use switchboard_signal::{Config, ConnId, Face, Identity, Output, SignalCore};

/// Resident set size in bytes, from /proc (Linux only; 0 elsewhere).
fn rss() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Memory of idle sessions: connected, in one two-peer room each, the
/// `welcome`, `joined` and `other_joined` sent and kept for replay.
fn idle(n: usize) {
    let mut core = SignalCore::new(Config::default(), [2; 32]);
    let now = Instant::now();
    let before = rss();
    for i in 0..n {
        let conn = ConnId(i as u64);
        core.connect(now, conn, Identity::default(), Face::Native, |_| Vec::new());
        let join = format!(r#"{{"type":"join","room":"idle-{}"}}"#, i / 2);
        if std::env::var_os("NOJOIN").is_none() {
            core.handle_text(now, conn, &join);
        }
        while core.poll_output().is_some() {}
    }
    let after = rss();
    println!(
        "{n} idle sessions: {} bytes of RSS each ({:?})",
        (after - before) / n,
        core.stats()
    );
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("idle") {
        idle(100_000);
        return;
    }
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().ok());
    let rooms = args.next().flatten().unwrap_or(500);
    let peers = args.next().flatten().unwrap_or(4);
    let rounds = args.next().flatten().unwrap_or(50);
    let mut core = SignalCore::new(
        Config {
            rate_per_sec: 0,
            replay_frames: std::env::var("REPLAY")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1024),
            ..Config::default()
        },
        [1; 32],
    );
    let mut now = Instant::now();
    let mut conns = Vec::new();
    let mut wire = Vec::with_capacity(512);
    let mut drain = |core: &mut SignalCore| {
        let mut n = 0u64;
        while let Some(out) = core.poll_output() {
            if let Output::Frame { frame, .. } = out {
                wire.clear();
                frame.write_to(&mut wire);
                n += 1;
            }
        }
        n
    };
    for r in 0..rooms {
        for p in 0..peers {
            let conn = ConnId((r * peers + p) as u64);
            core.connect(now, conn, Identity::default(), Face::Native, |_| Vec::new());
            core.handle_text(
                now,
                conn,
                &format!(r#"{{"type":"join","room":"room-{r}"}}"#),
            );
            conns.push(conn);
        }
    }
    drain(&mut core);
    let text = r#"{"type":"message","room":"ROOM","id":17,"data":{"kind":"candidate","candidate":{"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host","sdpMid":"0","sdpMLineIndex":0}}}"#;
    let texts: Vec<String> = (0..rooms)
        .map(|r| text.replace("ROOM", &format!("room-{r}")))
        .collect();
    let start = Instant::now();
    let mut frames = 0;
    for _ in 0..rounds {
        now += Duration::from_millis(1);
        for (i, &conn) in conns.iter().enumerate() {
            core.handle_text(now, conn, &texts[i / peers]);
            frames += drain(&mut core);
        }
    }
    let elapsed = start.elapsed();
    let messages = (rounds * conns.len()) as f64;
    println!(
        "{rooms} rooms x {peers} peers, {rounds} rounds: {messages} messages, {frames} frames out in {elapsed:?}: \
         {:.0} messages/s, {:.0} ns/frame",
        messages / elapsed.as_secs_f64(),
        elapsed.as_nanos() as f64 / frames as f64
    );
    println!("{:?}", core.stats());
}
