'use strict';
// A socket.io client in its own process, for tests that kill it:
//   node child-client.js URL ROOM TRANSPORT
// Prints "JOINED <peer id>" once in ROOM, then stays until killed.

const { io } = require('socket.io-client');

const [url, room, transport] = process.argv.slice(2);
const socket = io(url, { reconnection: false, transports: [transport] });
socket.on('connect', () => socket.emit('join', room));
socket.on('joined', (_room, id) => process.stdout.write(`JOINED ${id}\n`));
socket.on('connect_error', (e) => {
  process.stderr.write(`child client: ${e.message}\n`);
  process.exit(2);
});
// Never outlive the test that started it.
setTimeout(() => process.exit(3), 60000).unref();
