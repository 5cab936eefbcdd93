#!/usr/bin/env python3
"""An aiortc peer in a switchboard SFU room (PROTOCOL.md §7): an independent WebRTC stack.

    python3 peer.py ws://HOST/ws ROOM SECONDS [NAME]

Connects, reads `welcome` (its peer id), joins ROOM with "media":"sfu", publishes one
video track (a moving colour gradient), offers, and answers every offer the server makes
as others' tracks come and go. Counts the video frames it receives per publisher (the
stream id of each forwarded track, from the remote SDP's `a=msid:` line of the track's
mid) and prints one JSON line a second:

    {"peer": "<own id>", "state": "<connectionState>", "received": {"<peer id>": frames}}

Exits after SECONDS (every wait is bounded), leaving the room first.
"""

import asyncio
import json
import sys
import time

import av
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, VideoStreamTrack
from aiortc.sdp import SessionDescription, candidate_from_sdp

WIDTH, HEIGHT = 320, 240  # VideoStreamTrack paces them at 30 frames a second


class Gradient(VideoStreamTrack):
    """A colour gradient that moves a step a frame (yuv420p planes; no numpy needed)."""

    def __init__(self):
        super().__init__()
        self.n = 0
        self.ramp = bytes(i % 256 for i in range(256 + WIDTH + HEIGHT))

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        self.n += 1
        s = (self.n * 4) % 256
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        y, u, v = frame.planes
        y.update(b"".join(self.ramp[(r + s) % 256 :][:WIDTH] for r in range(HEIGHT)))
        chroma = (WIDTH // 2) * (HEIGHT // 2)
        u.update(bytes([s]) * chroma)
        v.update(bytes([255 - s]) * chroma)
        frame.pts = pts
        frame.time_base = time_base
        return frame


def stream_ids(sdp):
    """mid -> stream id (the publisher's peer id) of every m-line with an msid."""
    out = {}
    try:
        desc = SessionDescription.parse(sdp)
    except Exception:  # noqa: BLE001 - a description we cannot read names nobody
        return out
    for m in desc.media:
        mid = m.rtp.muxId
        if m.msid and mid is not None:
            out[mid] = m.msid.split()[0]
    return out


async def main(url, room, seconds, name):
    deadline = time.monotonic() + seconds
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # loopback: no STUN server
    counts = {}  # track -> frames received
    owners = {}  # track -> the last stream id seen on its m-line (kept once that goes)
    tasks = []

    async def consume(track):
        # Bounded: ends with the track, or at the deadline (cancelled in the end).
        while time.monotonic() < deadline:
            try:
                await asyncio.wait_for(track.recv(), timeout=max(0.1, deadline - time.monotonic()))
            except (MediaStreamError, asyncio.TimeoutError):
                return
            if track.kind == "video":
                counts[track] = counts.get(track, 0) + 1

    @pc.on("track")
    def on_track(track):
        tasks.append(asyncio.ensure_future(consume(track)))

    def received():
        """Frames per publisher: each track's current mid -> msid in the remote SDP."""
        ids = stream_ids(pc.remoteDescription.sdp) if pc.remoteDescription else {}
        out = {}
        for t in pc.getTransceivers():
            track = t.receiver.track
            if track is None or track not in counts:
                continue
            if ids.get(t.mid):
                owners[track] = ids[t.mid]
            who = owners.get(track, "?")
            out[who] = out.get(who, 0) + counts[track]
        return out

    async with websockets.connect(url, open_timeout=10, close_timeout=2) as ws:
        async def recv_frame(timeout):
            return json.loads(await asyncio.wait_for(ws.recv(), timeout=timeout))

        welcome = await recv_frame(10)
        assert welcome.get("type") == "welcome", welcome
        me = welcome["peer"]
        await ws.send(json.dumps({"type": "join", "room": room, "media": "sfu", "meta": {"name": name}}))
        for _ in range(50):
            f = await recv_frame(10)
            if f.get("type") == "joined" and f.get("room") == room:
                break
            if f.get("type") == "error":
                raise SystemExit(f"join failed: {f}")
        else:
            raise SystemExit("no joined frame")
        if f.get("media") != "sfu":
            raise SystemExit(f"the room is not an SFU room: {f}")

        pc.addTrack(Gradient())
        offer = await pc.createOffer()
        await pc.setLocalDescription(offer)  # gathers: the SDP carries the candidates
        await ws.send(json.dumps({"type": "media", "room": room, "data": {"kind": "offer", "sdp": pc.localDescription.sdp}}))

        async def handle(data):
            kind = data.get("kind")
            if kind == "answer":
                if pc.signalingState == "have-local-offer":
                    await pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type="answer"))
            elif kind == "offer":
                await pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type="offer"))
                await pc.setLocalDescription(await pc.createAnswer())
                await ws.send(json.dumps({"type": "media", "room": room, "data": {"kind": "answer", "sdp": pc.localDescription.sdp}}))
            elif kind == "candidate":
                c = data.get("candidate") or {}
                line = c.get("candidate") or ""
                if line:
                    cand = candidate_from_sdp(line.split(":", 1)[1] if line.startswith("candidate:") else line)
                    cand.sdpMid = c.get("sdpMid")
                    cand.sdpMLineIndex = c.get("sdpMLineIndex")
                    await pc.addIceCandidate(cand)

        async def signaling():
            while time.monotonic() < deadline:
                try:
                    f = await recv_frame(max(0.1, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    return
                if f.get("type") == "media" and f.get("room") == room and isinstance(f.get("data"), dict):
                    try:
                        await handle(f["data"])
                    except Exception as err:  # noqa: BLE001 - said, and the peer goes on
                        print(json.dumps({"peer": me, "error": f"{type(err).__name__}: {err}"}), flush=True)
                elif f.get("type") == "error":
                    print(json.dumps({"peer": me, "server_error": f}), flush=True)

        sig = asyncio.ensure_future(signaling())
        try:
            while time.monotonic() < deadline:
                await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                print(json.dumps({"peer": me, "state": pc.connectionState, "received": received()}), flush=True)
        finally:
            sig.cancel()
            for t in tasks:
                t.cancel()
            try:
                await asyncio.wait_for(ws.send(json.dumps({"type": "leave", "room": room})), 2)
            except Exception:  # noqa: BLE001 - leaving is a courtesy
                pass
            await asyncio.wait_for(pc.close(), 5)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else "aiortc"))
