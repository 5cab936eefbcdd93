# Helpers the cluster benchmarks share (sourced): free ports, CPU of
# processes from /proc, readiness, and stopping every process they started
# (their pids are in PIDS; the caller sets `trap stop_all EXIT`).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu() { local t=0 p; for p in "$@"; do t=$(awk -v t=$t '{print t + $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo $t); done; echo $t; }
wait_http() { for _ in $(seq 100); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }
PIDS=()
stop_all() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; sleep 0.5; for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done; PIDS=(); }
