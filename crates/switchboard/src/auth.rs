//! Who may connect: JWTs (HS256) and browser origins, checked before the
//! WebSocket upgrade so that a refused client costs nothing more.

use std::sync::{Arc, RwLock};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use switchboard_signal::Identity;

use crate::config::AuthConfig;

/// Why a request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No token where one is required.
    #[error("a token is required")]
    MissingToken,
    /// Forged, expired, or otherwise invalid.
    #[error("invalid token: {0}")]
    BadToken(String),
    /// A browser from an origin not in `auth.allowed_origins`.
    #[error("origin {0} is not allowed")]
    Origin(String),
}

/// Why `[auth]` cannot be used as configured.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthConfigError {
    /// An empty HMAC key signs tokens anyone can forge: refused rather
    /// than read as "auth off".
    #[error(
        "auth.jwt_secret is set but empty: give a secret of at least {MIN_SECRET_BYTES} bytes, or leave the key unset to run without tokens"
    )]
    EmptySecret,
    /// Short HS256 keys can be brute-forced offline from one token.
    #[error(
        "auth.jwt_secret is {0} bytes long: it must be at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -base64 32`)"
    )]
    ShortSecret(usize),
}

/// RFC 7518 §3.2: an HS256 key must be at least as long as the hash (256
/// bits).
pub const MIN_SECRET_BYTES: usize = 32;

/// Checks `auth.jwt_secret` before anything starts.
pub fn check_secret(secret: Option<&str>) -> Result<(), AuthConfigError> {
    match secret.map(str::len) {
        None => Ok(()),
        Some(0) => Err(AuthConfigError::EmptySecret),
        Some(n) if n < MIN_SECRET_BYTES => Err(AuthConfigError::ShortSecret(n)),
        Some(_) => Ok(()),
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[allow(dead_code)]
    exp: u64,
    #[serde(default)]
    rooms: Option<Vec<String>>,
    #[serde(default)]
    name: Option<String>,
}

/// The checks of `[auth]` in force, swapped whole by a reload
/// (PROTOCOL.md §8). A request takes one [`Authenticator::current`]
/// snapshot and checks everything against it, so that a reload between
/// its origin check and its token check cannot mix two configurations.
pub struct Authenticator {
    current: RwLock<Arc<AuthRules>>,
}

impl Authenticator {
    /// From the `[auth]` section; refuses a secret that would make tokens
    /// forgeable.
    pub fn new(cfg: &AuthConfig) -> Result<Self, AuthConfigError> {
        Ok(Self {
            current: RwLock::new(Arc::new(AuthRules::new(cfg)?)),
        })
    }

    /// The rules in force now; a request holds on to them.
    pub fn current(&self) -> Arc<AuthRules> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts `cfg` in force for the requests to come. Refused, changing
    /// nothing, when the secret would make tokens forgeable. Connections
    /// already admitted stay: they were checked when they came.
    pub fn replace(&self, cfg: &AuthConfig) -> Result<(), AuthConfigError> {
        self.install(AuthRules::new(cfg)?);
        Ok(())
    }

    /// Puts rules built beforehand in force for the requests to come.
    pub fn install(&self, rules: AuthRules) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rules);
    }

    /// Whether tokens are required now.
    pub fn enabled(&self) -> bool {
        self.current().enabled()
    }

    /// [`AuthRules::check_origin`] with the rules in force.
    pub fn check_origin(&self, origin: Option<&str>) -> Result<(), AuthError> {
        self.current().check_origin(origin)
    }

    /// [`AuthRules::identify`] with the rules in force.
    pub fn identify(&self, token: Option<&str>, user: Option<&str>) -> Result<Identity, AuthError> {
        self.current().identify(token, user)
    }
}

/// One `[auth]`, built once per configuration.
pub struct AuthRules {
    key: Option<DecodingKey>,
    validation: Validation,
    allowed_origins: Vec<String>,
}

impl AuthRules {
    /// From the `[auth]` section; refuses a secret that would make tokens
    /// forgeable.
    pub fn new(cfg: &AuthConfig) -> Result<Self, AuthConfigError> {
        check_secret(cfg.jwt_secret.as_deref())?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // A token minted for later (`nbf`) must not open the door now.
        validation.validate_nbf = true;
        validation.leeway = 0;
        Ok(Self {
            key: cfg
                .jwt_secret
                .as_deref()
                .map(|s| DecodingKey::from_secret(s.as_bytes())),
            validation,
            allowed_origins: cfg.allowed_origins.clone(),
        })
    }

    /// Whether tokens are required.
    pub fn enabled(&self) -> bool {
        self.key.is_some()
    }

    /// A browser's `Origin` must be listed when a list is configured;
    /// clients that send none (not browsers) pass.
    pub fn check_origin(&self, origin: Option<&str>) -> Result<(), AuthError> {
        match origin {
            Some(o)
                if !self.allowed_origins.is_empty()
                    && !self.allowed_origins.iter().any(|a| a == o) =>
            {
                Err(AuthError::Origin(o.to_string()))
            }
            _ => Ok(()),
        }
    }

    /// The identity for a connection: the token's claims when auth is on,
    /// otherwise the unauthenticated `?user=`.
    pub fn identify(&self, token: Option<&str>, user: Option<&str>) -> Result<Identity, AuthError> {
        let Some(key) = &self.key else {
            return Ok(Identity {
                user: user.filter(|u| !u.is_empty()).map(str::to_string),
                ..Identity::default()
            });
        };
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::MissingToken)?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|e| AuthError::BadToken(e.to_string()))?;
        Ok(Identity {
            user: Some(data.claims.sub),
            name: data.claims.name,
            rooms: data.claims.rooms,
            ..Identity::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn token(secret: &str, exp: u64) -> String {
        sign(
            secret,
            serde_json::json!({"sub": "alice", "exp": exp, "rooms": ["r1"]}),
        )
    }

    fn sign(secret: &str, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("encodes")
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    #[test]
    fn valid_forged_expired_and_missing_tokens() {
        let auth = Authenticator::new(&AuthConfig {
            jwt_secret: Some(SECRET.into()),
            allowed_origins: vec![],
        })
        .expect("a long secret");
        let id = auth
            .identify(Some(&token(SECRET, now() + 60)), None)
            .expect("valid");
        assert_eq!(id.user.as_deref(), Some("alice"));
        assert_eq!(id.rooms, Some(vec!["r1".to_string()]));
        assert!(matches!(
            auth.identify(Some(&token("other", now() + 60)), None),
            Err(AuthError::BadToken(_))
        ));
        assert!(matches!(
            auth.identify(Some(&token(SECRET, now() - 10)), None),
            Err(AuthError::BadToken(_))
        ));
        assert!(matches!(
            auth.identify(None, Some("bob")),
            Err(AuthError::MissingToken)
        ));
    }

    #[test]
    fn a_token_is_refused_before_its_nbf() {
        let auth = Authenticator::new(&AuthConfig {
            jwt_secret: Some(SECRET.into()),
            allowed_origins: vec![],
        })
        .expect("a long secret");
        let later = serde_json::json!({"sub": "a", "exp": now() + 600, "nbf": now() + 300});
        assert!(matches!(
            auth.identify(Some(&sign(SECRET, later)), None),
            Err(AuthError::BadToken(_))
        ));
        let begun = serde_json::json!({"sub": "a", "exp": now() + 600, "nbf": now() - 5});
        assert!(auth.identify(Some(&sign(SECRET, begun)), None).is_ok());
    }

    #[test]
    fn empty_and_short_secrets_are_refused() {
        let with = |s: &str| {
            Authenticator::new(&AuthConfig {
                jwt_secret: Some(s.into()),
                allowed_origins: vec![],
            })
            .err()
        };
        assert_eq!(with(""), Some(AuthConfigError::EmptySecret));
        assert_eq!(with("s3cret"), Some(AuthConfigError::ShortSecret(6)));
        assert_eq!(with(&SECRET[1..]), Some(AuthConfigError::ShortSecret(31)));
        assert_eq!(with(SECRET), None);
    }

    #[test]
    fn open_server_takes_the_user_query() {
        let auth = Authenticator::new(&AuthConfig::default()).expect("no secret");
        assert_eq!(
            auth.identify(None, Some("bob"))
                .expect("open")
                .user
                .as_deref(),
            Some("bob")
        );
    }

    #[test]
    fn replace_swaps_rules_and_refuses_a_short_secret() {
        let auth = Authenticator::new(&AuthConfig::default()).expect("open");
        let before = auth.current();
        let cfg = AuthConfig {
            jwt_secret: Some(SECRET.into()),
            allowed_origins: vec!["https://app.example".into()],
        };
        auth.replace(&cfg).expect("valid");
        assert!(auth.enabled());
        assert!(auth.check_origin(Some("https://other.example")).is_err());
        assert!(!before.enabled(), "a snapshot keeps its rules");
        assert_eq!(
            auth.replace(&AuthConfig {
                jwt_secret: Some("short".into()),
                allowed_origins: vec![],
            })
            .err(),
            Some(AuthConfigError::ShortSecret(5))
        );
        assert!(auth.enabled(), "the refused config changed nothing");
        assert!(auth.check_origin(Some("https://app.example")).is_ok());
    }

    #[test]
    fn origins() {
        let auth = Authenticator::new(&AuthConfig {
            jwt_secret: None,
            allowed_origins: vec!["https://app.example".into()],
        })
        .expect("no secret");
        assert!(auth.check_origin(None).is_ok());
        assert!(auth.check_origin(Some("https://app.example")).is_ok());
        assert!(auth.check_origin(Some("https://evil.example")).is_err());
    }
}
