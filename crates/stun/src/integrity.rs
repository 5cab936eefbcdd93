//! Keys, MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT (RFC 8489 §9, §14.5–14.7, §18.5).
//!
//! Passwords, usernames and realms are used as the bytes given: no SASLprep (RFC 4013) or
//! OpaqueString (RFC 8265) mapping is applied. For ASCII credentials, which is what TURN REST
//! credentials and every mainstream client use, both profiles are the identity; a caller that
//! stores non-ASCII passwords should store them already prepared.

use hmac::{Hmac, Mac};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// FINGERPRINT is the CRC-32 of the message XORed with this constant ("STUN").
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// A password algorithm (RFC 8489 §18.5): how the long-term key is derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PasswordAlgorithm {
    /// MD5 (0x0001), the RFC 5389 long-term key; what every browser uses.
    Md5,
    /// SHA-256 (0x0002).
    Sha256,
    /// Any other registry value; no key can be derived for it.
    Unknown(u16),
}

impl PasswordAlgorithm {
    /// The registry value.
    pub const fn to_u16(self) -> u16 {
        match self {
            Self::Md5 => 0x0001,
            Self::Sha256 => 0x0002,
            Self::Unknown(v) => v,
        }
    }

    /// From the registry value.
    pub const fn from_u16(value: u16) -> Self {
        match value {
            0x0001 => Self::Md5,
            0x0002 => Self::Sha256,
            v => Self::Unknown(v),
        }
    }
}

/// A derived long-term key; [`LongTermKey::as_bytes`] is what the integrity functions take.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum LongTermKey {
    /// MD5(username ":" realm ":" password).
    Md5([u8; 16]),
    /// SHA-256(username ":" realm ":" password).
    Sha256([u8; 32]),
}

impl LongTermKey {
    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Md5(k) => k,
            Self::Sha256(k) => k,
        }
    }
}

impl AsRef<[u8]> for LongTermKey {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::fmt::Debug for LongTermKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are secrets: never print them in logs.
        match self {
            Self::Md5(_) => f.write_str("LongTermKey::Md5(..)"),
            Self::Sha256(_) => f.write_str("LongTermKey::Sha256(..)"),
        }
    }
}

fn colon_joined<D: Digest>(parts: &[&[u8]]) -> D {
    let mut d = D::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            d.update(b":");
        }
        d.update(p);
    }
    d
}

/// MD5(username ":" realm ":" password), the long-term key of RFC 8489 §9.2.2 with MD5.
pub fn long_term_key_md5(username: &str, realm: &str, password: &str) -> [u8; 16] {
    colon_joined::<Md5>(&[username.as_bytes(), realm.as_bytes(), password.as_bytes()])
        .finalize()
        .into()
}

/// SHA-256(username ":" realm ":" password), the long-term key with PASSWORD-ALGORITHM SHA-256.
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    colon_joined::<Sha256>(&[username.as_bytes(), realm.as_bytes(), password.as_bytes()])
        .finalize()
        .into()
}

/// The long-term key for `algorithm`; `None` for an algorithm this crate does not know.
pub fn long_term_key(
    algorithm: PasswordAlgorithm,
    username: &str,
    realm: &str,
    password: &str,
) -> Option<LongTermKey> {
    match algorithm {
        PasswordAlgorithm::Md5 => Some(LongTermKey::Md5(long_term_key_md5(
            username, realm, password,
        ))),
        PasswordAlgorithm::Sha256 => Some(LongTermKey::Sha256(long_term_key_sha256(
            username, realm, password,
        ))),
        PasswordAlgorithm::Unknown(_) => None,
    }
}

/// The short-term key is the password itself (RFC 8489 §9.1.1), used as given.
pub fn short_term_key(password: &str) -> &[u8] {
    password.as_bytes()
}

/// USERHASH value: SHA-256(username ":" realm) (RFC 8489 §14.4).
pub fn userhash(username: &str, realm: &str) -> [u8; 32] {
    colon_joined::<Sha256>(&[username.as_bytes(), realm.as_bytes()])
        .finalize()
        .into()
}

/// Which integrity attribute a message was verified with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntegrityAlgorithm {
    /// MESSAGE-INTEGRITY, HMAC-SHA1.
    HmacSha1,
    /// MESSAGE-INTEGRITY-SHA256, HMAC-SHA256 (possibly truncated).
    HmacSha256,
}

/// Why a message failed its integrity check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntegrityError {
    /// The message has no (effective) integrity attribute of the kind asked for.
    #[error("message has no integrity attribute")]
    Missing,
    /// The HMAC does not match: wrong key or altered message.
    #[error("message integrity check failed")]
    Mismatch,
}

/// Why a message failed its FINGERPRINT check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FingerprintError {
    /// The message has no FINGERPRINT.
    #[error("message has no FINGERPRINT")]
    Missing,
    /// The CRC does not match.
    #[error("FINGERPRINT mismatch: received {received:#010x}, computed {computed:#010x}")]
    Mismatch {
        /// The value in the message.
        received: u32,
        /// The value computed over the message.
        computed: u32,
    },
}

/// HMAC-SHA1 over `parts` concatenated.
pub(crate) fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> Hmac<Sha1> {
    // new_from_slice only fails for fixed-size-key MACs; HMAC takes any key length.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key"));
    for p in parts {
        mac.update(p);
    }
    mac
}

/// HMAC-SHA256 over `parts` concatenated.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key"));
    for p in parts {
        mac.update(p);
    }
    mac
}

/// CRC-32 of `parts` concatenated, XORed as FINGERPRINT wants.
pub(crate) fn fingerprint(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize() ^ FINGERPRINT_XOR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8489_sha256_key_and_userhash() {
        let user = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
        let key = long_term_key_sha256(user, "example.org", "TheMatrIX");
        assert_eq!(
            key[..4],
            [0xdd, 0x29, 0x5a, 0x61],
            "first bytes of the SHA-256 long-term key from the vector file"
        );
        assert_eq!(userhash(user, "example.org")[..4], [0x4a, 0x3c, 0xf3, 0x8f]);
        let md5 = long_term_key_md5(user, "example.org", "TheMatrIX");
        assert_eq!(md5[..4], [0xe8, 0xca, 0x7a, 0xd5]);
    }
}
