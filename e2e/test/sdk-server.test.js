// The SDK (in node, over `ws`) against the real switchboard binary: the same state machine
// the browser runs, checked against the server's actual resume, replay and close codes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { connect } from '../../web/sdk/switchboard.js';
import { startServer } from '../lib/browser.js';
import { waitFor, until } from '../lib/wait.js';

/** @type {Awaited<ReturnType<typeof startServer>>} */
let server;
let url;
const clients = [];
function client(opts = {}) {
  const c = connect(url, { WebSocket, backoffMinMs: 50, backoffMaxMs: 400, ...opts });
  clients.push(c);
  return c;
}

before(async () => {
  server = await startServer({ SWITCHBOARD_ROOMS__MAX_PEERS: '2' });
  url = `ws://${server.http}/ws`;
});
after(async () => {
  for (const c of clients) c.close();
  await server?.stop();
});

test('welcome with ice_servers, join, messages, full', async () => {
  const a = client();
  const w = await waitFor(a, 'welcome', undefined, 10_000);
  assert.equal(w.protocol, 1);
  assert.ok(Array.isArray(w.ice_servers));
  await a.join('s1', { name: 'Ann' });
  const b = client();
  const other = waitFor(a, 'other_joined');
  const jb = await b.join('s1', { name: 'Bob' });
  assert.deepEqual(jb.peers.map((p) => [p.peer, p.meta.name]), [[a.peer, 'Ann']]);
  assert.equal((await other).meta.name, 'Bob');
  const got = waitFor(b, 'message');
  const ack = await a.request({ type: 'message', room: 's1', to: b.peer, data: { kind: 'chat', text: 'hi' } });
  assert.equal(ack.delivered, 1);
  assert.equal((await got).data.text, 'hi');
  const c = client();
  await assert.rejects(c.join('s1'), (err) => err.code === 'full');
});

test('an abnormal close resumes the session; frames sent meanwhile are replayed once', async () => {
  const a = client();
  const b = client();
  await a.join('s2');
  await b.join('s2');
  await until(() => a.lastSeq >= 2);
  let byes = 0;
  b.on('bye', () => byes++);
  const received = [];
  a.on('message', (m) => received.push(m.data));
  const session = a.session;
  const peer = a.peer;
  const resumed = waitFor(a, 'resumed', undefined, 10_000);
  // Close the socket but keep the client from coming back for a moment.
  a.options.backoffMinMs = 600;
  a.attempt = 1;
  a.dropConnection(4000);
  b.message('s2', 'while-away', peer);
  await resumed;
  a.options.backoffMinMs = 50;
  assert.equal(a.session, session);
  assert.equal(a.peer, peer);
  b.message('s2', 'after', peer);
  await until(() => received.length >= 2);
  assert.deepEqual(received, ['while-away', 'after']);
  assert.equal(byes, 0);
});

test('resume_failed: a fresh welcome, and the client joins its rooms again', async () => {
  const a = client();
  await a.join('s3', { name: 'Ann' });
  const oldPeer = a.peer;
  a.resumeToken = 'not-the-token';
  const failed = waitFor(a, 'error', (e) => e.code === 'resume_failed', 10_000);
  const rejoined = waitFor(a, 'joined', (j) => j.room === 's3', 10_000);
  a.dropConnection(4000);
  await failed;
  const j = await rejoined;
  assert.notEqual(a.peer, oldPeer);
  // The old session is in its grace period (the token was wrong, not the gap), so it is
  // still listed; rooms.max_peers is 2 here, so the two of them fill the room.
  assert.deepEqual(j.peers.map((p) => p.peer), [oldPeer]);
});

test('taken over by another resume (4001): the client stays closed', async () => {
  const a = client();
  await waitFor(a, 'welcome', undefined, 10_000);
  const closed = waitFor(a, 'closed', undefined, 10_000);
  const thief = new WebSocket(`${url}?resume=${encodeURIComponent(a.session)}&resume_token=${encodeURIComponent(a.resumeToken)}&last_seq=${a.lastSeq}`);
  try {
    assert.equal((await closed).code, 4001);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(a.state, 'closed');
  } finally {
    thief.close(1000);
  }
});

test('close() is a clean leave: the others get bye at once', async () => {
  const a = client();
  const b = client();
  await a.join('s4');
  await b.join('s4');
  const bye = waitFor(b, 'bye', (e) => e.peer === a.peer, 2000);
  a.close();
  await bye;
});

test('a ping confirming last_seq gets its pong, and what follows still resumes', async () => {
  const a = client({ confirmEvery: 4 });
  const b = client();
  await a.join('s5');
  await b.join('s5');
  const received = [];
  a.on('message', (m) => received.push(m.data));
  for (let i = 0; i < 10; i++) b.message('s5', i, a.peer);
  await until(() => received.length === 10);
  const pong = await a.request({ type: 'ping', last_seq: a.lastSeq });
  assert.equal(pong.type, 'pong');
  const resumed = waitFor(a, 'resumed', undefined, 10_000);
  a.options.backoffMinMs = 600;
  a.attempt = 1;
  a.dropConnection(4000);
  b.message('s5', 'while-away', a.peer);
  await resumed;
  a.options.backoffMinMs = 50;
  await until(() => received.length === 11);
  assert.equal(received[10], 'while-away');
});
