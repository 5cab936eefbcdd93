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
