//! The relay hot path (Send indication in, ChannelData and Data indication out) and the
//! authenticated request path, per message.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchboard_stun::attr::{Data, XorPeerAddress};
use switchboard_stun::{
    ChannelData, Class, DataIndicationPrefix, Message, MessageBuilder, MessageType, Method,
    TransactionId, long_term_key_md5,
};

fn relay(c: &mut Criterion) {
    let peer: SocketAddr = "198.51.100.20:40000".parse().unwrap();
    let tid = TransactionId::new([7; 12]);
    let payload = vec![0xAB; 1200];
    let mut send = Vec::new();
    let mut b = MessageBuilder::new(&mut send, MessageType::SEND_INDICATION, tid);
    b.add_xor_peer_address(peer).add_data(&payload);
    b.finish().unwrap();
    let mut cd = Vec::new();
    ChannelData::new(0x4000, &payload)
        .unwrap()
        .encode(&mut cd, false);

    let mut g = c.benchmark_group("relay");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse Send indication, 1200 B", |b| {
        b.iter(|| {
            let msg = Message::parse(black_box(&send)).unwrap();
            let peer = msg.get::<XorPeerAddress>().unwrap().unwrap();
            let data = msg.get::<Data>().unwrap().unwrap();
            black_box((peer, data.0.len()))
        })
    });
    g.bench_function("parse ChannelData, 1200 B", |b| {
        b.iter(|| {
            let f = ChannelData::parse(black_box(&cd)).unwrap();
            black_box((f.channel(), f.data().len()))
        })
    });
    g.bench_function("Data indication prefix", |b| {
        b.iter(|| black_box(DataIndicationPrefix::new(tid, black_box(peer), 1200).unwrap()))
    });
    let mut out = Vec::with_capacity(1500);
    g.bench_function("build Data indication, 1200 B, reused buffer", |b| {
        b.iter(|| {
            out.clear();
            let mut m = MessageBuilder::new(&mut out, MessageType::DATA_INDICATION, tid);
            m.add_xor_peer_address(peer).add_data(black_box(&payload));
            black_box(m.finish().unwrap().len())
        })
    });
    g.finish();
}

fn requests(c: &mut Criterion) {
    let key = long_term_key_md5("1700000000:alice", "switchboard", "c2VjcmV0");
    let tid = TransactionId::new([9; 12]);
    let mut req = Vec::new();
    let mut b = MessageBuilder::new(
        &mut req,
        MessageType::new(Method::ALLOCATE, Class::Request),
        tid,
    );
    b.add_raw(
        switchboard_stun::AttrType::REQUESTED_TRANSPORT,
        &[17, 0, 0, 0],
    )
    .add_username("1700000000:alice")
    .add_realm("switchboard")
    .add_nonce(b"0123456789abcdef0123456789abcdef")
    .add_message_integrity(&key)
    .add_fingerprint();
    b.finish().unwrap();
    let from: SocketAddr = "203.0.113.9:4242".parse().unwrap();

    let mut g = c.benchmark_group("requests");
    g.throughput(Throughput::Elements(1));
    g.bench_function("long-term key (MD5)", |b| {
        b.iter(|| {
            black_box(long_term_key_md5(
                black_box("1700000000:alice"),
                "switchboard",
                "c2VjcmV0",
            ))
        })
    });
    g.bench_function("parse + verify Allocate (HMAC-SHA1 + CRC)", |b| {
        b.iter(|| {
            let msg = Message::parse(black_box(&req)).unwrap();
            msg.verify_message_integrity(&key).unwrap();
            msg.verify_fingerprint().unwrap();
        })
    });
    let mut out = Vec::with_capacity(256);
    g.bench_function("build Binding response + FINGERPRINT", |b| {
        b.iter(|| {
            out.clear();
            let mut m = MessageBuilder::new(&mut out, MessageType::BINDING_RESPONSE, tid);
            m.add_xor_mapped_address(black_box(from)).add_fingerprint();
            black_box(m.finish().unwrap().len())
        })
    });
    g.finish();
}

criterion_group!(benches, relay, requests);
criterion_main!(benches);
