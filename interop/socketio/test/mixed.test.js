'use strict';
// One room registry for both faces: a native (JSON over WebSocket) peer and
// a socket.io peer in the same room see each other's joins, messages and
// departures, under the same peer ids.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, connectSio, connectNative, emitAck, closeAll } = require('../lib/helpers');

describe('a room shared by a native peer and a socket.io peer', () => {
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

  it('exchange offer, answer and candidates both ways', async () => {
    const native = await connectNative(server.wsUrl);
    clients.push(native);
    const nativeId = native.welcome.peer;
    const sio = await connectSio(server.url);
    clients.push(sio);

    native.request({ type: 'join', room: 'mixed', meta: { name: 'native' } });
    const joined = await native.rec.next('joined');
    assert.deepEqual(joined.peers, []);
    assert.equal(joined.peer, nativeId);

    sio.emit('join', 'mixed');
    const [room, sioId] = await sio.rec.next('joined');
    assert.equal(room, 'mixed');
    const other = await native.rec.next('other_joined');
    assert.equal(other.room, 'mixed');
    assert.equal(other.peer, sioId, 'the native side sees the socket.io peer under its id');
    assert.deepEqual(other.meta, {});

    // native → socket.io: the offer.
    const offer = { kind: 'offer', sdp: 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n' };
    native.request({ type: 'message', room: 'mixed', data: offer, id: 1 });
    const ack = await native.rec.next('ack');
    assert.equal(ack.delivered, 1);
    assert.equal(ack.reply_to, 1);
    assert.deepEqual(await sio.rec.next('message'), ['mixed', offer]);

    // socket.io → native: the answer and a candidate.
    const answer = { kind: 'answer', sdp: 'v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\ns=-\r\n' };
    assert.deepEqual(await emitAck(sio, 'message', 'mixed', answer), { delivered: 1 });
    const got = await native.rec.next('message');
    assert.equal(got.room, 'mixed');
    assert.equal(got.from, sioId);
    assert.deepEqual(got.data, answer);

    const candidate = {
      kind: 'candidate',
      candidate: { candidate: 'candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host', sdpMid: '0', sdpMLineIndex: 0 },
    };
    sio.emit('message', 'mixed', candidate);
    const gotCandidate = await native.rec.next('message');
    assert.deepEqual(gotCandidate.data, candidate);
    assert.equal(gotCandidate.from, sioId);

    // native → socket.io: a candidate, addressed to that peer with `to`.
    const back = { ...candidate, candidate: { ...candidate.candidate, sdpMid: '1' } };
    native.request({ type: 'message', room: 'mixed', to: sioId, data: back });
    assert.deepEqual(await sio.rec.next('message'), ['mixed', back]);

    // The native peer leaves: the socket.io peer gets bye with its id.
    native.request({ type: 'leave', room: 'mixed' });
    await native.rec.next('left');
    assert.deepEqual(await sio.rec.next('bye'), ['mixed', nativeId]);

    // It comes back; then the socket.io peer disconnects: bye to native.
    native.request({ type: 'join', room: 'mixed' });
    const rejoined = await native.rec.next('joined');
    assert.deepEqual(rejoined.peers.map((p) => p.peer), [sioId]);
    assert.deepEqual(await sio.rec.next('otherjoin'), ['mixed', nativeId]);
    sio.disconnect();
    const bye = await native.rec.next('bye');
    assert.equal(bye.room, 'mixed');
    assert.equal(bye.peer, sioId);
  });
});
