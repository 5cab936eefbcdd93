'use strict';
// TURN relaying at a steady rate: back-to-back bounded runs of the repo's
// own load tool (bench/turn/stun-load --turn): each run allocates relays
// with static credentials, binds a channel to a UDP echo peer run here,
// echoes paced ChannelData for `secs` seconds and deletes its allocations,
// so the server also sees a steady churn of allocations.
const { spawn } = require('node:child_process');
const dgram = require('node:dgram');

const FAIL_BACKOFF_MS = 5000;

class TurnLoad {
  constructor(o) {
    this.o = o;
    this.c = { runs: 0, failed: 0, sent: 0, answered: 0, echoed: 0 };
    this.interval = { sent: 0, answered: 0 };
    this.lastError = '';
    this.stopping = false;
    this.child = null;
    this.done = null;
  }

  async startPeer() {
    const sock = dgram.createSocket('udp4');
    sock.on('message', (msg, rinfo) => {
      this.c.echoed++;
      sock.send(msg, rinfo.port, rinfo.address);
    });
    sock.on('error', (e) => {
      this.lastError = `echo peer: ${e.message}`;
    });
    await new Promise((resolve) => sock.bind(0, '127.0.0.1', resolve));
    sock.unref();
    this.peer = sock;
    return sock.address().port;
  }

  async start() {
    const port = await this.startPeer();
    const o = this.o;
    this.args = [
      o.turn, '--turn', o.turnUser, '--peer', `127.0.0.1:${port}`, '--sockets', String(o.turnSockets),
      '--secs', String(o.turnSecs), '--rate', String(o.turnRate), '--window', '8', '--echo', '200',
    ];
    this.done = this.loop();
  }

  async loop() {
    // Bounded by time (the stop flag) and by count: every run takes at least
    // `turnSecs` or is followed by a back-off.
    const maxRuns = Math.ceil((this.o.minutes * 60) / Math.min(this.o.turnSecs, FAIL_BACKOFF_MS / 1000)) + 2;
    for (let i = 0; i < maxRuns && !this.stopping; i++) {
      const ok = await this.runOnce();
      if (!ok && !this.stopping) await new Promise((r) => setTimeout(r, FAIL_BACKOFF_MS));
    }
  }

  runOnce() {
    return new Promise((resolve) => {
      this.c.runs++;
      const child = spawn(this.o.stunLoad, this.args, { stdio: ['ignore', 'pipe', 'pipe'] });
      this.child = child;
      let out = '';
      let err = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (err += d));
      const killer = setTimeout(() => child.kill('SIGKILL'), (this.o.turnSecs + 30) * 1000);
      child.on('error', (e) => (err += e.message));
      child.on('close', (code) => {
        clearTimeout(killer);
        this.child = null;
        const m = /sent=(\d+) answered=(\d+)/.exec(out);
        if (m) {
          const sent = Number(m[1]);
          const answered = Number(m[2]);
          this.c.sent += sent;
          this.c.answered += answered;
          this.interval.sent += sent;
          this.interval.answered += answered;
        }
        if (code !== 0 || !m) {
          this.c.failed++;
          this.lastError = `stun-load exit ${code}: ${err.trim().slice(-300)}`;
          resolve(false);
          return;
        }
        resolve(true);
      });
    });
  }

  // Lets the run in progress finish (it is bounded), then stops.
  async stop() {
    this.stopping = true;
    if (this.done) await this.done;
    if (this.peer) this.peer.close();
  }

  takeInterval() {
    const x = this.interval;
    this.interval = { sent: 0, answered: 0 };
    return x;
  }
}

module.exports = { TurnLoad };
