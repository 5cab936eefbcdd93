#!/usr/bin/env bash
# One sb-cluster run of the independent harness (../shared/bench copied to /tmp/sigbench,
# with npm ci in sig_load) with perf (PERF=1) on redis and node 1,
# plus INFO commandstats. Usage: SB_BIN=... [PERF=1] bench/cluster/profile.sh OUTDIR
# Loopback only; every process is ours and stopped by PID; the load is bounded by --max-seconds.
set -u
HERE=${SIGBENCH:-/tmp/sigbench}
OUT=$1; mkdir -p $OUT
ROOMS=${ROOMS:-100}; MSGS=${MSGS:-2000}; WINDOW=${WINDOW:-16}; SIZE=${SIZE:-300}
. "$(dirname "$0")/lib.sh"
trap stop_all EXIT
RP=$(free_port); redis-server --port $RP --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 & RPID=$!; PIDS+=($RPID)
for _ in $(seq 50); do redis-cli -p $RP ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
start_sb() {
  local p=$(free_port) cfg="$OUT/sb-$RANDOM.toml"
  printf '[http]\nlisten = "127.0.0.1:%s"\n[rooms]\nmax_peers = 3\n[limits]\nrate_per_sec = 0\n[turn]\nenabled = false\n[log]\nlevel = "warn"\n' "$p" >"$cfg"
  printf '[cluster]\nredis_url = "%s"\n' "$1" >>"$cfg"
  "$SB_BIN" --config "$cfg" >"$OUT/sb-$p.log" 2>&1 & PIDS+=($!); wait_http "http://127.0.0.1:$p/healthz"; U="ws://127.0.0.1:$p/ws"
}
start_sb redis://127.0.0.1:$RP/0; u1=$U; N1=${PIDS[-1]}; start_sb redis://127.0.0.1:$RP/0; u2=$U; N2=${PIDS[-1]}
redis-cli -p $RP config resetstat >/dev/null
if [ -n "${PERF:-}" ]; then
  perf record -F 999 -g -p $RPID -o $OUT/redis.perf >/dev/null 2>&1 & PP1=$!
  perf record -F 999 -g -p $N1 -o $OUT/n1.perf >/dev/null 2>&1 & PP2=$!
fi
c0r=$(cpu $RPID); c0a=$(cpu $N1); c0b=$(cpu $N2)
res=$(node "$HERE/sig_load/load.js" --adapter wsjson --url "$u1" --url2 "$u2" --scenario relay \
      --rooms $ROOMS --msgs $MSGS --size $SIZE --window $WINDOW --max-seconds 120 2>>"$OUT/load.log")
c1r=$(cpu $RPID); c1a=$(cpu $N1); c1b=$(cpu $N2)
[ -n "${PERF:-}" ] && { kill -INT $PP1 $PP2; wait $PP1 $PP2 2>/dev/null; }
redis-cli -p $RP info commandstats > $OUT/cmdstats.txt
redis-cli -p $RP info stats > $OUT/stats.txt
echo "$res" > $OUT/res.json
python3 - "$res" $c0r $c1r $c0a $c1a $c0b $c1b <<'PY'
import json,sys
r=json.loads(sys.argv[1]); d=r.get("delivered") or 1
v=[float(x) for x in sys.argv[2:]]
for name,(a,b) in zip(["redis","node1","node2"],[(v[0],v[1]),(v[2],v[3]),(v[4],v[5])]):
    print(f"{name}: {(b-a)/100*1e6/d:.2f} us/msg")
print("total", round(sum((v[i+1]-v[i]) for i in (0,2,4))/100*1e6/d,2), "delivered", d, "p50", r.get("lat_p50_ms"), "p99", r.get("lat_p99_ms"), "rate", r.get("delivered_per_s"))
PY
