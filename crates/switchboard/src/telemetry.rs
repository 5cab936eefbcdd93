//! Logging (tracing) and metrics (Prometheus) setup.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

/// Keeps the log file writer alive; drop it last.
pub struct LogGuard(#[allow(dead_code)] Option<WorkerGuard>);

/// Installs the global subscriber: stderr, plus the optional log file.
pub fn init_logging(cfg: &LogConfig) -> anyhow::Result<LogGuard> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .map_err(|e| anyhow::anyhow!("log.level {:?}: {e}", cfg.level))?;
    let json = cfg.format == LogFormat::Json;
    let (file_layer, guard) = match &cfg.file {
        Some(path) => {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
            let dir = dir.unwrap_or_else(|| std::path::Path::new("."));
            let name = path
                .file_name()
                .ok_or_else(|| anyhow::anyhow!("log.file {} has no file name", path.display()))?;
            std::fs::create_dir_all(dir)?;
            let (writer, guard) =
                tracing_appender::non_blocking(tracing_appender::rolling::never(dir, name));
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(writer);
            let layer = if json {
                layer.json().boxed()
            } else {
                layer.boxed()
            };
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
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
    Ok(LogGuard(guard))
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
