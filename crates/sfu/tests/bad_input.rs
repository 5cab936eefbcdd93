//! Bad input on every surface: each is refused or dropped and nobody else's media stops.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Net, Publish};
use switchboard_sfu::{DatagramError, MediaSignal, SfuConfig, SfuError};

fn connected(net: &Net) -> bool {
    net.clients.iter().all(|c| c.connected || c.blackholed)
}

#[test]
fn garbage_and_unrouted_datagrams_are_dropped_and_counted() {
    let mut net = Net::new();
    net.join("a", "r", Publish::Audio);
    net.join("b", "r", Publish::Audio);
    assert!(net.run_until(Duration::from_secs(5), connected));
    let stranger: SocketAddr = "10.66.0.1:4000".parse().unwrap();
    let any: SocketAddr = "0.0.0.0:3480".parse().unwrap();
    let dropped = net.sfu.stats().dropped_datagrams;
    let now = net.now;
    assert_eq!(
        net.sfu.handle_datagram(now, stranger, any, &[]),
        Err(DatagramError::Garbage)
    );
    assert_eq!(
        net.sfu.handle_datagram(now, stranger, any, &[0xff; 100]),
        Err(DatagramError::Garbage)
    );
    assert_eq!(
        net.sfu.handle_datagram(now, stranger, any, &[64; 100]),
        Err(DatagramError::Garbage)
    );
    // DTLS and SRTP from a source no STUN introduced.
    assert_eq!(
        net.sfu.handle_datagram(now, stranger, any, &[22; 60]),
        Err(DatagramError::Unrouted)
    );
    assert_eq!(
        net.sfu.handle_datagram(now, stranger, any, &[0x80; 60]),
        Err(DatagramError::Unrouted)
    );
    // STUN with a ufrag nobody has.
    let mut stun = vec![0, 1, 0, 12, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[1; 12]);
    stun.extend_from_slice(&[0, 6, 0, 7]);
    stun.extend_from_slice(b"nope:xy\0");
    assert_eq!(
        net.sfu.handle_datagram(now, stranger, any, &stun),
        Err(DatagramError::Unrouted)
    );
    assert_eq!(net.sfu.stats().dropped_datagrams, dropped + 6);
    // Garbage from a known peer's own address goes to its Rtc, which drops it.
    let a_addr = net.client("a").addr;
    for len in [12, 13, 100, 1200] {
        let _ = net.sfu.handle_datagram(now, a_addr, any, &vec![0x80; len]);
        let _ = net.sfu.handle_datagram(now, a_addr, any, &vec![23; len]);
    }
    let since = net.now;
    net.run(Duration::from_secs(1));
    assert!(net.client("a").frames_from("b", since) > 30);
    assert!(net.client("b").frames_from("a", since) > 30);
}

#[test]
fn a_peer_that_never_completes_dtls_fails_alone() {
    let mut config = SfuConfig::default();
    config.connect_timeout = Duration::from_secs(10);
    let mut net = Net::with_config(config);
    net.join("a", "r", Publish::AudioVideo);
    net.join("b", "r", Publish::AudioVideo);
    assert!(net.run_until(Duration::from_secs(5), connected));
    net.join("mute", "r", Publish::AudioVideo);
    net.client_mut("mute").blackholed = true;
    let joined = net.now;
    assert!(net.run_until(Duration::from_secs(12), |n| !n.failed().is_empty()));
    assert_eq!(net.failed(), vec!["mute"]);
    assert!(net.now - joined >= Duration::from_secs(10));
    // a and b kept receiving each other all along, and "mute" left their sessions.
    let since = net.now;
    net.run(Duration::from_secs(1));
    assert_eq!(net.client("a").streams_received_since(since), vec!["b"]);
    assert_eq!(net.client("b").streams_received_since(since), vec!["a"]);
    assert!(net.client("a").active_streams().iter().all(|s| s == "b"));
    assert_eq!(net.sfu.stats().peers, 2);
    assert_eq!(net.sfu.stats().peers_failed, 1);
    // Its signals are refused from now on.
    let err = net.sfu.handle_signal(
        net.now,
        "r",
        "mute",
        MediaSignal::Answer { sdp: String::new() },
    );
    assert!(matches!(err, Err(SfuError::UnknownPeer { .. })));
}

#[test]
fn refused_signals_change_nothing() {
    let mut net = Net::new();
    net.join("a", "r", Publish::Audio);
    net.join("b", "r", Publish::Audio);
    assert!(net.run_until(Duration::from_secs(5), connected));
    net.run(Duration::from_millis(200));
    let now = net.now;
    let bad = net.sfu.handle_signal(
        now,
        "r",
        "a",
        MediaSignal::Offer {
            sdp: "v=0\r\nnonsense".into(),
        },
    );
    assert!(
        matches!(bad, Err(SfuError::BadSdp(ref why)) if !why.is_empty()),
        "{bad:?}"
    );
    let bad = net
        .sfu
        .handle_signal(now, "r", "a", MediaSignal::Offer { sdp: String::new() });
    assert!(matches!(bad, Err(SfuError::BadSdp(_))));
    let unexpected =
        net.sfu
            .handle_signal(now, "r", "a", MediaSignal::Answer { sdp: "v=0".into() });
    assert_eq!(unexpected, Err(SfuError::UnexpectedAnswer));
    let cand = MediaSignal::Candidate {
        candidate: "candidate:garbage".into(),
        sdp_mid: None,
        sdp_m_line_index: None,
    };
    assert!(matches!(
        net.sfu.handle_signal(now, "r", "a", cand),
        Err(SfuError::BadCandidate(_))
    ));
    let end = MediaSignal::Candidate {
        candidate: String::new(),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
    };
    assert_eq!(net.sfu.handle_signal(now, "r", "a", end), Ok(()));
    let host = MediaSignal::Candidate {
        candidate: "candidate:1 1 udp 2130706431 10.0.0.10 5000 typ host".into(),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
    };
    assert_eq!(net.sfu.handle_signal(now, "r", "a", host), Ok(()));
    let unknown = net
        .sfu
        .handle_signal(now, "r", "zed", MediaSignal::Offer { sdp: String::new() });
    assert!(matches!(unknown, Err(SfuError::UnknownPeer { .. })));
    assert!(matches!(
        net.sfu
            .add_peer(now, "r", "a", "10.9.0.1:3480".parse().unwrap()),
        Err(SfuError::AlreadyJoined { .. })
    ));
    assert!(matches!(
        net.sfu
            .add_peer(now, "r", "c", "0.0.0.0:3480".parse().unwrap()),
        Err(SfuError::BadLocalAddress { .. })
    ));
    let since = net.now;
    net.run(Duration::from_secs(1));
    assert!(net.client("a").frames_from("b", since) > 30);
    assert!(net.client("b").frames_from("a", since) > 30);
    assert!(net.failed().is_empty());
}

#[test]
fn a_client_offer_crossing_a_server_offer_is_ignored() {
    let mut net = Net::new();
    net.join("a", "r", Publish::Audio);
    assert!(net.run_until(Duration::from_secs(5), connected));
    // b's join makes the core offer to a; a offers video before that offer reaches it.
    net.hold_signals_for = Some("a".to_string());
    net.join("b", "r", Publish::Audio);
    assert!(
        net.run_until(Duration::from_secs(5), |n| !n.held.is_empty()),
        "the core offers b's track to a"
    );
    let answers = |n: &Net| {
        n.signals
            .iter()
            .filter(|s| s.peer == "a" && matches!(s.signal, MediaSignal::Answer { .. }))
            .count()
    };
    let answers_before = answers(&net);
    let offer = offer_video(&mut net, "a");
    let now = net.now;
    assert_eq!(
        net.sfu
            .handle_signal(now, "r", "a", MediaSignal::Offer { sdp: offer }),
        Ok(())
    );
    net.run(Duration::from_millis(100));
    assert_eq!(
        answers(&net),
        answers_before,
        "no answer to the colliding offer"
    );
    assert_eq!(
        net.held.len(),
        1,
        "and no second offer while the first is pending"
    );
    // The polite client drops its own offer and answers the server's.
    net.release_signals();
    net.run(Duration::from_millis(100));
    assert_eq!(net.client("a").offers_received, 1);
    // The client offers again and is answered; b then gets a's video too.
    let offer = offer_video(&mut net, "a");
    let now = net.now;
    assert_eq!(
        net.sfu
            .handle_signal(now, "r", "a", MediaSignal::Offer { sdp: offer }),
        Ok(())
    );
    net.run(Duration::from_millis(100));
    assert_eq!(answers(&net), answers_before + 1);
    let since = net.now;
    net.run(Duration::from_secs(2));
    assert_eq!(net.client("a").streams_received_since(since), vec!["b"]);
    let b = net.client("b");
    let mut mids: Vec<_> = b
        .received
        .iter()
        .filter(|r| r.at >= since && r.stream_id == "a")
        .map(|r| r.mid)
        .collect();
    mids.sort();
    mids.dedup();
    assert_eq!(
        mids.len(),
        2,
        "b gets a's audio and the video of the re-offer"
    );
    assert!(net.failed().is_empty());
}

/// The client adds a video track and makes an offer (kept pending in the client).
fn offer_video(net: &mut Net, id: &str) -> String {
    let c = net.client_mut(id);
    let mut change = c.rtc.sdp_api();
    let mid = change.add_media(
        str0m::media::MediaKind::Video,
        str0m::media::Direction::SendOnly,
        None,
        None,
        None,
    );
    let (offer, pending) = change.apply().unwrap();
    c.pending = Some(pending);
    c.sending.push((mid, str0m::media::MediaKind::Video, false));
    offer.to_sdp_string()
}

#[test]
fn a_peer_that_never_answers_an_offer_fails_alone() {
    let mut config = SfuConfig::default();
    config.answer_timeout = Duration::from_secs(5);
    let mut net = Net::with_config(config);
    net.join("a", "r", Publish::Audio);
    net.join("b", "r", Publish::Audio);
    assert!(net.run_until(Duration::from_secs(5), connected));
    // c joins; a's offer for c's track is never answered.
    net.hold_signals_for = Some("a".to_string());
    net.join("c", "r", Publish::Audio);
    assert!(net.run_until(Duration::from_secs(7), |n| !n.failed().is_empty()));
    assert_eq!(net.failed(), vec!["a"]);
    let since = net.now;
    net.run(Duration::from_secs(1));
    assert_eq!(net.client("b").streams_received_since(since), vec!["c"]);
    assert_eq!(net.client("c").streams_received_since(since), vec!["b"]);
}
