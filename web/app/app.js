// The Switchboard web client: a video call over the SDK, in a mesh room (a connection per
// peer) or an SFU room (one connection, with the server, which forwards everyone's media).
import { connect, SignalError } from '/sdk/switchboard.js';

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const MAX_MESH = 6;

const params = new URLSearchParams(location.search);
const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;

const state = {
  /** lobby | joining | call | full */
  phase: 'lobby',
  room: '',
  name: '',
  banner: null,
  muted: false,
  cameraOff: false,
  relayOnly: params.get('relay') === '1',
  /** Ask for an SFU room when this join creates the room ("group call through the server"). */
  sfu: params.get('media') === 'sfu',
  /** @type {MediaStream|null} */
  stream: null,
  /** 'ok' | 'denied' | 'nodevices' | 'error' */
  media: 'pending',
  /** @type {MediaStream|null} */
  screen: null,
  recording: false,
  /** peerId -> {name, muted, cameraOff, screen, camera, connection} */
  peers: {},
  chat: [],
  everOpen: false,
};

/** Per-peer stats, refreshed every second while in a call (read by the e2e tests too). */
const stats = {};
/** @type {import('/sdk/switchboard.js').Mesh|null} */
let mesh = null;

// ---- identity and signaling ------------------------------------------------------------

function makeId(prefix) {
  const words = ['amber', 'brisk', 'cedar', 'delta', 'ember', 'fable', 'gusty', 'hazel', 'ivory', 'jolly', 'koala', 'lunar', 'maple', 'nova', 'otter', 'pixel', 'quartz', 'river', 'solar', 'tulip'];
  const w = () => words[Math.floor(Math.random() * words.length)];
  return `${prefix}${w()}-${w()}-${Math.floor(100 + Math.random() * 900)}`;
}

function storage(key, fallback) {
  try {
    const v = localStorage.getItem(key);
    if (v) return v;
    localStorage.setItem(key, fallback);
  } catch {
    // Private mode: keep it for this page only.
  }
  return fallback;
}

let userId = params.get('user') || storage('switchboard.user', makeId('u-'));
let client = startClient();

function startClient() {
  const c = connect(wsUrl, { user: userId, token: params.get('token') || undefined });
  c.on('state', onConnState);
  c.on('incoming_call', onIncomingCall);
  c.on('call_ended', onCallEnded);
  c.on('declined', () => dialStatus('They declined the call.'));
  c.on('accepted', (f) => dialStatus(`Connected (room ${f.room}).`));
  c.on('joined', onCallRoomJoined);
  c.on('error', (e) => {
    if (e && e.code === 'rate_limited') toast('Slow down: the server is rate limiting messages.');
  });
  return c;
}

function onConnState(s) {
  const badge = $('conn');
  badge.dataset.state = s;
  badge.textContent = s;
  if (s === 'open') {
    state.everOpen = true;
    setBanner(null);
  } else if (s === 'reconnecting') {
    setBanner(
      state.everOpen && client.attempt < 6
        ? { kind: 'warn', text: 'Reconnecting to the server… your call continues meanwhile.' }
        : { kind: 'error', text: 'The server is unreachable. Retrying…' },
    );
  } else if (s === 'closed') {
    setBanner({ kind: 'error', text: 'Disconnected: this session was opened in another tab or window.', action: ['Reconnect', () => location.reload()] });
  }
}

// ---- banner and toasts -----------------------------------------------------------------

function setBanner(b) {
  state.banner = b;
  const el = $('banner');
  el.hidden = !b;
  if (!b) return;
  el.className = `banner ${b.kind}`;
  el.textContent = b.text;
  if (b.action) {
    const btn = document.createElement('button');
    btn.type = 'button';
    btn.className = 'link';
    btn.textContent = b.action[0];
    btn.onclick = b.action[1];
    el.append(' ', btn);
  }
}

function toast(text) {
  const t = document.createElement('div');
  t.className = 'toast';
  t.textContent = text;
  $('toasts').append(t);
  setTimeout(() => t.remove(), 4000);
}

// ---- lobby: room, name, devices, preview -----------------------------------------------

const roomInput = /** @type {HTMLInputElement} */ ($('room'));
const nameInput = /** @type {HTMLInputElement} */ ($('name'));
const camSelect = /** @type {HTMLSelectElement} */ ($('camera'));
const micSelect = /** @type {HTMLSelectElement} */ ($('mic'));

roomInput.value = params.get('room') || decodeURIComponent(location.hash.slice(1)) || '';
nameInput.value = params.get('name') || storage('switchboard.name', '');
/** @type {HTMLInputElement} */ ($('relay-lobby')).checked = state.relayOnly;
/** @type {HTMLInputElement} */ ($('sfu-lobby')).checked = state.sfu;
$('my-user').textContent = userId;

function shareUrl(room) {
  const u = new URL(location.origin + location.pathname);
  if (room) u.searchParams.set('room', room);
  return u.toString();
}
function updateShare() {
  const link = /** @type {HTMLAnchorElement} */ ($('share-link'));
  const room = roomInput.value.trim();
  link.href = shareUrl(room);
  link.textContent = room ? shareUrl(room).replace(/^https?:\/\//, '') : 'pick a room first';
}
roomInput.addEventListener('input', updateShare);
$('gen').onclick = () => {
  roomInput.value = makeId('');
  updateShare();
};
$('copy-link').onclick = async () => {
  try {
    await navigator.clipboard.writeText(shareUrl(roomInput.value.trim()));
    toast('Link copied');
  } catch {
    toast('Copy failed: select the link instead');
  }
};
updateShare();

function previewMessage(text) {
  const m = $('preview-msg');
  m.hidden = !text;
  m.textContent = text || '';
}

async function acquireMedia() {
  if (!navigator.mediaDevices?.getUserMedia) {
    state.media = 'error';
    previewMessage('This browser cannot use a camera here (a secure https:// page is needed).');
    return null;
  }
  const constraints = {
    video: camSelect.value ? { deviceId: { exact: camSelect.value }, width: { ideal: 1280 }, height: { ideal: 720 } } : { width: { ideal: 1280 }, height: { ideal: 720 } },
    audio: micSelect.value ? { deviceId: { exact: micSelect.value }, echoCancellation: true, noiseSuppression: true } : { echoCancellation: true, noiseSuppression: true },
  };
  try {
    const s = await navigator.mediaDevices.getUserMedia(constraints);
    state.media = 'ok';
    previewMessage(null);
    return s;
  } catch (err) {
    const name = err && err.name;
    if (name === 'NotAllowedError' || name === 'SecurityError') {
      state.media = 'denied';
      previewMessage('Camera and microphone permission was denied. You can still join to watch and listen; allow access in the address bar to be seen.');
    } else if (name === 'NotFoundError' || name === 'OverconstrainedError') {
      // Try audio only before giving up: a laptop without a camera is common.
      try {
        const a = await navigator.mediaDevices.getUserMedia({ audio: true });
        state.media = 'ok';
        previewMessage('No camera found: joining with audio only.');
        return a;
      } catch {
        state.media = 'nodevices';
        previewMessage('No camera or microphone found. You can still join to watch and listen.');
      }
    } else {
      state.media = 'error';
      previewMessage(`Could not start the camera (${name || 'error'}).`);
    }
    return null;
  }
}

async function listDevices() {
  let devices = [];
  try {
    devices = await navigator.mediaDevices.enumerateDevices();
  } catch {
    return;
  }
  const fill = (select, kind, label) => {
    const current = select.value || state.stream?.getTracks().find((t) => t.kind === (kind === 'videoinput' ? 'video' : 'audio'))?.getSettings().deviceId;
    select.replaceChildren();
    const list = devices.filter((d) => d.kind === kind);
    for (const [i, d] of list.entries()) {
      const o = document.createElement('option');
      o.value = d.deviceId;
      o.textContent = d.label || `${label} ${i + 1}`;
      select.append(o);
    }
    if (!list.length) {
      const o = document.createElement('option');
      o.value = '';
      o.textContent = `No ${label.toLowerCase()}`;
      select.append(o);
    }
    if (current && list.some((d) => d.deviceId === current)) select.value = current;
    select.disabled = !list.length;
  };
  fill(camSelect, 'videoinput', 'Camera');
  fill(micSelect, 'audioinput', 'Microphone');
}

async function startPreview() {
  const old = state.stream;
  const oldTracks = old?.getTracks() ?? [];
  const s = await acquireMedia();
  if (s) {
    if (mesh?.stream) {
      // In a call: swap tracks on every connection without renegotiating; the call's
      // stream object stays the same, with the new tracks in it.
      for (const t of s.getTracks()) await mesh.replaceTrack(t, /** @type {any} */ (t.kind));
    } else if (mesh) {
      // Join was pressed before the camera (or its permission prompt) answered: the call
      // started without media, so its connections take these tracks now and renegotiate.
      await mesh.setStream(s);
    }
    for (const t of oldTracks) if (!s.getTracks().includes(t)) t.stop();
    state.stream = mesh?.stream ?? s;
    applyMuteState();
  }
  const v = /** @type {HTMLVideoElement} */ ($('preview'));
  v.srcObject = state.stream;
  const local = document.querySelector('#tile-local video');
  if (local) /** @type {HTMLVideoElement} */ (local).srcObject = state.stream;
  await listDevices();
}

camSelect.onchange = startPreview;
micSelect.onchange = startPreview;
navigator.mediaDevices?.addEventListener?.('devicechange', listDevices);
nameInput.addEventListener('input', () => {
  $('preview-name').textContent = nameInput.value.trim() || 'You';
});
$('preview-name').textContent = nameInput.value.trim() || 'You';

// ---- joining and the call ---------------------------------------------------------------

$('join-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  joinRoom(roomInput.value.trim());
});

/** @param {string} room @param {object} [joinedFrame] present for an accepted direct call */
async function joinRoom(room, joinedFrame) {
  if (!room || mesh) return;
  state.name = nameInput.value.trim() || 'Guest';
  try {
    localStorage.setItem('switchboard.name', nameInput.value.trim());
  } catch {
    // Not kept: fine.
  }
  state.relayOnly = /** @type {HTMLInputElement} */ ($('relay-lobby')).checked;
  state.sfu = /** @type {HTMLInputElement} */ ($('sfu-lobby')).checked;
  state.room = room;
  state.phase = 'joining';
  history.replaceState(null, '', shareUrl(room) + (state.relayOnly ? '&relay=1' : ''));
  /** @type {HTMLButtonElement} */ ($('join')).disabled = true;

  // Tiles of the peers already in the room appear while join() is still pending.
  $('grid').replaceChildren();
  addTile('local', `${state.name} (you)`, true);
  setVideo('local', state.stream);
  mesh = client.room(room, { stream: state.stream ?? undefined, relayOnly: state.relayOnly, dataChannel: true, media: state.sfu ? 'sfu' : undefined });
  wireMesh(mesh);
  try {
    if (joinedFrame) mesh.adopt(joinedFrame);
    else await mesh.join({ name: state.name });
  } catch (err) {
    mesh = null;
    $('grid').replaceChildren();
    state.phase = err instanceof SignalError && err.code === 'full' ? 'full' : 'lobby';
    /** @type {HTMLButtonElement} */ ($('join')).disabled = false;
    if (state.phase === 'full') {
      setBanner({ kind: 'error', text: `Room "${room}" is full. Try another room or wait for someone to leave.` });
    } else {
      setBanner({ kind: 'error', text: `Could not join: ${err.message || err}` });
    }
    return;
  }
  enterCall();
}

function enterCall() {
  state.phase = 'call';
  setBanner(null);
  $('lobby').hidden = true;
  $('call').hidden = false;
  $('room-label').hidden = false;
  $('room-label').textContent = roomLabel();
  /** @type {HTMLInputElement} */ ($('relay-call')).checked = state.relayOnly;
  renderTileState('local');
  startStatsLoop();
  // A join takes an existing room as it is: say so when that is not what was asked.
  if (state.sfu && mesh?.media !== 'sfu') toast('This room is a direct (mesh) call: joined it as one.');
}

/** @param {import('/sdk/switchboard.js').Mesh} m */
function wireMesh(m) {
  m.on('peer', (peer) => {
    // In an SFU room the peers share our one connection with the server: its state is theirs.
    const connection = m.media === 'sfu' ? (m.link?.pc.connectionState ?? 'new') : 'new';
    state.peers[peer.id] = { name: peer.meta?.name || 'Guest', muted: false, cameraOff: false, screen: null, camera: null, connection };
    addTile(peer.id, state.peers[peer.id].name, false);
    if (m.media !== 'sfu' && m.peers.size >= MAX_MESH) {
      toast(`This call has ${m.peers.size + 1} people; a mesh works best with ${MAX_MESH} or fewer (a new room as a group call through the server takes more).`);
    }
    // Tell the newcomer our mute and share state.
    m.send(myState(), peer.id);
    peer.on('state', (s) => {
      if (state.peers[peer.id]) state.peers[peer.id].connection = s;
      renderTileState(peer.id);
    });
    renderTileState(peer.id);
  });
  m.on('track', ({ peer, stream }) => {
    const p = state.peers[peer.id];
    if (!p) return;
    if (m.media === 'sfu') return sfuAssign(peer.id);
    if (p.screen && stream.id === p.screen) setScreen(peer.id, stream);
    else if (!p.camera || stream.id === p.camera) setVideo(peer.id, stream);
    else setScreen(peer.id, stream);
  });
  m.on('track_removed', ({ peer }) => sfuAssign(peer.id));
  m.on('stream_removed', ({ peer, stream }) => {
    const p = state.peers[peer.id];
    if (m.media === 'sfu') return sfuAssign(peer.id);
    if (p && stream.id !== p.camera) setScreen(peer.id, null);
  });
  m.on('peer_left', (peer) => {
    const name = state.peers[peer.id]?.name || 'A peer';
    delete state.peers[peer.id];
    delete stats[peer.id];
    delete sfuTracks[peer.id];
    document.getElementById(`tile-${peer.id}`)?.remove();
    document.getElementById(`tile-screen-${peer.id}`)?.remove();
    updateGridCount();
    if (mesh) toast(`${name} left the call`);
  });
  m.on('data', ({ from, data }) => onAppData(from, data));
  m.on('full', () => {
    // Only after a lost session: rejoining found the room taken.
    if (state.phase === 'call') setBanner({ kind: 'error', text: 'Could not get back into the room: it is full now.', action: ['Leave', () => leaveCall()] });
  });
  m.on('joined', (f) => {
    if (state.phase === 'call' && f.peers) renderAllTiles();
    $('room-label').textContent = roomLabel();
  });
  m.on('media_error', (f) => {
    // The server ended our media in this group call: a rejoin starts it afresh.
    setBanner({
      kind: 'error',
      text: `Media through the server failed (${f.message || f.code}).`,
      action: [
        'Rejoin',
        () => {
          leaveCall();
          joinRoom(state.room);
        },
      ],
    });
  });
  m.on('error', (err) => {
    // Negotiation errors are recovered by perfect negotiation and ICE restarts; keep a trace.
    console.warn('call:', err?.message || err);
  });
}

function myState() {
  return {
    kind: 'state',
    name: state.name,
    muted: state.muted,
    cameraOff: state.cameraOff,
    camera: state.stream?.id ?? null,
    screen: state.screen?.id ?? null,
    // Track ids and the camera's size: in an SFU room every track of a peer arrives in one
    // stream (its id is the peer's), and the received layer shows as a fraction of `width`.
    cameraTrack: state.stream?.getVideoTracks()[0]?.id ?? null,
    screenTrack: state.screen?.getVideoTracks()[0]?.id ?? null,
    width: state.stream?.getVideoTracks()[0]?.getSettings().width ?? null,
  };
}

/**
 * Tracks of each SFU peer as shown: `camera` (its voice too) and `screen`, kept apart from
 * the SDK's one stream per peer. @type {Record<string, {camera: MediaStream|null, screen: MediaStream|null}>}
 */
const sfuTracks = {};

/**
 * Puts an SFU peer's live tracks on its tiles. The server keeps stream ids (the peer's id)
 * but not necessarily track ids, so a second video track is told from the camera by the
 * track ids in the peer's state when they match, else by arrival order (the camera first).
 * @param {string} id
 */
function sfuAssign(id) {
  const peer = mesh?.peers.get(id);
  const p = state.peers[id];
  if (!peer || !p) return;
  const tracks = [...peer.streams.values()].flatMap((s) => s.getTracks()).filter((t) => t.readyState === 'live');
  const video = tracks.filter((t) => t.kind === 'video');
  const audio = tracks.filter((t) => t.kind === 'audio');
  let cam = video.find((t) => t.id === p.cameraTrack);
  let screen = video.find((t) => t.id === p.screenTrack);
  if (!cam) cam = video.find((t) => t !== screen);
  if (!screen && p.screen) screen = video.find((t) => t !== cam);
  const was = sfuTracks[id] ?? { camera: null, screen: null };
  const same = (s, list) => !!s && s.getTracks().length === list.length && list.every((t) => s.getTracks().includes(t));
  const camList = [...audio, ...(cam ? [cam] : [])];
  const camera = camList.length === 0 ? null : same(was.camera, camList) ? was.camera : new MediaStream(camList);
  const screenStream = !screen ? null : same(was.screen, [screen]) ? was.screen : new MediaStream([screen]);
  sfuTracks[id] = { camera, screen: screenStream };
  setVideo(id, camera);
  setScreen(id, screenStream);
}

function roomLabel() {
  return mesh?.media === 'sfu' ? `${state.room} · group call` : state.room;
}

function onAppData(from, data) {
  if (!data || typeof data !== 'object') return;
  if (data.kind === 'state') {
    const p = state.peers[from];
    if (!p) return;
    Object.assign(p, {
      name: typeof data.name === 'string' ? data.name.slice(0, 40) : p.name,
      muted: !!data.muted,
      cameraOff: !!data.cameraOff,
      camera: data.camera ?? p.camera,
      screen: data.screen ?? null,
    });
    Object.assign(p, {
      cameraTrack: typeof data.cameraTrack === 'string' ? data.cameraTrack : null,
      screenTrack: typeof data.screenTrack === 'string' ? data.screenTrack : null,
      width: Number.isFinite(data.width) ? data.width : null,
    });
    // Streams may have arrived before the state that tells camera from screen.
    const peer = mesh?.peers.get(from);
    if (peer && mesh?.media === 'sfu') sfuAssign(from);
    else if (peer) {
      for (const s of peer.streams.values()) {
        if (s.id === p.screen) setScreen(from, s);
        else if (s.id === p.camera) setVideo(from, s);
      }
      if (!p.screen) setScreen(from, null);
    }
    renderTileState(from);
  } else if (data.kind === 'chat' && typeof data.text === 'string') {
    addChat(state.peers[from]?.name || 'Guest', data.text.slice(0, 2000), false);
  }
}

// ---- tiles -------------------------------------------------------------------------------

function addTile(id, name, local) {
  if (document.getElementById(`tile-${id}`)) return;
  const tile = document.createElement('div');
  tile.className = `tile${local ? ' local' : ''}`;
  tile.id = `tile-${id}`;
  tile.dataset.peer = id;
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.muted = local;
  const avatar = document.createElement('div');
  avatar.className = 'avatar';
  const label = document.createElement('div');
  label.className = 'label';
  label.innerHTML =
    '<svg class="mic-off" viewBox="0 0 24 24" aria-label="Muted"><rect x="9" y="3" width="6" height="11" rx="3"/><path d="M5.5 11a6.5 6.5 0 0 0 13 0M12 17.5V21M4 4l16 16"/></svg><span class="name"></span>';
  label.querySelector('.name').textContent = name;
  const conn = document.createElement('div');
  conn.className = 'conn';
  conn.hidden = true;
  tile.append(video, avatar, label, conn);
  $('grid').append(tile);
  updateGridCount();
}

function updateGridCount() {
  $('grid').dataset.count = String($('grid').children.length);
}

function renderAllTiles() {
  for (const id of Object.keys(state.peers)) renderTileState(id);
}

function setVideo(id, stream) {
  const v = /** @type {HTMLVideoElement|null} */ (document.querySelector(`#tile-${CSS.escape(id)} video`));
  if (!v || v.srcObject === stream) return;
  v.srcObject = stream;
  if (!stream) return;
  v.play().catch(() => {
    // Autoplay may wait for a gesture; the video starts on the next click.
  });
}

function setScreen(id, stream) {
  const tileId = `screen-${id}`;
  let tile = document.getElementById(`tile-${tileId}`);
  if (!stream) {
    tile?.remove();
    updateGridCount();
    return;
  }
  if (!tile) {
    const who = id === 'local' ? 'You' : state.peers[id]?.name || 'Guest';
    addTile(tileId, `${who}: screen`, id === 'local');
    tile = document.getElementById(`tile-${tileId}`);
    tile?.classList.add('screen');
  }
  setVideo(tileId, stream);
}

function renderTileState(id) {
  const tile = document.getElementById(`tile-${id}`);
  if (!tile) return;
  const p = id === 'local' ? { name: `${state.name} (you)`, muted: state.muted, cameraOff: state.cameraOff || !state.stream?.getVideoTracks().length, connection: 'connected' } : state.peers[id];
  if (!p) return;
  tile.querySelector('.name').textContent = p.name;
  tile.classList.toggle('muted', !!p.muted);
  tile.classList.toggle('camera-off', !!p.cameraOff);
  const avatar = tile.querySelector('.avatar');
  avatar.textContent = (p.name || '?').trim().charAt(0).toUpperCase();
  const conn = tile.querySelector('.conn');
  const c = p.connection;
  conn.textContent = c === 'connected' ? '' : c === 'failed' ? 'connection failed, retrying…' : c === 'disconnected' ? 'reconnecting…' : 'connecting…';
  conn.hidden = c === 'connected';
  tile.dataset.connection = c;
}

// ---- controls ------------------------------------------------------------------------------

function applyMuteState() {
  for (const t of state.stream?.getAudioTracks() ?? []) t.enabled = !state.muted;
  for (const t of state.stream?.getVideoTracks() ?? []) t.enabled = !state.cameraOff;
  const mic = $('btn-mic');
  mic.setAttribute('aria-pressed', String(state.muted));
  mic.querySelector('.lbl').textContent = state.muted ? 'Unmute' : 'Mute';
  const cam = $('btn-cam');
  cam.setAttribute('aria-pressed', String(state.cameraOff));
  cam.querySelector('.lbl').textContent = state.cameraOff ? 'Start cam' : 'Stop cam';
  renderTileState('local');
  if (mesh) mesh.send(myState());
}

$('btn-mic').onclick = () => {
  state.muted = !state.muted;
  applyMuteState();
};
$('btn-cam').onclick = () => {
  state.cameraOff = !state.cameraOff;
  applyMuteState();
};

/** Shares a stream as an extra, renegotiated track (a screen, or a test's canvas). @param {MediaStream} s */
function shareStream(s) {
  stopShare();
  const track = s.getVideoTracks()[0];
  if (!track || !mesh) return;
  state.screen = s;
  track.addEventListener('ended', stopShare);
  mesh.addTrack(track, s);
  setScreen('local', s);
  $('btn-screen').setAttribute('aria-pressed', 'true');
  mesh.send(myState());
}

function stopShare() {
  const s = state.screen;
  if (!s) return;
  state.screen = null;
  for (const t of s.getTracks()) {
    mesh?.removeTrack(t);
    t.stop();
  }
  setScreen('local', null);
  $('btn-screen').setAttribute('aria-pressed', 'false');
  mesh?.send(myState());
}

$('btn-screen').onclick = async () => {
  if (state.screen) return stopShare();
  if (!navigator.mediaDevices?.getDisplayMedia) return toast('Screen sharing is not available in this browser.');
  try {
    shareStream(await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false }));
  } catch (err) {
    if (err?.name !== 'NotAllowedError') toast(`Screen share failed: ${err?.message || err}`);
  }
};

$('relay-call').addEventListener('change', (ev) => {
  state.relayOnly = /** @type {HTMLInputElement} */ (ev.target).checked;
  mesh?.setRelayOnly(state.relayOnly);
  toast(state.relayOnly ? 'Relay only: media now goes through the TURN relay.' : 'Direct connections allowed again.');
});

$('btn-leave').onclick = () => leaveCall();

function leaveCall() {
  if (!mesh) return;
  stopRecording();
  stopShare();
  const m = mesh;
  mesh = null;
  m.leave();
  stopStatsLoop();
  for (const k of Object.keys(state.peers)) delete state.peers[k];
  for (const k of Object.keys(stats)) delete stats[k];
  for (const k of Object.keys(sfuTracks)) delete sfuTracks[k];
  delete lastBytes.server;
  state.phase = 'lobby';
  $('call').hidden = true;
  $('lobby').hidden = false;
  $('room-label').hidden = true;
  /** @type {HTMLButtonElement} */ ($('join')).disabled = false;
  /** @type {HTMLVideoElement} */ ($('preview')).srcObject = state.stream;
}

// ---- side panel: chat and stats ----------------------------------------------------------

function openSide(which) {
  const side = $('side');
  const same = !side.hidden && $(`tab-${which}`).getAttribute('aria-selected') === 'true';
  side.hidden = same;
  $('btn-chat').setAttribute('aria-pressed', String(!same && which === 'chat'));
  $('btn-stats').setAttribute('aria-pressed', String(!same && which === 'stats'));
  if (same) return;
  $('tab-chat').setAttribute('aria-selected', String(which === 'chat'));
  $('tab-stats').setAttribute('aria-selected', String(which === 'stats'));
  $('chat-panel').hidden = which !== 'chat';
  $('stats-panel').hidden = which !== 'stats';
  if (which === 'chat') {
    $('chat-unread').hidden = true;
    /** @type {HTMLInputElement} */ ($('chat-input')).focus();
  }
  renderStats();
}
$('btn-chat').onclick = () => openSide('chat');
$('btn-stats').onclick = () => openSide('stats');
$('tab-chat').onclick = () => openSide('chat');
$('tab-stats').onclick = () => openSide('stats');
$('close-side').onclick = () => {
  $('side').hidden = true;
  $('btn-chat').setAttribute('aria-pressed', 'false');
  $('btn-stats').setAttribute('aria-pressed', 'false');
};

$('chat-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = /** @type {HTMLInputElement} */ ($('chat-input'));
  const text = input.value.trim();
  if (!text || !mesh) return;
  mesh.send({ kind: 'chat', text });
  addChat(state.name, text, true);
  input.value = '';
});

function addChat(name, text, mine) {
  state.chat.push({ name, text, mine, at: Date.now() });
  const li = document.createElement('li');
  li.className = mine ? 'mine' : '';
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = mine ? 'You' : name;
  const time = document.createElement('time');
  time.textContent = new Date().toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const body = document.createElement('p');
  body.textContent = text;
  li.append(who, time, body);
  $('chat-log').append(li);
  li.scrollIntoView({ block: 'end' });
  if ($('side').hidden || $('chat-panel').hidden) $('chat-unread').hidden = false;
}

let statsTimer = null;
const lastBytes = {};

function startStatsLoop() {
  stopStatsLoop();
  statsTimer = setInterval(collectStats, 1000);
}
function stopStatsLoop() {
  clearInterval(statsTimer);
  statsTimer = null;
}

async function collectStats() {
  if (!mesh) return;
  if (mesh.media === 'sfu') return collectSfuStats(mesh);
  for (const peer of [...mesh.peers.values()]) {
    let report;
    try {
      report = await peer.pc.getStats();
    } catch {
      continue;
    }
    const byId = new Map();
    report.forEach((r) => byId.set(r.id, r));
    let pair = null;
    let framesDecoded = 0;
    let packetsLost = 0;
    let bytesIn = 0;
    let bytesOut = 0;
    report.forEach((r) => {
      if (r.type === 'transport' && r.selectedCandidatePairId) pair = byId.get(r.selectedCandidatePairId) ?? pair;
      if (r.type === 'inbound-rtp') {
        if (r.kind === 'video') framesDecoded += r.framesDecoded ?? 0;
        packetsLost += r.packetsLost ?? 0;
        bytesIn += r.bytesReceived ?? 0;
      }
      if (r.type === 'outbound-rtp') bytesOut += r.bytesSent ?? 0;
    });
    if (!pair) report.forEach((r) => r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded' && (pair = r));
    const local = pair ? byId.get(pair.localCandidateId) : null;
    const remote = pair ? byId.get(pair.remoteCandidateId) : null;
    const now = performance.now();
    const prev = lastBytes[peer.id];
    const secs = prev ? (now - prev.at) / 1000 : 0;
    stats[peer.id] = {
      name: state.peers[peer.id]?.name,
      connectionState: peer.pc.connectionState,
      iceConnectionState: peer.pc.iceConnectionState,
      localType: local?.candidateType ?? null,
      localAddress: local ? `${local.address ?? local.ip}:${local.port}` : null,
      localProtocol: local?.protocol ?? null,
      relayProtocol: local?.relayProtocol ?? null,
      localUrl: local?.url ?? null,
      remoteType: remote?.candidateType ?? null,
      remoteAddress: remote ? `${remote.address ?? remote.ip}:${remote.port}` : null,
      rttMs: pair?.currentRoundTripTime != null ? Math.round(pair.currentRoundTripTime * 1000) : null,
      kbpsIn: secs ? Math.round(((bytesIn - prev.bytesIn) * 8) / secs / 1000) : 0,
      kbpsOut: secs ? Math.round(((bytesOut - prev.bytesOut) * 8) / secs / 1000) : 0,
      framesDecoded,
      packetsLost,
      iceRestarts: peer.restarts,
    };
    lastBytes[peer.id] = { at: now, bytesIn, bytesOut };
  }
  renderStats();
}

/** The selected candidate pair of a stats report, with its local and remote candidates. */
function selectedPath(report) {
  const byId = new Map();
  report.forEach((r) => byId.set(r.id, r));
  let pair = null;
  report.forEach((r) => {
    if (r.type === 'transport' && r.selectedCandidatePairId) pair = byId.get(r.selectedCandidatePairId) ?? pair;
  });
  if (!pair) report.forEach((r) => r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded' && (pair = r));
  return { pair, local: pair ? byId.get(pair.localCandidateId) : null, remote: pair ? byId.get(pair.remoteCandidateId) : null };
}

/** Which simulcast layer a frame width is of the publisher's camera width: f, h or q. */
function layerOf(frameWidth, fullWidth) {
  if (!frameWidth || !fullWidth) return null;
  const down = fullWidth / frameWidth;
  return down < 1.5 ? 'f' : down < 3 ? 'h' : 'q';
}

/**
 * An SFU room's one connection, with the server, as `stats.server`: its path and totals,
 * `inbound` per received track (publisher, bitrate, frame size, the simulcast layer it is)
 * and `outbound` per sent layer (rid), each sent once whoever receives it.
 * @param {import('/sdk/switchboard.js').Mesh} m
 */
async function collectSfuStats(m) {
  const pc = m.link?.pc;
  if (!pc) return;
  let report;
  try {
    report = await pc.getStats();
  } catch {
    return;
  }
  // Which peer a received track belongs to: the stream it is in carries the peer's id.
  const owner = new Map();
  for (const peer of m.peers.values()) for (const st of peer.streams.values()) for (const t of st.getTracks()) owner.set(t.id, peer.id);
  const now = performance.now();
  const prev = lastBytes.server;
  const secs = prev ? (now - prev.at) / 1000 : 0;
  const rate = (key, bytes) => {
    const before = prev?.per[key];
    return secs && before != null && bytes >= before ? Math.round(((bytes - before) * 8) / secs / 1000) : 0;
  };
  const per = {};
  const inbound = [];
  const outbound = [];
  let bytesIn = 0;
  let bytesOut = 0;
  let framesDecoded = 0;
  let packetsLost = 0;
  report.forEach((r) => {
    if (r.type === 'inbound-rtp') {
      bytesIn += r.bytesReceived ?? 0;
      packetsLost += r.packetsLost ?? 0;
      if (r.kind === 'video') framesDecoded += r.framesDecoded ?? 0;
      const peer = owner.get(r.trackIdentifier) ?? null;
      per[r.id] = r.bytesReceived ?? 0;
      inbound.push({
        peer,
        name: peer ? state.peers[peer]?.name ?? null : null,
        mid: r.mid ?? null,
        kind: r.kind,
        kbps: rate(r.id, r.bytesReceived ?? 0),
        frameWidth: r.frameWidth ?? null,
        frameHeight: r.frameHeight ?? null,
        framesDecoded: r.framesDecoded ?? 0,
        layer: r.kind === 'video' ? layerOf(r.frameWidth, peer ? state.peers[peer]?.width : null) : null,
      });
    }
    if (r.type === 'outbound-rtp') {
      bytesOut += r.bytesSent ?? 0;
      per[r.id] = r.bytesSent ?? 0;
      outbound.push({
        kind: r.kind,
        rid: r.rid ?? null,
        kbps: rate(r.id, r.bytesSent ?? 0),
        frameWidth: r.frameWidth ?? null,
        frameHeight: r.frameHeight ?? null,
        framesEncoded: r.framesEncoded ?? 0,
        active: r.active ?? true,
        limitedBy: r.qualityLimitationReason ?? null,
      });
    }
  });
  inbound.sort((a, b) => String(a.name ?? a.peer).localeCompare(String(b.name ?? b.peer)) || a.kind.localeCompare(b.kind));
  outbound.sort((a, b) => a.kind.localeCompare(b.kind) || String(a.rid).localeCompare(String(b.rid)));
  const { pair, local, remote } = selectedPath(report);
  stats.server = {
    name: 'Server (group call)',
    server: true,
    connectionState: pc.connectionState,
    iceConnectionState: pc.iceConnectionState,
    localType: local?.candidateType ?? null,
    localAddress: local ? `${local.address ?? local.ip}:${local.port}` : null,
    localProtocol: local?.protocol ?? null,
    relayProtocol: local?.relayProtocol ?? null,
    localUrl: local?.url ?? null,
    remoteType: remote?.candidateType ?? null,
    remoteAddress: remote ? `${remote.address ?? remote.ip}:${remote.port}` : null,
    rttMs: pair?.currentRoundTripTime != null ? Math.round(pair.currentRoundTripTime * 1000) : null,
    kbpsIn: secs ? Math.round(((bytesIn - prev.bytesIn) * 8) / secs / 1000) : 0,
    kbpsOut: secs ? Math.round(((bytesOut - prev.bytesOut) * 8) / secs / 1000) : 0,
    framesDecoded,
    packetsLost,
    iceRestarts: m.link.restarts,
    simulcast: m.link.simulcast,
    inbound,
    outbound,
  };
  lastBytes.server = { at: now, bytesIn, bytesOut, per };
  renderStats();
}

function renderStats() {
  const panel = $('stats-panel');
  if (panel.hidden || $('side').hidden) return;
  const ids = Object.keys(stats);
  if (!ids.length) {
    panel.innerHTML = '<p class="hint">Nobody else is here yet.</p>';
    return;
  }
  panel.replaceChildren(
    ...ids.map((id) => {
      const s = stats[id];
      const card = document.createElement('section');
      card.className = 'stat-card';
      const rows = [
        ['State', s.connectionState],
        ['Path', s.localType ? `${s.localType} → ${s.remoteType}` : '—'],
        ['Local', s.localAddress ? `${s.localAddress}${s.relayProtocol ? ` (relay over ${s.relayProtocol})` : ''}` : '—'],
        ['Remote', s.remoteAddress ?? '—'],
        ['RTT', s.rttMs != null ? `${s.rttMs} ms` : '—'],
        ['Bitrate in', `${s.kbpsIn} kbit/s`],
        ['Bitrate out', `${s.kbpsOut} kbit/s`],
        ['Frames decoded', String(s.framesDecoded)],
        ['Packets lost', String(s.packetsLost)],
        ['ICE restarts', String(s.iceRestarts)],
      ];
      if (s.server) {
        rows.push(['Simulcast out', s.simulcast ? 'yes (3 layers)' : 'no (1 layer)']);
        for (const o of s.outbound) {
          const size = o.frameWidth ? ` ${o.frameWidth}×${o.frameHeight}` : '';
          rows.push([`Out ${o.kind}${o.rid ? ` ${o.rid}` : ''}`, `${o.kbps} kbit/s${size}${o.limitedBy && o.limitedBy !== 'none' ? ` (${o.limitedBy})` : ''}`]);
        }
        for (const i of s.inbound) {
          const size = i.frameWidth ? ` ${i.frameWidth}×${i.frameHeight}` : '';
          const layer = i.layer ? ` layer ${i.layer}` : '';
          rows.push([`In ${i.name ?? i.peer ?? '?'} ${i.kind}`, `${i.kbps} kbit/s${size}${layer}`]);
        }
      }
      const h = document.createElement('h3');
      h.textContent = s.name || id;
      const dl = document.createElement('dl');
      for (const [k, v] of rows) {
        const dt = document.createElement('dt');
        dt.textContent = k;
        const dd = document.createElement('dd');
        dd.textContent = v;
        dl.append(dt, dd);
      }
      card.append(h, dl);
      return card;
    }),
  );
}

// ---- recording -------------------------------------------------------------------------------

let recorder = null;
let recordCleanup = null;

$('btn-rec').onclick = () => (recorder ? stopRecording() : startRecording());

/** Records the grid (drawn onto a canvas) with every voice mixed in, then offers a download. */
function startRecording() {
  if (typeof MediaRecorder === 'undefined') return toast('Recording is not supported in this browser.');
  const canvas = document.createElement('canvas');
  canvas.width = 1280;
  canvas.height = 720;
  const ctx = canvas.getContext('2d');
  const draw = () => {
    const videos = [...document.querySelectorAll('#grid video')].filter((v) => v.srcObject && v.videoWidth);
    ctx.fillStyle = '#0b0f17';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    const n = Math.max(1, videos.length);
    const cols = Math.ceil(Math.sqrt(n));
    const rows = Math.ceil(n / cols);
    const w = canvas.width / cols;
    const h = canvas.height / rows;
    videos.forEach((v, i) => ctx.drawImage(v, (i % cols) * w, Math.floor(i / cols) * h, w, h));
  };
  const timer = setInterval(draw, 1000 / 25);
  const out = canvas.captureStream(25);
  let audioCtx = null;
  try {
    audioCtx = new AudioContext();
    const dest = audioCtx.createMediaStreamDestination();
    const sources = [state.stream, ...[...(mesh?.peers.values() ?? [])].flatMap((p) => [...p.streams.values()])];
    for (const s of sources) if (s?.getAudioTracks().length) audioCtx.createMediaStreamSource(s).connect(dest);
    for (const t of dest.stream.getAudioTracks()) out.addTrack(t);
  } catch {
    // Video only, then.
  }
  const type = ['video/webm;codecs=vp9,opus', 'video/webm;codecs=vp8,opus', 'video/webm'].find((t) => MediaRecorder.isTypeSupported(t));
  const chunks = [];
  recorder = new MediaRecorder(out, type ? { mimeType: type } : undefined);
  recorder.ondataavailable = (e) => e.data.size && chunks.push(e.data);
  recorder.onstop = () => {
    const blob = new Blob(chunks, { type: 'video/webm' });
    const a = /** @type {HTMLAnchorElement} */ ($('download'));
    a.href = URL.createObjectURL(blob);
    a.download = `switchboard-${state.room}-${new Date().toISOString().replace(/[:.]/g, '-')}.webm`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 60000);
    toast(`Recording saved (${Math.round(blob.size / 1024)} KiB)`);
  };
  recorder.start(1000);
  recordCleanup = () => {
    clearInterval(timer);
    out.getTracks().forEach((t) => t.stop());
    audioCtx?.close().catch(() => {});
  };
  state.recording = true;
  $('btn-rec').setAttribute('aria-pressed', 'true');
  $('btn-rec').querySelector('.lbl').textContent = 'Stop rec';
  toast('Recording the call on this device');
}

function stopRecording() {
  if (!recorder) return;
  const r = recorder;
  recorder = null;
  if (r.state !== 'inactive') r.stop();
  recordCleanup?.();
  state.recording = false;
  $('btn-rec').setAttribute('aria-pressed', 'false');
  $('btn-rec').querySelector('.lbl').textContent = 'Record';
}

// ---- direct calls (PROTOCOL.md §3) ----------------------------------------------------------

let ringing = null; // {call, as: 'caller'|'callee'}
let expectCallRoom = false;

function dialStatus(text) {
  const el = $('dial-status');
  el.hidden = !text;
  el.textContent = text || '';
}

$('call-btn').onclick = async () => {
  const to = /** @type {HTMLInputElement} */ ($('callee')).value.trim();
  if (!to || mesh) return;
  if (ringing?.as === 'caller') {
    client.cancel(ringing.call);
    ringing = null;
    $('call-btn').textContent = 'Call';
    return dialStatus('Call cancelled.');
  }
  state.name = nameInput.value.trim() || 'Guest';
  try {
    const r = await client.call(to, { name: state.name });
    ringing = { call: r.call, as: 'caller' };
    expectCallRoom = true;
    $('call-btn').textContent = 'Cancel';
    dialStatus(`Ringing ${to}…`);
  } catch (err) {
    dialStatus(err?.code === 'no_such_user' ? `${to} is not online.` : `Call failed: ${err?.message || err}`);
  }
};

$('change-user').onclick = () => {
  const next = prompt('Your user id (others call you by it):', userId);
  if (!next || next === userId) return;
  userId = next.trim();
  try {
    localStorage.setItem('switchboard.user', userId);
  } catch {
    // Kept for this page only.
  }
  $('my-user').textContent = userId;
  leaveCall();
  client.close();
  client = startClient();
  hooks.client = client;
};

function onIncomingCall(f) {
  if (mesh || ringing) {
    client.decline(f.call).catch(() => {});
    return;
  }
  ringing = { call: f.call, as: 'callee' };
  const who = f.meta?.name || f.from || 'Someone';
  $('incoming-from').textContent = f.from && f.from !== who ? `${who} (${f.from}) is calling you.` : `${who} is calling you.`;
  $('incoming').hidden = false;
}

$('accept').onclick = async () => {
  if (!ringing) return;
  const call = ringing.call;
  $('incoming').hidden = true;
  expectCallRoom = true;
  try {
    await client.accept(call);
  } catch (err) {
    expectCallRoom = false;
    toast(err?.code === 'no_such_call' ? 'The call is over.' : `Could not accept: ${err?.message || err}`);
  }
  ringing = null;
};
$('decline').onclick = () => {
  if (!ringing) return;
  client.decline(ringing.call).catch(() => {});
  ringing = null;
  $('incoming').hidden = true;
};

function onCallRoomJoined(f) {
  if (!expectCallRoom || mesh) return;
  expectCallRoom = false;
  ringing = null;
  $('call-btn').textContent = 'Call';
  dialStatus(null);
  roomInput.value = f.room;
  joinRoom(f.room, f);
}

function onCallEnded(f) {
  const why = { cancelled: 'The caller hung up.', no_answer: 'No answer.', gone: 'The other side went away.', answered_elsewhere: 'Answered on another device.' }[f.reason] || 'Call ended.';
  if (ringing && ringing.call === f.call) {
    ringing = null;
    expectCallRoom = false;
    $('incoming').hidden = true;
    $('call-btn').textContent = 'Call';
  }
  dialStatus(why);
  if (!mesh) toast(why);
}

// ---- test hooks -----------------------------------------------------------------------------

const hooks = {
  client,
  state,
  stats,
  get mesh() {
    return mesh;
  },
  /** @returns {Record<string, RTCPeerConnection>} per peer in a mesh; `server` alone in an SFU room */
  pcs() {
    if (mesh?.media === 'sfu') return mesh.link ? { server: mesh.link.pc } : {};
    return Object.fromEntries([...(mesh?.peers.values() ?? [])].map((p) => [p.id, p.pc]));
  },
  /** Ends the signaling socket abruptly (not 1000/1001): the client must resume. */
  dropSocket(code = 4000) {
    hooks.client.dropConnection(code);
  },
  shareStream,
  stopShare,
  collectStats,
};
window.__sb = hooks;

addEventListener('pagehide', () => client.close(1001));
// Back from the back/forward cache, the closed client cannot be revived: start afresh.
addEventListener('pageshow', (ev) => ev.persisted && location.reload());

startPreview();
