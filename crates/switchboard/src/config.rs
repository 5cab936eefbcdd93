//! The configuration tree: embedded defaults, then an optional TOML file,
//! then `SWITCHBOARD_*` environment variables, then command-line flags.
//!
//! Every key is listed with its default in docs/configuration.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::turn::TurnSettings;

/// The whole effective configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP listeners (signaling, Socket.IO, web client, API).
    pub http: HttpConfig,
    /// Certificate for HTTPS/WSS and TURN over TLS.
    pub tls: TlsConfig,
    /// STUN/TURN.
    pub turn: TurnSettings,
    /// Room limits.
    pub rooms: RoomsConfig,
    /// Session lifetime, heartbeats and resuming.
    pub session: SessionConfig,
    /// Per-connection limits.
    pub limits: LimitsConfig,
    /// Direct calls.
    pub calls: CallsConfig,
    /// Tokens and origins.
    pub auth: AuthConfig,
    /// Logging.
    pub log: LogConfig,
    /// Several nodes sharing rooms.
    pub cluster: ClusterConfig,
    /// Events POSTed to the operator's URLs.
    pub webhooks: WebhooksConfig,
    /// The admin API's listener and token.
    pub admin: AdminConfig,
    /// The SFU's media socket (PROTOCOL.md §7).
    pub media: MediaConfig,
}

/// `[http]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Plain HTTP and WebSocket.
    pub listen: SocketAddr,
    /// HTTPS and secure WebSocket, served only when a certificate is set.
    pub tls_listen: SocketAddr,
    /// How long a shutdown waits for connections to close.
    pub shutdown_timeout_secs: u64,
    /// A request's head must arrive within this; it also bounds how long a
    /// kept-alive connection may wait for its next request.
    pub header_timeout_secs: u64,
    /// An HTTP connection (not an upgraded WebSocket) that moves no byte
    /// either way for this long is closed.
    pub idle_timeout_secs: u64,
    /// The TLS handshake of an HTTPS connection must finish within this.
    pub tls_handshake_timeout_secs: u64,
    /// TCP_NODELAY on accepted connections: a small frame goes out at once
    /// instead of waiting for the client's delayed ACK.
    pub tcp_nodelay: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: ([0, 0, 0, 0], 8080).into(),
            tls_listen: ([0, 0, 0, 0], 8443).into(),
            shutdown_timeout_secs: 5,
            header_timeout_secs: 10,
            // Above Socket.IO's long-poll (25 s ping interval), which holds
            // a request open without a byte.
            idle_timeout_secs: 60,
            tls_handshake_timeout_secs: 10,
            tcp_nodelay: true,
        }
    }
}

/// `[tls]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// Make a development certificate at start when no cert is given.
    pub self_signed: bool,
}

impl TlsConfig {
    /// Whether any TLS listener is served.
    pub fn enabled(&self) -> bool {
        self.self_signed || (self.cert.is_some() && self.key.is_some())
    }
}

/// `[rooms]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    /// Peers per room; 0 = no limit.
    pub max_peers: usize,
    /// The kind of a room whose first join does not ask for one.
    pub media: RoomMedia,
}

/// How a room's media flows (PROTOCOL.md §7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomMedia {
    /// Every peer sends to every other peer.
    #[default]
    Mesh,
    /// Every peer sends once, to this server, which forwards.
    Sfu,
}

/// `[session]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// How long a dropped session may be resumed.
    pub resume_grace_secs: u64,
    /// Frames kept per session for resuming.
    pub replay_frames: usize,
    /// Bytes of frames kept per session for resuming (the newest frame is
    /// always kept).
    pub replay_bytes: usize,
    /// Server ping interval.
    pub heartbeat_interval_secs: u64,
    /// Silence after which a connection counts as dropped.
    pub heartbeat_timeout_secs: u64,
    /// Frames queued for a slow reader before it is closed with 1013. At
    /// most half of `replay_frames` is used, so that a reader closed for
    /// being slow can still resume without a gap. In bytes the queue holds
    /// at most half of `replay_bytes`.
    pub outbound_queue_frames: usize,
    /// Sessions of one user id in their grace period at once; one more ends
    /// the oldest (`bye`). 0 = no limit.
    pub max_suspended_per_user: usize,
    /// The same per source IP.
    pub max_suspended_per_ip: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            resume_grace_secs: 20,
            replay_frames: 1024,
            replay_bytes: 1 << 20,
            heartbeat_interval_secs: 15,
            heartbeat_timeout_secs: 45,
            outbound_queue_frames: 256,
            max_suspended_per_user: 8,
            max_suspended_per_ip: 128,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// A larger text frame gets `too_large`.
    pub max_message_bytes: usize,
    /// Rooms one session may be in at once.
    pub max_rooms_per_session: usize,
    /// Requests per second per session (token-bucket refill).
    pub rate_per_sec: u32,
    /// Requests allowed in a burst (token-bucket capacity).
    pub rate_burst: u32,
    /// Signaling connections served at once; more get HTTP 503.
    pub max_connections: usize,
    /// A `join` or `call` whose `meta` (JSON text) is longer gets
    /// `too_large`.
    pub max_meta_bytes: usize,
    /// What one room's `joined` may list (each member's meta plus 32 bytes);
    /// a join beyond it gets `full`. 0 = no limit.
    pub max_room_meta_bytes: usize,
    /// TCP connections to the HTTP listeners (plain and TLS together,
    /// WebSockets included) open at once; more are closed at accept.
    /// 0 = no cap.
    pub max_http_connections: usize,
    /// The same per source address (an IPv6 /64 counts as one); 0 = no
    /// cap. Behind a reverse proxy every client shares its address: raise
    /// it or set 0 there.
    pub max_connections_per_ip: usize,
    /// A Socket.IO session that has not sent CONNECT after this long is closed.
    pub socketio_connect_timeout_secs: u64,
    /// Socket.IO sessions one source address may have open before CONNECT;
    /// further handshakes get HTTP 429.
    pub socketio_pending_per_ip: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 65536,
            max_rooms_per_session: 16,
            rate_per_sec: 50,
            rate_burst: 200,
            max_connections: 19_500,
            max_meta_bytes: 4096,
            max_room_meta_bytes: 256 << 10,
            // Room for every signaling connection plus API and polling
            // requests beside them.
            max_http_connections: 20_480,
            max_connections_per_ip: 256,
            socketio_connect_timeout_secs: 5,
            socketio_pending_per_ip: 16,
        }
    }
}

/// `[calls]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallsConfig {
    /// A call nobody answers ends with `no_answer` after this.
    pub ring_timeout_secs: u64,
    /// Calls one session may have ringing at once; the next gets
    /// `rate_limited`. 0 = no limit.
    pub max_ringing_per_caller: usize,
}

impl Default for CallsConfig {
    fn default() -> Self {
        Self {
            ring_timeout_secs: 30,
            max_ringing_per_caller: 4,
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret, at least 32 bytes; when set, `/ws` needs `?token=JWT`.
    pub jwt_secret: Option<String>,
    /// Browser origins allowed to connect; empty = any.
    pub allowed_origins: Vec<String>,
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter, e.g. `info` or `switchboard=debug`. `RUST_LOG` wins.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
    /// Also append logs to this file.
    pub file: Option<PathBuf>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
            file: None,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object a line.
    Json,
}

/// `[cluster]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Redis URL of the backplane; unset = a single node, rooms in memory.
    pub redis_url: Option<String>,
    /// This node's id in the cluster; unset = random at start.
    pub node_id: Option<String>,
    /// A node silent for this long is dead: its sessions wait for their
    /// clients on the other nodes.
    pub node_timeout_secs: u64,
    /// Prefix of the keys and channels in Redis: nodes sharing it are one
    /// cluster.
    pub key_prefix: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: None,
            node_id: None,
            node_timeout_secs: 10,
            key_prefix: "sb".to_owned(),
        }
    }
}

// ---- [admin] ----

/// The address `admin.listen` has by default.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

/// `[admin]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The admin API's own listener; `""` turns it off.
    pub listen: String,
    /// Every admin request needs `Authorization: Bearer <token>`; required
    /// when `listen` is not a loopback address.
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_ADMIN_LISTEN.to_owned(),
            token: None,
        }
    }
}

/// An `[admin]` that must not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminConfigError {
    /// `admin.listen` is not an address.
    #[error("admin.listen {0:?} is not an address like 127.0.0.1:9090 (or \"\" for no admin API)")]
    Listen(String),
    /// A listener others can reach, and no token.
    #[error(
        "admin.listen {0} is not a loopback address: set admin.token (a long random string), or listen on 127.0.0.1"
    )]
    TokenRequired(SocketAddr),
}

impl AdminConfig {
    /// The address to listen on, `None` when the admin API is off.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, AdminConfigError> {
        let listen = self.listen.trim();
        if listen.is_empty() {
            return Ok(None);
        }
        let addr: SocketAddr = listen
            .parse()
            .map_err(|_| AdminConfigError::Listen(self.listen.clone()))?;
        if !addr.ip().is_loopback() && self.token().is_none() {
            return Err(AdminConfigError::TokenRequired(addr));
        }
        Ok(Some(addr))
    }

    /// The token, when one is set (an empty one is none).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref().filter(|t| !t.is_empty())
    }
}

// ---- end of [admin] ----

// `[media]` lives with the SFU's shell.
pub use crate::media::config::{DEFAULT_MEDIA_LISTEN, MediaConfig, MediaConfigError};

/// `[webhooks]` (PROTOCOL.md §8, docs/webhooks.md)
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Receivers, each sent every event; empty = webhooks off.
    pub urls: Vec<String>,
    /// HMAC-SHA256 key of the `Switchboard-Signature` header; required
    /// with `urls`.
    pub secret: Option<String>,
    /// An event is retried for this long after it happened, then given up.
    pub retry_secs: u64,
    /// Events held per URL (waiting, in flight, between retries); beyond
    /// it new events are dropped and counted.
    pub queue: usize,
    /// Allow receivers on loopback, private, link-local and unique-local
    /// addresses.
    pub allow_private: bool,
    /// One attempt (DNS, connect, TLS, request, answer) must finish within
    /// this.
    pub timeout_secs: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            secret: None,
            retry_secs: 600,
            queue: 10_000,
            allow_private: false,
            timeout_secs: 10,
        }
    }
}

/// Shorter webhook secrets are refused: a receiver's check is only as
/// strong as the key.
pub const MIN_WEBHOOK_SECRET_BYTES: usize = 16;

impl WebhooksConfig {
    /// Every URL is http(s) with a host; a secret is set when a URL is.
    pub fn validate(&self) -> anyhow::Result<()> {
        for url in &self.urls {
            crate::webhooks::Endpoint::parse(url).context("webhooks.urls")?;
        }
        let secret = self.secret.as_deref().unwrap_or("");
        anyhow::ensure!(
            self.urls.is_empty() || secret.len() >= MIN_WEBHOOK_SECRET_BYTES,
            "webhooks.secret must be set, at least {MIN_WEBHOOK_SECRET_BYTES} bytes, \
             when webhooks.urls is (receivers check every event's signature with it)"
        );
        anyhow::ensure!(self.queue >= 1, "webhooks.queue must be at least 1");
        anyhow::ensure!(
            self.timeout_secs >= 1,
            "webhooks.timeout_secs must be at least 1"
        );
        Ok(())
    }
}

impl SessionConfig {
    /// `resume_grace_secs` as a Duration.
    pub fn resume_grace(&self) -> Duration {
        Duration::from_secs(self.resume_grace_secs)
    }
}

/// Command-line flags. Each one overrides the key named in its help.
#[derive(Debug, Parser, Default)]
#[command(
    name = "switchboard",
    version,
    about = "WebRTC signaling and STUN/TURN server in one binary"
)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// http.listen, e.g. 127.0.0.1:8080 (port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// http.tls_listen, the HTTPS/WSS address.
    #[arg(long, value_name = "ADDR")]
    pub https_listen: Option<SocketAddr>,
    /// tls.cert: PEM certificate chain.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// tls.key: PEM private key.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// tls.self_signed: make a development certificate at start.
    #[arg(long)]
    pub tls_self_signed: bool,
    /// turn.listen: STUN/TURN over UDP and TCP.
    #[arg(long, value_name = "ADDR")]
    pub turn_listen: Option<SocketAddr>,
    /// turn.tls_listen: STUN/TURN over TLS.
    #[arg(long, value_name = "ADDR")]
    pub turn_tls_listen: Option<SocketAddr>,
    /// turn.public_host: host name put in ice_servers URLs.
    #[arg(long, value_name = "HOST")]
    pub public_host: Option<String>,
    /// turn.external_ip: the public address of a host behind 1:1 NAT.
    #[arg(long, value_name = "IP")]
    pub external_ip: Option<std::net::IpAddr>,
    /// rooms.max_peers (0 = no limit).
    #[arg(long, value_name = "N")]
    pub max_peers: Option<usize>,
    /// auth.jwt_secret: require HS256 tokens.
    #[arg(long, value_name = "SECRET")]
    pub jwt_secret: Option<String>,
    /// cluster.redis_url: share rooms with other nodes.
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// cluster.node_id: this node's id in the cluster.
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// admin.listen: the admin API's address ("" = off).
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// media.listen: the SFU's UDP address ("" = off).
    #[arg(long, value_name = "ADDR")]
    pub media_listen: Option<String>,
    /// log.level, a tracing filter.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// log.format = json.
    #[arg(long)]
    pub log_json: bool,
    /// log.file: also write logs here.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

impl Cli {
    /// Only the flags that were given, as a figment layer.
    fn overrides(&self) -> Figment {
        let mut f = Figment::new();
        macro_rules! set {
            ($key:literal, $val:expr) => {
                if let Some(v) = $val {
                    f = f.merge(Serialized::default($key, v));
                }
            };
        }
        set!("http.listen", self.http_listen);
        set!("http.tls_listen", self.https_listen);
        set!("tls.cert", self.tls_cert.as_ref());
        set!("tls.key", self.tls_key.as_ref());
        set!("tls.self_signed", self.tls_self_signed.then_some(true));
        set!("turn.listen", self.turn_listen);
        set!("turn.tls_listen", self.turn_tls_listen);
        set!("turn.public_host", self.public_host.as_ref());
        set!("turn.external_ip", self.external_ip);
        set!("rooms.max_peers", self.max_peers);
        set!("auth.jwt_secret", self.jwt_secret.as_ref());
        set!("cluster.redis_url", self.redis_url.as_ref());
        set!("cluster.node_id", self.node_id.as_ref());
        set!("admin.listen", self.admin_listen.as_ref());
        set!("media.listen", self.media_listen.as_ref());
        set!("log.level", self.log_level.as_ref());
        set!("log.format", self.log_json.then_some(LogFormat::Json));
        set!("log.file", self.log_file.as_ref());
        f
    }
}

impl Config {
    /// Defaults, then the file, then the environment, then the flags.
    pub fn load(cli: &Cli) -> anyhow::Result<Self> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &cli.config {
            anyhow::ensure!(path.is_file(), "config file {} not found", path.display());
            fig = fig.merge(Toml::file(path));
        }
        // Double underscore separates sections so that keys may contain `_`.
        // Only section-qualified names are config: other SWITCHBOARD_*
        // variables (SWITCHBOARD_BIN in test scripts) are not ours to refuse.
        fig = fig
            .merge(
                Env::prefixed("SWITCHBOARD_")
                    .filter(|k| k.as_str().contains("__"))
                    .split("__"),
            )
            .merge(cli.overrides());
        let cfg: Self = fig.extract().context("invalid configuration")?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Refuses settings that would start an unsafe server, before anything
    /// binds.
    pub fn validate(&self) -> anyhow::Result<()> {
        crate::auth::check_secret(self.auth.jwt_secret.as_deref())?;
        self.webhooks.validate()?;
        self.admin.listen_addr()?;
        self.media.validate(self.rooms.media)?;
        crate::one_port::check_config(self)?;
        Ok(())
    }

    /// The effective configuration as TOML, for `--print-config`.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string_pretty(self).context("serializing the configuration")
    }
}

// ---- reload (PROTOCOL.md §8) ----

/// What a reload changes: the keys (`section.key`) whose value differs
/// between the running configuration and the new one, split by whether a
/// reload applies them. Never values: some are secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigChanges {
    /// Applied for new requests.
    pub applied: Vec<String>,
    /// Left as they are until a restart.
    pub restart_only: Vec<String>,
}

/// Keys a reload applies for new requests, by section. Everything else
/// (listeners, `cluster.*`, `admin.*`, the log's format and file, sizes the
/// live sessions' buffers and Socket.IO's engine were built with) needs a
/// restart. `[turn]` is listed by [`crate::turn::TURN_RELOADABLE_KEYS`]
/// plus what the `ice_servers` minter reads; `tls.cert`/`tls.key` reload
/// when TLS was on at start (see [`reloadable`]).
const RELOADABLE: &[(&str, &[&str])] = &[
    ("rooms", &["max_peers"]),
    (
        "session",
        &[
            "resume_grace_secs",
            "max_suspended_per_user",
            "max_suspended_per_ip",
        ],
    ),
    (
        "limits",
        &[
            "max_message_bytes",
            "max_rooms_per_session",
            "rate_per_sec",
            "rate_burst",
            "max_connections",
            "max_meta_bytes",
            "max_room_meta_bytes",
        ],
    ),
    ("calls", &["ring_timeout_secs", "max_ringing_per_caller"]),
    ("auth", &["jwt_secret", "allowed_origins"]),
    ("log", &["level"]),
    (
        "webhooks",
        &[
            "urls",
            "secret",
            "retry_secs",
            "queue",
            "allow_private",
            "timeout_secs",
        ],
    ),
];

/// The `[turn]` keys the `ice_servers` minter reads, which it takes on
/// reload.
const TURN_MINTING_KEYS: &[&str] = &[
    "public_host",
    "servers",
    "credential_ttl_secs",
    "mint_per_ip_per_minute",
];

/// Whether a reload applies `key` (`section.key`) to a node started with
/// `running`.
pub fn reloadable(running: &Config, key: &str) -> bool {
    let Some((section, name)) = key.split_once('.') else {
        return false;
    };
    match section {
        "turn" => {
            crate::turn::TURN_RELOADABLE_KEYS.contains(&name) || TURN_MINTING_KEYS.contains(&name)
        }
        // A certificate can be swapped only under listeners that exist.
        "tls" => running.tls.enabled() && matches!(name, "cert" | "key"),
        _ => RELOADABLE
            .iter()
            .any(|(s, keys)| *s == section && keys.contains(&name)),
    }
}

/// Why two configurations could not be compared (never for a [`Config`]
/// that loaded: every one of them serializes).
#[derive(Debug, thiserror::Error)]
#[error("comparing configurations: {0}")]
pub struct DiffError(String);

fn sections(cfg: &Config) -> Result<toml::Table, DiffError> {
    toml::Table::try_from(cfg).map_err(|e| DiffError(e.to_string()))
}

/// The changes from `running` to `next`, and the configuration a reload
/// puts in force: `next` with every restart-only key at its running value.
pub fn reload_plan(running: &Config, next: &Config) -> Result<(Config, ConfigChanges), DiffError> {
    let old = sections(running)?;
    let mut new = sections(next)?;
    let empty = toml::Table::new();
    let mut changes = ConfigChanges::default();
    let names: std::collections::BTreeSet<String> = old.keys().chain(new.keys()).cloned().collect();
    for section in names {
        let before = old.get(&section).and_then(toml::Value::as_table);
        let before = before.unwrap_or(&empty);
        let after = new
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(after) = after.as_table_mut() else {
            continue;
        };
        let keys: std::collections::BTreeSet<String> =
            before.keys().chain(after.keys()).cloned().collect();
        for key in keys {
            if before.get(&key) == after.get(&key) {
                continue;
            }
            let name = format!("{section}.{key}");
            if reloadable(running, &name) {
                changes.applied.push(name);
                continue;
            }
            changes.restart_only.push(name);
            // An absent key is an unset `Option`.
            match before.get(&key) {
                Some(v) => after.insert(key, v.clone()),
                None => after.remove(&key),
            };
        }
    }
    let in_force = toml::Value::Table(new)
        .try_into::<Config>()
        .map_err(|e| DiffError(e.to_string()))?;
    Ok((in_force, changes))
}

// ---- end of reload ----

#[cfg(test)]
mod tests {
    use super::*;

    /// The deployment example of docs/scaling.md is a config that loads.
    #[test]
    fn the_deployment_example_parses() {
        let cfg: Config =
            toml::from_str(include_str!("../../../deploy/switchboard.toml")).expect("parses");
        assert!(cfg.cluster.redis_url.is_some());
        assert_eq!(cfg.cluster.node_id.as_deref(), Some("node-1"));
        assert_eq!(cfg.turn.servers.len(), 2);
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        let cfg = Config::default();
        let text = cfg.to_toml().expect("serializes");
        let back: Config = toml::from_str(&text).expect("parses back");
        assert_eq!(back.http.listen, cfg.http.listen);
        assert_eq!(back.limits.max_message_bytes, 65536);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail fixes the closure type
    fn flags_override_file_and_defaults() {
        // In a Jail: tests that set SWITCHBOARD_* variables run in one too,
        // and jails never overlap, so no variable leaks in here.
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "[rooms]\nmax_peers = 4\n[http]\nlisten = \"127.0.0.1:9000\"\n",
            )?;
            let cli = Cli {
                config: Some(jail.directory().join("c.toml")),
                http_listen: Some("127.0.0.1:9001".parse().expect("addr")),
                ..Cli::default()
            };
            let cfg = Config::load(&cli).expect("loads");
            assert_eq!(cfg.rooms.max_peers, 4);
            assert_eq!(cfg.http.listen.port(), 9001);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail fixes the closure type
    fn only_section_qualified_environment_variables_are_read() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SWITCHBOARD_BIN", "/usr/bin/true");
            jail.set_env("SWITCHBOARD_ROOMS__MAX_PEERS", "5");
            let cfg = Config::load(&Cli::default()).expect("SWITCHBOARD_BIN is not a key");
            assert_eq!(cfg.rooms.max_peers, 5);
            jail.set_env("SWITCHBOARD_ROOMS__MAX_PEER", "5");
            assert!(
                Config::load(&Cli::default()).is_err(),
                "a typo in a key is refused"
            );
            Ok(())
        });
    }

    #[test]
    fn webhook_urls_and_secret_are_checked_at_load() {
        let load = |text: &str| {
            toml::from_str::<Config>(text)
                .map_err(anyhow::Error::from)
                .and_then(|c| c.validate())
        };
        let secret = "secret = \"0123456789abcdef\"\n";
        load(&format!(
            "[webhooks]\nurls = [\"https://h.example/in\"]\n{secret}"
        ))
        .expect("valid");
        for bad in [
            format!("[webhooks]\nurls = [\"ftp://h.example/\"]\n{secret}"),
            format!("[webhooks]\nurls = [\"not a url\"]\n{secret}"),
            "[webhooks]\nurls = [\"https://h.example/\"]\n".to_owned(),
            "[webhooks]\nurls = [\"https://h.example/\"]\nsecret = \"short\"\n".to_owned(),
            format!("[webhooks]\nurls = [\"https://h.example/\"]\n{secret}queue = 0\n"),
        ] {
            assert!(load(&bad).is_err(), "{bad}");
        }
        let d = WebhooksConfig::default();
        assert_eq!(
            (d.retry_secs, d.queue, d.allow_private),
            (600, 10_000, false)
        );
    }

    #[test]
    fn an_admin_listener_others_can_reach_needs_a_token() {
        let mut admin = AdminConfig::default();
        assert!(matches!(admin.listen_addr(), Ok(Some(_))));
        admin.listen = "0.0.0.0:9090".into();
        assert!(matches!(
            admin.listen_addr(),
            Err(AdminConfigError::TokenRequired(_))
        ));
        admin.token = Some(String::new());
        assert!(admin.listen_addr().is_err(), "an empty token is none");
        admin.token = Some("a-long-random-token".into());
        assert!(admin.listen_addr().is_ok());
        admin.listen = String::new();
        assert!(matches!(admin.listen_addr(), Ok(None)));
        admin.listen = "nine-oh-nine-oh".into();
        assert!(matches!(
            admin.listen_addr(),
            Err(AdminConfigError::Listen(_))
        ));
    }

    #[test]
    fn a_reload_plan_keeps_restart_only_keys() {
        let running = Config::default();
        let mut next = Config::default();
        next.limits.max_message_bytes = 1000;
        next.turn.users.insert("bob".into(), "pw".into());
        next.http.listen = "127.0.0.1:1".parse().expect("addr");
        next.cluster.redis_url = Some("redis://127.0.0.1/".into());
        next.session.replay_frames = 10;
        next.auth.jwt_secret = Some("x".repeat(32));
        next.tls.cert = Some("c.pem".into());
        let (in_force, changes) = reload_plan(&running, &next).expect("compares");
        assert_eq!(
            changes.applied,
            ["auth.jwt_secret", "limits.max_message_bytes", "turn.users"]
        );
        assert_eq!(
            changes.restart_only,
            [
                "cluster.redis_url",
                "http.listen",
                "session.replay_frames",
                "tls.cert"
            ]
        );
        assert_eq!(in_force.limits.max_message_bytes, 1000);
        assert_eq!(in_force.turn.users.len(), 1);
        assert_eq!(in_force.http.listen, running.http.listen);
        assert!(in_force.cluster.redis_url.is_none());
        assert!(in_force.tls.cert.is_none());
        assert_eq!(in_force.session.replay_frames, 1024);
        let (_, none) = reload_plan(&running, &running).expect("compares");
        assert_eq!(none, ConfigChanges::default());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<Config>("[rooms]\nmax_peer = 4\n");
        assert!(err.is_err());
    }
}
