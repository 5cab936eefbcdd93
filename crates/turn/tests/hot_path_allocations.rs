//! The relay hot path must not allocate: counted with a global allocator.

// A counting allocator needs `unsafe impl GlobalAlloc`; it only forwards to
// the system allocator.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::*;
use switchboard_stun::attr::ChannelNumber;
use switchboard_stun::{ChannelData, MessageType, Method};

struct Counting;

thread_local! {
    // Only this test's thread counts: the test harness allocates on its own.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn relaying_allocates_nothing_in_steady_state() {
    let mut h = Harness::new(config());
    let mut c = Client::udp("198.51.100.7:4000", "alice", "alice-pw");
    c.allocate(&mut h);
    let relay = addr("10.0.0.2:50001");
    let chan_peer = addr("93.184.216.20:7000");
    let ind_peer = addr("93.184.216.21:7000");
    assert!(is_success(&c.ask(&mut h, Method::CHANNEL_BIND, |b| {
        b.add(&ChannelNumber(0x4000))
            .add_xor_peer_address(chan_peer);
    })));
    assert!(is_success(&c.ask(&mut h, Method::CREATE_PERMISSION, |b| {
        b.add_xor_peer_address(ind_peer);
    })));
    let mut channel_data = Vec::new();
    ChannelData::new(0x4000, &[0xAB; 1000])
        .unwrap()
        .encode(&mut channel_data, false);
    let send = c.signed_with(MessageType::SEND_INDICATION, |b| {
        b.add_xor_peer_address(ind_peer).add_data(&[0xCD; 1000]);
    });
    let payload = [0xEF; 1000];
    let now = h.now;
    let relay_all = |server: &mut switchboard_turn::TurnServer| {
        let mut sent = 0usize;
        server.handle_client(now, UNIX_NOW, c.ft, &channel_data);
        server.handle_client(now, UNIX_NOW, c.ft, &send);
        server.handle_peer(now, relay, chan_peer, &payload);
        server.handle_peer(now, relay, ind_peer, &payload);
        while let Some(t) = server.poll_transmit() {
            sent += t.bytes.len();
        }
        sent
    };
    // Warm up the buffer pool.
    assert!(relay_all(&mut h.server) > 4000);
    let before = allocations();
    let mut total = 0;
    for _ in 0..1000 {
        total += relay_all(&mut h.server);
    }
    let after = allocations();
    assert!(total > 4_000_000);
    assert_eq!(after - before, 0, "allocations on the hot path");
    assert_eq!(h.server.metrics().packets_to_peers, 2002);
}
