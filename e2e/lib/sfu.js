// The two backends the SFU tests run against: switchboard itself, and the stand-in SFU
// (lib/fake-sfu.js behind lib/fake-server.js) that checks the page and the SDK alone.
import WebSocket from 'ws';
import { connect } from '../../web/sdk/switchboard.js';
import { startServer } from './browser.js';
import { startFakeServer } from './fake-server.js';
import { startFakeSfu } from './fake-sfu.js';
import { waitFor } from './wait.js';

/**
 * Whether the server at `wsUrl` makes SFU rooms: a join asking for one must come back
 * with `"media":"sfu"`. Returns null when it does, else the reason it does not.
 * @param {string} wsUrl
 */
export async function sfuUnsupported(wsUrl) {
  const c = connect(wsUrl, { WebSocket, backoffMinMs: 50 });
  try {
    await waitFor(c, 'welcome', undefined, 10_000);
    const room = `sfu-probe-${Date.now()}`;
    const joined = await c.join(room, {}, { media: 'sfu' });
    await c.leave(room).catch(() => {});
    return joined.media === 'sfu' ? null : `this switchboard makes no SFU rooms (joined.media = ${JSON.stringify(joined.media)})`;
  } catch (err) {
    return `the SFU probe failed: ${err?.message ?? err}`;
  } finally {
    c.close();
  }
}

/**
 * Starts a backend: 'switchboard' (the binary; `skip` says why when it has no SFU) or
 * 'stand-in' (the fake server with the stand-in SFU in a page of `browser`).
 * @param {'switchboard'|'stand-in'} kind @param {import('playwright-core').BrowserContext} browser
 * @param {Record<string, string>} [env] for switchboard
 * @returns {Promise<{http: string, url: string, stop: () => Promise<void>, skip: string|null, logs: string[]}>}
 */
export async function startSfuBackend(kind, browser, env = {}) {
  if (kind === 'switchboard') {
    const server = await startServer(env);
    const url = `ws://${server.http}/ws`;
    return { http: server.http, url, stop: server.stop, skip: await sfuUnsupported(url), logs: server.logs };
  }
  const sfu = await startFakeSfu(browser);
  const server = await startFakeServer({ sfu });
  sfu.attach(server);
  return {
    http: server.http,
    url: server.url,
    skip: null,
    logs: [],
    stop: async () => {
      await server.close();
      await sfu.page.close().catch(() => {});
    },
  };
}
