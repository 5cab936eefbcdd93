// Bounded waits for node-side tests: never sleep-then-hope.

/** Resolves with the first `type` event of an SDK emitter matching `pred`; rejects after `ms`. */
export function waitFor(emitter, type, pred = () => true, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for ${type}`));
    }, ms);
    const off = emitter.on(type, (ev) => {
      if (!pred(ev)) return;
      clearTimeout(timer);
      off();
      resolve(ev);
    });
  });
}

/** Polls `fn` every 20 ms until it is truthy; rejects after `ms`. */
export async function until(fn, ms = 5000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('condition not met in time');
}
