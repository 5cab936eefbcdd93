'use strict';
// The exactly-once checker. Every soak message carries {s: sender peer, n}
// and is tracked from its send to its settlement:
//
// - on `ack` the sender's view of the room (the peers it knows, after every
//   frame it has handled before the ack: the server sends `other_joined` and
//   `bye` to it in the same order as it changes the room) is the set of
//   recipients the ack counted; its size must equal `delivered`;
// - each recipient must receive the message exactly once, and per (sender,
//   recipient) in increasing `n`;
// - a recipient that has not received it is excused only where PROTOCOL.md's
//   "an ack is a promise" allows it: its session ended visibly (the room saw
//   `bye` for it, or a fresh `joined` no longer lists it) without its having
//   left with `leave` (`left` comes after every counted frame), or its late
//   resume got `resume_failed`. A recipient that ended where nobody was left
//   in the room to see the `bye` is counted apart as "unwitnessed".
//
// A message settles `settleMs` after its ack (after its send when no ack
// came): by then every replay and every `bye` that excuses it has happened.

class Checker {
  constructor(settleMs, unackedMs) {
    this.settleMs = settleMs;
    this.unackedMs = unackedMs;
    this.msgs = new Map(); // "s|n" -> record
    this.pairs = new Map(); // "r|s" -> highest n received
    this.byeSeen = new Set(); // "room|peer"
    this.failedPeers = new Set(); // peers whose resume got resume_failed
    this.ended = new Map(); // peer -> how it ended: leave | close | drop | failed
    this.c = {
      sent: 0, acked: 0, expected: 0, ok: 0, lost: 0, dup: 0, order: 0,
      extra: 0, ackMismatch: 0, excusedBye: 0, excusedFailed: 0, unwitnessed: 0,
      unacked: 0, late: 0, unknown: 0, receivedUnacked: 0,
    };
    this.examples = []; // the first few anomalies, for the report
  }

  note(kind, detail) {
    if (this.examples.length < 30) this.examples.push({ kind, ...detail });
  }

  sent(s, n, room, to, at) {
    this.c.sent++;
    this.msgs.set(`${s}|${n}`, { s, n, room, to, sentAt: at, ackedAt: 0, expect: null, got: new Map() });
  }

  // `view`: the peers the sender knew in the room when it handled the ack.
  acked(s, n, delivered, view, at) {
    const rec = this.msgs.get(`${s}|${n}`);
    if (!rec || rec.expect) return;
    this.c.acked++;
    rec.ackedAt = at;
    rec.expect = rec.to !== undefined ? new Set(view.has(rec.to) ? [rec.to] : []) : new Set(view);
    if (rec.expect.size !== delivered) {
      this.c.ackMismatch++;
      this.note('ack_mismatch', { s, n, room: rec.room, delivered, view: [...rec.expect] });
    }
    this.c.expected += rec.expect.size;
  }

  // The sender's request failed (no_such_peer, ...): nothing was promised.
  refused(s, n) {
    this.msgs.delete(`${s}|${n}`);
  }

  received(r, s, n) {
    const rec = this.msgs.get(`${s}|${n}`);
    const pk = `${r}|${s}`;
    const last = this.pairs.get(pk);
    if (!rec) {
      // Already settled (or never sent by this run): a late copy.
      this.c.late++;
      this.note('late', { r, s, n });
      return null;
    }
    const count = (rec.got.get(r) || 0) + 1;
    rec.got.set(r, count);
    if (count > 1) {
      this.c.dup++;
      this.note('dup', { r, s, n, room: rec.room });
    } else if (last !== undefined && n < last) {
      this.c.order++;
      this.note('order', { r, s, n, after: last, room: rec.room });
    }
    if (last === undefined || n > last) this.pairs.set(pk, n);
    return rec;
  }

  bye(room, peer) {
    this.byeSeen.add(`${room}|${peer}`);
  }

  resumeFailed(peer) {
    this.failedPeers.add(peer);
  }

  peerEnded(peer, how) {
    if (!this.ended.has(peer)) this.ended.set(peer, how);
  }

  // Why recipient r may lack a message of `room`, or null when it may not.
  excuse(r, room) {
    if (this.failedPeers.has(r)) return 'failed';
    const how = this.ended.get(r);
    if (this.byeSeen.has(`${room}|${r}`) && how !== 'leave' && how !== undefined) return 'bye';
    if (how === 'close' || how === 'drop') return 'unwitnessed';
    return null;
  }

  settle(rec) {
    this.msgs.delete(`${rec.s}|${rec.n}`);
    if (!rec.expect) {
      this.c.unacked++;
      if (rec.got.size > 0) this.c.receivedUnacked++;
      return;
    }
    for (const r of rec.expect) {
      if ((rec.got.get(r) || 0) > 0) {
        this.c.ok++;
        continue;
      }
      const why = this.excuse(r, rec.room);
      if (why === 'bye') this.c.excusedBye++;
      else if (why === 'failed') this.c.excusedFailed++;
      else if (why === 'unwitnessed') this.c.unwitnessed++;
      else {
        this.c.lost++;
        this.note('lost', { r, s: rec.s, n: rec.n, room: rec.room, ended: this.ended.get(r) || 'alive' });
      }
    }
    for (const r of rec.got.keys()) {
      if (!rec.expect.has(r)) {
        this.c.extra++;
        this.note('extra', { r, s: rec.s, n: rec.n, room: rec.room });
      }
    }
  }

  // Settles what is old enough; `all` settles everything (end of run).
  sweep(now, all = false) {
    for (const rec of this.msgs.values()) {
      const due = rec.ackedAt ? rec.ackedAt + this.settleMs : rec.sentAt + this.unackedMs;
      if (all || now >= due) this.settle(rec);
    }
  }

  // Acked deliveries still missing, not yet excusable (the drain waits for 0).
  outstanding() {
    let missing = 0;
    for (const rec of this.msgs.values()) {
      if (!rec.expect) continue;
      for (const r of rec.expect) {
        if (!rec.got.get(r) && !this.excuse(r, rec.room)) missing++;
      }
    }
    return missing;
  }

  unackedPending() {
    let k = 0;
    for (const rec of this.msgs.values()) if (!rec.expect) k++;
    return k;
  }

  forgetPeer(peer) {
    // Order state of a recipient that is gone for good is no longer needed.
    for (const k of this.pairs.keys()) if (k.startsWith(`${peer}|`)) this.pairs.delete(k);
  }
}

module.exports = { Checker };
