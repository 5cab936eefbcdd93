//! Track routing and renegotiation through the core, str0m clients on the other side.

mod common;

use std::time::Duration;

use common::{Net, Publish};

fn connected(net: &Net) -> bool {
    net.clients.iter().all(|c| c.connected)
}

#[test]
fn two_peers_receive_each_other() {
    let mut net = Net::new();
    net.join("alice", "r1", Publish::AudioVideo);
    net.join("bob", "r1", Publish::AudioVideo);
    assert!(
        net.run_until(Duration::from_secs(5), connected),
        "both connect"
    );
    let since = net.now;
    net.run(Duration::from_secs(2));
    assert_eq!(
        net.client("alice").streams_received_since(since),
        vec!["bob"]
    );
    assert_eq!(
        net.client("bob").streams_received_since(since),
        vec!["alice"]
    );
    // Audio and video both arrive: two mids from the other peer, each with frames.
    for (me, other) in [("alice", "bob"), ("bob", "alice")] {
        let c = net.client(me);
        let mut mids: Vec<_> = c
            .received
            .iter()
            .filter(|r| r.stream_id == other)
            .map(|r| r.mid)
            .collect();
        mids.sort();
        mids.dedup();
        assert_eq!(mids.len(), 2, "{me} gets {other}'s audio and video");
        assert!(
            c.frames_from(other, since) > 100,
            "{me}: {} frames",
            c.frames_from(other, since)
        );
    }
    assert!(net.failed().is_empty());
    let stats = net.sfu.stats();
    assert_eq!(
        (
            stats.rooms,
            stats.peers,
            stats.connected_peers,
            stats.published_tracks
        ),
        (1, 2, 2, 4)
    );
    assert_eq!(stats.forwarded_tracks, 4);
    assert!(stats.forwarded_frames > 200);
}

#[test]
fn late_joiner_gets_everyone_and_everyone_gets_the_late_joiner() {
    let mut net = Net::new();
    net.join("a", "r", Publish::AudioVideo);
    net.join("b", "r", Publish::Audio);
    assert!(net.run_until(Duration::from_secs(5), connected));
    let offers_before = net.client("a").offers_received;
    net.join("c", "r", Publish::AudioVideo);
    assert!(net.run_until(Duration::from_secs(5), connected));
    let since = net.now;
    net.run(Duration::from_secs(2));
    assert_eq!(
        net.client("a").streams_received_since(since),
        vec!["b", "c"]
    );
    assert_eq!(
        net.client("b").streams_received_since(since),
        vec!["a", "c"]
    );
    assert_eq!(
        net.client("c").streams_received_since(since),
        vec!["a", "b"]
    );
    // The join reached the others by a server offer (one: c's tracks came in one batch).
    assert_eq!(net.client("a").offers_received, offers_before + 1);
}

#[test]
fn a_peer_without_tracks_receives() {
    let mut net = Net::new();
    net.join("pub", "r", Publish::AudioVideo);
    net.join("watch", "r", Publish::Nothing);
    assert!(net.run_until(Duration::from_secs(5), connected));
    let since = net.now;
    net.run(Duration::from_secs(1));
    assert_eq!(
        net.client("watch").streams_received_since(since),
        vec!["pub"]
    );
    assert!(net.client("pub").received.is_empty());
}

#[test]
fn leave_removes_the_tracks_from_the_others_within_a_second() {
    let mut net = Net::new();
    net.join("a", "r", Publish::AudioVideo);
    net.join("b", "r", Publish::AudioVideo);
    net.join("c", "r", Publish::Audio);
    assert!(net.run_until(Duration::from_secs(5), connected));
    net.run(Duration::from_millis(500));
    assert_eq!(net.client("a").active_streams(), vec!["b", "b", "c"]);
    let offers = net.client("a").offers_received;
    net.leave("b");
    let left = net.now;
    assert!(
        net.run_until(Duration::from_secs(1), |n| {
            n.client("a").active_streams() == vec!["c"]
                && n.client("c").active_streams() == vec!["a", "a"]
        }),
        "b's tracks leave a and c by renegotiation: a has {:?}",
        net.client("a").active_streams()
    );
    assert_eq!(net.client("a").offers_received, offers + 1);
    net.run(Duration::from_millis(500));
    let since = net.now;
    net.run(Duration::from_secs(1));
    assert_eq!(net.client("a").streams_received_since(since), vec!["c"]);
    assert!(net.now - left < Duration::from_secs(3));
    assert_eq!(net.sfu.stats().peers, 2);
    assert!(net.failed().is_empty());
}

#[test]
fn rooms_never_mix() {
    let mut net = Net::new();
    net.join("a", "one", Publish::AudioVideo);
    net.join("b", "one", Publish::AudioVideo);
    net.join("c", "two", Publish::AudioVideo);
    net.join("d", "two", Publish::AudioVideo);
    // The same peer id in two rooms is two peers.
    net.join("x", "one", Publish::Audio);
    assert!(net.run_until(Duration::from_secs(5), connected));
    let since = net.now;
    net.run(Duration::from_secs(1));
    let routing = net.routing(since);
    assert_eq!(routing["a"], vec!["b", "x"]);
    assert_eq!(routing["b"], vec!["a", "x"]);
    assert_eq!(routing["c"], vec!["d"]);
    assert_eq!(routing["d"], vec!["c"]);
    assert_eq!(net.sfu.stats().rooms, 2);
}

#[test]
fn last_peer_leaving_ends_the_room() {
    let mut net = Net::new();
    net.join("a", "r", Publish::Audio);
    net.join("b", "r", Publish::Audio);
    assert!(net.run_until(Duration::from_secs(5), connected));
    net.leave("a");
    net.leave("b");
    net.run(Duration::from_millis(100));
    let stats = net.sfu.stats();
    assert_eq!(
        (stats.rooms, stats.peers, stats.published_tracks),
        (0, 0, 0)
    );
    assert_eq!(net.sfu.poll_timeout(), None);
}

#[test]
fn a_client_behind_a_relay_is_just_another_source_address() {
    let mut net = Net::new();
    net.join("direct", "r", Publish::AudioVideo);
    net.join("relayed", "r", Publish::AudioVideo);
    // Everything from "relayed" reaches the server from a TURN relay's address.
    net.client_mut("relayed").via = Some("198.51.100.7:49152".parse().unwrap());
    assert!(net.run_until(Duration::from_secs(5), connected));
    let since = net.now;
    net.run(Duration::from_secs(1));
    assert_eq!(
        net.client("direct").streams_received_since(since),
        vec!["relayed"]
    );
    assert_eq!(
        net.client("relayed").streams_received_since(since),
        vec!["direct"]
    );
    let connected_events = net
        .events
        .iter()
        .filter(|e| matches!(e, switchboard_sfu::SfuEvent::PeerConnected { .. }))
        .count();
    assert_eq!(connected_events, 2);
}

#[test]
fn a_track_unpublished_by_the_client_leaves_the_others() {
    let mut net = Net::new();
    net.join("a", "r", Publish::AudioVideo);
    net.join("b", "r", Publish::Nothing);
    assert!(net.run_until(Duration::from_secs(5), connected));
    net.run(Duration::from_millis(300));
    assert_eq!(net.client("b").active_streams(), vec!["a", "a"]);
    // a stops sending its video: it offers the m-line inactive.
    let c = net.client_mut("a");
    let (video, _, _) = c
        .sending
        .iter()
        .copied()
        .find(|(_, k, _)| *k == str0m::media::MediaKind::Video)
        .unwrap();
    c.sending.retain(|(m, _, _)| *m != video);
    let mut change = c.rtc.sdp_api();
    change.set_direction(video, str0m::media::Direction::Inactive);
    let (offer, pending) = change.apply().unwrap();
    c.pending = Some(pending);
    let now = net.now;
    net.sfu
        .handle_signal(
            now,
            "r",
            "a",
            switchboard_sfu::MediaSignal::Offer {
                sdp: offer.to_sdp_string(),
            },
        )
        .unwrap();
    assert!(
        net.run_until(Duration::from_secs(1), |n| n.client("b").active_streams()
            == vec!["a"])
    );
    assert_eq!(net.sfu.stats().published_tracks, 1);
}

#[test]
fn an_ice_restart_from_a_new_address_keeps_the_media() {
    let mut net = Net::new();
    net.join("a", "r", Publish::AudioVideo);
    net.join("b", "r", Publish::AudioVideo);
    assert!(net.run_until(Duration::from_secs(5), connected));
    // b's network changes (a new address) and it restarts ICE.
    let c = net.client_mut("b");
    c.via = Some("192.0.2.77:6000".parse().unwrap());
    let mut change = c.rtc.sdp_api();
    change.ice_restart(true);
    let (offer, pending) = change.apply().unwrap();
    c.pending = Some(pending);
    let now = net.now;
    net.sfu
        .handle_signal(
            now,
            "r",
            "b",
            switchboard_sfu::MediaSignal::Offer {
                sdp: offer.to_sdp_string(),
            },
        )
        .unwrap();
    net.run(Duration::from_secs(2));
    let since = net.now;
    net.run(Duration::from_secs(1));
    assert_eq!(net.client("a").streams_received_since(since), vec!["b"]);
    assert_eq!(net.client("b").streams_received_since(since), vec!["a"]);
    assert!(net.failed().is_empty());
    // The server's credentials changed with the restart: STUN is routed by the new ufrag.
    let ufrags: Vec<String> = net
        .signals
        .iter()
        .filter(|s| s.peer == "b")
        .filter_map(|s| match &s.signal {
            switchboard_sfu::MediaSignal::Answer { sdp } => sdp
                .lines()
                .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
                .map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(ufrags.len(), 2);
    assert_ne!(ufrags[0], ufrags[1]);
}
