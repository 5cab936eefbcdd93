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
    let result = runtime.block_on(switchboard::app::run(cfg, |bound| {
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
