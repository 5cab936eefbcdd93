//! STUB written by the integrator only so that the crate compiles before the
//! TURN shell lands. The turn helper replaces this whole folder; keep the
//! signatures used by app.rs/config.rs: TurnSettings (serde, Default),
//! start(), TurnService::{local_udp, local_tcp, local_tls, ice_servers,
//! credential_ttl_secs, export_metrics}.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use switchboard_signal_proto::IceServer;
use tokio_util::sync::CancellationToken;

/// `[turn]` (stub).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TurnSettings {
    /// UDP and TCP listen address.
    pub listen: Option<SocketAddr>,
    /// Allowed peer ranges.
    pub allowed_peer_ranges: Vec<String>,
    /// Public host.
    pub public_host: Option<String>,
    /// TLS listen address.
    pub tls_listen: Option<SocketAddr>,
    /// External IP.
    pub external_ip: Option<std::net::IpAddr>,
}

/// Handle on the running STUN/TURN service (stub).
#[derive(Debug, Clone)]
pub struct TurnService;

impl TurnService {
    /// UDP address.
    pub fn local_udp(&self) -> Option<SocketAddr> {
        None
    }
    /// TCP address.
    pub fn local_tcp(&self) -> Option<SocketAddr> {
        None
    }
    /// TLS address.
    pub fn local_tls(&self) -> Option<SocketAddr> {
        None
    }
    /// Credentials for a peer.
    pub fn ice_servers(&self, _peer: &str, _host: &str) -> Vec<IceServer> {
        Vec::new()
    }
    /// Credential lifetime.
    pub fn credential_ttl_secs(&self) -> u64 {
        0
    }
    /// Pushes gauges into the metrics recorder.
    pub fn export_metrics(&self) {}
}

/// Starts STUN/TURN (stub: nothing).
pub async fn start(
    _settings: &TurnSettings,
    _tls: Option<Arc<rustls::ServerConfig>>,
    _shutdown: CancellationToken,
) -> anyhow::Result<TurnService> {
    Ok(TurnService)
}
