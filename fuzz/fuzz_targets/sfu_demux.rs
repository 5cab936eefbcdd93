//! The media port of the SFU core (`switchboard_sfu::Sfu::handle_datagram`): arbitrary
//! datagrams from the two peers' addresses, a stranger and an IPv6 source, into a core with
//! two peers of one room that have offered (str0m clients) and been answered, in virtual
//! time. The script picks raw bytes, STUN binding-request framing around a real server
//! ufrag (so that routing by USERNAME and then by source is reached), or bytes whose first
//! byte is forced into the DTLS or RTP range.
//!
//! Checked: no panic; a datagram is either routed (Ok) or dropped with an error and counted
//! in `dropped_datagrams`; `datagrams_in` counts every call; every transmit leaves from the
//! server's media address; no signal goes to anyone but the two peers. At the end both peers
//! leave: no room, peer or timer is left.
#![no_main]

#[path = "../common/input.rs"]
mod input;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use input::Input;
use libfuzzer_sys::fuzz_target;
use str0m::change::SdpOffer;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};
use switchboard_sfu::{MediaSignal, Sfu, SfuConfig};

const SERVER: &str = "192.0.2.1:3480";
const PEERS: [&str; 2] = ["a", "b"];

fn client_offer(now: Instant, addr: SocketAddr, video: bool) -> String {
    let mut rtc = Rtc::builder().build(now);
    if let Ok(c) = Candidate::host(addr, "udp") {
        rtc.add_local_candidate(c);
    }
    let mut change = rtc.sdp_api();
    change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    if video {
        change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    }
    let (offer, _pending): (SdpOffer, _) = change.apply().expect("an offer with media");
    offer.to_sdp_string()
}

/// The server's ICE ufrag in an answer.
fn ufrag_of(sdp: &str) -> String {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn stun_with_username(ufrag: &str, tail: &[u8], input: &mut Input<'_>) -> Vec<u8> {
    let mut username = ufrag.as_bytes().to_vec();
    username.push(b':');
    username.extend_from_slice(input.bytes(16));
    let mut attrs = Vec::new();
    if input.bool() {
        // Something before the USERNAME.
        attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04]);
        attrs.extend_from_slice(&input.u32().to_be_bytes());
    }
    attrs.extend_from_slice(&[0x00, 0x06]);
    attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attrs.extend_from_slice(&username);
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    attrs.extend_from_slice(tail);
    let len = if input.bool() {
        input.u16()
    } else {
        attrs.len() as u16
    };
    let mut m = vec![0x00, 0x01];
    m.extend_from_slice(&len.to_be_bytes());
    m.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    for _ in 0..12 {
        m.push(input.u8());
    }
    m.extend_from_slice(&attrs);
    m
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let start = Instant::now();
    let mut now = start;
    let server: SocketAddr = SERVER.parse().unwrap();
    let sources: [SocketAddr; 4] = [
        "10.0.0.1:5000".parse().unwrap(),
        "10.0.0.2:5000".parse().unwrap(),
        "203.0.113.9:61000".parse().unwrap(),
        "[2001:db8::7]:5000".parse().unwrap(),
    ];
    let mut sfu = Sfu::new(SfuConfig::default());
    let mut ufrags = Vec::new();
    for (i, peer) in PEERS.iter().enumerate() {
        sfu.add_peer(now, "r", peer, server).expect("add_peer");
        let offer = client_offer(now, sources[i], i == 0);
        sfu.handle_signal(now, "r", peer, MediaSignal::Offer { sdp: offer })
            .expect("the client's offer");
    }
    while let Some(s) = sfu.poll_signal() {
        if let MediaSignal::Answer { sdp } = &s.signal {
            ufrags.push(ufrag_of(sdp));
        }
    }
    assert_eq!(ufrags.len(), 2, "one answer per peer");

    let mut calls = 0u64;
    let mut errors = 0u64;
    while !input.is_empty() {
        let from = sources[input.pick(sources.len())];
        let to: SocketAddr = if input.bool() {
            server
        } else {
            "0.0.0.0:3480".parse().unwrap()
        };
        let datagram: Vec<u8> = match input.pick(5) {
            0 => input.long_bytes(1500).to_vec(),
            1 => {
                let ufrag = ufrags[input.pick(2)].clone();
                let tail = input.bytes(64);
                stun_with_username(&ufrag, tail, &mut input)
            }
            2 => {
                let mut d = input.long_bytes(1500).to_vec();
                if let Some(first) = d.first_mut() {
                    *first = 20 + *first % 44;
                }
                d
            }
            3 => {
                let mut d = input.long_bytes(1500).to_vec();
                if let Some(first) = d.first_mut() {
                    *first = 128 + *first % 64;
                }
                d
            }
            _ => {
                now += Duration::from_millis(u64::from(input.u16()));
                sfu.handle_timeout(now);
                continue;
            }
        };
        calls += 1;
        if sfu.handle_datagram(now, from, to, &datagram).is_err() {
            errors += 1;
        }
        let stats = sfu.stats();
        assert_eq!(stats.datagrams_in, calls);
        assert_eq!(stats.dropped_datagrams, errors);
        while let Some(t) = sfu.poll_transmit() {
            assert_eq!(t.source, server, "a transmit leaves from the media address");
        }
        while let Some(s) = sfu.poll_signal() {
            assert!(s.room == "r" && PEERS.contains(&s.peer.as_str()));
        }
        while sfu.poll_event().is_some() {}
    }
    for peer in PEERS {
        sfu.remove_peer(now, "r", peer);
    }
    let stats = sfu.stats();
    assert_eq!(
        (stats.rooms, stats.peers, stats.published_tracks),
        (0, 0, 0)
    );
    assert_eq!(sfu.poll_timeout(), None);
});
