//! Packets captured from real implementations on loopback (tests/vectors/capture/capture.py):
//! coturn's turnutils_uclient and turnserver, and Chromium's ICE agent talking to coturn.
//! Every one must parse, decode, verify, and re-encode to the same bytes.

use std::path::{Path, PathBuf};

use switchboard_stun::attr::{
    ChannelNumber, Context, Data, ErrorCode, Lifetime, Nonce, Realm, RequestedTransport, Software,
    Username, XorMappedAddress, XorPeerAddress, XorRelayedAddress,
};
use switchboard_stun::{
    AttrType, Attribute, ChannelData, Class, Message, MessageBuilder, Method, PacketKind, classify,
    long_term_key_md5,
};

fn captured(folder: &str) -> Vec<(String, Vec<u8>)> {
    let dir: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "..",
        "tests",
        "vectors",
        "captured",
        folder,
    ]
    .iter()
    .collect();
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .map(|p: PathBuf| (name(&p), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no captures in {}", dir.display());
    files
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Checks one STUN message; returns (had integrity, had fingerprint).
fn check_stun(name: &str, bytes: &[u8]) -> (bool, bool) {
    let msg = Message::parse(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let key = long_term_key_md5("alice", "switchboard", "secret");
    let unknown: Vec<AttrType> = msg.unknown_comprehension_required().collect();
    assert!(
        unknown.is_empty(),
        "{name}: unknown comprehension-required {unknown:?}"
    );

    let tid = msg.transaction_id();
    let ctx = Context {
        transaction_id: &tid,
    };
    for a in msg.attributes() {
        let v = a.value;
        let ok = match a.attr_type {
            AttrType::USERNAME => Username::read(v, ctx).is_ok(),
            AttrType::REALM => Realm::read(v, ctx).is_ok(),
            AttrType::NONCE => Nonce::read(v, ctx).is_ok(),
            AttrType::SOFTWARE => Software::read(v, ctx).is_ok(),
            AttrType::ERROR_CODE => ErrorCode::read(v, ctx).is_ok(),
            AttrType::LIFETIME => Lifetime::read(v, ctx).is_ok(),
            AttrType::REQUESTED_TRANSPORT => RequestedTransport::read(v, ctx).is_ok(),
            AttrType::XOR_MAPPED_ADDRESS => XorMappedAddress::read(v, ctx).is_ok(),
            AttrType::XOR_RELAYED_ADDRESS => XorRelayedAddress::read(v, ctx).is_ok(),
            AttrType::XOR_PEER_ADDRESS => XorPeerAddress::read(v, ctx).is_ok(),
            AttrType::CHANNEL_NUMBER => {
                ChannelNumber::read(v, ctx).is_ok_and(|c| c.is_valid_rfc5766())
            }
            AttrType::DATA => Data::read(v, ctx).is_ok(),
            _ => true,
        };
        assert!(ok, "{name}: {:?} does not decode", a.attr_type);
    }

    let has_mi = msg.has_message_integrity();
    if has_mi {
        msg.verify_message_integrity(&key)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    if msg.has_fingerprint() {
        msg.verify_fingerprint()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    if msg.class() == Class::ErrorResponse {
        let e = msg.get::<ErrorCode>().unwrap().unwrap();
        assert_eq!(e.code, ErrorCode::UNAUTHENTICATED, "{name}");
        assert_eq!(
            msg.get::<Realm>().unwrap(),
            Some(Realm("switchboard")),
            "{name}"
        );
        assert!(msg.get::<Nonce>().unwrap().is_some(), "{name}");
    }

    // Re-encode from the parsed attributes with our builder, integrity and fingerprint
    // recomputed: the captures use zero padding, so the bytes must be identical.
    let mut out = Vec::new();
    let mut b = MessageBuilder::new(&mut out, msg.message_type(), tid);
    for a in msg.attributes() {
        if ![AttrType::MESSAGE_INTEGRITY, AttrType::FINGERPRINT].contains(&a.attr_type) {
            b.add_raw(a.attr_type, a.value);
        }
    }
    if has_mi {
        b.add_message_integrity(&key);
    }
    if msg.has_fingerprint() {
        b.add_fingerprint();
    }
    assert_eq!(b.finish().unwrap(), bytes, "{name}: re-encoding differs");
    (has_mi, msg.has_fingerprint())
}

fn check_channel_data(name: &str, bytes: &[u8]) {
    let cd = ChannelData::parse(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut out = Vec::new();
    cd.encode(
        &mut out,
        bytes.len().is_multiple_of(4) && !cd.data().len().is_multiple_of(4),
    );
    assert_eq!(out, bytes, "{name}");
}

fn check_folder(folder: &str) -> (usize, usize) {
    let mut verified = 0;
    let mut channel_data = 0;
    for (name, bytes) in captured(folder) {
        match classify(&bytes) {
            PacketKind::Stun => {
                let (mi, _) = check_stun(&name, &bytes);
                verified += usize::from(mi);
            }
            PacketKind::ChannelData => {
                check_channel_data(&name, &bytes);
                channel_data += 1;
            }
            PacketKind::Other => panic!("{name}: neither STUN nor ChannelData"),
        }
    }
    (verified, channel_data)
}

#[test]
fn coturn_uclient_with_channels() {
    let (verified, channel_data) = check_folder("coturn-uclient");
    assert!(verified >= 10, "{verified} authenticated messages");
    assert!(channel_data >= 2);
    // turnutils_uclient picks channel numbers from RFC 5766's 0x4000-0x7FFF, beyond RFC 8656's
    // 0x4FFF: a server that wants to pass coturn's client test must bind them.
    let beyond_rfc8656 = captured("coturn-uclient")
        .iter()
        .filter_map(|(_, b)| Message::parse(b).ok())
        .filter_map(|m| m.get::<ChannelNumber>().ok().flatten())
        .filter(|c| !c.is_valid())
        .count();
    assert!(beyond_rfc8656 > 0);
}

#[test]
fn coturn_uclient_with_send_indications() {
    let packets = captured("coturn-uclient-send");
    check_folder("coturn-uclient-send");
    let mut sends = 0;
    for (name, bytes) in &packets {
        let msg = match Message::parse(bytes) {
            Ok(m) if m.class() == Class::Indication => m,
            _ => continue,
        };
        assert!(
            matches!(msg.method(), Method::SEND | Method::DATA),
            "{name}"
        );
        assert!(msg.get::<XorPeerAddress>().unwrap().is_some(), "{name}");
        assert_eq!(msg.get::<Data>().unwrap().unwrap().0.len(), 33, "{name}");
        sends += 1;
    }
    assert!(sends >= 2);
}

#[test]
fn chromium_binding_and_allocate() {
    let (verified, _) = check_folder("chromium");
    assert!(
        verified >= 2,
        "Chromium's authenticated Allocate and coturn's answer"
    );
    let packets = captured("chromium");
    assert!(
        packets
            .iter()
            .any(|(n, _)| n.contains("client-binding-request"))
    );
}
