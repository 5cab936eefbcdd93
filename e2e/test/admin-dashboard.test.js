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
  browser = await launchBrowser({ consoleErrors });
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

async function openDashboard() {
  const page = await browser.newPage();
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
    if (process.env.SAVE_SCREENSHOT === '1') {
      await page.screenshot({ path: path.join(REPO, 'docs/images/dashboard.png') });
    }
    await page.click(`#peers tr[data-peer="${b.id}"] button.kick`);
    const kicked = await b.waitFor((f) => f.type === 'error' && f.code === 'kicked');
    assert.equal(kicked.room, 'ops-room');
    await a.waitFor((f) => f.type === 'bye' && f.peer === b.id);

    // The page follows: one peer left, in the summary and in the detail.
    await page.waitForSelector('#rooms tr[data-room="ops-room"][data-peers="1"]', { timeout: 10_000 });
    await page.waitForSelector(`#peers tr[data-peer="${b.id}"]`, { state: 'detached', timeout: 10_000 });
    assert.ok(await page.isVisible(`#peers tr[data-peer="${a.id}"]`));

    // Drain, after a confirm (accepted above): the node says so.
    await page.click('#drain');
    await page.waitForSelector('#live[data-state="draining"]', { timeout: 10_000 });
    const ready = await fetch(`http://${server.http}/readyz`);
    assert.equal(ready.status, 503);

    assert.equal(await page.evaluate(() => window.__noReload), true, 'the page was never reloaded');
    assert.deepEqual(consoleErrors, []);
  } finally {
    await page.close();
  }
});
