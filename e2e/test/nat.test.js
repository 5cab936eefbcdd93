// Two chromium peers, each behind its own symmetric NAT (iptables MASQUERADE
// --random-fully, in network namespaces this test makes), with switchboard (signaling and
// TURN) on the "internet" between them. With switchboard's TURN they connect, and every
// path that works goes through a relay; without TURN (STUN still there) they never
// connect, while the same lab with the NATs turned off carries a direct call. Needs root;
// skipped with the reason otherwise.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, startServer } from '../lib/browser.js';
import { waitConnected, assertFramesGrow, selectedPairs } from '../lib/page.js';
import { buildNatLab, unsupported } from '../lib/netns.js';
import { startForwarder } from '../lib/forward.js';

// A string (the reason) or false: node's runner takes even `skip: null` as a skip.
const skip = unsupported() ?? false;
if (skip) console.log(`symmetric-NAT browser test skipped: ${skip}`);

/** @type {ReturnType<typeof buildNatLab>} */
let lab;
/** @type {Awaited<ReturnType<typeof startServer>>} */
let server;
/** @type {import('playwright-core').BrowserContext[]} */
const browsers = [];
/** Per browser: the port on its own 127.0.0.1 that leads to switchboard's HTTP. */
/** @type {Awaited<ReturnType<typeof startForwarder>>[]} */
const forwarders = [];
const consoleErrors = [];

before(async () => {
  if (skip) return;
  lab = buildNatLab();
  server = await startServer(
    {
      // Peers as TURN sees them are the NATs' public addresses (and relays), all in the
      // lab's 198.18.0.0/16; the built-in policy refuses that range, as it should on the
      // real internet. The hosts' 10.203.x addresses stay refused.
      SWITCHBOARD_TURN__ALLOWED_PEER_RANGES: '["198.18.0.0/16"]',
      SWITCHBOARD_TURN__PUBLIC_HOST: lab.serverIp,
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

/** Removes turn:/turns: URLs from every RTCPeerConnection's ICE servers: STUN stays. */
function stripTurn() {
  const Real = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Real {
    constructor(config = {}) {
      const iceServers = (config.iceServers ?? [])
        .map((s) => ({ ...s, urls: [].concat(s.urls).filter((u) => !/^turns?:/i.test(u)) }))
        .filter((s) => s.urls.length > 0);
      super({ ...config, iceServers });
    }
  };
}

/**
 * Opens the app in browser `i` (its own NAT), joins `room` with ICE policy 'all', and
 * records every connection state the page's peers go through in window.__states.
 */
async function openAndJoin(i, room, name, initScript) {
  const page = await browsers[i].newPage();
  if (initScript) await page.addInitScript(initScript);
  const q = new URLSearchParams({ room, name, user: `${name.toLowerCase()}-${Date.now()}` });
  // The page is at 127.0.0.1 of the browser's own namespace (see lib/forward.js); the
  // ICE servers in `welcome` name switchboard's address on the lab's internet.
  await page.goto(`http://127.0.0.1:${forwarders[i].port}/?${q}`, { timeout: 20_000 });
  await page.waitForFunction(() => window.__sb?.state.media !== 'pending' && window.__sb.client.state === 'open', null, { timeout: 20_000 });
  assert.equal(await page.evaluate(() => window.__sb.state.relayOnly), false);
  await page.click('#join');
  await page.waitForFunction(() => window.__sb.state.phase === 'call', null, { timeout: 15_000 });
  await page.evaluate(() => {
    window.__states = [];
    window.__sb.mesh.on('peer_state', ({ state }) => window.__states.push(state));
  });
  return page;
}

/** Every candidate pair and local candidate the page's connections know of. */
async function iceReport(page) {
  return page.evaluate(async () => {
    const pairs = [];
    const localTypes = new Set();
    const remoteTypes = new Set();
    for (const pc of Object.values(window.__sb.pcs())) {
      const stats = await pc.getStats();
      const byId = new Map();
      stats.forEach((r) => byId.set(r.id, r));
      stats.forEach((r) => {
        if (r.type === 'local-candidate') localTypes.add(r.candidateType);
        if (r.type === 'remote-candidate') remoteTypes.add(r.candidateType);
        if (r.type !== 'candidate-pair') return;
        const l = byId.get(r.localCandidateId);
        const rm = byId.get(r.remoteCandidateId);
        pairs.push({
          state: r.state,
          requestsSent: r.requestsSent ?? 0,
          responsesReceived: r.responsesReceived ?? 0,
          local: l && `${l.candidateType} ${l.address}:${l.port}`,
          remote: rm && `${rm.candidateType} ${rm.address}:${rm.port}`,
        });
      });
    }
    return { pairs, localTypes: [...localTypes].sort(), remoteTypes: [...remoteTypes].sort(), states: window.__states };
  });
}

test('symmetric NAT on both sides: connected through switchboard TURN, and only through it', { skip, timeout: 120_000 }, async () => {
  const ann = await openAndJoin(0, 'nat', 'Ann');
  const bob = await openAndJoin(1, 'nat', 'Bob');
  try {
    await Promise.all([waitConnected(ann, 1, 40_000), waitConnected(bob, 1, 40_000)]);
    await Promise.all([assertFramesGrow(ann, 20_000), assertFramesGrow(bob, 20_000)]);
    for (const page of [ann, bob]) {
      const selected = Object.values(await selectedPairs(page));
      assert.equal(selected.length, 1);
      const pair = selected[0];
      assert.ok(pair && (pair.localType === 'relay' || pair.remoteType === 'relay'), `selected pair uses a relay: ${JSON.stringify(pair)}`);
      const report = await iceReport(page);
      // STUN worked through the NAT, so a direct path was on the table...
      assert.ok(report.localTypes.includes('srflx'), `server-reflexive candidates gathered: ${report.localTypes}`);
      // ...and yet every pair that succeeded has a relay at one end.
      const succeeded = report.pairs.filter((p) => p.state === 'succeeded');
      assert.ok(succeeded.length > 0);
      for (const p of succeeded) assert.ok(/^relay /.test(p.local) || /^relay /.test(p.remote), `a pair without a relay succeeded: ${JSON.stringify(p)}`);
      console.log(`${await page.evaluate(() => window.__sb.state.name)} selected ${pair.localType} ${pair.address}:${pair.port} -> ${pair.remoteType} ${pair.remoteAddress || '(address hidden by chromium)'}`);
    }
  } finally {
    await ann.close();
    await bob.close();
  }
});

test('negative control: the same NATs with STUN but no TURN never connect', { skip, timeout: 120_000 }, async () => {
  const ann = await openAndJoin(0, 'nat-control', 'Ann', stripTurn);
  const bob = await openAndJoin(1, 'nat-control', 'Bob', stripTurn);
  try {
    for (const page of [ann, bob]) {
      const servers = await page.evaluate(() => Object.values(window.__sb.pcs()).map((pc) => pc.getConfiguration().iceServers.flatMap((s) => [].concat(s.urls))));
      assert.ok(servers.flat().length > 0 && servers.flat().every((u) => u.startsWith('stun:')), `STUN only: ${servers}`);
    }
    // ICE runs its checks to the end: both sides must give up ('failed'), never connect.
    // Stats are merged over the whole wait: the SDK restarts ICE on 'failed', and a
    // restart replaces the candidates and pairs the failure is about.
    const seen = [0, 1].map(() => ({ localTypes: new Set(), remoteTypes: new Set(), checkedSrflx: false, succeeded: [], states: [] }));
    const end = Date.now() + 60_000;
    while (Date.now() < end) {
      const reports = await Promise.all([ann, bob].map(iceReport));
      reports.forEach((r, i) => {
        const s = seen[i];
        r.localTypes.forEach((t) => s.localTypes.add(t));
        r.remoteTypes.forEach((t) => s.remoteTypes.add(t));
        s.checkedSrflx ||= r.pairs.some((p) => /^srflx /.test(p.remote) && p.requestsSent > 0);
        s.succeeded.push(...r.pairs.filter((p) => p.state === 'succeeded'));
        s.states = r.states;
        assert.ok(!r.states.includes('connected'), `connected without TURN: ${JSON.stringify(r)}`);
      });
      if (seen.every((s) => s.states.includes('failed'))) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    for (const s of seen) {
      const what = JSON.stringify({ ...s, localTypes: [...s.localTypes], remoteTypes: [...s.remoteTypes] });
      assert.ok(s.states.includes('failed'), `ICE did not fail within 60 s: ${what}`);
      // The control is only worth something if a direct path was really tried: each side
      // learnt its public (srflx) address and the other's, and sent checks to the other's
      // NAT that went unanswered.
      assert.ok(s.localTypes.has('srflx') && s.remoteTypes.has('srflx'), `srflx both ways: ${what}`);
      assert.ok(s.checkedSrflx, `checks sent to the other NAT: ${what}`);
      assert.deepEqual(s.succeeded, [], 'no candidate pair succeeded');
    }
  } finally {
    await ann.close();
    await bob.close();
  }
});

test('the lab carries a direct call once the NATs are off, so the failure above is theirs', { skip, timeout: 120_000 }, async () => {
  lab.disableNat();
  const ann = await openAndJoin(0, 'no-nat', 'Ann', stripTurn);
  const bob = await openAndJoin(1, 'no-nat', 'Bob', stripTurn);
  try {
    await Promise.all([waitConnected(ann, 1, 40_000), waitConnected(bob, 1, 40_000)]);
    await Promise.all([assertFramesGrow(ann, 20_000), assertFramesGrow(bob, 20_000)]);
    for (const page of [ann, bob]) {
      const [pair] = Object.values(await selectedPairs(page));
      assert.ok(pair && pair.localType !== 'relay' && pair.remoteType !== 'relay', `a direct pair: ${JSON.stringify(pair)}`);
    }
  } finally {
    await ann.close();
    await bob.close();
  }
});

test('no console errors in the NAT pages', { skip }, () => {
  assert.deepEqual(consoleErrors, []);
});
