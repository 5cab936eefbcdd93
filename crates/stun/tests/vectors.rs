//! The RFC 5769 and RFC 8489 Appendix B.1 vectors in tests/vectors/, byte for byte.

use std::net::SocketAddr;

use switchboard_stun::attr::{
    ErrorCode, Fingerprint, IceControlled, MessageIntegrity, MessageIntegritySha256, Nonce,
    Priority, Realm, Software, Userhash, Username, XorMappedAddress,
};
use switchboard_stun::{
    AttrType, Class, FingerprintError, IntegrityAlgorithm, IntegrityError, Message, MessageBuilder,
    MessageType, Method, PasswordAlgorithm, TransactionId, long_term_key, long_term_key_md5,
    long_term_key_sha256, userhash,
};

const SHORT_TERM_PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";
const MATRIX_USER: &str = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
/// "The<U+00AD>M<U+00AA>tr<U+2168>" after SASLprep, which this crate leaves to the caller.
const MATRIX_PASSWORD: &str = "TheMatrIX";

fn vector(name: &str) -> Vec<u8> {
    let path = format!("{}/../../tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn tid(s: &str) -> TransactionId {
    TransactionId::new(hex(s).try_into().unwrap())
}

/// The "one line" hex of each vector in the text file must equal the .bin files.
#[test]
fn bin_files_match_text_file() {
    let text = String::from_utf8(vector("stun-test-vectors.txt")).unwrap();
    let lines: Vec<Vec<u8>> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("one line: "))
        .map(hex)
        .collect();
    let bins = [
        "rfc5769-2.1-request.bin",
        "rfc5769-2.2-ipv4-response.bin",
        "rfc5769-2.3-ipv6-response.bin",
        "rfc5769-2.4-long-term-request.bin",
        "rfc8489-b.1-sha256-userhash-request.bin",
    ];
    assert_eq!(lines.len(), bins.len());
    for (line, bin) in lines.iter().zip(bins) {
        assert_eq!(line, &vector(bin), "{bin}");
    }
}

#[test]
fn rfc5769_2_1_request() {
    let bytes = vector("rfc5769-2.1-request.bin");
    assert_eq!(bytes.len(), 108);
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(msg.message_type(), MessageType::BINDING_REQUEST);
    assert_eq!(msg.transaction_id(), tid("b7e7a701bc34d686fa87dfae"));
    assert_eq!(
        msg.get::<Software>().unwrap(),
        Some(Software("STUN test client"))
    );
    assert_eq!(msg.get::<Priority>().unwrap(), Some(Priority(0x6e0001ff)));
    assert_eq!(
        msg.get::<IceControlled>().unwrap(),
        Some(IceControlled(0x932ff9b151263b36))
    );
    assert_eq!(msg.get::<Username>().unwrap(), Some(Username("evtj:h6vY")));
    assert_eq!(
        msg.get::<MessageIntegrity>().unwrap().unwrap().0.to_vec(),
        hex("9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2")
    );
    assert_eq!(msg.unknown_comprehension_required().count(), 0);
    check_stated(
        &msg,
        "9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2",
        Some(0xe57a3bcf),
    );
    msg.verify_message_integrity(SHORT_TERM_PASSWORD.as_bytes())
        .unwrap();
    assert_eq!(
        msg.verify_integrity(SHORT_TERM_PASSWORD.as_bytes()),
        Ok(IntegrityAlgorithm::HmacSha1)
    );
    assert_eq!(
        msg.verify_message_integrity(b"wrong"),
        Err(IntegrityError::Mismatch)
    );
    msg.verify_fingerprint().unwrap();

    // Our encoder pads with zeros where the vector pads with spaces, so only the
    // attribute-by-attribute content and the checks can match, not the bytes.
    let mut out = Vec::new();
    let mut b = MessageBuilder::new(&mut out, msg.message_type(), msg.transaction_id());
    b.add_software("STUN test client")
        .add(&Priority(0x6e0001ff))
        .add(&IceControlled(0x932ff9b151263b36))
        .add_username("evtj:h6vY")
        .add_message_integrity(SHORT_TERM_PASSWORD.as_bytes())
        .add_fingerprint();
    let ours = b.finish().unwrap();
    assert_eq!(ours.len(), bytes.len());
    let reparsed = Message::parse(ours).unwrap();
    reparsed
        .verify_message_integrity(SHORT_TERM_PASSWORD.as_bytes())
        .unwrap();
    reparsed.verify_fingerprint().unwrap();
    let differing: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] != ours[i]).collect();
    assert!(
        differing.iter().all(|&i| i >= 73),
        "only padding, MI and FINGERPRINT differ: {differing:?}"
    );
}

/// The MESSAGE-INTEGRITY and FINGERPRINT values the vector file states.
fn check_stated(msg: &Message<'_>, mi: &str, fp: Option<u32>) {
    assert_eq!(
        msg.get::<MessageIntegrity>().unwrap().unwrap().0.to_vec(),
        hex(mi)
    );
    assert_eq!(msg.get::<Fingerprint>().unwrap().map(|f| f.0), fp);
}

fn check_response(name: &str, expected_addr: &str, expected_len: usize, mi: &str, fp: u32) {
    let bytes = vector(name);
    assert_eq!(bytes.len(), expected_len);
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(msg.message_type(), MessageType::BINDING_RESPONSE);
    assert_eq!(msg.class(), Class::SuccessResponse);
    assert_eq!(msg.method(), Method::BINDING);
    assert_eq!(
        msg.get::<Software>().unwrap(),
        Some(Software("test vector"))
    );
    check_stated(&msg, mi, Some(fp));
    let addr: SocketAddr = expected_addr.parse().unwrap();
    assert_eq!(
        msg.get::<XorMappedAddress>().unwrap(),
        Some(XorMappedAddress(addr))
    );
    msg.verify_message_integrity(SHORT_TERM_PASSWORD.as_bytes())
        .unwrap();
    msg.verify_fingerprint().unwrap();
}

#[test]
fn rfc5769_2_2_ipv4_response() {
    check_response(
        "rfc5769-2.2-ipv4-response.bin",
        "192.0.2.1:32853",
        80,
        "2b91f599fd9e90c38c7489f92af9ba53f06be7d7",
        0xc07d4c96,
    );
}

#[test]
fn rfc5769_2_3_ipv6_response() {
    check_response(
        "rfc5769-2.3-ipv6-response.bin",
        "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
        92,
        "a382954e4be67bf11784c97c8292c275bfe3ed41",
        0xc8fb0b4c,
    );
}

#[test]
fn rfc5769_2_4_long_term_request_and_byte_exact_reencoding() {
    let bytes = vector("rfc5769-2.4-long-term-request.bin");
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(msg.get::<Username>().unwrap(), Some(Username(MATRIX_USER)));
    assert_eq!(msg.get::<Realm>().unwrap(), Some(Realm("example.org")));
    let nonce = b"f//499k954d6OL34oL9FSTvy64sA";
    assert_eq!(msg.get::<Nonce>().unwrap(), Some(Nonce(nonce)));
    assert!(!msg.has_fingerprint());
    assert_eq!(msg.verify_fingerprint(), Err(FingerprintError::Missing));
    check_stated(&msg, "f67024656dd64a3e02b8e0712e85c9a28ca89666", None);
    check_stated(&msg, "f67024656dd64a3e02b8e0712e85c9a28ca89666", None);

    let key = long_term_key_md5(MATRIX_USER, "example.org", MATRIX_PASSWORD);
    assert_eq!(key.to_vec(), hex("e8ca7ad59d5eb0518e312911d2dab2a9"));
    assert_eq!(
        long_term_key(
            PasswordAlgorithm::Md5,
            MATRIX_USER,
            "example.org",
            MATRIX_PASSWORD
        )
        .unwrap()
        .as_bytes(),
        key
    );
    msg.verify_message_integrity(&key).unwrap();

    // As coturn does: rebuild from (tid, username, nonce, realm, password), compare bytes.
    let mut out = Vec::new();
    let mut b = MessageBuilder::new(
        &mut out,
        MessageType::BINDING_REQUEST,
        tid("78ad3433c6ad72c029da412e"),
    );
    b.add_username(MATRIX_USER)
        .add_nonce(nonce)
        .add_realm("example.org")
        .add_message_integrity(&key);
    assert_eq!(b.finish().unwrap(), &bytes[..]);
}

#[test]
fn rfc8489_b1_sha256_userhash_request_and_byte_exact_reencoding() {
    let bytes = vector("rfc8489-b.1-sha256-userhash-request.bin");
    let msg = Message::parse(&bytes).unwrap();
    let hash = userhash(MATRIX_USER, "example.org");
    assert_eq!(
        hash.to_vec(),
        hex("4a3cf38fef6992bda952c6780417da0f24819415569e60b205c46e41407f1704")
    );
    assert_eq!(msg.get::<Userhash>().unwrap(), Some(Userhash(hash)));
    assert_eq!(
        msg.get::<PasswordAlgorithm>().unwrap(),
        Some(PasswordAlgorithm::Sha256)
    );
    let nonce = b"obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA";
    assert_eq!(msg.get::<Nonce>().unwrap(), Some(Nonce(nonce)));
    assert!(!msg.has_message_integrity());
    assert!(msg.has_message_integrity_sha256());

    let key = long_term_key_sha256(MATRIX_USER, "example.org", MATRIX_PASSWORD);
    assert_eq!(
        key.to_vec(),
        hex("dd295a613b9058c3c23d6dc7165bda072304d989c9d0af3a8c7e184b4f9bb4a1")
    );
    assert_eq!(
        msg.verify_integrity(&key),
        Ok(IntegrityAlgorithm::HmacSha256)
    );
    assert_eq!(
        msg.get::<MessageIntegritySha256>()
            .unwrap()
            .unwrap()
            .0
            .to_vec(),
        hex("b5c7bf005b6c52a21c51c5e892f81924136296cb927c43149309278cc6518e65")
    );
    assert_eq!(
        msg.verify_message_integrity(&key),
        Err(IntegrityError::Missing)
    );
    let md5 = long_term_key_md5(MATRIX_USER, "example.org", MATRIX_PASSWORD);
    assert_eq!(
        msg.verify_message_integrity_sha256(&md5),
        Err(IntegrityError::Mismatch)
    );

    let mut out = Vec::new();
    let mut b = MessageBuilder::new(
        &mut out,
        MessageType::BINDING_REQUEST,
        tid("78ad3433c6ad72c029da412e"),
    );
    b.add(&Userhash(hash))
        .add_nonce(nonce)
        .add_realm("example.org")
        .add(&PasswordAlgorithm::Sha256)
        .add_message_integrity_sha256(&key);
    assert_eq!(b.finish().unwrap(), &bytes[..]);
}

/// coturn's negative test: byte 27 changed, FINGERPRINT must fail (2.1 covers it).
#[test]
fn negative_flipped_byte_27_fails_fingerprint() {
    for name in [
        "rfc5769-2.1-request.bin",
        "rfc5769-2.2-ipv4-response.bin",
        "rfc5769-2.3-ipv6-response.bin",
    ] {
        let mut bytes = vector(name);
        bytes[27] = 23;
        let msg = Message::parse(&bytes).unwrap();
        assert!(
            matches!(
                msg.verify_fingerprint(),
                Err(FingerprintError::Mismatch { .. })
            ),
            "{name}"
        );
        assert_eq!(
            msg.verify_message_integrity(SHORT_TERM_PASSWORD.as_bytes()),
            Err(IntegrityError::Mismatch),
            "{name}"
        );
    }
}

/// coturn's negative test: byte 32 of 2.4 changed (inside USERNAME), integrity must fail.
#[test]
fn negative_flipped_byte_32_fails_integrity() {
    let mut bytes = vector("rfc5769-2.4-long-term-request.bin");
    bytes[32] = 10;
    let msg = Message::parse(&bytes).unwrap();
    let key = long_term_key_md5(MATRIX_USER, "example.org", MATRIX_PASSWORD);
    assert_eq!(
        msg.verify_message_integrity(&key),
        Err(IntegrityError::Mismatch)
    );
}

/// Padding bytes are covered by the HMAC: rewriting 2.1's space padding to zeros breaks it.
#[test]
fn negative_rewritten_padding_fails_integrity() {
    let mut bytes = vector("rfc5769-2.1-request.bin");
    let msg = Message::parse(&bytes).unwrap();
    let username = msg
        .attributes()
        .find(|a| a.attr_type == AttrType::USERNAME)
        .unwrap();
    let pad = username.offset + 4 + username.value.len();
    assert_eq!(&bytes[pad..pad + 3], b"   ");
    bytes[pad..pad + 3].fill(0);
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(msg.get::<Username>().unwrap(), Some(Username("evtj:h6vY")));
    assert_eq!(
        msg.verify_message_integrity(SHORT_TERM_PASSWORD.as_bytes()),
        Err(IntegrityError::Mismatch)
    );
    assert!(msg.verify_fingerprint().is_err());
}

#[test]
fn error_response_round_trip() {
    let mut out = Vec::new();
    let mut b = MessageBuilder::new(
        &mut out,
        MessageType::new(Method::ALLOCATE, Class::ErrorResponse),
        TransactionId::new([9; 12]),
    );
    b.add_error_code(ErrorCode::UNAUTHENTICATED, "Unauthenticated")
        .add_realm("switchboard")
        .add_nonce(b"abc");
    let msg = Message::parse(b.finish().unwrap()).unwrap();
    assert_eq!(
        msg.get::<ErrorCode>().unwrap(),
        Some(ErrorCode {
            code: 401,
            reason: "Unauthenticated"
        })
    );
}

/// RFC 8489 B.1 as published (see the CAUTION in the vector file): header length 0x009c, no
/// PASSWORD-ALGORITHM, HMAC e4686c8f... It is not a valid wire message, and must not pass.
#[test]
fn negative_rfc8489_b1_as_published_is_rejected() {
    use hmac::{Hmac, Mac};

    let corrected = vector("rfc8489-b.1-sha256-userhash-request.bin");
    let msg = Message::parse(&corrected).unwrap();
    let published_mac = hex("e4686c8f0edeb59013e07090010a93efccbccc544c0a45d9f830aa6d6f735a01");
    // The published message: the corrected one without PASSWORD-ALGORITHM, with the published MAC.
    let mut published = corrected[..4].to_vec();
    published.extend_from_slice(&corrected[4..20]);
    let mut mi_offset = 0;
    for a in msg.attributes() {
        match a.attr_type {
            AttrType::PASSWORD_ALGORITHM => continue,
            AttrType::MESSAGE_INTEGRITY_SHA256 => {
                mi_offset = published.len();
                published.extend_from_slice(&[0x00, 0x1c, 0x00, 0x20]);
                published.extend_from_slice(&published_mac);
            }
            _ => {
                let end = a.offset + 4 + a.value.len().next_multiple_of(4);
                published.extend_from_slice(&corrected[a.offset..end]);
            }
        }
    }
    published[2..4].copy_from_slice(&0x009cu16.to_be_bytes());
    assert_eq!(
        Message::parse(&published).unwrap_err(),
        switchboard_stun::ParseError::LengthMismatch {
            declared: 0x9c,
            actual: 136
        }
    );

    // The vector file's explanation holds: the MAC was computed with the length forced to 0x9c.
    let key = long_term_key_sha256(MATRIX_USER, "example.org", MATRIX_PASSWORD);
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(&published[..mi_offset]);
    assert_eq!(mac.finalize().into_bytes().to_vec(), published_mac);

    // With the length field corrected the message parses, and its integrity fails.
    published[2..4].copy_from_slice(&136u16.to_be_bytes());
    let msg = Message::parse(&published).unwrap();
    assert_eq!(msg.verify_integrity(&key), Err(IntegrityError::Mismatch));
}
