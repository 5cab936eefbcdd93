//! Framing, ordering and error rules of RFC 8489 that the vectors do not cover.

use switchboard_stun::attr::{Data, Lifetime, Software, Username, XorPeerAddress};
use switchboard_stun::{
    AttrError, AttrType, ChannelData, Class, EncodeError, FingerprintError, FramingError,
    IntegrityAlgorithm, IntegrityError, Message, MessageBuilder, MessageType, Method, PacketKind,
    ParseError, TransactionId, classify, is_stun, stream_frame_len,
};

const TID: TransactionId = TransactionId::new([0x11; 12]);

fn build(f: impl FnOnce(&mut MessageBuilder<'_>)) -> Vec<u8> {
    let mut out = Vec::new();
    let mut b = MessageBuilder::new(&mut out, MessageType::BINDING_REQUEST, TID);
    f(&mut b);
    b.finish().unwrap().to_vec()
}

#[test]
fn header_errors() {
    assert!(matches!(
        Message::parse(&[0; 19]),
        Err(ParseError::TooShort { len: 19 })
    ));
    let ok = build(|b| {
        b.add_software("x");
    });
    let mut bad = ok.clone();
    bad[0] |= 0x40;
    assert!(matches!(Message::parse(&bad), Err(ParseError::NotStun)));
    let mut bad = ok.clone();
    bad[4] = 0;
    assert!(matches!(
        Message::parse(&bad),
        Err(ParseError::BadMagicCookie(_))
    ));
    let mut bad = ok.clone();
    bad[3] += 1;
    assert!(matches!(
        Message::parse(&bad),
        Err(ParseError::UnalignedLength(_))
    ));
    let mut trailing = ok.clone();
    trailing.extend_from_slice(&[0; 4]);
    assert!(matches!(
        Message::parse(&trailing),
        Err(ParseError::LengthMismatch {
            declared: 8,
            actual: 12
        })
    ));
    assert!(matches!(
        Message::parse(&ok[..ok.len() - 4]),
        Err(ParseError::LengthMismatch { .. })
    ));
    // SOFTWARE claims 9 bytes: the padded value runs past the end.
    let mut overflow = ok.clone();
    overflow[23] = 9;
    assert!(matches!(
        Message::parse(&overflow),
        Err(ParseError::AttributeOverflow {
            attr: AttrType::SOFTWARE,
            offset: 20
        })
    ));
}

#[test]
fn attributes_after_integrity_are_ignored_and_after_fingerprint_rejected() {
    let mut bytes = build(|b| {
        b.add_username("alice").add_message_integrity(b"pw");
    });
    // Append LIFETIME after MESSAGE-INTEGRITY by hand, as a non-conforming sender might.
    bytes.extend_from_slice(&[0x00, 0x0D, 0x00, 0x04, 0, 0, 0, 60]);
    let len = u16::from_be_bytes([bytes[2], bytes[3]]) + 8;
    bytes[2..4].copy_from_slice(&len.to_be_bytes());
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(msg.get::<Lifetime>().unwrap(), None);
    assert_eq!(msg.raw_attributes().count(), 3);
    assert_eq!(msg.attributes().count(), 2);
    // Integrity still verifies: it only covers what precedes it.
    msg.verify_message_integrity(b"pw").unwrap();

    let mut bytes = build(|b| {
        b.add_fingerprint();
    });
    bytes.extend_from_slice(&[0x80, 0x22, 0x00, 0x00]);
    let len = u16::from_be_bytes([bytes[2], bytes[3]]) + 4;
    bytes[2..4].copy_from_slice(&len.to_be_bytes());
    assert!(matches!(
        Message::parse(&bytes),
        Err(ParseError::AttributeAfterFingerprint {
            attr: AttrType::SOFTWARE
        })
    ));
}

#[test]
fn both_integrity_attributes() {
    let bytes = build(|b| {
        b.add_username("alice")
            .add_message_integrity(b"pw")
            .add_message_integrity_sha256_truncated(b"pw", 16)
            .add_fingerprint();
    });
    let msg = Message::parse(&bytes).unwrap();
    msg.verify_message_integrity(b"pw").unwrap();
    msg.verify_message_integrity_sha256(b"pw").unwrap();
    assert_eq!(
        msg.verify_integrity(b"pw"),
        Ok(IntegrityAlgorithm::HmacSha256)
    );
    assert_eq!(msg.verify_integrity(b"no"), Err(IntegrityError::Mismatch));
    msg.verify_fingerprint().unwrap();
    let plain = build(|b| {
        b.add_username("alice");
    });
    let msg = Message::parse(&plain).unwrap();
    assert_eq!(msg.verify_integrity(b"pw"), Err(IntegrityError::Missing));
    assert_eq!(msg.verify_fingerprint(), Err(FingerprintError::Missing));
}

#[test]
fn unknown_comprehension_required_attributes_are_reported() {
    let bytes = build(|b| {
        b.add_raw(AttrType(0x0031), b"x")
            .add_raw(AttrType(0x8077), b"optional")
            .add_software("s")
            .add_raw(AttrType(0x7FFF), b"");
    });
    let msg = Message::parse(&bytes).unwrap();
    let unknown: Vec<u16> = msg.unknown_comprehension_required().map(|t| t.0).collect();
    assert_eq!(unknown, vec![0x0031, 0x7FFF]);
    assert_eq!(msg.get::<Software>().unwrap(), Some(Software("s")));
}

#[test]
fn malformed_typed_attribute_is_an_error_not_absence() {
    let bytes = build(|b| {
        b.add_raw(AttrType::USERNAME, &[0xff, 0xfe])
            .add_raw(AttrType::XOR_PEER_ADDRESS, &[0, 1, 0]);
    });
    let msg = Message::parse(&bytes).unwrap();
    assert!(matches!(
        msg.get::<Username>(),
        Err(AttrError::NotUtf8 { .. })
    ));
    assert!(matches!(
        msg.get::<XorPeerAddress>(),
        Err(AttrError::InvalidLength { len: 3, .. })
    ));
    assert_eq!(msg.get::<Data>(), Ok(None));
}

#[test]
fn builder_errors_leave_the_buffer_untouched() {
    let mut out = b"prefix".to_vec();
    let mut b = MessageBuilder::new(&mut out, MessageType::BINDING_REQUEST, TID);
    b.add_fingerprint().add_software("late");
    assert_eq!(
        b.finish(),
        Err(EncodeError::OutOfOrder {
            attr: AttrType::SOFTWARE
        })
    );
    assert_eq!(out, b"prefix");

    let mut b = MessageBuilder::new(&mut out, MessageType::BINDING_REQUEST, TID);
    b.add_message_integrity(b"k").add_message_integrity(b"k");
    assert_eq!(
        b.finish(),
        Err(EncodeError::OutOfOrder {
            attr: AttrType::MESSAGE_INTEGRITY
        })
    );

    let mut b = MessageBuilder::new(&mut out, MessageType::BINDING_REQUEST, TID);
    b.add_message_integrity_sha256(b"k")
        .add_message_integrity(b"k");
    assert!(b.finish().is_err());

    let mut b = MessageBuilder::new(&mut out, MessageType::BINDING_REQUEST, TID);
    b.add_message_integrity_sha256_truncated(b"k", 18);
    assert_eq!(b.finish(), Err(EncodeError::InvalidTruncation(18)));

    let big = vec![0u8; 70_000];
    let mut b = MessageBuilder::new(&mut out, MessageType::BINDING_REQUEST, TID);
    b.add_data(&big);
    assert!(matches!(
        b.finish(),
        Err(EncodeError::AttributeTooLong { len: 70_000, .. })
    ));

    let chunk = vec![0u8; 40_000];
    let mut b = MessageBuilder::new(&mut out, MessageType::BINDING_REQUEST, TID);
    b.add_data(&chunk).add_data(&chunk);
    assert!(matches!(
        b.finish(),
        Err(EncodeError::MessageTooLong { .. })
    ));
    assert_eq!(out, b"prefix");
}

#[test]
fn demultiplexing_and_stream_framing() {
    let stun = build(|b| {
        b.add_software("abc");
    });
    assert!(is_stun(&stun));
    assert_eq!(classify(&stun), PacketKind::Stun);
    assert_eq!(stream_frame_len(&stun), Ok(Some(stun.len())));
    assert_eq!(stream_frame_len(&stun[..3]), Ok(None));

    let mut cd = Vec::new();
    ChannelData::new(0x4000, b"abcde")
        .unwrap()
        .encode(&mut cd, true);
    assert_eq!(classify(&cd), PacketKind::ChannelData);
    assert_eq!(stream_frame_len(&cd), Ok(Some(12)));
    assert!(!is_stun(&cd));

    assert_eq!(classify(&[0x80; 40]), PacketKind::Other);
    assert_eq!(classify(&[0x00; 10]), PacketKind::Other);
    assert_eq!(classify(&[]), PacketKind::Other);
    assert_eq!(
        stream_frame_len(&[0xC0, 0, 0, 0]),
        Err(FramingError { first_byte: 0xC0 })
    );
    // coturn binds channels up to 0x7FFF (RFC 5766): still ChannelData framing.
    assert_eq!(stream_frame_len(&[0x7A, 0x09, 0, 5]), Ok(Some(12)));
}

#[test]
fn data_indication_zero_copy_accessors() {
    let peer = "192.0.2.77:3000".parse().unwrap();
    let mut out = Vec::with_capacity(256);
    let mut b = MessageBuilder::new(&mut out, MessageType::DATA_INDICATION, TID);
    b.add_xor_peer_address(peer).add_data(b"payload");
    let bytes = b.finish().unwrap();
    let msg = Message::parse(bytes).unwrap();
    assert_eq!(msg.class(), Class::Indication);
    assert_eq!(msg.method(), Method::DATA);
    let data = msg.get::<Data>().unwrap().unwrap().0;
    // The payload is a slice of the received buffer, not a copy.
    let range = bytes.as_ptr_range();
    assert!(range.contains(&data.as_ptr()));
    assert_eq!(data, b"payload");
}
