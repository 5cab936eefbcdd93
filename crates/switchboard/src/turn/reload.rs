//! Reloading `[turn]` (PROTOCOL.md §8): what can change for new requests
//! without a restart, applied to the running core.

use switchboard_turn::ServerConfig;

use super::admin::{TurnAdminError, ask_core};
use super::{TurnService, TurnSettings, server_config};

/// The `[turn]` keys [`TurnService::reload`] applies; a change to any
/// other needs a restart (listeners, relay addresses and ports, the realm,
/// and `max_lifetime_secs`, which the TCP/TLS idle timeout was sized from).
/// The minting keys (`public_host`, `servers`, `credential_ttl_secs`,
/// `mint_per_ip_per_minute`) belong to whoever mints.
pub const TURN_RELOADABLE_KEYS: &[&str] = &[
    "users",
    "rest_secret",
    "rest_secrets",
    "allowed_peer_ranges",
    "denied_peer_ranges",
    "max_allocations",
    "max_allocations_per_user",
    "max_allocations_per_ip",
    "max_request_bytes",
    "challenges_per_ip_per_sec",
    "nonce_lifetime_secs",
    "allow_rfc5766_channels",
];

/// Why a reload was refused; the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum TurnReloadError {
    /// The settings do not validate (a peer range that does not parse).
    #[error("invalid [turn] settings: {0:#}")]
    Invalid(anyhow::Error),
    /// The core could not be reached.
    #[error(transparent)]
    Core(#[from] TurnAdminError),
}

impl TurnService {
    /// Applies the [`TURN_RELOADABLE_KEYS`] of `settings` to the requests
    /// to come. Live allocations keep their keys, permissions, channels and
    /// expiry: a removed user's or rotated secret's allocations go on
    /// being refreshed until their clients let them go. Without a REST
    /// secret in `settings`, the one in use stays. Nothing changes when
    /// the settings do not validate. A no-op when TURN is disabled.
    pub async fn reload(&self, settings: &TurnSettings) -> Result<(), TurnReloadError> {
        let secrets: Vec<String> = settings
            .rest_secret
            .iter()
            .chain(settings.rest_secrets.iter())
            .filter(|s| !s.is_empty())
            .cloned()
            .collect();
        let next = server_config(settings, &secrets).map_err(TurnReloadError::Invalid)?;
        let Some(shared) = self.inner.shared.clone() else {
            return Ok(());
        };
        ask_core(move || {
            let mut core = shared.lock();
            let next = keep_restart_only(next, core.server.config());
            core.server.reconfigure(next);
        })
        .await?;
        tracing::info!("turn: settings reloaded");
        Ok(())
    }
}

/// `next` with what only a restart changes taken from `running`.
fn keep_restart_only(mut next: ServerConfig, running: &ServerConfig) -> ServerConfig {
    next.credentials.inherit_rest_secrets(&running.credentials);
    next.max_lifetime = running.max_lifetime;
    next.default_lifetime = running.default_lifetime;
    next.max_queued_allocation_events = running.max_queued_allocation_events;
    next.software.clone_from(&running.software);
    // Set by the process from its own sockets, not from `[turn]`.
    next.service_peers.clone_from(&running.service_peers);
    next
}
