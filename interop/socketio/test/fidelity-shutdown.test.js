'use strict';
// Issue #12: relayed `data` arrives as its sender wrote it, key order
// included, on both faces; and at shutdown every socket.io client gets its
// DISCONNECT (reason "io server disconnect"), whatever its transport.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, connectSio, connectNative, emitAck, closeAll } = require('../lib/helpers');

// Keys in an order no sorted map keeps, integer-like keys aside.
const DATA = { z: 1, sdp: 'v=0', a: { y: [3, 2, 1], b: null, kind: 'offer' }, m: 'é' };
const TEXT = JSON.stringify(DATA);

describe('relayed data keeps its key order', () => {
  let server;
  const clients = [];

  before(async () => {
    server = await startServer();
  });
  afterEach(() => closeAll(clients));
  after(async () => {
    closeAll(clients);
    await server.stop();
  });

  it('classic → classic, classic → native, native → classic', async () => {
    const a = await connectSio(server.url);
    const b = await connectSio(server.url);
    clients.push(a, b);
    const native = await connectNative(server.wsUrl);
    clients.push(native);
    const rawFrames = [];
    native.on('message', (data) => rawFrames.push(data.toString()));
    for (const s of [a, b]) {
      s.emit('join', 'order');
      await s.rec.next('joined');
    }
    native.request({ type: 'join', room: 'order', id: 1 });
    await native.rec.next('joined');

    const ack = await emitAck(a, 'message', 'order', DATA);
    assert.deepEqual(ack, { delivered: 2 });
    const [, got] = await b.rec.next('message');
    assert.equal(JSON.stringify(got), TEXT, 'classic → classic');
    await native.rec.next('message');
    const frame = rawFrames.find((f) => f.includes('"type":"message"'));
    assert.ok(frame.endsWith(`"data":${TEXT}}`), `classic → native: ${frame}`);

    native.send(`{"type":"message","room":"order","data":${TEXT}}`);
    for (const s of [a, b]) {
      const [, fromNative] = await s.rec.next('message');
      assert.equal(JSON.stringify(fromNative), TEXT, 'native → classic');
    }
  });
});

for (const transport of ['websocket', 'polling']) {
  describe(`shutdown over ${transport}`, () => {
    it('gives each socket.io client its DISCONNECT before the transport closes', async () => {
      const server = await startServer();
      const clients = [];
      try {
        for (let i = 0; i < 3; i += 1) {
          const s = await connectSio(server.url, { transports: [transport] });
          clients.push(s);
          s.emit('join', 'bye');
          await s.rec.next('joined');
        }
        const reasons = clients.map(
          (s) =>
            new Promise((resolve, reject) => {
              const timer = setTimeout(() => reject(new Error('no disconnect within 8 s')), 8000);
              s.once('disconnect', (reason) => {
                clearTimeout(timer);
                resolve(reason);
              });
            }),
        );
        const exited = server.stop();
        assert.deepEqual(await Promise.all(reasons), clients.map(() => 'io server disconnect'));
        await exited;
        assert.equal(server.proc.exitCode, 0, 'exits cleanly');
      } finally {
        closeAll(clients);
        await server.stop();
      }
    });
  });
}
