#!/usr/bin/env bash
# switchboard's Socket.IO face against the Node socket.io v4 server
# (bench/socketio-server), the same loads from the same load tool in the
# same run. Method and figures: docs/benchmarks-socketio.md.
#
#   interop/socketio/bench.sh               # builds release binaries first
#   SKIP_BUILD=1 interop/socketio/bench.sh  # use what is built
#
# Knobs (environment): DURATION (s per traffic run, default 10), ROUNDS
# (repetitions, alternating the servers, default 3), RATE (msg/s of the paced
# runs, default 4000), IDLE_MAX (5000), IDLE_CHECKPOINTS (1000,2000,3000,4000),
# PIN (1: server on CPU 0, load tool on the rest; default 1 with >= 2 CPUs),
# RESULTS (JSON lines file). Every run starts a fresh server on 127.0.0.1:0.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-4000}
IDLE_MAX=${IDLE_MAX:-5000}
IDLE_CHECKPOINTS=${IDLE_CHECKPOINTS:-1000,2000,3000,4000}
CPUS=$(nproc)
PIN=${PIN:-$([[ $CPUS -ge 2 ]] && echo 1 || echo 0)}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RESULTS=${RESULTS:-$(mktemp -t socketio-bench.XXXXXX.jsonl)}
: >"$RESULTS"
WORK=$(mktemp -d -t socketio-bench.XXXXXX)
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

LOAD="$TARGET/release/switchboard-load"
SWITCHBOARD="$TARGET/release/switchboard"
if [[ -z "${SKIP_BUILD:-}" ]]; then
    log "== building (release)"
    cargo build --release -p switchboard -p switchboard-load >&2
fi
if [[ ! -d bench/socketio-server/node_modules ]]; then
    (cd bench/socketio-server && npm ci --no-audit --no-fund >&2)
fi

server_cpus=()
load_cpus=()
if [[ "$PIN" == 1 ]]; then
    server_cpus=(taskset -c 0)
    load_cpus=(taskset -c "1-$((CPUS - 1))")
fi

# start_server NAME: on port 0; waits (bounded) for READY; sets SERVER_PID, SERVER_ADDR.
start_server() {
    local name=$1 out="$WORK/$1.out"
    : >"$out"
    case $name in
        switchboard)
            # The rate limit off, as the Node server has none; logs at warn
            # (the Node server logs nothing per connection either).
            SWITCHBOARD_LIMITS__RATE_PER_SEC=0 SWITCHBOARD_LOG__LEVEL=warn \
                SWITCHBOARD_LIMITS__MAX_CONNECTIONS_PER_IP=0 \
                "${server_cpus[@]}" "$SWITCHBOARD" --http-listen 127.0.0.1:0 --turn-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --media-listen 127.0.0.1:0 \
                >"$out" 2>"$WORK/$name.err" &
            ;;
        node)
            "${server_cpus[@]}" node bench/socketio-server/server.js 0 >"$out" 2>"$WORK/$name.err" &
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
        node) SERVER_ADDR="127.0.0.1:${line#READY }" ;;
    esac
}

# run CASE SERVER ARGS...: one load run on a fresh SERVER, one JSON line to RESULTS.
run() {
    local case=$1 server=$2
    shift 2
    start_server "$server" || { log "!! $case: $server did not start"; return 0; }
    log "-- $case ($server at $SERVER_ADDR)"
    local json
    if json=$(timeout $((DURATION * 3 + 300)) "${load_cpus[@]}" "$LOAD" "$@" --protocol socketio \
        --url "ws://$SERVER_ADDR" --server-pid "$SERVER_PID"); then
        printf '{"case":"%s","impl":"%s","loadavg":%s,%s\n' "$case" "$server" \
            "$(cut -d' ' -f1 /proc/loadavg)" "${json#\{}" >>"$RESULTS"
    else
        log "!! $case against $server failed"
    fi
    stop_server
}

traffic=(traffic --rooms 100 --peers-per-room 2 --size 300 --duration "$DURATION")
for ((round = 1; round <= ROUNDS; round++)); do
    # Alternate which server goes first, so neither always meets a warmer machine.
    if ((round % 2)); then order=(switchboard node); else order=(node switchboard); fi
    for server in "${order[@]}"; do
        run "100x2 saturated" "$server" "${traffic[@]}"
        run "100x2 saturated+ack" "$server" "${traffic[@]}" --with-id
        run "100x2 @${RATE}/s" "$server" "${traffic[@]}" --rate "$RATE"
    done
done

idle=(idle --connections "$IDLE_MAX" --checkpoints "$IDLE_CHECKPOINTS" --peers-per-room 2
    --hold 5 --settle 2 --connect-concurrency 128 --timeout 300)
run "idle" switchboard "${idle[@]}"
run "idle" node "${idle[@]}"

log "== results in $RESULTS"
python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
traffic = [r for r in rows if r.get("mode") == "traffic"]
idle = [r for r in rows if r.get("mode") == "idle"]
fmt = lambda v, d=1: "-" if v is None else f"{v:,.{d}f}"
cases = sorted({r["case"] for r in traffic})
print("| load | server | runs | msg/s | server CPU µs/msg (median) | server cores | p50 ms | p99 ms | lost |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
med = {}
for case in cases:
    for impl in ("switchboard", "node"):
        rs = [r for r in traffic if r["case"] == case and r["impl"] == impl]
        if not rs:
            continue
        m = lambda f: statistics.median(f(r) for r in rs)
        cpu = m(lambda r: (r.get("server") or {}).get("cpu_us_per_msg") or 0)
        med[(case, impl)] = cpu
        print(f"| {case} | {impl} | {len(rs)} | {fmt(m(lambda r: r['msgs_per_s']), 0)} | {fmt(cpu, 2)} "
              f"| {fmt(m(lambda r: (r.get('server') or {}).get('cores') or 0), 2)} "
              f"| {fmt(m(lambda r: r['latency']['p50_us'] / 1000), 2)} | {fmt(m(lambda r: r['latency']['p99_us'] / 1000), 2)} "
              f"| {sum(r['lost'] for r in rs)} |")
print()
print("| load | switchboard CPU / Node CPU per delivered message (target ≤ 0.7) |")
print("| --- | ---: |")
for case in cases:
    a, b = med.get((case, "switchboard")), med.get((case, "node"))
    print(f"| {case} | {fmt(a / b if a and b else None, 2)} |")
if idle:
    print()
    print("| server | connections | RSS KiB | KiB/conn since previous step |")
    print("| --- | ---: | ---: | ---: |")
    extra = {}
    for r in idle:
        steps = r["steps"]
        for s in steps:
            print(f"| {r['impl']} | {s['connections']:,} | {s['rss_kib']:,} | {fmt(s['marginal_kib_per_conn'], 2)} |")
        first = next((s for s in steps if s["connections"] >= 1000), None)
        last = steps[-1] if steps else None
        if first and last and last["connections"] > first["connections"]:
            extra[r["impl"]] = (last["rss_kib"] - first["rss_kib"]) / (last["connections"] - first["connections"])
        if r.get("failed"):
            print(f"| {r['impl']} | failed {r['failed']}: {r.get('first_error')} | | |")
    print()
    for impl, v in extra.items():
        print(f"- {impl}: {v:.2f} KiB per extra connection (from 1,000 to the last step)")
    if "switchboard" in extra and extra.get("node"):
        print(f"- switchboard / Node: {extra['switchboard'] / extra['node']:.2f} (target ≤ 0.5)")
PY
