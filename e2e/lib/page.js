// Reading a page of the web app from a test: its peer connections, their selected
// candidate pairs and decoded video. Every wait is bounded.

/**
 * Waits until the page has `n` peer connections, all 'connected'.
 * @param {import('playwright-core').Page} page @param {number} n @param {number} [timeout]
 */
export async function waitConnected(page, n, timeout = 20_000) {
  await page.waitForFunction(
    (n) => {
      const pcs = Object.values(window.__sb.pcs());
      return pcs.length === n && pcs.every((pc) => pc.connectionState === 'connected');
    },
    n,
    { timeout },
  );
}

/** framesDecoded of every remote video, per peer, read straight from getStats. */
export async function framesDecoded(page) {
  return page.evaluate(async () => {
    const out = {};
    for (const [id, pc] of Object.entries(window.__sb.pcs())) {
      let frames = 0;
      (await pc.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') frames += r.framesDecoded ?? 0;
      });
      out[id] = frames;
    }
    return out;
  });
}

/**
 * Asserts that every remote video's framesDecoded grows by more than 10 within `timeout`.
 * Polled from node: playwright's waitForFunction takes the Promise of an async predicate
 * as truthy at once, so a wait on getStats inside the page would prove nothing.
 * @param {import('playwright-core').Page} page @param {number} [timeout]
 */
export async function assertFramesGrow(page, timeout = 10_000) {
  const before = await framesDecoded(page);
  let now = before;
  const end = Date.now() + timeout;
  while (Date.now() < end) {
    now = await framesDecoded(page);
    const ids = Object.keys(now);
    if (ids.length > 0 && ids.every((id) => now[id] > (before[id] ?? 0) + 10)) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`video frames did not grow within ${timeout} ms: before ${JSON.stringify(before)}, now ${JSON.stringify(now)}`);
}

/** The selected candidate pair's local and remote candidates, per peer. */
export async function selectedPairs(page) {
  return page.evaluate(async () => {
    const out = {};
    for (const [id, pc] of Object.entries(window.__sb.pcs())) {
      const stats = await pc.getStats();
      const byId = new Map();
      stats.forEach((r) => byId.set(r.id, r));
      let pair = null;
      stats.forEach((r) => {
        if (r.type === 'transport' && r.selectedCandidatePairId) pair = byId.get(r.selectedCandidatePairId);
      });
      const local = pair && byId.get(pair.localCandidateId);
      const remote = pair && byId.get(pair.remoteCandidateId);
      out[id] = local && {
        localType: local.candidateType,
        address: local.address,
        port: local.port,
        url: local.url ?? null,
        remoteType: remote?.candidateType,
        remoteAddress: remote?.address,
      };
    }
    return out;
  });
}

// ---- SFU rooms (PROTOCOL.md §7): one connection, with the server ------------------------

/**
 * An init script (`context.addInitScript(countPeerConnections)`) that counts the page's
 * RTCPeerConnections: `window.__pcCount()` is {made, open} (open: not closed).
 */
export function countPeerConnections() {
  const Native = window.RTCPeerConnection;
  const made = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      made.push(this);
    }
  };
  window.__pcCount = () => ({ made: made.length, open: made.filter((pc) => pc.connectionState !== 'closed').length });
}

/**
 * The inbound video of an SFU page's one connection, per received track: the publisher
 * (the peer whose stream carries it), framesDecoded and frame size.
 * @param {import('playwright-core').Page} page
 * @returns {Promise<{peer: string|null, track: string, framesDecoded: number, frameWidth: number|null, bytes: number}[]>}
 */
export async function sfuInboundVideo(page) {
  return page.evaluate(async () => {
    const m = window.__sb.mesh;
    const pc = m?.link?.pc;
    if (!pc) return [];
    const owner = new Map();
    for (const peer of m.peers.values()) for (const s of peer.streams.values()) for (const t of s.getTracks()) owner.set(t.id, peer.id);
    const out = [];
    (await pc.getStats()).forEach((r) => {
      if (r.type !== 'inbound-rtp' || r.kind !== 'video') return;
      out.push({ peer: owner.get(r.trackIdentifier) ?? null, track: r.trackIdentifier, framesDecoded: r.framesDecoded ?? 0, frameWidth: r.frameWidth ?? null, bytes: r.bytesReceived ?? 0 });
    });
    return out;
  });
}

/**
 * Asserts that the page decodes video from exactly the peers `from` (ids), each growing by
 * more than 10 frames within `timeout`. Polled from node, like assertFramesGrow.
 * @param {import('playwright-core').Page} page @param {string[]} from @param {number} [timeout]
 */
export async function assertSfuFramesGrow(page, from, timeout = 15_000) {
  const want = [...from].sort();
  const frames = (list) => Object.fromEntries(want.map((p) => [p, list.filter((i) => i.peer === p).reduce((n, i) => n + i.framesDecoded, 0)]));
  let before = null;
  let now = [];
  const end = Date.now() + timeout;
  while (Date.now() < end) {
    now = (await sfuInboundVideo(page)).filter((i) => i.peer);
    const peers = [...new Set(now.map((i) => i.peer))].sort();
    const live = JSON.stringify(peers) === JSON.stringify(want);
    if (live && !before) before = frames(now);
    if (live && before) {
      const f = frames(now);
      if (want.every((p) => f[p] > before[p] + 10)) return;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  const names = await page.evaluate(() => Object.fromEntries(Object.entries(window.__sb.state.peers).map(([id, p]) => [id, p.name])));
  throw new Error(`video from ${want.map((p) => `${names[p] ?? '?'} (${p})`).join(', ')} did not grow within ${timeout} ms: first ${JSON.stringify(before)}, now ${JSON.stringify(now)}`);
}

/**
 * The outbound RTP of an SFU page's one connection: one entry per sent stream (a
 * simulcast layer counts once, whoever receives it).
 * @param {import('playwright-core').Page} page
 * @returns {Promise<{kind: string, rid: string|null, bytes: number, frameWidth: number|null, active: boolean}[]>}
 */
export async function sfuOutbound(page) {
  return page.evaluate(async () => {
    const pc = window.__sb.mesh?.link?.pc;
    if (!pc) return [];
    const out = [];
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'outbound-rtp') out.push({ kind: r.kind, rid: r.rid ?? null, bytes: r.bytesSent ?? 0, frameWidth: r.frameWidth ?? null, active: r.active ?? true });
    });
    return out;
  });
}
