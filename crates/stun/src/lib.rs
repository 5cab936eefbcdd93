//! STUN (RFC 8489) and TURN (RFC 8656) wire format, zero-copy and sans-IO.
//!
//! No sockets, no clock, no random numbers: the caller supplies bytes, transaction ids and
//! keys. Parsing borrows the received buffer and never allocates; encoding appends to a
//! caller-provided `Vec<u8>`, so a reused buffer means no allocation either.
//!
//! # API overview
//!
//! - Demultiplexing: [`classify`] tells STUN from ChannelData by the first two bits
//!   ([`PacketKind`]); [`stream_frame_len`] tells how long the next frame on a TCP/TLS stream is.
//! - Header: [`MessageType`] = [`Method`] + [`Class`]; [`TransactionId`]; [`MAGIC_COOKIE`].
//! - Parsing: [`Message::parse`] → [`Message`] with [`Message::get`]`::<A>()` (first
//!   attribute of a typed kind, `Result<Option<A>, AttrError>`), [`Message::get_all`] (repeated
//!   ones), [`Message::attributes`] (raw, in order, after-integrity ones dropped per RFC),
//!   [`Message::unknown_comprehension_required`] (for a 420 with UNKNOWN-ATTRIBUTES).
//! - Integrity over the raw received bytes: [`Message::verify_message_integrity`] (HMAC-SHA1),
//!   [`Message::verify_message_integrity_sha256`] (full or truncated), [`Message::verify_integrity`]
//!   (SHA-256 if present, else SHA-1), [`Message::verify_fingerprint`].
//! - Keys: [`long_term_key`] / [`long_term_key_md5`] / [`long_term_key_sha256`] (RFC 8489 §9.2.2,
//!   §18.5 with [`PasswordAlgorithm`]), [`short_term_key`], [`userhash`]. Credentials are used as
//!   given bytes: no SASLprep/OpaqueString mapping (the identity for ASCII).
//! - Typed attributes in [`attr`]: one type per attribute implementing [`Attribute`]
//!   (`read`/`encode` pair), e.g. [`attr::XorMappedAddress`], [`attr::Username`],
//!   [`attr::ErrorCode`], [`attr::Data`], [`attr::ChannelNumber`]; [`AttrType`] constants name
//!   every attribute type.
//! - Encoding: [`MessageBuilder::new`]`(&mut vec, type, tid)`, then `add(&attr)` or the `add_*`
//!   helpers, then [`MessageBuilder::add_message_integrity`] /
//!   [`MessageBuilder::add_message_integrity_sha256`] / [`MessageBuilder::add_fingerprint`] last,
//!   then [`MessageBuilder::finish`] → `Result<&[u8], EncodeError>`.
//! - ChannelData: [`ChannelData::parse`], [`ChannelData::encode`] (padding for streams),
//!   [`ChannelData::header`] for writing a header in place. Framing accepts channel numbers
//!   0x4000–0x7FFF ([`CHANNEL_MAX_RFC5766`]: coturn's clients still bind up to 0x7FFF);
//!   [`attr::ChannelNumber::is_valid`] is RFC 8656's narrower 0x4000–0x4FFF.
//! - Relaying without copies: [`DataIndicationPrefix`] is the header, XOR-PEER-ADDRESS and DATA
//!   header to write in front of a peer's payload already in a buffer (plus its padding).
//!
//! # Example: answer a Binding request
//!
//! ```
//! use switchboard_stun::{classify, Message, MessageBuilder, MessageType, PacketKind};
//! # let mut req = Vec::new();
//! # MessageBuilder::new(&mut req, MessageType::BINDING_REQUEST, switchboard_stun::TransactionId::new([1; 12]))
//! #     .finish().unwrap();
//! let from: std::net::SocketAddr = "203.0.113.9:4242".parse().unwrap();
//! let mut out = Vec::with_capacity(1500);
//! if classify(&req) == PacketKind::Stun {
//!     let msg = Message::parse(&req).unwrap();
//!     if msg.message_type() == MessageType::BINDING_REQUEST {
//!         let mut b = MessageBuilder::new(&mut out, MessageType::BINDING_RESPONSE, msg.transaction_id());
//!         b.add_xor_mapped_address(from).add_software("switchboard").add_fingerprint();
//!         let response: &[u8] = b.finish().unwrap();
//!         assert_eq!(Message::parse(response).unwrap().transaction_id(), msg.transaction_id());
//!     }
//! }
//! ```
//!
//! # Example: long-term credentials
//!
//! ```
//! use switchboard_stun::{attr::{Realm, Username}, long_term_key_md5, Message, MessageBuilder,
//!     MessageType, Method, Class, TransactionId};
//! let key = long_term_key_md5("user", "switchboard", "secret");
//! let mut buf = Vec::new();
//! let mut b = MessageBuilder::new(&mut buf, MessageType::new(Method::ALLOCATE, Class::Request),
//!     TransactionId::new([2; 12]));
//! b.add_username("user").add_realm("switchboard").add_nonce(b"n0nce")
//!     .add_message_integrity(&key).add_fingerprint();
//! let bytes = b.finish().unwrap();
//!
//! let msg = Message::parse(bytes).unwrap();
//! let user = msg.get::<Username>().unwrap().unwrap();
//! let realm = msg.get::<Realm>().unwrap().unwrap();
//! let key = long_term_key_md5(user.0, realm.0, "secret");
//! assert!(msg.verify_message_integrity(&key).is_ok());
//! assert!(msg.verify_fingerprint().is_ok());
//! ```
//!
//! # Tested against
//!
//! RFC 5769 and RFC 8489 B.1 vectors byte for byte, packets captured from coturn and Chromium
//! (`tests/vectors/`), the independent `stun-rs` crate both ways, proptest round trips, and
//! cargo-fuzz targets (`fuzz/`).
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod attr;
mod builder;
mod channel_data;
mod header;
mod integrity;
mod message;
mod relay;

pub use attr::{AttrError, AttrType, Attribute};
pub use builder::{EncodeError, MessageBuilder};
pub use channel_data::{
    CHANNEL_DATA_HEADER_LEN, CHANNEL_MAX, CHANNEL_MAX_RFC5766, CHANNEL_MIN, ChannelData,
    ChannelDataError,
};
pub use header::{Class, HEADER_LEN, MAGIC_COOKIE, MessageType, Method, TransactionId};
pub use integrity::{
    FINGERPRINT_XOR, FingerprintError, IntegrityAlgorithm, IntegrityError, LongTermKey,
    PasswordAlgorithm, long_term_key, long_term_key_md5, long_term_key_sha256, short_term_key,
    userhash,
};
pub use message::{Attributes, Message, ParseError, RawAttribute};
pub use relay::{DATA_INDICATION_MAX_PREFIX, DataIndicationPrefix};

/// What a received packet on a STUN/TURN port looks like, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// First two bits 00, at least a header, and the magic cookie: parse with [`Message::parse`].
    Stun,
    /// First two bits 01 and at least a ChannelData header: parse with [`ChannelData::parse`].
    ChannelData,
    /// Anything else; a server drops it.
    Other,
}

/// Tells STUN from ChannelData (RFC 8656 §12) by the first two bits, without parsing.
pub fn classify(bytes: &[u8]) -> PacketKind {
    match bytes.first().map(|b| b >> 6) {
        Some(0b00) if is_stun(bytes) => PacketKind::Stun,
        Some(0b01) if bytes.len() >= CHANNEL_DATA_HEADER_LEN => PacketKind::ChannelData,
        _ => PacketKind::Other,
    }
}

/// A cheap check that `bytes` starts like an RFC 5389/8489 STUN message: first two bits zero,
/// a whole header, the magic cookie. [`Message::parse`] does the full validation.
pub fn is_stun(bytes: &[u8]) -> bool {
    match bytes.first_chunk::<HEADER_LEN>() {
        Some(h) => h[0] & 0xC0 == 0 && u32::from_be_bytes([h[4], h[5], h[6], h[7]]) == MAGIC_COOKIE,
        None => false,
    }
}

/// The next frame on a stream transport (TCP/TLS) is neither STUN nor ChannelData: the
/// connection cannot be resynchronized and should be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stream frame starting with {first_byte:#04x} is neither STUN nor ChannelData")]
pub struct FramingError {
    /// The first byte of the frame.
    pub first_byte: u8,
}

/// On a stream transport, the total length of the frame at the start of `buf`: 20 + length for
/// STUN, 4 + length padded to 4 for ChannelData (RFC 8656 §12.5). `Ok(None)` means fewer than
/// 4 bytes are buffered yet.
pub fn stream_frame_len(buf: &[u8]) -> Result<Option<usize>, FramingError> {
    let Some(&[b0, b1, l0, l1]) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([l0, l1]));
    match b0 >> 6 {
        0b00 => Ok(Some(HEADER_LEN + len)),
        0b01 if channel_data::is_channel_data_number(u16::from_be_bytes([b0, b1])) => {
            Ok(Some(CHANNEL_DATA_HEADER_LEN + len.next_multiple_of(4)))
        }
        _ => Err(FramingError { first_byte: b0 }),
    }
}
