//! STUN Binding load: N sockets, each a thread keeping a window of requests
//! in flight, for a fixed time. Prints sent, answered, rate and loss.
//!
//! Also an echo mode for the UDP forwarder floor: plain payloads instead of
//! Binding requests, counted when they come back.
//!
//! usage: stun-load ADDR [--sockets 8] [--secs 5] [--window 32] [--echo BYTES]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn binding_request(id: u64, out: &mut [u8; 20]) {
    out[..2].copy_from_slice(&0x0001u16.to_be_bytes());
    out[2..4].copy_from_slice(&0u16.to_be_bytes());
    out[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    out[8..12].copy_from_slice(&0x5354_554Eu32.to_be_bytes());
    out[12..20].copy_from_slice(&id.to_be_bytes());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(target) = args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()) else {
        eprintln!("usage: stun-load ADDR [--sockets 8] [--secs 5] [--window 32] [--echo BYTES]");
        std::process::exit(2);
    };
    let sockets = arg(&args, "--sockets", 8);
    let secs = arg(&args, "--secs", 5);
    let window = arg(&args, "--window", 32);
    let echo = arg(&args, "--echo", 0) as usize;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for s in 0..sockets {
        let (stop, sent, answered) = (stop.clone(), sent.clone(), answered.clone());
        threads.push(std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
            sock.connect(target).expect("connect");
            sock.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
            let mut req = [0u8; 20];
            let payload = vec![0xA5u8; echo.max(1)];
            let mut buf = [0u8; 2048];
            let mut id = s << 40;
            let mut in_flight = 0u64;
            let send = |id: u64, req: &mut [u8; 20]| {
                if echo > 0 {
                    sock.send(&payload).is_ok()
                } else {
                    binding_request(id, req);
                    sock.send(req).is_ok()
                }
            };
            while !stop.load(Ordering::Relaxed) {
                while in_flight < window {
                    id += 1;
                    if send(id, &mut req) {
                        sent.fetch_add(1, Ordering::Relaxed);
                        in_flight += 1;
                    }
                }
                match sock.recv(&mut buf) {
                    Ok(_) => {
                        answered.fetch_add(1, Ordering::Relaxed);
                        in_flight -= 1;
                    }
                    // A lost datagram: give its slot back.
                    Err(_) => in_flight = 0,
                }
            }
            // Drain late answers.
            let deadline = Instant::now() + Duration::from_millis(300);
            while in_flight > 0 && Instant::now() < deadline {
                if sock.recv(&mut buf).is_ok() {
                    answered.fetch_add(1, Ordering::Relaxed);
                    in_flight -= 1;
                }
            }
        }));
    }
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (s, a) = (sent.load(Ordering::Relaxed), answered.load(Ordering::Relaxed));
    let loss = if s > 0 { 100.0 * (s.saturating_sub(a)) as f64 / s as f64 } else { 0.0 };
    println!("sent={s} answered={a} rate={:.0}/s loss={loss:.3}%", a as f64 / elapsed);
}
