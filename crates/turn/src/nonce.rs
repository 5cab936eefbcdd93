//! Stateless nonces (RFC 8489 §9.2): the nonce carries its own expiry and an
//! HMAC over it and the client's transport address, so that handing out
//! nonces to a flood of unauthenticated requests costs no memory at all.
//!
//! Every nonce starts with the RFC 8489 §9.2 "nonce cookie" and a security
//! feature set with the "Password algorithms" bit, which is what obliges a
//! client that picks an algorithm to echo PASSWORD-ALGORITHMS unchanged
//! (the bid-down protection of §9.2.4). Classic RFC 5389 clients copy the
//! nonce without looking inside, so the prefix costs them nothing.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The "nonce cookie" of RFC 8489 §9.2.
const NONCE_COOKIE: &str = "obMatJos2";

/// What every nonce of ours starts with: the cookie, then `gAAA`, the
/// base64 of the 24-bit security feature set `0x800000` where bit 0 (the
/// most significant, in the RFC's numbering, §18.1) is "Password algorithms".
const PREFIX: &str = "obMatJos2gAAA";

/// The cookie and features, the expiry (16 hex digits), then a truncated
/// MAC (24 hex digits).
const NONCE_LEN: usize = PREFIX.len() + 16 + 24;
const MAC_BYTES: usize = 12;

/// Why a nonce was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceError {
    /// Not a nonce this server made (or made for another client): 401.
    Invalid,
    /// A nonce of ours whose time has passed: 438.
    Stale,
}

/// Makes and checks nonces. Time is measured in whole seconds since the
/// server's own epoch (an arbitrary instant given at construction).
#[derive(Clone)]
pub struct NonceSigner {
    key: Hmac<Sha1>,
    lifetime: Duration,
}

impl std::fmt::Debug for NonceSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceSigner")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl NonceSigner {
    /// `secret` should be random and is never sent anywhere.
    pub fn new(secret: &[u8], lifetime: Duration) -> Self {
        let key = <Hmac<Sha1> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
        Self { key, lifetime }
    }

    /// A fresh nonce for `client`, valid for the configured lifetime.
    pub fn issue(&self, since_epoch: Duration, client: SocketAddr) -> String {
        let expiry = since_epoch
            .as_secs()
            .saturating_add(self.lifetime.as_secs().max(1));
        let mut out = String::with_capacity(NONCE_LEN);
        out.push_str(PREFIX);
        push_hex(&mut out, &expiry.to_be_bytes());
        push_hex(&mut out, &self.mac(expiry, client));
        out
    }

    /// Checks a nonce presented by `client`.
    pub fn check(
        &self,
        nonce: &[u8],
        since_epoch: Duration,
        client: SocketAddr,
    ) -> Result<(), NonceError> {
        // Not MACed: the prefix is a constant, and a nonce without it (one
        // a man in the middle stripped to bid down) is simply not ours.
        let Some(nonce) = nonce.strip_prefix(PREFIX.as_bytes()) else {
            return Err(NonceError::Invalid);
        };
        if nonce.len() != NONCE_LEN - PREFIX.len() {
            return Err(NonceError::Invalid);
        }
        let mut expiry_bytes = [0u8; 8];
        let mut mac = [0u8; MAC_BYTES];
        if !parse_hex(&nonce[..16], &mut expiry_bytes) || !parse_hex(&nonce[16..], &mut mac) {
            return Err(NonceError::Invalid);
        }
        let expiry = u64::from_be_bytes(expiry_bytes);
        let expected = self.mac(expiry, client);
        // No early exit, so timing does not tell how much of a forged MAC matched.
        let diff = expected
            .iter()
            .zip(mac.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(NonceError::Invalid);
        }
        if expiry <= since_epoch.as_secs() {
            return Err(NonceError::Stale);
        }
        Ok(())
    }

    /// An unguessable 8-byte RESERVATION-TOKEN for the `n`th reservation.
    pub(crate) fn reservation_token(&self, n: u64) -> [u8; 8] {
        let mut mac = self.key.clone();
        mac.update(b"reservation");
        mac.update(&n.to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 8];
        out.copy_from_slice(&full[..8]);
        out
    }

    fn mac(&self, expiry: u64, client: SocketAddr) -> [u8; MAC_BYTES] {
        let mut mac = self.key.clone();
        mac.update(&expiry.to_be_bytes());
        match client.ip() {
            IpAddr::V4(ip) => mac.update(&ip.octets()),
            IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.update(&client.port().to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_BYTES];
        out.copy_from_slice(&full[..MAC_BYTES]);
        out
    }
}

/// Whether `nonce` starts with the nonce cookie and a feature set that has
/// the "Password algorithms" bit: the condition of RFC 8489 §9.2.4 for the
/// PASSWORD-ALGORITHM(S) checks. Looks at the text only, not at validity.
pub(crate) fn has_password_algorithms_bit(nonce: &[u8]) -> bool {
    use base64::Engine as _;
    let Some(features) = nonce
        .strip_prefix(NONCE_COOKIE.as_bytes())
        .and_then(|rest| rest.get(..4))
    else {
        return false;
    };
    let mut bits = [0u8; 3];
    match base64::engine::general_purpose::STANDARD.decode_slice(features, &mut bits) {
        Ok(3) => bits[0] & 0x80 != 0,
        _ => false,
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
}

fn parse_hex(text: &[u8], out: &mut [u8]) -> bool {
    if text.len() != out.len() * 2 {
        return false;
    }
    for (pair, byte) in text.chunks_exact(2).zip(out.iter_mut()) {
        let (Some(hi), Some(lo)) = (hex_value(pair[0]), hex_value(pair[1])) else {
            return false;
        };
        *byte = (hi << 4) | lo;
    }
    true
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn issued_nonce_checks_until_expiry() {
        let signer = NonceSigner::new(b"k", Duration::from_secs(600));
        let client = addr("192.0.2.1:5000");
        let nonce = signer.issue(Duration::from_secs(10), client);
        assert_eq!(nonce.len(), NONCE_LEN);
        let n = nonce.as_bytes();
        assert_eq!(signer.check(n, Duration::from_secs(10), client), Ok(()));
        assert_eq!(signer.check(n, Duration::from_secs(609), client), Ok(()));
        assert_eq!(
            signer.check(n, Duration::from_secs(610), client),
            Err(NonceError::Stale)
        );
    }

    #[test]
    fn nonce_starts_with_cookie_and_password_algorithms_bit() {
        use base64::Engine as _;
        let (cookie, features) = PREFIX.split_at(NONCE_COOKIE.len());
        assert_eq!(cookie, NONCE_COOKIE);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(features)
            .unwrap();
        assert_eq!(decoded, [0x80, 0, 0]);
        let signer = NonceSigner::new(b"k", Duration::from_secs(600));
        let nonce = signer.issue(Duration::ZERO, addr("192.0.2.1:5000"));
        assert!(nonce.starts_with("obMatJos2gAAA"));
        assert!(has_password_algorithms_bit(nonce.as_bytes()));
        // Username anonymity alone (bit 1), no cookie, a short nonce, bad base64.
        for other in [
            "obMatJos2QAAAxyz",
            "xbMatJos2gAAA",
            "obMatJos2gA",
            "obMatJos2g!AA",
        ] {
            assert!(!has_password_algorithms_bit(other.as_bytes()), "{other}");
        }
        // The cookie with the bit, whatever follows, counts.
        assert!(has_password_algorithms_bit(b"obMatJos2/AAA"));
    }

    #[test]
    fn stripped_cookie_is_invalid() {
        let signer = NonceSigner::new(b"k", Duration::from_secs(600));
        let client = addr("192.0.2.1:5000");
        let nonce = signer.issue(Duration::ZERO, client);
        let stripped = &nonce.as_bytes()[PREFIX.len()..];
        assert_eq!(
            signer.check(stripped, Duration::ZERO, client),
            Err(NonceError::Invalid)
        );
    }

    #[test]
    fn nonce_is_bound_to_client_and_key() {
        let signer = NonceSigner::new(b"k", Duration::from_secs(600));
        let nonce = signer.issue(Duration::ZERO, addr("192.0.2.1:5000"));
        let n = nonce.as_bytes();
        let now = Duration::from_secs(1);
        assert_eq!(
            signer.check(n, now, addr("192.0.2.1:5001")),
            Err(NonceError::Invalid)
        );
        let other = NonceSigner::new(b"other", Duration::from_secs(600));
        assert_eq!(
            other.check(n, now, addr("192.0.2.1:5000")),
            Err(NonceError::Invalid)
        );
    }

    #[test]
    fn garbage_nonces_are_invalid() {
        let signer = NonceSigner::new(b"k", Duration::from_secs(600));
        let client = addr("[2001:db8::1]:1");
        for junk in [&b""[..], b"zz", &[0xff; NONCE_LEN], &[b'A'; NONCE_LEN]] {
            assert_eq!(
                signer.check(junk, Duration::ZERO, client),
                Err(NonceError::Invalid)
            );
        }
        // A forged far-future expiry with a wrong MAC.
        let forged = format!("{PREFIX}{:016x}{}", u64::MAX, "0".repeat(24));
        assert_eq!(
            signer.check(forged.as_bytes(), Duration::ZERO, client),
            Err(NonceError::Invalid)
        );
    }
}
