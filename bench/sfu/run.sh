#!/usr/bin/env bash
# The SFU benchmark (issue #14): server CPU per forwarded packet through
# switchboard's SFU against bench/fanout-floor (a bare recvmmsg/sendmmsg
# 1-in/N-out forwarder), side by side in one run, same clients' packet
# rates. Each scenario runs switchboard, then the floor, REPS times.
#
#   bench/sfu/run.sh                 # release build, both scenarios
#   SCENARIOS="1x50" REPS=1 bench/sfu/run.sh
#   BITRATES="500000 1000000 2000000" bench/sfu/run.sh   # each publisher's rate
#
# Results: one JSON line per run in $RESULTS (default
# bench/sfu/results/DATE.jsonl), a table on stderr.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
REPS=${REPS:-3}
SCENARIOS=${SCENARIOS:-"1x50 10x10"}
DURATION=${DURATION:-10}
# Each publisher's video rate, bits/s. The ratio to the floor depends on it:
# part of the server's work is per receiver per second (its feedback, its
# estimator), which the floor does not have (docs/benchmarks.md).
BITRATES=${BITRATES:-1000000}
# Seconds of media before measuring: each receiver's bandwidth estimate
# (and so its pacer) must have settled, or the window also drains what the
# pacer queued while it ramped up (received more than sent: "negative loss").
WARMUP=${WARMUP:-5}
RESULTS=${RESULTS:-$ROOT/bench/sfu/results/$(date +%F)-sfu.jsonl}
mkdir -p "$(dirname "$RESULTS")"
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release -p switchboard -p switchboard-load >&2
  (cd bench/fanout-floor && CARGO_TARGET_DIR=$TARGET/fanout-floor cargo build --release >&2)
fi
SB=$TARGET/release/switchboard
LOAD=$TARGET/release/switchboard-load
FLOOR=$TARGET/fanout-floor/release/fanout-floor
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# Waits (bounded) for a READY line in $1 and prints it.
ready_line() {
  for _ in $(seq 100); do
    if grep -q '^READY' "$1" 2>/dev/null; then grep -m1 '^READY' "$1"; return 0; fi
    sleep 0.1
  done
  echo "no READY in $1" >&2; return 1
}

# args: label, then the load tool's scenario flags
run_pair() {
  local label=$1; shift
  local out
  out=$(mktemp)
  SWITCHBOARD_LOG__LEVEL=warn SWITCHBOARD_TURN__ENABLED=false SWITCHBOARD_ADMIN__LISTEN="" SWITCHBOARD_LIMITS__MAX_CONNECTIONS_PER_IP=10000 \
    "$SB" --http-listen 127.0.0.1:0 --media-listen 127.0.0.1:0 >"$out" 2>/dev/null &
  local sb=$!; PIDS+=("$sb")
  local http
  http=$(ready_line "$out" | sed 's/^READY //' | python3 -c 'import json,sys; print(json.load(sys.stdin)["http"])')
  "$LOAD" media --url "ws://$http" --server-pid "$sb" --duration "$DURATION" --warmup "$WARMUP" "$@" \
    | python3 -c "import json,sys; d=json.load(sys.stdin); d['scenario']='$label'; print(json.dumps(d))" >>"$RESULTS"
  kill "$sb"; wait "$sb" 2>/dev/null || true
  "$FLOOR" 127.0.0.1:0 >"$out" &
  local fl=$!; PIDS+=("$fl")
  local addr
  addr=$(ready_line "$out" | awk '{print $2}')
  "$LOAD" media --floor "$addr" --server-pid "$fl" --duration "$DURATION" --warmup "$WARMUP" "$@" \
    | python3 -c "import json,sys; d=json.load(sys.stdin); d['scenario']='$label'; print(json.dumps(d))" >>"$RESULTS"
  kill "$fl"; wait "$fl" 2>/dev/null || true
  rm -f "$out"
}

for rep in $(seq "$REPS"); do
  for br in $BITRATES; do
    # The default rate keeps the plain scenario name (older results compare).
    suffix=""; [ "$br" = 1000000 ] || suffix="@$((br / 1000))k"
    for s in $SCENARIOS; do
      case $s in
        1x50) run_pair "1x50$suffix" --rooms 1 --publishers 1 --subscribers 50 --bitrate "$br" ;;
        10x10) run_pair "10x10$suffix" --rooms 1 --publishers 10 --subscribers 0 --bitrate "$br" ;;
        *x*) run_pair "$s$suffix" --rooms 1 --publishers "${s%x*}" --subscribers "${s#*x}" --bitrate "$br" ;;
      esac
      echo "rep $rep $s$suffix done" >&2
    done
  done
done
python3 "$ROOT/bench/sfu/table.py" "$RESULTS" >&2
