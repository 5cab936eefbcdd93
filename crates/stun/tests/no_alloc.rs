//! The relay's hot path allocates nothing: parsing a Send indication or ChannelData, and
//! framing a Data indication or ChannelData into a buffer that already has the capacity.
// A counting allocator needs `unsafe impl GlobalAlloc`; it only forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;

use switchboard_stun::attr::{Data, XorPeerAddress};
use switchboard_stun::{
    ChannelData, Class, DataIndicationPrefix, Message, MessageBuilder, MessageType, Method,
    TransactionId, long_term_key_md5,
};

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made on this thread while running `f`.
fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn hot_path_does_not_allocate() {
    let peer: SocketAddr = "[2001:db8::5]:7000".parse().unwrap();
    let tid = TransactionId::new([1; 12]);
    let payload = vec![0x42u8; 1200];
    let mut send = Vec::new();
    let mut b = MessageBuilder::new(&mut send, MessageType::SEND_INDICATION, tid);
    b.add_xor_peer_address(peer).add_data(&payload);
    b.finish().unwrap();
    let mut cd = Vec::new();
    ChannelData::new(0x4001, &payload)
        .unwrap()
        .encode(&mut cd, true);
    let key = long_term_key_md5("u", "r", "p");
    let mut request = Vec::new();
    let mut b = MessageBuilder::new(
        &mut request,
        MessageType::new(Method::CREATE_PERMISSION, Class::Request),
        tid,
    );
    b.add_xor_peer_address(peer)
        .add_username("u")
        .add_realm("r")
        .add_nonce(b"n")
        .add_message_integrity(&key)
        .add_fingerprint();
    b.finish().unwrap();
    let mut out = Vec::with_capacity(2048);

    let n = allocations_in(|| {
        let msg = Message::parse(&send).unwrap();
        assert_eq!(
            msg.get::<XorPeerAddress>().unwrap(),
            Some(XorPeerAddress(peer))
        );
        assert_eq!(msg.get::<Data>().unwrap().unwrap().0.len(), 1200);

        let frame = ChannelData::parse(&cd).unwrap();
        assert_eq!(frame.channel(), 0x4001);

        let prefix = DataIndicationPrefix::new(tid, peer, frame.data().len()).unwrap();
        assert_eq!(prefix.as_bytes().len(), 48);

        out.clear();
        ChannelData::new(0x4001, frame.data())
            .unwrap()
            .encode(&mut out, true);
        out.clear();
        let mut b = MessageBuilder::new(&mut out, MessageType::DATA_INDICATION, tid);
        b.add_xor_peer_address(peer).add_data(frame.data());
        b.finish().unwrap();

        let msg = Message::parse(&request).unwrap();
        assert_eq!(msg.unknown_comprehension_required().count(), 0);
        msg.verify_message_integrity(&key).unwrap();
        msg.verify_fingerprint().unwrap();
    });
    assert_eq!(n, 0, "the hot path allocated {n} times");
    // The counter does count: a Vec allocates once.
    assert_eq!(
        allocations_in(|| drop(std::hint::black_box(vec![1u8; 10]))),
        1
    );
}
