#!/usr/bin/env bash
# Cross-node latency at the same offered load: rooms of 2 with one peer on
# each of two servers that share rooms through one Redis, every sender
# paced (switchboard-load --rate, open loop) so that both kinds get the same
# messages per second. Reports p50, p99 and max of send-to-delivery and the CPU
# of both servers plus redis-server per delivered message. Kinds, taking
# turns, fresh processes each run:
#   sio-redis   two seed socket.io servers with @socket.io/redis-adapter
#   sb-cluster  two switchboard nodes with cluster.redis_url
#
#   SB=target/release/switchboard LOAD=target/release/switchboard-load \
#   SIGBENCH=/tmp/sigbench RATES="5000 10000 20000" REPS=2 bench/cluster/paced.sh
# RATES may name `max` (closed loop: as fast as a window of 16 allows);
# WITH_ID=1 gives every message an id (native) or an ack callback
# (Socket.IO), so the server acknowledges each with its count.
# SIGBENCH is a copy of ../shared/bench with `npm ci` done in
# seed_sio_server. Loopback only; every process is ours and stopped by pid;
# every run is bounded by the load tool's --timeout.
set -u
SB=${SB:-target/release/switchboard}; LOAD=${LOAD:-target/release/switchboard-load}
SIGBENCH=${SIGBENCH:-/tmp/sigbench}
RATES=${RATES:-"5000 10000 20000"}; REPS=${REPS:-2}; ROOMS=${ROOMS:-100}; DURATION=${DURATION:-10}
KINDS=${KINDS:-"sio-redis sb-cluster"}
OUT=${OUT:-$(mktemp -d)}; mkdir -p "$OUT"; RESULTS=${RESULTS:-$OUT/paced.jsonl}
. "$(dirname "$0")/lib.sh"
trap stop_all EXIT
start_redis() { RP=$(free_port); redis-server --port $RP --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 & PIDS+=($!); for _ in $(seq 50); do redis-cli -p $RP ping 2>/dev/null | grep -q PONG && return 0; sleep 0.1; done; return 1; }
start_sio() { local p=$(free_port); PORT=$p USERCOUNT=3 REDIS_URL=$1 node "$SIGBENCH/seed_sio_server/server.js" >"$OUT/sio-$p.log" 2>&1 & PIDS+=($!); wait_http "http://127.0.0.1:$p/socket.io/?EIO=4&transport=polling"; sleep 1; U="ws://127.0.0.1:$p"; }
start_sb() {
  local p=$(free_port) cfg="$OUT/sb-$RANDOM.toml"
  printf '[http]\nlisten = "127.0.0.1:%s"\n[rooms]\nmax_peers = 3\n[limits]\nrate_per_sec = 0\n[turn]\nenabled = false\n[log]\nlevel = "warn"\n[cluster]\nredis_url = "%s"\n' "$p" "$1" >"$cfg"
  "$SB" --config "$cfg" >"$OUT/sb-$p.log" 2>&1 & PIDS+=($!); wait_http "http://127.0.0.1:$p/readyz"; U="ws://127.0.0.1:$p"
}
for rep in $(seq 1 "$REPS"); do
  for rate in $RATES; do
    for kind in $KINDS; do
      start_redis
      case $kind in
        sio-redis)  start_sio redis://127.0.0.1:$RP; u1=$U; start_sio redis://127.0.0.1:$RP; u2=$U; proto=socketio ;;
        sb-cluster) start_sb redis://127.0.0.1:$RP/0; u1=$U; start_sb redis://127.0.0.1:$RP/0; u2=$U; proto=native ;;
      esac
      c0=$(cpu "${PIDS[@]}")
      if [ "$rate" = max ]; then pace=(--window 16); else pace=(--rate "$rate" --window 64); fi
      ids=(); [ "${WITH_ID:-0}" = 1 ] && ids=(--with-id)
      res=$("$LOAD" traffic --protocol $proto --url "$u1" --url2 "$u2" --rooms "$ROOMS" \
            --senders-per-room 2 "${pace[@]}" "${ids[@]}" --duration "$DURATION" --timeout 120 2>>"$OUT/load.log")
      c1=$(cpu "${PIDS[@]}")
      stop_all
      python3 - "$kind" "$rate" "$rep" "$c0" "$c1" "$res" >>"$RESULTS" <<'PY'
import json, sys
kind, rate, rep, c0, c1, res = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
rate = 0.0 if rate == "max" else float(rate)
r = json.loads(res or "{}")
d = r.get("delivered") or 0
lat = r.get("latency") or {}
print(json.dumps({"kind": kind, "rate": rate, "rep": rep, "delivered": d, "lost": r.get("lost"),
  "msgs_per_s": r.get("msgs_per_s"), "cpu_us_per_msg": round((c1 - c0) / 100.0 * 1e6 / d, 2) if d else None,
  "p50_ms": lat.get("p50_us", 0) / 1000, "p99_ms": lat.get("p99_us", 0) / 1000, "max_ms": lat.get("max_us", 0) / 1000}))
PY
      tail -1 "$RESULTS"
    done
  done
done
python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| rate | kind | delivered/s | CPU us/msg | p50 ms | p99 ms | max ms |")
print("|---|---|---|---|---|---|---|")
for rate in sorted({r["rate"] for r in rows}):
    for kind in dict.fromkeys(r["kind"] for r in rows):
        rs = [r for r in rows if r["rate"] == rate and r["kind"] == kind]
        if not rs: continue
        m = lambda f: statistics.median(r[f] or 0 for r in rs)
        label = "max" if rate == 0 else f"{rate:.0f}"
        print(f"| {label} | {kind} | {m('msgs_per_s'):.0f} | {m('cpu_us_per_msg'):.1f} | {m('p50_ms'):.2f} | {m('p99_ms'):.2f} | {m('max_ms'):.2f} |")
PY
