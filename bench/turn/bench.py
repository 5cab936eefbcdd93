#!/usr/bin/env python3
"""TURN benchmark: switchboard vs coturn (Debian turnserver 4.6) vs a bare UDP
forwarder, all on loopback. Prints Markdown tables; see docs/benchmarks-turn.md.

Server CPU is utime+stime of the server process (all threads) from
/proc/PID/stat, read just before and after each load run.

Two kinds of rows:
- uclient rows (coturn's turnutils_uclient) and STUN Binding rows, as before;
- capped rows (saturation): each TURN server alone in a cgroup limited to
  half a core (`--cap`), the load tools on another core with a whole core to
  spend, so the server and not the load side saturates. Closed-loop echo
  (40 sockets, windows 8/32/64) gives the rate each server sustains with no
  loss; the issue's `uclient -m 40 -z 0` gives the open-loop delivered rate.
  Needs root and a cgroup cpu controller (v1 or v2); skipped otherwise.
- echo rows: the same load tool (stun-load) and the same traffic for every
  server. Against switchboard and coturn each socket allocates a relay
  (alice/alice-pw) and echoes 200-byte payloads as ChannelData through a
  channel bound to turnutils_peer; against the forwarder (the floor) it sends
  the same payloads as plain UDP. Each TURN echo row has a floor row with the
  same sockets, window, rate and payload.

usage: bench/turn/bench.py [--ours CMD] [--only LIST] [--quick] [--echo-rate R] [--repeat N]
  --ours CMD    command that runs switchboard's TURN on 127.0.0.1:3478 with
                bench/turn/switchboard.toml (default: target/release/switchboard
                --config bench/turn/switchboard.toml)
  --only LIST   comma-separated servers (ours, coturn, floor) and/or loads
                (uclient, binding, echo, capped); e.g. `--only echo` runs just
                the echo rows on all three, `--only echo,ours` only switchboard's
  --cap F       CPU share of one core given to each TURN server in the
                capped rows (default 0.5)
  --echo-rate R total round trips/s of the paced echo row (default 10000)
  --repeat N    run everything N times, servers taking turns, and print for
                each row the run with the median CPU per message and the
                spread (min-max) of all N: on a shared machine single runs
                move by 10-20 %
"""
import argparse, os, re, resource, shlex, socket, struct, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TICK = os.sysconf("SC_CLK_TCK")
PEER_PORT = 3480
PEER_PID = None  # turnutils_peer, started by main
FORWARDER_PORT = 3490
SCENARIOS = [
    ("paced, client-to-client", ["-y", "-c", "-l", "200", "-m", "20", "-n", "10000", "-z", "1"]),
    ("saturation", ["-c", "-l", "200", "-m", "40", "-n", "25000", "-z", "0"]),
]
# Echo loads: (what, sockets, window, paced total rate or None for closed loop).
# One round trip is 2 datagrams in and 2 out at the server, for TURN
# (client->server, relay->peer, peer->relay, server->client) as for the
# forwarder (client->forwarder, upstream->peer, peer->upstream,
# forwarder->client), so CPU per answered round trip compares directly.
ECHO_LOADS = [
    ("20 sockets, window 1", 20, 1, None),
    ("20 sockets, window 32", 20, 32, None),
    ("20 sockets, window 32, paced", 20, 32, "paced"),
    ("closed-loop saturation, 40 sockets, window 64", 40, 64, None),
]
ECHO_BYTES = 200
SUMMARY = re.compile(r"sent=(\d+) answered=(\d+) rate=(\d+)/s loss=([\d.]+)%")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def stun_ready(port, timeout=20.0):
    req = struct.pack("!HHI12s", 1, 0, 0x2112A442, os.urandom(12))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.2)
    end = time.time() + timeout
    while time.time() < end:
        s.sendto(req, ("127.0.0.1", port))
        try:
            s.recvfrom(2048)
            return True
        except socket.timeout:
            pass
    return False


# With two or more CPUs, servers run on CPU 0 and every load tool (uclient,
# stun-load, turnutils_peer) on the others, as in bench/signaling: each
# server is measured on one core, undisturbed by its own load.
PIN = os.cpu_count() >= 2 and os.environ.get("PIN", "1") == "1"
SERVER_CPUS = ["taskset", "-c", "0"] if PIN else []
LOAD_CPUS = ["taskset", "-c", f"1-{os.cpu_count() - 1}"] if PIN else []


def start(cmd, port):
    proc = subprocess.Popen(SERVER_CPUS + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not stun_ready(port):
        proc.kill()
        sys.exit(f"server did not answer STUN on {port}: {cmd}")
    return proc


def uclient(args, port):
    cmd = ["turnutils_uclient", *args, "-u", "alice", "-w", "alice-pw", "-p", str(port),
           "-e", "127.0.0.1", "-r", str(PEER_PORT), "127.0.0.1"]
    t0 = time.time()
    out = subprocess.run(LOAD_CPUS + cmd, capture_output=True, text=True, timeout=600).stdout
    wall = time.time() - t0
    sent = recv = 0
    for m in re.finditer(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$", out, re.M):
        sent, recv = int(m.group(1)), int(m.group(2))
    t = re.findall(r"Total transmit time is (\d+)", out)
    return sent, recv, wall, int(t[-1]) if t else None


def udp_rcvbuf_errors():
    """System-wide UDP RcvbufErrors: datagrams the kernel dropped at a full
    socket receive buffer (server, peer or load tool alike)."""
    with open("/proc/net/snmp") as f:
        udp = [line.split() for line in f if line.startswith("Udp:")]
    return int(udp[1][udp[0].index("RcvbufErrors")])


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def stun_load(args):
    """Runs stun-load; returns (sent, answered, rate) or None (and says why)."""
    p = subprocess.run(LOAD_CPUS + [STUN_LOAD, *args], capture_output=True, text=True, timeout=600)
    m = SUMMARY.search(p.stdout)
    if p.returncode != 0 or not m:
        print(f"stun-load {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}", file=sys.stderr)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def measure(name, proc, port, rows, quick, loads):
    if "uclient" in loads:
        for label, args in SCENARIOS:
            if quick:
                args = [("2000" if a in ("10000", "25000") else a) for a in args]
            c0 = cpu_seconds(proc.pid)
            sent, recv, wall, tx = uclient(args, port)
            cpu = cpu_seconds(proc.pid) - c0
            relayed = sent + recv
            loss = 100.0 * (sent - recv) / sent if sent else 100.0
            rate = recv / tx if tx else recv / wall
            rows.append((name, label, sent, recv, f"{loss:.2f}%", f"{rate:,.0f}/s",
                         f"{cpu:.2f}", f"{1e6 * cpu / relayed:.2f}" if relayed else "-"))
    if "binding" in loads:
        # Binding requests from 8 sockets.
        c0 = cpu_seconds(proc.pid)
        r = stun_load([f"127.0.0.1:{port}", "--sockets", "8", "--secs", "5"])
        cpu = cpu_seconds(proc.pid) - c0
        if r:
            sent, answered, rate = r
            loss = 100.0 * (sent - answered) / sent if sent else 100.0
            rows.append((name, "STUN binding, 8 sockets", sent, answered, f"{loss:.3f}%",
                         f"{rate:,}/s", f"{cpu:.2f}", f"{1e6 * cpu / max(answered, 1):.2f}"))


def echo(name, prefix, pid, target, extra, echo_rows, quick, echo_rate):
    """The echo loads against one server; `extra` makes them TURN or plain UDP."""
    for what, sockets, window, paced in ECHO_LOADS:
        args = [target, *extra, "--sockets", str(sockets), "--window", str(window),
                "--echo", str(ECHO_BYTES), "--secs", "2" if quick else "5"]
        label = f"{prefix}, {what}"
        if paced:
            args += ["--rate", str(echo_rate)]
            label += f" {echo_rate:,}/s"
        drops0, c0, peer0, tool0 = udp_rcvbuf_errors(), cpu_seconds(pid), cpu_seconds(PEER_PID), children_cpu()
        r = stun_load(args)
        cpu, drops = cpu_seconds(pid) - c0, udp_rcvbuf_errors() - drops0
        # The load side's CPU: near 1 s per second of load, the tool or the
        # single-threaded peer (not the server) limits the closed-loop rate.
        load_cpu = f"{children_cpu() - tool0:.2f} / {cpu_seconds(PEER_PID) - peer0:.2f}"
        if not r:
            echo_rows.append((name, label, "-", "-", "failed", "-", "-", load_cpu, f"{cpu:.2f}", "-", "-"))
            continue
        sent, answered, rate = r
        loss = 100.0 * (sent - answered) / sent if sent else 100.0
        per_rt = 1e6 * cpu / max(answered, 1)
        echo_rows.append((name, label, sent, answered, f"{loss:.3f}%", f"{rate:,}/s", drops, load_cpu,
                          f"{cpu:.2f}", f"{per_rt:.2f}", f"{per_rt / 2:.2f}"))


CAPPED_WINDOWS = (8, 32, 64)


def cap_cpu(pid, share):
    """Puts process `pid` (all its threads) in a new cgroup limited to
    `share` of one CPU. Returns the cgroup directory, or None (and says why)."""
    period = 100_000
    quota = max(1000, int(share * period))
    name = f"switchboard-bench-{pid}"
    v1 = "/sys/fs/cgroup/cpu"
    v2 = "/sys/fs/cgroup"
    try:
        if os.path.isfile(os.path.join(v1, "cpu.cfs_quota_us")):
            d = os.path.join(v1, name)
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "cpu.cfs_period_us"), "w") as f:
                f.write(str(period))
            with open(os.path.join(d, "cpu.cfs_quota_us"), "w") as f:
                f.write(str(quota))
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(os.path.join(d, "tasks"), "w") as f:
                    f.write(tid)
            return d
        with open(os.path.join(v2, "cgroup.controllers")) as f:
            if "cpu" not in f.read().split():
                raise OSError("no cpu controller in cgroup v2")
        d = os.path.join(v2, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "cpu.max"), "w") as f:
            f.write(f"{quota} {period}")
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(str(pid))
        return d
    except OSError as e:
        print(f"capped rows skipped: cannot limit CPU with a cgroup ({e})", file=sys.stderr)
        return None


def capped(name, cmd, port, capped_rows, quick, share):
    """Saturation with the server as the bottleneck: see the module doc."""
    proc = start(cmd, port)
    group = None
    try:
        group = cap_cpu(proc.pid, share)
        if not group:
            return
        for window in CAPPED_WINDOWS:
            args = [f"127.0.0.1:{port}", "--turn", "alice:alice-pw", "--peer", f"127.0.0.1:{PEER_PORT}",
                    "--sockets", "40", "--window", str(window), "--echo", str(ECHO_BYTES),
                    "--secs", "2" if quick else "5"]
            c0 = cpu_seconds(proc.pid)
            r = stun_load(args)
            cpu = cpu_seconds(proc.pid) - c0
            if r:
                sent, answered, rate = r
                loss = 100.0 * (sent - answered) / sent if sent else 100.0
                capped_rows.append((name, f"echo, closed loop, 40 sockets, window {window}", sent, answered,
                                    f"{loss:.3f}%", f"{rate:,}/s", f"{cpu:.2f}"))
        label, args = SCENARIOS[1]
        if quick:
            args = [("2000" if a == "25000" else a) for a in args]
        c0 = cpu_seconds(proc.pid)
        sent, recv, wall, tx = uclient(args, port)
        cpu = cpu_seconds(proc.pid) - c0
        loss = 100.0 * (sent - recv) / sent if sent else 100.0
        rate = recv / tx if tx else recv / wall
        capped_rows.append((name, "uclient " + " ".join(args), sent, recv, f"{loss:.2f}%", f"{rate:,.0f}/s",
                            f"{cpu:.2f}"))
    finally:
        proc.kill()
        proc.wait()
        if group:
            try:
                os.rmdir(group)
            except OSError:
                pass


def turn_echo(name, proc, port, echo_rows, quick, echo_rate):
    echo(name, "TURN echo via channel", proc.pid, f"127.0.0.1:{port}",
         ["--turn", "alice:alice-pw", "--peer", f"127.0.0.1:{PEER_PORT}"], echo_rows, quick, echo_rate)


def floor(echo_rows, quick, echo_rate):
    for gso in (False, True):
        cmd = [FORWARDER, f"127.0.0.1:{FORWARDER_PORT}", f"127.0.0.1:{PEER_PORT}"] + (["--gso"] if gso else [])
        fwd = subprocess.Popen(SERVER_CPUS + cmd, stdout=subprocess.PIPE, text=True)
        try:
            fwd.stdout.readline()
            name = "udp-forwarder (floor" + (", GSO)" if gso else ")")
            echo(name, "UDP echo", fwd.pid, f"127.0.0.1:{FORWARDER_PORT}", [], echo_rows, quick, echo_rate)
        finally:
            fwd.kill()
            fwd.wait()


def median_rows(rows, col, rate=False):
    """Rows of repeated runs, one per (server, load): the run with the median
    value in column `col`, that column showing the spread of all runs."""
    groups = {}
    for r in rows:
        groups.setdefault((r[0], r[1]), []).append(r)
    out = []
    for runs in groups.values():
        if len(runs) == 1:
            out.append(runs[0])
            continue
        good = sorted((r for r in runs if r[col] != "-"),
                      key=lambda r: float(str(r[col]).replace(",", "").rstrip("/s")))
        if not good:
            out.append(runs[0])
            continue
        mid = list(good[len(good) // 2])
        mid[col] = f"{mid[col]} ({good[0][col]}-{good[-1][col]}, {len(good)} runs)"
        out.append(tuple(mid))
    return out


def build(path, binary):
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    subprocess.run(["cargo", "build", "--release", "-q", "--manifest-path", os.path.join(path, "Cargo.toml")],
                   check=True, env={**os.environ, "CARGO_TARGET_DIR": target})
    return os.path.join(target, "release", binary)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours")
    ap.add_argument("--only", default="")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--echo-rate", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--cap", type=float, default=0.5)
    a = ap.parse_args()
    only = {w for w in a.only.split(",") if w}
    unknown = only - {"ours", "coturn", "floor", "uclient", "binding", "echo", "capped"}
    if unknown:
        sys.exit(f"--only: unknown {', '.join(sorted(unknown))}")
    servers = (only & {"ours", "coturn", "floor"}) or {"ours", "coturn", "floor"}
    loads = (only & {"uclient", "binding", "echo", "capped"}) or {"uclient", "binding", "echo", "capped"}
    STUN_LOAD = build(os.path.join(HERE, "stun-load"), "stun-load")
    FORWARDER = build(os.path.join(ROOT, "bench", "udp-forwarder"), "udp-forwarder")
    ours = shlex.split(a.ours) if a.ours else [os.path.join(ROOT, "target", "release", "switchboard"),
                                              "--config", os.path.join(HERE, "switchboard.toml")]
    peer = subprocess.Popen(LOAD_CPUS + ["turnutils_peer", "-L", "127.0.0.1", "-p", str(PEER_PORT)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    PEER_PID = peer.pid
    rows, echo_rows, capped_rows = [], [], []
    try:
        for _ in range(max(1, a.repeat)):
            for key, name, cmd, port in (
                ("ours", "switchboard", ours, 3478),
                ("coturn", "coturn 4.6",
                 ["turnserver", "-c", os.path.join(HERE, "coturn.conf"), "--listening-port", "3479"], 3479),
            ):
                if key not in servers:
                    continue
                if loads & {"uclient", "binding", "echo"}:
                    p = start(cmd, port)
                    try:
                        measure(name, p, port, rows, a.quick, loads)
                        if "echo" in loads:
                            turn_echo(name, p, port, echo_rows, a.quick, a.echo_rate)
                    finally:
                        p.kill()
                        p.wait()
                if "capped" in loads:
                    capped(name, cmd, port, capped_rows, a.quick, a.cap)
            if "floor" in servers and "echo" in loads:
                floor(echo_rows, a.quick, a.echo_rate)
    finally:
        peer.kill()
    rows, echo_rows = median_rows(rows, 7), median_rows(echo_rows, 9)
    capped_rows = median_rows(capped_rows, 5, rate=True)
    spread = " (median of runs; min-max)" if a.repeat > 1 else ""
    if rows:
        print(f"| server | load | sent | received | loss | delivered rate | server CPU s | CPU µs per relayed msg{spread} |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print("| " + " | ".join(str(x) for x in r) + " |")
        print()
    if echo_rows:
        # A round trip is 2 datagrams in and 2 out at the server; "per relayed
        # msg" is half of it (1 in + 1 out), the unit of the uclient rows.
        print("| server | load | sent | answered | loss | answered rate | UDP RcvbufErrors (system) "
              f"| stun-load / peer CPU s | server CPU s | CPU µs per round trip{spread} | CPU µs per relayed msg |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in echo_rows:
            print("| " + " | ".join(str(x) for x in r) + " |")
    if capped_rows:
        print()
        print(f"Capped: each TURN server limited to {a.cap:g} of a core, load tools on another core.")
        print()
        print(f"| server | load | sent | answered | loss | rate{spread} | server CPU s |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in capped_rows:
            print("| " + " | ".join(str(x) for x in r) + " |")
