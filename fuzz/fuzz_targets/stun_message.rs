//! Message parsing, every typed decoder, integrity and fingerprint checks, and a
//! re-encoding round trip of whatever parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_stun::attr::{
    AdditionalAddressFamily, AddressErrorCode, AlternateServer, ChannelNumber, Context, Data,
    DontFragment, ErrorCode, EvenPort, IceControlled, IceControlling, Icmp, Lifetime,
    MappedAddress, MessageIntegrity, MessageIntegritySha256, Nonce, PasswordAlgorithms, Priority,
    Realm, RequestedAddressFamily, RequestedTransport, ReservationToken, Software,
    UnknownAttributes, UseCandidate, Userhash, Username, XorMappedAddress, XorPeerAddress,
    XorRelayedAddress,
};
use switchboard_stun::{
    AttrType, Attribute, Message, MessageBuilder, PasswordAlgorithm, RawAttribute,
};

fn decode(raw: &RawAttribute<'_>, ctx: Context<'_>) {
    let v = raw.value;
    // Results are irrelevant: only panics and hangs are findings.
    let _ = match raw.attr_type {
        AttrType::MAPPED_ADDRESS => MappedAddress::read(v, ctx).is_ok(),
        AttrType::XOR_MAPPED_ADDRESS => XorMappedAddress::read(v, ctx).is_ok(),
        AttrType::XOR_PEER_ADDRESS => XorPeerAddress::read(v, ctx).is_ok(),
        AttrType::XOR_RELAYED_ADDRESS => XorRelayedAddress::read(v, ctx).is_ok(),
        AttrType::ALTERNATE_SERVER => AlternateServer::read(v, ctx).is_ok(),
        AttrType::USERNAME => Username::read(v, ctx).is_ok(),
        AttrType::USERHASH => Userhash::read(v, ctx).is_ok(),
        AttrType::MESSAGE_INTEGRITY => MessageIntegrity::read(v, ctx).is_ok(),
        AttrType::MESSAGE_INTEGRITY_SHA256 => MessageIntegritySha256::read(v, ctx).is_ok(),
        AttrType::REALM => Realm::read(v, ctx).is_ok(),
        AttrType::NONCE => Nonce::read(v, ctx).is_ok(),
        AttrType::SOFTWARE => Software::read(v, ctx).is_ok(),
        AttrType::ERROR_CODE => ErrorCode::read(v, ctx).is_ok(),
        AttrType::UNKNOWN_ATTRIBUTES => UnknownAttributes::read(v, ctx)
            .map(|u| u.iter().count())
            .is_ok(),
        AttrType::PASSWORD_ALGORITHMS => PasswordAlgorithms::read(v, ctx)
            .map(|p| p.iter().count())
            .is_ok(),
        AttrType::PASSWORD_ALGORITHM => PasswordAlgorithm::read(v, ctx).is_ok(),
        AttrType::PRIORITY => Priority::read(v, ctx).is_ok(),
        AttrType::USE_CANDIDATE => UseCandidate::read(v, ctx).is_ok(),
        AttrType::ICE_CONTROLLED => IceControlled::read(v, ctx).is_ok(),
        AttrType::ICE_CONTROLLING => IceControlling::read(v, ctx).is_ok(),
        AttrType::CHANNEL_NUMBER => ChannelNumber::read(v, ctx).is_ok(),
        AttrType::LIFETIME => Lifetime::read(v, ctx).is_ok(),
        AttrType::DATA => Data::read(v, ctx).is_ok(),
        AttrType::REQUESTED_ADDRESS_FAMILY => RequestedAddressFamily::read(v, ctx).is_ok(),
        AttrType::ADDITIONAL_ADDRESS_FAMILY => AdditionalAddressFamily::read(v, ctx).is_ok(),
        AttrType::EVEN_PORT => EvenPort::read(v, ctx).is_ok(),
        AttrType::REQUESTED_TRANSPORT => RequestedTransport::read(v, ctx).is_ok(),
        AttrType::DONT_FRAGMENT => DontFragment::read(v, ctx).is_ok(),
        AttrType::RESERVATION_TOKEN => ReservationToken::read(v, ctx).is_ok(),
        AttrType::ADDRESS_ERROR_CODE => AddressErrorCode::read(v, ctx).is_ok(),
        AttrType::ICMP => Icmp::read(v, ctx).is_ok(),
        _ => false,
    };
}

fuzz_target!(|data: &[u8]| {
    let _ = switchboard_stun::classify(data);
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    let tid = msg.transaction_id();
    for raw in msg.raw_attributes() {
        decode(
            &raw,
            Context {
                transaction_id: &tid,
            },
        );
    }
    let _ = msg.unknown_comprehension_required().count();
    let _ = msg.verify_integrity(b"fuzz-key");
    let _ = msg.verify_message_integrity(b"fuzz-key");
    let _ = msg.verify_message_integrity_sha256(b"fuzz-key");
    let _ = msg.verify_fingerprint();

    // Re-encoding every raw attribute gives a message that parses to the same attributes.
    let mut out = Vec::with_capacity(data.len());
    let mut b = MessageBuilder::new(&mut out, msg.message_type(), tid);
    for raw in msg.raw_attributes() {
        b.add_raw(raw.attr_type, raw.value);
    }
    let Ok(encoded) = b.finish() else {
        panic!("a parsed message must re-encode");
    };
    let again = Message::parse(encoded).expect("re-encoded message parses");
    assert!(
        again
            .raw_attributes()
            .map(|a| (a.attr_type, a.value))
            .eq(msg.raw_attributes().map(|a| (a.attr_type, a.value)))
    );
    assert_eq!(encoded.len(), data.len());
});
