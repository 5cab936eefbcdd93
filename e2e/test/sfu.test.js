// The web app in an SFU room (PROTOCOL.md §7), in Debian's chromium: four pages, each with
// one RTCPeerConnection (to the server), each decoding the three others' video while
// sending its own once; leaving, a late joiner, recording, a shared screen, the stats
// panel. Runs against switchboard (skipped, with the reason, when the binary makes no SFU
// rooms) and against the stand-in SFU of lib/fake-sfu.js, which checks the page alone.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { launchBrowser, REPO } from '../lib/browser.js';
import { countPeerConnections, assertSfuFramesGrow, sfuOutbound, sfuInboundVideo, selectedPairs } from '../lib/page.js';
import { startSfuBackend } from '../lib/sfu.js';

for (const backend of /** @type {const} */ (['switchboard', 'stand-in'])) {
  describe(`SFU room in the page (${backend})`, () => {
    /** @type {import('playwright-core').BrowserContext} */
    let browser;
    /** @type {Awaited<ReturnType<typeof startSfuBackend>>} */
    let server;
    const consoleErrors = [];
    /** @type {Record<string, {page: import('playwright-core').Page, id: string}>} */
    const people = {};
    const room = `sfu-${backend}-${Date.now()}`;

    before(async () => {
      browser = await launchBrowser({ consoleErrors });
      await browser.addInitScript(countPeerConnections);
      server = await startSfuBackend(backend, browser);
    });
    after(async () => {
      await browser?.close();
      await server?.stop();
    });

    /** Opens the app as `name` and joins; `sfu`: ticks "Group call" in the lobby. */
    async function join(name, sfu = false, relay = false) {
      const page = await browser.newPage();
      const q = new URLSearchParams({ room, name, user: `${name.toLowerCase()}-${Date.now()}` });
      if (relay) q.set('relay', '1');
      await page.goto(`http://${server.http}/?${q}`, { timeout: 15_000 });
      await page.waitForFunction(() => window.__sb?.state.media !== 'pending' && window.__sb.client.state === 'open', null, { timeout: 15_000 });
      if (sfu) await page.getByText('Group call (through the server)').click();
      await page.click('#join');
      await page.waitForFunction(() => window.__sb.state.phase === 'call', null, { timeout: 10_000 });
      const id = await page.evaluate(() => window.__sb.client.peer);
      people[name] = { page, id };
      return people[name];
    }

    const ids = (...names) => names.map((n) => people[n].id);
    /** Runs `fn`; on failure prints the server's last log lines (its SFU's say what it forwarded). */
    const withLogs = async (fn) => {
      try {
        return await fn();
      } catch (err) {
        console.log(`# server log, last lines:\n${server.logs.slice(-60).join('\n')}`);
        throw err;
      }
    };
    const tileNames = (page) => page.evaluate(() => [...document.querySelectorAll('#grid .tile:not(.local) .name')].map((n) => n.textContent).sort());

    test('four pages: one connection each, everyone decodes the three others, video sent once', async (t) => {
      if (server.skip) return t.skip(server.skip);
      // Only the first asks for a group call: the others join the room as it is.
      await join('Ann', true);
      for (const n of ['Bob', 'Cid', 'Dee']) await join(n);
      const names = ['Ann', 'Bob', 'Cid', 'Dee'];
      for (const n of names) {
        const { page } = people[n];
        assert.equal(await page.evaluate(() => window.__sb.mesh.media), 'sfu', `${n} is in an SFU room`);
        const others = names.filter((o) => o !== n);
        await withLogs(() => assertSfuFramesGrow(page, ids(...others), 30_000));
        assert.deepEqual(await page.evaluate(() => window.__pcCount()), { made: 1, open: 1 }, `${n} has exactly one RTCPeerConnection`);
        assert.deepEqual(Object.keys(await page.evaluate(() => window.__sb.pcs())), ['server']);
        // Tiles carry the publishers' names (the stream id is the publisher's peer id).
        assert.deepEqual(await tileNames(page), others);
        const out = (await sfuOutbound(page)).filter((o) => o.kind === 'video');
        const rids = out.map((o) => o.rid);
        const simulcast = await page.evaluate(() => window.__sb.mesh.link.simulcast);
        // Once, not once per receiver: one outbound stream per layer, three receivers.
        assert.equal(new Set(rids).size, out.length, `one outbound-rtp per layer: ${JSON.stringify(rids)}`);
        assert.ok(out.length === 1 || out.length === 3, `${out.length} outbound video streams`);
        if (backend === 'switchboard') {
          assert.equal(simulcast, true, 'the server took three simulcast layers');
          assert.deepEqual([...rids].sort(), ['f', 'h', 'q']);
        }
      }
      // The stats panel shows the one connection, per-track bitrates and the layer received.
      const ann = people.Ann.page;
      await ann.click('#btn-stats');
      await ann.waitForFunction(
        () => {
          const s = window.__sb.stats.server;
          const video = s?.inbound.filter((i) => i.kind === 'video' && i.name && i.frameWidth && i.kbps > 0 && i.layer) ?? [];
          return s?.connectionState === 'connected' && video.length === 3 && s.outbound.some((o) => o.kind === 'video' && o.kbps > 0);
        },
        null,
        { timeout: 10_000 },
      );
      const panel = await ann.textContent('#stats-panel');
      for (const n of ['Bob', 'Cid', 'Dee']) assert.match(panel, new RegExp(`In ${n} video`));
      assert.match(panel, /layer [qhf]/);
      assert.match(panel, /Server \(group call\)/);
      if (backend === 'switchboard') {
        const shot = path.join(REPO, 'target', 'e2e', 'sfu-call.png');
        fs.mkdirSync(path.dirname(shot), { recursive: true });
        await ann.screenshot({ path: shot });
        console.log(`# screenshot ${shot}`);
      }
      await ann.click('#btn-stats');
    });

    test('recording an SFU call downloads a webm file', async (t) => {
      if (server.skip) return t.skip(server.skip);
      const ann = people.Ann.page;
      // The tab in front: a background tab's timers (which draw the grid) are throttled.
      await ann.bringToFront();
      await ann.click('#btn-rec');
      await ann.waitForFunction(() => window.__sb.state.recording, null, { timeout: 5_000 });
      await ann.waitForTimeout(2500);
      const download = ann.waitForEvent('download', { timeout: 10_000 });
      await ann.click('#btn-rec');
      const d = await download;
      assert.match(d.suggestedFilename(), /^switchboard-sfu-.*\.webm$/);
      const size = fs.statSync(await d.path()).size;
      assert.ok(size > 1000, `the recording has content: ${size} bytes`);
    });

    test('a page that leaves disappears from the others within 1 s, tile and tracks', async (t) => {
      if (server.skip) return t.skip(server.skip);
      const dee = people.Dee;
      const stay = ['Ann', 'Bob', 'Cid'].map((n) => people[n].page);
      // Timed inside the pages (one machine, one clock), so that driving them from node
      // adds nothing: when the tile goes, and when the server's renegotiation has taken
      // the leaver's video away (two receiving video transceivers left of three).
      for (const page of stay) {
        await page.evaluate((id) => {
          const recv = () => window.__sb.mesh.link.pc.getTransceivers().filter((x) => x.receiver.track.kind === 'video' && x.currentDirection === 'recvonly').length;
          window.__gone = { recvBefore: recv(), tile: null, tracks: null };
          const timer = setInterval(() => {
            const g = window.__gone;
            if (g.tile === null && !document.getElementById(`tile-${id}`)) g.tile = Date.now();
            if (g.tracks === null && recv() === g.recvBefore - 1) g.tracks = Date.now();
            if (g.tile !== null && g.tracks !== null) clearInterval(timer);
          }, 10);
        }, dee.id);
      }
      const t0 = await dee.page.evaluate(() => {
        const at = Date.now();
        document.getElementById('btn-leave').click();
        return at;
      });
      // The stand-in SFU (a browser busy with four others) is given longer for the tracks;
      // the bound that PROTOCOL.md §7 makes is switchboard's.
      const trackLimit = backend === 'switchboard' ? 1_000 : 15_000;
      const seen = [];
      for (const page of stay) {
        await page.waitForFunction(() => window.__gone.tile !== null && window.__gone.tracks !== null, null, { timeout: trackLimit + 4_000 }).catch(() => {});
        const g = await page.evaluate(() => window.__gone);
        assert.equal(g.recvBefore, 3, 'three videos were received before');
        assert.ok(g.tile !== null && g.tile - t0 <= 1_000, `tile gone within 1 s: ${g.tile === null ? 'never' : `${g.tile - t0} ms`}`);
        assert.ok(g.tracks !== null && g.tracks - t0 <= trackLimit, `tracks gone within ${trackLimit} ms: ${g.tracks === null ? 'never' : `${g.tracks - t0} ms`}`);
        seen.push(`tile ${g.tile - t0} ms, tracks ${g.tracks - t0} ms`);
      }
      console.log(`# after a leave: ${seen.join('; ')}`);
      await dee.page.close();
      delete people.Dee;
    });

    test('a late joiner gets everyone, and everyone gets it', async (t) => {
      if (server.skip) return t.skip(server.skip);
      await join('Eve');
      const names = ['Ann', 'Bob', 'Cid', 'Eve'];
      for (const n of names) {
        const { page } = people[n];
        await assertSfuFramesGrow(page, ids(...names.filter((o) => o !== n)), 30_000);
        assert.deepEqual(await page.evaluate(() => window.__pcCount()), { made: 1, open: 1 });
      }
      assert.deepEqual(await tileNames(people.Eve.page), ['Ann', 'Bob', 'Cid']);
    });

    test('a shared screen comes as a second tile of its publisher and goes when it stops', async (t) => {
      if (server.skip) return t.skip(server.skip);
      const ann = people.Ann;
      await ann.page.evaluate(() => {
        // A canvas stands in for getDisplayMedia; the share path is the same.
        const c = Object.assign(document.createElement('canvas'), { width: 640, height: 360 });
        const g = c.getContext('2d');
        let i = 0;
        window.__shareTimer = setInterval(() => {
          g.fillStyle = `hsl(${(i += 7) % 360} 70% 45%)`;
          g.fillRect(0, 0, 640, 360);
        }, 40);
        window.__sb.shareStream(c.captureStream(25));
      });
      const viewers = ['Bob', 'Cid', 'Eve'].map((n) => people[n].page);
      for (const page of viewers) {
        await page.waitForFunction(
          (id) => {
            const v = document.querySelector(`#tile-screen-${CSS.escape(id)} video`);
            const cam = document.querySelector(`#tile-${CSS.escape(id)} video`);
            // The screen is 640 wide; the camera tile keeps the camera.
            return v?.videoWidth > 0 && cam?.videoWidth > 0 && v.srcObject !== cam.srcObject;
          },
          ann.id,
          { timeout: 30_000 },
        );
        assert.match(await page.textContent(`#tile-screen-${ann.id} .name`), /Ann: screen/);
      }
      await ann.page.evaluate(() => {
        clearInterval(window.__shareTimer);
        window.__sb.stopShare();
      });
      for (const page of viewers) await page.waitForFunction((id) => !document.getElementById(`tile-screen-${id}`), ann.id, { timeout: 15_000 });
      // The camera goes on.
      await assertSfuFramesGrow(people.Bob.page, ids('Ann', 'Cid', 'Eve'), 15_000);
    });

    test("relay only: a page reaches the SFU through switchboard's TURN", async (t) => {
      if (server.skip) return t.skip(server.skip);
      if (backend !== 'switchboard') return t.skip('the stand-in has no TURN');
      const fay = await join('Fay', false, true);
      await withLogs(() => assertSfuFramesGrow(fay.page, ids('Ann', 'Bob', 'Cid', 'Eve'), 30_000));
      const pairs = await selectedPairs(fay.page);
      assert.deepEqual(Object.keys(pairs), ['server']);
      assert.equal(pairs.server?.localType, 'relay', JSON.stringify(pairs));
      await assertSfuFramesGrow(people.Ann.page, ids('Bob', 'Cid', 'Eve', 'Fay'), 30_000);
      await fay.page.evaluate(() => document.getElementById('btn-leave').click());
      await fay.page.close();
      delete people.Fay;
    });

    test('no errors in the pages', async (t) => {
      if (server.skip) return t.skip(server.skip);
      const inbound = await sfuInboundVideo(people.Ann.page);
      assert.ok(inbound.length >= 3);
      assert.deepEqual(consoleErrors, []);
    });
  });
}
