//! `MessageBuilder`: encodes a message into a caller-provided `Vec<u8>`.

use std::net::SocketAddr;

use hmac::Mac;

use crate::attr::{
    AttrType, Attribute, ChannelNumber, Context, Data, ErrorCode, Lifetime, MappedAddress, Nonce,
    Realm, Software, UnknownAttributes, Username, XorMappedAddress, XorPeerAddress,
    XorRelayedAddress,
};
use crate::header::{HEADER_LEN, MAGIC_COOKIE, MessageType, TransactionId};
use crate::integrity::{fingerprint, hmac_sha1, hmac_sha256};

/// Why a message could not be encoded. The builder stops at the first error and
/// [`MessageBuilder::finish`] reports it, leaving the output buffer as it was before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// An attribute value longer than 65535 bytes.
    #[error("attribute {attr} value of {len} bytes is too long")]
    AttributeTooLong {
        /// The attribute.
        attr: AttrType,
        /// Its length.
        len: usize,
    },
    /// The attributes add up to more than 65535 bytes.
    #[error("message of {len} attribute bytes is too long")]
    MessageTooLong {
        /// Attribute bytes.
        len: usize,
    },
    /// An attribute added after MESSAGE-INTEGRITY(-SHA256) or FINGERPRINT, where only
    /// MESSAGE-INTEGRITY-SHA256 and FINGERPRINT may follow, in that order.
    #[error("attribute {attr} added after the integrity or fingerprint attributes")]
    OutOfOrder {
        /// The attribute added too late.
        attr: AttrType,
    },
    /// A MESSAGE-INTEGRITY-SHA256 truncation other than 16..=32 bytes in steps of 4.
    #[error("MESSAGE-INTEGRITY-SHA256 cannot be truncated to {0} bytes")]
    InvalidTruncation(usize),
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Attributes,
    AfterIntegrity,
    AfterIntegritySha256,
    AfterFingerprint,
}

/// Appends one STUN message to a `Vec<u8>`.
///
/// Attributes are written as they are added; the header length is kept current so that
/// MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT (added last, in that order)
/// are computed in place. With a reused buffer of enough capacity nothing is allocated.
///
/// ```
/// use switchboard_stun::{MessageBuilder, MessageType, TransactionId, Message};
/// let mut buf = Vec::with_capacity(128);
/// let mut b = MessageBuilder::new(&mut buf, MessageType::BINDING_RESPONSE, TransactionId::new([7; 12]));
/// b.add_xor_mapped_address("192.0.2.1:32853".parse().unwrap()).add_fingerprint();
/// let bytes = b.finish().unwrap();
/// assert!(Message::parse(bytes).unwrap().verify_fingerprint().is_ok());
/// ```
#[must_use = "call finish() to get the message and any error"]
pub struct MessageBuilder<'b> {
    out: &'b mut Vec<u8>,
    start: usize,
    transaction_id: TransactionId,
    stage: Stage,
    error: Option<EncodeError>,
}

impl<'b> MessageBuilder<'b> {
    /// Starts a message at the end of `out` (which may already hold other data, e.g. a
    /// framing prefix; use `out.clear()` to reuse a buffer).
    pub fn new(
        out: &'b mut Vec<u8>,
        message_type: MessageType,
        transaction_id: TransactionId,
    ) -> Self {
        let start = out.len();
        out.extend_from_slice(&message_type.to_u16().to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        out.extend_from_slice(transaction_id.as_bytes());
        Self {
            out,
            start,
            transaction_id,
            stage: Stage::Attributes,
            error: None,
        }
    }

    /// The transaction id of the message being built.
    pub fn transaction_id(&self) -> TransactionId {
        self.transaction_id
    }

    fn body_len(&self) -> usize {
        self.out.len() - self.start - HEADER_LEN
    }

    fn set_length(&mut self, len: usize) {
        let l = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
        self.out[self.start + 2..self.start + 4].copy_from_slice(&l);
    }

    /// Checks the order rule, then writes `attr_type` with a value produced by `write`.
    fn write_attr(
        &mut self,
        attr_type: AttrType,
        next: Stage,
        write: impl FnOnce(Context<'_>, &mut Vec<u8>),
    ) {
        if self.error.is_some() {
            return;
        }
        if next <= self.stage && self.stage != Stage::Attributes {
            self.error = Some(EncodeError::OutOfOrder { attr: attr_type });
            return;
        }
        let head = self.out.len();
        self.out.extend_from_slice(&attr_type.0.to_be_bytes());
        self.out.extend_from_slice(&[0, 0]);
        let tid = self.transaction_id;
        write(
            Context {
                transaction_id: &tid,
            },
            self.out,
        );
        let len = self.out.len() - head - 4;
        let Ok(len16) = u16::try_from(len) else {
            self.out.truncate(head);
            self.error = Some(EncodeError::AttributeTooLong {
                attr: attr_type,
                len,
            });
            return;
        };
        self.out[head + 2..head + 4].copy_from_slice(&len16.to_be_bytes());
        self.out
            .resize(self.out.len() + (len.next_multiple_of(4) - len), 0);
        let body = self.body_len();
        if body > usize::from(u16::MAX) {
            self.out.truncate(head);
            self.error = Some(EncodeError::MessageTooLong { len: body });
            return;
        }
        self.set_length(body);
        self.stage = next;
    }

    /// Adds a typed attribute.
    pub fn add<'v, A: Attribute<'v>>(&mut self, attr: &A) -> &mut Self {
        self.write_attr(A::TYPE, Stage::Attributes, |ctx, out| attr.encode(ctx, out));
        self
    }

    /// Adds an attribute from its raw value bytes (padding is added here).
    pub fn add_raw(&mut self, attr_type: AttrType, value: &[u8]) -> &mut Self {
        self.write_attr(attr_type, Stage::Attributes, |_, out| {
            out.extend_from_slice(value)
        });
        self
    }

    /// Adds XOR-MAPPED-ADDRESS.
    pub fn add_xor_mapped_address(&mut self, addr: SocketAddr) -> &mut Self {
        self.add(&XorMappedAddress(addr))
    }

    /// Adds MAPPED-ADDRESS.
    pub fn add_mapped_address(&mut self, addr: SocketAddr) -> &mut Self {
        self.add(&MappedAddress(addr))
    }

    /// Adds XOR-PEER-ADDRESS.
    pub fn add_xor_peer_address(&mut self, addr: SocketAddr) -> &mut Self {
        self.add(&XorPeerAddress(addr))
    }

    /// Adds XOR-RELAYED-ADDRESS.
    pub fn add_xor_relayed_address(&mut self, addr: SocketAddr) -> &mut Self {
        self.add(&XorRelayedAddress(addr))
    }

    /// Adds USERNAME.
    pub fn add_username(&mut self, username: &str) -> &mut Self {
        self.add(&Username(username))
    }

    /// Adds REALM.
    pub fn add_realm(&mut self, realm: &str) -> &mut Self {
        self.add(&Realm(realm))
    }

    /// Adds NONCE.
    pub fn add_nonce(&mut self, nonce: &[u8]) -> &mut Self {
        self.add(&Nonce(nonce))
    }

    /// Adds SOFTWARE.
    pub fn add_software(&mut self, software: &str) -> &mut Self {
        self.add(&Software(software))
    }

    /// Adds ERROR-CODE.
    pub fn add_error_code(&mut self, code: u16, reason: &str) -> &mut Self {
        self.add(&ErrorCode { code, reason })
    }

    /// Adds UNKNOWN-ATTRIBUTES.
    pub fn add_unknown_attributes(&mut self, types: &[u16]) -> &mut Self {
        self.add(&UnknownAttributes::new(types))
    }

    /// Adds LIFETIME (seconds).
    pub fn add_lifetime(&mut self, seconds: u32) -> &mut Self {
        self.add(&Lifetime(seconds))
    }

    /// Adds DATA.
    pub fn add_data(&mut self, data: &[u8]) -> &mut Self {
        self.add(&Data(data))
    }

    /// Adds CHANNEL-NUMBER.
    pub fn add_channel_number(&mut self, channel: u16) -> &mut Self {
        self.add(&ChannelNumber(channel))
    }

    /// Adds MESSAGE-INTEGRITY (HMAC-SHA1) keyed with `key` (a short-term password or a
    /// [`LongTermKey`](crate::LongTermKey)). Only MESSAGE-INTEGRITY-SHA256 and FINGERPRINT may follow.
    pub fn add_message_integrity(&mut self, key: &[u8]) -> &mut Self {
        self.add_mac(
            AttrType::MESSAGE_INTEGRITY,
            Stage::AfterIntegrity,
            20,
            |covered, tag| {
                tag[..20].copy_from_slice(&hmac_sha1(key, &[covered]).finalize().into_bytes());
            },
        )
    }

    /// Adds a full-length (32-byte) MESSAGE-INTEGRITY-SHA256.
    pub fn add_message_integrity_sha256(&mut self, key: &[u8]) -> &mut Self {
        self.add_message_integrity_sha256_truncated(key, 32)
    }

    /// Adds MESSAGE-INTEGRITY-SHA256 truncated to `len` bytes (16..=32, a multiple of 4).
    /// Only FINGERPRINT may follow.
    pub fn add_message_integrity_sha256_truncated(&mut self, key: &[u8], len: usize) -> &mut Self {
        if self.error.is_none() && (!(16..=32).contains(&len) || !len.is_multiple_of(4)) {
            self.error = Some(EncodeError::InvalidTruncation(len));
        }
        self.add_mac(
            AttrType::MESSAGE_INTEGRITY_SHA256,
            Stage::AfterIntegritySha256,
            len,
            |covered, tag| {
                tag.copy_from_slice(&hmac_sha256(key, &[covered]).finalize().into_bytes());
            },
        )
    }

    /// Adds FINGERPRINT; nothing may follow it.
    pub fn add_fingerprint(&mut self) -> &mut Self {
        self.add_mac(
            AttrType::FINGERPRINT,
            Stage::AfterFingerprint,
            4,
            |covered, tag| {
                tag[..4].copy_from_slice(&fingerprint(&[covered]).to_be_bytes());
            },
        )
    }

    /// Writes an attribute computed over the message so far, with the header length already
    /// counting the attribute itself (RFC 8489 §14.5–14.7). `compute` fills the first
    /// `value_len` bytes of a 32-byte scratch tag.
    fn add_mac(
        &mut self,
        attr: AttrType,
        next: Stage,
        value_len: usize,
        compute: impl FnOnce(&[u8], &mut [u8; 32]),
    ) -> &mut Self {
        if self.error.is_some() {
            return self;
        }
        let start = self.start;
        self.set_length(self.body_len() + 4 + value_len);
        self.write_attr(attr, next, |_, out| {
            // The attribute header was just pushed; the MAC covers everything before it.
            let covered_end = out.len() - 4;
            let mut tag = [0u8; 32];
            compute(&out[start..covered_end], &mut tag);
            out.extend_from_slice(&tag[..value_len.min(32)]);
        });
        self
    }

    /// Finishes the message and returns its bytes (the tail of the output buffer), or the
    /// first error met, in which case the buffer is truncated back to where the message began.
    pub fn finish(self) -> Result<&'b [u8], EncodeError> {
        let Self {
            out, start, error, ..
        } = self;
        match error {
            None => Ok(&out[start..]),
            Some(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }
}
