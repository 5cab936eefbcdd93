// The SDK's signaling state machine against the in-process fake server: joining, messages,
// `full`, resume with replay, resume_failed + rejoin, take-over (4001), clean close, backoff.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import WebSocket from 'ws';
import { connect } from '../../web/sdk/switchboard.js';
import { startFakeServer } from '../lib/fake-server.js';
import { waitFor, until } from '../lib/wait.js';

const clients = [];
function client(url, opts = {}) {
  const c = connect(url, { WebSocket, backoffMinMs: 50, backoffMaxMs: 400, ...opts });
  clients.push(c);
  return c;
}

let server;
before(async () => {
  server = await startFakeServer({ graceMs: 1500 });
});
after(async () => {
  for (const c of clients) c.close();
  await server?.close();
});

test('welcome, join, other_joined and messages both ways', async () => {
  const a = client(server.url);
  const wa = await waitFor(a, 'welcome');
  assert.equal(a.state, 'open');
  assert.equal(a.peer, wa.peer);
  const joinedA = await a.join('r1', { name: 'Ann' });
  assert.deepEqual(joinedA.peers, []);

  const b = client(server.url);
  await waitFor(b, 'welcome');
  const other = waitFor(a, 'other_joined');
  const joinedB = await b.join('r1', { name: 'Bob' });
  assert.equal(joinedB.peers[0].peer, a.peer);
  assert.deepEqual(joinedB.peers[0].meta, { name: 'Ann' });
  assert.equal((await other).meta.name, 'Bob');

  const got = waitFor(b, 'message');
  a.message('r1', { hello: 1 }, b.peer);
  const m = await got;
  assert.equal(m.from, a.peer);
  assert.deepEqual(m.data, { hello: 1 });

  const ack = await a.request({ type: 'message', room: 'r1', data: 'x' });
  assert.equal(ack.type, 'ack');
  assert.equal(ack.delivered, 1);
});

test('a full room rejects the join with code full', async () => {
  const small = await startFakeServer({ maxPeers: 1 });
  try {
    const a = client(small.url);
    await a.join('tiny');
    const b = client(small.url);
    const fullEv = waitFor(b, 'full');
    await assert.rejects(b.join('tiny'), (err) => err.code === 'full');
    assert.equal((await fullEv).room, 'tiny');
    assert.ok(!b.rooms.has('tiny'));
  } finally {
    await small.close();
  }
});

test('a dropped socket resumes and replays what was missed, exactly once', async () => {
  const a = client(server.url);
  const b = client(server.url);
  await a.join('r2');
  await b.join('r2');
  await until(() => a.lastSeq >= 2); // joined + other_joined
  const seqBefore = a.lastSeq;
  let byes = 0;
  b.on('bye', () => byes++);
  const received = [];
  a.on('message', (m) => received.push(m.data));

  const sessionA = server.sessions.get(a.session);
  server.knobs.delayResumeMs = 300;
  const resumedEv = waitFor(a, 'resumed');
  sessionA.ws.terminate();
  try {
    await until(() => sessionA.ws === null);
    // Sent while A is away: the server must keep it for the resume.
    b.message('r2', 'while-away', a.peer);
    await until(() => sessionA.replay.some((f) => f.data === 'while-away'));
  } finally {
    server.knobs.delayResumeMs = 0;
  }
  const resumed = await resumedEv;
  assert.equal(resumed.session, sessionA.id);
  await until(() => received.length >= 1);
  b.message('r2', 'after', a.peer);
  await until(() => received.length >= 2);
  assert.deepEqual(received, ['while-away', 'after']);
  assert.ok(a.lastSeq > seqBefore);
  const resumeLog = server.log.find((l) => l.resume === sessionA.id);
  assert.equal(resumeLog.last_seq, seqBefore);
  assert.equal(byes, 0);
  assert.equal(a.state, 'open');
});

test('resume_failed then a fresh welcome: the client joins its rooms again', async () => {
  const a = client(server.url);
  const b = client(server.url);
  await a.join('r3', { name: 'Ann' });
  await b.join('r3');
  const oldPeer = a.peer;
  server.knobs.refuseResume = true;
  try {
    const failed = waitFor(a, 'error', (e) => e.code === 'resume_failed');
    const welcome = waitFor(a, 'welcome', (w) => w.previousPeer === oldPeer);
    const rejoined = waitFor(a, 'joined', (j) => j.room === 'r3');
    const seenByB = waitFor(b, 'other_joined', (o) => o.peer !== oldPeer);
    server.sessions.get(a.session).ws.terminate();
    await failed;
    const w = await welcome;
    assert.deepEqual(w.rejoining, ['r3']);
    const j = await rejoined;
    // The old session is still in its grace period, so it is listed too.
    assert.ok(j.peers.some((p) => p.peer === b.peer));
    const o = await seenByB;
    assert.equal(o.meta.name, 'Ann');
    assert.notEqual(a.peer, oldPeer);
    // The old session runs out its grace period and the others learn it is gone.
    await waitFor(b, 'bye', (e) => e.peer === oldPeer, 5000);
  } finally {
    server.knobs.refuseResume = false;
  }
});

test('taken over by another resume (4001): closed, no reconnect', async () => {
  const a = client(server.url);
  await waitFor(a, 'welcome');
  const closed = waitFor(a, 'closed');
  const thief = new WebSocket(`${server.url}?resume=${a.session}&resume_token=${encodeURIComponent(a.resumeToken)}&last_seq=0`);
  const ev = await closed;
  assert.equal(ev.code, 4001);
  assert.equal(a.state, 'closed');
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(a.state, 'closed');
  assert.equal(a.ws, null);
  thief.close(1000);
});

test('close() leaves at once: the others get bye, no reconnect', async () => {
  const a = client(server.url);
  const b = client(server.url);
  await a.join('r4');
  await b.join('r4');
  const bye = waitFor(b, 'bye', (e) => e.peer === a.peer, 1000);
  a.close();
  await bye;
  assert.equal(a.state, 'closed');
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(a.state, 'closed');
});

test('server unreachable: reconnecting with growing backoff, then connects when it appears', async () => {
  // Take a free port, release it, and point the client there.
  const probe = net.createServer();
  await new Promise((r) => probe.listen(0, '127.0.0.1', r));
  const { port } = /** @type {net.AddressInfo} */ (probe.address());
  await new Promise((r) => probe.close(r));
  const states = [];
  const a = client(`ws://127.0.0.1:${port}/ws`);
  a.on('state', (s) => states.push(s));
  await until(() => a.attempt >= 3, 5000);
  assert.equal(a.state, 'reconnecting');
  assert.ok(!states.includes('open'));
  a.close();
  assert.equal(a.state, 'closed');
});

test('pings confirm last_seq: after every 64 sequenced frames, and on the ping interval', async () => {
  // No interval ping during the burst: only the count may trigger a confirmation.
  const a = client(server.url, { pingIntervalMs: 60_000 });
  const b = client(server.url);
  await a.join('r5');
  await b.join('r5');
  await until(() => a.lastSeq >= 2); // joined + other_joined
  const received = [];
  a.on('message', (m) => received.push(m.data));
  for (let i = 0; i < 70; i++) b.message('r5', i, a.peer);
  await until(() => received.length === 70);
  const pings = () => server.log.filter((l) => l.from === a.peer && l.frame.type === 'ping').map((l) => l.frame);
  await until(() => pings().length >= 1);
  // Two frames before the burst, so the 64th handled is the 62nd message, seq 64.
  assert.deepEqual(pings(), [{ type: 'ping', last_seq: 64 }]);
  assert.ok(!server.sessions.get(a.session).replay.some((f) => f.seq <= 64), 'the confirmed frames left the replay buffer');

  const c = client(server.url, { pingIntervalMs: 100 });
  const joined = await c.join('r5');
  await until(() => server.log.some((l) => l.from === c.peer && l.frame.type === 'ping' && l.frame.last_seq >= joined.seq));
});
