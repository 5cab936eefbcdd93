// The SDK when an SFU room's media node dies in a cluster (docs/scaling.md, "SFU rooms
// and the cluster"): the server says `error` `unavailable` "media node lost", and the room
// makes a new RTCPeerConnection and offers again on the same session, with no rejoin.
// In node against the fake server, with a stand-in RTCPeerConnection that records what
// the SDK does with it.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { connect } from '../../web/sdk/switchboard.js';
import { startFakeServer } from '../lib/fake-server.js';
import { until } from '../lib/wait.js';

/** Enough of RTCPeerConnection for an SfuLink that publishes nothing. */
class FakePC {
  static made = [];
  constructor() {
    this.closed = false;
    this.signalingState = 'stable';
    this.localDescription = null;
    this.remoteDescription = null;
    this.offers = 0;
    FakePC.made.push(this);
  }
  createDataChannel() {
    // A browser fires negotiationneeded once the change is made.
    setTimeout(() => this.onnegotiationneeded?.(), 0);
    return {};
  }
  addTransceiver(track) {
    return { sender: { track, getParameters: () => ({ encodings: [] }) } };
  }
  getSenders() {
    return [];
  }
  getTransceivers() {
    return [];
  }
  async setLocalDescription() {
    this.offers += 1;
    this.signalingState = 'have-local-offer';
    this.localDescription = { type: 'offer', sdp: `v=0 fake offer ${FakePC.made.indexOf(this)}` };
  }
  async setRemoteDescription(d) {
    this.remoteDescription = d;
    this.signalingState = 'stable';
  }
  async addIceCandidate() {}
  restartIce() {}
  close() {
    this.closed = true;
  }
}

describe('SDK: an SFU room whose media node is lost (fake server)', () => {
  let server;
  /** @type {{room: string, peer: string, data: any}[]} */
  const media = [];
  const clients = [];
  before(async () => {
    const sfu = { join() {}, leave() {}, media: (room, peer, data) => media.push({ room, peer, data }) };
    server = await startFakeServer({ sfu });
  });
  after(async () => {
    for (const c of clients) c.close();
    await server?.close();
  });

  test('"media node lost" makes a new connection that offers again; other errors do not', async () => {
    const client = connect(server.url, { WebSocket, backoffMinMs: 50, backoffMaxMs: 400 });
    clients.push(client);
    const room = client.room('moved', { media: 'sfu', RTCPeerConnection: FakePC });
    const events = { moved: 0, mediaErrors: [] };
    room.on('media_moved', () => (events.moved += 1));
    room.on('media_error', (f) => events.mediaErrors.push(f));
    room.on('error', () => {});
    await room.join({ name: 'Ann' });
    const offers = () => media.filter((m) => m.peer === client.peer && m.data?.kind === 'offer');
    await until(() => offers().length === 1, 5000);
    assert.equal(FakePC.made.length, 1);
    const first = FakePC.made[0];
    assert.equal(room.link.pc, first);

    server.push(client.peer, { type: 'error', code: 'unavailable', message: 'media node lost', room: 'moved' });
    await until(() => offers().length === 2, 5000);
    assert.equal(FakePC.made.length, 2);
    assert.equal(first.closed, true, 'the old connection is closed');
    assert.equal(room.link.pc, FakePC.made[1]);
    assert.equal(events.moved, 1);
    assert.deepEqual(events.mediaErrors, []);
    // The same session, still in the room: no second join.
    const joins = server.log.filter((l) => l.from === client.peer && l.frame?.type === 'join');
    assert.equal(joins.length, 1);

    // Any other error about our media is the app's to handle (a rejoin), as before.
    server.push(client.peer, { type: 'error', code: 'unavailable', message: 'media failed: ICE', room: 'moved' });
    await until(() => events.mediaErrors.length === 1, 5000);
    assert.equal(FakePC.made.length, 2);
    assert.equal(events.moved, 1);
  });
});
