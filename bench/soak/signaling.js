'use strict';
// Signaling churn: `rooms` room slots, each holding a room of 2-4 peers.
// Peers send `message`s with an `id` at a paced rate (some with `to`), ping
// with `last_seq`, and after a random lifetime meet one fate: leave, close
// politely, drop without a close frame and resume (or resume over a live
// connection, or resume too late, or never come back). A peer gone for good
// is replaced by a new one in the same room; a room slot retires its room
// after a random lifetime (its peers `leave`) and opens a fresh one.
const { performance } = require('node:perf_hooks');
const WebSocket = require('ws');

const FATES = [
  ['leave', 0.25],
  ['close', 0.15],
  ['dropResume', 0.35],
  ['takeover', 0.05],
  ['dropGone', 0.15],
  ['dropLate', 0.05],
];
const MAX_CONNECT_ATTEMPTS = 5;
const CLOSE_WAIT_MS = 5000;
const LEAVE_WAIT_MS = 10000;

class Swarm {
  constructor(opts, checker, lat, rng) {
    this.o = opts;
    this.checker = checker;
    this.lat = lat; // lat(kind, ms)
    this.rng = rng;
    this.peers = new Set();
    this.slots = [];
    this.stopping = false;
    this.nextId = 0;
    this.c = {
      connects: 0, connectErrors: 0, abandoned: 0, joins: 0, rooms: 0, pings: 0, pongs: 0,
      resumes: 0, resumed: 0, resumeFailedExpected: 0, resumeFailedUnexpected: 0,
      lateResumeAccepted: 0, takeovers: 0, takeoverOldClosed: 0, takeoverOldKilled: 0,
      leaves: 0, leaveTimeouts: 0, closes: 0, dropsResumed: 0, dropsGone: 0, dropsLate: 0,
      unexpectedCloses: 0, seqAnomalies: 0, received: 0, replayed: 0, acks: 0,
      refused: 0, errors: 0, lostInDrop: 0,
    };
    this.closeCodes = {};
    this.errorCodes = {};
    this.payload = 'x'.repeat(opts.payload);
  }

  uniform(a, b) {
    return a + (b - a) * this.rng();
  }

  // Exponential with `mean`, clamped so that no timer is absurdly short or long.
  lifetime(mean) {
    const x = -Math.log(1 - this.rng()) * mean;
    return Math.min(Math.max(x, mean / 10), mean * 4);
  }

  start() {
    for (let i = 0; i < this.o.rooms; i++) {
      const slot = new Slot(this, i);
      this.slots.push(slot);
      // Spread the first connections over a few seconds.
      slot.timer = setTimeout(() => slot.open(), this.uniform(0, 3000));
    }
  }

  stop() {
    this.stopping = true;
    for (const s of this.slots) clearTimeout(s.timer);
  }

  countCode(map, code) {
    map[code] = (map[code] || 0) + 1;
  }

  connected() {
    let k = 0;
    for (const p of this.peers) if (p.ws && p.state !== 'dropped') k++;
    return k;
  }

  // Politely closes every peer still here; resolves when all are closed or
  // after a bounded wait.
  async closeAll(limitMs) {
    const peers = [...this.peers];
    await Promise.all(peers.map((p) => p.closeForGood('close')));
    const deadline = Date.now() + limitMs;
    while (this.peers.size > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    for (const p of this.peers) p.kill();
  }
}

class Slot {
  constructor(swarm, idx) {
    this.swarm = swarm;
    this.idx = idx;
    this.gen = 0;
    this.room = '';
    this.timer = null;
    this.unwitnessed = new Set(); // peers of this room that ended without a seen bye
  }

  open() {
    const sw = this.swarm;
    if (sw.stopping) return;
    this.gen++;
    this.room = `soak-${this.idx}-${this.gen}`;
    this.unwitnessed = new Set();
    sw.c.rooms++;
    const size = 2 + Math.floor(sw.rng() * 3);
    for (let i = 0; i < size; i++) new Peer(this).connectFresh();
    this.timer = setTimeout(() => this.retire(), sw.lifetime(sw.o.roomLifetime) * 1000);
  }

  retire() {
    const old = this.gen;
    for (const p of this.swarm.peers) if (p.slot === this && p.gen === old) p.retire();
    this.open();
  }

  refill(peer) {
    const sw = this.swarm;
    if (sw.stopping || peer.gen !== this.gen || peer.retiring) return;
    setTimeout(() => {
      if (!sw.stopping && peer.gen === this.gen) new Peer(this).connectFresh();
    }, sw.uniform(200, 2000));
  }
}

class Peer {
  constructor(slot) {
    this.slot = slot;
    this.sw = slot.swarm;
    this.gen = slot.gen;
    this.room = slot.room;
    this.peer = null;
    this.session = null;
    this.token = null;
    this.lastSeq = 0;
    this.view = new Set();
    this.inRoom = false;
    this.state = 'new';
    this.ws = null;
    this.connAt = 0;
    this.pending = new Map(); // request id -> {s, n, at}
    this.n = 0;
    this.retiring = false;
    this.late = false; // the current resume is expected to fail
    this.attempts = 0;
    this.syncId = undefined; // the ping after a resume
    this.timers = { send: null, ping: null, life: null, wait: null };
    this.sw.peers.add(this);
  }

  clearTimers() {
    for (const k of Object.keys(this.timers)) {
      clearTimeout(this.timers[k]);
      this.timers[k] = null;
    }
  }

  open(url) {
    this.sw.c.connects++;
    this.attempts++;
    const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: 10000 });
    this.ws = ws;
    ws.on('message', (data, isBinary) => {
      if (this.ws !== ws || isBinary) return;
      let v;
      try {
        v = JSON.parse(data.toString());
      } catch {
        this.sw.c.errors++;
        return;
      }
      this.onFrame(v);
    });
    ws.on('error', () => {
      if (this.ws === ws && this.connAt === 0) this.sw.c.connectErrors++;
    });
    ws.on('close', (code) => {
      if (this.ws === ws) this.onClose(code);
    });
  }

  connectFresh() {
    this.state = 'connecting';
    this.connAt = 0;
    this.open(`ws://${this.sw.o.http}/ws`);
  }

  connectResume() {
    this.sw.c.resumes++;
    this.state = 'resuming';
    this.connAt = 0;
    if (this.sw.o.fault === 'dup' && this.lastSeq > 3) {
      // Self-test: claim less than was handled, as if the server replayed
      // frames twice; the checker must see duplicates.
      this.lastSeq -= 3;
    }
    const q = `resume=${encodeURIComponent(this.session)}&resume_token=${encodeURIComponent(this.token)}&last_seq=${this.lastSeq}`;
    this.open(`ws://${this.sw.o.http}/ws?${q}`);
  }

  // Stops listening to the current socket: later frames on it are not ours.
  detach() {
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.on('error', () => {});
    return ws;
  }

  kill() {
    const ws = this.detach();
    if (ws) ws.terminate();
  }

  send(v) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(v));
  }

  onFrame(v) {
    const sw = this.sw;
    if (typeof v.seq === 'number') {
      if (v.seq !== this.lastSeq + 1) {
        sw.c.seqAnomalies++;
        sw.checker.note('seq', { peer: this.peer, got: v.seq, expected: this.lastSeq + 1, type: v.type });
      }
      if (v.seq > this.lastSeq) this.lastSeq = v.seq;
    }
    switch (v.type) {
      case 'welcome':
        return this.onWelcome(v);
      case 'resumed':
        return this.onResumed();
      case 'joined':
        return this.onJoined(v);
      case 'other_joined':
        if (v.room === this.room) this.view.add(v.peer);
        return;
      case 'bye':
        if (v.room === this.room) {
          this.view.delete(v.peer);
          sw.checker.bye(v.room, v.peer);
          this.slot.unwitnessed.delete(v.peer);
        }
        return;
      case 'left':
        // Also when a replay brings it after an unexpected close mid-leave.
        if (v.room === this.room) {
          this.inRoom = false;
          if (this.state !== 'closing') this.closeForGood('leave');
        }
        return;
      case 'message':
        return this.onMessage(v);
      case 'ack':
        return this.onAck(v);
      case 'pong':
        sw.c.pongs++;
        if (v.reply_to !== undefined && v.reply_to === this.syncId) this.dropUnanswered();
        return;
      case 'error':
        return this.onError(v);
      default:
        sw.countCode(sw.errorCodes, `frame:${v.type}`);
    }
  }

  onWelcome(v) {
    const sw = this.sw;
    if (this.peer) this.forgetIdentity();
    this.peer = v.peer;
    this.session = v.session;
    this.token = v.resume_token;
    this.lastSeq = 0;
    this.connAt = performance.now();
    this.attempts = 0;
    this.late = false;
    if (sw.stopping || this.retiring || this.gen !== this.slot.gen) {
      this.closeForGood('close');
      return;
    }
    this.state = 'joining';
    sw.c.joins++;
    this.send({ type: 'join', room: this.room, id: ++sw.nextId });
  }

  // A resume_failed (or an identity replaced by a fresh welcome): the old
  // session is over, and so is every promise made to it.
  forgetIdentity() {
    this.sw.checker.peerEnded(this.peer, 'failed');
    this.sw.checker.resumeFailed(this.peer);
    this.sw.checker.forgetPeer(this.peer);
    this.slot.unwitnessed.delete(this.peer);
    this.pending.clear();
    this.view.clear();
    this.inRoom = false;
  }

  onResumed() {
    const sw = this.sw;
    sw.c.resumed++;
    if (this.late) sw.c.lateResumeAccepted++;
    this.late = false;
    this.attempts = 0;
    this.connAt = performance.now();
    // Its pong comes after the whole replay: a request of the old
    // connection still unanswered then never reached the server.
    this.syncId = ++sw.nextId;
    this.send({ type: 'ping', id: this.syncId, last_seq: this.lastSeq });
    if (!this.inRoom) {
      // Dropped before `joined` arrived: it comes in the replay, or never.
      this.state = 'joining';
      return;
    }
    this.enterRoom();
  }

  onJoined(v) {
    if (v.room !== this.room) return;
    this.view = new Set((v.peers || []).map((p) => p.peer));
    this.inRoom = true;
    // A peer that ended and is no longer listed has visibly left the room.
    for (const gone of this.slot.unwitnessed) {
      if (!this.view.has(gone)) {
        this.sw.checker.bye(this.room, gone);
        this.slot.unwitnessed.delete(gone);
      }
    }
    this.enterRoom();
  }

  enterRoom() {
    const sw = this.sw;
    this.state = 'joined';
    if (this.retiring || sw.stopping) {
      if (this.retiring) this.leave();
      return;
    }
    this.scheduleSend();
    this.schedulePing();
    if (!this.timers.life) {
      this.timers.life = setTimeout(() => this.fate(), sw.lifetime(sw.o.lifetime) * 1000);
    }
  }

  dropUnanswered() {
    this.syncId = undefined;
    for (const [id, p] of this.pending) {
      if (p.at < this.connAt) {
        this.pending.delete(id);
        this.sw.c.lostInDrop++;
      }
    }
  }

  onMessage(v) {
    const d = v.data;
    if (!d || d.k !== 's') return;
    const sw = this.sw;
    sw.c.received++;
    // Self-test: lose one delivery in 500; the checker must count it.
    if (sw.o.fault === 'loss' && sw.c.received % 500 === 0) return;
    const rec = sw.checker.received(this.peer, v.from, d.n);
    if (!rec) return;
    // Latency only for live delivery: a message sent before this connection
    // existed came in a replay.
    if (rec.sentAt >= this.connAt) sw.lat('deliver', performance.now() - rec.sentAt);
    else sw.c.replayed++;
  }

  onAck(v) {
    const sw = this.sw;
    const p = this.pending.get(v.reply_to);
    if (!p) return; // the ack of a join, or of another session's request
    this.pending.delete(v.reply_to);
    sw.c.acks++;
    sw.checker.acked(p.s, p.n, v.delivered, this.view, performance.now());
    if (p.at >= this.connAt) sw.lat('ack', performance.now() - p.at);
  }

  onError(v) {
    const sw = this.sw;
    if (v.code === 'resume_failed') {
      if (this.late) sw.c.resumeFailedExpected++;
      else {
        sw.c.resumeFailedUnexpected++;
        sw.checker.note('resume_failed', { peer: this.peer, last_seq: this.lastSeq });
      }
      this.forgetIdentity();
      this.peer = null;
      return; // a fresh welcome follows
    }
    sw.c.errors++;
    sw.countCode(sw.errorCodes, v.code);
    const p = this.pending.get(v.reply_to);
    if (p) {
      this.pending.delete(v.reply_to);
      sw.c.refused++;
      sw.checker.refused(p.s, p.n);
    }
  }

  scheduleSend() {
    const sw = this.sw;
    clearTimeout(this.timers.send);
    const gap = (1000 / sw.o.msgRate) * sw.uniform(0.5, 1.5);
    this.timers.send = setTimeout(() => {
      this.timers.send = null;
      if (this.state !== 'joined' || sw.stopping || this.retiring) return;
      this.sendMessage();
      this.scheduleSend();
    }, gap);
  }

  sendMessage() {
    const sw = this.sw;
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    const id = ++sw.nextId;
    const n = ++this.n;
    let to;
    if (this.view.size > 0 && sw.rng() < sw.o.toShare) {
      const list = [...this.view];
      to = list[Math.floor(sw.rng() * list.length)];
    }
    const at = performance.now();
    const msg = { type: 'message', room: this.room, id, data: { k: 's', n, p: sw.payload } };
    if (to !== undefined) msg.to = to;
    this.pending.set(id, { s: this.peer, n, at });
    sw.checker.sent(this.peer, n, this.room, to, at);
    this.send(msg);
  }

  schedulePing() {
    const sw = this.sw;
    clearTimeout(this.timers.ping);
    this.timers.ping = setTimeout(() => {
      this.timers.ping = null;
      if (this.state !== 'joined' || sw.stopping) return;
      sw.c.pings++;
      this.send({ type: 'ping', last_seq: this.lastSeq });
      this.schedulePing();
    }, sw.o.pingSecs * 1000 * sw.uniform(0.8, 1.2));
  }

  fate() {
    const sw = this.sw;
    this.timers.life = null;
    if (sw.stopping) return;
    if (this.state !== 'joined') {
      this.timers.life = setTimeout(() => this.fate(), 1000);
      return;
    }
    let x = sw.rng();
    let fate = FATES[FATES.length - 1][0];
    for (const [name, w] of FATES) {
      if (x < w) {
        fate = name;
        break;
      }
      x -= w;
    }
    switch (fate) {
      case 'leave':
        return this.leave();
      case 'close':
        return this.closeForGood('close');
      case 'dropResume':
        sw.c.dropsResumed++;
        // Well within the grace period, so that the resume must succeed.
        return this.drop(sw.uniform(300, Math.min(8000, sw.o.grace * 400)), false);
      case 'dropLate':
        sw.c.dropsLate++;
        return this.drop((sw.o.grace + sw.uniform(2, 5)) * 1000, true);
      case 'takeover':
        return this.takeover();
      default:
        sw.c.dropsGone++;
        this.kill();
        return this.end('drop');
    }
  }

  // No close frame: the server must keep the session for the grace period.
  drop(resumeAfterMs, late) {
    this.clearTimers();
    this.kill();
    this.state = 'dropped';
    this.late = late;
    this.timers.wait = setTimeout(() => {
      this.timers.wait = null;
      this.connectResume();
    }, resumeAfterMs);
  }

  // A resume while the old connection is still open takes the session over;
  // the server must close the old socket.
  takeover() {
    const sw = this.sw;
    sw.c.takeovers++;
    this.clearTimers();
    const old = this.detach();
    if (old) {
      const killer = setTimeout(() => {
        sw.c.takeoverOldKilled++;
        old.terminate();
      }, 10000);
      old.on('close', () => {
        clearTimeout(killer);
        sw.c.takeoverOldClosed++;
      });
    }
    this.connectResume();
  }

  leave() {
    const sw = this.sw;
    this.clearTimers();
    this.state = 'leaving';
    sw.c.leaves++;
    this.send({ type: 'leave', room: this.room });
    this.timers.wait = setTimeout(() => {
      sw.c.leaveTimeouts++;
      this.closeForGood('leave');
    }, LEAVE_WAIT_MS);
  }

  retire() {
    this.retiring = true;
    if (this.state === 'joined') this.leave();
    // Otherwise it leaves once it is back in the room (enterRoom), or its
    // fresh welcome closes it (onWelcome).
  }

  // Close code 1000; `how` is what the checker is told about this identity.
  closeForGood(how) {
    this.clearTimers();
    this.state = 'closing';
    const ws = this.ws;
    if (!ws || ws.readyState === WebSocket.CLOSED) {
      this.end(how);
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.end(how);
        resolve();
      };
      const t = setTimeout(() => {
        this.kill();
        done();
      }, CLOSE_WAIT_MS);
      ws.once('close', done);
      // Frames until the server's close answer are still read.
      ws.close(1000);
    });
  }

  onClose(code) {
    const sw = this.sw;
    if (this.state === 'closing' || this.state === 'done') return;
    this.detach();
    const everConnected = this.connAt !== 0;
    if (everConnected) {
      sw.c.unexpectedCloses++;
      sw.countCode(this.sw.closeCodes, code);
    }
    this.clearTimers();
    if (this.attempts >= MAX_CONNECT_ATTEMPTS) {
      sw.c.abandoned++;
      this.end('drop');
      return;
    }
    // What a real client does: come back, resuming when it has a session.
    this.state = 'dropped';
    const wait = everConnected ? sw.uniform(500, 2000) : 1000 * this.attempts;
    this.timers.wait = setTimeout(() => {
      this.timers.wait = null;
      if (this.session) this.connectResume();
      else this.connectFresh();
    }, wait);
  }

  end(how) {
    if (this.state === 'done') return;
    this.clearTimers();
    this.state = 'done';
    this.sw.peers.delete(this);
    if (this.peer) {
      this.sw.checker.peerEnded(this.peer, how);
      this.sw.checker.forgetPeer(this.peer);
      if (how !== 'leave' && this.inRoom) this.slot.unwitnessed.add(this.peer);
    }
    if (how === 'close') this.sw.c.closes++;
    this.slot.refill(this);
  }
}

module.exports = { Swarm };
