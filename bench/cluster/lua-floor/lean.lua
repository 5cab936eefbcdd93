local P = ARGV[1]
local NODE = ARGV[2]
local MAXF, MAXB = 64, 65536
local i = 3
while i <= #ARGV do
  local room, subject, body, s, epoch, seq = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], tonumber(ARGV[i+4]), tonumber(ARGV[i+5])
  i = i + 6
  -- publish
  local members = redis.call('LRANGE', P .. ':r:' .. room, 0, -1)
  local fields = {}
  for k, m in ipairs(members) do fields[k] = 'p:' .. m end
  local peers = redis.call('HMGET', P .. ':ri:' .. room, unpack(fields))
  for k, m in ipairs(members) do
    if peers[k] ~= subject then
      local ow = redis.call('HGET', P .. ':s:' .. m, 'owner')
      redis.call('PUBLISH', P .. ':node:' .. ow, body)
    end
  end
  -- persist
  local h = redis.call('HMGET', P .. ':s:' .. s, 'owner', 'epoch', 'seq', 'bytes', 'base', 'n')
  local len = tonumber(h[6]) or 0
  if len >= MAXF then redis.call('LPOP', P .. ':f:' .. s); len = len - 1 end
  redis.call('RPUSH', P .. ':f:' .. s, seq .. ':' .. body)
  redis.call('HSET', P .. ':s:' .. s, 'seq', seq, 'bytes', 0, 'n', len + 1)
end
return 1
