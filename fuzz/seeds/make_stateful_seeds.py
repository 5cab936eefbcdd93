#!/usr/bin/env python3
"""Writes the seed scripts of the stateful fuzz targets (signal_core, turn_server,
engineio_packet). Their inputs are byte scripts read by fuzz/common/input.rs; these few
scripts walk the main paths (join and chat, drop and resume, calls; the TURN 401 dance,
permissions, channels, relaying, expiry; Engine.IO polling and WebSocket framing) so the
fuzzer starts past the handshakes. Run from anywhere: python3 fuzz/seeds/make_stateful_seeds.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data, under=HERE):
    os.makedirs(os.path.join(under, target), exist_ok=True)
    with open(os.path.join(under, target, name), "wb") as f:
        f.write(bytes(data))


def text(s, max_len=255):
    b = s.encode()
    assert len(b) <= max_len
    return [len(b)] + list(b)


def long(b):
    return list(struct.pack(">H", len(b))) + list(b)


# --- signal_core: [tight] then steps [slot, op, ...] -------------------------------------
def connect(slot, classic=False, user=1):
    return [slot, 0, 0 if classic else 1, 2, user]


def join(slot, room=3, rid=9):
    # op 1 native frame: id kind 3 (number), frame kind 0 (join), room, meta: offer object
    return [slot, 1, 3, rid, 0, room, 1, 3] + text("v=0")


def message(slot, room=3, data='{"kind":"offer","sdp":"v=0"}'):
    return [slot, 1, 3, 11, 2, room, 1, 0] + text(data)


def raw(slot, s):
    return [slot, 3] + text(s)


def classic(slot, event, args_kind=1, room=3, ack=1):
    # event byte n: CLASSIC_EVENTS[n % 4] = join, message, leave, ping (n=4 -> join)
    return [slot, 4, event, args_kind, room, ack]


def disconnect(slot, clean=False):
    return [slot, 5, 1 if clean else 0]


def resume(slot, back=0):
    return [slot, 6, 2, 2, back, 2, 1]


def advance(slot, secs):
    return [slot, 7, 0, secs]


def call(slot, to_user=2):
    return [slot, 1, 0, 5, to_user]


def accept(slot):
    return [slot, 1, 0, 6, 1]


write("signal_core", "chat_drop_resume", [1]
      + connect(0) + connect(1, user=2) + join(0) + join(1)
      + message(0) + message(1) + disconnect(1) + message(0) + message(0)
      + resume(1, back=1) + message(1) + raw(0, '{"type":"ping","last_seq":3}')
      + advance(2, 30))
write("signal_core", "mixed_faces", [0]
      + connect(0, classic=True) + connect(1) + classic(0, 4) + join(1)
      + classic(0, 1, args_kind=2, room=3) + [0, 3, 0, 4] + message(1)
      + classic(0, 2) + disconnect(0, clean=True))
write("signal_core", "call", [0]
      + connect(0, user=1) + connect(1, user=2) + call(0) + accept(1)
      + message(1, data="[1,2,3]") + advance(0, 40))
# Issue #12 item 13: a number serde_json's default float parsing would change, relayed.
write("signal_core", "float_data", [0]
      + connect(0) + connect(1, user=2) + join(0) + join(1)
      + message(0, data="377777777777777700000000000000000000001731820631")
      + message(1, data='{"z":1,"a":[1e400,-0.0]}'))
# Regression (server finding, not fixed here): a native sender's data holding a number out
# of f64's range reaches a classic peer as null (outbox.rs parses the raw text into a Value
# and falls back to Null). Slot 1 is classic.
write("signal_core", "classic_peer_gets_null", [0]
      + connect(0) + connect(1, classic=True) + join(0) + classic(1, 4)
      + message(0, data="[1e400]"),
      under=os.path.join(HERE, "..", "regressions"))
write("signal_core", "rate_and_size", [1]
      + connect(0) + join(0) + sum((message(0) for _ in range(12)), [])
      + raw(0, "{" * 200) + [0, 8] + advance(0, 2))


# --- turn_server: [flags] then steps [client, op, ...] -----------------------------------
def turn(c, op, signed=True, peer=0, channel=0, lifetime=None, opts=0, data=b""):
    out = [c, op, 1 if signed else 0, 1, 1, peer, 1]
    out += [2, channel]  # channel: 0x4000 + channel % 4
    out += [2]  # no reservation token
    out += [opts]
    if lifetime is None:
        out += [3]
    elif lifetime == 0:
        out += [0]
    else:
        out += [1] + list(struct.pack(">I", lifetime))
    return out + long(data)


ALLOCATE, REFRESH, PERMISSION, CHANNEL_BIND, SEND = 0, 2, 3, 4, 5

write("turn_server", "allocate_relay_expire", [0]
      + turn(0, ALLOCATE, signed=False) + turn(0, ALLOCATE)
      + turn(0, PERMISSION, peer=0) + turn(0, SEND, peer=0, data=b"hello")
      + turn(0, CHANNEL_BIND, peer=1) + [0, 8, 2, 0] + long(b"data")
      + [0, 10, 0, 1, 0] + long(b"from peer") + [0, 10, 0, 1, 1] + long(b"on channel")
      + turn(0, REFRESH, lifetime=900) + [0, 12, 0] + list(struct.pack(">H", 700))
      + turn(0, REFRESH, lifetime=0))
write("turn_server", "tcp_even_port_quota", [0]
      + turn(2, ALLOCATE, signed=False) + turn(2, ALLOCATE, opts=2 | 4)
      + turn(1, ALLOCATE, signed=False) + turn(1, ALLOCATE)
      + turn(3, ALLOCATE, signed=False) + turn(3, ALLOCATE)
      + turn(2, CHANNEL_BIND, peer=0, channel=1) + [2, 8, 2, 1] + long(b"tcp")
      + [2, 13] + [0, 14, 2] + turn(0, ALLOCATE, signed=False) + turn(0, ALLOCATE)
      + [0, 14, 0])

# Regression (server finding, not fixed here): client 0 binds a channel to client 1's relay
# address (allowed: it is one of the server's own relays), client 1 deletes its allocation,
# and client 0's ChannelData still goes to that address, which is now no relay and is
# refused by the peer policy. Peers 7 and 8 are the relays' public addresses.
write("turn_server", "channel_to_released_relay", [0]
      + turn(0, ALLOCATE, signed=False) + turn(0, ALLOCATE)
      + turn(1, ALLOCATE, signed=False) + turn(1, ALLOCATE)
      + turn(0, CHANNEL_BIND, peer=8) + [0, 8, 2, 0] + long(b"alive")
      + turn(1, REFRESH, lifetime=0) + [0, 8, 2, 0] + long(b"dead"),
      under=os.path.join(HERE, "..", "regressions"))

# --- engineio_packet: [mode] then a polling body, or [kind, len16, bytes]* ---------------
def ws(s, binary=False):
    b = s if isinstance(s, bytes) else s.encode()
    return [0 if binary else 1] + long(b)


write("engineio_packet", "polling", [0] + list(
    b'40\x1e42["join","r0"]\x1e421["message","r0",{"kind":"offer","sdp":"v=0"}]'
    b'\x1e42["leave","r0"]\x1e2\x1e1'))
write("engineio_packet", "websocket", [1]
      + ws("40") + ws('42["join","lobby"]') + ws('423["message","lobby",{"b":[1,2.5,null]}]')
      + ws('451-["message","lobby",{"_placeholder":true,"num":0}]')
      + ws(b"\x01\x02\x03", binary=True) + ws("bAAEC") + ws('42/admin,["join","r0"]')
      + ws("41"))

# --- sfu_demux: steps [source, to_bound, op, ...] ----------------------------------------
# op 0 raw long bytes, 1 STUN around server ufrag [peer, tail, user tail, prefix?, len?, tid],
# 2 DTLS-first-byte long bytes, 3 RTP-first-byte long bytes, 4 time [ms16].
def sfu_stun(source, peer, user=b"cli"):
    return [source, 1, 1, peer, 0] + [len(user)] + list(user) + [0, 0] + [7] * 12


dtls_hello = bytes([22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 40, 1]) + bytes(40)
rtp = bytes([0x80, 111, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4]) + bytes(60)
write("sfu_demux", "stun_dtls_rtp",
      sfu_stun(0, 0) + [0, 0, 2] + long(dtls_hello) + [0, 0, 3] + long(rtp)
      + sfu_stun(1, 1) + [1, 1, 3] + long(rtp) + [0, 0, 4, 0x03, 0xe8]
      + [2, 0, 2] + long(dtls_hello) + [3, 0, 0] + long(b"\x00\x01garbage"))
write("sfu_demux", "timeouts", [0, 0, 4, 0x75, 0x30, 0, 0, 4, 0x75, 0x30] + sfu_stun(0, 0))
