//! Attribute types and their typed values.
//!
//! Each typed attribute implements [`Attribute`]: a `read` from the raw value bytes
//! (borrowing them, never copying) and an `encode` that appends the value bytes.
//! [`Message::get`](crate::Message::get) and
//! [`MessageBuilder::add`](crate::MessageBuilder::add) are the usual entry points.

pub(crate) mod address;
mod stun;
mod turn;

use std::fmt;

pub use address::{
    AddressFamily, AlternateServer, MappedAddress, XorMappedAddress, XorPeerAddress,
    XorRelayedAddress,
};
pub use stun::{
    ErrorCode, Fingerprint, IceControlled, IceControlling, MAX_TEXT_LEN, MAX_USERNAME_LEN,
    MessageIntegrity, MessageIntegritySha256, Nonce, PasswordAlgorithms, Priority, Realm, Software,
    UnknownAttributes, UseCandidate, Userhash, Username, default_reason,
};
pub use turn::{
    AdditionalAddressFamily, AddressErrorCode, ChannelNumber, Data, DontFragment, EvenPort, Icmp,
    Lifetime, RequestedAddressFamily, RequestedTransport, ReservationToken,
};

use crate::TransactionId;

/// A 16-bit attribute type. The constants name every attribute this crate understands.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttrType(pub u16);

macro_rules! attr_types {
    ($( $(#[$doc:meta])* $name:ident = $value:expr, $text:expr; )*) => {
        impl AttrType {
            $( $(#[$doc])* pub const $name: Self = Self($value); )*

            /// The RFC name of a known attribute type.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $( Self::$name => Some($text), )*
                    _ => None,
                }
            }

            /// Whether this crate names this attribute type (the ones it understands, plus ALTERNATE-DOMAIN).
            pub fn is_known(self) -> bool {
                self.name().is_some()
            }
        }
    };
}

attr_types! {
    /// MAPPED-ADDRESS (RFC 8489 §14.1).
    MAPPED_ADDRESS = 0x0001, "MAPPED-ADDRESS";
    /// USERNAME (RFC 8489 §14.3).
    USERNAME = 0x0006, "USERNAME";
    /// MESSAGE-INTEGRITY (RFC 8489 §14.5).
    MESSAGE_INTEGRITY = 0x0008, "MESSAGE-INTEGRITY";
    /// ERROR-CODE (RFC 8489 §14.8).
    ERROR_CODE = 0x0009, "ERROR-CODE";
    /// UNKNOWN-ATTRIBUTES (RFC 8489 §14.9).
    UNKNOWN_ATTRIBUTES = 0x000A, "UNKNOWN-ATTRIBUTES";
    /// CHANNEL-NUMBER (RFC 8656 §18.1).
    CHANNEL_NUMBER = 0x000C, "CHANNEL-NUMBER";
    /// LIFETIME (RFC 8656 §18.2).
    LIFETIME = 0x000D, "LIFETIME";
    /// XOR-PEER-ADDRESS (RFC 8656 §18.3).
    XOR_PEER_ADDRESS = 0x0012, "XOR-PEER-ADDRESS";
    /// DATA (RFC 8656 §18.4).
    DATA = 0x0013, "DATA";
    /// REALM (RFC 8489 §14.9).
    REALM = 0x0014, "REALM";
    /// NONCE (RFC 8489 §14.10).
    NONCE = 0x0015, "NONCE";
    /// XOR-RELAYED-ADDRESS (RFC 8656 §18.5).
    XOR_RELAYED_ADDRESS = 0x0016, "XOR-RELAYED-ADDRESS";
    /// REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.6).
    REQUESTED_ADDRESS_FAMILY = 0x0017, "REQUESTED-ADDRESS-FAMILY";
    /// EVEN-PORT (RFC 8656 §18.7).
    EVEN_PORT = 0x0018, "EVEN-PORT";
    /// REQUESTED-TRANSPORT (RFC 8656 §18.8).
    REQUESTED_TRANSPORT = 0x0019, "REQUESTED-TRANSPORT";
    /// DONT-FRAGMENT (RFC 8656 §18.9).
    DONT_FRAGMENT = 0x001A, "DONT-FRAGMENT";
    /// MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6).
    MESSAGE_INTEGRITY_SHA256 = 0x001C, "MESSAGE-INTEGRITY-SHA256";
    /// PASSWORD-ALGORITHM (RFC 8489 §14.12).
    PASSWORD_ALGORITHM = 0x001D, "PASSWORD-ALGORITHM";
    /// USERHASH (RFC 8489 §14.4).
    USERHASH = 0x001E, "USERHASH";
    /// XOR-MAPPED-ADDRESS (RFC 8489 §14.2).
    XOR_MAPPED_ADDRESS = 0x0020, "XOR-MAPPED-ADDRESS";
    /// RESERVATION-TOKEN (RFC 8656 §18.10).
    RESERVATION_TOKEN = 0x0022, "RESERVATION-TOKEN";
    /// PRIORITY (RFC 8445 §16.1).
    PRIORITY = 0x0024, "PRIORITY";
    /// USE-CANDIDATE (RFC 8445 §16.1).
    USE_CANDIDATE = 0x0025, "USE-CANDIDATE";
    /// PASSWORD-ALGORITHMS (RFC 8489 §14.11).
    PASSWORD_ALGORITHMS = 0x8002, "PASSWORD-ALGORITHMS";
    /// ALTERNATE-DOMAIN (RFC 8489 §14.16).
    ALTERNATE_DOMAIN = 0x8003, "ALTERNATE-DOMAIN";
    /// SOFTWARE (RFC 8489 §14.14).
    SOFTWARE = 0x8022, "SOFTWARE";
    /// ALTERNATE-SERVER (RFC 8489 §14.15).
    ALTERNATE_SERVER = 0x8023, "ALTERNATE-SERVER";
    /// FINGERPRINT (RFC 8489 §14.7).
    FINGERPRINT = 0x8028, "FINGERPRINT";
    /// ICE-CONTROLLED (RFC 8445 §16.1).
    ICE_CONTROLLED = 0x8029, "ICE-CONTROLLED";
    /// ICE-CONTROLLING (RFC 8445 §16.1).
    ICE_CONTROLLING = 0x802A, "ICE-CONTROLLING";
    /// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.11).
    ADDITIONAL_ADDRESS_FAMILY = 0x8000, "ADDITIONAL-ADDRESS-FAMILY";
    /// ADDRESS-ERROR-CODE (RFC 8656 §18.12).
    ADDRESS_ERROR_CODE = 0x8001, "ADDRESS-ERROR-CODE";
    /// ICMP (RFC 8656 §18.13).
    ICMP = 0x8004, "ICMP";
}

impl AttrType {
    /// Types 0x0000–0x7FFF are comprehension-required: a receiver that does not know one
    /// must fail the request with 420 and list it in UNKNOWN-ATTRIBUTES (RFC 8489 §14).
    pub const fn is_comprehension_required(self) -> bool {
        self.0 < 0x8000
    }
}

impl fmt::Debug for AttrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "AttrType({:#06x})", self.0),
        }
    }
}

impl fmt::Display for AttrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Context an attribute codec may need from the message header: the XOR address
/// attributes are keyed by the transaction id.
#[derive(Debug, Clone, Copy)]
pub struct Context<'t> {
    /// The transaction id of the message the attribute belongs to.
    pub transaction_id: &'t TransactionId,
}

/// A typed attribute: a `read`/`encode` pair over the attribute value (without the
/// 4-byte type-length header and without padding).
pub trait Attribute<'a>: Sized {
    /// The attribute type this value is carried in.
    const TYPE: AttrType;

    /// Decodes the value bytes, borrowing from them where the type allows.
    fn read(value: &'a [u8], ctx: Context<'_>) -> Result<Self, AttrError>;

    /// Appends the value bytes (no header, no padding) to `out`.
    fn encode(&self, ctx: Context<'_>, out: &mut Vec<u8>);
}

/// Why a typed attribute could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttrError {
    /// The value has a length this attribute never has.
    #[error("{attr}: invalid value length {len}")]
    InvalidLength {
        /// The attribute.
        attr: AttrType,
        /// The length found.
        len: usize,
    },
    /// An address family other than IPv4 (0x01) or IPv6 (0x02).
    #[error("{attr}: unknown address family {family:#04x}")]
    UnknownFamily {
        /// The attribute.
        attr: AttrType,
        /// The family byte found.
        family: u8,
    },
    /// A text attribute that is not UTF-8.
    #[error("{attr}: value is not UTF-8")]
    NotUtf8 {
        /// The attribute.
        attr: AttrType,
    },
    /// A value that is well-formed in length but not allowed (e.g. an error class out of 3..=6).
    #[error("{attr}: invalid value: {reason}")]
    InvalidValue {
        /// The attribute.
        attr: AttrType,
        /// What is wrong.
        reason: &'static str,
    },
}

pub(crate) fn check_len(
    attr: AttrType,
    value: &[u8],
    ok: impl FnOnce(usize) -> bool,
) -> Result<(), AttrError> {
    if ok(value.len()) {
        Ok(())
    } else {
        Err(AttrError::InvalidLength {
            attr,
            len: value.len(),
        })
    }
}

pub(crate) fn read_utf8(attr: AttrType, value: &[u8], max: usize) -> Result<&str, AttrError> {
    check_len(attr, value, |l| l <= max)?;
    std::str::from_utf8(value).map_err(|_| AttrError::NotUtf8 { attr })
}

pub(crate) fn read_u32(value: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(value.get(..4)?.try_into().ok()?))
}

pub(crate) fn read_u16(value: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(value.get(..2)?.try_into().ok()?))
}
