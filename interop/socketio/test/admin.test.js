'use strict';
// The admin API's kick and close-room (PROTOCOL.md §8) as an unchanged
// socket.io-client v4 peer sees them: an `error` event with code `kicked`,
// then `leaved`, and `bye` to the others; the connection stays.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, connectSio, emitAck, closeAll } = require('../lib/helpers');

const TOKEN = 'socketio-admin-token-0123456789';

describe('admin kicks seen by socket.io clients', () => {
  let server;
  const sockets = [];
  const admin = async (method, path) => {
    const res = await fetch(`http://${server.bound.admin}${path}`, {
      method,
      headers: { Authorization: `Bearer ${TOKEN}` },
      signal: AbortSignal.timeout(5000),
    });
    return { status: res.status, body: await res.json() };
  };

  before(async () => {
    server = await startServer({ SWITCHBOARD_ADMIN__TOKEN: TOKEN });
    assert.ok(server.bound.admin, 'READY names the admin listener');
  });
  afterEach(() => closeAll(sockets));
  after(async () => {
    closeAll(sockets);
    await server.stop();
  });

  it('kick one peer, then close the room', async () => {
    const a = await connectSio(server.url, { transports: ['websocket'] });
    const b = await connectSio(server.url);
    sockets.push(a, b);
    a.emit('join', 'room-k');
    const [, idA] = await a.rec.next('joined');
    b.emit('join', 'room-k');
    const [, idB] = await b.rec.next('joined');
    assert.deepEqual(await a.rec.next('otherjoin'), ['room-k', idB]);

    const view = await admin('GET', '/admin/api/rooms/room-k');
    assert.equal(view.status, 200);
    assert.deepEqual(view.body.peers.map((p) => p.peer), [idA, idB]);

    // A request without the token changes nothing.
    const refused = await fetch(`http://${server.bound.admin}/admin/api/rooms/room-k/peers/${idB}`, {
      method: 'DELETE',
      signal: AbortSignal.timeout(5000),
    });
    assert.equal(refused.status, 401);
    await b.rec.none('leaved');

    const kick = await admin('DELETE', `/admin/api/rooms/room-k/peers/${idB}`);
    assert.deepEqual(kick, { status: 200, body: { kicked: 1 } });
    const [err] = await b.rec.next('error');
    assert.equal(err.code, 'kicked');
    assert.equal(err.room, 'room-k');
    assert.deepEqual(await b.rec.next('leaved'), ['room-k', idB]);
    assert.deepEqual(await a.rec.next('bye'), ['room-k', idB]);

    // Still connected: B may join again, and messages flow.
    b.emit('join', 'room-k');
    await b.rec.next('joined');
    await a.rec.next('otherjoin');
    assert.deepEqual(await emitAck(a, 'message', 'room-k', { n: 1 }), { delivered: 1 });
    assert.deepEqual(await b.rec.next('message'), ['room-k', { n: 1 }]);

    const close = await admin('DELETE', '/admin/api/rooms/room-k');
    assert.deepEqual(close, { status: 200, body: { kicked: 2 } });
    for (const [s, id] of [[a, idA], [b, idB]]) {
      const [e] = await s.rec.next('error');
      assert.equal(e.code, 'kicked');
      assert.deepEqual(await s.rec.next('leaved'), ['room-k', id]);
    }
    const gone = await admin('GET', '/admin/api/rooms/room-k');
    assert.equal(gone.status, 404);
    assert.equal(gone.body.error.code, 'not_found');
  });
});
