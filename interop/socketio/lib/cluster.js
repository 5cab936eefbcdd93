'use strict';
// A switchboard cluster (PROTOCOL.md §6) for the interop tests: a redis-server of the
// test's own on a free port (no persistence), and nodes on it. Every wait is bounded;
// redis-server dies with the test process even when `after` never runs.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { startServer } = require('./helpers');

/** Whether `name` is an executable on PATH. */
function onPath(name) {
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
 * Why the tests cannot run here, or false when they can. Under CI a missing tool is no
 * reason: the tests run and fail loudly (test.sh installs it).
 */
function missingTools(tools) {
  const missing = tools.filter((t) => !onPath(t));
  if (missing.length === 0 || process.env.CI) return false;
  return `${missing.join(' and ')} not on PATH (apt-get install ${missing.join(' ')}; ./test.sh installs it)`;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
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

/** Debian's redis-server on a free port; resolves once it answers PING. */
async function startRedis() {
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', os.tmpdir()], {
    stdio: ['ignore', 'ignore', 'ignore'],
  });
  let spawnError = null;
  proc.on('error', (err) => (spawnError = err));
  const killOnExit = () => proc.kill('SIGKILL');
  process.on('exit', killOnExit);
  const alive = () => proc.exitCode === null && proc.signalCode === null;
  const end = Date.now() + 10000;
  while (!(await redisPing(port))) {
    if (!alive()) throw new Error(`redis-server exited (${spawnError ?? proc.exitCode ?? proc.signalCode}) before answering PING`);
    if (Date.now() > end) {
      proc.kill('SIGKILL');
      throw new Error(`redis-server did not answer PING on ${port} within 10 s`);
    }
    await new Promise((r) => setTimeout(r, 30));
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}/0`,
    stop: async () => {
      process.off('exit', killOnExit);
      if (!alive()) return;
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGKILL');
      await exited;
    },
  };
}

/** Polls `/readyz` until 200 (the node reaches Redis); bounded. */
async function waitReady(url, ms = 15000) {
  const end = Date.now() + ms;
  let last = 'unreachable';
  while (Date.now() < end) {
    let status = 0;
    try {
      const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(1000) });
      status = res.status;
      last = `${res.status} ${(await res.text()).trim()}`;
    } catch (e) {
      last = String(e);
    }
    if (status === 200) return;
    // No such route: this binary predates clustering; waiting will not help.
    if (status === 404) throw new Error(`${url}/readyz is 404: this switchboard has no cluster support (an old build?)`);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${url}/readyz stayed ${last}`);
}

/** A node of the cluster on `redis`, ready (its /readyz is 200). */
async function startNode(redis, nodeId, env = {}) {
  const node = await startServer({
    SWITCHBOARD_CLUSTER__REDIS_URL: redis.url,
    SWITCHBOARD_CLUSTER__NODE_ID: nodeId,
    SWITCHBOARD_CLUSTER__NODE_TIMEOUT_SECS: '2',
    ...env,
  });
  const killOnExit = () => node.proc.kill('SIGKILL');
  process.on('exit', killOnExit);
  node.proc.once('exit', () => process.off('exit', killOnExit));
  try {
    await waitReady(node.url);
  } catch (e) {
    node.proc.kill('SIGKILL');
    throw new Error(`node ${nodeId}: ${e.message}`);
  }
  return node;
}

module.exports = { missingTools, startRedis, startNode, onPath };
