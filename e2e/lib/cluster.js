// The parts of a switchboard cluster (PROTOCOL.md §6) for a browser test: a redis-server of
// its own, switchboard nodes on it, and haproxy in front of them with deploy/haproxy.cfg.
// Ports are chosen at run time; every wait is bounded; every process dies with the test
// process even when its `after` never runs.
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { E2E_DIR, REPO } from './browser.js';

/** @type {Set<import('node:child_process').ChildProcess>} */
const live = new Set();
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

/** @param {import('node:child_process').ChildProcess} proc */
function track(proc) {
  // A spawn that fails (ENOENT) reports it here; the exit that follows says the rest.
  proc.on('error', (err) => (proc.spawnError = err));
  live.add(proc);
  proc.once('exit', () => live.delete(proc));
  return proc;
}

/** @param {import('node:child_process').ChildProcess} proc */
const running = (proc) => proc.exitCode === null && proc.signalCode === null;

/**
 * Sends `sig` and waits (bounded) for the exit; SIGKILL after `ms`.
 * @param {import('node:child_process').ChildProcess} proc @param {NodeJS.Signals} sig
 */
async function signalAndWait(proc, sig, ms = 5000) {
  if (!running(proc)) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill(sig);
  const t = setTimeout(() => proc.kill('SIGKILL'), ms);
  await exited;
  clearTimeout(t);
}

/** Whether `name` is an executable on PATH. */
export function onPath(name) {
  return (process.env.PATH ?? '').split(path.delimiter).some((d) => {
    try {
      fs.accessSync(path.join(d, name), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/**
 * Why the test cannot run here (a tool missing), or false when it can. Under CI a missing
 * tool is not a reason: the test runs and fails loudly (test.sh installs them).
 * @param {string[]} tools
 * @returns {string | false}
 */
export function missingTools(tools) {
  const missing = tools.filter((t) => !onPath(t));
  if (missing.length === 0 || process.env.CI) return false;
  return `${missing.join(' and ')} not on PATH (apt-get install ${missing.map((m) => (m === 'redis-server' ? 'redis-server' : m)).join(' ')}; ./test.sh installs them)`;
}

/** A free TCP port of 127.0.0.1. */
export async function freePort() {
  const srv = net.createServer();
  await new Promise((resolve, reject) => srv.once('error', reject).listen(0, '127.0.0.1', resolve));
  const { port } = /** @type {net.AddressInfo} */ (srv.address());
  await new Promise((r) => srv.close(r));
  return port;
}

/** A port of 127.0.0.1 free for both TCP and UDP (switchboard's TURN listens on both). */
export async function freeTcpUdpPort() {
  for (let i = 0; i < 20; i++) {
    const port = await freePort();
    const sock = dgram.createSocket('udp4');
    const ok = await new Promise((resolve) => {
      sock.once('error', () => resolve(false));
      sock.bind(port, '127.0.0.1', () => resolve(true));
    });
    await new Promise((r) => sock.close(() => r()));
    if (ok) return port;
  }
  throw new Error('no port free for both TCP and UDP in 20 tries');
}

/** Answers `PING` on `port`? Bounded to 500 ms. */
function redisPing(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    const done = (v) => {
      clearTimeout(t);
      s.destroy();
      resolve(v);
    };
    const t = setTimeout(() => done(false), 500);
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => {
      buf += d;
      if (buf.includes('\r\n')) done(buf.startsWith('+PONG'));
    });
    s.on('error', () => done(false));
  });
}

/** Debian's redis-server on a free port, no persistence; resolves once it answers PING. */
export async function startRedis() {
  const port = await freePort();
  const proc = track(
    spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', os.tmpdir()], {
      stdio: ['ignore', 'ignore', 'ignore'],
    }),
  );
  const end = Date.now() + 10_000;
  while (!(await redisPing(port))) {
    if (!running(proc)) throw new Error(`redis-server exited (${proc.spawnError ?? proc.exitCode ?? proc.signalCode}) before answering PING`);
    if (Date.now() > end) {
      proc.kill('SIGKILL');
      throw new Error(`redis-server did not answer PING on ${port} within 10 s`);
    }
    await new Promise((r) => setTimeout(r, 30));
  }
  return { port, url: `redis://127.0.0.1:${port}/0`, stop: () => signalAndWait(proc, 'SIGKILL') };
}

/** GET http://`hostPort``path`, bounded; resolves {status, headers, body} or null on failure. */
export async function httpGet(hostPort, urlPath, ms = 2000) {
  try {
    const res = await fetch(`http://${hostPort}${urlPath}`, { signal: AbortSignal.timeout(ms) });
    return { status: res.status, headers: res.headers, body: await res.text() };
  } catch {
    return null;
  }
}

/** Polls `/readyz` until it answers `status` (bounded). */
export async function waitReadyz(hostPort, status = 200, ms = 15_000) {
  const end = Date.now() + ms;
  let last = null;
  while (Date.now() < end) {
    last = await httpGet(hostPort, '/readyz', 1000);
    if (last?.status === status) return;
    // No such route: this binary predates clustering; waiting will not help.
    if (last?.status === 404) throw new Error(`${hostPort}/readyz is 404: this switchboard has no cluster support (an old build?)`);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${hostPort}/readyz stayed ${last ? `${last.status} ${last.body.trim()}` : 'unreachable'}, wanted ${status}`);
}

/** The value of an unlabelled Prometheus gauge or counter on a node's /metrics, or null. */
export async function metric(hostPort, name) {
  const res = await httpGet(hostPort, '/metrics', 2000);
  if (!res || res.status !== 200) return null;
  const line = res.body.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.slice(name.length + 1)) : null;
}

/**
 * One switchboard node of the cluster on `redisUrl`, at `httpPort` and `turnPort` when
 * given (a restarted node takes its predecessor's place), else on free ports. Resolves
 * once it printed READY and its /readyz is 200 (it reaches Redis).
 * @param {{redisUrl: string, nodeId: string, httpPort?: number, turnPort?: number, env?: Record<string, string>}} o
 */
export async function startNode(o) {
  const bin = path.resolve(E2E_DIR, process.env.SWITCHBOARD_BIN || '../target/debug/switchboard');
  if (!fs.existsSync(bin)) throw new Error(`switchboard binary not found at ${bin} (build it, or set SWITCHBOARD_BIN)`);
  const { SWITCHBOARD_BIN: _ours, ...inherited } = process.env;
  const args = ['--http-listen', `127.0.0.1:${o.httpPort ?? 0}`, '--turn-listen', `127.0.0.1:${o.turnPort ?? 0}`, '--admin-listen', '127.0.0.1:0'];
  const proc = track(
    spawn(bin, args, {
      env: {
        ...inherited,
        SWITCHBOARD_TURN__ALLOWED_PEER_RANGES: '["127.0.0.0/8"]',
        SWITCHBOARD_TURN__PUBLIC_HOST: '127.0.0.1',
        SWITCHBOARD_CLUSTER__REDIS_URL: o.redisUrl,
        SWITCHBOARD_CLUSTER__NODE_ID: o.nodeId,
        SWITCHBOARD_CLUSTER__NODE_TIMEOUT_SECS: '2',
        // Never the fixed default (nodes share this host).
        SWITCHBOARD_MEDIA__LISTEN: '127.0.0.1:0',
        ...o.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  /** @type {string[]} */
  const logs = [];
  readline.createInterface({ input: proc.stderr }).on('line', (l) => logs.push(l));
  const exited = new Promise((r) => proc.once('exit', (code, sig) => r(code ?? sig)));
  const ready = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`node ${o.nodeId}: no READY line within 20 s\n${logs.slice(-20).join('\n')}`)), 20_000);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`node ${o.nodeId} exited (${code}) before READY\n${logs.slice(-20).join('\n')}`));
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
  try {
    await waitReadyz(ready.http, 200);
  } catch (err) {
    proc.kill('SIGKILL');
    throw new Error(`node ${o.nodeId}: ${err.message}\n${logs.slice(-20).join('\n')}`);
  }
  return {
    id: o.nodeId,
    proc,
    ready,
    http: ready.http,
    httpPort: Number(ready.http.split(':').pop()),
    logs,
    exited,
    /** SIGTERM: a graceful stop (clients closed with 1012). Bounded; SIGKILL after 10 s. */
    term: () => signalAndWait(proc, 'SIGTERM', 10_000),
    /** SIGKILL: a crash, no goodbye. */
    kill: () => signalAndWait(proc, 'SIGKILL'),
  };
}

/**
 * haproxy (Debian's, on PATH) with deploy/haproxy.cfg, its placeholders filled in, in
 * front of `node1` and `node2` ("127.0.0.1:PORT" each). Checks the file first (`haproxy -c`)
 * so that a config error reads as one. Resolves once the front answers.
 * @param {string} node1 @param {string} node2
 */
export async function startHaproxy(node1, node2) {
  const port = await freePort();
  const front = `127.0.0.1:${port}`;
  const text = fs
    .readFileSync(path.join(REPO, 'deploy', 'haproxy.cfg'), 'utf8')
    .replaceAll('__FRONT__', front)
    .replaceAll('__NODE1__', node1)
    .replaceAll('__NODE2__', node2);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-haproxy-'));
  const cfg = path.join(dir, 'haproxy.cfg');
  fs.writeFileSync(cfg, text);
  const check = spawn('haproxy', ['-c', '-f', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
  let checkOut = '';
  check.stdout.on('data', (d) => (checkOut += d));
  check.stderr.on('data', (d) => (checkOut += d));
  const checkCode = await new Promise((r) => check.once('exit', r));
  if (checkCode !== 0) throw new Error(`haproxy -c refused deploy/haproxy.cfg (exit ${checkCode}):\n${checkOut}`);
  /** @type {string[]} */
  const logs = checkOut.trim() ? [checkOut.trim()] : [];
  /** What the test had to do to run the file here, for the report. */
  const notes = [];
  let proc = await launchHaproxy(cfg, front, [], logs);
  const fd = /Cannot raise FD limit to (\d+), limit is (\d+)/.exec(logs.join('\n'));
  if (!proc && fd) {
    // The file's `maxconn` needs more descriptors than this machine's hard limit gives (a
    // container, or no CAP_SYS_RESOURCE); the same file with maxconn cut to fit (-n).
    const maxconn = Math.max(100, Math.floor((Number(fd[2]) - 100) / 2));
    notes.push(`deploy/haproxy.cfg: haproxy refused to start (Cannot raise FD limit to ${fd[1]}, limit is ${fd[2]}); ran it with -n ${maxconn}`);
    proc = await launchHaproxy(cfg, front, ['-n', String(maxconn)], logs);
  }
  if (!proc) throw new Error(`haproxy did not start on ${front}:\n${logs.join('\n')}`);
  const hap = proc;
  return {
    front,
    logs,
    notes,
    stop: async () => {
      await signalAndWait(hap, 'SIGTERM');
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Runs haproxy on `cfg` in the foreground (-db: our child, it dies with us); resolves with
 * the process once `front` answers, or null when it exited first (its words in `logs`).
 * @param {string} cfg @param {string} front @param {string[]} extra @param {string[]} logs
 */
async function launchHaproxy(cfg, front, extra, logs) {
  const proc = track(spawn('haproxy', ['-db', ...extra, '-f', cfg], { stdio: ['ignore', 'pipe', 'pipe'] }));
  readline.createInterface({ input: proc.stdout }).on('line', (l) => logs.push(l));
  readline.createInterface({ input: proc.stderr }).on('line', (l) => logs.push(l));
  const exited = new Promise((r) => proc.once('exit', r));
  const end = Date.now() + 10_000;
  for (;;) {
    if (!running(proc)) {
      await exited;
      // Let the last lines of its stderr arrive.
      await new Promise((r) => setTimeout(r, 50));
      return null;
    }
    if (await httpGet(front, '/healthz', 1000)) return proc;
    if (Date.now() > end) {
      proc.kill('SIGKILL');
      throw new Error(`haproxy did not answer on ${front} within 10 s:\n${logs.join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Waits (bounded) until haproxy balances over every server in `names`: requests without
 * a cookie come back with haproxy's SBNODE cookie naming each of them in turn, which only
 * a server that passed its health checks gets.
 * @param {string} front @param {string[]} names
 */
export async function waitBalanced(front, names, ms = 15_000) {
  const end = Date.now() + ms;
  const seen = new Set();
  while (Date.now() < end) {
    const res = await httpGet(front, '/readyz', 1000);
    const m = /SBNODE=([^;]+)/.exec(res?.headers.get('set-cookie') ?? '');
    if (res?.status === 200 && m) seen.add(m[1]);
    if (names.every((n) => seen.has(n))) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`haproxy did not balance over ${names.join(', ')} within ${ms} ms (saw ${[...seen].join(', ') || 'none'})`);
}
