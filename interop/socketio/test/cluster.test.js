'use strict';
// The Socket.IO face across a cluster (PROTOCOL.md §2 and §6): real socket.io-client v4
// peers connected to two different switchboard nodes that share one redis-server are in
// one room: joins, messages with their acknowledgements, leaves and disconnects cross the
// nodes, over websocket and long-polling alike, and a native peer on the other node shares
// the room with them.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { connectSio, connectNative, emitAck, closeAll, stopProcess } = require('../lib/helpers');
const { missingTools, startRedis, startNode } = require('../lib/cluster');

// A string (the reason) or false: node's runner takes even `skip: null` as a skip.
const skip = missingTools(['redis-server']);
if (skip) console.log(`socket.io cluster tests skipped: ${skip}`);

// Short, so that a dead node's peers end within the test's patience (PROTOCOL.md §6:
// within node_timeout_secs + resume_grace_secs + 5 s).
const NODE_TIMEOUT_SECS = 2;
const GRACE_SECS = 3;
const SHORT = { SWITCHBOARD_SESSION__RESUME_GRACE_SECS: String(GRACE_SECS) };

describe('socket.io peers on two nodes of a cluster', { skip }, () => {
  let redis;
  let n1;
  let n2;
  const clients = [];
  const ws = { transports: ['websocket'] };

  before(async () => {
    if (skip) return;
    redis = await startRedis();
    n1 = await startNode(redis, 'n1', SHORT);
    n2 = await startNode(redis, 'n2', SHORT);
  });
  afterEach(() => closeAll(clients));
  after(async () => {
    closeAll(clients);
    for (const n of [n1, n2]) if (n) await stopProcess(n.proc);
    await redis?.stop();
  });

  /** Connects and keeps the socket for afterEach. */
  async function sio(node, opts) {
    const s = await connectSio(node.url, opts);
    clients.push(s);
    return s;
  }

  /** Joins `room`; resolves with the peer id the server gave. */
  async function join(s, room) {
    s.emit('join', room);
    const [r, id] = await s.rec.next('joined', ([r]) => r === room);
    assert.equal(r, room);
    return id;
  }

  it('join, message with ack, and both ways between websocket peers on different nodes', async () => {
    const a = await sio(n1, ws);
    const b = await sio(n2, ws);
    assert.equal(a.io.engine.transport.name, 'websocket');
    const aId = await join(a, 'x-ws');
    const bId = await join(b, 'x-ws');
    assert.notEqual(aId, bId, 'peer ids are unique in the cluster');
    assert.deepEqual(await a.rec.next('otherjoin'), ['x-ws', bId], 'otherjoin crossed from node 2 to node 1');

    const offer = { kind: 'offer', sdp: 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n' };
    assert.deepEqual(await emitAck(a, 'message', 'x-ws', offer), { delivered: 1 }, 'the ack counts the peer on the other node');
    assert.deepEqual(await b.rec.next('message'), ['x-ws', offer]);

    const answer = { kind: 'answer', sdp: 'v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\ns=-\r\n' };
    assert.deepEqual(await emitAck(b, 'message', 'x-ws', answer), { delivered: 1 });
    assert.deepEqual(await a.rec.next('message'), ['x-ws', answer]);

    // Order holds across the nodes: a burst arrives as it was sent.
    for (let i = 0; i < 20; i++) a.emit('message', 'x-ws', { i });
    for (let i = 0; i < 20; i++) assert.deepEqual(await b.rec.next('message'), ['x-ws', { i }]);
    // Nobody echoes a peer its own message.
    await a.rec.none('message', 200);
  });

  it('a long-polling peer on node 2 and websocket peers on both nodes share a room', async () => {
    const a = await sio(n1, ws);
    const b = await sio(n2, ws);
    const p = await sio(n2, { transports: ['polling'] });
    assert.equal(p.io.engine.transport.name, 'polling');
    const aId = await join(a, 'x-poll');
    const bId = await join(b, 'x-poll');
    await a.rec.next('otherjoin', ([, id]) => id === bId);
    const pId = await join(p, 'x-poll');
    assert.deepEqual(await a.rec.next('otherjoin'), ['x-poll', pId]);
    assert.deepEqual(await b.rec.next('otherjoin'), ['x-poll', pId]);

    assert.deepEqual(await emitAck(a, 'message', 'x-poll', 'from node 1'), { delivered: 2 });
    assert.deepEqual(await p.rec.next('message'), ['x-poll', 'from node 1']);
    assert.deepEqual(await b.rec.next('message'), ['x-poll', 'from node 1']);

    assert.deepEqual(await emitAck(p, 'message', 'x-poll', { from: 'polling' }), { delivered: 2 });
    assert.deepEqual(await a.rec.next('message'), ['x-poll', { from: 'polling' }]);
    assert.deepEqual(await b.rec.next('message'), ['x-poll', { from: 'polling' }]);
    assert.equal(p.io.engine.transport.name, 'polling', 'still long-polling');

    // The polling peer goes away: bye on both nodes, and the ack counts only who is left.
    p.close();
    assert.deepEqual(await a.rec.next('bye', ([, id]) => id === pId), ['x-poll', pId]);
    assert.deepEqual(await b.rec.next('bye', ([, id]) => id === pId), ['x-poll', pId]);
    assert.deepEqual(await emitAck(b, 'message', 'x-poll', 'two left'), { delivered: 1 });
    assert.deepEqual(await a.rec.next('message'), ['x-poll', 'two left']);
    assert.ok(aId);
  });

  it('leave and disconnect reach the other node as bye', async () => {
    const a = await sio(n1, ws);
    const b = await sio(n2, ws);
    const aId = await join(a, 'x-bye');
    const bId = await join(b, 'x-bye');
    await a.rec.next('otherjoin', ([, id]) => id === bId);

    b.emit('leave', 'x-bye');
    assert.deepEqual(await b.rec.next('leaved'), ['x-bye', bId]);
    assert.deepEqual(await a.rec.next('bye'), ['x-bye', bId], 'leave on node 2 is bye on node 1');
    // A peer that left is counted by nobody and gets nothing.
    assert.deepEqual(await emitAck(a, 'message', 'x-bye', 'anyone?'), { delivered: 0 });
    await b.rec.none('message', 200);

    // Back in; then a disconnect (no leave) on node 1 is bye on node 2.
    await join(b, 'x-bye');
    await a.rec.next('otherjoin', ([, id]) => id === bId);
    a.disconnect();
    assert.deepEqual(await b.rec.next('bye'), ['x-bye', aId], 'disconnect on node 1 is bye on node 2');
    assert.deepEqual(await emitAck(b, 'message', 'x-bye', 'alone'), { delivered: 0 });
  });

  it('a native peer on node 2 and a socket.io peer on node 1 in one room', async () => {
    const native = await connectNative(n2.wsUrl);
    clients.push(native);
    const nativeId = native.welcome.peer;
    const s = await sio(n1, ws);

    native.request({ type: 'join', room: 'x-mixed', meta: { name: 'native' } });
    assert.deepEqual((await native.rec.next('joined')).peers, []);
    const sId = await join(s, 'x-mixed');
    const other = await native.rec.next('other_joined');
    assert.equal(other.peer, sId, 'the native peer sees the socket.io peer under its id, across nodes');

    const offer = { kind: 'offer', sdp: 'v=0\r\n' };
    native.request({ type: 'message', room: 'x-mixed', data: offer, id: 1 });
    const ack = await native.rec.next('ack');
    assert.equal(ack.reply_to, 1);
    assert.equal(ack.delivered, 1);
    assert.deepEqual(await s.rec.next('message'), ['x-mixed', offer]);

    const answer = { kind: 'answer', sdp: 'v=0\r\n' };
    assert.deepEqual(await emitAck(s, 'message', 'x-mixed', answer), { delivered: 1 });
    const got = await native.rec.next('message');
    assert.equal(got.from, sId);
    assert.deepEqual(got.data, answer);

    // `to` the socket.io peer on the other node.
    native.request({ type: 'message', room: 'x-mixed', to: sId, data: 'just you', id: 2 });
    assert.equal((await native.rec.next('ack', (f) => f.reply_to === 2)).delivered, 1);
    assert.deepEqual(await s.rec.next('message'), ['x-mixed', 'just you']);

    native.request({ type: 'leave', room: 'x-mixed' });
    await native.rec.next('left');
    assert.deepEqual(await s.rec.next('bye'), ['x-mixed', nativeId]);
  });

  it('a socket.io peer whose node is killed ends with bye on the other nodes, and leaves no ghost', async () => {
    const n3 = await startNode(redis, 'n3', SHORT);
    try {
      const a = await sio(n1, ws);
      const d = await sio(n3, ws);
      const aId = await join(a, 'x-dead');
      const dId = await join(d, 'x-dead');
      await a.rec.next('otherjoin', ([, id]) => id === dId);
      const t0 = Date.now();
      const exited = new Promise((r) => n3.proc.once('exit', r));
      n3.proc.kill('SIGKILL');
      await exited;
      const bound = (NODE_TIMEOUT_SECS + GRACE_SECS + 5) * 1000;
      assert.deepEqual(await a.rec.next('bye', ([, id]) => id === dId, bound), ['x-dead', dId], `bye within ${bound} ms of the kill`);
      console.log(`# SIGKILL of a node: its socket.io peer's bye after ${Date.now() - t0} ms`);
      assert.deepEqual(await emitAck(a, 'message', 'x-dead', 'anyone?'), { delivered: 0 });
      // No ghost: a fresh peer on the third node finds only a.
      const native = await connectNative(n2.wsUrl);
      clients.push(native);
      native.request({ type: 'join', room: 'x-dead' });
      assert.deepEqual((await native.rec.next('joined')).peers.map((p) => p.peer), [aId]);
    } finally {
      await stopProcess(n3.proc);
    }
  });
});

describe('capacity across nodes, through the socket.io face', { skip }, () => {
  let redis;
  const nodes = [];
  const clients = [];

  before(async () => {
    if (skip) return;
    redis = await startRedis();
    for (const id of ['c1', 'c2']) nodes.push(await startNode(redis, id, { SWITCHBOARD_ROOMS__MAX_PEERS: '2' }));
  });
  after(async () => {
    closeAll(clients);
    for (const n of nodes) await stopProcess(n.proc);
    await redis?.stop();
  });

  it('rooms.max_peers = 2: of four peers joining at once on two nodes, two get joined and two full', async () => {
    const socks = [];
    for (let i = 0; i < 4; i++) {
      const s = await connectSio(nodes[i % 2].url, { transports: ['websocket'] });
      clients.push(s);
      socks.push(s);
    }
    // Each socket's verdict, bounded: whichever of joined or full comes first.
    const verdicts = socks.map(
      (s) =>
        new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('neither joined nor full within 8 s')), 8000);
          const done = (v) => () => {
            clearTimeout(timer);
            resolve(v);
          };
          s.once('joined', done('joined'));
          s.once('full', done('full'));
        }),
    );
    for (const s of socks) s.emit('join', 'cap');
    const outcome = await Promise.all(verdicts);
    assert.deepEqual(outcome.sort(), ['full', 'full', 'joined', 'joined'], JSON.stringify(outcome));
  });
});
