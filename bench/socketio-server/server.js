'use strict';
// The classic socket.io WebRTC signaling server that many tutorials ship,
// with the events of PROTOCOL.md section 2, used as the baseline in
// switchboard's signaling benchmarks (bench/signaling/run.sh).
//
// Usage: PORT=0 node server.js   or   node server.js 0
// Prints "READY <port>" on stdout once listening on 127.0.0.1.
// MAX_PEERS (default 0 = no limit) caps a room, answered with `full`.

const http = require('node:http');
const { Server } = require('socket.io');

const port = Number(process.argv[2] ?? process.env.PORT ?? 0);
const host = process.env.HOST ?? '127.0.0.1';
const maxPeers = Number(process.env.MAX_PEERS ?? 0);

const httpServer = http.createServer((req, res) => {
  res.writeHead(404).end();
});
const io = new Server(httpServer, { serveClient: false });

function roomSize(room) {
  const members = io.sockets.adapter.rooms.get(room);
  return members ? members.size : 0;
}

io.on('connection', (socket) => {
  socket.on('join', (room) => {
    if (typeof room !== 'string' || room.length === 0) {
      socket.emit('error', 'bad_request');
      return;
    }
    if (maxPeers > 0 && roomSize(room) >= maxPeers && !socket.rooms.has(room)) {
      socket.emit('full', room, socket.id);
      return;
    }
    socket.join(room);
    socket.emit('joined', room, socket.id);
    socket.to(room).emit('otherjoin', room, socket.id);
  });

  socket.on('message', (room, data, ack) => {
    if (typeof room !== 'string' || !socket.rooms.has(room)) {
      socket.emit('error', 'not_in_room');
      return;
    }
    socket.to(room).emit('message', room, data);
    if (typeof ack === 'function') {
      ack({ delivered: roomSize(room) - 1 });
    }
  });

  socket.on('leave', (room) => {
    if (typeof room !== 'string' || !socket.rooms.has(room)) {
      socket.emit('error', 'not_in_room');
      return;
    }
    socket.to(room).emit('bye', room, socket.id);
    socket.leave(room);
    socket.emit('leaved', room, socket.id);
  });

  socket.on('disconnecting', () => {
    for (const room of socket.rooms) {
      if (room !== socket.id) {
        socket.to(room).emit('bye', room, socket.id);
      }
    }
  });
});

httpServer.listen(port, host, () => {
  process.stdout.write(`READY ${httpServer.address().port}\n`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    io.close();
    process.exit(0);
  });
}
