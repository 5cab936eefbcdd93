//! `Message<'a>`: a parsed STUN message borrowing the received bytes.

use hmac::Mac;

use crate::attr::{AttrError, AttrType, Attribute, Context};
use crate::header::{Class, HEADER_LEN, MAGIC_COOKIE, MessageType, Method, TransactionId};
use crate::integrity::{
    FingerprintError, IntegrityAlgorithm, IntegrityError, fingerprint, hmac_sha1, hmac_sha256,
};

/// Why bytes are not a well-formed STUN message. Each variant is a reason to drop the
/// packet silently (RFC 8489 §6.3): a malformed message gets no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Fewer than the 20 header bytes.
    #[error("{len} bytes is shorter than a STUN header")]
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// The two most significant bits are not zero.
    #[error("first two bits are not zero: not a STUN message")]
    NotStun,
    /// The magic cookie is not 0x2112A442 (an RFC 3489 message or not STUN at all).
    #[error("bad magic cookie {0:#010x}")]
    BadMagicCookie(u32),
    /// The length field is not a multiple of 4.
    #[error("message length {0} is not a multiple of 4")]
    UnalignedLength(u16),
    /// The length field does not match the bytes present (truncated, or trailing bytes).
    #[error("header says {declared} bytes of attributes, {actual} present")]
    LengthMismatch {
        /// The length field.
        declared: usize,
        /// Bytes after the header.
        actual: usize,
    },
    /// An attribute's length runs past the end of the message.
    #[error("attribute {attr} at offset {offset} runs past the end of the message")]
    AttributeOverflow {
        /// The attribute type.
        attr: AttrType,
        /// Offset of its header in the message.
        offset: usize,
    },
    /// An attribute follows FINGERPRINT, which must be last.
    #[error("attribute {attr} follows FINGERPRINT")]
    AttributeAfterFingerprint {
        /// The offending attribute.
        attr: AttrType,
    },
}

/// One attribute as found on the wire: its type and value bytes (without padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    /// The attribute type.
    pub attr_type: AttrType,
    /// The value, borrowed from the message.
    pub value: &'a [u8],
    /// Offset of the attribute header within the message.
    pub offset: usize,
}

/// A parsed STUN message. Parsing validates the header and the attribute framing, and
/// locates the integrity and fingerprint attributes; attribute values are decoded lazily
/// by [`Message::get`] and friends. Nothing is copied or allocated.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    raw: &'a [u8],
    message_type: MessageType,
    transaction_id: TransactionId,
    integrity: Option<RawAttribute<'a>>,
    integrity_sha256: Option<RawAttribute<'a>>,
    fingerprint: Option<RawAttribute<'a>>,
}

/// Which attributes still count while walking a message (RFC 8489 §14.5, §14.6).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Open,
    AfterIntegrity,
    AfterIntegritySha256,
}

impl Stage {
    /// Whether an attribute of type `t` counts at this stage, and the stage after it.
    fn admit(self, t: AttrType) -> (bool, Self) {
        match (self, t) {
            (_, AttrType::FINGERPRINT) => (true, self),
            (Self::Open, AttrType::MESSAGE_INTEGRITY) => (true, Self::AfterIntegrity),
            (Self::Open | Self::AfterIntegrity, AttrType::MESSAGE_INTEGRITY_SHA256) => {
                (true, Self::AfterIntegritySha256)
            }
            (Self::Open, _) => (true, self),
            _ => (false, self),
        }
    }
}

/// Walks attribute framing without judging it; `Message::parse` has already checked it.
#[derive(Clone)]
struct RawIter<'a> {
    raw: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for RawIter<'a> {
    type Item = RawAttribute<'a>;

    fn next(&mut self) -> Option<RawAttribute<'a>> {
        let head = self.raw.get(self.offset..self.offset + 4)?;
        let attr_type = AttrType(u16::from_be_bytes([head[0], head[1]]));
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let start = self.offset + 4;
        let value = self.raw.get(start..start + len)?;
        let offset = self.offset;
        self.offset = start + len.next_multiple_of(4);
        Some(RawAttribute {
            attr_type,
            value,
            offset,
        })
    }
}

/// Iterator over the attributes of a message that count (see [`Message::attributes`]).
#[derive(Clone)]
pub struct Attributes<'a> {
    inner: RawIter<'a>,
    stage: Stage,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = RawAttribute<'a>;

    fn next(&mut self) -> Option<RawAttribute<'a>> {
        for attr in self.inner.by_ref() {
            let (admitted, stage) = self.stage.admit(attr.attr_type);
            self.stage = stage;
            if admitted {
                return Some(attr);
            }
        }
        None
    }
}

impl<'a> Message<'a> {
    /// Parses one complete message: `bytes` must hold exactly the header and the
    /// attributes its length field announces (trailing bytes are an error).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let header: &[u8; HEADER_LEN] = bytes
            .first_chunk()
            .ok_or(ParseError::TooShort { len: bytes.len() })?;
        if header[0] & 0xC0 != 0 {
            return Err(ParseError::NotStun);
        }
        let cookie = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if cookie != MAGIC_COOKIE {
            return Err(ParseError::BadMagicCookie(cookie));
        }
        let length = u16::from_be_bytes([header[2], header[3]]);
        if !length.is_multiple_of(4) {
            return Err(ParseError::UnalignedLength(length));
        }
        if usize::from(length) != bytes.len() - HEADER_LEN {
            return Err(ParseError::LengthMismatch {
                declared: usize::from(length),
                actual: bytes.len() - HEADER_LEN,
            });
        }
        let mut transaction_id = TransactionId::default();
        transaction_id.0.copy_from_slice(&header[8..20]);
        let mut msg = Self {
            raw: bytes,
            message_type: MessageType::from_u16(u16::from_be_bytes([header[0], header[1]])),
            transaction_id,
            integrity: None,
            integrity_sha256: None,
            fingerprint: None,
        };

        let mut offset = HEADER_LEN;
        let mut stage = Stage::Open;
        while offset < bytes.len() {
            // The length is a multiple of 4, so a whole attribute header is always present here.
            let attr_type = AttrType(u16::from_be_bytes([bytes[offset], bytes[offset + 1]]));
            let len = usize::from(u16::from_be_bytes([bytes[offset + 2], bytes[offset + 3]]));
            let end = offset + 4 + len.next_multiple_of(4);
            if end > bytes.len() {
                return Err(ParseError::AttributeOverflow {
                    attr: attr_type,
                    offset,
                });
            }
            if msg.fingerprint.is_some() {
                return Err(ParseError::AttributeAfterFingerprint { attr: attr_type });
            }
            let attr = RawAttribute {
                attr_type,
                value: &bytes[offset + 4..offset + 4 + len],
                offset,
            };
            let (admitted, next) = stage.admit(attr_type);
            if admitted {
                match attr_type {
                    AttrType::MESSAGE_INTEGRITY => msg.integrity = Some(attr),
                    AttrType::MESSAGE_INTEGRITY_SHA256 => msg.integrity_sha256 = Some(attr),
                    AttrType::FINGERPRINT => msg.fingerprint = Some(attr),
                    _ => {}
                }
            }
            stage = next;
            offset = end;
        }
        Ok(msg)
    }

    /// The whole message as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// The message type.
    pub fn message_type(&self) -> MessageType {
        self.message_type
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.message_type.method
    }

    /// The class.
    pub fn class(&self) -> Class {
        self.message_type.class
    }

    /// The transaction id.
    pub fn transaction_id(&self) -> TransactionId {
        self.transaction_id
    }

    fn context(&self) -> Context<'_> {
        Context {
            transaction_id: &self.transaction_id,
        }
    }

    /// The attributes that count, in wire order: every attribute before MESSAGE-INTEGRITY,
    /// then only MESSAGE-INTEGRITY-SHA256 and FINGERPRINT (RFC 8489 §14.5–14.6 say to ignore
    /// the rest).
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes {
            inner: self.raw_attributes_iter(),
            stage: Stage::Open,
        }
    }

    fn raw_attributes_iter(&self) -> RawIter<'a> {
        RawIter {
            raw: self.raw,
            offset: HEADER_LEN,
        }
    }

    /// Every attribute on the wire, including the ones [`Message::attributes`] ignores.
    pub fn raw_attributes(&self) -> impl Iterator<Item = RawAttribute<'a>> + use<'a> {
        self.raw_attributes_iter()
    }

    /// The value of the first attribute of type `attr_type` that counts.
    pub fn get_raw(&self, attr_type: AttrType) -> Option<&'a [u8]> {
        self.attributes()
            .find(|a| a.attr_type == attr_type)
            .map(|a| a.value)
    }

    /// Whether an attribute of type `attr_type` is present (and counts).
    pub fn contains(&self, attr_type: AttrType) -> bool {
        self.get_raw(attr_type).is_some()
    }

    /// The first attribute of type `A`, decoded: `Ok(None)` when absent, `Err` when malformed.
    pub fn get<A: Attribute<'a>>(&self) -> Result<Option<A>, AttrError> {
        self.get_raw(A::TYPE)
            .map(|v| A::read(v, self.context()))
            .transpose()
    }

    /// Every attribute of type `A`, decoded, for the ones that may repeat
    /// (XOR-PEER-ADDRESS, XOR-RELAYED-ADDRESS).
    pub fn get_all<A: Attribute<'a>>(
        &self,
    ) -> impl Iterator<Item = Result<A, AttrError>> + use<'a, A> {
        let tid = self.transaction_id;
        self.attributes()
            .filter(|a| a.attr_type == A::TYPE)
            .map(move |a| {
                A::read(
                    a.value,
                    Context {
                        transaction_id: &tid,
                    },
                )
            })
    }

    /// Comprehension-required attribute types (0x0000–0x7FFF) this crate does not know.
    /// A server answers a request that has any with 420 and lists them in UNKNOWN-ATTRIBUTES.
    pub fn unknown_comprehension_required(&self) -> impl Iterator<Item = AttrType> + use<'a> {
        self.attributes()
            .map(|a| a.attr_type)
            .filter(|t| t.is_comprehension_required() && !t.is_known())
    }

    /// Whether a MESSAGE-INTEGRITY attribute counts in this message.
    pub fn has_message_integrity(&self) -> bool {
        self.integrity.is_some()
    }

    /// Whether a MESSAGE-INTEGRITY-SHA256 attribute counts in this message.
    pub fn has_message_integrity_sha256(&self) -> bool {
        self.integrity_sha256.is_some()
    }

    /// Whether the message ends with FINGERPRINT.
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint.is_some()
    }

    /// The header with its length field set as if `attr` (at its offset) were the last attribute:
    /// the integrity attributes are computed over that (RFC 8489 §14.5).
    fn adjusted_header(&self, attr: &RawAttribute<'_>) -> [u8; 4] {
        let end = attr.offset + 4 + attr.value.len().next_multiple_of(4);
        let len = u16::try_from(end - HEADER_LEN).unwrap_or(u16::MAX);
        let l = len.to_be_bytes();
        [self.raw[0], self.raw[1], l[0], l[1]]
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1) with `key`, over the raw received bytes.
    pub fn verify_message_integrity(&self, key: &[u8]) -> Result<(), IntegrityError> {
        let attr = self.integrity.ok_or(IntegrityError::Missing)?;
        let head = self.adjusted_header(&attr);
        let mac = hmac_sha1(key, &[&head, &self.raw[4..attr.offset]]);
        mac.verify_slice(attr.value)
            .map_err(|_| IntegrityError::Mismatch)
    }

    /// Checks MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256, truncated as sent) with `key`.
    pub fn verify_message_integrity_sha256(&self, key: &[u8]) -> Result<(), IntegrityError> {
        let attr = self.integrity_sha256.ok_or(IntegrityError::Missing)?;
        if !(16..=32).contains(&attr.value.len()) || !attr.value.len().is_multiple_of(4) {
            return Err(IntegrityError::Mismatch);
        }
        let head = self.adjusted_header(&attr);
        let mac = hmac_sha256(key, &[&head, &self.raw[4..attr.offset]]);
        mac.verify_truncated_left(attr.value)
            .map_err(|_| IntegrityError::Mismatch)
    }

    /// Checks the strongest integrity attribute present: MESSAGE-INTEGRITY-SHA256 when the
    /// message has it, MESSAGE-INTEGRITY otherwise. Returns which one was checked.
    pub fn verify_integrity(&self, key: &[u8]) -> Result<IntegrityAlgorithm, IntegrityError> {
        if self.integrity_sha256.is_some() {
            self.verify_message_integrity_sha256(key)
                .map(|()| IntegrityAlgorithm::HmacSha256)
        } else {
            self.verify_message_integrity(key)
                .map(|()| IntegrityAlgorithm::HmacSha1)
        }
    }

    /// Checks FINGERPRINT over the raw received bytes.
    pub fn verify_fingerprint(&self) -> Result<(), FingerprintError> {
        let attr = self.fingerprint.ok_or(FingerprintError::Missing)?;
        let received = crate::attr::read_u32(attr.value).ok_or(FingerprintError::Mismatch {
            received: 0,
            computed: 0,
        })?;
        let head = self.adjusted_header(&attr);
        let computed = fingerprint(&[&head, &self.raw[4..attr.offset]]);
        if attr.value.len() == 4 && received == computed {
            Ok(())
        } else {
            Err(FingerprintError::Mismatch { received, computed })
        }
    }
}
