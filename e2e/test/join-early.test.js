// Issue #16: Join pressed before the camera (or its permission prompt) has answered. The
// person must not join invisible: once the camera comes, the others see it. One page per
// browser, as it was seen.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, startServer } from '../lib/browser.js';
import { waitConnected, assertFramesGrow } from '../lib/page.js';

/** @type {Awaited<ReturnType<typeof startServer>>} */
let server;
/** @type {import('playwright-core').BrowserContext[]} */
const browsers = [];
const consoleErrors = [];

before(async () => {
  server = await startServer();
});

after(async () => {
  for (const b of browsers) await b.close();
  await server?.stop();
});

/** A page of its own browser, at the app, with a live signaling socket. */
async function open(name, initScript) {
  const browser = await launchBrowser({ consoleErrors });
  browsers.push(browser);
  const page = await browser.newPage();
  if (initScript) await page.addInitScript(initScript);
  const q = new URLSearchParams({ room: 'early', name, user: `${name.toLowerCase()}-${Date.now()}`, relay: '1' });
  await page.goto(`http://${server.http}/?${q}`, { timeout: 15_000 });
  await page.waitForFunction(() => window.__sb?.client.state === 'open', null, { timeout: 15_000 });
  return page;
}

test('Join pressed while the camera is still pending: the others see the video once it comes', async () => {
  const ann = await open('Ann');
  await ann.waitForFunction(() => window.__sb.state.media === 'ok', null, { timeout: 15_000 });
  await ann.click('#join');
  await ann.waitForFunction(() => window.__sb.state.phase === 'call', null, { timeout: 10_000 });

  // Bob's camera answers only when the test says so: a permission prompt still open.
  const bob = await open('Bob', () => {
    const real = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
    let release;
    const gate = new Promise((r) => (release = r));
    window.__releaseCamera = release;
    navigator.mediaDevices.getUserMedia = async (c) => {
      await gate;
      return real(c);
    };
  });
  assert.equal(await bob.evaluate(() => window.__sb.state.media), 'pending');
  await bob.click('#join');
  await bob.waitForFunction(() => window.__sb.state.phase === 'call', null, { timeout: 10_000 });
  await Promise.all([waitConnected(ann, 1), waitConnected(bob, 1)]);
  assert.equal(await bob.evaluate(() => window.__sb.state.media), 'pending', 'joined before the camera answered');

  await bob.evaluate(() => window.__releaseCamera());
  await bob.waitForFunction(() => window.__sb.state.media === 'ok', null, { timeout: 10_000 });
  // Ann decodes Bob's camera (and Bob still decodes Ann's); renegotiating takes a moment.
  await Promise.all([assertFramesGrow(ann, 20_000), assertFramesGrow(bob)]);
  // Bob's own tile shows his camera too.
  assert.equal(await bob.evaluate(() => document.querySelector('#tile-local video').srcObject?.getVideoTracks().length), 1);
});

test('no console errors in either page', () => {
  assert.deepEqual(consoleErrors, []);
});
