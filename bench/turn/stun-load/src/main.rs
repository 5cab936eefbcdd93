//! Load for bench/turn: N UDP sockets, each keeping a window of messages in
//! flight (or paced at a rate), for a fixed time; prints
//! `sent=N answered=N rate=N/s loss=X%`.
//!
//! One engine drives every mode, so a TURN server and the bare UDP forwarder
//! see the same traffic:
//! - default: STUN Binding requests to a STUN/TURN server;
//! - `--echo BYTES`: raw payloads through the UDP forwarder to an echo peer;
//! - `--turn USER:PASS`: each socket allocates a UDP relay (long-term
//!   credentials), binds channel 0x4000+i to the echo peer `--peer`, then
//!   sends `--echo BYTES` payloads (default 200) as ChannelData, counted when
//!   they come back as ChannelData on that channel; the allocations are
//!   deleted at the end.
//!
//! Closed loop (at most `--window` messages in flight per socket) unless
//! `--rate` paces the total. `--threads` threads share the sockets, each with
//! one epoll and batched `sendmmsg`/`recvmmsg`, so that the tool is not what
//! saturates first.

mod engine;
mod turn;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use engine::{Flow, Kind, MAX_PAYLOAD, Plan};

const USAGE: &str = "usage: stun-load ADDR [--sockets 8] [--secs 5] [--window 32] [--echo BYTES] \
[--turn USER:PASS] [--peer 127.0.0.1:3480] [--rate MSGS_PER_SEC] [--threads 1]";
/// Allocations outlive the run only if it is shorter than the permission
/// lifetime (300 s): the tool does not refresh them while it loads.
const MAX_TURN_SECS: u64 = 280;
/// Asked for on every socket so that answers are not dropped at the tool.
const RCVBUF: i32 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error("{0}\n{USAGE}")]
    Usage(String),
    #[error("socket setup: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding a request: {0}")]
    Encode(#[from] switchboard_stun::EncodeError),
    #[error("socket {sock}: {what}: {source}")]
    Transaction {
        sock: usize,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("socket {sock}: no answer to {what} after {tries} tries {rto_ms} ms apart")]
    Timeout {
        sock: usize,
        what: &'static str,
        tries: usize,
        rto_ms: u64,
    },
    #[error("socket {sock}: {what} refused: {code} {reason}")]
    Rejected {
        sock: usize,
        what: &'static str,
        code: u16,
        reason: String,
    },
    #[error("socket {sock}: {what}: {detail}")]
    Protocol {
        sock: usize,
        what: &'static str,
        detail: String,
    },
}

struct Args {
    target: SocketAddr,
    sockets: usize,
    secs: u64,
    window: u64,
    echo: Option<usize>,
    turn: Option<(String, String)>,
    peer: SocketAddr,
    rate: Option<f64>,
    threads: usize,
}

fn parse<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, LoadError> {
    v.parse()
        .map_err(|_| LoadError::Usage(format!("bad value for {name}: {v:?}")))
}

fn parse_args(args: &[String]) -> Result<Args, LoadError> {
    let target = args
        .get(1)
        .ok_or_else(|| LoadError::Usage("missing ADDR".into()))?;
    let mut a = Args {
        target: parse("ADDR", target)?,
        sockets: 8,
        secs: 5,
        window: 32,
        echo: None,
        turn: None,
        peer: SocketAddr::from(([127, 0, 0, 1], 3480)),
        rate: None,
        threads: 1,
    };
    let mut rest = args[2..].iter();
    while let Some(name) = rest.next() {
        let v = rest
            .next()
            .ok_or_else(|| LoadError::Usage(format!("{name} needs a value")))?;
        match name.as_str() {
            "--sockets" => a.sockets = parse(name, v)?,
            "--secs" => a.secs = parse(name, v)?,
            "--window" => a.window = parse(name, v)?,
            "--echo" => a.echo = Some(parse(name, v)?),
            "--peer" => a.peer = parse(name, v)?,
            "--rate" => a.rate = Some(parse(name, v)?),
            "--threads" => a.threads = parse(name, v)?,
            "--turn" => {
                let (u, p) = v
                    .split_once(':')
                    .ok_or_else(|| LoadError::Usage("--turn wants USER:PASS".into()))?;
                a.turn = Some((u.to_owned(), p.to_owned()));
            }
            _ => return Err(LoadError::Usage(format!("unknown option {name}"))),
        }
    }
    let bad = |m: &str| Err(LoadError::Usage(m.into()));
    if a.sockets == 0 || a.sockets > 0x1000 {
        return bad("--sockets must be 1..=4096 (one TURN channel each)");
    }
    if a.window == 0 || a.secs == 0 || a.threads == 0 {
        return bad("--window, --secs and --threads must be at least 1");
    }
    if a.echo.is_some_and(|e| !(8..=MAX_PAYLOAD).contains(&e)) {
        return bad("--echo must be 8..=1400 bytes (the first 8 carry a sequence number)");
    }
    if a.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return bad("--rate must be a positive number of messages per second");
    }
    if a.turn.is_some() && a.secs > MAX_TURN_SECS {
        return bad("--secs with --turn must be at most 280 (allocations are not refreshed)");
    }
    Ok(a)
}

fn set_rcvbuf(sock: &UdpSocket) {
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt with a live i32 of the declared size.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&RCVBUF as *const i32).cast(),
                size_of::<i32>() as u32,
            )
        };
        // SO_RCVBUFFORCE needs CAP_NET_ADMIN; SO_RCVBUF is capped by rmem_max.
        if r == 0 {
            return;
        }
    }
}

/// Local ports tried per socket when the server still has an allocation
/// on the first one.
const PORT_RETRIES: usize = 5;

fn fresh_socket(target: SocketAddr) -> Result<UdpSocket, LoadError> {
    let local = if target.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    let sock = UdpSocket::bind(local)?;
    sock.connect(target)?;
    set_rcvbuf(&sock);
    Ok(sock)
}

fn open(a: &Args) -> Result<Vec<Flow>, LoadError> {
    (0..a.sockets)
        .map(|i| {
            Ok(Flow::new(
                fresh_socket(a.target)?,
                i as u32,
                switchboard_stun::CHANNEL_MIN + i as u16,
            ))
        })
        .collect()
}

/// Deletes the allocations made so far; reports (but survives) failures.
fn release_all(flows: &[Flow], auths: &mut [turn::Auth]) -> bool {
    let mut ok = true;
    for (f, auth) in flows.iter().zip(auths.iter_mut()) {
        if let Err(e) = turn::release(&f.sock, f.id as usize, auth) {
            eprintln!("stun-load: {e}");
            ok = false;
        }
    }
    ok
}

fn run() -> Result<bool, LoadError> {
    let args: Vec<String> = std::env::args().collect();
    let a = parse_args(&args)?;
    let mut flows = open(&a)?;
    let mut auths = Vec::new();
    let kind = match (&a.turn, a.echo) {
        (Some((user, pass)), echo) => {
            for f in &mut flows {
                let i = f.id as usize;
                let mut allocated = turn::allocate(&f.sock, i, user, pass);
                // A 5-tuple still allocated by an earlier client (uclient
                // never deletes its allocations) answers 437: take another
                // local port.
                for _ in 0..PORT_RETRIES {
                    let mismatch = matches!(
                        &allocated,
                        Err(LoadError::Rejected { code, .. })
                            if *code == switchboard_stun::attr::ErrorCode::ALLOCATION_MISMATCH
                    );
                    if !mismatch {
                        break;
                    }
                    f.sock = fresh_socket(a.target)?;
                    allocated = turn::allocate(&f.sock, i, user, pass);
                }
                let step = allocated.and_then(|(mut auth, _relayed)| {
                    turn::channel_bind(&f.sock, i, &mut auth, f.channel, a.peer).map(|()| auth)
                });
                match step {
                    Ok(auth) => auths.push(auth),
                    Err(e) => {
                        release_all(&flows, &mut auths);
                        return Err(e);
                    }
                }
            }
            Kind::Channel(echo.unwrap_or(200))
        }
        (None, Some(echo)) => Kind::Echo(echo),
        (None, None) => Kind::Binding,
    };
    let plan = Plan {
        kind,
        window: a.window,
        rate_per_flow: a.rate.map(|r| r / a.sockets as f64),
        duration: Duration::from_secs(a.secs),
    };
    let loaded = engine::run(&mut flows, &plan, a.threads.min(a.sockets));
    let released = release_all(&flows, &mut auths);
    let (t, elapsed) = loaded?;
    let loss = if t.sent > 0 {
        100.0 * t.sent.saturating_sub(t.answered) as f64 / t.sent as f64
    } else {
        0.0
    };
    let rate = t.answered as f64 / elapsed.as_secs_f64().max(1e-3);
    println!(
        "sent={} answered={} rate={rate:.0}/s loss={loss:.3}%",
        t.sent, t.answered
    );
    if t.answered == 0 {
        eprintln!("stun-load: nothing came back from {}", a.target);
    }
    Ok(released && t.answered > 0)
}

fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("stun-load: {e}");
            std::process::exit(if matches!(e, LoadError::Usage(_)) {
                2
            } else {
                1
            });
        }
    }
}
