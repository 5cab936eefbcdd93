// Issue #11 in the browser: the web client, unchanged, on a cluster of switchboard nodes
// sharing one redis-server (PROTOCOL.md §6). Two pages on two different nodes call each
// other; then, behind haproxy with deploy/haproxy.cfg, the node under a page is stopped
// (SIGTERM: clients closed with 1012) and later killed (SIGKILL), and each time the page
// resumes through haproxy on a live node while the call goes on: nobody sees `bye`.
//
// Each page has a browser (a cookie jar) of its own, as two people would. Every node lists
// every node's TURN service in `ice_servers` (turn.servers, one rest_secret), so that the
// media of a relay-only call has a path that outlives any one node.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser } from '../lib/browser.js';
import { waitConnected, assertFramesGrow, selectedPairs } from '../lib/page.js';
import { missingTools, startRedis, startNode, startHaproxy, waitBalanced, freeTcpUdpPort, metric } from '../lib/cluster.js';

// A string (the reason) or false: node's runner takes even `skip: null` as a skip.
const skipCluster = missingTools(['redis-server']);
const skipHaproxy = skipCluster || missingTools(['haproxy']);
if (skipCluster) console.log(`cluster browser tests skipped: ${skipCluster}`);
else if (skipHaproxy) console.log(`cluster browser tests behind haproxy skipped: ${skipHaproxy}`);

// Short enough that "nobody saw bye past node timeout + grace" fits the test's time.
const NODE_TIMEOUT_SECS = 2;
const GRACE_SECS = 6;
const SECRET = `e2e-cluster-${process.pid}-${Date.now()}`;

/** @type {Awaited<ReturnType<typeof startRedis>>} */
let redis;
/** haproxy server name (its cookie) -> the node serving at that address now. @type {Record<string, Awaited<ReturnType<typeof startNode>>>} */
const slots = {};
/** haproxy server name -> that address's TURN port (a restarted node keeps it). @type {Record<string, number>} */
const turnPorts = {};
/** Every node ever started, for `after` and for the logs of a failure. @type {Awaited<ReturnType<typeof startNode>>[]} */
const nodes = [];
/** @type {Awaited<ReturnType<typeof startHaproxy>> | null} */
let haproxy = null;
/** @type {import('playwright-core').BrowserContext[]} */
const browsers = [];
const consoleErrors = [];

/** The environment of the node in haproxy slot `slot` (n1 or n2). */
function nodeEnv(slot) {
  const other = slot === 'n1' ? 'n2' : 'n1';
  return {
    SWITCHBOARD_SESSION__RESUME_GRACE_SECS: String(GRACE_SECS),
    SWITCHBOARD_CLUSTER__NODE_TIMEOUT_SECS: String(NODE_TIMEOUT_SECS),
    SWITCHBOARD_TURN__REST_SECRET: SECRET,
    SWITCHBOARD_TURN__SERVERS: JSON.stringify([`turn:127.0.0.1:${turnPorts[other]}?transport=udp`]),
  };
}

/** Starts a node in `slot`, at that slot's address when it had one before. */
async function startSlot(slot, nodeId) {
  const prev = slots[slot];
  const node = await startNode({ redisUrl: redis.url, nodeId, httpPort: prev?.httpPort, turnPort: turnPorts[slot], env: nodeEnv(slot) });
  nodes.push(node);
  slots[slot] = node;
  return node;
}

before(async () => {
  if (skipCluster) return;
  redis = await startRedis();
  turnPorts.n1 = await freeTcpUdpPort();
  turnPorts.n2 = await freeTcpUdpPort();
  await startSlot('n1', 'n1');
  await startSlot('n2', 'n2');
  for (let i = 0; i < 2; i++) browsers.push(await launchBrowser({ consoleErrors }));
});

after(async () => {
  for (const b of browsers) await b.close();
  await haproxy?.stop();
  for (const n of nodes) await n.kill();
  await redis?.stop();
  if (consoleErrors.length) console.log(`# console errors in the cluster pages (not failures: a node going away logs some):\n# ${consoleErrors.join('\n# ')}`);
});

/** What a failure needs to be understood: every node's last log lines, haproxy's, the pages' records. */
async function diag(pages = []) {
  const out = [];
  for (const n of nodes) out.push(`--- node ${n.id} (${n.http}, ${n.proc.exitCode ?? n.proc.signalCode ?? 'running'}):\n${n.logs.slice(-12).join('\n')}`);
  if (haproxy) out.push(`--- haproxy:\n${haproxy.logs.slice(-12).join('\n')}`);
  for (const p of pages) {
    const rec = await p
      .evaluate(() => ({ url: location.href, state: window.__sb.client.state, phase: window.__sb.state.phase, log: window.__log, closes: window.__closes }))
      .catch((e) => String(e));
    out.push(`--- page: ${JSON.stringify(rec)}`);
  }
  return out.join('\n');
}

/** Runs `fn`; a failure carries diag(). */
async function step(what, pages, fn) {
  try {
    return await fn();
  } catch (err) {
    err.message = `${what}: ${err.message}\n${await diag(pages)}`;
    throw err;
  }
}

/**
 * Opens the app at `base` in `browser` as `name` for `room` (relay only), with a live
 * signaling socket. Records on the page every close code of its WebSockets (window.__closes)
 * and what its client saw (window.__log: bye frames, welcomes, resumes, states).
 */
async function openPage(browser, base, name, room) {
  const page = await browser.newPage();
  await page.addInitScript(() => {
    const Native = window.WebSocket;
    window.__closes = [];
    window.WebSocket = class extends Native {
      constructor(...args) {
        super(...args);
        this.addEventListener('close', (ev) => window.__closes.push(ev.code));
      }
    };
  });
  const q = new URLSearchParams({ room, name, user: `${name.toLowerCase()}-${Date.now()}`, relay: '1' });
  await page.goto(`http://${base}/?${q}`, { timeout: 15_000 });
  await page.waitForFunction(() => window.__sb?.state.media !== 'pending' && window.__sb.client.state === 'open', null, { timeout: 15_000 });
  await page.evaluate(() => {
    const c = window.__sb.client;
    window.__log = { byes: [], welcomes: 0, resumed: 0, states: [] };
    c.on('bye', (f) => window.__log.byes.push(f));
    c.on('welcome', () => (window.__log.welcomes += 1));
    c.on('resumed', () => (window.__log.resumed += 1));
    c.on('state', (s) => window.__log.states.push(s));
  });
  return page;
}

/** Presses Join and waits until the page is in the call. */
async function join(page) {
  await page.click('#join');
  await page.waitForFunction(() => window.__sb.state.phase === 'call', null, { timeout: 10_000 });
}

/** Waits (bounded) until each named node has exactly that many live connections. */
async function waitPlacement(want, ms = 10_000) {
  const end = Date.now() + ms;
  let got = {};
  while (Date.now() < end) {
    got = {};
    for (const [n, count] of want) got[n.id] = await metric(n.http, 'switchboard_sessions_connected');
    if (want.every(([n, count]) => got[n.id] === count)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`connections per node: wanted ${JSON.stringify(Object.fromEntries(want.map(([n, c]) => [n.id, c])))}, got ${JSON.stringify(got)}`);
}

/** The node (of `candidates`) holding the one live connection there is: where a page landed. */
async function nodeOf(candidates, ms = 10_000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    for (const n of candidates) if ((await metric(n.http, 'switchboard_sessions_connected')) === 1) return n;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no node of ${candidates.map((n) => n.id)} holds the page's connection`);
}

/** Who a page is to the server: its session and peer ids. */
const identity = (page) => page.evaluate(() => ({ session: window.__sb.client.session, peer: window.__sb.client.peer }));

/**
 * The call is whole on both pages: in the call, one connected peer connection each, the
 * other's tile still there, video frames growing, and not one `bye` or fresh `welcome`.
 */
async function assertCallGoesOn(a, b, ids, connectMs = 30_000) {
  await Promise.all([waitConnected(a, 1, connectMs), waitConnected(b, 1, connectMs)]);
  await Promise.all([assertFramesGrow(a, 15_000), assertFramesGrow(b, 15_000)]);
  for (const [page, other] of [
    [a, ids.b.peer],
    [b, ids.a.peer],
  ]) {
    const s = await page.evaluate(
      (other) => ({
        phase: window.__sb.state.phase,
        byes: window.__log.byes,
        welcomes: window.__log.welcomes,
        tile: !!document.getElementById(`tile-${other}`),
        pcs: Object.keys(window.__sb.pcs()),
      }),
      other,
    );
    assert.equal(s.phase, 'call');
    assert.deepEqual(s.byes, [], 'nobody saw bye');
    assert.equal(s.welcomes, 0, 'no fresh session (a resume_failed would bring a welcome)');
    assert.ok(s.tile, `the tile of ${other} is still there`);
    assert.deepEqual(s.pcs, [other]);
  }
}

/** A chat line typed on `from` shows up on `to`: signaling crosses after the move. */
async function chat(from, to, text) {
  if (!(await from.isVisible('#chat-input'))) await from.click('#btn-chat');
  await from.fill('#chat-input', text);
  await from.press('#chat-input', 'Enter');
  await to.waitForFunction((text) => window.__sb.state.chat.some((m) => m.text === text && !m.mine), text, { timeout: 10_000 });
}

test('two pages on two different nodes call each other (relay only), video flowing', { skip: skipCluster, timeout: 60_000 }, async () => {
  const [n1, n2] = [slots.n1, slots.n2];
  const a = await openPage(browsers[0], n1.http, 'Ann', 'cluster-a');
  const b = await openPage(browsers[1], n2.http, 'Bob', 'cluster-a');
  try {
    await step('one page per node', [a, b], () =>
      waitPlacement([
        [n1, 1],
        [n2, 1],
      ]),
    );
    const t0 = Date.now();
    await step('join', [a, b], async () => {
      await join(a);
      await join(b);
    });
    await step('media across nodes', [a, b], async () => {
      await Promise.all([waitConnected(a, 1), waitConnected(b, 1)]);
      await Promise.all([assertFramesGrow(a), assertFramesGrow(b)]);
    });
    console.log(`# two nodes: connected and video flowing in ${Date.now() - t0} ms`);
    for (const page of [a, b]) {
      for (const pair of Object.values(await selectedPairs(page))) {
        assert.ok(pair, 'a selected candidate pair');
        assert.equal(pair.localType, 'relay');
      }
    }
    // Names in join meta crossed nodes too.
    await a.waitForFunction(() => [...document.querySelectorAll('.tile .name')].some((n) => n.textContent === 'Bob'), null, { timeout: 5_000 });
    await b.waitForFunction(() => [...document.querySelectorAll('.tile .name')].some((n) => n.textContent.startsWith('Ann')), null, { timeout: 5_000 });
    await step('chat across nodes', [a, b], async () => {
      await chat(a, b, 'hello from node 1');
      await chat(b, a, 'hello from node 2');
    });
  } finally {
    await a.close();
    await b.close();
  }
});

/** @type {{a: import('playwright-core').Page, b: import('playwright-core').Page, ids: any, aSlot: string, bSlot: string} | null} */
let behind = null;

test('behind haproxy: the node under a page stops gracefully (1012), the page resumes on the other, the call goes on', { skip: skipHaproxy, timeout: 75_000 }, async () => {
  haproxy = await startHaproxy(slots.n1.http, slots.n2.http);
  for (const n of haproxy.notes) console.log(`# ${n}`);
  await step('haproxy balances over both nodes', [], () => waitBalanced(haproxy.front, ['n1', 'n2']));
  // Nothing of the first test is still connected.
  await waitPlacement([
    [slots.n1, 0],
    [slots.n2, 0],
  ]);
  const a = await openPage(browsers[0], haproxy.front, 'Ann', 'cluster-b');
  const aNode = await step('where page A landed', [a], () => nodeOf([slots.n1, slots.n2]));
  const aSlot = aNode === slots.n1 ? 'n1' : 'n2';
  const bSlot = aSlot === 'n1' ? 'n2' : 'n1';
  // B came to the service earlier and haproxy pinned it to the other node: its browser has
  // that cookie (this keeps the call across nodes whatever the round robin did).
  await browsers[1].addCookies([{ name: 'SBNODE', value: bSlot, url: `http://${haproxy.front}` }]);
  const b = await openPage(browsers[1], haproxy.front, 'Bob', 'cluster-b');
  behind = { a, b, ids: null, aSlot, bSlot };
  await step('one page per node', [a, b], () =>
    waitPlacement([
      [slots[aSlot], 1],
      [slots[bSlot], 1],
    ]),
  );
  await step('join and call', [a, b], async () => {
    await join(a);
    await join(b);
    await Promise.all([waitConnected(a, 1), waitConnected(b, 1)]);
    await Promise.all([assertFramesGrow(a), assertFramesGrow(b)]);
  });
  const ids = { a: await identity(a), b: await identity(b) };
  behind.ids = ids;

  const victim = slots[aSlot];
  const t0 = Date.now();
  const stopped = victim.term();
  await step('page A resumes through haproxy after SIGTERM of its node', [a, b], () =>
    a.waitForFunction(() => window.__log.resumed >= 1 && window.__sb.client.state === 'open', null, { timeout: 15_000 }),
  );
  const resumeMs = Date.now() - t0;
  await stopped;
  console.log(`# SIGTERM of ${victim.id}: page A resumed in ${resumeMs} ms; node exited with ${victim.proc.exitCode ?? victim.proc.signalCode}`);
  assert.equal(victim.proc.exitCode, 0, `a graceful stop exits 0 (got ${victim.proc.exitCode ?? victim.proc.signalCode})\n${victim.logs.slice(-10).join('\n')}`);
  const closes = await a.evaluate(() => window.__closes);
  assert.ok(closes.includes(1012), `the stopping node closed page A's socket with 1012 (service restart); close codes seen: ${JSON.stringify(closes)}`);
  assert.deepEqual(await identity(a), ids.a, 'the same session and peer: a resume, not a new session');
  await step('both pages now on the live node', [a, b], () => waitPlacement([[slots[bSlot], 2]]));
  await step('the call goes on', [a, b], () => assertCallGoesOn(a, b, ids));
  await step('signaling after the move', [a, b], async () => {
    await chat(a, b, 'after the rolling restart');
    await chat(b, a, 'still hear you');
  });
});

test('behind haproxy: the node under a page is killed (SIGKILL), the page resumes on a live node, the call goes on', { skip: skipHaproxy, timeout: 90_000 }, async () => {
  assert.ok(behind, 'the graceful-stop test set up the call');
  const { a, b, ids, aSlot, bSlot } = behind;
  // The stopped node's place is taken by a fresh one (a restarted service: new node id,
  // same address and TURN port), and haproxy sees it healthy.
  const fresh = await step('a fresh node in the stopped one’s place', [a, b], () => startSlot(aSlot, 'n3'));
  await step('haproxy balances over both again', [a, b], () => waitBalanced(haproxy.front, ['n1', 'n2']));
  // B moves to the fresh node: its cookie names it and its socket drops; the SDK resumes.
  await browsers[1].addCookies([{ name: 'SBNODE', value: aSlot, url: `http://${haproxy.front}` }]);
  const bResumed = await b.evaluate(() => window.__log.resumed);
  await b.evaluate(() => window.__sb.dropSocket(4000));
  await step('page B resumes on the fresh node', [a, b], async () => {
    await b.waitForFunction((n) => window.__log.resumed > n && window.__sb.client.state === 'open', bResumed, { timeout: 15_000 });
    await waitPlacement([
      [fresh, 1],
      [slots[bSlot], 1],
    ]);
  });
  await step('the call goes on across nodes', [a, b], () => assertCallGoesOn(a, b, ids));

  // Now the node under page A dies without a word.
  const victim = slots[bSlot];
  const aResumed = await a.evaluate(() => window.__log.resumed);
  const t0 = Date.now();
  await victim.kill();
  await step('page A resumes through haproxy after SIGKILL of its node', [a, b], () =>
    a.waitForFunction((n) => window.__log.resumed > n && window.__sb.client.state === 'open', aResumed, { timeout: 15_000 }),
  );
  console.log(`# SIGKILL of ${victim.id}: page A resumed in ${Date.now() - t0} ms`);
  assert.deepEqual(await identity(a), ids.a, 'the same session and peer after the kill');
  await step('both pages on the fresh node', [a, b], () => waitPlacement([[fresh, 2]]));
  // The dead node's TURN relays died with it: the media finds the live node's (an ICE
  // restart at worst, signaled through the fresh node).
  await step('the call goes on after the kill', [a, b], () => assertCallGoesOn(a, b, ids, 40_000));
  console.log(`# SIGKILL of ${victim.id}: video flowing again ${Date.now() - t0} ms after the kill`);
  // Past the dead node's timeout and the sessions' grace (PROTOCOL.md §6): still nobody
  // saw bye, because both sessions resumed. A bounded wait for an absence.
  const quietUntil = t0 + (NODE_TIMEOUT_SECS + GRACE_SECS + 2) * 1000;
  if (Date.now() < quietUntil) await new Promise((r) => setTimeout(r, quietUntil - Date.now()));
  await step('still nobody saw bye past node timeout + grace', [a, b], () => assertCallGoesOn(a, b, ids, 10_000));
  await step('signaling after the kill', [a, b], async () => {
    await chat(a, b, 'after the crash');
    await chat(b, a, 'loud and clear');
  });
  await a.close();
  await b.close();
});
