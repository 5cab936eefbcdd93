//! Stateless nonces (RFC 8489 §9.2): the nonce carries its own expiry and an
//! HMAC over it and the client's transport address, so that handing out
//! nonces to a flood of unauthenticated requests costs no memory at all.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Expiry (16 hex digits) then a truncated MAC (24 hex digits).
const NONCE_LEN: usize = 16 + 24;
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
        if nonce.len() != NONCE_LEN {
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
        let forged = format!("{:016x}{}", u64::MAX, "0".repeat(24));
        assert_eq!(
            signer.check(forged.as_bytes(), Duration::ZERO, client),
            Err(NonceError::Invalid)
        );
    }
}
