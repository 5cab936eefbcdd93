// The switchboard admin dashboard: the admin API (PROTOCOL.md §8) and its live feed.
// No library, no CDN. Every value from the server (room names, peer meta, usernames)
// is untrusted: it only ever goes into textContent, never into markup.

const TOKEN_KEY = 'switchboard-admin-token';
const HISTORY_SECS = 300; // what the graphs show
const RETRY_MS = 2000;

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(TOKEN_KEY);
let liveAbort = null;
let selectedRoom = null;
let lastSelectedPeers = null;
let prev = null; // the previous snapshot, for rates
const history = []; // {t, mps, eps}
const prevAlloc = new Map(); // id -> {t, bytes_in, bytes_out}

class Unauthorized extends Error {}

/** A call to the admin API with the token; the parsed JSON body, or throws. */
async function api(method, path) {
  const r = await fetch(path, { method, headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' });
  let body = null;
  try {
    body = await r.json();
  } catch {
    body = null;
  }
  if (r.status === 401) throw new Unauthorized(body?.error?.message ?? 'unauthorized');
  if (!r.ok) throw new Error(body?.error?.message ?? `${method} ${path}: HTTP ${r.status}`);
  return body;
}

function banner(text) {
  $('banner').textContent = text ?? '';
  $('banner').hidden = !text;
}

function setLive(state, text) {
  $('live').dataset.state = state;
  $('live').textContent = text;
}

function showLogin(error) {
  liveAbort?.abort();
  liveAbort = null;
  $('dash').hidden = true;
  $('drain').hidden = true;
  $('logout').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = error ?? '';
  $('login-error').hidden = !error;
  setLive('off', 'offline');
  $('token').focus();
}

async function login(candidate) {
  token = candidate;
  try {
    await api('GET', '/admin/api/rooms');
  } catch (e) {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(e instanceof Unauthorized ? 'Wrong token: the server refused it.' : `Cannot reach the admin API: ${e.message}`);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $('login').hidden = true;
  $('dash').hidden = false;
  $('drain').hidden = false;
  $('logout').hidden = false;
  startLive();
}

// ---- the live feed: SSE over fetch, since EventSource cannot send Authorization ----

function startLive() {
  liveAbort?.abort();
  const ctl = new AbortController();
  liveAbort = ctl;
  (async () => {
    while (!ctl.signal.aborted) {
      try {
        await readLive(ctl.signal);
        if (!ctl.signal.aborted) setLive('error', 'reconnecting');
      } catch (e) {
        if (ctl.signal.aborted) return;
        if (e instanceof Unauthorized) {
          sessionStorage.removeItem(TOKEN_KEY);
          showLogin('The token is no longer accepted.');
          return;
        }
        setLive('error', 'reconnecting');
        banner(`Live feed: ${e.message}`);
      }
      await new Promise((r) => setTimeout(r, RETRY_MS));
    }
  })();
}

async function readLive(signal) {
  const r = await fetch('/admin/api/live', { headers: { Authorization: `Bearer ${token}` }, signal, cache: 'no-store' });
  if (r.status === 401) throw new Unauthorized('unauthorized');
  if (!r.ok || !r.body) {
    let msg = `HTTP ${r.status}`;
    try {
      msg = (await r.json()).error.message;
    } catch {}
    throw new Error(msg);
  }
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n/g, '\n');
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let event = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (event === 'snapshot' && data.length) onSnapshot(JSON.parse(data.join('\n')));
    }
  }
}

// ---- rendering ----

function onSnapshot(s) {
  const t = s.time_ms / 1000;
  if (s.draining) setLive('draining', 'live · draining');
  else setLive('live', 'live');
  banner(s.unavailable?.length ? `Not available right now: ${s.unavailable.join('; ')}` : null);
  $('drain').disabled = !!s.draining;

  if (prev && t > prev.t) {
    const dt = t - prev.t;
    const mps = Math.max(0, (s.counters.messages - prev.messages) / dt);
    const eps = Math.max(0, (s.counters.errors - prev.errors) / dt);
    history.push({ t, mps, eps });
    while (history.length && history[0].t < t - HISTORY_SECS) history.shift();
    $('t-mps').textContent = fmtRate(mps);
    $('t-eps').textContent = fmtRate(eps);
  }
  prev = { t, messages: s.counters.messages, errors: s.counters.errors };
  $('t-sessions').textContent = s.gauges.sessions;
  $('t-rooms').textContent = s.gauges.rooms;
  drawGraph($('g-messages'), history.map((h) => [h.t, h.mps]), t, '#4f8cff');
  drawGraph($('g-errors'), history.map((h) => [h.t, h.eps]), t, '#ef4444');
  if (s.rooms) renderRooms(s.rooms);
  if (s.allocations) renderAllocations(s.allocations, t);
}

function fmtRate(x) {
  return x >= 100 ? x.toFixed(0) : x.toFixed(1);
}

function fmtBits(bps) {
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(2)} Mbit/s`;
  if (bps >= 1e3) return `${(bps / 1e3).toFixed(1)} kbit/s`;
  return `${bps.toFixed(0)} bit/s`;
}

function fmtAge(unixSecs) {
  const s = Math.max(0, Math.round(Date.now() / 1000 - unixSecs));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m ago`;
}

function fmtIn(unixSecs) {
  const s = Math.round(unixSecs - Date.now() / 1000);
  return s <= 0 ? 'now' : `in ${s}s`;
}

function cell(tr, text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  tr.append(td);
  return td;
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

/**
 * Brings `tbody` to one row per item, in order, keyed by `key`: rows that stay are
 * updated in place (`update`), never rebuilt, so that a button is not replaced under a
 * pointer that is about to click it.
 */
function syncRows(tbody, items, key, build, update) {
  const old = new Map([...tbody.rows].map((tr) => [tr.dataset.key, tr]));
  items.forEach((item, i) => {
    const k = String(key(item));
    let tr = old.get(k);
    old.delete(k);
    if (!tr) {
      tr = build(item);
      tr.dataset.key = k;
    }
    update(tr, item);
    if (tbody.rows[i] !== tr) tbody.insertBefore(tr, tbody.rows[i] ?? null);
  });
  for (const tr of old.values()) tr.remove();
}

function button(text, cls, onClick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  b.className = cls;
  b.addEventListener('click', (e) => {
    e.stopPropagation();
    onClick(b);
  });
  return b;
}

function renderRooms(rooms) {
  syncRows($('rooms').tBodies[0], rooms, (r) => r.room, (r) => {
    const tr = document.createElement('tr');
    tr.dataset.room = r.room;
    for (let i = 0; i < 4; i++) cell(tr, '');
    tr.cells[2].className = 'peers';
    tr.addEventListener('click', () => selectRoom(r.room));
    return tr;
  }, (tr, r) => {
    tr.dataset.peers = r.peers;
    tr.classList.toggle('selected', r.room === selectedRoom);
    setText(tr.cells[0], r.room);
    setText(tr.cells[1], r.media ?? '');
    setText(tr.cells[2], String(r.peers));
    setText(tr.cells[3], fmtAge(r.created));
  });
  $('rooms-empty').hidden = rooms.length > 0;
  if (selectedRoom !== null) {
    const here = rooms.find((r) => r.room === selectedRoom);
    const peers = here ? here.peers : 0;
    // The detail follows the summary: fetched again when its peer count moves.
    if (peers !== lastSelectedPeers) loadRoom(selectedRoom);
  }
}

function selectRoom(room) {
  selectedRoom = room;
  for (const tr of $('rooms').tBodies[0].rows) tr.classList.toggle('selected', tr.dataset.room === room);
  loadRoom(room);
}

async function loadRoom(room) {
  $('room-detail').hidden = false;
  $('rd-name').textContent = room;
  let detail;
  try {
    detail = await api('GET', `/admin/api/rooms/${encodeURIComponent(room)}`);
  } catch (e) {
    if (room !== selectedRoom) return;
    if (e instanceof Unauthorized) return showLogin('The token is no longer accepted.');
    lastSelectedPeers = 0;
    $('peers').tBodies[0].replaceChildren();
    $('rd-gone').hidden = false;
    $('rd-close').hidden = true;
    return;
  }
  if (room !== selectedRoom) return;
  lastSelectedPeers = detail.peers.length;
  $('rd-gone').hidden = true;
  $('rd-close').hidden = false;
  // Keyed by room too: the Kick button of a row is bound to its room.
  syncRows($('peers').tBodies[0], detail.peers, (p) => `${room}\n${p.peer}`, (p) => {
    const tr = document.createElement('tr');
    tr.dataset.peer = p.peer;
    for (let i = 0; i < 5; i++) cell(tr, '');
    tr.cells[2].className = 'meta';
    const td = document.createElement('td');
    td.append(button('Kick', 'danger small kick', (b) => act(b, 'DELETE', `/admin/api/rooms/${encodeURIComponent(room)}/peers/${encodeURIComponent(p.peer)}`)));
    tr.append(td);
    return tr;
  }, (tr, p) => {
    const meta = p.meta === undefined || p.meta === null ? '' : JSON.stringify(p.meta);
    [p.peer, p.user ?? '', meta, p.node ?? '', fmtAge(p.joined)].forEach((text, i) => setText(tr.cells[i], text));
  });
}

function renderAllocations(list, t) {
  const seen = new Set();
  syncRows($('allocations').tBodies[0], list, (a) => a.id, (a) => {
    const tr = document.createElement('tr');
    tr.dataset.allocation = a.id;
    for (let i = 0; i < 9; i++) cell(tr, '');
    tr.cells[7].className = 'rate-in';
    tr.cells[8].className = 'rate-out';
    const td = document.createElement('td');
    td.append(button('Revoke', 'danger small revoke', (b) => act(b, 'DELETE', `/admin/api/turn/allocations/${encodeURIComponent(a.id)}`)));
    tr.append(td);
    return tr;
  }, (tr, a) => {
    seen.add(a.id);
    const before = prevAlloc.get(a.id);
    let rin = null;
    let rout = null;
    if (before && t > before.t) {
      rin = (8 * (a.bytes_in - before.bytes_in)) / (t - before.t);
      rout = (8 * (a.bytes_out - before.bytes_out)) / (t - before.t);
    }
    prevAlloc.set(a.id, { t, bytes_in: a.bytes_in, bytes_out: a.bytes_out });
    const texts = [a.id, a.username, a.client, a.transport ?? '', a.relayed, fmtAge(a.created), fmtIn(a.expires),
      rin === null ? '…' : fmtBits(Math.max(0, rin)), rout === null ? '…' : fmtBits(Math.max(0, rout))];
    texts.forEach((text, i) => setText(tr.cells[i], text));
  });
  for (const id of prevAlloc.keys()) if (!seen.has(id)) prevAlloc.delete(id);
  $('t-allocs').textContent = list.length;
  $('allocs-empty').hidden = list.length > 0;
}

/** A button's action: disabled while in flight; the live feed shows the outcome. */
async function act(btn, method, path) {
  btn.disabled = true;
  try {
    await api(method, path);
    banner(null);
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin('The token is no longer accepted.');
    banner(e.message);
  } finally {
    btn.disabled = false;
  }
  if (selectedRoom !== null) loadRoom(selectedRoom);
}

/** A line graph of `points` ([t, value]) over the last HISTORY_SECS up to `now`. */
function drawGraph(canvas, points, now, color) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width;
  const h = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(w * dpr)) canvas.width = Math.round(w * dpr);
  if (canvas.height !== Math.round(h * dpr)) canvas.height = Math.round(h * dpr);
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const max = Math.max(1, ...points.map((p) => p[1]));
  const top = niceCeil(max);
  const pad = { l: 34, r: 6, t: 8, b: 16 };
  const x = (t) => pad.l + ((t - (now - HISTORY_SECS)) / HISTORY_SECS) * (w - pad.l - pad.r);
  const y = (v) => h - pad.b - (v / top) * (h - pad.t - pad.b);
  g.strokeStyle = '#2a2f3a';
  g.fillStyle = '#8a93a6';
  g.font = '10px system-ui, sans-serif';
  g.lineWidth = 1;
  for (const f of [0, 0.5, 1]) {
    const yy = Math.round(y(top * f)) + 0.5;
    g.beginPath();
    g.moveTo(pad.l, yy);
    g.lineTo(w - pad.r, yy);
    g.stroke();
    g.fillText(fmtRate(top * f), 2, yy + 3);
  }
  g.fillText('-5 min', pad.l, h - 3);
  g.fillText('now', w - pad.r - 20, h - 3);
  canvas.dataset.points = String(points.length);
  canvas.dataset.max = String(points.length ? Math.max(...points.map((p) => p[1])) : 0);
  if (points.length < 1) return;
  g.strokeStyle = color;
  g.lineWidth = 1.5;
  g.beginPath();
  points.forEach(([t, v], i) => (i ? g.lineTo(x(t), y(v)) : g.moveTo(x(t), y(v))));
  g.stroke();
  g.globalAlpha = 0.15;
  g.fillStyle = color;
  g.lineTo(x(points[points.length - 1][0]), y(0));
  g.lineTo(x(points[0][0]), y(0));
  g.closePath();
  g.fill();
  g.globalAlpha = 1;
}

function niceCeil(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// ---- wiring ----

$('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const v = $('token').value.trim();
  if (v) login(v);
});
$('logout').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  showLogin();
});
$('drain').addEventListener('click', (e) => {
  if (confirm('Drain this node? It takes no new sessions or TURN allocations (until restarted) and keeps serving the open ones.')) {
    act(e.currentTarget, 'POST', '/admin/api/drain');
  }
});
$('rd-close').addEventListener('click', (e) => {
  if (selectedRoom !== null && confirm(`Close room "${selectedRoom}"? Every peer in it is kicked.`)) {
    act(e.currentTarget, 'DELETE', `/admin/api/rooms/${encodeURIComponent(selectedRoom)}`);
  }
});

if (token) login(token);
else showLogin();
