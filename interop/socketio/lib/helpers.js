'use strict';
// Shared by the tests: start the real switchboard binary on ports it picks,
// connect real socket.io-client v4 and `ws` clients, and wait for events
// with a bound on every wait.

const { spawn } = require('node:child_process');
const path = require('node:path');
const crypto = require('node:crypto');
const readline = require('node:readline');
const { io } = require('socket.io-client');
const WebSocket = require('ws');

const WAIT_MS = 5000;
const BIN = process.env.SWITCHBOARD_BIN
  ?? path.resolve(__dirname, '..', '..', '..', 'target', 'debug', 'switchboard');

/** Starts switchboard; resolves once it printed its READY line. */
function startServer(env = {}) {
  return new Promise((resolve, reject) => {
    // SWITCHBOARD_BIN is ours, not a config key: the server would refuse it.
    const { SWITCHBOARD_BIN: _bin, ...inherited } = process.env;
    const proc = spawn(BIN, ['--http-listen', '127.0.0.1:0', '--turn-listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--media-listen', '127.0.0.1:0'], {
      env: { ...inherited, SWITCHBOARD_LOG__LEVEL: process.env.SWITCHBOARD_LOG__LEVEL ?? 'warn', ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`switchboard did not print READY within 20 s (${BIN})`));
    }, 20000);
    proc.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${BIN}: ${e.message}`));
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`switchboard exited early with ${code}`));
    });
    const lines = readline.createInterface({ input: proc.stdout });
    lines.on('line', (line) => {
      if (!line.startsWith('READY ')) return;
      clearTimeout(timer);
      const bound = JSON.parse(line.slice('READY '.length));
      resolve({
        proc,
        bound,
        url: `http://${bound.http}`,
        wsUrl: `ws://${bound.http}/ws`,
        stop: () => stopProcess(proc),
      });
    });
  });
}

/** SIGTERM, then SIGKILL if it has not exited within 5 s. */
function stopProcess(proc) {
  return new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      resolve();
      return;
    }
    const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
    proc.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    proc.kill('SIGTERM');
  });
}

/**
 * Records every event a socket receives, so that a test can wait for one
 * that may already have arrived.
 */
class Recorder {
  constructor() {
    this.events = [];
    this.waiters = [];
  }

  push(event, args) {
    this.events.push({ event, args });
    for (const w of [...this.waiters]) w.check();
  }

  /** Resolves with the args of the first unconsumed `event` matching `pred`. */
  next(event, pred = () => true, ms = WAIT_MS) {
    return new Promise((resolve, reject) => {
      const waiter = {
        check: () => {
          const i = this.events.findIndex((e) => e.event === event && pred(e.args));
          if (i < 0) return false;
          const [found] = this.events.splice(i, 1);
          clearTimeout(waiter.timer);
          this.waiters = this.waiters.filter((x) => x !== waiter);
          resolve(found.args);
          return true;
        },
      };
      if (waiter.check()) return;
      waiter.timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== waiter);
        const seen = this.events.map((e) => e.event).join(', ');
        reject(new Error(`no ${event} within ${ms} ms (unconsumed: ${seen || 'none'})`));
      }, ms);
      this.waiters.push(waiter);
    });
  }

  /** Fails if `event` arrives (or has arrived) within `ms`. */
  async none(event, ms = 300) {
    const got = await this.next(event, () => true, ms).then((a) => a, () => null);
    if (got !== null) throw new Error(`unexpected ${event}: ${JSON.stringify(got)}`);
  }
}

/** A connected socket.io client; `sio.rec` holds what it received. */
function connectSio(url, opts = {}) {
  return new Promise((resolve, reject) => {
    const socket = io(url, { reconnection: false, forceNew: true, timeout: WAIT_MS, ...opts });
    socket.rec = new Recorder();
    socket.onAny((event, ...args) => socket.rec.push(event, args));
    // The transport the Engine.IO session opened on (it may upgrade before
    // `connect` fires).
    socket.io.once('open', () => {
      socket.firstTransport = socket.io.engine.transport.name;
    });
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error(`socket.io connect timed out (${url})`));
    }, WAIT_MS);
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once('connect_error', (err) => {
      clearTimeout(timer);
      socket.close();
      // engine.io-client says only "xhr poll error": add the HTTP status and
      // body (or the network error) it keeps, so that a failure says why.
      const ctx = err?.context;
      const why = ctx?.status !== undefined ? `HTTP ${ctx.status} ${String(ctx.responseText ?? '').slice(0, 200)}` : err?.description?.message ?? err?.description;
      if (why !== undefined) err.message = `${err.message} (${why})`;
      reject(err);
    });
  });
}

/** Resolves with the `connect_error` a refused client gets. */
function refusedSio(url, opts = {}) {
  return new Promise((resolve, reject) => {
    const socket = io(url, { reconnection: false, forceNew: true, timeout: WAIT_MS, ...opts });
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error('neither connect nor connect_error'));
    }, WAIT_MS);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.close();
      reject(new Error('connected, but should have been refused'));
    });
    socket.once('connect_error', (err) => {
      clearTimeout(timer);
      socket.close();
      resolve(err);
    });
  });
}

/** `emitWithAck` bounded in time. */
function emitAck(socket, event, ...args) {
  return socket.timeout(WAIT_MS).emitWithAck(event, ...args);
}

/** A native (PROTOCOL.md §1) client over `ws`; resolves after `welcome`. */
function connectNative(wsUrl) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl);
    ws.rec = new Recorder();
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error('native welcome timed out'));
    }, WAIT_MS);
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      const frame = JSON.parse(data.toString());
      if (frame.type === 'welcome') {
        clearTimeout(timer);
        ws.welcome = frame;
        resolve(ws);
        return;
      }
      ws.rec.push(frame.type, frame);
    });
    ws.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    ws.send = ws.send.bind(ws);
    ws.request = (frame) => ws.send(JSON.stringify(frame));
  });
}

/** An HS256 JWT, signed with node's own crypto. */
function jwt(secret, claims) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${enc({ alg: 'HS256', typ: 'JWT' })}.${enc(claims)}`;
  const sig = crypto.createHmac('sha256', secret).update(body).digest('base64url');
  return `${body}.${sig}`;
}

/** Closes sockets quietly (after hooks). */
function closeAll(list) {
  for (const s of list.splice(0)) {
    try {
      if (typeof s.terminate === 'function') s.terminate();
      else s.close();
    } catch {
      // already closed
    }
  }
}

module.exports = {
  WAIT_MS,
  BIN,
  startServer,
  stopProcess,
  connectSio,
  refusedSio,
  emitAck,
  connectNative,
  jwt,
  closeAll,
  Recorder,
};
