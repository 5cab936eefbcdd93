//! Logging (tracing) and metrics (Prometheus) setup.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{LogConfig, LogFormat};

/// Keeps the log writers' threads alive; dropping it flushes what they
/// hold, so drop it last.
pub struct LogGuard(#[allow(dead_code)] Vec<WorkerGuard>);

/// Lines a writer may hold while its output is slow; beyond, lines are
/// dropped and counted (a few MB at most, where 128k lines could be tens).
const BUFFERED_LINES: usize = 16 * 1024;

/// The dropped-line counters of the writers.
static DROPPED: OnceLock<Vec<ErrorCounter>> = OnceLock::new();

/// Log lines dropped so far because a writer could not keep up.
pub fn dropped_log_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |c| c.iter().map(|c| c.dropped_lines() as u64).sum())
}

/// A writer on its own thread: a log line never blocks the thread that
/// logs (some log under the hub's lock), whatever stderr or the disk does.
fn non_blocking<W: std::io::Write + Send + 'static>(w: W) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("switchboard-log")
        .finish(w)
}

/// The filter a reload replaces (`log.level`), once logging is installed.
/// `None` inside when `RUST_LOG` chose the filter: it wins over the config,
/// reloads included.
static FILTER: OnceLock<Option<reload::Handle<EnvFilter, Registry>>> = OnceLock::new();

/// Why `log.level` could not be changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogLevelError {
    /// Not a tracing filter.
    #[error("log.level {0:?} is not a tracing filter: {1}")]
    Invalid(String, String),
    /// The subscriber is gone (never happens while the process runs).
    #[error("the log filter cannot be replaced: {0}")]
    Gone(String),
}

/// What [`set_log_level`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevelChange {
    /// The new filter is in force.
    Applied,
    /// `RUST_LOG` set the filter at start and still does.
    EnvironmentWins,
    /// Logging was not installed by [`init_logging`] (tests, embedders).
    NotInstalled,
}

/// Checks that `level` is a filter [`set_log_level`] would take.
pub fn check_log_level(level: &str) -> Result<(), LogLevelError> {
    EnvFilter::try_new(level)
        .map(drop)
        .map_err(|e| LogLevelError::Invalid(level.to_owned(), e.to_string()))
}

/// Replaces the log filter for every line from now on (a reload).
pub fn set_log_level(level: &str) -> Result<LogLevelChange, LogLevelError> {
    let filter = EnvFilter::try_new(level)
        .map_err(|e| LogLevelError::Invalid(level.to_owned(), e.to_string()))?;
    match FILTER.get() {
        None => Ok(LogLevelChange::NotInstalled),
        Some(None) => Ok(LogLevelChange::EnvironmentWins),
        Some(Some(handle)) => handle
            .reload(filter)
            .map(|()| LogLevelChange::Applied)
            .map_err(|e| LogLevelError::Gone(e.to_string())),
    }
}

/// Installs the global subscriber: stderr, plus the optional log file.
pub fn init_logging(cfg: &LogConfig) -> anyhow::Result<LogGuard> {
    let from_env = EnvFilter::try_from_default_env().ok();
    let env_wins = from_env.is_some();
    let filter = match from_env {
        Some(f) => f,
        None => EnvFilter::try_new(&cfg.level)
            .map_err(|e| anyhow::anyhow!("log.level {:?}: {e}", cfg.level))?,
    };
    // Behind a reload layer, so that SIGHUP can change `log.level`.
    let (filter, handle) = reload::Layer::new(filter);
    let json = cfg.format == LogFormat::Json;
    let mut guards = Vec::new();
    let mut counters = Vec::new();
    let file_layer = match &cfg.file {
        Some(path) => {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
            let dir = dir.unwrap_or_else(|| std::path::Path::new("."));
            let name = path
                .file_name()
                .ok_or_else(|| anyhow::anyhow!("log.file {} has no file name", path.display()))?;
            std::fs::create_dir_all(dir)?;
            let (writer, guard) = non_blocking(tracing_appender::rolling::never(dir, name));
            counters.push(writer.error_counter());
            guards.push(guard);
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(writer);
            let layer = if json {
                layer.json().boxed()
            } else {
                layer.boxed()
            };
            Some(layer)
        }
        None => None,
    };
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = non_blocking(std::io::stderr());
    counters.push(writer.error_counter());
    guards.push(guard);
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer);
    let stderr = if json {
        stderr.json().boxed()
    } else {
        stderr.boxed()
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file_layer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))?;
    let _ = DROPPED.set(counters);
    let _ = FILTER.set((!env_wins).then_some(handle));
    Ok(LogGuard(guards))
}

use tracing_subscriber::Layer as _;

/// The Prometheus recorder; one per process. Later calls reuse the first.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests in one process);
            // then ours just renders nothing of theirs, which is fine.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
