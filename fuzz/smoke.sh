#!/usr/bin/env bash
# Builds the fuzz targets on STABLE Rust with libFuzzer's coverage instrumentation (the same
# LLVM sanitizer-coverage passes cargo-fuzz enables, minus AddressSanitizer, which needs
# nightly) and fuzzes each target for a bounded time. Every target runs even after one
# fails; the script then exits non-zero if any found a crash (or a timeout or an OOM).
#
#   bash fuzz/smoke.sh [seconds-per-target] [target...]    (default: 20 s, every target)
#   FUZZ_TARGETS="signal_core turn_server" bash fuzz/smoke.sh 60
#
# Each target starts from its seeds and its regressions (fuzz/regressions/<target>/, inputs
# that once crashed it), so a known crash shows up at once instead of by luck.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-20}
shift || true
all="stun_message channel_data stream_framing signal_client_frame signal_core turn_server engineio_packet sfu_demux"
if [ $# -gt 0 ]; then
    targets="$*"
else
    targets=${FUZZ_TARGETS:-$all}
fi
triple=$(rustc -vV | sed -n 's/^host: //p')
target_dir=${CARGO_TARGET_DIR:-$PWD/target}/fuzz-stable

bins=()
for t in $targets; do bins+=(--bin "$t"); done
# --target keeps these flags away from build scripts, as cargo-fuzz does.
RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks" \
    cargo build --release --target "$triple" --target-dir "$target_dir" "${bins[@]}"

failed=()
n=0
for t in $targets; do
    n=$((n + 1))
    mkdir -p "corpus/$t" "artifacts/$t"
    case $t in
        stun_message | channel_data | stream_framing) seeds=(../tests/vectors) ;;
        *) seeds=("seeds/$t") ;;
    esac
    [ -d "regressions/$t" ] && seeds+=("regressions/$t")
    echo "fuzz smoke: $t for ${secs}s"
    rc=0
    "$target_dir/$triple/release/$t" "corpus/$t" "${seeds[@]}" \
        -max_total_time="$secs" -rss_limit_mb=1024 -timeout=5 -max_len=8192 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"artifacts/$t.log" 2>&1 || rc=$?
    # The summary, and a panic's message (the line after "panicked at").
    awk '/panicked at/ {n = 3} n > 0 {print; n--; next}
         /DONE|stat::number_of_executed_units|ERROR|SUMMARY|Test unit written/ {print}' \
        "artifacts/$t.log" | sed 's/^/    /'
    # libFuzzer exits non-zero on a crash, a timeout or an OOM, and writes the input to
    # artifacts/<target>/ (the full output stays in artifacts/<target>.log).
    if [ "$rc" != 0 ]; then
        echo "fuzz smoke: $t FAILED (exit $rc), see fuzz/artifacts/$t.log" >&2
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz smoke FAILED: ${failed[*]} (of $n targets)" >&2
    exit 1
fi
echo "fuzz smoke ok: $n targets, ${secs}s each, no crash"
