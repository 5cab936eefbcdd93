#!/usr/bin/env node
'use strict';
// Soak driver: steady signaling churn checked for exactly-once delivery,
// TURN relaying, and a sampler of the server's RSS, fds and CPU every
// `--sample` seconds, for `--minutes`; then a drain, a check that the
// server let go of everything, and a summary. Started by run.sh, which owns
// the server process; see README.md.
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { performance } = require('node:perf_hooks');
const { Checker } = require('./checker');
const { Swarm } = require('./signaling');
const { TurnLoad } = require('./turn');

const DEFAULTS = {
  http: '', // 127.0.0.1:PORT of the server's HTTP listener
  turn: '', // 127.0.0.1:PORT of its STUN/TURN UDP listener ('' = no TURN load)
  pid: 0,
  minutes: 60,
  out: '',
  rooms: 60,
  msgRate: 5, // messages per second per peer
  toShare: 0.3, // share of messages sent with `to`
  payload: 200, // bytes of padding in each message's data
  lifetime: 60, // mean seconds of a peer's connection before its fate
  roomLifetime: 300, // mean seconds before a room slot retires its room
  pingSecs: 10,
  grace: 20, // the server's session.resume_grace_secs
  window: 300, // seconds per latency window
  sample: 10, // seconds between samples
  stunLoad: '',
  turnUser: 'soak:soak-pw',
  turnSockets: 4,
  turnRate: 500, // round trips per second, all sockets together
  turnSecs: 30,
  seed: 1,
  fault: 'none', // self-test of the checker: 'loss' or 'dup' must make the run fail
};

function parseArgs(argv) {
  const o = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(key in o) || i + 1 >= argv.length) {
      throw new Error(`unknown option or missing value: ${argv[i]}`);
    }
    o[key] = typeof DEFAULTS[key] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
    if (Number.isNaN(o[key])) throw new Error(`${argv[i]} wants a number`);
  }
  if (!o.http || !o.pid || !o.out) throw new Error('--http, --pid and --out are required');
  for (const a of [o.http, o.turn]) {
    if (a && !a.startsWith('127.0.0.1:')) throw new Error(`only 127.0.0.1 targets: ${a}`);
  }
  if (o.turn && !o.stunLoad) throw new Error('--turn needs --stun-load');
  return o;
}

// mulberry32: a seeded schedule, so runs are comparable.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pct(sorted, p) {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
  return sorted[Math.max(0, i)];
}

function dist(values) {
  const s = Float64Array.from(values).sort();
  const r = (x) => (x === null ? null : Math.round(x * 100) / 100);
  return { n: s.length, p50: r(pct(s, 50)), p99: r(pct(s, 99)), max: r(s.length ? s[s.length - 1] : null) };
}

// Least-squares slope of y over x.
function slope(xs, ys) {
  const n = xs.length;
  if (n < 2) return null;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i] - mx) * (ys[i] - my);
    den += (xs[i] - mx) ** 2;
  }
  return den === 0 ? null : num / den;
}

const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
  } catch {
    return 100;
  }
})();

function procSample(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name) => {
    const m = new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status);
    return m ? Number(m[1]) : null;
  };
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpuS = (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
  return {
    rss: field('VmRSS'),
    hwm: field('VmHWM'),
    threads: field('Threads'),
    fds: fs.readdirSync(`/proc/${pid}/fd`).length,
    cpuS,
    load1: Number(fs.readFileSync('/proc/loadavg', 'utf8').split(' ')[0]),
  };
}

function metrics(addr) {
  return new Promise((resolve) => {
    const req = http.get(`http://${addr}/metrics`, { timeout: 2000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => {
        const m = {};
        for (const line of body.split('\n')) {
          if (!line || line.startsWith('#')) continue;
          const i = line.lastIndexOf(' ');
          m[line.slice(0, i)] = Number(line.slice(i + 1));
        }
        resolve(m);
      });
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve({}));
  });
}

const GAUGES = {
  sessions: 'switchboard_sessions',
  sessions_connected: 'switchboard_sessions_connected',
  rooms: 'switchboard_rooms',
  ws_connections: 'switchboard_ws_connections',
  turn_allocations: 'switchboard_turn_allocations',
  relayed_to_peer: 'switchboard_turn_relayed_packets_total{direction="to_peer"}',
  relayed_to_client: 'switchboard_turn_relayed_packets_total{direction="to_client"}',
  slow_reader_closes: 'switchboard_slow_reader_closes_total',
};

const COLUMNS = [
  'phase', 't_s', 'rss_kib', 'hwm_kib', 'fds', 'threads', 'cpu_pct', 'load1', 'peers', 'connected',
  'sent', 'acked', 'received', 'deliver_n', 'deliver_p50_ms', 'deliver_p99_ms', 'deliver_max_ms',
  'ack_p99_ms', 'loop_lag_max_ms', 'lost', 'dup', 'order', 'turn_sent', 'turn_answered',
  ...Object.keys(GAUGES),
];

async function main() {
  const o = parseArgs(process.argv.slice(2));
  fs.mkdirSync(o.out, { recursive: true });
  const csv = fs.createWriteStream(path.join(o.out, 'samples.csv'));
  csv.write(`${COLUMNS.join(',')}\n`);
  const log = (s) => process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${s}\n`);

  const t0 = performance.now();
  const windowMs = o.window * 1000;
  const lastWindow = Math.max(0, Math.ceil((o.minutes * 60) / o.window) - 1);
  const windows = [];
  let interval = { deliver: [], ack: [] };
  const lat = (kind, ms) => {
    // Deliveries during the drain count in the last window of the load.
    const w = Math.min(Math.floor((performance.now() - t0) / windowMs), lastWindow);
    while (windows.length <= w) windows.push({ deliver: [], ack: [] });
    windows[w][kind].push(ms);
    interval[kind].push(ms);
  };

  // Settling waits out the grace period plus a margin (checker.js).
  const checker = new Checker((o.grace + 30) * 1000, (2 * o.grace + 60) * 1000);
  const swarm = new Swarm(o, checker, lat, rng(o.seed));
  const turn = o.turn ? new TurnLoad(o) : null;

  let lagMax = 0;
  let lagExpect = performance.now() + 100;
  const lagTimer = setInterval(() => {
    const now = performance.now();
    lagMax = Math.max(lagMax, now - lagExpect);
    lagExpect = now + 100;
  }, 100);

  const samples = [];
  let prev = procSample(o.pid);
  let prevT = performance.now();
  let phase = 'load';
  let serverGone = false;
  const takeSample = async () => {
    let p;
    try {
      p = procSample(o.pid);
    } catch {
      serverGone = true;
      log('the server process is gone');
      return null;
    }
    const now = performance.now();
    const m = await metrics(o.http);
    const ti = turn ? turn.takeInterval() : { sent: 0, answered: 0 };
    const d = dist(interval.deliver);
    const a = dist(interval.ack);
    interval = { deliver: [], ack: [] };
    const row = {
      phase,
      t_s: Math.round((now - t0) / 100) / 10,
      rss_kib: p.rss,
      hwm_kib: p.hwm,
      fds: p.fds,
      threads: p.threads,
      // A sample right after another (end of the run) has no meaningful rate.
      cpu_pct: now - prevT < 2000 ? '' : Math.round(((100 * (p.cpuS - prev.cpuS)) / ((now - prevT) / 1000)) * 10) / 10,
      load1: p.load1,
      peers: swarm.peers.size,
      connected: swarm.connected(),
      sent: checker.c.sent,
      acked: checker.c.acked,
      received: swarm.c.received,
      deliver_n: d.n,
      deliver_p50_ms: d.p50,
      deliver_p99_ms: d.p99,
      deliver_max_ms: d.max,
      ack_p99_ms: a.p99,
      loop_lag_max_ms: Math.round(lagMax),
      lost: checker.c.lost,
      dup: checker.c.dup,
      order: checker.c.order,
      turn_sent: ti.sent,
      turn_answered: ti.answered,
    };
    for (const [k, name] of Object.entries(GAUGES)) row[k] = m[name] ?? '';
    lagMax = 0;
    prev = p;
    prevT = now;
    samples.push(row);
    csv.write(`${COLUMNS.map((c) => row[c] ?? '').join(',')}\n`);
    return row;
  };

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  log(`${o.minutes} min against http ${o.http}${o.turn ? `, turn ${o.turn}` : ''}, server pid ${o.pid}, out ${o.out}`);
  swarm.start();
  if (turn) await turn.start();

  // The load phase: one sample per period, bounded by the clock.
  const endAt = t0 + o.minutes * 60000;
  const maxSamples = Math.ceil((o.minutes * 60) / o.sample) + 1;
  for (let i = 0; i < maxSamples && performance.now() < endAt && !serverGone; i++) {
    await sleep(Math.max(0, Math.min(o.sample * 1000, endAt - performance.now())));
    checker.sweep(performance.now());
    const r = await takeSample();
    if (r && (i + 1) % 6 === 0) {
      log(`t=${r.t_s}s rss=${r.rss_kib}KiB fds=${r.fds} cpu=${r.cpu_pct}% peers=${r.peers} sent=${r.sent} p99=${r.deliver_p99_ms}ms lost=${r.lost} dup=${r.dup}`);
    }
  }

  // Drain: no new sends or fates; resumes under way finish, acks and
  // replays arrive, byes of dropped sessions come after the grace period.
  phase = 'drain';
  log('load over; draining');
  swarm.stop();
  const turnStopped = turn ? turn.stop() : Promise.resolve();
  const drainEnd = performance.now() + (o.grace + 20) * 1000;
  const busy = () => {
    for (const p of swarm.peers) {
      if (p.state === 'dropped' || p.state === 'resuming' || p.state === 'connecting') return true;
      if (p.pending.size > 0 && p.state !== 'closing') return true;
    }
    return checker.outstanding() > 0;
  };
  while (performance.now() < drainEnd && busy() && !serverGone) await sleep(500);
  const drainedClean = !busy();
  checker.sweep(performance.now(), true);
  await takeSample();
  await swarm.closeAll(10000);
  await turnStopped;

  // The server must let go of everything: sessions dropped without a close
  // frame end after the grace period.
  phase = 'idle';
  const idleEnd = performance.now() + (o.grace + 10) * 1000;
  let left = {};
  while (!serverGone && performance.now() < idleEnd) {
    const m = await metrics(o.http);
    left = Object.fromEntries(['sessions', 'rooms', 'ws_connections', 'turn_allocations'].map((k) => [k, m[GAUGES[k]]]));
    if (Object.values(left).every((v) => v === 0 || v === undefined)) break;
    await sleep(1000);
  }
  await takeSample();
  clearInterval(lagTimer);

  const summary = summarize(o, samples, windows, checker, swarm, turn, left, drainedClean, serverGone);
  fs.writeFileSync(path.join(o.out, 'summary.json'), `${JSON.stringify(summary, null, 2)}\n`);
  const text = render(summary);
  fs.writeFileSync(path.join(o.out, 'summary.txt'), text);
  process.stdout.write(text);
  await new Promise((r) => csv.end(r));
  process.exit(summary.pass ? 0 : 1);
}

function summarize(o, samples, windows, checker, swarm, turn, left, drainedClean, serverGone) {
  const load = samples.filter((s) => s.phase === 'load');
  const half = load.slice(Math.floor(load.length / 2));
  const mins = half.map((s) => s.t_s / 60);
  const rssSlope = slope(mins, half.map((s) => s.rss_kib));
  const fdSlope = slope(mins, half.map((s) => s.fds));
  const meanRss = half.reduce((a, s) => a + s.rss_kib, 0) / Math.max(1, half.length);
  const cpu = load.map((s) => s.cpu_pct).filter((x) => typeof x === 'number');
  const round = (x, k = 2) => (x === null ? null : Math.round(x * 10 ** k) / 10 ** k);
  const c = checker.c;
  const reasons = [];
  const zero = { lost: c.lost, duplicated: c.dup, out_of_order: c.order, extra: c.extra, ack_mismatch: c.ackMismatch,
    late_copies: c.late, seq_anomalies: swarm.c.seqAnomalies, unexpected_resume_failed: swarm.c.resumeFailedUnexpected };
  for (const [k, v] of Object.entries(zero)) if (v !== 0) reasons.push(`${k} = ${v}`);
  if (serverGone) reasons.push('the server exited during the run');
  const leftover = Object.entries(left).filter(([, v]) => v !== 0 && v !== undefined);
  if (leftover.length) reasons.push(`state left on the server after the run: ${leftover.map(([k, v]) => `${k}=${v}`).join(' ')}`);
  if (turn && turn.c.answered === 0) reasons.push('no TURN traffic was relayed');
  const windowRows = windows.map((w, i) => {
    const d = dist(w.deliver);
    const a = dist(w.ack);
    return { from_min: (i * o.window) / 60, to_min: Math.min(((i + 1) * o.window) / 60, o.minutes),
      deliveries: d.n, p50_ms: d.p50, p99_ms: d.p99, max_ms: d.max, ack_p99_ms: a.p99 };
  });
  const lastLoad = load[load.length - 1] || {};
  const lastAll = samples[samples.length - 1] || {};
  return {
    pass: reasons.length === 0,
    reasons,
    options: o,
    samples: samples.length,
    rss_kib: { first: load[0]?.rss_kib, last: lastLoad.rss_kib, max: Math.max(...load.map((s) => s.rss_kib)),
      slope_kib_per_min_second_half: round(rssSlope), slope_pct_per_hour: round(rssSlope === null ? null : (6000 * rssSlope) / meanRss) },
    fds: { first: load[0]?.fds, last: lastLoad.fds, min: Math.min(...load.map((s) => s.fds)), max: Math.max(...load.map((s) => s.fds)),
      slope_per_min_second_half: round(fdSlope, 3) },
    server_cpu_pct: { mean: round(cpu.reduce((a, b) => a + b, 0) / Math.max(1, cpu.length), 1), max: Math.max(...cpu) },
    latency_windows: windowRows,
    loop_lag_max_ms: Math.max(...samples.map((s) => s.loop_lag_max_ms)),
    messages: { ...c },
    drained_clean: drainedClean,
    churn: { ...swarm.c },
    close_codes: swarm.closeCodes,
    error_codes: swarm.errorCodes,
    anomalies: checker.examples,
    turn: turn ? { ...turn.c, loss_pct: turn.c.sent ? round((100 * (turn.c.sent - turn.c.answered)) / turn.c.sent, 4) : null,
      relayed_to_peer: lastAll.relayed_to_peer, relayed_to_client: lastAll.relayed_to_client, last_error: turn.lastError } : null,
    left_on_server: left,
  };
}

function render(s) {
  const m = s.messages;
  const ch = s.churn;
  const lines = [
    `soak: ${s.options.minutes} min, ${s.samples} samples; ${s.pass ? 'PASS' : `FAIL: ${s.reasons.join('; ')}`}`,
    `server CPU: mean ${s.server_cpu_pct.mean} % of a core, max ${s.server_cpu_pct.max} %`,
    `RSS KiB: first ${s.rss_kib.first}, last ${s.rss_kib.last}, max ${s.rss_kib.max}; slope (second half) ${s.rss_kib.slope_kib_per_min_second_half} KiB/min = ${s.rss_kib.slope_pct_per_hour} %/h`,
    `fds: first ${s.fds.first}, last ${s.fds.last}, range ${s.fds.min}-${s.fds.max}; slope (second half) ${s.fds.slope_per_min_second_half}/min`,
    `messages: sent ${m.sent}, acked ${m.acked}, acked deliveries ${m.expected}: ok ${m.ok}, LOST ${m.lost}, DUPLICATED ${m.dup}, out of order ${m.order}, extra ${m.extra}, ack/view mismatch ${m.ackMismatch}, late copies ${m.late}`,
    `  excused (ended sessions): by bye ${m.excusedBye}, by resume_failed ${m.excusedFailed}, unwitnessed ${m.unwitnessed}; unacked ${m.unacked} (of which received ${m.receivedUnacked}; requests that never reached the server in a drop ${ch.lostInDrop}); refused ${ch.refused}; drained clean: ${s.drained_clean}`,
    `churn: connects ${ch.connects}, rooms ${ch.rooms}, joins ${ch.joins}, leaves ${ch.leaves}, closes ${ch.closes}, drops resumed ${ch.dropsResumed}, takeovers ${ch.takeovers} (old socket closed by server ${ch.takeoverOldClosed}, killed ${ch.takeoverOldKilled}), drops gone ${ch.dropsGone}, late resumes ${ch.dropsLate} (resume_failed ${ch.resumeFailedExpected}, accepted ${ch.lateResumeAccepted}), unexpected resume_failed ${ch.resumeFailedUnexpected}`,
    `  resumes ${ch.resumes} (resumed ${ch.resumed}), replayed messages ${ch.replayed}, pings ${ch.pings} (pongs ${ch.pongs}), unexpected closes ${ch.unexpectedCloses} ${JSON.stringify(s.close_codes)}, errors ${JSON.stringify(s.error_codes)}, seq anomalies ${ch.seqAnomalies}, connect errors ${ch.connectErrors}`,
    `latency per ${s.options.window / 60}-min window (ms, message send to delivery; ack = send to ack), load-tool event-loop lag max ${s.loop_lag_max_ms} ms:`,
    '  | window (min) | deliveries | p50 | p99 | max | ack p99 |',
    ...s.latency_windows.map((w) => `  | ${w.from_min}-${w.to_min} | ${w.deliveries} | ${w.p50_ms} | ${w.p99_ms} | ${w.max_ms} | ${w.ack_p99_ms} |`),
  ];
  if (s.turn) {
    const t = s.turn;
    lines.push(`TURN: ${t.runs} runs (${t.failed} failed), round trips sent ${t.sent}, answered ${t.answered}, loss ${t.loss_pct} %; server relayed ${t.relayed_to_peer} to peers, ${t.relayed_to_client} to clients${t.last_error ? `; last error: ${t.last_error}` : ''}`);
  }
  lines.push(`left on the server after the run: ${JSON.stringify(s.left_on_server)}`);
  if (s.anomalies.length) lines.push(`first anomalies: ${JSON.stringify(s.anomalies.slice(0, 10))}`);
  return `${lines.join('\n')}\n`;
}

main().catch((e) => {
  process.stderr.write(`soak: ${e.stack || e}\n`);
  process.exit(2);
});
