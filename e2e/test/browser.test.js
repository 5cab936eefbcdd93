// The web client in Debian's chromium, against the real switchboard binary and its own
// TURN relay. Every wait is bounded; the server and the browser die in `after`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { launchBrowser, startServer, REPO } from '../lib/browser.js';
import { waitConnected, assertFramesGrow, selectedPairs } from '../lib/page.js';

/** @type {Awaited<ReturnType<typeof startServer>>} */
let server;
/** @type {Awaited<ReturnType<typeof startServer>> | null} */
let smallServer = null;
/** @type {import('playwright-core').BrowserContext} */
let browser;
const consoleErrors = [];
/** @type {Record<string, import('playwright-core').Page>} */
const pages = {};

before(async () => {
  server = await startServer();
  browser = await launchBrowser({ consoleErrors });
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await smallServer?.stop();
});

/**
 * Opens the app as `name`, joins `room` and waits until it is in the call.
 * @param {string} http @param {string} room @param {string} name
 * @param {{relay?: boolean, expectFull?: boolean}} [opts]
 */
async function openAndJoin(http, room, name, opts = {}) {
  const page = await browser.newPage();
  const q = new URLSearchParams({ room, name, user: `${name.toLowerCase()}-${Date.now()}` });
  if (opts.relay !== false) q.set('relay', '1');
  await page.goto(`http://${http}/?${q}`, { timeout: 15_000 });
  await page.waitForFunction(() => window.__sb?.state.media !== 'pending' && window.__sb.client.state === 'open', null, { timeout: 15_000 });
  await page.click('#join');
  await page.waitForFunction(
    (full) => (full ? window.__sb.state.phase === 'full' : window.__sb.state.phase === 'call'),
    !!opts.expectFull,
    { timeout: 10_000 },
  );
  return page;
}

/** The names on the page's tiles, sorted, "(you)" stripped. */
async function tileNames(page) {
  return page.evaluate(() => [...document.querySelectorAll('#grid .tile .name')].map((n) => n.textContent.replace(' (you)', '')).sort());
}

test('two pages, relay only: connected through switchboard, video flowing', async () => {
  const t0 = Date.now();
  pages.ann = await openAndJoin(server.http, 'e2e-room', 'Ann');
  pages.bob = await openAndJoin(server.http, 'e2e-room', 'Bob');
  await Promise.all([waitConnected(pages.ann, 1), waitConnected(pages.bob, 1)]);
  const connectMs = Date.now() - t0;
  assert.ok(connectMs < 20_000, `connected in ${connectMs} ms`);

  await Promise.all([assertFramesGrow(pages.ann), assertFramesGrow(pages.bob)]);

  const turnPorts = [server.ready.turn_udp, server.ready.turn_tcp].filter(Boolean).map((a) => Number(a.split(':').pop()));
  for (const page of [pages.ann, pages.bob]) {
    for (const pair of Object.values(await selectedPairs(page))) {
      assert.ok(pair, 'a selected candidate pair');
      assert.equal(pair.localType, 'relay');
      assert.equal(pair.address, '127.0.0.1');
      assert.ok(pair.port > 0);
      // The relay candidate was allocated from switchboard's own TURN listener.
      assert.ok(pair.url && turnPorts.some((p) => pair.url.includes(`127.0.0.1:${p}`)), `relay via ${pair.url}, switchboard TURN on ${turnPorts}`);
    }
  }
  // Names from join meta label the tiles.
  await pages.ann.waitForFunction(() => [...document.querySelectorAll('.tile .name')].some((n) => n.textContent === 'Bob'), null, { timeout: 5_000 });

  // The stats panel shows the same numbers to a person.
  await pages.ann.click('#btn-stats');
  await pages.ann.waitForFunction(() => Object.values(window.__sb.stats).some((s) => s.localType === 'relay' && s.framesDecoded > 0), null, { timeout: 5_000 });
  const out = path.join(REPO, 'target', 'e2e', 'call.png');
  fs.mkdirSync(path.dirname(out), { recursive: true });
  await pages.ann.waitForTimeout(300); // let the panel paint one fresh sample
  await pages.ann.screenshot({ path: out });
  await pages.ann.click('#btn-stats');
  console.log(`# connected (relay only) in ${connectMs} ms; screenshot ${out}`);
});

test('recording the call downloads a webm file', async () => {
  const { ann } = pages;
  await ann.click('#btn-rec');
  await ann.waitForFunction(() => window.__sb.state.recording, null, { timeout: 5_000 });
  await ann.waitForTimeout(1500); // a second and a half of call to record
  const download = ann.waitForEvent('download', { timeout: 10_000 });
  await ann.click('#btn-rec');
  const d = await download;
  assert.match(d.suggestedFilename(), /^switchboard-e2e-room-.*\.webm$/);
  const file = await d.path();
  assert.ok(fs.statSync(file).size > 1000, 'the recording has content');
});

test('signaling socket cut under a page: it resumes and the call stays up', async () => {
  const { ann, bob } = pages;
  const session = await ann.evaluate(() => window.__sb.client.session);
  const peerBefore = await ann.evaluate(() => window.__sb.client.peer);
  await ann.evaluate(() => {
    window.__resumed = false;
    window.__sb.client.once('resumed', () => (window.__resumed = true));
    window.__sb.dropSocket(4000);
  });
  await ann.waitForFunction(() => window.__resumed && window.__sb.client.state === 'open', null, { timeout: 10_000 });
  assert.equal(await ann.evaluate(() => window.__sb.client.session), session);
  assert.equal(await ann.evaluate(() => window.__sb.client.peer), peerBefore);
  await waitConnected(ann, 1, 5_000);
  await assertFramesGrow(bob);
  // Bob never saw Ann leave, and signaling works both ways after the resume.
  assert.equal(await bob.evaluate(() => Object.keys(window.__sb.pcs()).length), 1);
  await ann.click('#btn-chat');
  await ann.fill('#chat-input', 'still here');
  await ann.press('#chat-input', 'Enter');
  await bob.waitForFunction(() => window.__sb.state.chat.some((m) => m.text === 'still here' && !m.mine), null, { timeout: 5_000 });
});

test('glare: both sides share a screen at the same moment and the call survives', async () => {
  const { ann, bob } = pages;
  const startShare = () => {
    // A canvas stands in for getDisplayMedia; the app's share path renegotiates the same way.
    const c = Object.assign(document.createElement('canvas'), { width: 640, height: 360 });
    const g = c.getContext('2d');
    let i = 0;
    window.__shareTimer = setInterval(() => {
      g.fillStyle = `hsl(${(i += 7) % 360} 70% 45%)`;
      g.fillRect(0, 0, 640, 360);
    }, 40);
    window.__sb.shareStream(c.captureStream(25));
  };
  await Promise.all([ann.evaluate(startShare), bob.evaluate(startShare)]);
  for (const page of [ann, bob]) {
    await page.waitForFunction(
      () => {
        const peer = [...window.__sb.mesh.peers.values()][0];
        return peer && peer.streams.size === 2 && peer.pc.signalingState === 'stable' && peer.pc.connectionState === 'connected';
      },
      null,
      { timeout: 15_000 },
    );
    await page.waitForSelector('.tile.screen:not(.local) video', { timeout: 5_000 });
  }
  await Promise.all([assertFramesGrow(ann), assertFramesGrow(bob)]);
  await Promise.all(
    [ann, bob].map((p) =>
      p.evaluate(() => {
        clearInterval(window.__shareTimer);
        window.__sb.stopShare();
      }),
    ),
  );
  await ann.waitForFunction(() => !document.querySelector('.tile.screen'), null, { timeout: 10_000 });
});

test('an ICE restart (what a failed connection triggers) keeps the call up', async () => {
  const { ann, bob } = pages;
  // Re-applying relay-only restarts ICE on every connection, the same path as on 'failed'.
  await ann.evaluate(() => window.__sb.mesh.setRelayOnly(true));
  await ann.waitForFunction(() => [...window.__sb.mesh.peers.values()].every((p) => p.restarts === 1 && p.pc.signalingState === 'stable'), null, { timeout: 10_000 });
  await Promise.all([waitConnected(ann, 1), waitConnected(bob, 1)]);
  await Promise.all([assertFramesGrow(ann), assertFramesGrow(bob)]);
});

test('a third page makes a three-way mesh', async () => {
  pages.cat = await openAndJoin(server.http, 'e2e-room', 'Cat');
  await Promise.all([waitConnected(pages.ann, 2), waitConnected(pages.bob, 2), waitConnected(pages.cat, 2)]);
  await assertFramesGrow(pages.cat);
  for (const p of Object.values(pages)) assert.deepEqual(await tileNames(p), ['Ann', 'Bob', 'Cat']);
});

test('closing a page removes its tile from the others', async () => {
  const catPeer = await pages.cat.evaluate(() => window.__sb.client.peer);
  await pages.cat.close({ runBeforeUnload: true });
  delete pages.cat;
  for (const p of [pages.ann, pages.bob]) {
    await p.waitForFunction((id) => !document.getElementById(`tile-${id}`) && !(id in window.__sb.pcs()), catPeer, { timeout: 25_000 });
    assert.equal((await tileNames(p)).length, 2);
  }
});

test('camera permission denied: the page says so, joins anyway and watches the others', async () => {
  const page = await browser.newPage();
  await page.addInitScript(() => {
    navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('denied by the test', 'NotAllowedError'));
  });
  await page.goto(`http://${server.http}/?${new URLSearchParams({ room: 'e2e-room', name: 'Zed', user: `zed-${Date.now()}`, relay: '1' })}`, { timeout: 15_000 });
  await page.waitForFunction(() => window.__sb?.state.media === 'denied', null, { timeout: 10_000 });
  assert.match((await page.textContent('#preview-msg')) ?? '', /permission/i);
  await page.click('#join');
  await waitConnected(page, 2);
  await assertFramesGrow(page);
  await page.close();
});

test('rooms.max_peers = 3: the fourth page sees the room-full state', async () => {
  // The two-party call is done; free the CPU for the next one.
  for (const k of Object.keys(pages)) {
    await pages[k].close();
    delete pages[k];
  }
  smallServer = await startServer({ SWITCHBOARD_ROOMS__MAX_PEERS: '3' });
  const joined = [];
  for (const name of ['Dee', 'Eve', 'Fay']) joined.push(await openAndJoin(smallServer.http, 'small', name));
  const late = await openAndJoin(smallServer.http, 'small', 'Gus', { expectFull: true });
  const banner = await late.textContent('#banner');
  assert.match(banner ?? '', /full/i);
  assert.equal(await late.isVisible('#lobby'), true);
  for (const p of [...joined, late]) await p.close();
});

test('direct call (§3): ring a user by id, accept, talk', async () => {
  const open = async (name, user) => {
    const page = await browser.newPage();
    await page.goto(`http://${server.http}/?${new URLSearchParams({ name, user, relay: '1' })}`, { timeout: 15_000 });
    await page.waitForFunction(() => window.__sb?.state.media !== 'pending' && window.__sb.client.state === 'open', null, { timeout: 15_000 });
    return page;
  };
  const callee = `hal-${Date.now()}`;
  const hal = await open('Hal', callee);
  const ida = await open('Ida', `ida-${Date.now()}`);
  try {
    await ida.click('#dial summary');
    await ida.fill('#callee', callee);
    await ida.click('#call-btn');
    await hal.waitForSelector('#incoming:not([hidden])', { timeout: 5_000 });
    assert.match((await hal.textContent('#incoming-from')) ?? '', /Ida/);
    await hal.click('#accept');
    for (const p of [hal, ida]) await p.waitForFunction(() => window.__sb.state.phase === 'call', null, { timeout: 10_000 });
    await Promise.all([waitConnected(hal, 1), waitConnected(ida, 1)]);
    const rooms = await Promise.all([hal, ida].map((p) => p.evaluate(() => window.__sb.state.room)));
    assert.equal(rooms[0], rooms[1]);
  } finally {
    await hal.close();
    await ida.close();
  }
});

test('no console errors in any page', () => {
  assert.deepEqual(consoleErrors, []);
});

test('server gone: the page shows that it is reconnecting', async () => {
  const page = await openAndJoin(smallServer.http, 'last', 'Ray');
  await smallServer.stop();
  await page.waitForFunction(() => window.__sb.client.state === 'reconnecting', null, { timeout: 10_000 });
  assert.equal(await page.isVisible('#banner'), true);
  assert.match((await page.textContent('#banner')) ?? '', /reconnecting|unreachable/i);
  assert.match((await page.textContent('#conn')) ?? '', /reconnecting/i);
  await page.close();
});
