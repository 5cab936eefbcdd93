//! Cross-check against an independent implementation (the `stun-rs` crate, which has its
//! own HMAC, CRC-32 and SASLprep code): what we encode decodes there with integrity and
//! fingerprint validated, and what it encodes parses and verifies here.

use std::net::SocketAddr;

use stun_rs::attributes::stun as theirs_stun;
use stun_rs::attributes::turn as theirs_turn;
use stun_rs::{
    Algorithm, AlgorithmId, DecoderContextBuilder, HMACKey, MessageClass, MessageDecoderBuilder,
    MessageEncoderBuilder, StunMessage, StunMessageBuilder, methods,
};
use switchboard_stun::attr::{
    ChannelNumber, Data, DontFragment, ErrorCode, EvenPort, Lifetime, Nonce, PasswordAlgorithms,
    Realm, RequestedAddressFamily, RequestedTransport, ReservationToken, Software, Username,
    XorMappedAddress, XorPeerAddress, XorRelayedAddress,
};
use switchboard_stun::{
    Class, IntegrityAlgorithm, Message, MessageBuilder, MessageType, Method, PasswordAlgorithm,
    TransactionId, long_term_key_md5, long_term_key_sha256,
};

const USER: &str = "1700000000:alice";
const REALM: &str = "switchboard";
const PASSWORD: &str = "c2VjcmV0LXBhc3N3b3Jk";

fn their_key(algorithm: AlgorithmId) -> HMACKey {
    let user = theirs_stun::UserName::new(USER).unwrap();
    let realm = theirs_stun::Realm::new(REALM).unwrap();
    HMACKey::new_long_term(&user, &realm, PASSWORD, Algorithm::from(algorithm)).unwrap()
}

fn decode_there(bytes: &[u8], key: Option<HMACKey>) -> StunMessage {
    let mut ctx = DecoderContextBuilder::default().with_validation();
    if let Some(key) = key {
        ctx = ctx.with_key(key);
    }
    let decoder = MessageDecoderBuilder::default()
        .with_context(ctx.build())
        .build();
    let (msg, size) = decoder
        .decode(bytes)
        .unwrap_or_else(|e| panic!("stun-rs rejects our message: {e:?}"));
    assert_eq!(size, bytes.len());
    msg
}

fn encode_there(msg: &StunMessage) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let n = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, msg)
        .unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn our_allocate_request_verifies_there() {
    let key = long_term_key_md5(USER, REALM, PASSWORD);
    let tid = TransactionId::new(*b"allocate-001");
    let mut out = Vec::new();
    let mut b = MessageBuilder::new(
        &mut out,
        MessageType::new(Method::ALLOCATE, Class::Request),
        tid,
    );
    b.add(&RequestedTransport::UDP)
        .add_lifetime(600)
        .add(&DontFragment)
        .add(&EvenPort { reserve: true })
        .add_username(USER)
        .add_realm(REALM)
        .add_nonce(b"0123456789abcdef")
        .add_software("switchboard test")
        .add_message_integrity(&key)
        .add_fingerprint();
    let bytes = b.finish().unwrap().to_vec();

    let msg = decode_there(&bytes, Some(their_key(AlgorithmId::MD5)));
    assert_eq!(msg.method(), methods::ALLOCATE);
    assert_eq!(msg.class(), MessageClass::Request);
    assert_eq!(msg.transaction_id().as_bytes(), tid.as_bytes());
    let lifetime = msg
        .get::<theirs_turn::LifeTime>()
        .unwrap()
        .as_life_time()
        .unwrap()
        .as_u32();
    assert_eq!(lifetime, 600);
    let transport = msg
        .get::<theirs_turn::RequestedTrasport>()
        .unwrap()
        .as_requested_trasport()
        .unwrap();
    assert_eq!(transport.protocol().as_u8(), 17);
    assert!(msg.get::<theirs_turn::DontFragment>().is_some());
    assert!(
        msg.get::<theirs_turn::EvenPort>()
            .unwrap()
            .as_even_port()
            .unwrap()
            .reserve()
    );
    let user = msg
        .get::<theirs_stun::UserName>()
        .unwrap()
        .as_user_name()
        .unwrap();
    assert_eq!(user.as_str(), USER);
    assert!(msg.get::<theirs_stun::MessageIntegrity>().is_some());
    assert!(msg.get::<theirs_stun::Fingerprint>().is_some());

    // The same bytes with one changed bit must fail there too: the check above was real.
    let mut bad = bytes.clone();
    bad[30] ^= 1;
    let ctx = DecoderContextBuilder::default()
        .with_key(their_key(AlgorithmId::MD5))
        .with_validation()
        .build();
    assert!(
        MessageDecoderBuilder::default()
            .with_context(ctx)
            .build()
            .decode(&bad)
            .is_err()
    );
}

#[test]
fn our_allocate_response_with_both_families_and_sha256_verifies_there() {
    let key = long_term_key_sha256(USER, REALM, PASSWORD);
    let tid = TransactionId::new([0xA5; 12]);
    let v4: SocketAddr = "198.51.100.7:50000".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::7]:50002".parse().unwrap();
    let mapped: SocketAddr = "[2001:db8:1::42]:61000".parse().unwrap();
    let mut out = Vec::new();
    let mut b = MessageBuilder::new(
        &mut out,
        MessageType::new(Method::ALLOCATE, Class::SuccessResponse),
        tid,
    );
    b.add_xor_relayed_address(v4)
        .add_xor_relayed_address(v6)
        .add_xor_mapped_address(mapped)
        .add_lifetime(3600)
        .add(&ReservationToken(*b"tokentok"))
        .add_message_integrity_sha256(&key)
        .add_fingerprint();
    let bytes = b.finish().unwrap().to_vec();

    let msg = decode_there(&bytes, Some(their_key(AlgorithmId::SHA256)));
    let relayed: Vec<SocketAddr> = msg
        .attributes()
        .iter()
        .filter_map(|a| a.as_xor_relayed_address().ok())
        .map(|a| *a.socket_address())
        .collect();
    assert_eq!(relayed, vec![v4, v6]);
    let m = msg
        .get::<theirs_stun::XorMappedAddress>()
        .unwrap()
        .as_xor_mapped_address()
        .unwrap();
    assert_eq!(*m.socket_address(), mapped);
    let t = msg
        .get::<theirs_turn::ReservationToken>()
        .unwrap()
        .as_reservation_token()
        .unwrap();
    assert_eq!(t.token(), b"tokentok");
    assert!(msg.get::<theirs_stun::MessageIntegritySha256>().is_some());
}

#[test]
fn our_error_response_and_indications_decode_there() {
    let tid = TransactionId::new([3; 12]);
    let mut out = Vec::new();
    let mut b = MessageBuilder::new(
        &mut out,
        MessageType::new(Method::ALLOCATE, Class::ErrorResponse),
        tid,
    );
    b.add_error_code(ErrorCode::UNAUTHENTICATED, "Unauthenticated")
        .add_realm(REALM)
        .add_nonce(b"obMatJos2AAABnonce")
        .add(&PasswordAlgorithms::new(&[
            PasswordAlgorithm::Sha256,
            PasswordAlgorithm::Md5,
        ]))
        .add_unknown_attributes(&[0x0031, 0x7FFF])
        .add_fingerprint();
    let msg = decode_there(b.finish().unwrap(), None);
    let code = msg
        .get::<theirs_stun::ErrorCode>()
        .unwrap()
        .as_error_code()
        .unwrap();
    assert_eq!(code.error_code().error_code(), 401);
    assert_eq!(code.error_code().reason(), "Unauthenticated");
    let algs = msg
        .get::<theirs_stun::PasswordAlgorithms>()
        .unwrap()
        .as_password_algorithms()
        .unwrap();
    let ids: Vec<AlgorithmId> = algs.iter().map(|a| a.algorithm()).collect();
    assert_eq!(ids, vec![AlgorithmId::SHA256, AlgorithmId::MD5]);
    let unknown = msg
        .get::<theirs_stun::UnknownAttributes>()
        .unwrap()
        .as_unknown_attributes()
        .unwrap();
    assert_eq!(unknown.attributes(), &[0x0031, 0x7FFF]);

    // Send indication (client to server) and ChannelBind request.
    let peer: SocketAddr = "203.0.113.5:9999".parse().unwrap();
    out.clear();
    let mut b = MessageBuilder::new(&mut out, MessageType::SEND_INDICATION, tid);
    b.add_xor_peer_address(peer).add_data(b"hello, peer");
    let msg = decode_there(b.finish().unwrap(), None);
    assert_eq!(msg.method(), methods::SEND);
    assert_eq!(msg.class(), MessageClass::Indication);
    let p = msg
        .get::<theirs_turn::XorPeerAddress>()
        .unwrap()
        .as_xor_peer_address()
        .unwrap();
    assert_eq!(*p.socket_address(), peer);
    let d = msg.get::<theirs_turn::Data>().unwrap().as_data().unwrap();
    assert_eq!(d.as_bytes(), b"hello, peer");

    out.clear();
    let mut b = MessageBuilder::new(
        &mut out,
        MessageType::new(Method::CHANNEL_BIND, Class::Request),
        tid,
    );
    b.add_channel_number(0x4001)
        .add_xor_peer_address(peer)
        .add(&RequestedAddressFamily(
            switchboard_stun::attr::AddressFamily::V4,
        ));
    let msg = decode_there(b.finish().unwrap(), None);
    let c = msg
        .get::<theirs_turn::ChannelNumber>()
        .unwrap()
        .as_channel_number()
        .unwrap();
    assert_eq!(c.number(), 0x4001);
}

#[test]
fn their_messages_parse_and_verify_here() {
    let peer1: SocketAddr = "192.0.2.10:4000".parse().unwrap();
    let peer2: SocketAddr = "[2001:db8::10]:4001".parse().unwrap();
    for (algorithm, ours_key) in [
        (
            AlgorithmId::MD5,
            long_term_key_md5(USER, REALM, PASSWORD).to_vec(),
        ),
        (
            AlgorithmId::SHA256,
            long_term_key_sha256(USER, REALM, PASSWORD).to_vec(),
        ),
    ] {
        let key = their_key(algorithm);
        let integrity = if algorithm == AlgorithmId::MD5 {
            stun_rs::StunAttribute::MessageIntegrity(theirs_stun::MessageIntegrity::new(key))
        } else {
            stun_rs::StunAttribute::MessageIntegritySha256(
                theirs_stun::MessageIntegritySha256::new(key),
            )
        };
        let tid: [u8; 12] = *b"theirs-tid-1";
        let msg = StunMessageBuilder::new(methods::CREATE_PERMMISSION, MessageClass::Request)
            .with_transaction_id(stun_rs::TransactionId::from(tid))
            .with_attribute(theirs_turn::XorPeerAddress::from(peer1))
            .with_attribute(theirs_turn::XorPeerAddress::from(peer2))
            .with_attribute(theirs_stun::UserName::new(USER).unwrap())
            .with_attribute(theirs_stun::Realm::new(REALM).unwrap())
            .with_attribute(theirs_stun::Nonce::new("nonce-value").unwrap())
            .with_attribute(theirs_stun::Software::new("stun-rs").unwrap())
            .with_attribute(integrity)
            .with_attribute(theirs_stun::Fingerprint::default())
            .build();
        let bytes = encode_there(&msg);

        let ours = Message::parse(&bytes).unwrap();
        assert_eq!(
            ours.message_type(),
            MessageType::new(Method::CREATE_PERMISSION, Class::Request)
        );
        assert_eq!(ours.transaction_id(), TransactionId::new(tid));
        let peers: Vec<SocketAddr> = ours
            .get_all::<XorPeerAddress>()
            .map(|p| p.unwrap().0)
            .collect();
        assert_eq!(peers, vec![peer1, peer2]);
        assert_eq!(ours.get::<Username>().unwrap(), Some(Username(USER)));
        assert_eq!(ours.get::<Realm>().unwrap(), Some(Realm(REALM)));
        assert_eq!(ours.get::<Nonce>().unwrap(), Some(Nonce(b"nonce-value")));
        assert_eq!(ours.get::<Software>().unwrap(), Some(Software("stun-rs")));
        let expected = if algorithm == AlgorithmId::MD5 {
            IntegrityAlgorithm::HmacSha1
        } else {
            IntegrityAlgorithm::HmacSha256
        };
        assert_eq!(ours.verify_integrity(&ours_key), Ok(expected));
        assert!(ours.verify_integrity(b"wrong key").is_err());
        ours.verify_fingerprint().unwrap();
        assert_eq!(ours.unknown_comprehension_required().count(), 0);
    }
}

#[test]
fn their_data_indication_and_allocate_response_parse_here() {
    let peer: SocketAddr = "[2001:db8::99]:5555".parse().unwrap();
    let payload: Vec<u8> = (0..=255u8).cycle().take(1001).collect();
    let msg = StunMessageBuilder::new(methods::DATA, MessageClass::Indication)
        .with_attribute(theirs_turn::XorPeerAddress::from(peer))
        .with_attribute(theirs_turn::Data::new(payload.clone()))
        .build();
    let bytes = encode_there(&msg);
    let ours = Message::parse(&bytes).unwrap();
    assert_eq!(ours.message_type(), MessageType::DATA_INDICATION);
    assert_eq!(
        ours.get::<XorPeerAddress>().unwrap(),
        Some(XorPeerAddress(peer))
    );
    assert_eq!(ours.get::<Data>().unwrap(), Some(Data(&payload)));

    let relayed: SocketAddr = "198.51.100.1:49152".parse().unwrap();
    let mapped: SocketAddr = "203.0.113.1:1234".parse().unwrap();
    let msg = StunMessageBuilder::new(methods::ALLOCATE, MessageClass::SuccessResponse)
        .with_attribute(theirs_turn::XorRelayedAddress::from(relayed))
        .with_attribute(theirs_stun::XorMappedAddress::from(mapped))
        .with_attribute(theirs_turn::LifeTime::new(1200))
        .with_attribute(theirs_turn::ChannelNumber::new(0x4ABC))
        .with_attribute(theirs_stun::Fingerprint::default())
        .build();
    let bytes = encode_there(&msg);
    let ours = Message::parse(&bytes).unwrap();
    assert_eq!(
        ours.get::<XorRelayedAddress>().unwrap(),
        Some(XorRelayedAddress(relayed))
    );
    assert_eq!(
        ours.get::<XorMappedAddress>().unwrap(),
        Some(XorMappedAddress(mapped))
    );
    assert_eq!(ours.get::<Lifetime>().unwrap(), Some(Lifetime(1200)));
    assert_eq!(
        ours.get::<ChannelNumber>().unwrap(),
        Some(ChannelNumber(0x4ABC))
    );
    ours.verify_fingerprint().unwrap();
}

/// RFC 5769 2.4's password "The\u{AD}M\u{AA}tr\u{2168}" needs SASLprep (RFC 5389) to become
/// "TheMatrIX". RFC 8489 replaced SASLprep with OpaqueString, which stun-rs applies and which
/// rejects that password outright (U+00AD is disallowed); we apply no profile at all. On the
/// prepared password both implementations derive the same key.
#[test]
fn key_derivation_matches_and_profiles_differ_only_on_non_ascii() {
    let user = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
    let their_user = theirs_stun::UserName::new(user).unwrap();
    let realm = theirs_stun::Realm::new("example.org").unwrap();
    let md5 = Algorithm::from(AlgorithmId::MD5);
    assert!(
        HMACKey::new_long_term(
            &their_user,
            &realm,
            "The\u{00AD}M\u{00AA}tr\u{2168}",
            md5.clone()
        )
        .is_err()
    );
    let key = HMACKey::new_long_term(&their_user, &realm, "TheMatrIX", md5).unwrap();
    assert_eq!(
        key.as_bytes(),
        long_term_key_md5(user, "example.org", "TheMatrIX")
    );
    let key = HMACKey::new_long_term(
        &their_user,
        &realm,
        "TheMatrIX",
        Algorithm::from(AlgorithmId::SHA256),
    )
    .unwrap();
    assert_eq!(
        key.as_bytes(),
        long_term_key_sha256(user, "example.org", "TheMatrIX")
    );
}

/// The rarely used attributes, both ways: RFC 8656's family and ICMP attributes, USERHASH,
/// PASSWORD-ALGORITHM, the plain address attributes and the ICE ones.
#[test]
fn rare_attributes_agree_both_ways() {
    use switchboard_stun::attr::{
        AdditionalAddressFamily, AddressErrorCode, AddressFamily, AlternateServer, IceControlling,
        Icmp, MappedAddress, Priority, UseCandidate, Userhash,
    };
    let mapped: SocketAddr = "192.0.2.33:1000".parse().unwrap();
    let alternate: SocketAddr = "[2001:db8::33]:3478".parse().unwrap();
    let hash = switchboard_stun::userhash(USER, REALM);
    let tid = TransactionId::new([0x77; 12]);
    let mut out = Vec::new();
    let mut b = MessageBuilder::new(
        &mut out,
        MessageType::new(Method::ALLOCATE, Class::ErrorResponse),
        tid,
    );
    b.add_error_code(ErrorCode::TRY_ALTERNATE, "Try Alternate")
        .add(&MappedAddress(mapped))
        .add(&AlternateServer(alternate))
        .add(&Userhash(hash))
        .add(&PasswordAlgorithm::Sha256)
        .add(&RequestedAddressFamily(AddressFamily::V6))
        .add(&AdditionalAddressFamily(AddressFamily::V6))
        .add(&AddressErrorCode {
            family: AddressFamily::V6,
            code: 440,
            reason: "Address Family not Supported",
        })
        .add(&Icmp {
            icmp_type: 3,
            icmp_code: 4,
            error_data: 1400,
        })
        .add(&Priority(0x6e0001ff))
        .add(&IceControlling(0x0102030405060708))
        .add(&UseCandidate)
        .add(&EvenPort { reserve: false })
        .add_data(b"")
        .add_fingerprint();
    let bytes = b.finish().unwrap().to_vec();
    let msg = decode_there(&bytes, None);

    let m = msg
        .get::<theirs_stun::MappedAddress>()
        .unwrap()
        .as_mapped_address()
        .unwrap();
    assert_eq!(*m.socket_address(), mapped);
    let a = msg
        .get::<theirs_stun::AlternateServer>()
        .unwrap()
        .as_alternate_server()
        .unwrap();
    assert_eq!(*a.socket_address(), alternate);
    let h = msg
        .get::<theirs_stun::UserHash>()
        .unwrap()
        .as_user_hash()
        .unwrap();
    assert_eq!(h.hash(), hash);
    assert_eq!(
        theirs_stun::UserHash::new(USER, REALM).unwrap().hash(),
        hash,
        "USERHASH derivation"
    );
    let p = msg
        .get::<theirs_stun::PasswordAlgorithm>()
        .unwrap()
        .as_password_algorithm()
        .unwrap();
    assert_eq!(p.algorithm(), AlgorithmId::SHA256);
    let f = msg
        .get::<theirs_turn::RequestedAddressFamily>()
        .unwrap()
        .as_requested_address_family()
        .unwrap();
    assert_eq!(f.family(), stun_rs::AddressFamily::IPv6);
    let f = msg
        .get::<theirs_turn::AdditionalAddressFamily>()
        .unwrap()
        .as_additional_address_family()
        .unwrap();
    assert_eq!(f.family(), stun_rs::AddressFamily::IPv6);
    let e = msg
        .get::<theirs_turn::AddressErrorCode>()
        .unwrap()
        .as_address_error_code()
        .unwrap();
    assert_eq!(e.family(), stun_rs::AddressFamily::IPv6);
    assert_eq!(e.error_code().error_code(), 440);
    assert_eq!(e.error_code().reason(), "Address Family not Supported");
    let i = msg.get::<theirs_turn::Icmp>().unwrap().as_icmp().unwrap();
    assert_eq!((i.icmp_type().get(), i.icmp_code().get()), (3, 4));
    assert_eq!(i.error_data(), 1400u32.to_be_bytes());
    let pr = msg
        .get::<stun_rs::attributes::ice::Priority>()
        .unwrap()
        .as_priority()
        .unwrap();
    assert_eq!(pr.as_u32(), 0x6e0001ff);
    let c = msg
        .get::<stun_rs::attributes::ice::IceControlling>()
        .unwrap()
        .as_ice_controlling()
        .unwrap();
    assert_eq!(c.as_u64(), 0x0102030405060708);
    assert!(
        msg.get::<stun_rs::attributes::ice::UseCandidate>()
            .is_some()
    );
    assert!(
        !msg.get::<theirs_turn::EvenPort>()
            .unwrap()
            .as_even_port()
            .unwrap()
            .reserve()
    );

    // And back: their encoding of the same attributes parses here to the same values.
    let msg = StunMessageBuilder::new(methods::ALLOCATE, MessageClass::ErrorResponse)
        .with_transaction_id(stun_rs::TransactionId::from(*tid.as_bytes()))
        .with_attribute(theirs_turn::AddressErrorCode::new(
            stun_rs::AddressFamily::IPv4,
            stun_rs::ErrorCode::new(486, "Allocation Quota Reached").unwrap(),
        ))
        .with_attribute(theirs_turn::Icmp::new(
            theirs_turn::IcmpType::new(11).unwrap(),
            theirs_turn::IcmpCode::new(1).unwrap(),
            [0, 0, 0, 9],
        ))
        .with_attribute(theirs_stun::UserHash::new(USER, REALM).unwrap())
        .with_attribute(theirs_turn::AdditionalAddressFamily::new(
            stun_rs::AddressFamily::IPv6,
        ))
        .build();
    let bytes = encode_there(&msg);
    let ours = Message::parse(&bytes).unwrap();
    assert_eq!(
        ours.get::<AddressErrorCode>().unwrap(),
        Some(AddressErrorCode {
            family: AddressFamily::V4,
            code: 486,
            reason: "Allocation Quota Reached"
        })
    );
    assert_eq!(
        ours.get::<Icmp>().unwrap(),
        Some(Icmp {
            icmp_type: 11,
            icmp_code: 1,
            error_data: 9
        })
    );
    assert_eq!(ours.get::<Userhash>().unwrap(), Some(Userhash(hash)));
    assert_eq!(
        ours.get::<AdditionalAddressFamily>().unwrap(),
        Some(AdditionalAddressFamily(AddressFamily::V6))
    );
}
