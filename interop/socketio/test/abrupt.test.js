'use strict';
// A client that vanishes without a goodbye (its process is killed): the
// rest of the room gets `bye` — at once on WebSocket, where the TCP close is
// seen, and after the Engine.IO heartbeat on long-polling, where it is not.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const path = require('node:path');
const readline = require('node:readline');
const { startServer, connectSio, closeAll } = require('../lib/helpers');

const CHILD = path.join(__dirname, '..', 'lib', 'child-client.js');

/** Starts a socket.io client in its own process; resolves with its peer id once joined. */
function childJoined(url, room, transports) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, url, room, transports], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error('child client did not join within 10 s'));
    }, 10000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`child client exited with ${code}`));
    });
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      if (!line.startsWith('JOINED ')) return;
      clearTimeout(timer);
      resolve({ child, id: line.slice('JOINED '.length) });
    });
  });
}

describe('abrupt departures', () => {
  let server;
  const clients = [];
  const children = [];

  before(async () => {
    // A short heartbeat so that the polling case ends in seconds: ping every
    // 1 s, give up after 2 s more.
    server = await startServer({
      SWITCHBOARD_SESSION__HEARTBEAT_INTERVAL_SECS: '1',
      SWITCHBOARD_SESSION__HEARTBEAT_TIMEOUT_SECS: '3',
    });
  });
  afterEach(() => {
    closeAll(clients);
    for (const c of children.splice(0)) c.kill('SIGKILL');
  });
  after(async () => {
    closeAll(clients);
    await server.stop();
  });

  for (const transports of ['websocket', 'polling']) {
    it(`a killed ${transports} client is announced with bye`, async () => {
      const watcher = await connectSio(server.url, { transports: ['websocket'] });
      clients.push(watcher);
      const room = `abrupt-${transports}`;
      watcher.emit('join', room);
      await watcher.rec.next('joined');

      const { child, id } = await childJoined(server.url, room, transports);
      children.push(child);
      assert.deepEqual(await watcher.rec.next('otherjoin'), [room, id]);

      child.removeAllListeners('exit');
      child.kill('SIGKILL');
      assert.deepEqual(await watcher.rec.next('bye', () => true, 8000), [room, id]);
    });
  }
});
