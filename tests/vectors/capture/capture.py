#!/usr/bin/env python3
"""Captures real STUN/TURN packets on loopback into tests/vectors/captured/.

A UDP proxy sits between a client and coturn's turnserver and saves every datagram in
both directions as NN-<from>-<kind>.bin. Clients: coturn's turnutils_uclient (channels and
Send indications) and headless Chromium (RTCPeerConnection gathering STUN and TURN
candidates). Credentials: user "alice", password "secret", realm "switchboard".

Needs: coturn (turnserver, turnutils_uclient) and chromium from Debian. Every wait is
bounded; nothing leaves 127.0.0.1. Run from anywhere: python3 tests/vectors/capture/capture.py
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(HERE), "captured")
USER, PASSWORD, REALM = "alice", "secret", "switchboard"


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


METHODS = {0x001: "binding", 0x003: "allocate", 0x004: "refresh", 0x006: "send", 0x007: "data",
           0x008: "create-permission", 0x009: "channel-bind"}
CLASSES = {0: "request", 1: "indication", 2: "success", 3: "error"}


def kind(pkt):
    if len(pkt) >= 4 and pkt[0] >> 6 == 1:
        return "channel-data"
    if len(pkt) >= 20 and pkt[0] >> 6 == 0:
        t = int.from_bytes(pkt[0:2], "big")
        method = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80)
        cls = ((t >> 4) & 1) | ((t >> 7) & 2)
        return f"{METHODS.get(method, hex(method))}-{CLASSES[cls]}"
    return "other"


class Proxy:
    """Forwards datagrams from any client to the server and back, recording them."""

    def __init__(self, server_port, max_packets):
        self.server = ("127.0.0.1", server_port)
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.port = self.front.getsockname()[1]
        self.max_packets = max_packets
        self.packets = []  # (direction, bytes)
        self.backs = {}  # client addr -> socket towards the server
        self.lock = threading.Lock()
        self.stop = False
        threading.Thread(target=self._front_loop, daemon=True).start()

    def _record(self, direction, pkt):
        with self.lock:
            if len(self.packets) < self.max_packets:
                self.packets.append((direction, pkt))

    def _front_loop(self):
        self.front.settimeout(0.2)
        while not self.stop:
            try:
                pkt, client = self.front.recvfrom(65535)
            except socket.timeout:
                continue
            self._record("client", pkt)
            back = self.backs.get(client)
            if back is None:
                back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                back.bind(("127.0.0.1", 0))
                self.backs[client] = back
                threading.Thread(target=self._back_loop, args=(back, client), daemon=True).start()
            back.sendto(pkt, self.server)

    def _back_loop(self, back, client):
        back.settimeout(0.2)
        while not self.stop:
            try:
                pkt, _ = back.recvfrom(65535)
            except socket.timeout:
                continue
            self._record("server", pkt)
            self.front.sendto(pkt, client)

    def save(self, name, limit_per_kind=3):
        folder = os.path.join(OUT, name)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        counts = {}
        n = 0
        for direction, pkt in self.packets:
            k = f"{direction}-{kind(pkt)}"
            counts[k] = counts.get(k, 0) + 1
            if counts[k] > limit_per_kind:
                continue
            with open(os.path.join(folder, f"{n:02d}-{k}.bin"), "wb") as f:
                f.write(pkt)
            n += 1
        print(f"{name}: saved {n} of {len(self.packets)} packets", file=sys.stderr)


def start_turnserver(workdir):
    port = free_udp_port()
    lo, hi = 49152 + (port % 1000) * 10, 49152 + (port % 1000) * 10 + 9
    proc = subprocess.Popen(
        ["turnserver", "-n", "--listening-ip=127.0.0.1", f"--listening-port={port}",
         "--relay-ip=127.0.0.1", f"--min-port={lo}", f"--max-port={hi}", "--allow-loopback-peers",
         "--lt-cred-mech", f"--user={USER}:{PASSWORD}", f"--realm={REALM}", "--fingerprint",
         "--no-tls", "--no-dtls", "--no-cli", f"--userdb={workdir}/turndb",
         f"--log-file={workdir}/turn.log", f"--pidfile={workdir}/turn.pid", "--simple-log"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Ready when it answers a Binding request; bounded to 10 s.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.settimeout(0.2)
    req = bytes.fromhex("000100002112a442") + os.urandom(12)
    for _ in range(50):
        probe.sendto(req, ("127.0.0.1", port))
        try:
            probe.recvfrom(2048)
            return proc, port
        except socket.timeout:
            continue
    proc.kill()
    raise SystemExit("turnserver did not answer within 10 s")


def capture_uclient(port):
    proxy = Proxy(port, 200)
    subprocess.run(["turnutils_uclient", "-y", "-c", "-G", "-m", "2", "-n", "3", "-l", "60",
                    "-u", USER, "-w", PASSWORD, "-p", str(proxy.port), "127.0.0.1"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    proxy.stop = True
    proxy.save("coturn-uclient")
    # Send indications instead of channels.
    proxy = Proxy(port, 200)
    subprocess.run(["turnutils_uclient", "-y", "-c", "-s", "-m", "2", "-n", "2", "-l", "33",
                    "-u", USER, "-w", PASSWORD, "-p", str(proxy.port), "127.0.0.1"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    proxy.stop = True
    proxy.save("coturn-uclient-send")


PAGE = """<!doctype html><script>
const pc = new RTCPeerConnection({iceServers: [
  {urls: 'stun:127.0.0.1:%d'},
  {urls: 'turn:127.0.0.1:%d?transport=udp', username: '%s', credential: '%s'}]});
pc.createDataChannel('x');
pc.onicegatheringstatechange = () => { document.title = pc.iceGatheringState; };
pc.createOffer().then(o => pc.setLocalDescription(o));
</script>"""


def capture_chromium(port, workdir):
    if shutil.which("chromium") is None:
        print("chromium not installed: skipping browser capture", file=sys.stderr)
        return
    proxy = Proxy(port, 60)
    page = os.path.join(workdir, "page.html")
    with open(page, "w") as f:
        f.write(PAGE % (proxy.port, proxy.port, USER, PASSWORD))
    proc = subprocess.Popen(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={workdir}/profile", "--remote-debugging-port=0", "file://" + page],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while time.time() < deadline:
        kinds = {kind(p) for d, p in proxy.packets}
        if "allocate-success" in kinds and "binding-success" in kinds:
            time.sleep(1)  # the CreatePermission/refresh that may follow
            break
        time.sleep(0.2)
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
    proxy.stop = True
    proxy.save("chromium")


def main():
    with tempfile.TemporaryDirectory() as workdir:
        server, port = start_turnserver(workdir)
        try:
            capture_uclient(port)
            capture_chromium(port, workdir)
        finally:
            server.terminate()
            try:
                server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()
