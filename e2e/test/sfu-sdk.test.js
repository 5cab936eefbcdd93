// The SDK's SFU rooms (PROTOCOL.md §7): the `media` kind of a join and of a rejoin, in
// node against the fake server; and `client.room(name, {media: 'sfu', stream})` in
// chromium pages, with the mesh API's `track` / `peer_left` events, against switchboard
// (skipped with the reason when the binary makes no SFU rooms) and the stand-in SFU.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { connect } from '../../web/sdk/switchboard.js';
import { startFakeServer } from '../lib/fake-server.js';
import { launchBrowser } from '../lib/browser.js';
import { countPeerConnections } from '../lib/page.js';
import { startSfuBackend } from '../lib/sfu.js';
import { waitFor, until } from '../lib/wait.js';

describe('SDK: the room kind on the wire (fake server)', () => {
  let server;
  const clients = [];
  const client = (url) => {
    const c = connect(url, { WebSocket, backoffMinMs: 50, backoffMaxMs: 400 });
    clients.push(c);
    return c;
  };
  before(async () => {
    const sfu = { join() {}, leave() {}, media() {} };
    server = await startFakeServer({ graceMs: 1500, sfu });
  });
  after(async () => {
    for (const c of clients) c.close();
    await server?.close();
  });

  test('a join asks for an SFU room, a later join gets the room as it is, media goes to the SFU', async () => {
    const a = client(server.url);
    const b = client(server.url);
    const ja = await a.join('k1', { name: 'Ann' }, { media: 'sfu' });
    assert.equal(ja.media, 'sfu');
    assert.ok(server.log.some((l) => l.frame?.type === 'join' && l.frame.room === 'k1' && l.frame.media === 'sfu'));
    // No kind asked: the room's own.
    const jb = await b.join('k1', { name: 'Bob' });
    assert.equal(jb.media, 'sfu');
    assert.ok(server.log.some((l) => l.from === b.peer && l.frame?.type === 'join' && !('media' in l.frame)));
    // A mesh room says so too.
    assert.equal((await a.join('k2')).media, 'mesh');
  });

  test('after resume_failed the rejoin asks for the same kind', async () => {
    const a = client(server.url);
    await a.join('k3', { name: 'Ann' }, { media: 'sfu' });
    a.resumeToken = 'not-the-token';
    const rejoined = waitFor(a, 'joined', (f) => f.room === 'k3', 10_000);
    a.dropConnection(4000);
    const f = await rejoined;
    assert.equal(f.media, 'sfu');
    const joins = server.log.filter((l) => l.from === a.peer && l.frame?.type === 'join' && l.frame.room === 'k3');
    assert.equal(joins.length, 1);
    assert.equal(joins[0].frame.media, 'sfu');
    // Leaving forgets it.
    await a.leave('k3');
    assert.equal(a.roomMedia.has('k3'), false);
  });
});

for (const backend of /** @type {const} */ (['switchboard', 'stand-in'])) {
  describe(`SDK in chromium: client.room(name, {media: 'sfu'}) (${backend})`, () => {
    /** @type {import('playwright-core').BrowserContext} */
    let browser;
    /** @type {Awaited<ReturnType<typeof startSfuBackend>>} */
    let server;
    const consoleErrors = [];
    /** @type {Record<string, {page: import('playwright-core').Page, id: string}>} */
    const people = {};
    const room = `sdk-sfu-${backend}-${Date.now()}`;

    before(async () => {
      browser = await launchBrowser({ consoleErrors });
      await browser.addInitScript(countPeerConnections);
      server = await startSfuBackend(backend, browser);
    });
    after(async () => {
      await browser?.close();
      await server?.stop();
    });

    /** A page of the server's origin running the SDK alone (no app): joins as `name`. */
    async function sdkPage(name, asked = 'sfu') {
      const page = await browser.newPage();
      // Any document of the origin will do to import the module: the module's own text is one.
      await page.goto(`http://${server.http}/sdk/switchboard.js`, { timeout: 15_000 });
      const id = await page.evaluate(
        async ([wsUrl, room, name, asked]) => {
          const { connect } = await import('/sdk/switchboard.js');
          const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360 }, audio: true });
          const client = connect(wsUrl);
          const r = client.room(room, asked ? { media: asked, stream } : { stream });
          const log = { tracks: [], left: [], errors: [] };
          r.on('track', ({ peer, track, stream }) => log.tracks.push({ peer: peer.id, kind: track.kind, stream: stream.id }));
          r.on('peer_left', (peer) => log.left.push(peer.id));
          r.on('error', (err) => log.errors.push(String(err?.message ?? err)));
          window.t = { client, room: r, log, stream };
          await r.join({ name });
          return client.peer;
        },
        [server.url, room, name, asked],
      );
      people[name] = { page, id };
      return people[name];
    }

    /** Peer ids whose video the page's room has a live, unmuted track of. */
    const liveVideoFrom = (page) =>
      page.evaluate(() =>
        [...window.t.room.peers.values()]
          .filter((p) => [...p.streams.values()].some((s) => s.getVideoTracks().some((t) => t.readyState === 'live' && !t.muted)))
          .map((p) => p.id)
          .sort(),
      );

    test('three clients: track events name the publisher, one connection each', async (t) => {
      if (server.skip) return t.skip(server.skip);
      await sdkPage('Ann');
      await sdkPage('Bob', null);
      await sdkPage('Cid');
      const names = ['Ann', 'Bob', 'Cid'];
      for (const n of names) {
        const { page } = people[n];
        const others = names.filter((o) => o !== n).map((o) => people[o].id).sort();
        assert.equal(await page.evaluate(() => window.t.room.media), 'sfu');
        await until(async () => JSON.stringify(await liveVideoFrom(page)) === JSON.stringify(others), 20_000);
        const log = await page.evaluate(() => window.t.log);
        // Every track event's stream is its publisher's: stream id = peer id.
        for (const tr of log.tracks) assert.equal(tr.stream, tr.peer);
        assert.deepEqual([...new Set(log.tracks.filter((x) => x.kind === 'video').map((x) => x.peer))].sort(), others);
        assert.deepEqual([...new Set(log.tracks.filter((x) => x.kind === 'audio').map((x) => x.peer))].sort(), others);
        assert.deepEqual(await page.evaluate(() => window.__pcCount()), { made: 1, open: 1 });
        await page.waitForFunction(() => window.t.room.link.pc.connectionState === 'connected', null, { timeout: 10_000 });
        // Simulcast: three layers asked for; switchboard takes them. The stand-in takes
        // none, and the one layer left goes out at full size.
        const encodings = await page.evaluate(() =>
          window.t.room.link.pc
            .getSenders()
            .find((s) => s.track?.kind === 'video')
            .getParameters()
            .encodings.map((e) => `${e.rid}/${e.scaleResolutionDownBy ?? 1}`),
        );
        if (backend === 'switchboard') {
          assert.deepEqual(encodings, ['q/4', 'h/2', 'f/1']);
          assert.equal(await page.evaluate(() => window.t.room.link.simulcast), true);
        } else {
          assert.deepEqual(encodings, ['q/1']);
          assert.equal(await page.evaluate(() => window.t.room.link.simulcast), false);
        }
      }
    });

    test('a track added while the server offers (glare): both settle, everyone gets it', async (t) => {
      if (server.skip) return t.skip(server.skip);
      const ann = people.Ann.page;
      // Ann offers a second video at the moment Dee joins, which makes the server offer
      // Dee's tracks to Ann: the polite client rolls back if the offers cross.
      const dee = sdkPage('Dee');
      await ann.evaluate(() => {
        const c = Object.assign(document.createElement('canvas'), { width: 320, height: 180 });
        const g = c.getContext('2d');
        let i = 0;
        window.__draw = setInterval(() => {
          g.fillStyle = `hsl(${(i += 9) % 360} 70% 45%)`;
          g.fillRect(0, 0, 320, 180);
        }, 40);
        const s = c.captureStream(25);
        window.t.room.addTrack(s.getVideoTracks()[0], s);
      });
      await dee;
      const annId = people.Ann.id;
      for (const n of ['Bob', 'Cid', 'Dee']) {
        const { page } = people[n];
        await page.waitForFunction(
          (annId) => {
            const p = window.t.room.peers.get(annId);
            const videos = p ? [...p.streams.values()].flatMap((s) => s.getVideoTracks()).filter((t) => t.readyState === 'live' && !t.muted) : [];
            return videos.length === 2 && window.t.room.link.pc.signalingState === 'stable';
          },
          annId,
          { timeout: 20_000 },
        );
      }
      const others = ['Bob', 'Cid', 'Dee'].map((n) => people[n].id).sort();
      await until(async () => JSON.stringify(await liveVideoFrom(ann)) === JSON.stringify(others), 20_000);
      assert.equal(await ann.evaluate(() => window.t.room.link.pc.signalingState), 'stable');
      assert.deepEqual(await ann.evaluate(() => window.__pcCount()), { made: 1, open: 1 });
    });

    test('perfect negotiation, polite client: a server offer crossing ours rolls ours back, then ours again', async (t) => {
      if (server.skip) return t.skip(server.skip);
      if (backend !== 'stand-in') return t.skip('scripted in one page: once is enough');
      const page = await browser.newPage();
      await page.goto(`http://${server.http}/sdk/switchboard.js`, { timeout: 15_000 });
      const result = await page.evaluate(async () => {
        const { SfuLink } = await import('/sdk/switchboard.js');
        const wait = async (fn, what) => {
          for (let i = 0; i < 200; i++) {
            if (fn()) return;
            await new Promise((r) => setTimeout(r, 25));
          }
          throw new Error(`timed out: ${what}`);
        };
        const sent = [];
        const c = Object.assign(document.createElement('canvas'), { width: 160, height: 90 });
        c.getContext('2d').fillRect(0, 0, 160, 90);
        const stream = c.captureStream(10);
        // A room as SfuLink sees it; `client.send` collects what would go to the server.
        const room = { options: {}, room: 'r', stream, extraTracks: [], peers: new Map(), rtcConfig: () => ({}), client: { send: (f) => sent.push(f.data) }, emit() {}, _onSfuTrack() {} };
        const link = new SfuLink(room);
        link.start();
        await wait(() => sent.some((d) => d.kind === 'offer'), 'the client offer');
        // The server (impolite) ignores that offer and makes its own, which crosses it.
        const srv = new RTCPeerConnection();
        let published = 0;
        srv.ontrack = () => (published += 1);
        const c2 = Object.assign(document.createElement('canvas'), { width: 160, height: 90 });
        c2.getContext('2d').fillRect(0, 0, 160, 90);
        const other = c2.captureStream(10);
        srv.addTransceiver(other.getVideoTracks()[0], { direction: 'sendonly', streams: [other] });
        await srv.setLocalDescription();
        const stateBefore = link.pc.signalingState;
        await link.handleSignal({ kind: 'offer', sdp: srv.localDescription.sdp });
        const answer = sent.find((d) => d.kind === 'answer');
        await srv.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
        // Stable again, the client's own negotiationneeded offers its track once more.
        await wait(() => sent.filter((d) => d.kind === 'offer').length === 2, 'the client offers again');
        const offer2 = sent.filter((d) => d.kind === 'offer')[1];
        await srv.setRemoteDescription({ type: 'offer', sdp: offer2.sdp });
        await srv.setLocalDescription();
        await link.handleSignal({ kind: 'answer', sdp: srv.localDescription.sdp });
        const out = {
          stateBefore,
          order: sent.filter((d) => d.kind !== 'candidate').map((d) => d.kind),
          client: link.pc.signalingState,
          server: srv.signalingState,
          published,
          received: link.pc.getTransceivers().filter((x) => x.currentDirection === 'recvonly').length,
          sending: link.pc.getTransceivers().filter((x) => x.currentDirection === 'sendonly').length,
        };
        link.close();
        srv.close();
        return out;
      });
      await page.close();
      assert.deepEqual(result, { stateBefore: 'have-local-offer', order: ['offer', 'answer', 'offer'], client: 'stable', server: 'stable', published: 1, received: 1, sending: 1 });
    });

    test('leave: the others get peer_left, and its tracks go', async (t) => {
      if (server.skip) return t.skip(server.skip);
      const cid = people.Cid;
      const stay = ['Ann', 'Bob', 'Dee'].map((n) => people[n].page);
      const recv = (page) => page.evaluate(() => window.t.room.link.pc.getTransceivers().filter((x) => x.receiver.track.kind === 'video' && x.currentDirection === 'recvonly').length);
      const before = await Promise.all(stay.map(recv));
      await cid.page.evaluate(() => window.t.room.leave());
      for (const [i, page] of stay.entries()) {
        await page.waitForFunction((id) => window.t.log.left.includes(id) && !window.t.room.peers.has(id), cid.id, { timeout: 2_000 });
        // The server renegotiates Cid's video away: one receiving transceiver fewer.
        await until(async () => (await recv(page)) === before[i] - 1, backend === 'switchboard' ? 2_000 : 15_000);
      }
      // The room's own connection is closed with it.
      assert.deepEqual(await cid.page.evaluate(() => window.__pcCount()), { made: 1, open: 0 });
      for (const n of ['Ann', 'Bob', 'Dee']) {
        const errors = await people[n].page.evaluate(() => window.t.log.errors);
        assert.deepEqual(errors, [], `${n}: no SDK errors`);
      }
      // The module's page has no favicon: the browser's 404 for it is no error of ours.
      assert.deepEqual(consoleErrors.filter((e) => !/^Failed to load resource: .* 404/.test(e)), []);
    });
  });
}
