//! Property tests: encode-then-parse is the identity, and no input makes a parser panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;
use switchboard_stun::attr::{
    AdditionalAddressFamily, AddressErrorCode, AddressFamily, AlternateServer, ChannelNumber, Data,
    DontFragment, ErrorCode, EvenPort, IceControlled, IceControlling, Icmp, Lifetime,
    MappedAddress, Nonce, PasswordAlgorithms, Priority, Realm, RequestedAddressFamily,
    RequestedTransport, ReservationToken, Software, UnknownAttributes, UseCandidate, Userhash,
    Username, XorMappedAddress, XorPeerAddress, XorRelayedAddress,
};
use switchboard_stun::{
    AttrType, Attribute, ChannelData, Class, Message, MessageBuilder, MessageType, Method,
    PasswordAlgorithm, RawAttribute, TransactionId, classify, stream_frame_len,
};

/// An attribute with owned values, so that proptest can generate and compare it.
#[derive(Debug, Clone, PartialEq)]
enum Owned {
    MappedAddress(SocketAddr),
    XorMappedAddress(SocketAddr),
    XorPeerAddress(SocketAddr),
    XorRelayedAddress(SocketAddr),
    AlternateServer(SocketAddr),
    Username(String),
    Realm(String),
    Software(String),
    Nonce(Vec<u8>),
    Userhash([u8; 32]),
    ErrorCode(u16, String),
    UnknownAttributes(Vec<u16>),
    PasswordAlgorithms(Vec<PasswordAlgorithm>),
    PasswordAlgorithm(PasswordAlgorithm),
    Priority(u32),
    IceControlled(u64),
    IceControlling(u64),
    UseCandidate,
    ChannelNumber(u16),
    Lifetime(u32),
    Data(Vec<u8>),
    RequestedAddressFamily(AddressFamily),
    AdditionalAddressFamily(AddressFamily),
    EvenPort(bool),
    RequestedTransport(u8),
    DontFragment,
    ReservationToken([u8; 8]),
    AddressErrorCode(AddressFamily, u16, String),
    Icmp(u8, u16, u32),
    /// An attribute type this crate has no decoder for.
    Raw(u16, Vec<u8>),
}

fn add(b: &mut MessageBuilder<'_>, a: &Owned) {
    match a {
        Owned::MappedAddress(x) => b.add(&MappedAddress(*x)),
        Owned::XorMappedAddress(x) => b.add(&XorMappedAddress(*x)),
        Owned::XorPeerAddress(x) => b.add(&XorPeerAddress(*x)),
        Owned::XorRelayedAddress(x) => b.add(&XorRelayedAddress(*x)),
        Owned::AlternateServer(x) => b.add(&AlternateServer(*x)),
        Owned::Username(x) => b.add(&Username(x)),
        Owned::Realm(x) => b.add(&Realm(x)),
        Owned::Software(x) => b.add(&Software(x)),
        Owned::Nonce(x) => b.add(&Nonce(x)),
        Owned::Userhash(x) => b.add(&Userhash(*x)),
        Owned::ErrorCode(code, reason) => b.add(&ErrorCode {
            code: *code,
            reason,
        }),
        Owned::UnknownAttributes(x) => b.add(&UnknownAttributes::new(x)),
        Owned::PasswordAlgorithms(x) => b.add(&PasswordAlgorithms::new(x)),
        Owned::PasswordAlgorithm(x) => b.add(x),
        Owned::Priority(x) => b.add(&Priority(*x)),
        Owned::IceControlled(x) => b.add(&IceControlled(*x)),
        Owned::IceControlling(x) => b.add(&IceControlling(*x)),
        Owned::UseCandidate => b.add(&UseCandidate),
        Owned::ChannelNumber(x) => b.add(&ChannelNumber(*x)),
        Owned::Lifetime(x) => b.add(&Lifetime(*x)),
        Owned::Data(x) => b.add(&Data(x)),
        Owned::RequestedAddressFamily(x) => b.add(&RequestedAddressFamily(*x)),
        Owned::AdditionalAddressFamily(x) => b.add(&AdditionalAddressFamily(*x)),
        Owned::EvenPort(reserve) => b.add(&EvenPort { reserve: *reserve }),
        Owned::RequestedTransport(x) => b.add(&RequestedTransport(*x)),
        Owned::DontFragment => b.add(&DontFragment),
        Owned::ReservationToken(x) => b.add(&ReservationToken(*x)),
        Owned::AddressErrorCode(family, code, reason) => b.add(&AddressErrorCode {
            family: *family,
            code: *code,
            reason,
        }),
        Owned::Icmp(t, c, d) => b.add(&Icmp {
            icmp_type: *t,
            icmp_code: *c,
            error_data: *d,
        }),
        Owned::Raw(t, v) => b.add_raw(AttrType(*t), v),
    };
}

fn read<'a, A: Attribute<'a>>(msg: &Message<'a>, raw: &RawAttribute<'a>) -> A {
    let tid = msg.transaction_id();
    A::read(
        raw.value,
        switchboard_stun::attr::Context {
            transaction_id: &tid,
        },
    )
    .unwrap()
}

fn decode(msg: &Message<'_>, raw: &RawAttribute<'_>) -> Owned {
    match raw.attr_type {
        AttrType::MAPPED_ADDRESS => Owned::MappedAddress(read::<MappedAddress>(msg, raw).0),
        AttrType::XOR_MAPPED_ADDRESS => {
            Owned::XorMappedAddress(read::<XorMappedAddress>(msg, raw).0)
        }
        AttrType::XOR_PEER_ADDRESS => Owned::XorPeerAddress(read::<XorPeerAddress>(msg, raw).0),
        AttrType::XOR_RELAYED_ADDRESS => {
            Owned::XorRelayedAddress(read::<XorRelayedAddress>(msg, raw).0)
        }
        AttrType::ALTERNATE_SERVER => Owned::AlternateServer(read::<AlternateServer>(msg, raw).0),
        AttrType::USERNAME => Owned::Username(read::<Username>(msg, raw).0.to_owned()),
        AttrType::REALM => Owned::Realm(read::<Realm>(msg, raw).0.to_owned()),
        AttrType::SOFTWARE => Owned::Software(read::<Software>(msg, raw).0.to_owned()),
        AttrType::NONCE => Owned::Nonce(read::<Nonce>(msg, raw).0.to_vec()),
        AttrType::USERHASH => Owned::Userhash(read::<Userhash>(msg, raw).0),
        AttrType::ERROR_CODE => {
            let e = read::<ErrorCode>(msg, raw);
            Owned::ErrorCode(e.code, e.reason.to_owned())
        }
        AttrType::UNKNOWN_ATTRIBUTES => Owned::UnknownAttributes(
            read::<UnknownAttributes>(msg, raw)
                .iter()
                .map(|t| t.0)
                .collect(),
        ),
        AttrType::PASSWORD_ALGORITHMS => {
            Owned::PasswordAlgorithms(read::<PasswordAlgorithms>(msg, raw).iter().collect())
        }
        AttrType::PASSWORD_ALGORITHM => {
            Owned::PasswordAlgorithm(read::<PasswordAlgorithm>(msg, raw))
        }
        AttrType::PRIORITY => Owned::Priority(read::<Priority>(msg, raw).0),
        AttrType::ICE_CONTROLLED => Owned::IceControlled(read::<IceControlled>(msg, raw).0),
        AttrType::ICE_CONTROLLING => Owned::IceControlling(read::<IceControlling>(msg, raw).0),
        AttrType::USE_CANDIDATE => {
            read::<UseCandidate>(msg, raw);
            Owned::UseCandidate
        }
        AttrType::CHANNEL_NUMBER => Owned::ChannelNumber(read::<ChannelNumber>(msg, raw).0),
        AttrType::LIFETIME => Owned::Lifetime(read::<Lifetime>(msg, raw).0),
        AttrType::DATA => Owned::Data(read::<Data>(msg, raw).0.to_vec()),
        AttrType::REQUESTED_ADDRESS_FAMILY => {
            Owned::RequestedAddressFamily(read::<RequestedAddressFamily>(msg, raw).0)
        }
        AttrType::ADDITIONAL_ADDRESS_FAMILY => {
            Owned::AdditionalAddressFamily(read::<AdditionalAddressFamily>(msg, raw).0)
        }
        AttrType::EVEN_PORT => Owned::EvenPort(read::<EvenPort>(msg, raw).reserve),
        AttrType::REQUESTED_TRANSPORT => {
            Owned::RequestedTransport(read::<RequestedTransport>(msg, raw).0)
        }
        AttrType::DONT_FRAGMENT => {
            read::<DontFragment>(msg, raw);
            Owned::DontFragment
        }
        AttrType::RESERVATION_TOKEN => {
            Owned::ReservationToken(read::<ReservationToken>(msg, raw).0)
        }
        AttrType::ADDRESS_ERROR_CODE => {
            let e = read::<AddressErrorCode>(msg, raw);
            Owned::AddressErrorCode(e.family, e.code, e.reason.to_owned())
        }
        AttrType::ICMP => {
            let i = read::<Icmp>(msg, raw);
            Owned::Icmp(i.icmp_type, i.icmp_code, i.error_data)
        }
        t => Owned::Raw(t.0, raw.value.to_vec()),
    }
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

fn family() -> impl Strategy<Value = AddressFamily> {
    prop_oneof![Just(AddressFamily::V4), Just(AddressFamily::V6)]
}

fn algorithm() -> impl Strategy<Value = PasswordAlgorithm> {
    any::<u16>().prop_map(PasswordAlgorithm::from_u16)
}

fn error_code() -> impl Strategy<Value = u16> {
    (3u16..=6, 0u16..=99).prop_map(|(c, n)| c * 100 + n)
}

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!(".{{0,{max}}}"))
        .unwrap()
        .prop_filter("byte limit", |s| s.len() <= 763)
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max)
}

fn attribute() -> impl Strategy<Value = Owned> {
    prop_oneof![
        socket_addr().prop_map(Owned::MappedAddress),
        socket_addr().prop_map(Owned::XorMappedAddress),
        socket_addr().prop_map(Owned::XorPeerAddress),
        socket_addr().prop_map(Owned::XorRelayedAddress),
        socket_addr().prop_map(Owned::AlternateServer),
        text(40)
            .prop_filter("username limit", |s| s.len() <= 513)
            .prop_map(Owned::Username),
        text(40).prop_map(Owned::Realm),
        text(40).prop_map(Owned::Software),
        bytes(64).prop_map(Owned::Nonce),
        any::<[u8; 32]>().prop_map(Owned::Userhash),
        (error_code(), text(30)).prop_map(|(c, r)| Owned::ErrorCode(c, r)),
        proptest::collection::vec(any::<u16>(), 0..6).prop_map(Owned::UnknownAttributes),
        proptest::collection::vec(algorithm(), 0..4).prop_map(Owned::PasswordAlgorithms),
        algorithm().prop_map(Owned::PasswordAlgorithm),
        any::<u32>().prop_map(Owned::Priority),
        any::<u64>().prop_map(Owned::IceControlled),
        any::<u64>().prop_map(Owned::IceControlling),
        Just(Owned::UseCandidate),
        any::<u16>().prop_map(Owned::ChannelNumber),
        any::<u32>().prop_map(Owned::Lifetime),
        bytes(300).prop_map(Owned::Data),
        family().prop_map(Owned::RequestedAddressFamily),
        family().prop_map(Owned::AdditionalAddressFamily),
        any::<bool>().prop_map(Owned::EvenPort),
        any::<u8>().prop_map(Owned::RequestedTransport),
        Just(Owned::DontFragment),
        any::<[u8; 8]>().prop_map(Owned::ReservationToken),
        (family(), error_code(), text(30)).prop_map(|(f, c, r)| Owned::AddressErrorCode(f, c, r)),
        (0u8..128, 0u16..512, any::<u32>()).prop_map(|(t, c, d)| Owned::Icmp(t, c, d)),
        (any::<u16>(), bytes(40))
            .prop_filter("types without a decoder", |(t, _)| !AttrType(*t).is_known())
            .prop_map(|(t, v)| Owned::Raw(t, v)),
    ]
}

fn message_type() -> impl Strategy<Value = MessageType> {
    (0u16..0x1000, 0u8..4).prop_map(|(m, c)| {
        let class = [
            Class::Request,
            Class::Indication,
            Class::SuccessResponse,
            Class::ErrorResponse,
        ][usize::from(c)];
        MessageType::new(Method::new(m).unwrap(), class)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encode_then_parse_is_identity(
        mt in message_type(),
        tid in any::<[u8; 12]>(),
        attrs in proptest::collection::vec(attribute(), 0..12),
        key in bytes(40),
        mi in any::<bool>(),
        mi256 in prop_oneof![Just(None), (4usize..=8).prop_map(|n| Some(n * 4))],
        fp in any::<bool>(),
        prefix in bytes(8),
    ) {
        let mut out = prefix.clone();
        let mut b = MessageBuilder::new(&mut out, mt, TransactionId::new(tid));
        for a in &attrs {
            add(&mut b, a);
        }
        if mi {
            b.add_message_integrity(&key);
        }
        if let Some(len) = mi256 {
            b.add_message_integrity_sha256_truncated(&key, len);
        }
        if fp {
            b.add_fingerprint();
        }
        let encoded = b.finish().unwrap().to_vec();
        prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
        prop_assert_eq!(&out[prefix.len()..], &encoded[..]);

        let msg = Message::parse(&encoded).unwrap();
        prop_assert_eq!(msg.message_type(), mt);
        prop_assert_eq!(msg.transaction_id(), TransactionId::new(tid));
        let decoded: Vec<Owned> = msg
            .attributes()
            .filter(|a| ![AttrType::MESSAGE_INTEGRITY, AttrType::MESSAGE_INTEGRITY_SHA256, AttrType::FINGERPRINT]
                .contains(&a.attr_type))
            .map(|a| decode(&msg, &a))
            .collect();
        prop_assert_eq!(decoded, attrs);
        prop_assert_eq!(msg.has_message_integrity(), mi);
        prop_assert_eq!(msg.has_message_integrity_sha256(), mi256.is_some());
        prop_assert_eq!(msg.has_fingerprint(), fp);
        if mi {
            prop_assert!(msg.verify_message_integrity(&key).is_ok());
        }
        if mi256.is_some() {
            prop_assert!(msg.verify_message_integrity_sha256(&key).is_ok());
        }
        if fp {
            prop_assert!(msg.verify_fingerprint().is_ok());
        }
    }

    #[test]
    fn channel_data_round_trips(channel in 0x4000u16..=0x4FFF, data in bytes(600), pad in any::<bool>()) {
        let cd = ChannelData::new(channel, &data).unwrap();
        let mut out = Vec::new();
        cd.encode(&mut out, pad);
        prop_assert_eq!(out.len(), cd.encoded_len(pad));
        prop_assert_eq!(ChannelData::parse(&out).unwrap(), cd);
        prop_assert_eq!(classify(&out), switchboard_stun::PacketKind::ChannelData);
        if pad {
            prop_assert_eq!(stream_frame_len(&out).unwrap(), Some(out.len()));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in bytes(200)) {
        exercise(&input);
    }

    #[test]
    fn mutated_messages_never_panic(
        attrs in proptest::collection::vec(attribute(), 0..6),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let mut out = Vec::new();
        let mut b = MessageBuilder::new(&mut out, MessageType::BINDING_REQUEST, TransactionId::default());
        for a in &attrs {
            add(&mut b, a);
        }
        b.add_message_integrity(b"k").add_fingerprint();
        let mut bytes = b.finish().unwrap().to_vec();
        for (at, v) in flips {
            let i = at % bytes.len();
            bytes[i] = v;
        }
        exercise(&bytes);
        exercise(&bytes[..cut % (bytes.len() + 1)]);
    }
}

/// Runs every reader over `input`; only panics matter here.
fn exercise(input: &[u8]) {
    let _ = classify(input);
    let _ = stream_frame_len(input);
    let _ = ChannelData::parse(input);
    if let Ok(msg) = Message::parse(input) {
        for raw in msg.raw_attributes() {
            let _ = raw.attr_type.is_known();
        }
        let _ = msg.unknown_comprehension_required().count();
        for raw in msg.attributes() {
            if raw.attr_type.is_known() {
                let _ = try_decode(&msg, &raw);
            }
        }
        let _ = msg.verify_message_integrity(b"key");
        let _ = msg.verify_message_integrity_sha256(b"key");
        let _ = msg.verify_fingerprint();
    }
}

fn try_decode(msg: &Message<'_>, raw: &RawAttribute<'_>) -> bool {
    let tid = msg.transaction_id();
    let ctx = switchboard_stun::attr::Context {
        transaction_id: &tid,
    };
    let v = raw.value;
    match raw.attr_type {
        AttrType::MAPPED_ADDRESS => MappedAddress::read(v, ctx).is_ok(),
        AttrType::XOR_MAPPED_ADDRESS => XorMappedAddress::read(v, ctx).is_ok(),
        AttrType::XOR_PEER_ADDRESS => XorPeerAddress::read(v, ctx).is_ok(),
        AttrType::XOR_RELAYED_ADDRESS => XorRelayedAddress::read(v, ctx).is_ok(),
        AttrType::ALTERNATE_SERVER => AlternateServer::read(v, ctx).is_ok(),
        AttrType::USERNAME => Username::read(v, ctx).is_ok(),
        AttrType::REALM => Realm::read(v, ctx).is_ok(),
        AttrType::SOFTWARE => Software::read(v, ctx).is_ok(),
        AttrType::NONCE => Nonce::read(v, ctx).is_ok(),
        AttrType::USERHASH => Userhash::read(v, ctx).is_ok(),
        AttrType::ERROR_CODE => ErrorCode::read(v, ctx).is_ok(),
        AttrType::UNKNOWN_ATTRIBUTES => UnknownAttributes::read(v, ctx)
            .map(|u| u.iter().count())
            .is_ok(),
        AttrType::PASSWORD_ALGORITHMS => PasswordAlgorithms::read(v, ctx)
            .map(|p| p.iter().count())
            .is_ok(),
        AttrType::PASSWORD_ALGORITHM => PasswordAlgorithm::read(v, ctx).is_ok(),
        AttrType::CHANNEL_NUMBER => ChannelNumber::read(v, ctx).is_ok(),
        AttrType::LIFETIME => Lifetime::read(v, ctx).is_ok(),
        AttrType::EVEN_PORT => EvenPort::read(v, ctx).is_ok(),
        AttrType::ADDRESS_ERROR_CODE => AddressErrorCode::read(v, ctx).is_ok(),
        AttrType::ICMP => Icmp::read(v, ctx).is_ok(),
        AttrType::REQUESTED_ADDRESS_FAMILY => RequestedAddressFamily::read(v, ctx).is_ok(),
        _ => false,
    }
}
