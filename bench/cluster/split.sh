#!/bin/bash
# Where a cross-node message's CPU goes: one run of two switchboard nodes and
# a redis-server (rooms of 2, one peer on each node) with the independent
# load client, printing the CPU ticks (10 ms) of Redis and of each node, the
# latency, and Redis's per-command statistics.
#   SB=target/release/switchboard SIGBENCH=/tmp/sigbench MSGS=500 bench/cluster/split.sh
# SIGBENCH is a copy of ../shared/bench with `npm ci` done in sig_load.
set -u
SB=${SB:-target/release/switchboard}; SIGBENCH=${SIGBENCH:-/tmp/sigbench}
OUT=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu1() { awk '{print $14 + $15}' /proc/$1/stat; }
RP=$(free_port); redis-server --port $RP --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 & R=$!
trap 'kill $N1 $N2 $R 2>/dev/null; rm -rf $OUT' EXIT
for _ in $(seq 50); do redis-cli -p $RP ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
mk() { printf '[http]\nlisten = "127.0.0.1:%s"\n[rooms]\nmax_peers = 3\n[limits]\nrate_per_sec = 0\n[turn]\nenabled = false\n[log]\nlevel = "warn"\n[cluster]\nredis_url = "redis://127.0.0.1:%s/0"\n' $1 $RP > $OUT/sb-$1.toml; }
P1=$(free_port); P2=$(free_port); mk $P1; mk $P2
$SB --config $OUT/sb-$P1.toml > $OUT/n1.log 2>&1 & N1=$!
$SB --config $OUT/sb-$P2.toml > $OUT/n2.log 2>&1 & N2=$!
for p in $P1 $P2; do for _ in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:$p/readyz && break; sleep 0.1; done; done
a=($(cpu1 $R) $(cpu1 $N1) $(cpu1 $N2))
node $SIGBENCH/sig_load/load.js --adapter wsjson --url ws://127.0.0.1:$P1/ws --url2 ws://127.0.0.1:$P2/ws --scenario relay \
  --rooms ${ROOMS:-100} --msgs ${MSGS:-2000} --size 300 --window ${WINDOW:-16} --max-seconds 120 > $OUT/res.json 2>$OUT/load.err
b=($(cpu1 $R) $(cpu1 $N1) $(cpu1 $N2))
echo "cpu ticks: redis $(( ${b[0]}-${a[0]} )) n1 $(( ${b[1]}-${a[1]} )) n2 $(( ${b[2]}-${a[2]} ))"
python3 -c "import json;r=json.load(open('$OUT/res.json'));print({k:r.get(k) for k in ['delivered','delivered_per_s','lat_p50_ms','lat_p99_ms']})"
redis-cli -p $RP info commandstats | grep -E "calls="
