-- Renews this node's lease, and removes the members of nodes whose lease
-- ended (announcing a leave for each present one).
-- KEYS[1] the nodes sorted set.
-- ARGV[1] node, ARGV[2] lease (ms), ARGV[3] members prefix,
-- ARGV[4] announce prefix, ARGV[5] node-channels prefix.
-- Returns {1 if this node's lease had lapsed (or is new), members removed}.
local now = now_ms()
local previous = redis.call('ZSCORE', KEYS[1], ARGV[1])
local lapsed = previous == false or tonumber(previous) <= now
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local removed = 0
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 8)) do
  local channels = ARGV[5] .. node
  for _, channel in ipairs(redis.call('SMEMBERS', channels)) do
    local members = ARGV[3] .. channel
    local entries = redis.call('HGETALL', members)
    for i = 1, #entries, 2 do
      local owner, presence, json = parse(entries[i + 1])
      if owner == node then
        redis.call('HDEL', members, entries[i])
        removed = removed + 1
        if presence then redis.call('PUBLISH', ARGV[4] .. channel, '!leave\n' .. json) end
      end
    end
  end
  redis.call('DEL', channels)
  redis.call('ZREM', KEYS[1], node)
end
return {lapsed and 1 or 0, removed}
