// A small in-process stand-in for switchboard's signaling face (PROTOCOL.md §1), for
// testing the SDK's protocol handling in node without the real binary. It also serves
// web/ the way the real server does (app at /, SDK at /sdk/). Not a reference server:
// it implements just what the SDK relies on, with knobs to inject failures.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocketServer } from 'ws';

const WEB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../web');
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml' };

/**
 * `sfu` makes rooms that are joined with `"media":"sfu"` SFU rooms (PROTOCOL.md §7): their
 * joins, departures and `media` requests go to `sfu.join(room, peer)`, `sfu.leave(room,
 * peer)` and `sfu.media(room, peer, data)`, and `server.push(peer, {type:'media',..})`
 * answers. Without it every room is a mesh room and `media` is a bad request.
 * @param {{maxPeers?: number, graceMs?: number, iceServers?: object[], sfu?: {join: Function, leave: Function, media: Function}}} [opts]
 */
export async function startFakeServer(opts = {}) {
  const graceMs = opts.graceMs ?? 2000;
  let nextId = 1;
  /** @type {Map<string, any>} */
  const sessions = new Map();
  /** @type {Map<string, Set<any>>} room -> sessions */
  const rooms = new Map();
  /** @type {Map<string, 'mesh'|'sfu'>} room -> kind */
  const kinds = new Map();
  const sfuRoom = (r) => !!opts.sfu && kinds.get(r) === 'sfu';
  const sfuLeave = (r, s) => {
    if (sfuRoom(r)) opts.sfu.leave(r, s.peer);
    if (!rooms.get(r)?.size) kinds.delete(r);
  };
  const log = [];
  const knobs = { refuseResume: false, delayResumeMs: 0 };

  const httpServer = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    let file;
    if (url.pathname.startsWith('/sdk/')) file = path.join(WEB, 'sdk', url.pathname.slice(5));
    else file = path.join(WEB, 'app', url.pathname === '/' ? 'index.html' : url.pathname.slice(1));
    if (!file.startsWith(WEB) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  const wss = new WebSocketServer({ noServer: true });
  httpServer.on('upgrade', (req, socket, head) => {
    if (!req.url.startsWith('/ws')) return socket.destroy();
    wss.handleUpgrade(req, socket, head, (ws) => onSocket(ws, new URL(req.url, 'http://x').searchParams));
  });

  function send(s, frame) {
    if (frame.type !== 'welcome' && frame.type !== 'resumed') {
      frame = { ...frame, seq: ++s.seq };
      s.replay.push(frame);
    }
    if (s.ws && s.ws.readyState === 1) s.ws.send(JSON.stringify(frame));
  }

  function welcome(s) {
    s.ws.send(
      JSON.stringify({
        type: 'welcome',
        protocol: 1,
        session: s.id,
        resume_token: s.token,
        peer: s.peer,
        ice_servers: opts.iceServers ?? [],
      }),
    );
  }

  function newSession(ws) {
    const n = nextId++;
    const s = { id: `s${n}`, token: `t${n}-${Math.random()}`, peer: `p${n}`, seq: 0, replay: [], rooms: new Set(), ws, timer: null };
    sessions.set(s.id, s);
    return s;
  }

  function depart(s) {
    clearTimeout(s.timer);
    sessions.delete(s.id);
    for (const r of s.rooms) {
      const members = rooms.get(r);
      members?.delete(s);
      for (const o of members ?? []) send(o, { type: 'bye', room: r, peer: s.peer });
      if (members?.size === 0) rooms.delete(r);
      sfuLeave(r, s);
    }
  }

  function onSocket(ws, q) {
    if (q.get('resume') && knobs.delayResumeMs > 0) {
      setTimeout(() => ws.readyState === 1 && accept(ws, q), knobs.delayResumeMs);
      return;
    }
    accept(ws, q);
  }

  function accept(ws, q) {
    let s;
    if (q.get('resume')) {
      const old = sessions.get(q.get('resume'));
      log.push({ resume: q.get('resume'), last_seq: Number(q.get('last_seq')) });
      if (!knobs.refuseResume && old && old.token === q.get('resume_token')) {
        s = old;
        clearTimeout(s.timer);
        if (s.ws && s.ws !== ws) {
          const prev = s.ws;
          s.ws = null;
          prev.close(4001, 'taken over');
        }
        s.ws = ws;
        ws.send(JSON.stringify({ type: 'resumed', session: s.id, peer: s.peer }));
        const last = Number(q.get('last_seq'));
        for (const f of s.replay) if (f.seq > last) ws.send(JSON.stringify(f));
      } else {
        s = newSession(ws);
        send(s, { type: 'error', code: 'resume_failed', message: 'session is gone' });
        welcome(s);
      }
    } else {
      s = newSession(ws);
      welcome(s);
    }
    ws.on('message', (raw) => {
      let f;
      try {
        f = JSON.parse(String(raw));
      } catch {
        return send(s, { type: 'error', code: 'bad_request', message: 'not json' });
      }
      log.push({ from: s.peer, frame: f });
      handle(s, f);
    });
    ws.on('close', (code) => {
      if (s.ws !== ws) return;
      s.ws = null;
      if (code === 1000 || code === 1001) depart(s);
      else s.timer = setTimeout(() => depart(s), graceMs);
    });
  }

  function handle(s, f) {
    const reply = (frame) => send(s, f.id !== undefined ? { ...frame, reply_to: f.id } : frame);
    switch (f.type) {
      case 'ping':
        // As switchboard does (PROTOCOL.md §1): what the client confirmed is never replayed.
        if (Number.isSafeInteger(f.last_seq)) s.replay = s.replay.filter((r) => r.seq > f.last_seq);
        return reply({ type: 'pong' });
      case 'join': {
        if (s.rooms.has(f.room)) return reply({ type: 'error', code: 'already_joined', message: f.room });
        const members = rooms.get(f.room) ?? new Set();
        if (opts.maxPeers && members.size >= opts.maxPeers) return reply({ type: 'full', room: f.room });
        const peers = [...members].map((o) => ({ peer: o.peer, meta: o.meta?.[f.room] ?? {} }));
        if (members.size === 0) kinds.set(f.room, opts.sfu && f.media === 'sfu' ? 'sfu' : 'mesh');
        members.add(s);
        rooms.set(f.room, members);
        s.rooms.add(f.room);
        s.meta = { ...s.meta, [f.room]: f.meta ?? {} };
        reply({ type: 'joined', room: f.room, peer: s.peer, peers, media: kinds.get(f.room) });
        for (const o of members) if (o !== s) send(o, { type: 'other_joined', room: f.room, peer: s.peer, meta: f.meta ?? {} });
        if (sfuRoom(f.room)) opts.sfu.join(f.room, s.peer);
        return;
      }
      case 'leave': {
        if (!s.rooms.has(f.room)) return reply({ type: 'error', code: 'not_in_room', message: f.room });
        s.rooms.delete(f.room);
        const members = rooms.get(f.room);
        members.delete(s);
        reply({ type: 'left', room: f.room });
        for (const o of members) send(o, { type: 'bye', room: f.room, peer: s.peer });
        if (members.size === 0) rooms.delete(f.room);
        sfuLeave(f.room, s);
        return;
      }
      case 'media': {
        if (!s.rooms.has(f.room)) return reply({ type: 'error', code: 'not_in_room', message: f.room });
        if (!sfuRoom(f.room)) return reply({ type: 'error', code: 'bad_request', message: 'not an SFU room' });
        opts.sfu.media(f.room, s.peer, f.data);
        return;
      }
      case 'message': {
        if (!s.rooms.has(f.room)) return reply({ type: 'error', code: 'not_in_room', message: f.room });
        const members = [...rooms.get(f.room)].filter((o) => o !== s && (!f.to || o.peer === f.to));
        if (f.to && members.length === 0) return reply({ type: 'error', code: 'no_such_peer', message: f.to });
        for (const o of members) send(o, { type: 'message', room: f.room, from: s.peer, data: f.data });
        if (f.id !== undefined) reply({ type: 'ack', delivered: members.length });
        return;
      }
      default:
        return reply({ type: 'error', code: 'bad_request', message: `unknown type ${f.type}` });
    }
  }

  await new Promise((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
  const { port } = /** @type {import('node:net').AddressInfo} */ (httpServer.address());
  return {
    http: `127.0.0.1:${port}`,
    url: `ws://127.0.0.1:${port}/ws`,
    sessions,
    rooms,
    log,
    knobs,
    /** Resets every socket without a close frame, as a network failure would. */
    dropAll() {
      for (const s of sessions.values()) s.ws?.terminate();
    },
    /** Pushes a frame to a peer's session (buffered for replay while it is away). */
    push(peer, frame) {
      for (const s of sessions.values()) if (s.peer === peer) send(s, frame);
    },
    async close() {
      for (const s of sessions.values()) clearTimeout(s.timer);
      for (const c of wss.clients) c.terminate();
      await new Promise((resolve) => httpServer.close(resolve));
    },
  };
}
