//! Long-term credentials (RFC 8489 §9.2): static users and time-limited
//! "TURN REST API" credentials derived from a shared secret, with the MD5
//! and SHA-256 password algorithms (§18.5).
//!
//! Usernames, realms and passwords are hashed as the bytes given: neither
//! SASLprep (MD5) nor OpaqueString (SHA-256) is applied. Both are the
//! identity on the ASCII names and passwords this server mints and that
//! operators configure; a non-ASCII static password must be configured
//! already prepared.

use std::collections::HashMap;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use switchboard_stun::long_term_key;
pub use switchboard_stun::{IntegrityAlgorithm, LongTermKey, PasswordAlgorithm};

/// The password algorithms offered in PASSWORD-ALGORITHMS, best first.
pub const OFFERED_ALGORITHMS: [PasswordAlgorithm; 2] =
    [PasswordAlgorithm::Sha256, PasswordAlgorithm::Md5];

/// [`OFFERED_ALGORITHMS`] as PASSWORD-ALGORITHMS value bytes (neither takes
/// parameters): what a request must echo byte for byte (RFC 8489 §9.2.4).
pub(crate) const OFFERED_ALGORITHMS_WIRE: [u8; 8] = [0, 2, 0, 0, 0, 1, 0, 0];

/// What an authenticated request proved, and so how answers to it are
/// sealed: with its long-term key, in the integrity attribute it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seal {
    pub(crate) key: LongTermKey,
    pub(crate) integrity: IntegrityAlgorithm,
}

impl Seal {
    /// The password algorithm the key was derived with.
    pub(crate) fn algorithm(&self) -> PasswordAlgorithm {
        match self.key {
            LongTermKey::Md5(_) => PasswordAlgorithm::Md5,
            LongTermKey::Sha256(_) => PasswordAlgorithm::Sha256,
        }
    }
}

/// Where passwords come from.
///
/// Static users win over REST credentials when a name is both a configured
/// user and a well-formed REST username.
#[derive(Clone, Default)]
pub struct Credentials {
    users: HashMap<String, String>,
    rest_secrets: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Credentials {
    // Passwords and secrets must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("users", &self.users.len())
            .field("rest_secrets", &self.rest_secrets.len())
            .finish()
    }
}

impl Credentials {
    /// No users and no secrets: every authenticated request is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a static user.
    pub fn add_user(&mut self, name: impl Into<String>, password: impl Into<String>) {
        self.users.insert(name.into(), password.into());
    }

    /// Adds a REST secret. Several secrets may be active at once so that a
    /// fleet can rotate them: a credential minted with any of them is accepted.
    pub fn add_rest_secret(&mut self, secret: impl AsRef<[u8]>) {
        self.rest_secrets.push(secret.as_ref().to_vec());
    }

    /// Takes `from`'s REST secrets when this has none: a reload whose
    /// configuration names no secret keeps the one in use (a random one
    /// made at start, which credentials already handed out depend on).
    pub fn inherit_rest_secrets(&mut self, from: &Credentials) {
        if self.rest_secrets.is_empty() {
            self.rest_secrets = from.rest_secrets.clone();
        }
    }

    /// Whether `name` is a configured static user (who wins over a REST
    /// credential of the same name).
    pub fn is_static_user(&self, name: &str) -> bool {
        self.users.contains_key(name)
    }

    /// Whether any way to authenticate is configured.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.rest_secrets.is_empty()
    }

    /// The candidate long-term keys for `username` with `algorithm`, most
    /// likely first. Empty when the user is unknown, the REST credential has
    /// expired (`unix_now` is the wall-clock time in seconds since the Unix
    /// epoch) or the algorithm is not one we know.
    pub fn keys_for(
        &self,
        algorithm: PasswordAlgorithm,
        username: &str,
        realm: &str,
        unix_now: u64,
    ) -> Vec<LongTermKey> {
        if let Some(password) = self.users.get(username) {
            return long_term_key(algorithm, username, realm, password)
                .into_iter()
                .collect();
        }
        let Some(expiry) = rest_expiry(username) else {
            return Vec::new();
        };
        if expiry <= unix_now {
            return Vec::new();
        }
        self.rest_secrets
            .iter()
            .filter_map(|secret| {
                long_term_key(algorithm, username, realm, &rest_password(secret, username))
            })
            .collect()
    }
}

/// The expiry encoded in a REST username: `"<unix expiry>"` or
/// `"<unix expiry>:<anything>"`.
pub fn rest_expiry(username: &str) -> Option<u64> {
    let stamp = username
        .split_once(':')
        .map_or(username, |(stamp, _)| stamp);
    if stamp.is_empty() || !stamp.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stamp.parse().ok()
}

/// The REST password `base64(HMAC-SHA1(secret, username))`.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Mints a REST credential `(username, password)` valid until `expiry`
/// (Unix seconds) for `id`.
pub fn mint_rest_credential(secret: &[u8], expiry: u64, id: &str) -> (String, String) {
    let username = format!("{expiry}:{id}");
    let password = rest_password(secret, &username);
    (username, password)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD5: PasswordAlgorithm = PasswordAlgorithm::Md5;
    const SHA256: PasswordAlgorithm = PasswordAlgorithm::Sha256;

    fn key(algorithm: PasswordAlgorithm, user: &str, realm: &str, pw: &str) -> LongTermKey {
        long_term_key(algorithm, user, realm, pw).unwrap()
    }

    #[test]
    fn long_term_keys_hash_the_joined_fields() {
        // Computed independently: printf 'user:example.org:pass' | md5sum
        let md5 = key(MD5, "user", "example.org", "pass");
        assert_eq!(hex(md5.as_bytes()), "abca35356f4b00fbc33e2d8c2c43b9d6");
        // printf 'user:example.org:pass' | sha256sum
        let sha = key(SHA256, "user", "example.org", "pass");
        assert_eq!(
            hex(sha.as_bytes()),
            "2eab843d62723b5549ca4dde2641a8c07ba67a3c7df8919c8da81ee206a4b907"
        );
        assert_eq!(
            long_term_key(PasswordAlgorithm::Unknown(9), "u", "r", "p"),
            None
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn offered_algorithms_wire_form() {
        use switchboard_stun::attr::PasswordAlgorithms;
        use switchboard_stun::{Class, Message, MessageBuilder, MessageType, Method};
        let mut buf = Vec::new();
        let ty = MessageType::new(Method::ALLOCATE, Class::ErrorResponse);
        let mut b = MessageBuilder::new(&mut buf, ty, Default::default());
        b.add(&PasswordAlgorithms::new(&OFFERED_ALGORITHMS));
        let bytes = b.finish().unwrap().to_vec();
        let msg = Message::parse(&bytes).unwrap();
        assert_eq!(
            msg.get_raw(switchboard_stun::AttrType::PASSWORD_ALGORITHMS),
            Some(&OFFERED_ALGORITHMS_WIRE[..])
        );
    }

    #[test]
    fn static_user() {
        let mut c = Credentials::new();
        c.add_user("alice", "secret");
        assert_eq!(
            c.keys_for(MD5, "alice", "r", 0),
            vec![key(MD5, "alice", "r", "secret")]
        );
        assert_eq!(
            c.keys_for(SHA256, "alice", "r", 0),
            vec![key(SHA256, "alice", "r", "secret")]
        );
        assert!(c.keys_for(MD5, "bob", "r", 0).is_empty());
        assert!(
            c.keys_for(PasswordAlgorithm::Unknown(3), "alice", "r", 0)
                .is_empty()
        );
    }

    #[test]
    fn rest_expiry_parsing() {
        assert_eq!(rest_expiry("1700000000:alice"), Some(1_700_000_000));
        assert_eq!(rest_expiry("1700000000"), Some(1_700_000_000));
        assert_eq!(rest_expiry("alice:1700000000"), None);
        assert_eq!(rest_expiry(":x"), None);
        assert_eq!(rest_expiry("+12:x"), None);
        assert_eq!(rest_expiry("99999999999999999999999:x"), None);
    }

    #[test]
    fn rest_credentials_with_rotation_and_expiry() {
        let mut c = Credentials::new();
        c.add_rest_secret("new");
        c.add_rest_secret("old");
        let (user, pass_old) = mint_rest_credential(b"old", 1000, "peer");
        assert_eq!(user, "1000:peer");
        for algorithm in [MD5, SHA256] {
            let keys = c.keys_for(algorithm, &user, "r", 999);
            assert_eq!(keys.len(), 2);
            assert!(keys.contains(&key(algorithm, &user, "r", &pass_old)));
            assert!(
                c.keys_for(algorithm, &user, "r", 1000).is_empty(),
                "expired at the second"
            );
        }
    }

    #[test]
    fn rest_password_matches_coturn_scheme() {
        // Computed independently: printf 1:u | openssl dgst -sha1 -hmac secret -binary | base64
        assert_eq!(
            rest_password(b"secret", "1:u"),
            "KUHD1CkWw8p55pIgHmyFn2XyOzY="
        );
    }
}
