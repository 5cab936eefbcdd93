#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests, the STUN fuzz
# targets' build, coturn interop, socket.io-client interop and the browser
# tests. Installs what it needs (Debian packages, npm modules) when missing.
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n==> %s\n' "$*"; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v turnutils_uclient >/dev/null 2>&1 || need+=(coturn)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# The cluster test puts two nodes behind a real load balancer.
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v c++ >/dev/null 2>&1 || need+=(g++) # libfuzzer-sys builds C++
# The symmetric-NAT browser test (e2e/test/nat.test.js, as root) builds namespaces and NATs.
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
# /metrics is checked by Prometheus's own parser and linter (promtool).
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${need[@]}"
fi
# The independent WebRTC stack of e2e/test/sfu-aiortc.test.js: a failed
# install stops the suite rather than let that test skip unseen.
if ! python3 -c 'import aiortc, websockets' >/dev/null 2>&1; then
  step "installing aiortc"
  python3 -m pip install --quiet aiortc==1.16.0 websockets==17.4
fi
# coturn's package starts a system TURN server on 3478; tests never use
# fixed ports, but a quiet machine measures better.
if command -v systemctl >/dev/null 2>&1; then systemctl stop coturn >/dev/null 2>&1 || true; fi

# A clean checkout gains nothing from incremental caches, which would double
# the target directory's size on disk.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo build --workspace --all-targets
cargo test --workspace 2>&1 | tee -a "$log"

if [ -f fuzz/Cargo.toml ]; then
  step "fuzz targets build"
  cargo build --manifest-path fuzz/Cargo.toml

  # Coverage-guided and bounded: every target for FUZZ_SECS seconds (a crash, hang or OOM
  # fails the suite; the input is left in fuzz/artifacts/). Prints "fuzz smoke ok: ..." or
  # "fuzz smoke FAILED: ...", never a line the tally below reads.
  step "fuzz smoke"
  bash fuzz/smoke.sh "${FUZZ_SECS:-15}"
fi

export SWITCHBOARD_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/switchboard"
for dir in interop/socketio e2e; do
  if [ -f "$dir/package.json" ]; then
    step "node tests in $dir"
    # One file at a time (browsers and servers are heavy on 2 cores); TAP so
    # that the tally below can read the counts whatever node's version.
    (cd "$dir" && npm ci --no-audit --no-fund && node --test --test-concurrency=1 --test-reporter=tap) 2>&1 | tee -a "$log"
  fi
done

# One closing tally over every runner (cargo's and node's).
passed=$(awk '/^test result:/ {p += $4} /^# pass / {p += $3} END {print p + 0}' "$log")
failed=$(awk '/^test result:/ {f += $6} /^# fail / {f += $3} END {print f + 0}' "$log")
step "all suites done"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
