// An independent WebRTC stack in an SFU room (PROTOCOL.md §7): an aiortc peer (Python,
// e2e/aiortc/peer.py) publishes a video track and receives, alongside a chromium page of
// the web app. The page must decode the aiortc peer's video (the inbound stream whose
// stream id is its peer id, and the tile named after it), and the aiortc peer must receive
// frames of the track whose stream id is the page's peer id (its JSON lines say so).
// Skipped, with the reason, when python3 cannot import aiortc (test.sh installs it) or the
// binary makes no SFU rooms.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { launchBrowser, E2E_DIR } from '../lib/browser.js';
import { countPeerConnections, assertSfuFramesGrow } from '../lib/page.js';
import { startSfuBackend } from '../lib/sfu.js';

const PEER = path.join(E2E_DIR, 'aiortc', 'peer.py');
/** Why the aiortc peer cannot run here, or null. */
function aiortcMissing() {
  const r = spawnSync('python3', ['-c', 'import aiortc, av, websockets'], { encoding: 'utf8', timeout: 30_000 });
  if (r.error) return `python3 is not runnable: ${r.error.message}`;
  return r.status === 0 ? null : `python3 cannot import aiortc/av/websockets (pip install aiortc websockets): ${r.stderr.trim().split('\n').pop()}`;
}

describe('an aiortc peer in an SFU room with a chromium page', () => {
  /** @type {import('playwright-core').BrowserContext} */
  let browser;
  /** @type {Awaited<ReturnType<typeof startSfuBackend>>} */
  let server;
  /** @type {import('node:child_process').ChildProcess | undefined} */
  let child;
  const missing = aiortcMissing();
  const consoleErrors = [];
  const room = `sfu-aiortc-${Date.now()}`;
  /** The aiortc peer's JSON lines, and the latest report. */
  const lines = [];
  const stderr = [];
  let latest = null;

  before(async () => {
    if (missing) return;
    browser = await launchBrowser({ consoleErrors });
    await browser.addInitScript(countPeerConnections);
    server = await startSfuBackend('switchboard', browser);
  });
  after(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    }
    await browser?.close();
    await server?.stop();
  });

  /** Waits (bounded) until `pred(latest)` holds; throws with what the peer said. */
  async function untilPeer(pred, timeout, what) {
    const end = Date.now() + timeout;
    while (Date.now() < end) {
      if (latest && pred(latest)) return latest;
      if (child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`${what}: not within ${timeout} ms (exit ${child.exitCode}); last lines ${lines.slice(-3).join(' | ')}; stderr ${stderr.slice(-15).join('\n')}`);
  }

  test('the page decodes the aiortc peer, and the aiortc peer receives the page', async (t) => {
    if (missing) return t.skip(missing);
    if (server.skip) return t.skip(server.skip);
    const t0 = Date.now();
    const page = await browser.newPage();
    const q = new URLSearchParams({ room, name: 'Ann', user: `ann-${Date.now()}` });
    await page.goto(`http://${server.http}/?${q}`, { timeout: 15_000 });
    await page.waitForFunction(() => window.__sb?.state.media !== 'pending' && window.__sb.client.state === 'open', null, { timeout: 15_000 });
    await page.getByText('Group call (through the server)').click();
    await page.click('#join');
    await page.waitForFunction(() => window.__sb.state.phase === 'call', null, { timeout: 10_000 });
    const ann = await page.evaluate(() => window.__sb.client.peer);
    assert.equal(await page.evaluate(() => window.__sb.mesh.media), 'sfu');

    // Bounded on its own too (60 s); `after` ends it sooner.
    child = spawn('python3', [PEER, server.url, room, '60', 'aiortc'], { stdio: ['ignore', 'pipe', 'pipe'] });
    readline.createInterface({ input: child.stderr }).on('line', (l) => stderr.push(l));
    readline.createInterface({ input: child.stdout }).on('line', (l) => {
      lines.push(l);
      try {
        const r = JSON.parse(l);
        if (r.received) latest = r;
      } catch {
        // not a report: kept in `lines` for the error message
      }
    });
    const first = await untilPeer((r) => typeof r.peer === 'string', 20_000, 'the aiortc peer joined');
    const py = first.peer;
    assert.notEqual(py, ann);

    try {
      // The page: framesDecoded grows on the inbound video whose stream is the aiortc peer's.
      await assertSfuFramesGrow(page, [py], 30_000);
      await page.waitForFunction((id) => document.querySelector(`#tile-${CSS.escape(id)} video`)?.videoWidth === 320, py, { timeout: 10_000 });
      assert.equal(await page.textContent(`#tile-${py} .name`), 'aiortc');
      assert.deepEqual(await page.evaluate(() => window.__pcCount()), { made: 1, open: 1 });

      // The aiortc peer: frames from the stream whose id is the page's peer id, growing.
      const got = await untilPeer((r) => r.state === 'connected' && r.received[ann] > 10, 30_000, `the aiortc peer receives ${ann}`);
      const base = got.received[ann];
      await untilPeer((r) => r.received[ann] > base + 30, 15_000, `frames from ${ann} keep coming to the aiortc peer`);
      assert.deepEqual(Object.keys(latest.received), [ann], `only the page's stream: ${JSON.stringify(latest.received)}`);
      assert.deepEqual(lines.filter((l) => /"(error|server_error)"/.test(l)), []);
    } catch (err) {
      console.log(`# server log, last lines:\n${server.logs.slice(-40).join('\n')}`);
      throw err;
    }
    console.log(`# aiortc ${py} got ${JSON.stringify(latest.received)} from the page (${ann}); ${Date.now() - t0} ms`);
    assert.deepEqual(consoleErrors, []);
  });
});
