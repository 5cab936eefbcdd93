// SFU rooms across the symmetric-NAT lab of nat.test.js (lib/netns.js): a publisher
// behind one NAT, a relay-only receiver behind the other, switchboard (signaling, TURN,
// SFU) on the lab's internet. The receiver reaches the SFU through switchboard's TURN; and
// with its downlink capped (tc tbf on the internet's link toward its NAT) it gets a lower
// simulcast layer, and the full one again once the cap is lifted: the server's bandwidth
// estimate of a real, narrow path, not a setting. Needs root; skipped with the reason
// otherwise, and when the binary makes no SFU rooms.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, startServer } from '../lib/browser.js';
import { assertSfuFramesGrow, sfuInboundVideo, sfuOutbound, selectedPairs } from '../lib/page.js';
import { buildNatLab, unsupported, inNs } from '../lib/netns.js';
import { startForwarder } from '../lib/forward.js';

// A string (the reason) or false: node's runner takes even `skip: null` as a skip.
const skip = unsupported() ?? false;
if (skip) console.log(`SFU NAT/simulcast browser test skipped: ${skip}`);

/** @type {ReturnType<typeof buildNatLab>} */
let lab;
/** @type {Awaited<ReturnType<typeof startServer>>} */
let server;
/** @type {import('playwright-core').BrowserContext[]} */
const browsers = [];
/** @type {Awaited<ReturnType<typeof startForwarder>>[]} */
const forwarders = [];
const consoleErrors = [];
/** @type {Record<string, {page: import('playwright-core').Page, id: string}>} */
const people = {};
/** Why the SFU tests cannot run against this binary (it makes no SFU rooms), if so. */
let noSfu = null;
const room = `sfu-nat-${Date.now()}`;

before(async () => {
  if (skip) return;
  lab = buildNatLab();
  server = await startServer(
    {
      // As in nat.test.js: the NATs' public side is the lab's 198.18.0.0/16.
      SWITCHBOARD_TURN__ALLOWED_PEER_RANGES: '["198.18.0.0/16"]',
      SWITCHBOARD_TURN__PUBLIC_HOST: lab.serverIp,
      // The media socket listens on lab.serverIp (startServer's host): its candidate.
    },
    { netns: lab.ns.inet, host: lab.serverIp },
  );
  for (const netns of [lab.ns.hostA, lab.ns.hostB]) {
    forwarders.push(await startForwarder(netns, server.http));
    browsers.push(await launchBrowser({ consoleErrors, netns }));
  }
});

after(async () => {
  for (const b of browsers) await b.close();
  for (const f of forwarders) await f.stop();
  await server?.stop();
  lab?.cleanup();
});

/** Opens the app behind NAT `i` and joins the SFU room. */
async function join(i, name, opts = {}) {
  const page = await browsers[i].newPage();
  const q = new URLSearchParams({ room, name, user: `${name.toLowerCase()}-${Date.now()}`, media: 'sfu' });
  if (opts.relay) q.set('relay', '1');
  await page.goto(`http://127.0.0.1:${forwarders[i].port}/?${q}`, { timeout: 20_000 });
  await page.waitForFunction(() => window.__sb?.state.media !== 'pending' && window.__sb.client.state === 'open', null, { timeout: 20_000 });
  await page.click('#join');
  await page.waitForFunction(() => window.__sb.state.phase === 'call', null, { timeout: 15_000 });
  const media = await page.evaluate(() => window.__sb.mesh.media);
  if (media !== 'sfu') noSfu = `this switchboard makes no SFU rooms (joined as ${media})`;
  people[name] = { page, id: await page.evaluate(() => window.__sb.client.peer) };
  return people[name];
}

/** The internet's link toward NAT B: what the server sends to the receiver goes out on it. */
const capB = (kbit) => inNs(lab.ns.inet, 'tc', 'qdisc', 'replace', 'dev', 'to-b', 'root', 'tbf', 'rate', `${kbit}kbit`, 'burst', '16kb', 'latency', '300ms');
const uncapB = () => inNs(lab.ns.inet, 'tc', 'qdisc', 'del', 'dev', 'to-b', 'root');

test('behind symmetric NATs: a relay-only page reaches the SFU through TURN, both decode', { skip }, async (t) => {
  await join(0, 'Pub');
  if (noSfu) return t.skip(noSfu);
  await join(1, 'Rx', { relay: true });
  await assertSfuFramesGrow(people.Rx.page, [people.Pub.id], 40_000);
  await assertSfuFramesGrow(people.Pub.page, [people.Rx.id], 40_000);
  const pairs = await selectedPairs(people.Rx.page);
  assert.equal(pairs.server?.localType, 'relay', JSON.stringify(pairs));
  assert.equal(pairs.server?.remoteAddress, lab.serverIp);
});

test('simulcast: a capped downlink gets a lower layer, the full one again when lifted', { skip }, async (t) => {
  if (noSfu || !people.Rx) return t.skip(noSfu ?? 'no call from the test before');
  const pub = people.Pub;
  const rx = people.Rx.page;
  const pubFull = async () => (await sfuOutbound(pub.page)).find((o) => o.kind === 'video' && o.rid === 'f')?.frameWidth ?? 0;
  const rxGets = async () => Math.max(0, ...(await sfuInboundVideo(rx)).filter((i) => i.peer === pub.id).map((i) => i.frameWidth ?? 0));
  const waitFor = async (what, ms, fn) => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (await fn()) return;
      await new Promise((r) => setTimeout(r, 500));
    }
    throw new Error(`${what} within ${ms} ms: the full layer is ${await pubFull()} wide, the receiver decodes ${await rxGets()}`);
  };
  const full = async () => {
    const f = await pubFull();
    return f > 0 && (await rxGets()) >= f * 0.9;
  };
  await waitFor('the receiver gets the full layer', 60_000, full);
  const fullWidth = await pubFull();
  try {
    capB(300);
    await waitFor('capped at 300 kbit/s, the receiver drops to a lower layer', 45_000, async () => {
      const w = await rxGets();
      return w > 0 && w <= fullWidth * 0.6;
    });
  } finally {
    uncapB();
  }
  const low = await rxGets();
  await waitFor('uncapped, the receiver gets the full layer again', 90_000, full);
  // The layer the stats panel names follows.
  await rx.evaluate(() => window.__sb.collectStats());
  const layer = await rx.evaluate((id) => window.__sb.stats.server.inbound.find((i) => i.peer === id && i.kind === 'video')?.layer, pub.id);
  assert.equal(layer, 'f');
  console.log(`# simulcast behind the cap: full ${fullWidth} wide, capped ${low}, then ${await rxGets()}`);
});

test('no errors in the pages', { skip }, (t) => {
  if (noSfu) return t.skip(noSfu);
  assert.deepEqual(consoleErrors, []);
});
