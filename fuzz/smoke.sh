#!/usr/bin/env bash
# Builds the fuzz targets on STABLE Rust with libFuzzer's coverage instrumentation (the same
# LLVM sanitizer-coverage passes cargo-fuzz enables, minus AddressSanitizer, which needs
# nightly) and fuzzes each target for a bounded time. Exits non-zero on any crash.
#
#   bash fuzz/smoke.sh [seconds-per-target]      (default 20)
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-20}
triple=$(rustc -vV | sed -n 's/^host: //p')
target_dir=${CARGO_TARGET_DIR:-$PWD/target}/fuzz-stable

# --target keeps these flags away from build scripts, as cargo-fuzz does.
RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks" \
    cargo build --release --target "$triple" --target-dir "$target_dir"

for t in stun_message channel_data stream_framing signal_client_frame; do
    mkdir -p "corpus/$t" artifacts
    seeds=../tests/vectors
    [ "$t" = signal_client_frame ] && seeds=seeds/signal_client_frame
    echo "fuzzing $t for ${secs}s"
    "$target_dir/$triple/release/$t" "corpus/$t" "$seeds" \
        -max_total_time="$secs" -rss_limit_mb=1024 -timeout=5 \
        -artifact_prefix=artifacts/ -print_final_stats=1 2>&1 \
        | grep -E 'DONE|stat::number_of_executed_units|ERROR|panicked|SUMMARY' || true
    # libFuzzer exits non-zero and writes artifacts/crash-* on a finding.
    if compgen -G "artifacts/*-*" >/dev/null; then
        echo "fuzz target $t found a crash: see fuzz/artifacts/" >&2
        exit 1
    fi
done
echo "fuzz smoke ok: 4 targets, no crash"
