'use strict';
// Tokens and origins at connect, and the native face's size and rate limits
// on socket.io events.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const {
  startServer, connectSio, refusedSio, emitAck, closeAll, jwt,
} = require('../lib/helpers');

const SECRET = 'interop-secret-of-at-least-32-bytes';
const now = () => Math.floor(Date.now() / 1000);

describe('with auth.jwt_secret set', () => {
  let server;
  const sockets = [];

  before(async () => {
    server = await startServer({ SWITCHBOARD_AUTH__JWT_SECRET: SECRET });
  });
  afterEach(() => closeAll(sockets));
  after(async () => {
    closeAll(sockets);
    await server.stop();
  });

  for (const transports of [['polling', 'websocket'], ['websocket']]) {
    it(`refuses a missing or forged token at connect (${transports.join('+')})`, async () => {
      const missing = await refusedSio(server.url, { transports });
      assert.match(missing.message, /^unauthorized: /);

      const forged = jwt('not-the-secret', { sub: 'mallory', exp: now() + 600 });
      const bad = await refusedSio(server.url, { transports, auth: { token: forged } });
      assert.match(bad.message, /^unauthorized: invalid token/);

      const expired = jwt(SECRET, { sub: 'alice', exp: now() - 60 });
      const old = await refusedSio(server.url, { transports, auth: { token: expired } });
      assert.match(old.message, /^unauthorized: /);
    });
  }

  it('admits a valid token and keeps to its rooms', async () => {
    const token = jwt(SECRET, { sub: 'alice', exp: now() + 600, rooms: ['allowed'] });
    const s = await connectSio(server.url, { auth: { token } });
    sockets.push(s);
    s.emit('join', 'allowed');
    assert.equal((await s.rec.next('joined'))[0], 'allowed');
    s.emit('join', 'secret');
    const [err] = await s.rec.next('error');
    assert.equal(err.code, 'forbidden');
    await s.rec.none('joined');
  });
});

describe('with auth.allowed_origins set', () => {
  let server;
  const sockets = [];

  before(async () => {
    server = await startServer({ SWITCHBOARD_AUTH__ALLOWED_ORIGINS: '["https://app.example"]' });
  });
  afterEach(() => closeAll(sockets));
  after(async () => {
    closeAll(sockets);
    await server.stop();
  });

  for (const transports of [['polling', 'websocket'], ['websocket']]) {
    it(`refuses a foreign browser origin (${transports.join('+')})`, async () => {
      const err = await refusedSio(server.url, {
        transports,
        extraHeaders: { Origin: 'https://evil.example' },
      });
      assert.match(err.message, /^forbidden: origin https:\/\/evil\.example/);
      const ok = await connectSio(server.url, {
        transports,
        extraHeaders: { Origin: 'https://app.example' },
      });
      sockets.push(ok);
    });
  }
});

describe('size and rate limits', () => {
  let server;
  const sockets = [];

  before(async () => {
    server = await startServer({
      SWITCHBOARD_LIMITS__MAX_MESSAGE_BYTES: '1024',
      SWITCHBOARD_LIMITS__RATE_PER_SEC: '1',
      SWITCHBOARD_LIMITS__RATE_BURST: '8',
    });
  });
  afterEach(() => closeAll(sockets));
  after(async () => {
    closeAll(sockets);
    await server.stop();
  });

  it('a message over limits.max_message_bytes gets too_large', async () => {
    const a = await connectSio(server.url, { transports: ['websocket'] });
    const b = await connectSio(server.url, { transports: ['websocket'] });
    sockets.push(a, b);
    a.emit('join', 'sized');
    await a.rec.next('joined');
    b.emit('join', 'sized');
    await b.rec.next('joined');

    const big = { kind: 'offer', sdp: 'x'.repeat(2000) };
    const ack = await emitAck(a, 'message', 'sized', big);
    assert.equal(ack.code, 'too_large');
    assert.equal(ack.delivered, 0);
    const [err] = await a.rec.next('error');
    assert.equal(err.code, 'too_large');
    await b.rec.none('message');

    // The connection stays up and a small one still goes through.
    assert.deepEqual(await emitAck(a, 'message', 'sized', { kind: 'answer', sdp: 'ok' }), { delivered: 1 });
    assert.deepEqual(await b.rec.next('message'), ['sized', { kind: 'answer', sdp: 'ok' }]);
  });

  it('a WebSocket frame over the transport bound ends only that connection', async () => {
    const a = await connectSio(server.url, { transports: ['websocket'] });
    const b = await connectSio(server.url, { transports: ['websocket'] });
    const c = await connectSio(server.url, { transports: ['websocket'] });
    sockets.push(a, b, c);
    for (const s of [b, c]) {
      s.emit('join', 'framed');
      await s.rec.next('joined');
    }
    // max(4 × 1024, 1 MiB) is the bound; this frame is 1.5 MiB.
    const gone = new Promise((resolve) => a.once('disconnect', resolve));
    a.emit('message', 'framed', 'x'.repeat(1536 * 1024));
    const reason = await gone;
    assert.match(reason, /transport (close|error)/);
    // Everyone else is still served.
    assert.deepEqual(await emitAck(b, 'message', 'framed', { kind: 'offer' }), { delivered: 1 });
    assert.deepEqual(await c.rec.next('message'), ['framed', { kind: 'offer' }]);
  });

  it('a burst over limits.rate_* gets rate_limited', async () => {
    const a = await connectSio(server.url, { transports: ['websocket'] });
    sockets.push(a);
    a.emit('join', 'rated');
    await a.rec.next('joined');
    for (let i = 0; i < 20; i += 1) a.emit('message', 'rated', { i });
    const [err] = await a.rec.next('error', ([e]) => e.code === 'rate_limited');
    assert.equal(err.code, 'rate_limited');
  });
});
