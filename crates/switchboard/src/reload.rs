//! SIGHUP: the config file and the certificate files read again, and what
//! can change live put in force for new requests (PROTOCOL.md §8). No
//! session, allocation or call is touched.
//!
//! A reload is all or nothing as far as it can check beforehand: the file
//! must parse and validate, the log filter must parse, the certificate pair
//! must load and match, and the `[auth]` rules must build; then the parts
//! are swapped one after the other (TURN first, the one step left that can
//! still refuse). Keys that only a restart changes are logged and left as
//! they are, so the running node never holds half of one key.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{AuthRules, Authenticator};
use crate::config::{Cli, Config, ConfigChanges};
use crate::hub::Hub;
use crate::ice::IceServers;
use crate::state::LiveLimits;
use crate::telemetry::LogLevelChange;
use crate::tls::{CertStore, TlsError};
use crate::turn::TurnService;
use crate::webhooks::Webhooks;

const METRIC: &str = "switchboard_reloads_total";

/// Why a reload was refused; the configuration in force stays.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The file does not parse or validate.
    #[error("{0:#}")]
    Config(anyhow::Error),
    /// `log.level` is not a filter.
    #[error(transparent)]
    LogLevel(#[from] crate::telemetry::LogLevelError),
    /// `[auth]` does not build.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthConfigError),
    /// The certificate pair does not load or match.
    #[error(transparent)]
    Certificate(#[from] TlsError),
    /// `[turn]` was refused by the TURN service.
    #[error(transparent)]
    Turn(#[from] crate::turn::TurnReloadError),
    /// `[webhooks]` was refused (after `[turn]` was applied).
    #[error("webhooks: {0:#}")]
    Webhooks(anyhow::Error),
    /// The configurations could not be compared.
    #[error(transparent)]
    Diff(#[from] crate::config::DiffError),
    /// The `ice_servers` minter has no secret (never: the one in use is
    /// carried over).
    #[error(transparent)]
    Ice(#[from] crate::ice::IceError),
}

/// What a successful reload did.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// The config file's keys, applied and left for a restart; empty
    /// without a config file.
    pub changes: ConfigChanges,
    /// The certificate served from now on differs from the one before.
    pub certificate_changed: bool,
}

/// Every part a reload reaches, and the configuration in force.
pub(crate) struct Reloader {
    /// How the configuration was loaded at start; `None` when no file was
    /// given: then only the certificate files are read again.
    pub(crate) cli: Option<Cli>,
    /// In force now (restart-only keys at their start values, the REST
    /// secret in use filled in).
    pub(crate) running: Config,
    pub(crate) certs: Option<CertStore>,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) ice: Arc<IceServers>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) turn: TurnService,
    pub(crate) webhooks: Webhooks,
    pub(crate) limits: LiveLimits,
    pub(crate) connections: Arc<Semaphore>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

/// Registers the counter with its help text, at zero, so that it is in
/// `/metrics` before the first reload.
pub(crate) fn describe_metrics() {
    metrics::describe_counter!(
        METRIC,
        "Configuration reloads (SIGHUP), by result: applied, or refused with the running \
         configuration kept"
    );
    for result in ["applied", "refused"] {
        metrics::counter!(METRIC, "result" => result).increment(0);
    }
}

impl Reloader {
    /// Reads the files again and applies what changed; logs and counts the
    /// outcome.
    pub(crate) async fn reload(&mut self) -> Result<Reloaded, ReloadError> {
        let outcome = self.try_reload().await;
        match &outcome {
            Ok(done) => {
                metrics::counter!(METRIC, "result" => "applied").increment(1);
                log_applied(self.cli.is_some(), done);
            }
            Err(e) => {
                metrics::counter!(METRIC, "result" => "refused").increment(1);
                // One line, for log shippers: TOML errors come with a
                // multi-line excerpt of the file.
                let why = e.to_string().replace('\n', " ");
                tracing::error!("reload refused, the running configuration stays: {why}");
            }
        }
        outcome
    }

    async fn try_reload(&mut self) -> Result<Reloaded, ReloadError> {
        let Some(cli) = &self.cli else {
            // No file: the certificate files are all there is to read.
            let certificate_changed = match &self.certs {
                Some(certs) => certs.reload()?,
                None => false,
            };
            return Ok(Reloaded {
                changes: ConfigChanges::default(),
                certificate_changed,
            });
        };
        let mut next = Config::load(cli).map_err(ReloadError::Config)?;
        crate::telemetry::check_log_level(&next.log.level)?;
        // Without a REST secret of its own the new file keeps the one in
        // use (the random one made at start, or the last one named).
        if !crate::ice::has_rest_secret(&next.turn) {
            next.turn.rest_secret = self.running.turn.rest_secret.clone();
            next.turn.rest_secrets = self.running.turn.rest_secrets.clone();
        }
        let (in_force, changes) = crate::config::reload_plan(&self.running, &next)?;
        let rules = AuthRules::new(&in_force.auth)?;
        let staged = match &self.certs {
            Some(certs) => Some(certs.stage(&in_force.tls)?),
            None => None,
        };

        self.turn.reload(&in_force.turn).await?;
        self.webhooks
            .reconfigure(&in_force)
            .map_err(ReloadError::Webhooks)?;
        self.ice.reconfigure(&in_force.turn)?;
        let certificate_changed = match (&self.certs, staged) {
            (Some(certs), Some(staged)) => certs.install(staged),
            _ => false,
        };
        self.auth.install(rules);
        self.hub.reconfigure(crate::process::core_config(&in_force));
        self.limits.set(crate::process::conn_limits(&in_force));
        self.resize_connections(
            self.running.limits.max_connections,
            in_force.limits.max_connections,
        );
        match crate::telemetry::set_log_level(&in_force.log.level) {
            Ok(LogLevelChange::EnvironmentWins) if in_force.log.level != self.running.log.level => {
                tracing::warn!("log.level not applied: RUST_LOG is set, and wins");
            }
            Ok(_) => {}
            // Checked above; a subscriber that is gone is not the config's fault.
            Err(e) => tracing::warn!("log.level not changed: {e}"),
        }
        self.running = in_force;
        Ok(Reloaded {
            changes,
            certificate_changed,
        })
    }

    fn resize_connections(&self, from: usize, to: usize) {
        resize(
            &self.connections,
            from,
            to,
            &self.tasks,
            self.shutdown.clone(),
        );
    }
}

/// `limits.max_connections` from `from` to `to`: more room at once; less
/// as open connections close (none is cut), by a task that takes the
/// permits they give back and drops them.
fn resize(
    connections: &Arc<Semaphore>,
    from: usize,
    to: usize,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) {
    if to > from {
        let room = Semaphore::MAX_PERMITS.saturating_sub(connections.available_permits());
        connections.add_permits((to - from).min(room));
        return;
    }
    let excess = from - to;
    let taken = connections.forget_permits(excess);
    let owed = u32::try_from(excess - taken).unwrap_or(u32::MAX);
    if owed == 0 {
        return;
    }
    let connections = connections.clone();
    // The semaphore is fair: the permits closing connections release go to
    // this waiter before any new connection.
    tasks.spawn(async move {
        tokio::select! {
            permits = connections.acquire_many_owned(owed) => {
                if let Ok(permits) = permits {
                    permits.forget();
                }
            }
            () = shutdown.cancelled() => {}
        }
    });
}

fn log_applied(with_file: bool, done: &Reloaded) {
    if done.certificate_changed {
        tracing::info!("reload: new TLS handshakes use the new certificate");
    }
    if !with_file {
        tracing::info!(
            certificate_changed = done.certificate_changed,
            "reload: no config file (--config) to read; the certificate files were read again, nothing else changed"
        );
        return;
    }
    let ConfigChanges {
        applied,
        restart_only,
    } = &done.changes;
    if applied.is_empty() {
        tracing::info!("reload: no key changed that a reload applies");
    } else {
        tracing::info!(keys = %applied.join(", "), "reload: applied for new requests");
    }
    if !restart_only.is_empty() {
        tracing::warn!(
            keys = %restart_only.join(", "),
            "reload: changed keys NOT applied; they need a restart"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lowering_max_connections_cuts_nobody_and_waits_for_closes() {
        let sem = Arc::new(Semaphore::new(4));
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let held: Vec<_> = (0..3)
            .map(|_| sem.clone().try_acquire_owned().expect("room"))
            .collect();
        // 4 -> 2 with 3 open: the free one goes now, one more when a
        // connection closes; the three stay open meanwhile.
        resize(&sem, 4, 2, &tasks, stop.clone());
        assert_eq!(sem.available_permits(), 0);
        let mut held = held.into_iter();
        drop(held.next());
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while !tasks.is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the waiter took the released permit");
        assert!(
            sem.clone().try_acquire_owned().is_err(),
            "two open, cap two"
        );
        drop(held.next());
        assert_eq!(sem.available_permits(), 1);
        // And up again: room at once.
        resize(&sem, 2, 5, &tasks, stop);
        assert_eq!(sem.available_permits(), 4);
    }
}
