// CORS (PROTOCOL.md §5) as a browser enforces it: a page served from another origin (a
// second HTTP server on another loopback port) fetches /api/ice-servers with an
// Authorization header (so Chromium sends a preflight) and import()s the SDK from the
// switchboard server. An origin in auth.allowed_origins succeeds; another one fails.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { launchBrowser, startServer } from '../lib/browser.js';

/** @type {Awaited<ReturnType<typeof startServer>>} */
let server;
/** @type {import('playwright-core').BrowserContext} */
let browser;
/** @type {http.Server[]} */
const pages = [];

/** A one-page HTTP server on a free loopback port: its origin is another than switchboard's. */
async function pageServer() {
  const srv = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>another origin</title><p>cors test page</p>');
  });
  await new Promise((resolve, reject) => srv.once('error', reject).listen(0, '127.0.0.1', resolve));
  pages.push(srv);
  const { port } = /** @type {import('node:net').AddressInfo} */ (srv.address());
  return `http://127.0.0.1:${port}`;
}

let allowed;
let denied;

before(async () => {
  allowed = await pageServer();
  denied = await pageServer();
  server = await startServer({ SWITCHBOARD_AUTH__ALLOWED_ORIGINS: JSON.stringify([allowed]) });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  for (const srv of pages) await new Promise((r) => srv.close(r));
});

/** Opens `origin`'s page and, from it, uses the switchboard server; reports what worked. */
async function useFrom(origin) {
  const page = await browser.newPage();
  try {
    await page.goto(`${origin}/`, { timeout: 15_000 });
    assert.equal(await page.evaluate(() => location.origin), origin);
    return await page.evaluate(async (base) => {
      const out = { fetch: null, ice: null, sdk: null, error: [] };
      try {
        const r = await fetch(`${base}/api/ice-servers`, { headers: { Authorization: 'Bearer not-checked' } });
        out.fetch = r.status;
        out.ice = (await r.json()).ice_servers.length;
      } catch (e) {
        out.error.push(`fetch: ${e}`);
      }
      try {
        const sdk = await import(`${base}/sdk/switchboard.js`);
        out.sdk = typeof sdk.connect;
      } catch (e) {
        out.error.push(`import: ${e}`);
      }
      return out;
    }, `http://${server.http}`);
  } finally {
    await page.close();
  }
}

test('a page on an allowed origin fetches /api/ice-servers and imports the SDK', async () => {
  const got = await useFrom(allowed);
  assert.deepEqual(got.error, []);
  assert.equal(got.fetch, 200);
  assert.ok(got.ice > 0, JSON.stringify(got));
  assert.equal(got.sdk, 'function');
});

test('a page on another origin can do neither', async () => {
  const got = await useFrom(denied);
  assert.equal(got.fetch, null, JSON.stringify(got));
  assert.equal(got.sdk, null, JSON.stringify(got));
  assert.equal(got.error.length, 2, JSON.stringify(got));
});
