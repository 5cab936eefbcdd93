// The admin dashboard (/admin/ on the admin listener, PROTOCOL.md §8) in Chromium: the
// token form, rooms and peers appearing live as native clients (node `ws`) join, a kick
// from the page reaching the peer, the messages/s graph filling as messages flow, drain.
// With SAVE_SCREENSHOT=1 it also writes docs/images/dashboard.png.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import WebSocket from 'ws';
import { launchBrowser, startServer, REPO } from '../lib/browser.js';
import { until } from '../lib/wait.js';

const TOKEN = 'e2e-admin-token-0123456789abcdef';

/** @type {Awaited<ReturnType<typeof startServer>>} */
let server;
/** @type {import('playwright-core').BrowserContext} */
let browser;
const consoleErrors = [];
const peers = [];

before(async () => {
  server = await startServer({ SWITCHBOARD_ADMIN__TOKEN: TOKEN });
  assert.ok(server.ready.admin, 'READY names the admin listener');
  browser = await launchBrowser();
});

after(async () => {
  for (const p of peers) p.ws.terminate();
  await browser?.close();
  await server?.stop();
});

/** A native signaling client: every frame it got, and a bounded wait for one. */
async function peer() {
  const ws = new WebSocket(`ws://${server.http}/ws`);
  const frames = [];
  ws.on('message', (data) => frames.push(JSON.parse(String(data))));
  const p = {
    ws,
    frames,
    /** The first frame matching `pred` (already received or to come). */
    async waitFor(pred, ms = 10_000) {
      await until(() => frames.some(pred), ms);
      return frames.find(pred);
    },
    send: (v) => ws.send(JSON.stringify(v)),
  };
  peers.push(p);
  p.id = (await p.waitFor((f) => f.type === 'welcome')).peer;
  return p;
}

/**
 * Runs in a page: two relay-only RTCPeerConnections joined by a data channel that sends
 * about 800 kbit/s, through switchboard's TURN (credentials from /api/ice-servers).
 */
async function startRelayedTraffic() {
  const { ice_servers: iceServers } = await (await fetch('/api/ice-servers')).json();
  const cfg = { iceServers, iceTransportPolicy: 'relay' };
  const a = new RTCPeerConnection(cfg);
  const b = new RTCPeerConnection(cfg);
  a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
  b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
  const dc = a.createDataChannel('load');
  await a.setLocalDescription(await a.createOffer());
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription);
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('the relayed data channel did not open in 15 s')), 15_000);
    dc.onopen = () => {
      clearTimeout(t);
      resolve();
    };
  });
  const chunk = new Uint8Array(1000);
  window.__relay = { a, b, timer: setInterval(() => dc.bufferedAmount < 64_000 && dc.send(chunk), 10) };
}

async function openDashboard() {
  const page = await browser.newPage();
  // The dashboard's own errors only (the relay page's missing favicon is not one).
  page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  await page.goto(`http://${server.ready.admin}/admin/`, { timeout: 15_000 });
  await page.waitForSelector('#login-form', { state: 'visible' });
  return page;
}

test('a wrong token is refused on the page, and no data shows', async () => {
  const page = await openDashboard();
  try {
    await page.fill('#token', 'not-the-token');
    await page.click('#login-submit');
    await page.waitForSelector('#login-error', { state: 'visible', timeout: 10_000 });
    assert.match(await page.textContent('#login-error'), /wrong token/i);
    assert.equal(await page.isVisible('#dash'), false);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('switchboard-admin-token')), null);
  } finally {
    await page.close();
  }
});

test('rooms and peers appear live; kick reaches the peer; messages/s fills; drain', async () => {
  // The first test's refused token logged its 401; this one must log nothing.
  consoleErrors.length = 0;
  const page = await openDashboard();
  page.on('dialog', (d) => d.accept());
  let chatter;
  try {
    await page.fill('#token', TOKEN);
    await page.click('#login-submit');
    await page.waitForSelector('#dash', { state: 'visible', timeout: 10_000 });
    await page.waitForSelector('#live[data-state="live"]', { timeout: 10_000 });
    // A marker that a reload would wipe: everything below must come without one.
    await page.evaluate(() => {
      window.__noReload = true;
    });
    assert.equal(await page.evaluate(() => sessionStorage.getItem('switchboard-admin-token')), TOKEN);

    const a = await peer();
    const b = await peer();
    a.send({ type: 'join', room: 'ops-room', meta: { name: 'Ann' } });
    await a.waitFor((f) => f.type === 'joined');
    b.send({ type: 'join', room: 'ops-room', meta: { name: 'Bob' } });
    await b.waitFor((f) => f.type === 'joined');

    await page.waitForSelector('#rooms tr[data-room="ops-room"][data-peers="2"]', { timeout: 10_000 });

    // Messages flow for a few seconds: the graph gets points above zero.
    for (let i = 0; i < 30; i++) {
      a.send({ type: 'message', room: 'ops-room', data: { n: i } });
      await new Promise((r) => setTimeout(r, 100));
    }
    await until(() => b.frames.filter((f) => f.type === 'message').length === 30, 10_000);
    await page.waitForFunction(() => Number(document.getElementById('g-messages').dataset.max) > 0, null, { timeout: 10_000 });
    assert.ok(Number(await page.getAttribute('#g-messages', 'data-points')) >= 2);

    // The room's detail lists both peers; kick one from the page.
    await page.click('#rooms tr[data-room="ops-room"]');
    await page.waitForSelector(`#peers tr[data-peer="${a.id}"]`, { timeout: 10_000 });
    await page.waitForSelector(`#peers tr[data-peer="${b.id}"]`, { timeout: 10_000 });

    // Two relay-only peer connections in a page of the public origin: two TURN allocations
    // (Chromium allocates one per TURN URL) with data flowing; the page shows live bitrates.
    // Chat goes on meanwhile, so that the graph and the tile show a rate.
    chatter = setInterval(() => a.send({ type: 'message', room: 'ops-room', data: 'tick' }), 150);
    const relay = await browser.newPage();
    await relay.goto(`http://${server.http}/healthz`, { timeout: 15_000 });
    await relay.evaluate(startRelayedTraffic);
    await page.waitForFunction(() => document.querySelectorAll('#allocations tr[data-allocation]').length >= 2, null, { timeout: 15_000 });
    await page.waitForFunction(
      () => [...document.querySelectorAll('#allocations td.rate-out')].some((td) => /[kM]bit\/s/.test(td.textContent)),
      null,
      { timeout: 15_000 },
    );
    if (process.env.SAVE_SCREENSHOT === '1') {
      await page.screenshot({ path: path.join(REPO, 'docs/images/dashboard.png'), fullPage: true });
    }
    clearInterval(chatter);
    await page.click(`#peers tr[data-peer="${b.id}"] button.kick`);
    const kicked = await b.waitFor((f) => f.type === 'error' && f.code === 'kicked');
    assert.equal(kicked.room, 'ops-room');
    await a.waitFor((f) => f.type === 'bye' && f.peer === b.id);

    // The page follows: one peer left, in the summary and in the detail.
    await page.waitForSelector('#rooms tr[data-room="ops-room"][data-peers="1"]', { timeout: 10_000 });
    await page.waitForSelector(`#peers tr[data-peer="${b.id}"]`, { state: 'detached', timeout: 10_000 });
    assert.ok(await page.isVisible(`#peers tr[data-peer="${a.id}"]`));

    // Revoke one allocation from the page: it goes from the list, the other stays.
    const [gone, ...kept] = await page.$$eval('#allocations tr[data-allocation]', (rows) => rows.map((r) => r.dataset.allocation));
    await page.click(`#allocations tr[data-allocation="${gone}"] button.revoke`);
    await page.waitForSelector(`#allocations tr[data-allocation="${gone}"]`, { state: 'detached', timeout: 10_000 });
    for (const id of kept) assert.ok(await page.isVisible(`#allocations tr[data-allocation="${id}"]`));
    await relay.close();

    // Drain, after a confirm (accepted above): the node says so.
    await page.click('#drain');
    await page.waitForSelector('#live[data-state="draining"]', { timeout: 10_000 });
    const ready = await fetch(`http://${server.http}/readyz`);
    assert.equal(ready.status, 503);

    assert.equal(await page.evaluate(() => window.__noReload), true, 'the page was never reloaded');
    assert.deepEqual(consoleErrors, []);
  } finally {
    clearInterval(chatter);
    await page.close();
  }
});
