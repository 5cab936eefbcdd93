// Launches Debian's chromium (never a downloaded browser) with the project's fixed flags
// and a fresh profile per browser, and starts the real switchboard binary.
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

export const E2E_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO = path.resolve(E2E_DIR, '..');

const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-gpu',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  // Nothing but loopback resolves: a test can never reach out by name.
  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost',
];

/**
 * One chromium with its own fresh profile. Returns the persistent context; close() also
 * removes the profile. With `netns`, chromium runs inside that network namespace: a
 * wrapper enters it (`ip netns exec`) and execs chromium, and playwright still drives it
 * over the inherited pipe, so no debugging port has to cross namespaces.
 * @param {{consoleErrors?: string[], netns?: string}} [opts]
 */
export async function launchBrowser(opts = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-e2e-'));
  const chromiumBin = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
  let executablePath = chromiumBin;
  if (opts.netns) {
    // Outside the profile: chromium must not find it there, and close() removes both.
    executablePath = `${dir}.sh`;
    fs.writeFileSync(executablePath, `#!/bin/sh\nexec ip netns exec '${opts.netns}' '${chromiumBin}' "$@"\n`, { mode: 0o755 });
  }
  const context = await chromium.launchPersistentContext(dir, {
    executablePath,
    // Our flags exactly: playwright's defaults would add their own headless mode.
    ignoreDefaultArgs: true,
    args: [...CHROMIUM_ARGS, '--remote-debugging-pipe', `--user-data-dir=${dir}`, 'about:blank'],
    viewport: { width: 1280, height: 720 },
    timeout: 30_000,
  });
  const close = context.close.bind(context);
  context.close = async () => {
    await close().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
    if (opts.netns) fs.rmSync(`${dir}.sh`, { force: true });
  };
  if (opts.consoleErrors) {
    const errs = opts.consoleErrors;
    context.on('console', (m) => m.type() === 'error' && errs.push(m.text()));
    context.on('weberror', (e) => errs.push(String(e.error())));
  }
  return context;
}

/**
 * Starts the switchboard binary on ephemeral loopback ports and waits for its READY line.
 * With `netns`, it runs inside that network namespace, listening on `host`.
 * @param {Record<string, string>} [env] extra environment
 * @param {{netns?: string, host?: string}} [opts]
 * @returns {Promise<{proc: import('node:child_process').ChildProcess, ready: any, http: string, stop: () => Promise<void>, logs: string[]}>}
 */
export async function startServer(env = {}, opts = {}) {
  const bin = path.resolve(E2E_DIR, process.env.SWITCHBOARD_BIN || '../target/debug/switchboard');
  if (!fs.existsSync(bin)) throw new Error(`switchboard binary not found at ${bin} (build it, or set SWITCHBOARD_BIN)`);
  // SWITCHBOARD_BIN is ours, not a config key: the server would refuse it as unknown.
  const { SWITCHBOARD_BIN: _ours, ...inherited } = process.env;
  const host = opts.host ?? '127.0.0.1';
  const args = ['--http-listen', `${host}:0`, '--turn-listen', `${host}:0`, '--admin-listen', '127.0.0.1:0'];
  // `ip netns exec` execs the binary itself, so proc is the server and signals reach it.
  const [cmd, argv] = opts.netns ? ['ip', ['netns', 'exec', opts.netns, bin, ...args]] : [bin, args];
  const proc = spawn(cmd, argv, {
    env: {
      ...inherited,
      SWITCHBOARD_TURN__ALLOWED_PEER_RANGES: '["127.0.0.0/8"]',
      SWITCHBOARD_TURN__PUBLIC_HOST: '127.0.0.1',
      // The SFU's media socket beside HTTP (reachable where the page is), never the fixed default.
      SWITCHBOARD_MEDIA__LISTEN: `${host}:0`,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs = [];
  readline.createInterface({ input: proc.stderr }).on('line', (l) => logs.push(l));
  // A server that never becomes ready must not outlive the test: its
  // pipes would keep node's test runner waiting forever.
  const ready = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no READY line within 20 s\n${logs.slice(-20).join('\n')}`)), 20_000);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`switchboard exited (${code}) before READY\n${logs.slice(-20).join('\n')}`));
    });
    readline.createInterface({ input: proc.stdout }).on('line', (line) => {
      if (!line.startsWith('READY ')) return;
      clearTimeout(timer);
      try {
        resolve(JSON.parse(line.slice('READY '.length)));
      } catch (err) {
        reject(err);
      }
    });
  }).catch((err) => {
    proc.kill('SIGKILL');
    throw err;
  });
  const stop = async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(t);
  };
  return { proc, ready, http: ready.http, stop, logs };
}
