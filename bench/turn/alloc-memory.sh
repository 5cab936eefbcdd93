#!/usr/bin/env bash
# TURN allocation memory: switchboard vs coturn 4.6 under the same client
# workload. `turnutils_uclient -y -m N` runs N clients, each with its own
# allocation; we read the server's RSS before and after and its peak
# (VmHWM), so the comparison is the peak growth for the same workload.
# (uclient leaves part of its allocations alive after it exits; switchboard's
# /metrics line printed to stderr says how many.) Loopback only; each server
# runs alone on 127.0.0.1:3478.
#
#   bench/turn/alloc-memory.sh [N]        (default 1000)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-1000}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
SB="$TARGET/release/switchboard"
[ -x "$SB" ] || cargo build --release -p switchboard >&2

kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }

wait_stun() { # until something answers a STUN binding on 127.0.0.1:3478, 10 s at most
  for _ in $(seq 1 50); do
    if timeout 1 turnutils_stunclient -p 3478 127.0.0.1 >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "no STUN answer on 127.0.0.1:3478" >&2; return 1
}

measure() { # name pid
  local before after hwm
  before=$(kib "$2" VmRSS)
  # uclient's totals go to stderr, so a run that allocated nothing shows.
  timeout 300 turnutils_uclient -y -c -m "$N" -n 1 -l 100 -u alice -w alice-pw -p 3478 127.0.0.1 2>&1 \
    | grep -E 'tot_send_msgs|Total' | tail -2 >&2 || true
  sleep 1
  after=$(kib "$2" VmRSS); hwm=$(kib "$2" VmHWM)
  printf '| %s | %d | %d | %d | %d | %.1f |\n' "$1" "$N" "$before" "$after" "$hwm" \
    "$(echo "($after - $before) * 1000 / $N" | bc -l)"
}

echo "| server | allocations | RSS before KiB | RSS after KiB | peak RSS KiB | growth KiB per 1,000 clients |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
"$SB" --config bench/turn/switchboard.toml --http-listen 127.0.0.1:0 --media-listen 127.0.0.1:0 >"${TMPDIR:-/tmp}/alloc-memory-sb.out" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
wait_stun
measure switchboard "$pid"
http=$(sed -n 's/^READY .*"http":"\([^"]*\)".*/\1/p' "${TMPDIR:-/tmp}/alloc-memory-sb.out")
curl -s "http://$http/metrics" | grep -E '^switchboard_turn_allocations' >&2 || true
kill "$pid"; wait "$pid" 2>/dev/null || true

turnserver -c bench/turn/coturn.conf --listening-port 3478 >/dev/null 2>&1 &
pid=$!
wait_stun
measure "coturn $(turnserver --version 2>/dev/null | head -1)" "$pid"
kill "$pid"; wait "$pid" 2>/dev/null || true
