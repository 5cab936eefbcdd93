-- The backplane store on Redis: one call applies one command of one node,
-- atomically, with exactly the semantics of
-- switchboard_signal::cluster::store::Store::handle (read it side by side).
-- Every push is PUBLISHed on its node's channel, answers included, so that
-- one subscriber per node sees them in the order they were produced.
--
-- ARGV: prefix, node, replay_frames, replay_bytes, node_timeout_ms, then
-- one or more commands, each as its count of arguments, then its op and
-- the op's arguments (see codec.rs, `command_args`): one call applies a
-- whole batch of the node's commands, in order (atomic as a whole, which
-- the store does not mind), so that the per-call costs are paid once per
-- batch. Returns a string with one character per command: '1' when it was
-- applied, '0' when it was refused (a Persist or Resumed of a copy that is
-- not the session's current one, anything from a node declared dead), like
-- Store::handle. No KEYS: the key
-- names depend on the data (rooms, sessions), so this runs on one Redis
-- (or a primary and its replicas), not on Redis Cluster.
--
-- Payloads are "atoms": `<decimal length>:<bytes>`, or `-` for None.
-- Numbers are atoms holding decimal text; a list is its count, then items.
-- Lua numbers are doubles: seq and counts are exact up to 2^53.

local P = ARGV[1]
local NODE = ARGV[2]
local MAXF = tonumber(ARGV[3])
local MAXB = tonumber(ARGV[4])
local TIMEOUT = tonumber(ARGV[5])
local MEMBER = __MEMBER_ENTRY_BYTES__

local K_SEEN = P .. ':seen' -- zset: live node -> last seen (ms, Redis clock)
local K_LIVE = P .. ':live' -- zset, scores 0: live nodes in byte order
local K_DEAD = P .. ':dead' -- hash: dead node -> '1' once told so
-- zset, scores 0: every room with a member, in byte order (the admin API's
-- room list; rooms seated by an older script are missing until they empty)
local K_ROOMS = P .. ':rooms'
-- The store's generation, decimal text (a u64 does not fit a Lua number):
-- set by the first resync, from the node's random candidate; a Redis
-- restarted empty gets a new one.
local K_GEN = P .. ':gen'
-- set: nodes that said they have a media socket (a join with `relay`)
local K_RELAY = P .. ':relay'
-- hash: a session: token, peer, user, face, owner, seq, epoch, base
-- (absent when None). Its seq is the hash's or its last kept frame's,
-- whichever is larger (see get_seq).
local function ks(s) return P .. ':s:' .. s end
-- list: the frames kept for the session's copy of `epoch` (decimal text),
-- `seq:body` each, oldest first. The owner node appends with a plain RPUSH
-- (Command::Append, no script), so the epoch in the key is the fence: a
-- copy that is not the current one writes a list nobody reads, and a
-- move (bump_epoch) renames the list to the next epoch.
local function kfe(s, e) return P .. ':f:' .. s .. ':' .. e end
local function kf(s) return kfe(s, redis.call('HGET', ks(s), 'epoch') or '0') end
local function ksr(s) return P .. ':sr:' .. s end -- list: its rooms
local function ko(n) return P .. ':o:' .. n end -- zset 0: a node's sessions
local function kr(r) return P .. ':r:' .. r end -- list: a room's members
-- hash: listed, pa, pb, c (created, ms), k ('s' for an SFU room; absent:
-- mesh), mn (an SFU room's media node), and per member S: p:S (peer),
-- m:S (meta), j:S (joined, ms)
local function kri(r) return P .. ':ri:' .. r end
local function ku(u) return P .. ':u:' .. u end -- list: a user's native sessions
-- zset, scores 0: the SFU rooms a node is the media node of, in byte order
local function kmr(nd) return P .. ':mr:' .. nd end

local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Encoding.
local function fmt(x) return string.format('%d', x) end
local function a(s) return #s .. ':' .. s end
local function o(s) if s then return a(s) end return '-' end
local function n(x) return a(fmt(x)) end

-- Arguments, read in order; `argi` is set at each command's start.
local argi = 5
local function nx() argi = argi + 1; return ARGV[argi] end
local function nnum() return tonumber(nx()) end
local function nopt()
  local v = nx()
  if v == '-' then return nil end
  return string.sub(v, 2)
end

local function read_record()
  local r = { session = nx(), token = nx(), peer = nx(), user = nopt(), face = nx(), seq = nnum() }
  local frames = {}
  for i = 1, nnum() do frames[i] = { nnum(), nx() } end
  r.frames = frames
  local rooms = {}
  for i = 1, nnum() do rooms[i] = nx() end
  r.rooms = rooms
  r.epoch = nnum()
  r.base = nopt()
  if r.base then r.base = tonumber(r.base) end
  return r
end

-- (session, epoch) pairs.
local function read_copies()
  local c = {}
  for i = 1, nnum() do c[i] = { nx(), nnum() } end
  return c
end

-- Nodes.
-- What ZSCORE said of each node this call: only a sweep and NODE's own
-- ZADDs change the live set, and they reset it.
local live_seen = {}
local function alive(node)
  local v = live_seen[node]
  if v == nil then
    v = redis.call('ZSCORE', K_LIVE, node) ~= false
    live_seen[node] = v
  end
  return v
end
local function send(node, payload) redis.call('PUBLISH', P .. ':node:' .. node, payload) end
local function push(node, payload) if alive(node) then send(node, payload) end end

-- Sessions.
local function owner(s) return redis.call('HGET', ks(s), 'owner') end
local function owns(node, s) return owner(s) == node end
-- Store::holds: the node's copy is of the session's current move.
local function holds(node, s, epoch)
  local h = redis.call('HMGET', ks(s), 'owner', 'epoch')
  return h[1] == node and tonumber(h[2]) == epoch
end
local function get_epoch(s) return tonumber(redis.call('HGET', ks(s), 'epoch')) or 0 end
local function bump_epoch(s)
  local old = kf(s)
  local e = fmt((get_epoch(s) + 1) % 4294967296)
  redis.call('HSET', ks(s), 'epoch', e)
  -- What is there already was appended by no copy of this move: gone.
  if redis.call('EXISTS', old) == 1 then
    redis.call('RENAME', old, kfe(s, e))
  else
    redis.call('DEL', kfe(s, e))
  end
end
local function get_base(s) return tonumber(redis.call('HGET', ks(s), 'base')) end
local function set_base(s, b)
  if b then redis.call('HSET', ks(s), 'base', fmt(b)) else redis.call('HDEL', ks(s), 'base') end
end
local function set_owner(s, old, new)
  redis.call('HSET', ks(s), 'owner', new)
  if old then redis.call('ZREM', ko(old), s) end
  redis.call('ZADD', ko(new), 0, s)
end

local function frame_seq(e)
  local c = string.find(e, ':', 1, true)
  return tonumber(string.sub(e, 1, c - 1)), c
end

-- Stored::seq: an Append does not touch the hash, so the last kept
-- frame's seq counts too.
local function get_seq(s)
  local seq = tonumber(redis.call('HGET', ks(s), 'seq')) or 0
  local e = redis.call('LINDEX', kf(s), -1)
  if e then
    local last = frame_seq(e)
    if last > seq then seq = last end
  end
  return seq
end

-- A frame's body length: its entry less `seq:`.
local function body_len(e)
  local _, c = frame_seq(e)
  return #e - c
end

-- Stored::keep past the seq check (`seq` is beyond the session's): appends
-- the frame, dropping the oldest beyond the bounds. Not on the hot path
-- (that is Command::Append), so the bounds are counted from the list.
local function append(s, seq, body)
  local k = kf(s)
  local frames = redis.call('LRANGE', k, 0, -1)
  local len, bytes = #frames, 0
  for _, e in ipairs(frames) do bytes = bytes + body_len(e) end
  local drop = 0
  while len > 0 and (len >= MAXF or bytes + #body > MAXB) do
    drop = drop + 1
    bytes = bytes - body_len(frames[drop])
    len = len - 1
  end
  if drop > 0 then redis.call('LTRIM', k, drop, -1) end
  redis.call('RPUSH', k, fmt(seq) .. ':' .. body)
  redis.call('HSET', ks(s), 'seq', fmt(seq))
end

-- Stored::keep of every frame of a record, in order, into a session that
-- keeps none yet: worked out here, then one RPUSH.
local function keep_all(s, frames)
  local cur = get_seq(s)
  local kept, first, bytes = {}, 1, 0
  for _, f in ipairs(frames) do
    local seq, body = f[1], f[2]
    if seq <= cur or MAXF == 0 then
      if seq > cur then cur = seq end
    else
      cur = seq
      while #kept >= first and (#kept - first + 1 >= MAXF or bytes + #body > MAXB) do
        bytes = bytes - kept[first][2]
        first = first + 1
      end
      kept[#kept + 1] = { fmt(seq) .. ':' .. body, #body }
      bytes = bytes + #body
    end
  end
  local k = kf(s)
  for i = first, #kept, 1000 do
    local chunk = {}
    for j = i, math.min(i + 999, #kept) do chunk[#chunk + 1] = kept[j][1] end
    redis.call('RPUSH', k, unpack(chunk))
  end
  redis.call('HSET', ks(s), 'seq', fmt(cur))
end

-- Stored::trim. The session's seq stays: the hash takes it first, in case
-- the last frame goes.
local function trim(s, last)
  local k = kf(s)
  local cur = get_seq(s)
  local dropped = 0
  while true do
    local e = redis.call('LINDEX', k, dropped)
    if not e or frame_seq(e) > last then break end
    dropped = dropped + 1
  end
  if dropped > 0 then
    redis.call('HSET', ks(s), 'seq', fmt(cur))
    redis.call('LTRIM', k, dropped, -1)
  end
end

-- Stored::renumber: beyond `base`, the node the session moved from sent
-- the client frames it never wrote; what was kept since follows them.
local function renumber(s, last)
  local b = get_base(s)
  if not b then return end
  set_base(s, nil)
  if last <= b then return end
  local shift = last - b
  local cur = get_seq(s)
  local k = kf(s)
  for i, e in ipairs(redis.call('LRANGE', k, 0, -1)) do
    local seq, c = frame_seq(e)
    if seq > b then
      redis.call('LSET', k, i - 1, fmt(seq + shift) .. string.sub(e, c))
    end
  end
  redis.call('HSET', ks(s), 'seq', fmt(cur + shift))
end

-- Stored::covers.
local function covers(s, last)
  local cur = get_seq(s)
  if last >= cur then return true end
  local first = cur + 1
  local e = redis.call('LINDEX', kf(s), 0)
  if e then first = frame_seq(e) end
  return last + 1 >= first
end

-- Stored::record, encoded.
local function record(s, after)
  local h = redis.call('HMGET', ks(s), 'token', 'peer', 'user', 'face', 'epoch', 'base')
  local parts = { a(s), a(h[1]), a(h[2]), o(h[3]), a(h[4]), n(get_seq(s)) }
  local kept = {}
  for _, e in ipairs(redis.call('LRANGE', kf(s), 0, -1)) do
    local seq, c = frame_seq(e)
    if seq > after then
      kept[#kept + 1] = n(seq) .. a(string.sub(e, c + 1))
    end
  end
  parts[#parts + 1] = n(#kept)
  parts[#parts + 1] = table.concat(kept)
  local rooms = redis.call('LRANGE', ksr(s), 0, -1)
  parts[#parts + 1] = n(#rooms)
  for _, r in ipairs(rooms) do parts[#parts + 1] = a(r) end
  parts[#parts + 1] = a(h[5] or '0')
  parts[#parts + 1] = o(h[6])
  return table.concat(parts)
end

-- Store::count_owned, over (session, epoch) copies.
local function count_owned(node, copies)
  local c = 0
  for _, cp in ipairs(copies) do
    if holds(node, cp[1], cp[2]) then c = c + 1 end
  end
  return c
end

-- HMGET of any number of fields (unpack takes a few thousand at most).
local function hmget_many(key, fields)
  if #fields == 0 then return {} end
  if #fields <= 1000 then return redis.call('HMGET', key, unpack(fields)) end
  local out = {}
  for i = 1, #fields, 1000 do
    local chunk = {}
    for j = i, math.min(i + 999, #fields) do chunk[#chunk + 1] = fields[j] end
    local got = redis.call('HMGET', key, unpack(chunk))
    for j = 1, #chunk do out[i + j - 1] = got[j] end
  end
  return out
end

-- The members of `room` that `want(member, peer)` takes and live nodes
-- other than `from` own, grouped by node: the nodes in member order, and
-- each node's list of `entry(member, peer)`.
local function by_owner(from, room, want, entry)
  local nodes, by_node, live = {}, {}, {}
  local members = redis.call('LRANGE', kr(room), 0, -1)
  local fields = {}
  for i, m in ipairs(members) do fields[i] = 'p:' .. m end
  local peers = hmget_many(kri(room), fields)
  for i, m in ipairs(members) do
    local peer = peers[i]
    if want(m, peer) then
      local ow = owner(m)
      if ow and live[ow] == nil then live[ow] = ow ~= from and alive(ow) end
      if ow and live[ow] then
        local list = by_node[ow]
        if not list then
          list = {}
          by_node[ow] = list
          nodes[#nodes + 1] = ow
        end
        list[#list + 1] = entry(m, peer)
      end
    end
  end
  return nodes, by_node
end

-- Store::route: to each live node (but `from`) the very members of the
-- room it owns now, but the event's subject peer, the `skip` copies and,
-- with `to`, every peer but `to`; returns the nodes, in member order.
local function route(from, room, req, to, subject, event, skip)
  local skipped = {}
  for _, cp in ipairs(skip or {}) do skipped[cp[1]] = true end
  local nodes, by_node = by_owner(from, room,
    function(m, peer) return peer ~= subject and not skipped[m] and (to == nil or to == peer) end,
    function(m) return a(m) end)
  local head = a('D') .. a(from) .. o(req) .. a(room) .. event
  for _, nd in ipairs(nodes) do
    local list = by_node[nd]
    send(nd, head .. n(#list) .. table.concat(list))
  end
  return nodes
end

-- Store::route_of: the members of `room` owned by live nodes other than
-- `from`, by node, in member order, encoded: n(nodes) then per node its
-- id, n(members) and each member's session and peer.
local function route_of(from, room)
  local nodes, by_node = by_owner(from, room,
    function() return true end,
    function(m, peer) return a(m) .. a(peer or '') end)
  local parts = { n(#nodes) }
  for _, nd in ipairs(nodes) do
    local list = by_node[nd]
    parts[#parts + 1] = a(nd) .. n(#list) .. table.concat(list)
  end
  return table.concat(parts)
end

-- Store::reroute: a member of each of `rooms` moved; the nodes of their
-- members (live, in member order, once each) drop their route.
local function reroute(rooms)
  local done = {}
  for _, room in ipairs(rooms) do
    if not done[room] then
      done[room] = true
      local seen = {}
      for _, m in ipairs(redis.call('LRANGE', kr(room), 0, -1)) do
        local ow = owner(m)
        if ow and not seen[ow] and alive(ow) then
          seen[ow] = true
          send(ow, a('I') .. a(room))
        end
      end
    end
  end
end

local function node_list(nodes)
  local parts = { n(#nodes) }
  for _, nd in ipairs(nodes) do parts[#parts + 1] = a(nd) end
  return table.concat(parts)
end

local function listed_cost(meta)
  if meta then return #meta + MEMBER end
  return 2 + MEMBER
end

-- Store::unseat.
local function unseat(from, s, room)
  if redis.call('LREM', kr(room), 1, s) == 0 then return end
  local h = redis.call('HMGET', kri(room), 'p:' .. s, 'm:' .. s, 'listed')
  local listed = (tonumber(h[3]) or 0) - listed_cost(h[2])
  if listed < 0 then listed = 0 end
  if redis.call('LLEN', kr(room)) == 0 then
    local mn = redis.call('HGET', kri(room), 'mn')
    if mn then redis.call('ZREM', kmr(mn), room) end
    redis.call('DEL', kri(room))
    redis.call('ZREM', K_ROOMS, room)
  else
    redis.call('HDEL', kri(room), 'p:' .. s, 'm:' .. s, 'j:' .. s)
    redis.call('HSET', kri(room), 'listed', fmt(listed))
    route(from, room, nil, nil, h[1] or '', a('B') .. a(h[1] or ''))
  end
  redis.call('LREM', ksr(s), 0, room)
end

-- Store::end.
local function end_session(from, s)
  for _, room in ipairs(redis.call('LRANGE', ksr(s), 0, -1)) do
    unseat(from, s, room)
  end
  local h = redis.call('HMGET', ks(s), 'owner', 'user')
  if not h[1] then return end
  if h[2] then redis.call('LREM', ku(h[2]), 0, s) end
  redis.call('ZREM', ko(h[1]), s)
  redis.call('DEL', ks(s), kf(s), ksr(s))
end

-- Store::register.
local function register(from, r)
  if redis.call('EXISTS', ks(r.session)) == 1 then return end
  local s = r.session
  if r.face == 'n' and r.user then redis.call('RPUSH', ku(r.user), s) end
  redis.call('HSET', ks(s), 'token', r.token, 'peer', r.peer, 'face', r.face,
    'owner', from, 'seq', '0', 'epoch', fmt(r.epoch))
  if r.user then redis.call('HSET', ks(s), 'user', r.user) end
  redis.call('ZADD', ko(from), 0, s)
  -- Appends that ran before this (none should) are not its frames.
  redis.call('DEL', kf(s))
  keep_all(s, r.frames)
  if r.seq > get_seq(s) then redis.call('HSET', ks(s), 'seq', fmt(r.seq)) end
end

-- Store::join; returns the encoded outcome. `media` is 's' or 'm', the
-- kind of a room this join makes; `relay` whether NODE has a media socket.
local function join(from, s, room, meta, max_peers, max_listed, private, media, relay)
  if not owns(from, s) then return a('X') end
  local peer = redis.call('HGET', ks(s), 'peer')
  local members = redis.call('LRANGE', kr(room), 0, -1)
  -- A call's room is a mesh room, whatever the node's default.
  if private then media = 'm' end
  if #members == 0 and media == 's' and not relay then return a('N') end
  local rp = private
  if #members > 0 then
    local h = redis.call('HMGET', kri(room), 'pa', 'pb')
    if h[1] then rp = { h[1], h[2] } else rp = nil end
  end
  local allowed
  if rp == nil and private == nil then
    allowed = true
  elseif rp ~= nil and private ~= nil then
    allowed = rp[1] == peer or rp[2] == peer
  else
    allowed = false
  end
  if not allowed then return a('X') end
  local listed = tonumber(redis.call('HGET', kri(room), 'listed')) or 0
  local cost = listed_cost(meta)
  local seated = false
  for _, m in ipairs(members) do
    if m == s then seated = true end
  end
  if not seated and ((max_peers ~= 0 and #members >= max_peers)
      or (max_listed ~= 0 and listed + cost > max_listed)) then
    return a('F')
  end
  local parts = {}
  local count = 0
  for _, m in ipairs(members) do
    if m ~= s then
      local h = redis.call('HMGET', kri(room), 'p:' .. m, 'm:' .. m)
      parts[#parts + 1] = a(h[1] or '') .. o(h[2])
      count = count + 1
    end
  end
  if not seated then
    if #members == 0 then
      redis.call('HSET', kri(room), 'c', fmt(NOW))
      redis.call('ZADD', K_ROOMS, 0, room)
    end
    redis.call('RPUSH', kr(room), s)
    redis.call('HSET', kri(room), 'p:' .. s, peer, 'listed', fmt(listed + cost), 'j:' .. s, fmt(NOW))
    if meta then redis.call('HSET', kri(room), 'm:' .. s, meta) end
    if #members == 0 and private then
      redis.call('HSET', kri(room), 'pa', private[1], 'pb', private[2])
    end
    -- The join that makes the room decides its kind; an SFU room's media
    -- node is its node.
    if #members == 0 and media == 's' then
      redis.call('HSET', kri(room), 'k', 's', 'mn', from)
      redis.call('ZADD', kmr(from), 0, room)
    end
    redis.call('RPUSH', ksr(s), room)
    route(from, room, nil, nil, peer, a('J') .. a(peer) .. o(meta))
  end
  local k = redis.call('HMGET', kri(room), 'k', 'mn')
  return a('S') .. n(count) .. table.concat(parts) .. a(k[1] or 'm') .. o(k[2] or nil)
end

-- Store::room_media_to: the media node of each SFU room of session `s`,
-- to `to`, which the session moves to.
local function room_media_to(to, s)
  for _, room in ipairs(redis.call('LRANGE', ksr(s), 0, -1)) do
    local k = redis.call('HMGET', kri(room), 'k', 'mn')
    if k[1] == 's' then push(to, a('O') .. a(room) .. o(k[2] or nil)) end
  end
end

-- Store::take; returns the encoded outcome.
local function take(from, s, token, last)
  local h = redis.call('HMGET', ks(s), 'face', 'token', 'owner')
  if not h[1] or h[1] ~= 'n' or h[2] ~= token then return a('U') end
  local old = h[3]
  set_owner(s, old, from)
  bump_epoch(s)
  renumber(s, last)
  local covered = covers(s, last)
  if covered then
    local seq = get_seq(s)
    if last > seq then
      seq = last
      redis.call('HSET', ks(s), 'seq', fmt(seq))
    end
    -- Until the taker sends it a frame, its connection may be gone.
    set_base(s, seq)
  end
  local rec = record(s, last)
  if old ~= from then push(old, a('T') .. a(s)) end
  room_media_to(from, s)
  reroute(redis.call('LRANGE', ksr(s), 0, -1))
  if covered then return a('T') .. rec end
  return a('G') .. rec
end

-- Store::adopt; returns the encoded records.
local function adopt(from, dead)
  if alive(dead) or redis.call('HEXISTS', K_DEAD, dead) == 0 then return n(0) end
  local ids = redis.call('ZRANGE', ko(dead), 0, -1)
  local parts = { n(#ids) }
  for _, s in ipairs(ids) do
    set_owner(s, dead, from)
    bump_epoch(s)
    -- Adopted twice before a resume: the first base holds.
    local seq, b = get_seq(s), get_base(s)
    if b == nil or seq < b then b = seq end
    set_base(s, b)
    parts[#parts + 1] = record(s, 0)
  end
  local rooms = {}
  for _, s in ipairs(ids) do
    room_media_to(from, s)
    for _, room in ipairs(redis.call('LRANGE', ksr(s), 0, -1)) do rooms[#rooms + 1] = room end
  end
  reroute(rooms)
  return table.concat(parts)
end

-- Store::ring.
local function ring(from, req, call, user, except, body)
  local nodes, seen = {}, {}
  for _, s in ipairs(redis.call('LRANGE', ku(user), 0, -1)) do
    if s ~= except then
      local ow = owner(s)
      if ow and not seen[ow] and alive(ow) then
        seen[ow] = true
        nodes[#nodes + 1] = ow
      end
    end
  end
  local payload = a('R') .. a(from) .. a(req) .. a(call) .. a(user) .. a(except) .. a(body)
  for _, nd in ipairs(nodes) do send(nd, payload) end
  push(from, a('P') .. a(req) .. n(0) .. node_list(nodes))
end

-- The store's generation, taking the node's candidate if it has none.
local function generation(candidate)
  redis.call('SET', K_GEN, candidate, 'NX')
  return redis.call('GET', K_GEN)
end

local function resynced(from, lost, gen)
  local parts = { a('Y'), n(#lost) }
  for _, s in ipairs(lost) do parts[#parts + 1] = a(s) end
  parts[#parts + 1] = a(gen)
  push(from, table.concat(parts))
end

-- Store::restore: the store started empty (Redis restarted); the node's
-- sessions come back as they were, seats and all, and nobody is told.
local function restore(from, gen)
  local lost = {}
  for _ = 1, nnum() do
    local r = read_record()
    local s = r.session
    if redis.call('EXISTS', ks(s)) == 1 then
      -- Resumed on a node that restored first: that one has it.
      lost[#lost + 1] = s
    else
      register(from, r)
      for _, room in ipairs(r.rooms) do
        local listed = tonumber(redis.call('HGET', kri(room), 'listed')) or 0
        if redis.call('LLEN', kr(room)) == 0 then
          redis.call('HSET', kri(room), 'c', fmt(NOW))
          redis.call('ZADD', K_ROOMS, 0, room)
        end
        redis.call('RPUSH', kr(room), s)
        redis.call('HSET', kri(room), 'p:' .. s, r.peer, 'listed', fmt(listed + listed_cost(nil)),
          'j:' .. s, fmt(NOW))
        redis.call('RPUSH', ksr(s), room)
      end
      set_base(s, r.base)
    end
  end
  resynced(from, lost, gen)
end

-- Store::resync.
local function resync(from)
  local want_gen = nopt()
  local gen = generation(nx())
  if want_gen and want_gen ~= gen then
    restore(from, gen)
    return
  end
  local lost, held = {}, {}
  for _ = 1, nnum() do
    local r = read_record()
    local s = r.session
    local exists = redis.call('EXISTS', ks(s)) == 1
    if exists and holds(from, s, r.epoch) then
      held[s] = true
      local want = {}
      for _, room in ipairs(r.rooms) do want[room] = true end
      for _, room in ipairs(redis.call('LRANGE', ksr(s), 0, -1)) do
        if not want[room] then unseat(from, s, room) end
      end
      redis.call('DEL', kf(s))
      redis.call('HSET', ks(s), 'seq', '0')
      keep_all(s, r.frames)
      if r.seq > get_seq(s) then redis.call('HSET', ks(s), 'seq', fmt(r.seq)) end
      -- The node's frames replace the store's, numbering and all.
      set_base(s, r.base)
    elseif not exists and #r.rooms == 0 then
      -- Started while the node could not reach the store (it joined
      -- nothing then): new here.
      held[s] = true
      register(from, r)
    else
      lost[#lost + 1] = s
    end
  end
  -- What the store still gives this node but the node no longer has ended
  -- while the two could not talk.
  for _, s in ipairs(redis.call('ZRANGE', ko(from), 0, -1)) do
    if not held[s] then end_session(from, s) end
  end
  resynced(from, lost, gen)
end

-- Milliseconds from a stored time (ms, Redis clock) to now: pushes carry
-- ages, so that the nodes' clocks need not agree with Redis'.
local function age(ms)
  local t = tonumber(ms)
  if not t or t > NOW then return 0 end
  return NOW - t
end

-- Store::room_list.
local function room_list(req)
  local parts = {}
  local count = 0
  for _, room in ipairs(redis.call('ZRANGE', K_ROOMS, 0, -1)) do
    local len = redis.call('LLEN', kr(room))
    if len > 0 then
      local h = redis.call('HMGET', kri(room), 'c', 'k')
      parts[#parts + 1] = a(room) .. n(len) .. n(age(h[1])) .. a(h[2] or 'm')
      count = count + 1
    end
  end
  push(NODE, a('L') .. a(req) .. n(count) .. table.concat(parts))
end

-- Store::room_members.
local function room_view(req, room)
  local members = redis.call('LRANGE', kr(room), 0, -1)
  if #members == 0 then
    push(NODE, a('V') .. a(req) .. '-')
    return
  end
  local parts = {}
  local count = 0
  for _, m in ipairs(members) do
    local h = redis.call('HMGET', ks(m), 'owner', 'user')
    if h[1] then
      local r = redis.call('HMGET', kri(room), 'p:' .. m, 'm:' .. m, 'j:' .. m)
      parts[#parts + 1] = a(r[1] or '') .. o(h[2]) .. o(r[2]) .. a(h[1]) .. n(age(r[3]))
      count = count + 1
    end
  end
  local h = redis.call('HMGET', kri(room), 'c', 'k')
  push(NODE, a('V') .. a(req) .. n(age(h[1])) .. a(h[2] or 'm') .. n(count) .. table.concat(parts))
end

-- Store::kick: each live member's node is told; a member whose node is
-- dead is unseated here.
local function kick(req, room, peer)
  local members = redis.call('LRANGE', kr(room), 0, -1)
  if #members == 0 then
    push(NODE, a('Z') .. a(req) .. '-')
    return
  end
  local fields = {}
  for i, m in ipairs(members) do fields[i] = 'p:' .. m end
  local peers = hmget_many(kri(room), fields)
  local nodes, by_node, orphans, count = {}, {}, {}, 0
  for i, m in ipairs(members) do
    if peer == nil or peers[i] == peer then
      local ow = owner(m)
      if ow then
        count = count + 1
        if alive(ow) then
          local list = by_node[ow]
          if not list then
            list = {}
            by_node[ow] = list
            nodes[#nodes + 1] = ow
          end
          list[#list + 1] = a(m)
        else
          orphans[#orphans + 1] = { ow, m }
        end
      end
    end
  end
  for _, x in ipairs(orphans) do unseat(x[1], x[2], room) end
  for _, nd in ipairs(nodes) do
    local list = by_node[nd]
    send(nd, a('Q') .. a(room) .. n(#list) .. table.concat(list))
  end
  push(NODE, a('Z') .. a(req) .. n(count))
end

-- Store::move_media: the SFU rooms whose media node was `dead` (or is
-- going away) get the
-- node of their first member (join order) on a live node with a media
-- socket, or none; every live node with members hears of it. The live
-- set is read afresh: a sweep changes it as it goes.
local function move_media(dead)
  for _, room in ipairs(redis.call('ZRANGE', kmr(dead), 0, -1)) do
    local nodes, seen = {}, {}
    for _, m in ipairs(redis.call('LRANGE', kr(room), 0, -1)) do
      local ow = owner(m)
      if ow and not seen[ow] then
        seen[ow] = true
        if redis.call('ZSCORE', K_LIVE, ow) then nodes[#nodes + 1] = ow end
      end
    end
    local new = nil
    for _, nd in ipairs(nodes) do
      if redis.call('SISMEMBER', K_RELAY, nd) == 1 then
        new = nd
        break
      end
    end
    redis.call('ZREM', kmr(dead), room)
    if new then
      redis.call('HSET', kri(room), 'mn', new)
      redis.call('ZADD', kmr(new), 0, room)
    else
      redis.call('HDEL', kri(room), 'mn')
    end
    local payload = a('W') .. a(room) .. o(new)
    for _, nd in ipairs(nodes) do send(nd, payload) end
  end
end

-- Store::handle_timeout.
local function sweep()
  for _, nd in ipairs(redis.call('ZRANGE', K_LIVE, 0, -1)) do
    local seen = tonumber(redis.call('ZSCORE', K_SEEN, nd)) or 0
    if seen + TIMEOUT <= NOW then
      redis.call('ZREM', K_LIVE, nd)
      redis.call('ZREM', K_SEEN, nd)
      redis.call('HSET', K_DEAD, nd, '0')
      local payload = a('N') .. a(nd)
      for _, other in ipairs(redis.call('ZRANGE', K_LIVE, 0, -1)) do send(other, payload) end
      move_media(nd)
    end
  end
end

-- Store::handle past the liveness checks, for one op of NODE; returns 1
-- when applied, 0 when refused.
local function apply(op)
  if op == 'heartbeat' then
    return 1
  elseif op == 'register' then
    register(NODE, read_record())
  elseif op == 'join' then
    local req, s, room, meta = nx(), nx(), nx(), nopt()
    local max_peers, max_listed = nnum(), nnum()
    local private = nil
    if nnum() == 2 then private = { nx(), nx() } end
    local media, relay = nx(), nx() == '1'
    if relay then redis.call('SADD', K_RELAY, NODE) end
    local outcome = join(NODE, s, room, meta, max_peers, max_listed, private, media, relay)
    push(NODE, a('J') .. a(req) .. outcome)
  elseif op == 'leave' then
    local s, room = nx(), nx()
    if owns(NODE, s) then unseat(NODE, s, room) end
  elseif op == 'publish' then
    local req, room, to, subject, event = nopt(), nx(), nopt(), nx(), nx()
    local loc = read_copies()
    local counted = count_owned(NODE, loc) + nnum()
    local nodes = route(NODE, room, req, to, subject, event, loc)
    if req then push(NODE, a('P') .. a(req) .. n(counted) .. node_list(nodes)) end
  elseif op == 'persist' then
    local s, epoch, seq, body, sent = nx(), nnum(), nnum(), nx(), nx()
    local h = redis.call('HMGET', ks(s), 'owner', 'epoch', 'base')
    -- Store::holds; and a copy of this move that skipped a seq lost one the
    -- store refused: it has forked, and keeps nothing more.
    if not (h[1] == NODE and tonumber(h[2]) == epoch and seq == get_seq(s) + 1) then
      return 0
    end
    -- Stored::keep, past its seq check (this seq is the next).
    if MAXF == 0 then
      redis.call('HSET', ks(s), 'seq', fmt(seq))
    else
      append(s, seq, body)
    end
    if sent == '1' and h[3] then redis.call('HDEL', ks(s), 'base') end
  elseif op == 'route' then
    local room = nx()
    push(NODE, a('H') .. a(room) .. route_of(NODE, room))
  elseif op == 'drop' then
    local s, epoch = nx(), nnum()
    -- Never the current epoch's list, whoever asks.
    if tonumber(redis.call('HGET', ks(s), 'epoch')) ~= epoch then
      redis.call('DEL', kfe(s, fmt(epoch)))
    end
  elseif op == 'trim' then
    local s, last = nx(), nnum()
    if owns(NODE, s) then trim(s, last) end
  elseif op == 'report' then
    local to, req = nx(), nx()
    local count = count_owned(NODE, read_copies()) + nnum()
    push(to, a('C') .. a(req) .. a(NODE) .. n(count))
  elseif op == 'end' then
    local s = nx()
    if owns(NODE, s) then end_session(NODE, s) end
  elseif op == 'take' then
    local req, s, token, last = nx(), nx(), nx(), nnum()
    local outcome = take(NODE, s, token, last)
    push(NODE, a('K') .. a(req) .. outcome)
  elseif op == 'resumed' then
    local s, epoch, last, seq = nx(), nnum(), nnum(), nnum()
    if not holds(NODE, s, epoch) then return 0 end
    renumber(s, last)
    if seq > get_seq(s) then redis.call('HSET', ks(s), 'seq', fmt(seq)) end
    set_base(s, nil)
  elseif op == 'adopt' then
    local req, dead_node = nx(), nx()
    local recs = adopt(NODE, dead_node)
    push(NODE, a('A') .. a(req) .. recs)
  elseif op == 'ring' then
    ring(NODE, nx(), nx(), nx(), nx(), nx())
  elseif op == 'tell' then
    local to, msg = nx(), nx()
    push(to, a('M') .. a(NODE) .. msg)
  elseif op == 'resync' then
    resync(NODE)
  elseif op == 'rooms' then
    room_list(nx())
  elseif op == 'room' then
    local req, room = nx(), nx()
    room_view(req, room)
  elseif op == 'media_away' then
    redis.call('SREM', K_RELAY, NODE)
    move_media(NODE)
  elseif op == 'kick' then
    local req, room, peer = nx(), nx(), nopt()
    kick(req, room, peer)
  else
    return redis.error_reply('unknown op ' .. tostring(op))
  end
  return 1
end

-- Store::handle, for each command of the batch. The liveness checks of
-- Store::handle are read once: only a sweep or a resync changes them.
local dead = redis.call('HGET', K_DEAD, NODE)
local touched = false
local results = {}
local next_cmd = 6
while next_cmd <= #ARGV do
  local count = tonumber(ARGV[next_cmd])
  if not count or count < 1 then
    return redis.error_reply('bad command count at ' .. next_cmd)
  end
  local op = ARGV[next_cmd + 1]
  argi = next_cmd + 1
  next_cmd = next_cmd + 1 + count
  local r = 0
  if op == 'sweep' then
    sweep()
    live_seen = {}
    dead = redis.call('HGET', K_DEAD, NODE)
    -- A node it declared dead is out of the live sets: seen again only
    -- by its resync.
    touched = false
  elseif dead then
    if op == 'resync' then
      redis.call('HDEL', K_DEAD, NODE)
      redis.call('ZADD', K_LIVE, 0, NODE)
      redis.call('ZADD', K_SEEN, NOW, NODE)
      live_seen[NODE] = true
      dead = nil
      touched = true
      resync(NODE)
      r = 1
    elseif dead == '0' then
      redis.call('HSET', K_DEAD, NODE, '1')
      dead = '1'
      send(NODE, a('X'))
    end
  else
    if not touched then
      redis.call('ZADD', K_LIVE, 0, NODE)
      redis.call('ZADD', K_SEEN, NOW, NODE)
      live_seen[NODE] = true
      touched = true
    end
    r = apply(op)
    if type(r) == 'table' then return r end
  end
  results[#results + 1] = r == 1 and '1' or '0'
end
return table.concat(results)
