#!/usr/bin/env bash
# Signaling benchmark: switchboard vs the classic socket.io server vs a bare
# tokio-tungstenite relay (the floor), identical loads, one run.
#
#   bench/signaling/run.sh            # everything (about 5 minutes)
#   QUICK=1 bench/signaling/run.sh    # 3 s per case, idle up to 2,000
#
# Knobs (environment): DURATION (s per traffic case, default 10), SCALES
# ("100 1000": rooms of 2 peers), RATE (msg/s of the paced latency cases,
# default 5000), IDLE_MAX (19000), IDLE_CHECKPOINTS (1000,10000), SERVERS
# ("switchboard socketio bare"), PIN (1: server on CPU 0, load tool on the
# others; default 1 when there are at least 2 CPUs), RESULTS (JSON lines file),
# SKIP_BUILD (1: use the binaries already built), IDLE (0: skip the idle runs).
# Every server is started fresh for every case, on 127.0.0.1 port 0.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

if [[ -n "${QUICK:-}" ]]; then
    : "${DURATION:=3}" "${IDLE_MAX:=2000}" "${IDLE_CHECKPOINTS:=1000}"
fi
DURATION=${DURATION:-10}
SCALES=${SCALES-"100 1000"}
RATE=${RATE:-5000}
IDLE_MAX=${IDLE_MAX:-19000}
IDLE_CHECKPOINTS=${IDLE_CHECKPOINTS:-1000,10000}
SERVERS=${SERVERS:-"switchboard socketio bare"}
CPUS=$(nproc)
PIN=${PIN:-$([[ $CPUS -ge 2 ]] && echo 1 || echo 0)}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RESULTS=${RESULTS:-$(mktemp -t signaling-bench.XXXXXX.jsonl)}
: >"$RESULTS"
WORK=$(mktemp -d -t signaling-bench.XXXXXX)
SERVER_PID=""

log() { printf '%s\n' "$*" >&2; }

stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}

cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT

# ---- build ---------------------------------------------------------------
LOAD="$TARGET/release/switchboard-load"
SWITCHBOARD="$TARGET/release/switchboard"
log "== building (release)"
if [[ -z "${SKIP_BUILD:-}" ]]; then
    cargo build --release -p switchboard-load >&2
fi
if [[ -z "${SKIP_BUILD:-}" && " $SERVERS " == *" switchboard "* ]]; then
    cargo build --release -p switchboard >&2
fi
if [[ -z "${SKIP_BUILD:-}" && " $SERVERS " == *" bare "* ]]; then
    (cd bench/bare-relay && CARGO_TARGET_DIR="$ROOT/bench/bare-relay/target" cargo build --release >&2)
fi
BARE="$ROOT/bench/bare-relay/target/release/bare-relay"
if [[ " $SERVERS " == *" socketio "* && ! -d bench/socketio-server/node_modules ]]; then
    (cd bench/socketio-server && npm ci --no-audit --no-fund >&2)
fi

server_cpus=()
load_cpus=()
if [[ "$PIN" == 1 ]]; then
    server_cpus=(taskset -c 0)
    load_cpus=(taskset -c "1-$((CPUS - 1))")
fi

# ---- servers -------------------------------------------------------------
# start_server NAME: starts it on port 0, waits (bounded) for its READY line,
# sets SERVER_PID and SERVER_ADDR.
start_server() {
    local name=$1 out="$WORK/$1.out"
    : >"$out"
    case $name in
        switchboard)
            SWITCHBOARD_LIMITS__RATE_PER_SEC=1000000 SWITCHBOARD_LIMITS__RATE_BURST=1000000 \
                SWITCHBOARD_LIMITS__MAX_CONNECTIONS_PER_IP=0 \
                "${server_cpus[@]}" "$SWITCHBOARD" --http-listen 127.0.0.1:0 --turn-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --media-listen 127.0.0.1:0 \
                >"$out" 2>"$WORK/$name.err" &
            ;;
        socketio)
            "${server_cpus[@]}" node bench/socketio-server/server.js 0 >"$out" 2>"$WORK/$name.err" &
            ;;
        bare)
            "${server_cpus[@]}" "$BARE" 127.0.0.1:0 >"$out" 2>"$WORK/$name.err" &
            ;;
        *) log "unknown server $name"; return 1 ;;
    esac
    SERVER_PID=$!
    local line="" i
    for ((i = 0; i < 300; i++)); do
        line=$(grep -m1 '^READY ' "$out" || true)
        [[ -n "$line" ]] && break
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            log "$name exited before READY:"; cat "$WORK/$name.err" >&2; return 1
        fi
        sleep 0.1
    done
    [[ -n "$line" ]] || { log "$name: no READY within 30 s"; return 1; }
    case $name in
        switchboard) SERVER_ADDR=$(sed -E 's/.*"http":"([^"]+)".*/\1/' <<<"$line") ;;
        socketio) SERVER_ADDR="127.0.0.1:${line#READY }" ;;
        bare) SERVER_ADDR=${line#READY } ;;
    esac
}

# load CASE SERVER ARGS...: one load run against a fresh SERVER; appends
# {"case":..,"impl":SERVER,<report>} to RESULTS.
load() {
    local case=$1 server=$2
    shift 2
    start_server "$server" || { log "!! $case: $server did not start"; return 0; }
    log "-- $case ($server at $SERVER_ADDR)"
    local json
    if json=$(timeout $((DURATION * 3 + 240)) "${load_cpus[@]}" "$LOAD" "$@" \
        --url "ws://$SERVER_ADDR" --server-pid "$SERVER_PID"); then
        # The 1-minute load average says how busy the machine was besides us.
        printf '{"case":"%s","impl":"%s","loadavg":%s,%s\n' "$case" "$server" \
            "$(cut -d' ' -f1 /proc/loadavg)" "${json#\{}" >>"$RESULTS"
    else
        log "!! $case against $server failed"
    fi
    stop_server
}

has() { [[ " $SERVERS " == *" $1 "* ]]; }

# ---- traffic -------------------------------------------------------------
for rooms in $SCALES; do
    common=(traffic --rooms "$rooms" --peers-per-room 2 --size 300 --duration "$DURATION")
    for paced in "" "$RATE"; do
        extra=()
        label="${rooms}x2"
        if [[ -n "$paced" ]]; then extra=(--rate "$paced"); label="${rooms}x2@${paced}/s"; fi
        if has switchboard; then
            load "$label native" switchboard "${common[@]}" "${extra[@]}" --protocol native
            load "$label native+id" switchboard "${common[@]}" "${extra[@]}" --protocol native --with-id
            load "$label socket.io face" switchboard "${common[@]}" "${extra[@]}" --protocol socketio
        fi
        if has socketio; then
            load "$label socket.io" socketio "${common[@]}" "${extra[@]}" --protocol socketio
            load "$label socket.io+ack" socketio "${common[@]}" "${extra[@]}" --protocol socketio --with-id
        fi
        if has bare; then
            load "$label bare" bare "${common[@]}" "${extra[@]}" --protocol bare
        fi
    done
done

# ---- idle memory ---------------------------------------------------------
[[ "${IDLE:-1}" == 0 ]] && IDLE_MAX=0
idle=(idle --connections "$IDLE_MAX" --checkpoints "$IDLE_CHECKPOINTS" --peers-per-room 2
    --hold 5 --settle 1 --connect-concurrency 256 --timeout 300)
if [[ "$IDLE_MAX" -gt 0 ]]; then
    has switchboard && load "idle" switchboard "${idle[@]}" --protocol native
    has switchboard && load "idle socket.io face" switchboard "${idle[@]}" --protocol socketio
    has socketio && load "idle" socketio "${idle[@]}" --protocol socketio
    has bare && load "idle" bare "${idle[@]}" --protocol bare
fi

# ---- table ---------------------------------------------------------------
log "== results in $RESULTS"
python3 "$ROOT/bench/signaling/table.py" "$RESULTS"
