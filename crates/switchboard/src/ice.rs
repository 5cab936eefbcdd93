//! The `ice_servers` a signaling client gets (in `welcome` and from
//! `GET /api/ice-servers`): STUN/TURN URLs and a time-limited TURN REST
//! credential. Built from `[turn]` and the addresses the local TURN service
//! bound; it needs nothing else of the TURN service, so that signaling and
//! TURN only share the REST secret, as nodes of a cluster do.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use switchboard_signal_proto::IceServer;
use switchboard_turn::auth::mint_rest_credential;

use crate::turn::{TurnService, TurnSettings, source_key};

/// Longest user id put in a minted username; a longer `sub` (STUN caps
/// USERNAME at 513 bytes) falls back to the peer id.
const MAX_MINTED_ID: usize = 256;

/// Most sources a [`MintLimiter`] tracks; beyond, sources whose bucket has
/// refilled are forgotten, and if none has, new sources are refused until
/// one does (bounded memory against a spray of source addresses).
const MAX_TRACKED_SOURCES: usize = 65_536;

/// Why an [`IceServers`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IceError {
    /// Neither `turn.rest_secret` nor `turn.rest_secrets` holds a secret:
    /// call [`ensure_rest_secret`] before starting TURN.
    #[error("no TURN REST secret to mint credentials with")]
    NoSecret,
}

/// Whom [`IceServers::grant`] mints a credential for.
#[derive(Debug, Clone, Copy)]
pub struct MintFor<'a> {
    /// The client's address: minting is rate-limited per source.
    pub source: IpAddr,
    /// A verified user id (a token's `sub`). Never an unauthenticated
    /// `?user=`, which anyone could set to spend someone else's quota.
    pub user: Option<&'a str>,
    /// The signaling peer id, used when there is no user; without either
    /// (an anonymous GET /api/ice-servers) a random id is minted.
    pub peer: Option<&'a str>,
}

/// What [`IceServers::grant`] hands out.
#[derive(Debug, Default)]
pub struct IceGrant {
    /// The `ice_servers` entries (none when there is no STUN/TURN at all).
    pub servers: Vec<IceServer>,
    /// The source minted too often: `servers` holds the STUN URL alone.
    pub limited: bool,
}

/// The listeners of this node's TURN service, when it runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalTurn {
    /// STUN/TURN over UDP.
    pub udp: Option<SocketAddr>,
    /// STUN/TURN over TCP.
    pub tcp: Option<SocketAddr>,
    /// STUN/TURN over TLS.
    pub tls: Option<SocketAddr>,
}

impl LocalTurn {
    /// What `turn` bound.
    pub fn of(turn: &TurnService) -> Self {
        Self {
            udp: turn.local_udp(),
            tcp: turn.local_tcp(),
            tls: turn.local_tls(),
        }
    }
}

/// Mints `ice_servers`. Shared by every signaling face and the HTTP API.
#[derive(Debug)]
pub struct IceServers {
    local: LocalTurn,
    /// What a reload replaces whole.
    minting: RwLock<Arc<Minting>>,
    mints: MintLimiter,
}

/// The `[turn]` keys a grant reads.
#[derive(Debug)]
struct Minting {
    secret: Vec<u8>,
    ttl_secs: u64,
    public_host: Option<String>,
    /// `turn.servers`: the fleet's other TURN nodes.
    servers: Vec<String>,
}

impl Minting {
    fn new(settings: &TurnSettings) -> Result<Self, IceError> {
        let secret = first_secret(settings).ok_or(IceError::NoSecret)?;
        Ok(Self {
            secret: secret.as_bytes().to_vec(),
            ttl_secs: settings.credential_ttl_secs,
            public_host: settings.public_host.clone(),
            servers: settings.servers.clone(),
        })
    }
}

/// Whether `settings` name a REST secret of their own.
pub fn has_rest_secret(settings: &TurnSettings) -> bool {
    first_secret(settings).is_some()
}

/// Gives `settings` a random REST secret when none is configured, so that
/// the TURN service and [`IceServers`] built from the same settings agree
/// on it (credentials then only work on this node, which is all a node
/// without a shared secret can offer).
pub fn ensure_rest_secret(settings: &mut TurnSettings) {
    if first_secret(settings).is_none() {
        let mut random = [0u8; 32];
        rand::fill(&mut random);
        settings
            .rest_secrets
            .push(base64::engine::general_purpose::STANDARD_NO_PAD.encode(random));
    }
}

/// The secret credentials are minted with: the first of `rest_secret`,
/// then `rest_secrets` (the others are only accepted, for rotation).
fn first_secret(settings: &TurnSettings) -> Option<&str> {
    settings
        .rest_secret
        .iter()
        .chain(settings.rest_secrets.iter())
        .map(String::as_str)
        .find(|s| !s.is_empty())
}

impl IceServers {
    /// From `[turn]` (secret, `public_host`, `servers`, TTL and the mint
    /// limit) and the local listeners.
    pub fn new(settings: &TurnSettings, local: LocalTurn) -> Result<Self, IceError> {
        Ok(Self {
            local,
            minting: RwLock::new(Arc::new(Minting::new(settings)?)),
            mints: MintLimiter::new(settings.mint_per_ip_per_minute),
        })
    }

    /// Mints with new `[turn]` settings from now on (a reload): secret,
    /// `public_host`, `servers`, TTL and the mint limit. Refused, changing
    /// nothing, without a secret: the caller passes the one in use when
    /// the new settings name none. The listeners stay those bound at start.
    pub fn reconfigure(&self, settings: &TurnSettings) -> Result<(), IceError> {
        let next = Arc::new(Minting::new(settings)?);
        *self.minting.write().unwrap_or_else(|p| p.into_inner()) = next;
        self.mints
            .per_minute
            .store(settings.mint_per_ip_per_minute, Ordering::Relaxed);
        Ok(())
    }

    fn minting(&self) -> Arc<Minting> {
        self.minting
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Lifetime of the credentials [`Self::grant`] mints.
    pub fn credential_ttl_secs(&self) -> u64 {
        self.minting().ttl_secs
    }

    /// `RTCIceServer` entries with a time-limited REST credential,
    /// `"<expiry>:<id>"`: the id is the verified user id when there is one,
    /// so that the per-user allocation quota binds a user across sessions,
    /// else the peer id (else a random one). Minting is rate-limited per
    /// source address (`turn.mint_per_ip_per_minute`); a limited source gets
    /// the STUN URL alone. `host` is the host the HTTP client used;
    /// `turn.public_host` overrides it.
    pub fn grant(&self, who: MintFor<'_>, host: &str) -> IceGrant {
        let minting = self.minting();
        let host = url_host(minting.public_host.as_deref().unwrap_or(host));
        let mut urls = Vec::new();
        if let (Some(udp), Some(tcp)) = (self.local.udp, self.local.tcp) {
            urls.push(format!("stun:{host}:{}", udp.port()));
            urls.push(format!("turn:{host}:{}?transport=udp", udp.port()));
            urls.push(format!("turn:{host}:{}?transport=tcp", tcp.port()));
            if let Some(tls) = self.local.tls {
                urls.push(format!("turns:{host}:{}?transport=tcp", tls.port()));
            }
        }
        // The fleet's other TURN nodes (`turn.servers`): any of them takes
        // a credential minted here.
        urls.extend(minting.servers.iter().cloned());
        if urls.is_empty() {
            return IceGrant::default();
        }
        if !self.mints.allow(who.source, Instant::now()) {
            tracing::debug!(source = %who.source, "ice: credential minting rate-limited");
            urls.retain(|u| u.starts_with("stun:"));
            return IceGrant {
                servers: vec![IceServer {
                    urls,
                    username: None,
                    credential: None,
                }],
                limited: true,
            };
        }
        let random;
        let id = match (who.user, who.peer) {
            (Some(user), _) if !user.is_empty() && user.len() <= MAX_MINTED_ID => user,
            (_, Some(peer)) => peer,
            _ => {
                let mut bytes = [0u8; 12];
                rand::fill(&mut bytes);
                random = format!(
                    "anon-{}",
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
                );
                &random
            }
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let expiry = now.saturating_add(minting.ttl_secs);
        let (username, credential) = mint_rest_credential(&minting.secret, expiry, id);
        IceGrant {
            servers: vec![IceServer {
                urls,
                username: Some(username),
                credential: Some(credential),
            }],
            limited: false,
        }
    }
}

/// The host name a client used, without the port: the host in the
/// `ice_servers` URLs when `turn.public_host` is not set.
pub fn request_host(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    strip_port(host).to_string()
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

/// `host` as it goes in a URL: brackets around an IPv6 literal, no port.
fn url_host(host: &str) -> String {
    if let Some(rest) = host.strip_prefix('[') {
        return format!("[{}]", rest.split(']').next().unwrap_or(rest));
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => host.split(':').next().unwrap_or(host).to_owned(),
    }
}

/// A token bucket per source: `per_minute` mints, refilled evenly, with a
/// burst of the same size. 0 turns the limit off.
#[derive(Debug)]
struct MintLimiter {
    per_minute: AtomicU32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl MintLimiter {
    fn new(per_minute: u32) -> Self {
        Self {
            per_minute: AtomicU32::new(per_minute),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one mint for `ip` at `now`; false when its bucket is empty.
    fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let per_minute = self.per_minute.load(Ordering::Relaxed);
        if per_minute == 0 {
            return true;
        }
        let capacity = f64::from(per_minute);
        let rate = capacity / 60.0;
        let refilled = |b: &Bucket| {
            let secs = now.saturating_duration_since(b.at).as_secs_f64();
            (b.tokens + secs * rate).min(capacity)
        };
        let key = source_key(ip);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(&key) && buckets.len() >= MAX_TRACKED_SOURCES {
            buckets.retain(|_, b| refilled(b) < capacity);
            if buckets.len() >= MAX_TRACKED_SOURCES {
                return false;
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let tokens = refilled(bucket);
        bucket.at = now;
        if tokens < 1.0 {
            bucket.tokens = tokens;
            return false;
        }
        bucket.tokens = tokens - 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn host_without_port() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:8080"), "::1");
        assert_eq!(strip_port("127.0.0.1:1"), "127.0.0.1");
    }

    #[test]
    fn url_hosts() {
        assert_eq!(url_host("example.com"), "example.com");
        assert_eq!(url_host("example.com:8080"), "example.com");
        assert_eq!(url_host("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(url_host("::1"), "[::1]");
        assert_eq!(url_host("[::1]:8080"), "[::1]");
    }

    #[test]
    fn mint_buckets_refill_over_time() {
        let limiter = MintLimiter::new(3);
        let ip: IpAddr = "198.51.100.9".parse().unwrap();
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.allow(ip, t0)));
        assert!(!limiter.allow(ip, t0));
        assert!(limiter.allow("198.51.100.10".parse().unwrap(), t0));
        // 3 a minute: one more every 20 s.
        assert!(!limiter.allow(ip, t0 + Duration::from_secs(10)));
        assert!(limiter.allow(ip, t0 + Duration::from_secs(21)));
        assert!(MintLimiter::new(0).allow(ip, t0));
    }

    #[test]
    fn a_random_secret_is_added_only_when_none_is_set() {
        let mut s = TurnSettings::default();
        assert!(matches!(
            IceServers::new(&s, LocalTurn::default()),
            Err(IceError::NoSecret)
        ));
        ensure_rest_secret(&mut s);
        assert_eq!(s.rest_secrets.len(), 1);
        ensure_rest_secret(&mut s);
        assert_eq!(s.rest_secrets.len(), 1);
        let ice = IceServers::new(&s, LocalTurn::default()).expect("a secret now");
        let who = MintFor {
            source: [127, 0, 0, 1].into(),
            user: None,
            peer: None,
        };
        assert!(ice.grant(who, "h").servers.is_empty(), "no TURN, no URLs");
    }
}
