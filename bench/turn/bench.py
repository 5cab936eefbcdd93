#!/usr/bin/env python3
"""TURN benchmark: switchboard vs coturn (Debian turnserver 4.6) vs a bare UDP
forwarder, all on loopback. Prints a Markdown table; see docs/benchmarks-turn.md.

Server CPU is utime+stime of the server process (all threads) from
/proc/PID/stat, read just before and after each load run.

usage: bench/turn/bench.py [--ours CMD] [--only ours|coturn|floor] [--quick]
  --ours CMD   command that runs switchboard's TURN on 127.0.0.1:3478 with
               bench/turn/switchboard.toml (default: target/release/switchboard
               --config bench/turn/switchboard.toml)
"""
import argparse, os, re, shlex, socket, struct, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TICK = os.sysconf("SC_CLK_TCK")
PEER_PORT = 3480
SCENARIOS = [
    ("paced, client-to-client", ["-y", "-c", "-l", "200", "-m", "20", "-n", "10000", "-z", "1"]),
    ("saturation", ["-c", "-l", "200", "-m", "40", "-n", "25000", "-z", "0"]),
]


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


def start(cmd, port):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not stun_ready(port):
        proc.kill()
        sys.exit(f"server did not answer STUN on {port}: {cmd}")
    return proc


def uclient(args, port):
    cmd = ["turnutils_uclient", *args, "-u", "alice", "-w", "alice-pw", "-p", str(port),
           "-e", "127.0.0.1", "-r", str(PEER_PORT), "127.0.0.1"]
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600).stdout
    wall = time.time() - t0
    sent = recv = 0
    for m in re.finditer(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$", out, re.M):
        sent, recv = int(m.group(1)), int(m.group(2))
    t = re.findall(r"Total transmit time is (\d+)", out)
    return sent, recv, wall, int(t[-1]) if t else None


def measure(name, proc, port, rows, quick):
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
    # Binding requests from 8 sockets.
    c0 = cpu_seconds(proc.pid)
    out = subprocess.run([STUN_LOAD, f"127.0.0.1:{port}", "--sockets", "8", "--secs", "5"],
                         capture_output=True, text=True).stdout
    cpu = cpu_seconds(proc.pid) - c0
    m = re.search(r"sent=(\d+) answered=(\d+) rate=(\d+)/s loss=([\d.]+)%", out)
    if m:
        answered = int(m.group(2))
        rows.append((name, "STUN binding, 8 sockets", m.group(1), answered, m.group(4) + "%",
                     f"{int(m.group(3)):,}/s", f"{cpu:.2f}", f"{1e6 * cpu / max(answered, 1):.2f}"))


def floor(rows):
    for gso in (False, True):
        cmd = [FORWARDER, "127.0.0.1:3490", f"127.0.0.1:{PEER_PORT}"] + (["--gso"] if gso else [])
        fwd = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        fwd.stdout.readline()
        name = "udp-forwarder (floor" + (", GSO)" if gso else ")")
        for window in (1, 32):
            c0 = cpu_seconds(fwd.pid)
            out = subprocess.run([STUN_LOAD, "127.0.0.1:3490", "--sockets", "20", "--secs", "5",
                                  "--window", str(window), "--echo", "200"], capture_output=True, text=True).stdout
            cpu = cpu_seconds(fwd.pid) - c0
            m = re.search(r"sent=(\d+) answered=(\d+) rate=(\d+)/s loss=([\d.]+)%", out)
            if m:
                sent, answered = int(m.group(1)), int(m.group(2))
                rows.append((name, f"echo, 20 sockets, window {window}", sent, answered,
                             m.group(4) + "%", f"{int(m.group(3)):,}/s", f"{cpu:.2f}",
                             f"{1e6 * cpu / max(sent + answered, 1):.2f}"))
        fwd.kill()


def build(path, binary):
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    subprocess.run(["cargo", "build", "--release", "-q", "--manifest-path", os.path.join(path, "Cargo.toml")],
                   check=True, env={**os.environ, "CARGO_TARGET_DIR": target})
    return os.path.join(target, "release", binary)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours")
    ap.add_argument("--only")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    STUN_LOAD = build(os.path.join(HERE, "stun-load"), "stun-load")
    FORWARDER = build(os.path.join(ROOT, "bench", "udp-forwarder"), "udp-forwarder")
    ours = shlex.split(a.ours) if a.ours else [os.path.join(ROOT, "target", "release", "switchboard"),
                                              "--config", os.path.join(HERE, "switchboard.toml")]
    peer = subprocess.Popen(["turnutils_peer", "-L", "127.0.0.1", "-p", str(PEER_PORT)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        if a.only in (None, "ours"):
            p = start(ours, 3478)
            try:
                measure("switchboard", p, 3478, rows, a.quick)
            finally:
                p.kill()
        if a.only in (None, "coturn"):
            p = start(["turnserver", "-c", os.path.join(HERE, "coturn.conf"), "--listening-port", "3479"], 3479)
            try:
                measure("coturn 4.6", p, 3479, rows, a.quick)
            finally:
                p.kill()
        if a.only in (None, "floor"):
            floor(rows)
    finally:
        peer.kill()
    print("| server | load | sent | received | loss | delivered rate | server CPU s | CPU µs per relayed msg |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
