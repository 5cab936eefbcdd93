//! A flood of datagrams the core drops (garbage, unknown sources, unknown ufrags, a known
//! peer past its budget) allocates nothing: its cost per datagram stays a few comparisons
//! and a hash lookup. Counted by a global allocator, on this test's thread only.
// A counting allocator needs `unsafe impl GlobalAlloc`; it only forwards to `System`.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use common::{Net, Publish};
use switchboard_sfu::{DatagramError, SfuConfig};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
    }
}

// SAFETY: every call is passed to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

fn stun_for(ufrag: &str) -> Vec<u8> {
    let username = format!("{ufrag}:cli");
    let mut attrs = vec![0x00, 0x06, 0x00, username.len() as u8];
    attrs.extend_from_slice(username.as_bytes());
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    let mut m = vec![0x00, 0x01, 0x00, attrs.len() as u8, 0x21, 0x12, 0xa4, 0x42];
    m.extend_from_slice(&[9; 12]);
    m.extend_from_slice(&attrs);
    m
}

#[test]
fn dropped_datagrams_allocate_nothing() {
    let mut config = SfuConfig::default();
    // A small budget, never ended: the known peer's flood is dropped at once.
    config.peer_max_datagram_rate = 200;
    config.peer_flood_timeout = Duration::ZERO;
    let mut net = Net::with_config(config);
    net.join("a", "r", Publish::Audio);
    net.join("b", "r", Publish::Audio);
    assert!(net.run_until(Duration::from_secs(5), |n| {
        n.clients.iter().all(|c| c.connected)
    }));
    let stranger: SocketAddr = "10.66.0.1:4000".parse().unwrap();
    let stranger6: SocketAddr = "[2001:db8::9]:4000".parse().unwrap();
    let a = net.client("a").addr;
    let now = net.now;
    // Exhaust a's budget first (those go to its Rtc, which may allocate).
    let junk = vec![0x80; 200];
    for _ in 0..1000 {
        if net.sfu.handle_datagram(now, a, any(), &junk) == Err(DatagramError::OverBudget) {
            break;
        }
    }
    while net.sfu.poll_transmit().is_some() {}

    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff; 1200],
        vec![64; 300],
        vec![0x80; 11],
        vec![22; 200],
        vec![0x80; 1200],
        stun_for("nobody"),
        stun_for("x"),
        vec![
            0, 1, 0, 0xff, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    ];
    let sfu = &mut net.sfu;
    let mut errors = [0u64; 3];
    let count = allocations(|| {
        for i in 0..10_000 {
            let bytes = &garbage[i % garbage.len()];
            let from = if i % 2 == 0 { stranger } else { stranger6 };
            match sfu.handle_datagram(now, from, any(), bytes) {
                Err(DatagramError::Garbage) => errors[0] += 1,
                Err(DatagramError::Unrouted) => errors[1] += 1,
                _ => panic!("a stranger's datagram was routed"),
            }
            if sfu.handle_datagram(now, a, any(), &junk) == Err(DatagramError::OverBudget) {
                errors[2] += 1;
            }
        }
    });
    assert_eq!(count, 0, "allocations for 20,000 dropped datagrams");
    assert!(errors[0] > 3_000 && errors[1] > 3_000, "{errors:?}");
    assert_eq!(errors[2], 10_000);
    // a still works once its budget refills.
    let since = net.now;
    net.run(Duration::from_secs(1));
    assert!(net.client("b").frames_from("a", since) > 30);
}

fn any() -> SocketAddr {
    "0.0.0.0:3480".parse().unwrap()
}
