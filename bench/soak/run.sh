#!/usr/bin/env bash
# Soak benchmark (not run by CI): a release switchboard on 127.0.0.1 under
# an hour of steady signaling churn, checked messages and TURN relaying;
# samples RSS, fds and CPU every 10 s. See bench/soak/README.md.
#
#   bench/soak/run.sh                  # 60 minutes
#   bench/soak/run.sh --minutes 3      # the validation run
#   bench/soak/run.sh --minutes 10 --rooms 60 --msg-rate 3
#
# Options: --minutes N (default 60), --out DIR (default
# bench/soak/results/DATE-COMMIT-Nm), --no-turn; any other option goes to
# soak.js (--rooms, --msg-rate, --lifetime, --room-lifetime, --window,
# --sample, --turn-rate, --turn-sockets, --turn-secs, --seed, ...).
# Environment: SB_BIN (default target/release/switchboard; not built here),
# STUN_LOAD (default: bench/turn/stun-load, built when missing), GRACE
# (session.resume_grace_secs given to the server, default 20), PIN (1: server
# on CPU 0, the load on the others).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/bench/soak"
cd "$ROOT"

MINUTES=60
OUT=""
TURN=1
EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --minutes) MINUTES=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-turn) TURN=0; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *)
            [[ $# -ge 2 ]] || { echo "run.sh: $1 wants a value" >&2; exit 2; }
            EXTRA+=("$1" "$2"); shift 2 ;;
    esac
done
[[ "$MINUTES" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "run.sh: --minutes wants a number" >&2; exit 2; }

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SB_BIN=${SB_BIN:-$TARGET/release/switchboard}
GRACE=${GRACE:-20}
PIN=${PIN:-0}
log() { printf '[run.sh] %s\n' "$*" >&2; }

if [[ ! -x "$SB_BIN" ]]; then
    log "no server binary at $SB_BIN: cargo build --release -p switchboard (or set SB_BIN)"
    exit 2
fi
if [[ "$TURN" == 1 && -z "${STUN_LOAD:-}" ]]; then
    STUN_LOAD="$TARGET/release/stun-load"
    if [[ ! -x "$STUN_LOAD" ]]; then
        log "building bench/turn/stun-load"
        CARGO_TARGET_DIR="$TARGET" cargo build --release -q --manifest-path bench/turn/stun-load/Cargo.toml
    fi
fi
if [[ ! -d "$HERE/node_modules" ]]; then
    (cd "$HERE" && npm ci --no-audit --no-fund >&2)
fi

COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
OUT=${OUT:-$HERE/results/$(date -u +%Y-%m-%d-%H%M)-$COMMIT-${MINUTES}m}
mkdir -p "$OUT"

server_cpus=()
load_cpus=()
if [[ "$PIN" == 1 ]]; then
    server_cpus=(taskset -c 0)
    load_cpus=(taskset -c "1-$(($(nproc) - 1))")
fi

SERVER_PID=""
stop_server() {
    [[ -n "$SERVER_PID" ]] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
trap stop_server EXIT

SWITCHBOARD_SESSION__RESUME_GRACE_SECS="$GRACE" "${server_cpus[@]}" "$SB_BIN" \
    --config "$HERE/switchboard.toml" \
    --http-listen 127.0.0.1:0 --turn-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --media-listen 127.0.0.1:0 \
    </dev/null >"$OUT/server.stdout" 2>"$OUT/server.log" &
SERVER_PID=$!

# Readiness: the READY line, at most 30 s.
READY=""
for _ in $(seq 300); do
    READY=$(grep -m1 '^READY ' "$OUT/server.stdout" || true)
    [[ -n "$READY" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { log "the server exited before READY:"; cat "$OUT/server.log" >&2; exit 1; }
    sleep 0.1
done
[[ -n "$READY" ]] || { log "no READY line within 30 s"; exit 1; }
read -r HTTP TURN_UDP < <(node -e '
    const r = JSON.parse(process.argv[1].slice(6));
    console.log(r.http, r.turn_udp || "");' "$READY")
log "server pid $SERVER_PID, http $HTTP, turn/udp ${TURN_UDP:-none}; results in $OUT"

{
    echo "commit: $COMMIT"
    echo "binary: $SB_BIN"
    echo "started: $(date -u +%FT%TZ)"
    echo "minutes: $MINUTES, grace: $GRACE s, pin: $PIN, extra: ${EXTRA[*]:-}"
    echo "machine: $(nproc) CPUs, $(uname -sr), load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "ready: $READY"
} >"$OUT/meta.txt"

ARGS=(--http "$HTTP" --pid "$SERVER_PID" --minutes "$MINUTES" --out "$OUT" --grace "$GRACE")
if [[ "$TURN" == 1 && -n "$TURN_UDP" ]]; then
    ARGS+=(--turn "$TURN_UDP" --stun-load "$STUN_LOAD")
fi
# A hard stop on top of the driver's own clock: the load, a drain of at most
# about 2 grace periods, and margin.
LIMIT=$(node -e "console.log(Math.ceil(${MINUTES} * 60 + 4 * ${GRACE} + 180))")
rc=0
timeout --signal=TERM --kill-after=10 "$LIMIT" "${load_cpus[@]}" node "$HERE/soak.js" "${ARGS[@]}" "${EXTRA[@]}" || rc=$?
stop_server
log "server stopped; results in $OUT"
exit "$rc"
