// A stand-in SFU for testing the SDK's and the page's SFU rooms without the real server:
// a chromium page holds one RTCPeerConnection per client and forwards every client's
// tracks to the others, as switchboard's SFU does (PROTOCOL.md §7): the client offers
// first, the SFU answers and then offers whenever tracks come or go, it is the impolite
// side of perfect negotiation, and every forwarded track's stream id is the publisher's
// peer id (rewritten in the SDP it sends). Not a model of str0m: no simulcast (its offers'
// layers are stripped, so a client falls back to one), no ICE-lite. Plug it into
// lib/fake-server.js: `startFakeServer({sfu})`, then `sfu.attach(server)`.

/** In-page SFU logic; `out(room, peer, data)` sends a `media` frame's data to a client. */
function sfuPageScript() {
  /** @type {Map<string, any>} */
  const peers = new Map();
  const key = (room, peer) => `${room}\n${peer}`;
  /** Local stream id -> publisher peer id, to rewrite msid in what is sent. */
  const owners = new Map();
  const rewrite = (sdp) => sdp.replace(/msid:(\S+) (\S+)/g, (m, sid, tid) => `msid:${owners.get(sid) ?? sid} ${tid}`);
  // No simulcast in this stand-in: the client's layers go, so it sends one.
  const noSimulcast = (sdp) =>
    sdp
      .split('\r\n')
      .filter((l) => !l.startsWith('a=simulcast:') && !l.startsWith('a=rid:'))
      .join('\r\n');
  window.__fakeSfu = { peers, offers: 0, ignored: 0 };

  function others(st) {
    return [...peers.values()].filter((o) => o.room === st.room && o !== st);
  }

  function forward(pub, track, to) {
    if (to.forwards.has(track)) return;
    const t = to.pc.addTransceiver(track, { direction: 'sendonly', streams: [pub.stream] });
    to.forwards.set(track, t);
    renegotiate(to);
  }

  function unforward(track, to) {
    const t = to.forwards.get(track);
    if (!t) return;
    to.forwards.delete(track);
    // As switchboard's SFU does (str0m's stop_media): the m-line is stopped, not kept.
    t.stop();
    renegotiate(to);
  }

  async function renegotiate(st) {
    st.dirty = true;
    if (!st.answeredFirst || st.closed || st.makingOffer || st.pc.signalingState !== 'stable') return;
    st.dirty = false;
    try {
      st.makingOffer = true;
      await st.pc.setLocalDescription(await st.pc.createOffer());
      window.__fakeSfu.offers += 1;
      window.__sfuOut(st.room, st.peer, { kind: 'offer', sdp: rewrite(st.pc.localDescription.sdp) });
    } finally {
      st.makingOffer = false;
    }
  }

  async function handle(st, data) {
    const pc = st.pc;
    if (data.kind === 'offer' || data.kind === 'answer') {
      const ready = !st.makingOffer && (pc.signalingState === 'stable' || st.settingAnswer);
      st.ignoreOffer = data.kind === 'offer' && !ready;
      if (st.ignoreOffer) {
        window.__fakeSfu.ignored += 1;
        return;
      }
      st.settingAnswer = data.kind === 'answer';
      try {
        await pc.setRemoteDescription({ type: data.kind, sdp: data.kind === 'offer' ? noSimulcast(data.sdp) : data.sdp });
      } finally {
        st.settingAnswer = false;
      }
      if (data.kind === 'offer') {
        await pc.setLocalDescription(await pc.createAnswer());
        window.__sfuOut(st.room, st.peer, { kind: 'answer', sdp: rewrite(pc.localDescription.sdp) });
        if (!st.answeredFirst) {
          st.answeredFirst = true;
          for (const o of others(st)) for (const track of o.published) forward(o, track, st);
        }
      }
      if (st.dirty) renegotiate(st);
    } else if (data.kind === 'candidate') {
      try {
        await pc.addIceCandidate(data.candidate);
      } catch (err) {
        if (!st.ignoreOffer) throw err;
      }
    }
  }

  window.sfuJoin = (room, peer) => {
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    const stream = new MediaStream();
    owners.set(stream.id, peer);
    const st = { room, peer, pc, stream, published: [], forwards: new Map(), queue: Promise.resolve(), answeredFirst: false, dirty: false, makingOffer: false, settingAnswer: false, ignoreOffer: false, closed: false };
    peers.set(key(room, peer), st);
    pc.onicecandidate = ({ candidate }) => candidate && window.__sfuOut(room, peer, { kind: 'candidate', candidate: candidate.toJSON() });
    pc.ontrack = ({ track, transceiver }) => {
      st.published.push(track);
      for (const o of others(st)) if (o.answeredFirst) forward(st, track, o);
      const gone = () => {
        if (!st.published.includes(track)) return;
        st.published = st.published.filter((t) => t !== track);
        for (const o of others(st)) unforward(track, o);
      };
      track.addEventListener('mute', () => {
        // A publisher's transceiver that stopped sending (removed track) mutes ours.
        if (transceiver.currentDirection === 'inactive' || transceiver.currentDirection === 'stopped') gone();
      });
      track.addEventListener('ended', gone);
    };
  };
  window.sfuLeave = (room, peer) => {
    const st = peers.get(key(room, peer));
    if (!st) return;
    peers.delete(key(room, peer));
    st.closed = true;
    for (const o of others(st)) for (const track of st.published) unforward(track, o);
    st.pc.close();
  };
  window.sfuMedia = (room, peer, data) => {
    const st = peers.get(key(room, peer));
    if (!st) return;
    st.queue = st.queue.then(() => handle(st, data)).catch((err) => console.error('fake sfu:', String(err)));
  };
}

/**
 * Opens the stand-in SFU in a page of `browser`. Returns the hooks for startFakeServer's
 * `sfu` option; call `attach(server)` once the fake server is up.
 * @param {import('playwright-core').BrowserContext} browser
 */
export async function startFakeSfu(browser) {
  const page = await browser.newPage();
  /** @type {any} */
  let server = null;
  await page.exposeFunction('__sfuOut', (room, peer, data) => server?.push(peer, { type: 'media', room, data }));
  await page.evaluate(sfuPageScript);
  // Calls reach the page in the order they were made; the page queues per peer.
  let chain = Promise.resolve();
  const call = (fn, args) => {
    chain = chain.then(() => page.evaluate(([f, a]) => window[f](...a), [fn, args])).catch(() => {});
  };
  return {
    page,
    attach(s) {
      server = s;
    },
    join: (room, peer) => call('sfuJoin', [room, peer]),
    leave: (room, peer) => call('sfuLeave', [room, peer]),
    media: (room, peer, data) => call('sfuMedia', [room, peer, data]),
    /** How many offers the SFU made and client offers it ignored in a collision. */
    counters: () => page.evaluate(() => ({ offers: window.__fakeSfu.offers, ignored: window.__fakeSfu.ignored })),
  };
}
