//! Key frame requests and simulcast layers through the core.

mod common;

use std::time::Duration;

use common::{Net, Publish};

fn connected(net: &Net) -> bool {
    net.clients.iter().all(|c| c.connected)
}

/// The mid on which `receiver` gets `publisher`'s video.
fn video_mid(net: &Net, receiver: &str, publisher: &str) -> str0m::media::Mid {
    let c = net.client(receiver);
    c.received
        .iter()
        .find(|r| r.stream_id == publisher && r.tag != 0x55)
        .map(|r| r.mid)
        .expect("video from the publisher")
}

#[test]
fn pli_from_a_receiver_reaches_the_publisher_throttled() {
    let mut net = Net::new();
    net.join("pub", "r", Publish::AudioVideo);
    net.join("sub", "r", Publish::Nothing);
    assert!(net.run_until(Duration::from_secs(5), connected));
    net.run(Duration::from_secs(1));
    // The server asked for a key frame when sub started receiving the video.
    assert!(
        !net.client("pub").keyframe_requests.is_empty(),
        "a key frame request when the track opened"
    );
    let mid = video_mid(&net, "sub", "pub");
    let before = net.client("pub").keyframe_requests.len();
    let asked = net.now;
    net.request_keyframe("sub", mid);
    assert!(
        net.run_until(Duration::from_millis(300), |n| n
            .client("pub")
            .keyframe_requests
            .len()
            > before),
        "the receiver's PLI reaches the publisher"
    );
    assert!(net.now - asked < Duration::from_millis(300));
    // And the key frame it sent reaches the receiver.
    let since = net.now;
    net.run(Duration::from_millis(200));
    assert!(
        net.client("sub")
            .received
            .iter()
            .any(|r| r.at >= since && r.keyframe && r.stream_id == "pub")
    );

    // A flood: a PLI every 5 ms for 2 s reaches the publisher at most once per 500 ms.
    net.run(Duration::from_millis(600));
    let before = net.client("pub").keyframe_requests.len();
    for _ in 0..400 {
        net.request_keyframe("sub", mid);
        net.step();
    }
    net.run(Duration::from_millis(100));
    let forwarded = net.client("pub").keyframe_requests.len() - before;
    assert!(
        (1..=5).contains(&forwarded),
        "{forwarded} key frame requests reached the publisher"
    );
    assert!(net.sfu.stats().keyframe_requests_throttled > 0);
    // Media kept flowing through the flood.
    let since = net.now;
    net.run(Duration::from_millis(500));
    assert!(net.client("sub").frames_from("pub", since) > 20);
}

/// The layer ("l" or "h") of the last video frames `receiver` got.
fn layer_of_recent(net: &Net, receiver: &str, since: std::time::Instant) -> Vec<u8> {
    let mut tags: Vec<u8> = net
        .client(receiver)
        .received
        .iter()
        .filter(|r| r.at >= since)
        .map(|r| r.tag)
        .collect();
    tags.dedup();
    tags
}

#[test]
fn simulcast_layer_follows_the_receivers_budget() {
    let mut net = Net::new();
    net.join("pub", "r", Publish::Simulcast);
    net.join("sub", "r", Publish::Nothing);
    assert!(net.run_until(Duration::from_secs(5), connected));
    // Layers measured (l: 250 B / 20 ms = 100 kbit/s, h: 400 kbit/s), estimate at its start.
    net.run(Duration::from_secs(3));
    let since = net.now;
    net.run(Duration::from_secs(1));
    assert_eq!(
        layer_of_recent(&net, "sub", since),
        vec![b'h'],
        "the high layer fits the initial estimate"
    );

    // The receiver's budget drops under the high layer: it moves to "l" at an "l" key frame.
    net.sfu
        .set_bitrate_cap(net.now, "r", "sub", Some(200_000))
        .unwrap();
    let switched = net.now;
    assert!(net.run_until(Duration::from_secs(1), |n| {
        n.client("sub")
            .received
            .last()
            .is_some_and(|r| r.tag == b'l' && r.at > switched)
    }));
    let first_l = net
        .client("sub")
        .received
        .iter()
        .find(|r| r.at > switched && r.tag == b'l')
        .unwrap()
        .clone();
    assert!(
        first_l.keyframe,
        "the switch happens at a key frame of the new layer"
    );
    let since = net.now;
    net.run(Duration::from_secs(1));
    assert_eq!(layer_of_recent(&net, "sub", since), vec![b'l']);

    // The budget rises again: back to "h".
    net.sfu.set_bitrate_cap(net.now, "r", "sub", None).unwrap();
    assert!(net.run_until(Duration::from_secs(2), |n| {
        n.client("sub")
            .received
            .last()
            .is_some_and(|r| r.tag == b'h')
    }));
    let since = net.now;
    net.run(Duration::from_secs(1));
    assert_eq!(layer_of_recent(&net, "sub", since), vec![b'h']);
    assert!(net.sfu.stats().layer_switches >= 2);
    // One stream for the receiver throughout: one mid.
    let mut mids: Vec<_> = net.client("sub").received.iter().map(|r| r.mid).collect();
    mids.dedup();
    assert_eq!(mids.len(), 1);
    // Each switch continues the receiver's sequence numbers: no gap for it to report.
    let gaps = net
        .client("sub")
        .received
        .iter()
        .filter(|r| !r.contiguous)
        .count();
    assert_eq!(gaps, 0, "sequence gaps seen by the receiver");
}
