//! Long-term credentials (RFC 8489 §9.2): static users and time-limited
//! "TURN REST API" credentials derived from a shared secret.

use std::collections::HashMap;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;

/// The MD5 long-term key `MD5(username ":" realm ":" password)`.
pub type LongTermKey = [u8; 16];

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

    /// Whether any way to authenticate is configured.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.rest_secrets.is_empty()
    }

    /// The candidate long-term keys for `username`, most likely first. Empty
    /// when the user is unknown or the REST credential has expired
    /// (`unix_now` is the wall-clock time in seconds since the Unix epoch).
    pub fn keys_for(&self, username: &str, realm: &str, unix_now: u64) -> Vec<LongTermKey> {
        if let Some(password) = self.users.get(username) {
            return vec![long_term_key(username, realm, password)];
        }
        let Some(expiry) = rest_expiry(username) else {
            return Vec::new();
        };
        if expiry <= unix_now {
            return Vec::new();
        }
        self.rest_secrets
            .iter()
            .map(|secret| long_term_key(username, realm, &rest_password(secret, username)))
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

/// `MD5(username ":" realm ":" password)`. SASLprep is not applied: the
/// names this server mints and accepts are ASCII.
pub fn long_term_key(username: &str, realm: &str, password: &str) -> LongTermKey {
    let mut md5 = Md5::new();
    md5.update(username.as_bytes());
    md5.update(b":");
    md5.update(realm.as_bytes());
    md5.update(b":");
    md5.update(password.as_bytes());
    md5.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_term_key_is_md5_of_joined_fields() {
        // Computed independently: printf 'user:example.org:pass' | md5sum
        let key = long_term_key("user", "example.org", "pass");
        assert_eq!(hex(&key), "abca35356f4b00fbc33e2d8c2c43b9d6");
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn static_user() {
        let mut c = Credentials::new();
        c.add_user("alice", "secret");
        assert_eq!(
            c.keys_for("alice", "r", 0),
            vec![long_term_key("alice", "r", "secret")]
        );
        assert!(c.keys_for("bob", "r", 0).is_empty());
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
        let keys = c.keys_for(&user, "r", 999);
        assert_eq!(keys.len(), 2);
        assert!(keys.contains(&long_term_key(&user, "r", &pass_old)));
        assert!(
            c.keys_for(&user, "r", 1000).is_empty(),
            "expired at the second"
        );
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
