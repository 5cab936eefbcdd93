'use strict';
// The classic signaling flow of PROTOCOL.md §2 with the real
// socket.io-client v4, over long-polling upgraded to WebSocket and over
// WebSocket only.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, connectSio, emitAck, closeAll, WAIT_MS } = require('../lib/helpers');

/** Waits until the engine runs on WebSocket (the upgrade from polling). */
function upgraded(socket) {
  return new Promise((resolve, reject) => {
    const engine = socket.io.engine;
    if (engine.transport.name === 'websocket') {
      resolve();
      return;
    }
    const timer = setTimeout(() => reject(new Error('no upgrade to websocket')), WAIT_MS);
    engine.once('upgrade', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

const modes = [
  { name: 'polling, then upgraded to websocket', opts: {}, upgrade: true },
  { name: 'websocket only', opts: { transports: ['websocket'] }, upgrade: false },
];

for (const mode of modes) {
  describe(`classic flow over ${mode.name}`, () => {
    let server;
    const sockets = [];
    const connect = async () => {
      const s = await connectSio(server.url, mode.opts);
      sockets.push(s);
      assert.equal(s.firstTransport, mode.upgrade ? 'polling' : 'websocket');
      if (mode.upgrade) await upgraded(s);
      return s;
    };

    before(async () => {
      server = await startServer({ SWITCHBOARD_ROOMS__MAX_PEERS: '2' });
    });
    afterEach(() => closeAll(sockets));
    after(async () => {
      closeAll(sockets);
      await server.stop();
    });

    it('join, full, message with ack, leave, disconnect', async () => {
      const a = await connect();
      const b = await connect();
      const c = await connect();

      a.emit('join', 'room-1');
      const [roomA, idA] = await a.rec.next('joined');
      assert.equal(roomA, 'room-1');
      assert.equal(typeof idA, 'string');
      assert.ok(idA.length > 0);

      b.emit('join', 'room-1');
      const [roomB, idB] = await b.rec.next('joined');
      assert.equal(roomB, 'room-1');
      assert.notEqual(idB, idA);
      assert.deepEqual(await a.rec.next('otherjoin'), ['room-1', idB]);

      // Capacity 2: the third gets `full`, and nobody else hears of it.
      c.emit('join', 'room-1');
      const [roomC, idC] = await c.rec.next('full');
      assert.equal(roomC, 'room-1');
      assert.ok(idC && idC !== idA && idC !== idB);
      await a.rec.none('otherjoin');
      await b.rec.none('otherjoin');

      // A message reaches the rest of the room, and the ack counts it.
      const offer = { kind: 'offer', sdp: 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n' };
      const ack = await emitAck(a, 'message', 'room-1', offer);
      assert.deepEqual(ack, { delivered: 1 });
      assert.deepEqual(await b.rec.next('message'), ['room-1', offer]);
      await a.rec.none('message');
      await c.rec.none('message');

      // Without an ack callback it is relayed all the same.
      b.emit('message', 'room-1', { kind: 'answer', sdp: 'x' });
      assert.deepEqual(await a.rec.next('message'), ['room-1', { kind: 'answer', sdp: 'x' }]);

      // Refused as `full`, C is not in the room: an error event, delivered 0.
      const refused = await emitAck(c, 'message', 'room-1', 'hello?');
      assert.equal(refused.delivered, 0);
      assert.equal(refused.code, 'not_in_room');
      const [err] = await c.rec.next('error');
      assert.equal(err.code, 'not_in_room');
      await a.rec.none('message');

      // leave: bye to the others, leaved to the leaver.
      b.emit('leave', 'room-1');
      assert.deepEqual(await a.rec.next('bye'), ['room-1', idB]);
      assert.deepEqual(await b.rec.next('leaved'), ['room-1', idB]);

      // Now there is room for C.
      c.emit('join', 'room-1');
      assert.deepEqual(await c.rec.next('joined'), ['room-1', idC]);
      assert.deepEqual(await a.rec.next('otherjoin'), ['room-1', idC]);

      // disconnect: bye to the rest of the room.
      a.disconnect();
      assert.deepEqual(await c.rec.next('bye'), ['room-1', idA]);
    });

    it('messages keep their order', async () => {
      const a = await connect();
      const b = await connect();
      a.emit('join', 'ordered');
      await a.rec.next('joined');
      b.emit('join', 'ordered');
      await b.rec.next('joined');
      const n = 100;
      for (let i = 0; i < n; i += 1) a.emit('message', 'ordered', { kind: 'candidate', i });
      const got = [];
      for (let i = 0; i < n; i += 1) {
        const [, data] = await b.rec.next('message');
        got.push(data.i);
      }
      assert.deepEqual(got, [...Array(n).keys()]);
    });

    it('join and leave are acknowledged when asked', async () => {
      const a = await connect();
      assert.deepEqual(await emitAck(a, 'join', 'acked'), { ok: true });
      const again = await emitAck(a, 'join', 'acked');
      assert.equal(again.code, 'already_joined');
      assert.deepEqual(await emitAck(a, 'leave', 'acked'), { ok: true });
      const notIn = await emitAck(a, 'leave', 'acked');
      assert.equal(notIn.code, 'not_in_room');
    });

    it('an unknown event or a bad room name gets bad_request', async () => {
      const a = await connect();
      a.emit('dance', 'now');
      const [err] = await a.rec.next('error');
      assert.equal(err.code, 'bad_request');
      a.emit('join', 42);
      const [err2] = await a.rec.next('error');
      assert.equal(err2.code, 'bad_request');
      // Binary attachments are not part of the classic events.
      const ack = await emitAck(a, 'message', 'anywhere', Buffer.from([1, 2, 3]));
      assert.equal(ack.code, 'bad_request');
      const [err3] = await a.rec.next('error');
      assert.equal(err3.code, 'bad_request');
    });
  });
}
