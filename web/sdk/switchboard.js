// Switchboard browser SDK: signaling client (PROTOCOL.md §1, §3) and a WebRTC mesh
// built on it. An ES module with no build step; types are JSDoc.
//
//   import { connect } from '/sdk/switchboard.js';
//   const client = connect(`${location.origin.replace(/^http/, 'ws')}/ws`);
//   const mesh = client.mesh('room-1', { stream, relayOnly: false });
//   mesh.on('track', ({ peer, stream }) => video.srcObject = stream);
//   await mesh.join({ name: 'Ann' });

/** Protocol version this SDK speaks. */
export const PROTOCOL_VERSION = 1;

/** Close codes that mean "do not come back on your own". */
const CLOSE_NORMAL = 1000;
const CLOSE_GOING_AWAY = 1001;
/** Frames kept for sending while the socket is down. */
const OUTBOX_LIMIT = 512;
/**
 * Sequenced frames handled between two `last_seq` confirmations: without them the server
 * keeps a busy session's last `session.replay_frames` frames for ever (PROTOCOL.md §1).
 */
const CONFIRM_EVERY = 64;
/** Sent by the server to a socket whose session another socket resumed. */
export const CLOSE_TAKEN_OVER = 4001;

/**
 * @typedef {'connecting'|'open'|'reconnecting'|'closed'} ConnectionState
 *
 * @typedef {object} ConnectOptions
 * @property {string} [token] JWT for `?token=` when the server has auth on.
 * @property {string} [user] user id for `?user=` (direct calls with auth off).
 * @property {typeof WebSocket} [WebSocket] WebSocket implementation (tests in node pass `ws`).
 * @property {number} [backoffMinMs] first reconnect delay (default 250).
 * @property {number} [backoffMaxMs] largest reconnect delay (default 8000).
 * @property {number} [pingIntervalMs] how often to send `ping` (with `last_seq`) (default 10000).
 * @property {number} [confirmEvery] also ping with `last_seq` after this many sequenced frames (default 64).
 * @property {number} [silenceTimeoutMs] drop and resume a socket silent for this long (default 35000).
 * @property {number} [requestTimeoutMs] how long a request waits for its reply (default 15000).
 *
 * @typedef {{type: string, seq?: number, reply_to?: string|number, [k: string]: any}} ServerFrame
 */

/** A tiny event emitter: `on` returns a function that unsubscribes. */
export class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._handlers = new Map();
  }
  /**
   * @param {string} type
   * @param {(ev: any) => void} fn
   * @returns {() => void}
   */
  on(type, fn) {
    let set = this._handlers.get(type);
    if (!set) this._handlers.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }
  /** @param {string} type @param {(ev: any) => void} fn */
  off(type, fn) {
    this._handlers.get(type)?.delete(fn);
  }
  /** @param {string} type @param {(ev: any) => void} fn */
  once(type, fn) {
    const off = this.on(type, (ev) => {
      off();
      fn(ev);
    });
    return off;
  }
  /** @param {string} type @param {any} [ev] */
  emit(type, ev) {
    for (const fn of [...(this._handlers.get(type) ?? [])]) {
      try {
        fn(ev);
      } catch (err) {
        // A broken listener must not break the protocol state machine.
        setTimeout(() => {
          throw err;
        });
      }
    }
  }
}

/** An `error` frame turned into an exception. */
export class SignalError extends Error {
  /** @param {string} code @param {string} [message] @param {ServerFrame} [frame] */
  constructor(code, message, frame) {
    super(message ? `${code}: ${message}` : code);
    this.name = 'SignalError';
    this.code = code;
    this.frame = frame;
  }
}

/**
 * Opens a signaling connection that keeps itself alive.
 * @param {string} url `ws(s)://host/ws`
 * @param {ConnectOptions} [options]
 */
export function connect(url, options = {}) {
  return new SignalingClient(url, options);
}

/**
 * Signaling client. Events: `state` (ConnectionState), `welcome`, `resumed`, `joined`,
 * `left`, `other_joined`, `bye`, `full`, `message`, `error`, `incoming_call`, `ringing`,
 * `accepted`, `declined`, `call_ended`, `frame` (every server frame), `closed` ({code, reason}).
 */
export class SignalingClient extends Emitter {
  /** @param {string} url @param {ConnectOptions} options */
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = options;
    /** @type {ConnectionState} */
    this.state = 'connecting';
    /** @type {ServerFrame|null} the latest fresh welcome */
    this.welcome = null;
    /** @type {string|null} */
    this.peer = null;
    /** @type {string|null} */
    this.session = null;
    /** @type {string|null} */
    this.resumeToken = null;
    /** Highest `seq` received in this session. */
    this.lastSeq = 0;
    /** Sequenced frames handled since the server was last told `last_seq`. */
    this._unconfirmed = 0;
    /** Rooms we are in, with the meta we joined with, so a lost session can be rebuilt. */
    /** @type {Map<string, object|undefined>} */
    this.rooms = new Map();
    /** The room kind each join asked for ('mesh'|'sfu'), so that a rejoin asks again. */
    /** @type {Map<string, string>} */
    this.roomMedia = new Map();
    /** @type {RTCIceServer[]} */
    this.iceServers = [];
    /** Number of consecutive failed attempts, for backoff. */
    this.attempt = 0;
    /** @type {WebSocket|null} */
    this.ws = null;
    this._nextId = 1;
    /** @type {Map<string|number, {resolve: Function, reject: Function, timer: any, type: string, room?: string}>} */
    this._pending = new Map();
    /** Frames written while the socket is not open; flushed once it is. */
    /** @type {object[]} */
    this._outbox = [];
    this._closedByUser = false;
    this._firstFrame = true;
    this._timer = null;
    this._pingTimer = null;
    this._lastHeard = 0;
    this._open();
  }

  /** @returns {typeof WebSocket} */
  get _WS() {
    return this.options.WebSocket ?? globalThis.WebSocket;
  }

  _buildUrl() {
    const u = new URL(this.url);
    if (this.options.token) u.searchParams.set('token', this.options.token);
    if (this.options.user) u.searchParams.set('user', this.options.user);
    if (this.session && this.resumeToken) {
      u.searchParams.set('resume', this.session);
      u.searchParams.set('resume_token', this.resumeToken);
      u.searchParams.set('last_seq', String(this.lastSeq));
    }
    return u.toString();
  }

  _setState(/** @type {ConnectionState} */ s) {
    if (this.state === s) return;
    this.state = s;
    this.emit('state', s);
  }

  _open() {
    clearTimeout(this._timer);
    let ws;
    try {
      ws = new this._WS(this._buildUrl());
    } catch (err) {
      this.emit('error', new SignalError('connect_failed', String(err)));
      this._scheduleReconnect();
      return;
    }
    this.ws = ws;
    this._firstFrame = true;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this._lastHeard = Date.now();
      this._startPings();
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this._lastHeard = Date.now();
      let frame;
      try {
        frame = JSON.parse(typeof ev.data === 'string' ? ev.data : String(ev.data));
      } catch {
        return;
      }
      if (frame && typeof frame === 'object') this._onFrame(frame);
    };
    ws.onerror = () => {
      // onclose follows and decides what to do.
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this._stopPings();
      this._onClose(ev.code, ev.reason);
    };
  }

  /** @param {number} code @param {string} reason */
  _onClose(code, reason) {
    if (this._closedByUser) {
      this._finish(code, reason);
      return;
    }
    if (code === CLOSE_TAKEN_OVER) {
      // Another socket resumed our session: coming back would steal it back in a loop.
      this._finish(code, reason || 'taken over by another connection');
      return;
    }
    this._scheduleReconnect();
  }

  _finish(code, reason) {
    clearTimeout(this._timer);
    this._stopPings();
    for (const [, p] of this._pending) {
      clearTimeout(p.timer);
      p.reject(new SignalError('closed', 'connection closed'));
    }
    this._pending.clear();
    this._setState('closed');
    this.emit('closed', { code, reason });
  }

  _scheduleReconnect() {
    this._setState('reconnecting');
    const min = this.options.backoffMinMs ?? 250;
    const max = this.options.backoffMaxMs ?? 8000;
    const base = Math.min(max, min * 2 ** Math.min(this.attempt, 16));
    // Jitter keeps a room's worth of clients from coming back in lockstep after a restart.
    const delay = this.attempt === 0 ? 0 : base / 2 + Math.random() * (base / 2);
    this.attempt += 1;
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._open(), delay);
  }

  _startPings() {
    this._stopPings();
    const every = this.options.pingIntervalMs ?? 10000;
    const silence = this.options.silenceTimeoutMs ?? 35000;
    this._pingTimer = setInterval(() => {
      if (Date.now() - this._lastHeard > silence) {
        // A half-open socket never fires close on its own; end it and resume.
        this.dropConnection(4000);
        return;
      }
      if (this.state === 'open') this._ping();
    }, every);
  }

  /**
   * Pings with the highest seq handled, so that the server can forget those frames. Only
   * on an open socket: a ping queued in the outbox would be stale by the time it left, and
   * a resume carries `last_seq` anyway.
   */
  _ping() {
    const ws = this.ws;
    if (this.state !== 'open' || !ws || ws.readyState !== 1) return;
    this._unconfirmed = 0;
    ws.send(JSON.stringify({ type: 'ping', last_seq: this.lastSeq }));
  }

  _stopPings() {
    clearInterval(this._pingTimer);
    this._pingTimer = null;
  }

  /** @param {ServerFrame} f */
  _onFrame(f) {
    if (this._firstFrame) {
      this._firstFrame = false;
      // Anything but `resumed` first means the old session (and its seq numbering) is gone.
      if (f.type !== 'resumed') {
        this.lastSeq = 0;
        this._unconfirmed = 0;
      }
    }
    const sequenced = typeof f.seq === 'number';
    if (sequenced) {
      // A replay may overlap what we already have; never handle a frame twice.
      if (f.seq <= this.lastSeq) return;
      this.lastSeq = f.seq;
    }
    this._dispatch(f);
    // Confirmed only once its listeners have run: `last_seq` promises the frame was handled.
    if (sequenced && ++this._unconfirmed >= (this.options.confirmEvery ?? CONFIRM_EVERY)) this._ping();
  }

  /** @param {ServerFrame} f */
  _dispatch(f) {
    this.emit('frame', f);
    switch (f.type) {
      case 'welcome':
        return this._onWelcome(f);
      case 'resumed':
        this.attempt = 0;
        this.session = f.session ?? this.session;
        this.peer = f.peer ?? this.peer;
        this._setState('open');
        this.emit('resumed', f);
        this._flush();
        return;
      case 'joined':
        this.rooms.set(f.room, this.rooms.get(f.room));
        break;
      case 'left':
        this.rooms.delete(f.room);
        this.roomMedia.delete(f.room);
        break;
      case 'full':
        this.rooms.delete(f.room);
        this.roomMedia.delete(f.room);
        break;
      case 'error':
        if (f.code === 'resume_failed') {
          // A fresh welcome follows; the old session and its seq space are gone.
          this.session = null;
          this.resumeToken = null;
          this.lastSeq = 0;
          this._unconfirmed = 0;
        }
        break;
      default:
    }
    this._settle(f);
    this.emit(f.type, f);
  }

  /** @param {ServerFrame} f */
  _onWelcome(f) {
    const previousPeer = this.peer;
    this.welcome = f;
    this.session = f.session;
    this.resumeToken = f.resume_token;
    this.peer = f.peer;
    this.lastSeq = 0;
    this._unconfirmed = 0;
    this.iceServers = Array.isArray(f.ice_servers) ? f.ice_servers : [];
    this.attempt = 0;
    this._setState('open');
    const queued = this._outbox;
    this._outbox = [];
    const queuedJoins = new Set(queued.filter((q) => q.type === 'join').map((q) => q.room));
    /** @type {Map<string, string|number>} */
    const inFlight = new Map();
    for (const [id, p] of this._pending) if (p.type === 'join' && p.room !== undefined) inFlight.set(p.room, id);
    const rejoin = [...this.rooms.entries()].filter(([room]) => !queuedJoins.has(room));
    this.emit('welcome', { ...f, previousPeer, rejoining: rejoin.map(([r]) => r) });
    // A fresh session is in no room: join again every room we were in (or were joining),
    // reusing the id of a join whose reply the old session never delivered.
    for (const [room, meta] of rejoin) {
      const frame = { type: 'join', room };
      if (meta !== undefined) frame.meta = meta;
      const media = this.roomMedia.get(room);
      if (media) frame.media = media;
      if (inFlight.has(room)) this._write({ ...frame, id: inFlight.get(room) });
      else this.join(room, meta, media ? { media } : undefined).catch((err) => this.emit('error', err));
    }
    for (const frame of queued) this._write(frame);
  }

  /** Resolves or rejects the request a reply belongs to. @param {ServerFrame} f */
  _settle(f) {
    let key = f.reply_to;
    if (key === undefined && f.type === 'full') {
      // `full` might come without reply_to; match the pending join for that room.
      for (const [k, p] of this._pending) if (p.type === 'join' && p.room === f.room) key = k;
    }
    if (key === undefined || !this._pending.has(key)) return;
    const p = this._pending.get(key);
    this._pending.delete(key);
    clearTimeout(p.timer);
    if (f.type === 'error') p.reject(new SignalError(f.code, f.message, f));
    else if (f.type === 'full') p.reject(new SignalError('full', `room ${f.room} is full`, f));
    else p.resolve(f);
  }

  _flush() {
    const queued = this._outbox;
    this._outbox = [];
    for (const frame of queued) this._write(frame);
  }

  /** @param {object} frame */
  _write(frame) {
    const ws = this.ws;
    if (this.state !== 'open' || !ws || ws.readyState !== 1) {
      // Bounded: a long outage must not grow memory without end; the oldest go first
      // (stale ICE candidates and chat are worth less than the latest state).
      if (this._outbox.length >= OUTBOX_LIMIT) this._outbox.shift();
      this._outbox.push(frame);
      return;
    }
    ws.send(JSON.stringify(frame));
  }

  /**
   * Sends a request with an id and waits for its reply.
   * @param {object & {type: string}} frame
   * @returns {Promise<ServerFrame>}
   */
  request(frame) {
    if (this.state === 'closed') return Promise.reject(new SignalError('closed', 'client is closed'));
    const id = `c${this._nextId++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new SignalError('timeout', `no reply to ${frame.type}`));
      }, this.options.requestTimeoutMs ?? 15000);
      this._pending.set(id, { resolve, reject, timer, type: frame.type, room: /** @type {any} */ (frame).room });
      this._write({ ...frame, id });
    });
  }

  /** Fire-and-forget send of a raw request. @param {object} frame */
  send(frame) {
    this._write(frame);
  }

  /**
   * Joins a room. Rejects with SignalError code `full` when the room is at capacity.
   * `media` ('mesh'|'sfu') is the kind asked for should this join create the room
   * (PROTOCOL.md §7); the `joined` frame's `media` says what the room is.
   * @param {string} room @param {object} [meta] @param {{media?: 'mesh'|'sfu'}} [opts]
   * @returns {Promise<ServerFrame>} the `joined` frame
   */
  async join(room, meta, opts = {}) {
    this.rooms.set(room, meta);
    if (opts.media) this.roomMedia.set(room, opts.media);
    else this.roomMedia.delete(room);
    try {
      const frame = { type: 'join', room };
      if (meta !== undefined) frame.meta = meta;
      if (opts.media) frame.media = opts.media;
      return await this.request(frame);
    } catch (err) {
      if (!(err instanceof SignalError && err.code === 'already_joined')) {
        this.rooms.delete(room);
        this.roomMedia.delete(room);
      }
      throw err;
    }
  }

  /** @param {string} room */
  async leave(room) {
    this.rooms.delete(room);
    this.roomMedia.delete(room);
    return this.request({ type: 'leave', room });
  }

  /**
   * Sends `data` to one peer of the room, or to all others without `to`.
   * @param {string} room @param {any} data @param {string} [to]
   */
  message(room, data, to) {
    const frame = { type: 'message', room, data };
    if (to) frame.to = to;
    this._write(frame);
  }

  /** Rings a user (§3). Resolves with `ringing` ({call}). @param {string} user @param {object} [meta] */
  call(user, meta) {
    const frame = { type: 'call', to: user };
    if (meta !== undefined) frame.meta = meta;
    return this.request(frame);
  }
  /**
   * Accepts a call. Resolves with the `joined` frame of the call's room (also emitted as
   * a `joined` event), whether or not the server marks it as the reply.
   * @param {string} call
   */
  accept(call) {
    return new Promise((resolve, reject) => {
      const off = this.on('joined', (f) => {
        off();
        resolve(f);
      });
      this.request({ type: 'accept', call }).then(
        (f) => {
          off();
          resolve(f);
        },
        (err) => {
          off();
          reject(err);
        },
      );
    });
  }
  /**
   * Declines a call. The server does not answer a successful decline, so this does not
   * wait; a `no_such_call` comes back as an `error` event.
   * @param {string} call
   */
  decline(call) {
    this._write({ type: 'decline', call, id: `c${this._nextId++}` });
    return Promise.resolve();
  }
  /** @param {string} call */
  cancel(call) {
    this._write({ type: 'cancel', call });
  }

  /**
   * Ends the socket without a clean close, as a network failure would; the client resumes.
   * Used by tests and by the silence detector.
   * @param {number} [code]
   */
  dropConnection(code = 4000) {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    this._stopPings();
    try {
      ws.close(code);
    } catch {
      // Already closing.
    }
    this._onClose(code, 'dropped');
  }

  /** Leaves for good: close code 1000, the others see `bye` at once, no reconnect. */
  close(code = CLOSE_NORMAL) {
    this._closedByUser = true;
    clearTimeout(this._timer);
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= 1) {
      try {
        ws.close(code === CLOSE_GOING_AWAY ? CLOSE_GOING_AWAY : CLOSE_NORMAL);
      } catch {
        // Already closing.
      }
    }
    if (this.state !== 'closed') this._finish(code, 'closed by client');
  }

  /**
   * A WebRTC mesh over one room: one RTCPeerConnection per other peer.
   * @param {string} room @param {MeshOptions} [options]
   */
  mesh(room, options = {}) {
    return new Mesh(this, room, options);
  }

  /**
   * A call in a room of either kind: `{media: 'sfu'}` asks for a room whose media goes
   * through the server (one RTCPeerConnection, PROTOCOL.md §7) should the join create it;
   * without it the server's default kind applies. Joining an existing room takes that
   * room's kind, whatever was asked. The same object and events as `mesh()`.
   * @param {string} room @param {MeshOptions} [options]
   */
  room(room, options = {}) {
    return new Mesh(this, room, options);
  }
}

/**
 * @typedef {object} MeshOptions
 * @property {MediaStream} [stream] local media to send to every peer.
 * @property {'mesh'|'sfu'|MediaStreamConstraints} [media] 'mesh' or 'sfu': the room kind asked
 *   for should the join create the room (PROTOCOL.md §7). An object is taken as `constraints`
 *   (its older name).
 * @property {MediaStreamConstraints} [constraints] without `stream`: getUserMedia(constraints) at join.
 * @property {boolean} [simulcast] SFU rooms: send video in three layers when the browser can (default true).
 * @property {boolean} [relayOnly] iceTransportPolicy 'relay'.
 * @property {boolean} [dataChannel] open a negotiated data channel 'switchboard' (id 0) per peer.
 * @property {RTCIceServer[]} [iceServers] overrides welcome.ice_servers.
 * @property {typeof RTCPeerConnection} [RTCPeerConnection]
 * @property {number} [disconnectedRestartMs] ICE restart after this long 'disconnected' (default 4000).
 * @property {number} [answerWaitMs] how long a newcomer waits for the first offer before offering itself (default 3000).
 */

/**
 * One remote peer of a mesh and its RTCPeerConnection. Perfect negotiation
 * (see MDN "Establishing a connection: the WebRTC perfect negotiation pattern").
 */
export class Peer extends Emitter {
  /**
   * @param {Mesh} mesh @param {string} id @param {object} [meta]
   * @param {boolean} [initiator] true on the side that learnt of the other through
   *   `other_joined`: it offers first, while the newcomer waits for that offer and answers
   *   with its own tracks. Two offers crossing at the start would be handled by perfect
   *   negotiation too, but a rollback in the middle of ICE gathering makes set-up slower.
   */
  constructor(mesh, id, meta, initiator = true) {
    super();
    this.mesh = mesh;
    this.id = id;
    this.meta = meta ?? {};
    // Both sides compute the same answer, so exactly one of them yields on glare.
    this.polite = String(mesh.client.peer) < String(id);
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.isSettingRemoteAnswerPending = false;
    /** Inbound signaling is handled one message at a time, in arrival order. */
    this._queue = Promise.resolve();
    /** @type {Map<string, MediaStream>} */
    this.streams = new Map();
    /** @type {RTCDataChannel|null} */
    this.channel = null;
    this.restarts = 0;
    this._disconnectTimer = null;
    this.closed = false;
    const PC = mesh.options.RTCPeerConnection ?? globalThis.RTCPeerConnection;
    this.pc = new PC(mesh.rtcConfig());
    this._wire();
    /** Senders of the main stream by kind, kept so a track can be swapped even after replaceTrack(null). */
    /** @type {Record<string, RTCRtpSender>} */
    this.senders = {};
    this.started = false;
    this._startTimer = null;
    if (initiator) this.start();
    // Should the initiator's offer never come (it left, or it runs an older client), go first.
    else this._startTimer = setTimeout(() => this.start(), mesh.options.answerWaitMs ?? 3000);
  }

  /** Adds our tracks and data channel; from here on, changes renegotiate as usual. */
  start() {
    clearTimeout(this._startTimer);
    if (this.started || this.closed) return;
    this.started = true;
    const mesh = this.mesh;
    for (const track of mesh.stream?.getTracks() ?? []) this.senders[track.kind] = this.pc.addTrack(track, mesh.stream);
    for (const { track, stream } of mesh.extraTracks) this.pc.addTrack(track, stream);
    if (mesh.options.dataChannel) this._setChannel(this.pc.createDataChannel('switchboard', { negotiated: true, id: 0 }));
  }

  _wire() {
    const pc = this.pc;
    pc.onnegotiationneeded = async () => {
      try {
        this.makingOffer = true;
        await pc.setLocalDescription();
        this._signal({ kind: pc.localDescription.type, sdp: pc.localDescription.sdp });
      } catch (err) {
        this.mesh.emit('error', err);
      } finally {
        this.makingOffer = false;
      }
    };
    pc.onicecandidate = ({ candidate }) => {
      if (candidate) this._signal({ kind: 'candidate', candidate: candidate.toJSON() });
    };
    pc.ontrack = ({ track, streams }) => {
      const stream = streams[0] ?? new MediaStream([track]);
      const isNew = !this.streams.has(stream.id);
      this.streams.set(stream.id, stream);
      track.addEventListener('ended', () => this.emit('track_ended', { track, stream }));
      stream.onremovetrack = () => {
        if (stream.getTracks().length === 0) {
          this.streams.delete(stream.id);
          this.emit('stream_removed', { stream });
          this.mesh.emit('stream_removed', { peer: this, stream });
        }
      };
      this.emit('track', { track, stream, isNew });
      this.mesh.emit('track', { peer: this, track, stream, isNew });
    };
    pc.oniceconnectionstatechange = () => {
      const s = pc.iceConnectionState;
      clearTimeout(this._disconnectTimer);
      if (s === 'failed') this.restartIce();
      else if (s === 'disconnected') {
        // 'disconnected' often heals by itself; restart only if it lingers.
        this._disconnectTimer = setTimeout(() => {
          if (pc.iceConnectionState === 'disconnected') this.restartIce();
        }, this.mesh.options.disconnectedRestartMs ?? 4000);
      }
    };
    pc.onconnectionstatechange = () => {
      this.emit('state', pc.connectionState);
      this.mesh.emit('peer_state', { peer: this, state: pc.connectionState });
    };
    pc.ondatachannel = ({ channel }) => this.emit('datachannel', channel);
  }

  /** @param {RTCDataChannel} ch */
  _setChannel(ch) {
    this.channel = ch;
    ch.onmessage = (ev) => {
      this.emit('channel_message', ev.data);
      this.mesh.emit('channel_message', { peer: this, data: ev.data });
    };
  }

  /** Sends a signaling payload to this peer through the room. @param {object} data */
  _signal(data) {
    if (this.closed) return;
    this.mesh.client.message(this.mesh.room, data, this.id);
  }

  restartIce() {
    if (this.closed) return;
    this.restarts += 1;
    this.pc.restartIce();
  }

  /** @param {any} data the `data` of a `message` frame from this peer */
  handleSignal(data) {
    this._queue = this._queue.then(() => this._handle(data)).catch((err) => this.mesh.emit('error', err));
    return this._queue;
  }

  async _handle(data) {
    if (this.closed) return;
    const pc = this.pc;
    if (data.kind === 'offer' || data.kind === 'answer') {
      const description = { type: data.kind, sdp: data.sdp };
      const readyForOffer =
        !this.makingOffer && (pc.signalingState === 'stable' || this.isSettingRemoteAnswerPending);
      const offerCollision = description.type === 'offer' && !readyForOffer;
      this.ignoreOffer = !this.polite && offerCollision;
      if (this.ignoreOffer) return;
      this.isSettingRemoteAnswerPending = description.type === 'answer';
      try {
        // On collision the polite side rolls its own offer back implicitly.
        await pc.setRemoteDescription(description);
      } finally {
        this.isSettingRemoteAnswerPending = false;
      }
      if (description.type === 'offer') {
        // addTrack now reuses the offered transceivers, so the answer carries our media.
        this.start();
        await pc.setLocalDescription();
        this._signal({ kind: pc.localDescription.type, sdp: pc.localDescription.sdp });
      }
    } else if (data.kind === 'candidate') {
      try {
        await pc.addIceCandidate(data.candidate ?? null);
      } catch (err) {
        // Candidates of an offer we ignored are expected to fail.
        if (!this.ignoreOffer) throw err;
      }
    }
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this._disconnectTimer);
    clearTimeout(this._startTimer);
    this.pc.onnegotiationneeded = null;
    this.pc.onicecandidate = null;
    this.pc.ontrack = null;
    this.pc.oniceconnectionstatechange = null;
    this.pc.onconnectionstatechange = null;
    try {
      this.pc.close();
    } catch {
      // Already closed.
    }
    this.emit('closed', {});
  }
}

const SIGNAL_KINDS = new Set(['offer', 'answer', 'candidate']);

/**
 * The simulcast layers a video track is published in to an SFU: quarter, half and full
 * resolution. The server forwards each receiver the layer its bandwidth allows.
 */
export const SIMULCAST_ENCODINGS = Object.freeze([
  Object.freeze({ rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 }),
  Object.freeze({ rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 }),
  Object.freeze({ rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 }),
]);

/**
 * Another peer of an SFU room. It has no connection of its own: its tracks come over the
 * room's one connection with the server (`room.link`), grouped by stream id, which is the
 * publisher's peer id. `pc` is that shared connection.
 */
export class SfuPeer extends Emitter {
  /** @param {Mesh} room @param {string} id @param {object} [meta] */
  constructor(room, id, meta) {
    super();
    this.room = room;
    this.id = id;
    this.meta = meta ?? {};
    /** @type {Map<string, MediaStream>} */
    this.streams = new Map();
    this.channel = null;
    this.restarts = 0;
    this.started = true;
    this.closed = false;
    /** @type {Record<string, RTCRtpSender>} */
    this.senders = {};
  }

  /** @returns {RTCPeerConnection|null} the room's connection with the server */
  get pc() {
    return this.room.link?.pc ?? null;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.emit('closed', {});
  }
}

/**
 * The one RTCPeerConnection of an SFU room, with the server (PROTOCOL.md §7). The client
 * offers first with its own tracks; afterwards the server offers whenever others' tracks
 * come or go. Perfect negotiation with the client as the polite side: on a collision it
 * rolls its own offer back, answers the server's, and offers again once stable.
 */
export class SfuLink extends Emitter {
  /** @param {Mesh} room */
  constructor(room) {
    super();
    this.room = room;
    this.makingOffer = false;
    this.isSettingRemoteAnswerPending = false;
    this.restarts = 0;
    this.closed = false;
    /** Whether video goes out in simulcast layers (false: the browser refused them). */
    this.simulcast = false;
    /** Inbound signaling is handled one message at a time, in arrival order. */
    this._queue = Promise.resolve();
    this._disconnectTimer = null;
    /** @type {Map<MediaStreamTrack, RTCRtpSender>} */
    this.senders = new Map();
    /** Senders published with simulcast layers. @type {Set<RTCRtpSender>} */
    this._layered = new Set();
    /**
     * The main stream's sender per kind, kept so that a track can be swapped in even after
     * replaceTrack(null). @type {Record<string, RTCRtpSender>}
     */
    this.mainSenders = {};
    const PC = room.options.RTCPeerConnection ?? globalThis.RTCPeerConnection;
    this.pc = new PC(room.rtcConfig());
    this._wire();
  }

  /** Publishes the room's tracks; the first offer goes out on negotiationneeded. */
  start() {
    const room = this.room;
    for (const track of room.stream?.getTracks() ?? []) this.publish(track, room.stream, true);
    for (const { track, stream } of room.extraTracks) this.publish(track, stream, false);
    if (this.senders.size === 0) {
      // An offer needs an m-line; with nothing to send, a data channel (unused) is one that
      // makes the server send nothing on our behalf.
      this.pc.createDataChannel('switchboard');
    }
  }

  /**
   * Sends a track to the server: sendonly, video as simulcast layers when the browser takes
   * them. @param {MediaStreamTrack} track @param {MediaStream|null|undefined} stream
   * @param {boolean} layered whether video may be simulcast (the camera; not a screen)
   */
  publish(track, stream, layered) {
    if (this.closed || this.senders.has(track)) return this.senders.get(track);
    const init = { direction: /** @type {RTCRtpTransceiverDirection} */ ('sendonly'), streams: stream ? [stream] : [] };
    /** @type {RTCRtpTransceiver|null} */
    let transceiver = null;
    if (track.kind === 'video' && layered && this.room.options.simulcast !== false) {
      try {
        transceiver = this.pc.addTransceiver(track, { ...init, sendEncodings: SIMULCAST_ENCODINGS.map((e) => ({ ...e })) });
        this.simulcast = transceiver.sender.getParameters().encodings?.length > 1;
        if (this.simulcast) this._layered.add(transceiver.sender);
      } catch {
        // No simulcast here: one layer, below.
        transceiver = null;
      }
    }
    transceiver ??= this.pc.addTransceiver(track, init);
    this.senders.set(track, transceiver.sender);
    if (layered) this.mainSenders[track.kind] ??= transceiver.sender;
    return transceiver.sender;
  }

  /**
   * After an answer: a server that took no simulcast leaves only the first layer (the
   * quarter one) sending; send that one at full size instead.
   */
  async _checkLayers() {
    const sdp = this.pc.remoteDescription?.sdp ?? '';
    if (this._layered.size === 0 || sdp.includes('a=simulcast:')) return;
    this.simulcast = false;
    const full = SIMULCAST_ENCODINGS[SIMULCAST_ENCODINGS.length - 1];
    for (const sender of this._layered) {
      this._layered.delete(sender);
      const params = sender.getParameters();
      if (!params.encodings?.length) continue;
      params.encodings[0].scaleResolutionDownBy = full.scaleResolutionDownBy;
      params.encodings[0].maxBitrate = full.maxBitrate;
      try {
        await sender.setParameters(params);
      } catch (err) {
        this.room.emit('error', err);
      }
    }
  }

  /** Stops sending a track; renegotiates. @param {MediaStreamTrack} track */
  unpublish(track) {
    const sender = this.senders.get(track) ?? this.pc.getSenders().find((s) => s.track === track);
    this.senders.delete(track);
    if (!sender || this.closed) return;
    const t = this.pc.getTransceivers().find((x) => x.sender === sender);
    try {
      if (t) t.stop();
      else this.pc.removeTrack(sender);
    } catch {
      // Already stopped or closed.
    }
  }

  /**
   * Swaps the main stream's track of a kind without renegotiating; false when nothing of
   * that kind was ever published. @param {'audio'|'video'} kind @param {MediaStreamTrack|null} track
   */
  async replace(kind, track) {
    const sender = this.mainSenders[kind];
    if (!sender || this.closed) return false;
    for (const [t, s] of this.senders) if (s === sender) this.senders.delete(t);
    if (track) this.senders.set(track, sender);
    await sender.replaceTrack(track);
    return true;
  }

  _wire() {
    const pc = this.pc;
    pc.onnegotiationneeded = async () => {
      try {
        this.makingOffer = true;
        await pc.setLocalDescription();
        if (pc.localDescription?.type === 'offer') this._signal({ kind: 'offer', sdp: pc.localDescription.sdp });
      } catch (err) {
        this.room.emit('error', err);
      } finally {
        this.makingOffer = false;
      }
    };
    pc.onicecandidate = ({ candidate }) => {
      // An ICE-lite server learns our addresses from our checks; an mDNS name it could
      // not resolve anyway.
      if (candidate && !/\s\S+\.local\s/.test(candidate.candidate)) this._signal({ kind: 'candidate', candidate: candidate.toJSON() });
    };
    pc.ontrack = (ev) => this.room._onSfuTrack(ev);
    pc.oniceconnectionstatechange = () => {
      const s = pc.iceConnectionState;
      clearTimeout(this._disconnectTimer);
      if (s === 'failed') this.restartIce();
      else if (s === 'disconnected') {
        this._disconnectTimer = setTimeout(() => {
          if (pc.iceConnectionState === 'disconnected') this.restartIce();
        }, this.room.options.disconnectedRestartMs ?? 4000);
      }
    };
    pc.onconnectionstatechange = () => {
      this.emit('state', pc.connectionState);
      this.room.emit('server_state', { state: pc.connectionState });
      for (const p of this.room.peers.values()) {
        p.emit('state', pc.connectionState);
        this.room.emit('peer_state', { peer: p, state: pc.connectionState });
      }
    };
  }

  /** @param {object} data */
  _signal(data) {
    if (this.closed) return;
    this.room.client.send({ type: 'media', room: this.room.room, data });
  }

  restartIce() {
    if (this.closed) return;
    this.restarts += 1;
    // We are the controlling side against an ICE-lite server: a fresh offer restarts it.
    this.pc.restartIce();
  }

  /** @param {any} data the `data` of a `media` frame */
  handleSignal(data) {
    this._queue = this._queue.then(() => this._handle(data)).catch((err) => this.room.emit('error', err));
    return this._queue;
  }

  async _handle(data) {
    if (this.closed || !data || typeof data !== 'object') return;
    const pc = this.pc;
    if (data.kind === 'offer' || data.kind === 'answer') {
      if (data.kind === 'answer' && pc.signalingState !== 'have-local-offer') return; // a stale answer to an offer we rolled back
      this.isSettingRemoteAnswerPending = data.kind === 'answer';
      try {
        // Polite: an offer that collides with ours rolls ours back (implicitly); our
        // negotiationneeded fires again once stable and re-offers what is still unsent.
        await pc.setRemoteDescription({ type: data.kind, sdp: data.sdp });
      } finally {
        this.isSettingRemoteAnswerPending = false;
      }
      if (data.kind === 'offer') {
        await pc.setLocalDescription();
        this._signal({ kind: 'answer', sdp: pc.localDescription.sdp });
      } else {
        await this._checkLayers();
      }
    } else if (data.kind === 'candidate') {
      try {
        await pc.addIceCandidate(data.candidate ?? null);
      } catch (err) {
        // A candidate for a description we rolled back may not fit; nothing is lost.
        if (pc.signalingState === 'stable') this.room.emit('error', err);
      }
    }
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this._disconnectTimer);
    const pc = this.pc;
    pc.onnegotiationneeded = null;
    pc.onicecandidate = null;
    pc.ontrack = null;
    pc.oniceconnectionstatechange = null;
    pc.onconnectionstatechange = null;
    try {
      pc.close();
    } catch {
      // Already closed.
    }
    this.emit('closed', {});
  }
}

/**
 * A call with everyone in a room. Events: `joined` (frame), `peer` (Peer), `peer_left`
 * (Peer), `track` ({peer, track, stream, isNew}), `stream_removed`, `peer_state`
 * ({peer, state}), `data` ({peer, from, data}) for app messages (any `data` whose kind is
 * not offer/answer/candidate), `channel_message`, `full`, `error`, `left`.
 *
 * The room's kind comes with `joined` (`room.media`): in a mesh room each other peer is a
 * `Peer` with its own connection; in an SFU room (PROTOCOL.md §7) there is one connection,
 * `room.link` (an SfuLink) with the server, the others are `SfuPeer`s whose tracks arrive
 * over it, `server_state` ({state}) follows that connection, `track_removed` ({peer,
 * track, stream}) says the server took a track away, and `media_error` (the `error` frame)
 * that the server ended our media (a rejoin starts it again). In a cluster, `media_moved`
 * says the room's media node died and the room made a new connection with the node that
 * took its media over (the others' streams come again, as `track` events).
 */
export class Mesh extends Emitter {
  /** @param {SignalingClient} client @param {string} room @param {MeshOptions} options */
  constructor(client, room, options) {
    super();
    this.client = client;
    this.room = room;
    this.options = { ...options };
    this.stream = options.stream ?? null;
    /** @type {{track: MediaStreamTrack, stream: MediaStream}[]} */
    this.extraTracks = [];
    /** @type {Map<string, Peer|SfuPeer>} */
    this.peers = new Map();
    this.meta = undefined;
    this.active = false;
    /** 'mesh' | 'sfu' once joined: the room's kind, from the `joined` frame. */
    /** @type {'mesh'|'sfu'|null} */
    this.media = null;
    /** The connection with the server, in an SFU room. @type {SfuLink|null} */
    this.link = null;
    this._offs = [];
  }

  /** The room kind asked for at join ('mesh'|'sfu'), if any. */
  get _askedKind() {
    const m = this.options.media;
    return m === 'sfu' || m === 'mesh' ? m : undefined;
  }

  /** @returns {RTCConfiguration} */
  rtcConfig() {
    return {
      iceServers: this.options.iceServers ?? this.client.iceServers,
      iceTransportPolicy: this.options.relayOnly ? 'relay' : 'all',
      bundlePolicy: 'max-bundle',
    };
  }

  _listen() {
    const c = this.client;
    const mine = (f) => f.room === this.room;
    this._offs.push(
      c.on('joined', (f) => mine(f) && this._onJoined(f)),
      c.on('other_joined', (f) => mine(f) && this._peer(f.peer, f.meta, true)),
      c.on('bye', (f) => mine(f) && this._drop(f.peer)),
      c.on('message', (f) => mine(f) && this._onMessage(f)),
      c.on('media', (f) => mine(f) && this.link?.handleSignal(f.data)),
      // The server's word that our media with it failed (SDP it refused, a session that
      // died): the room stays joined, the call needs a rejoin to get media again. In a
      // cluster, "media node lost" means the node relaying the room died and another took
      // the room: a new connection (the old one's DTLS cannot move) lands on it.
      c.on('error', (f) => {
        if (!mine(f) || this.media !== 'sfu' || f.code === 'kicked') return;
        if (f.code === 'unavailable' && f.message === 'media node lost' && this.link) this._relink();
        else this.emit('media_error', f);
      }),
      c.on('full', (f) => mine(f) && this.emit('full', f)),
      c.on('welcome', (f) => {
        // A fresh session has a fresh peer id: every old connection is unusable.
        if (f.previousPeer && f.previousPeer !== f.peer) {
          for (const id of [...this.peers.keys()]) this._drop(id);
          this._closeLink();
        }
      }),
    );
  }

  /** Joins the room and calls everyone already there. @param {object} [meta] */
  async join(meta) {
    this.meta = meta;
    const m = this.options.media;
    const constraints = this.options.constraints ?? (m && typeof m === 'object' ? m : undefined);
    if (!this.stream && constraints) this.stream = await navigator.mediaDevices.getUserMedia(constraints);
    if (!this.active) this._listen();
    this.active = true;
    try {
      const kind = this._askedKind;
      return await this.client.join(this.room, meta, kind ? { media: kind } : undefined);
    } catch (err) {
      this.leave(false);
      throw err;
    }
  }

  /** Takes over a room the server already joined us to (an accepted direct call). @param {ServerFrame} [joined] */
  adopt(joined) {
    if (!this.active) this._listen();
    this.active = true;
    if (joined) this._onJoined(joined);
  }

  /** @param {ServerFrame} f */
  _onJoined(f) {
    const media = f.media === 'sfu' ? 'sfu' : 'mesh';
    if (this.media && this.media !== media) {
      // The room ended while we were away and came back as the other kind.
      for (const id of [...this.peers.keys()]) this._drop(id);
    }
    this.media = media;
    if (media === 'sfu') {
      // A (re)join is a fresh media session on the server: the old connection is gone.
      for (const id of [...this.peers.keys()]) this._drop(id);
      this._closeLink();
    }
    // After a rejoin, peers that vanished while we were away must go.
    const present = new Set((f.peers ?? []).map((p) => p.peer));
    for (const id of [...this.peers.keys()]) if (!present.has(id)) this._drop(id);
    for (const p of f.peers ?? []) this._peer(p.peer, p.meta, false);
    if (media === 'sfu') {
      this.link = new SfuLink(this);
      this.link.start();
    }
    this.emit('joined', f);
  }

  _closeLink() {
    const link = this.link;
    this.link = null;
    link?.close();
  }

  /**
   * The room's media moved to another server node (PROTOCOL.md §7, docs/scaling.md): the
   * others' tracks of the old connection are gone, and a new connection offers again.
   * Emits `media_moved`.
   */
  _relink() {
    this._closeLink();
    for (const p of this.peers.values()) {
      if (!(p instanceof SfuPeer)) continue;
      for (const stream of [...p.streams.values()]) {
        p.streams.delete(stream.id);
        p.emit('stream_removed', { stream });
        this.emit('stream_removed', { peer: p, stream });
      }
    }
    this.link = new SfuLink(this);
    this.link.start();
    this.emit('media_moved', {});
  }

  /**
   * A track from the server. Its stream id is the publisher's peer id (PROTOCOL.md §7).
   * @param {RTCTrackEvent} ev
   */
  _onSfuTrack({ track, streams }) {
    const stream = streams[0] ?? new MediaStream([track]);
    const peer = /** @type {SfuPeer} */ (this._peer(stream.id));
    const isNew = !peer.streams.has(stream.id);
    peer.streams.set(stream.id, stream);
    // The server takes a track away by renegotiation: a stopped m-line ends the track, an
    // inactive one takes it out of the stream; either way the stream loses it once. A
    // transceiver may later carry another peer's track, in another stream.
    const gone = (/** @type {MediaStreamTrack} */ t, byBrowser) => {
      if (!byBrowser) {
        if (!stream.getTracks().includes(t)) return;
        stream.removeTrack(t);
      }
      const owner = /** @type {SfuPeer|undefined} */ (this.peers.get(stream.id));
      if (!owner) return;
      owner.emit('track_removed', { track: t, stream });
      this.emit('track_removed', { peer: owner, track: t, stream });
      if (stream.getTracks().length > 0 || owner.streams.get(stream.id) !== stream) return;
      owner.streams.delete(stream.id);
      owner.emit('stream_removed', { stream });
      this.emit('stream_removed', { peer: owner, stream });
    };
    track.addEventListener('ended', () => {
      peer.emit('track_ended', { track, stream });
      gone(track, false);
    });
    stream.onremovetrack = (ev) => gone(ev.track, true);
    peer.emit('track', { track, stream, isNew });
    this.emit('track', { peer, track, stream, isNew });
  }

  /** @param {string} id @param {object} [meta] @param {boolean} [initiator] @returns {Peer|SfuPeer} */
  _peer(id, meta, initiator = false) {
    let peer = this.peers.get(id);
    if (peer) {
      if (meta) peer.meta = meta;
      return peer;
    }
    peer = this.media === 'sfu' ? new SfuPeer(this, id, meta) : new Peer(this, id, meta, initiator);
    this.peers.set(id, peer);
    this.emit('peer', peer);
    return peer;
  }

  /** @param {string} id */
  _drop(id) {
    const peer = this.peers.get(id);
    if (!peer) return;
    this.peers.delete(id);
    peer.close();
    this.emit('peer_left', peer);
  }

  /** @param {ServerFrame} f */
  _onMessage(f) {
    const data = f.data;
    if (data && typeof data === 'object' && SIGNAL_KINDS.has(data.kind)) {
      // In an SFU room media signaling is with the server alone (`media` frames).
      if (this.media === 'sfu') return;
      // A message can beat other_joined only across a rejoin; make the peer on demand.
      this._peer(f.from).handleSignal(data);
      return;
    }
    this.emit('data', { peer: this.peers.get(f.from) ?? null, from: f.from, data });
  }

  /** Sends app data (chat, mute state) to everyone, or to one peer. @param {any} data @param {string} [to] */
  send(data, to) {
    this.client.message(this.room, data, to);
  }

  /**
   * Sends over every open data channel (option `dataChannel`); returns how many got it.
   * @param {string|ArrayBuffer|Blob|ArrayBufferView} data
   */
  sendChannel(data) {
    let n = 0;
    for (const p of this.peers.values()) {
      if (p.channel?.readyState === 'open') {
        p.channel.send(/** @type {any} */ (data));
        n += 1;
      }
    }
    return n;
  }

  /**
   * Swaps the outgoing track of a kind on every connection, without renegotiation.
   * @param {MediaStreamTrack|null} track @param {'audio'|'video'} kind
   */
  async replaceTrack(track, kind) {
    const old = this.stream?.getTracks().find((t) => t.kind === kind);
    if (this.stream && track && old !== track) {
      if (old) this.stream.removeTrack(old);
      this.stream.addTrack(track);
    }
    if (this.link) {
      const link = this.link;
      if (await link.replace(kind, track)) return;
      if (track && this.stream) link.publish(track, this.stream, true);
      return;
    }
    await Promise.all(
      [...this.peers.values()].map((p) => {
        if (!p.started || p.closed) return undefined;
        const sender = p.senders[kind];
        if (sender) return sender.replaceTrack(track);
        if (track && this.stream) p.senders[kind] = p.pc.addTrack(track, this.stream);
        return undefined;
      }),
    );
  }

  /**
   * Gives the mesh its local media after join (a camera or permission prompt that answered
   * late): connections already started add the tracks and renegotiate, peers yet to start
   * take them when they do. With media already set, it swaps tracks as replaceTrack does.
   * @param {MediaStream} stream
   */
  async setStream(stream) {
    if (this.stream) {
      for (const t of stream.getTracks()) await this.replaceTrack(t, /** @type {any} */ (t.kind));
      return;
    }
    this.stream = stream;
    if (this.link) {
      for (const track of stream.getTracks()) this.link.publish(track, stream, true);
      return;
    }
    await Promise.all(
      [...this.peers.values()].flatMap((p) => {
        if (!p.started || p.closed) return [];
        return stream.getTracks().map((track) => {
          const sender = p.senders[track.kind];
          if (sender) return sender.replaceTrack(track);
          p.senders[track.kind] = p.pc.addTrack(track, stream);
          return undefined;
        });
      }),
    );
  }

  /** Adds an extra track (e.g. a screen share) to every connection; renegotiates. */
  addTrack(/** @type {MediaStreamTrack} */ track, /** @type {MediaStream} */ stream) {
    this.extraTracks.push({ track, stream });
    if (this.media === 'sfu') {
      this.link?.publish(track, stream, false);
      return;
    }
    // A peer that has not started yet takes extraTracks when it does.
    for (const p of this.peers.values()) if (p.started && !p.closed) p.pc.addTrack(track, stream);
  }

  /** Removes an extra track from every connection; renegotiates. @param {MediaStreamTrack} track */
  removeTrack(track) {
    this.extraTracks = this.extraTracks.filter((t) => t.track !== track);
    if (this.media === 'sfu') {
      this.link?.unpublish(track);
      return;
    }
    for (const p of this.peers.values()) {
      if (p.closed) continue;
      const sender = p.pc.getSenders().find((s) => s.track === track);
      if (sender) p.pc.removeTrack(sender);
    }
  }

  /** Switches relay-only on or off for every connection and restarts ICE so it applies now. @param {boolean} on */
  setRelayOnly(on) {
    this.options.relayOnly = on;
    if (this.link) {
      const pc = this.link.pc;
      pc.setConfiguration({ ...pc.getConfiguration(), iceTransportPolicy: on ? 'relay' : 'all' });
      this.link.restartIce();
      return;
    }
    for (const p of this.peers.values()) {
      if (p.closed) continue;
      p.pc.setConfiguration({ ...p.pc.getConfiguration(), iceTransportPolicy: on ? 'relay' : 'all' });
      p.restartIce();
    }
  }

  /** Leaves the room and closes every connection. @param {boolean} [tellServer] */
  leave(tellServer = true) {
    for (const off of this._offs) off();
    this._offs = [];
    for (const id of [...this.peers.keys()]) this._drop(id);
    const wasActive = this.active;
    this.active = false;
    if (tellServer && wasActive && this.client.rooms.has(this.room) && this.client.state !== 'closed') {
      this.client.leave(this.room).catch(() => {});
    }
    // After the leave is on its way: an SFU that saw the media end first would take it
    // for a failure.
    this._closeLink();
    this.emit('left', {});
  }
}
