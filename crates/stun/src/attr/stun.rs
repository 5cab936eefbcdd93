//! The RFC 8489 attributes other than addresses, and the ICE attributes of RFC 8445.

use std::fmt;

use super::{AttrError, AttrType, Attribute, Context, check_len, read_u16, read_u32, read_utf8};
use crate::integrity::PasswordAlgorithm;

/// Longest USERNAME value accepted. RFC 8489 §14.3 has senders stay under 509 bytes but
/// receivers parse up to 763, for RFC 5389 peers.
pub const MAX_USERNAME_LEN: usize = 763;
/// Longest REALM, NONCE, SOFTWARE or reason phrase value accepted: 128 characters of up to 6 bytes
/// each would allow more, but RFC 8489 caps the encoded value at 763 bytes.
pub const MAX_TEXT_LEN: usize = 763;

macro_rules! text_attribute {
    ($(#[$doc:meta])* $name:ident, $ty:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name<'a>(pub &'a str);

        impl<'a> Attribute<'a> for $name<'a> {
            const TYPE: AttrType = AttrType::$ty;

            fn read(value: &'a [u8], _: Context<'_>) -> Result<Self, AttrError> {
                read_utf8(Self::TYPE, value, $max).map(Self)
            }

            fn encode(&self, _: Context<'_>, out: &mut Vec<u8>) {
                out.extend_from_slice(self.0.as_bytes());
            }
        }
    };
}

text_attribute!(
    /// USERNAME: UTF-8, used as given (no SASLprep/OpaqueString mapping is applied).
    Username, USERNAME, MAX_USERNAME_LEN
);
text_attribute!(
    /// REALM: UTF-8 text chosen by the server.
    Realm, REALM, MAX_TEXT_LEN
);
text_attribute!(
    /// SOFTWARE: a free-form description of the agent.
    Software, SOFTWARE, MAX_TEXT_LEN
);

/// NONCE: opaque bytes chosen by the server (RFC 8489 §14.10); kept as bytes because the
/// server compares them, it never interprets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nonce<'a>(pub &'a [u8]);

impl<'a> Attribute<'a> for Nonce<'a> {
    const TYPE: AttrType = AttrType::NONCE;

    fn read(value: &'a [u8], _: Context<'_>) -> Result<Self, AttrError> {
        check_len(Self::TYPE, value, |l| l <= MAX_TEXT_LEN)?;
        Ok(Self(value))
    }

    fn encode(&self, _: Context<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0);
    }
}

/// USERHASH: SHA-256 of `username ":" realm` (RFC 8489 §14.4); see [`crate::userhash`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Userhash(pub [u8; 32]);

/// MESSAGE-INTEGRITY: the HMAC-SHA1 value. Verify with [`crate::Message::verify_message_integrity`];
/// add with [`crate::MessageBuilder::add_message_integrity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageIntegrity(pub [u8; 20]);

/// MESSAGE-INTEGRITY-SHA256: an HMAC-SHA256 value, possibly truncated to 16..=32 bytes in steps of 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageIntegritySha256<'a>(pub &'a [u8]);

/// FINGERPRINT: CRC-32 of the message XOR 0x5354554e. Verify with
/// [`crate::Message::verify_fingerprint`]; add with [`crate::MessageBuilder::add_fingerprint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub u32);

/// PRIORITY (ICE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Priority(pub u32);

/// ICE-CONTROLLED tie-breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IceControlled(pub u64);

/// ICE-CONTROLLING tie-breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IceControlling(pub u64);

/// USE-CANDIDATE (ICE), empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UseCandidate;

macro_rules! fixed_attribute {
    ($name:ident, $ty:ident, $n:expr, |$v:ident| $read:expr, |$s:ident| $enc:expr) => {
        impl<'a> Attribute<'a> for $name {
            const TYPE: AttrType = AttrType::$ty;

            fn read(value: &'a [u8], _: Context<'_>) -> Result<Self, AttrError> {
                let $v: [u8; $n] = value.try_into().map_err(|_| AttrError::InvalidLength {
                    attr: Self::TYPE,
                    len: value.len(),
                })?;
                Ok($read)
            }

            fn encode(&self, _: Context<'_>, out: &mut Vec<u8>) {
                let $s = self;
                out.extend_from_slice(&$enc);
            }
        }
    };
}

fixed_attribute!(Userhash, USERHASH, 32, |v| Self(v), |s| s.0);
fixed_attribute!(MessageIntegrity, MESSAGE_INTEGRITY, 20, |v| Self(v), |s| s
    .0);
fixed_attribute!(
    Fingerprint,
    FINGERPRINT,
    4,
    |v| Self(u32::from_be_bytes(v)),
    |s| s.0.to_be_bytes()
);
fixed_attribute!(
    Priority,
    PRIORITY,
    4,
    |v| Self(u32::from_be_bytes(v)),
    |s| s.0.to_be_bytes()
);
fixed_attribute!(
    IceControlled,
    ICE_CONTROLLED,
    8,
    |v| Self(u64::from_be_bytes(v)),
    |s| s.0.to_be_bytes()
);
fixed_attribute!(
    IceControlling,
    ICE_CONTROLLING,
    8,
    |v| Self(u64::from_be_bytes(v)),
    |s| s.0.to_be_bytes()
);
fixed_attribute!(
    UseCandidate,
    USE_CANDIDATE,
    0,
    |v| {
        let [] = v;
        Self
    },
    |_s| []
);

impl<'a> Attribute<'a> for MessageIntegritySha256<'a> {
    const TYPE: AttrType = AttrType::MESSAGE_INTEGRITY_SHA256;

    fn read(value: &'a [u8], _: Context<'_>) -> Result<Self, AttrError> {
        check_len(Self::TYPE, value, |l| {
            (16..=32).contains(&l) && l.is_multiple_of(4)
        })?;
        Ok(Self(value))
    }

    fn encode(&self, _: Context<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0);
    }
}

/// ERROR-CODE: a code in 300..=699 and a UTF-8 reason phrase (RFC 8489 §14.8). Decoding rejects
/// other codes; encoding trusts the caller to stay in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode<'a> {
    /// The code, class * 100 + number.
    pub code: u16,
    /// The reason phrase.
    pub reason: &'a str,
}

impl ErrorCode<'static> {
    /// 300 Try Alternate.
    pub const TRY_ALTERNATE: u16 = 300;
    /// 400 Bad Request.
    pub const BAD_REQUEST: u16 = 400;
    /// 401 Unauthenticated.
    pub const UNAUTHENTICATED: u16 = 401;
    /// 403 Forbidden (RFC 8656).
    pub const FORBIDDEN: u16 = 403;
    /// 420 Unknown Attribute.
    pub const UNKNOWN_ATTRIBUTE: u16 = 420;
    /// 437 Allocation Mismatch (RFC 8656).
    pub const ALLOCATION_MISMATCH: u16 = 437;
    /// 438 Stale Nonce.
    pub const STALE_NONCE: u16 = 438;
    /// 440 Address Family not Supported (RFC 8656).
    pub const ADDRESS_FAMILY_NOT_SUPPORTED: u16 = 440;
    /// 441 Wrong Credentials (RFC 8656).
    pub const WRONG_CREDENTIALS: u16 = 441;
    /// 442 Unsupported Transport Protocol (RFC 8656).
    pub const UNSUPPORTED_TRANSPORT_PROTOCOL: u16 = 442;
    /// 443 Peer Address Family Mismatch (RFC 8656).
    pub const PEER_ADDRESS_FAMILY_MISMATCH: u16 = 443;
    /// 486 Allocation Quota Reached (RFC 8656).
    pub const ALLOCATION_QUOTA_REACHED: u16 = 486;
    /// 500 Server Error.
    pub const SERVER_ERROR: u16 = 500;
    /// 508 Insufficient Capacity (RFC 8656).
    pub const INSUFFICIENT_CAPACITY: u16 = 508;

    /// An error code with the RFC's reason phrase for `code` (a generic one for unknown codes).
    pub fn with_default_reason(code: u16) -> Self {
        Self {
            code,
            reason: default_reason(code),
        }
    }
}

/// The reason phrase the RFCs suggest for an error code.
pub fn default_reason(code: u16) -> &'static str {
    match code {
        300 => "Try Alternate",
        400 => "Bad Request",
        401 => "Unauthenticated",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        486 => "Allocation Quota Reached",
        500 => "Server Error",
        508 => "Insufficient Capacity",
        _ => "Error",
    }
}

pub(crate) fn read_error_code(attr: AttrType, value: &[u8]) -> Result<(u16, &str), AttrError> {
    check_len(attr, value, |l| l >= 4)?;
    let head = read_u32(value).ok_or(AttrError::InvalidLength {
        attr,
        len: value.len(),
    })?;
    let class = (head >> 8) & 0x7;
    let number = head & 0xFF;
    if !(3..=6).contains(&class) || number > 99 {
        return Err(AttrError::InvalidValue {
            attr,
            reason: "error class must be 3..=6 and number 0..=99",
        });
    }
    let reason = read_utf8(attr, &value[4..], MAX_TEXT_LEN)?;
    Ok(((class * 100 + number) as u16, reason))
}

pub(crate) fn encode_error_code(code: u16, reason: &str, out: &mut Vec<u8>) {
    let class = (code / 100) as u8 & 0x7;
    let number = (code % 100) as u8;
    out.extend_from_slice(&[0, 0, class, number]);
    out.extend_from_slice(reason.as_bytes());
}

impl<'a> Attribute<'a> for ErrorCode<'a> {
    const TYPE: AttrType = AttrType::ERROR_CODE;

    fn read(value: &'a [u8], _: Context<'_>) -> Result<Self, AttrError> {
        let (code, reason) = read_error_code(Self::TYPE, value)?;
        Ok(Self { code, reason })
    }

    fn encode(&self, _: Context<'_>, out: &mut Vec<u8>) {
        encode_error_code(self.code, self.reason, out);
    }
}

/// A list of 16-bit values that is either borrowed from the wire or from the caller.
#[derive(Clone, Copy)]
enum U16List<'a> {
    Wire(&'a [u8]),
    Slice(&'a [u16]),
}

impl<'a> U16List<'a> {
    fn iter(self) -> impl Iterator<Item = u16> + 'a {
        let (wire, slice): (&'a [u8], &'a [u16]) = match self {
            Self::Wire(w) => (w, &[]),
            Self::Slice(s) => (&[], s),
        };
        wire.chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .chain(slice.iter().copied())
    }
}

/// UNKNOWN-ATTRIBUTES: the comprehension-required types a 420 response lists.
#[derive(Clone, Copy)]
pub struct UnknownAttributes<'a>(U16List<'a>);

impl<'a> UnknownAttributes<'a> {
    /// A list to encode.
    pub const fn new(types: &'a [u16]) -> Self {
        Self(U16List::Slice(types))
    }

    /// The listed attribute types.
    pub fn iter(&self) -> impl Iterator<Item = AttrType> + 'a {
        self.0.iter().map(AttrType)
    }
}

impl fmt::Debug for UnknownAttributes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for UnknownAttributes<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for UnknownAttributes<'_> {}

impl<'a> Attribute<'a> for UnknownAttributes<'a> {
    const TYPE: AttrType = AttrType::UNKNOWN_ATTRIBUTES;

    fn read(value: &'a [u8], _: Context<'_>) -> Result<Self, AttrError> {
        check_len(Self::TYPE, value, |l| l.is_multiple_of(2))?;
        Ok(Self(U16List::Wire(value)))
    }

    fn encode(&self, _: Context<'_>, out: &mut Vec<u8>) {
        for t in self.0.iter() {
            out.extend_from_slice(&t.to_be_bytes());
        }
    }
}

/// PASSWORD-ALGORITHMS: the algorithms a server offers, in its order of preference.
#[derive(Clone, Copy)]
pub struct PasswordAlgorithms<'a>(AlgorithmList<'a>);

#[derive(Clone, Copy)]
enum AlgorithmList<'a> {
    Wire(&'a [u8]),
    Slice(&'a [PasswordAlgorithm]),
}

impl<'a> PasswordAlgorithms<'a> {
    /// A list to encode (each with empty parameters, as MD5 and SHA-256 have).
    pub const fn new(algorithms: &'a [PasswordAlgorithm]) -> Self {
        Self(AlgorithmList::Slice(algorithms))
    }

    /// The listed algorithms; the parameters of unknown ones are skipped.
    pub fn iter(&self) -> impl Iterator<Item = PasswordAlgorithm> + 'a {
        let (mut wire, slice): (&'a [u8], &'a [PasswordAlgorithm]) = match self.0 {
            AlgorithmList::Wire(w) => (w, &[]),
            AlgorithmList::Slice(s) => (&[], s),
        };
        std::iter::from_fn(move || {
            let id = read_u16(wire)?;
            let plen = usize::from(read_u16(wire.get(2..)?)?);
            wire = wire.get(4 + plen.next_multiple_of(4)..)?;
            Some(PasswordAlgorithm::from_u16(id))
        })
        .chain(slice.iter().copied())
    }
}

impl fmt::Debug for PasswordAlgorithms<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for PasswordAlgorithms<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for PasswordAlgorithms<'_> {}

impl<'a> Attribute<'a> for PasswordAlgorithms<'a> {
    const TYPE: AttrType = AttrType::PASSWORD_ALGORITHMS;

    fn read(value: &'a [u8], _: Context<'_>) -> Result<Self, AttrError> {
        let mut rest = value;
        while !rest.is_empty() {
            let plen = rest
                .get(2..4)
                .and_then(read_u16)
                .ok_or(AttrError::InvalidLength {
                    attr: Self::TYPE,
                    len: value.len(),
                })?;
            rest = rest
                .get(4 + usize::from(plen).next_multiple_of(4)..)
                .ok_or(AttrError::InvalidLength {
                    attr: Self::TYPE,
                    len: value.len(),
                })?;
        }
        Ok(Self(AlgorithmList::Wire(value)))
    }

    fn encode(&self, _: Context<'_>, out: &mut Vec<u8>) {
        match self.0 {
            AlgorithmList::Wire(w) => out.extend_from_slice(w),
            AlgorithmList::Slice(s) => {
                for a in s {
                    out.extend_from_slice(&a.to_u16().to_be_bytes());
                    out.extend_from_slice(&[0, 0]);
                }
            }
        }
    }
}

/// PASSWORD-ALGORITHM: the algorithm the client chose; parameters must be empty for the known
/// algorithms and are skipped for unknown ones.
impl<'a> Attribute<'a> for PasswordAlgorithm {
    const TYPE: AttrType = AttrType::PASSWORD_ALGORITHM;

    fn read(value: &'a [u8], _: Context<'_>) -> Result<Self, AttrError> {
        let invalid = AttrError::InvalidLength {
            attr: Self::TYPE,
            len: value.len(),
        };
        let id = read_u16(value).ok_or(invalid.clone())?;
        let plen = value.get(2..).and_then(read_u16).ok_or(invalid.clone())?;
        if value.len() != 4 + usize::from(plen) {
            return Err(invalid);
        }
        let algorithm = PasswordAlgorithm::from_u16(id);
        if plen != 0 && !matches!(algorithm, PasswordAlgorithm::Unknown(_)) {
            return Err(AttrError::InvalidValue {
                attr: Self::TYPE,
                reason: "MD5 and SHA-256 take no parameters",
            });
        }
        Ok(algorithm)
    }

    fn encode(&self, _: Context<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_u16().to_be_bytes());
        out.extend_from_slice(&[0, 0]);
    }
}
