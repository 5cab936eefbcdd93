// jemalloc rather than glibc's malloc: 5-8 % less server CPU per signaling
// message in side-by-side runs (docs/benchmarks-signaling.md), mostly from
// cheaper frees and arena growth, at the same idle memory per connection.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::Parser;
use switchboard::config::{Cli, Config};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let cfg = match Config::load(&cli) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    if cli.print_config {
        return match cfg.to_toml() {
            Ok(text) => {
                print!("{text}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("switchboard: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let _log = match switchboard::telemetry::init_logging(&cfg.log) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    raise_fd_limit(&cfg);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(switchboard::process::run_reloading(cfg, cli, |bound| {
        // One machine-readable line for tests and scripts.
        if let Ok(json) = serde_json::to_string(bound) {
            println!("READY {json}");
        }
    }));
    // Connection tasks still winding down must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("switchboard: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Every connection and relay socket is a descriptor, and the usual soft
/// limit (1024) would refuse clients long before any configured cap: take
/// all the hard limit allows.
fn raise_fd_limit(cfg: &Config) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => {
            let want = cfg.limits.max_http_connections as u64 + cfg.turn.max_connections as u64;
            if n < want {
                tracing::warn!(
                    "the open file limit is {n}, below limits.max_http_connections + turn.max_connections ({want}): \
                     connections beyond it fail at accept; raise the hard limit (ulimit -Hn, LimitNOFILE=)"
                );
            } else {
                tracing::debug!("open file limit: {n}");
            }
        }
        Err(e) => tracing::warn!("could not raise the open file limit: {e}"),
    }
}
