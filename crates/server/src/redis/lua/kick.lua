-- Removes every subscriber with a name from a channel, on every node.
-- KEYS[1] the channel's members hash, KEYS[2] its banned set,
-- KEYS[3] its kicked set (connection ids, kept an hour).
-- ARGV[1] the name, ARGV[2] 1 to ban it, ARGV[3] the announce channel.
-- The kick is announced first, so the kicked do not get their own leave.
-- Returns how many were removed.
if ARGV[2] == '1' then redis.call('SADD', KEYS[2], ARGV[1]) end
redis.call('PUBLISH', ARGV[3], '!kick\n' .. ARGV[2] .. ' ' .. ARGV[1])
local removed = 0
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local _, presence, json = parse(entries[i + 1])
  if cjson.decode(json).name == ARGV[1] then
    redis.call('HDEL', KEYS[1], entries[i])
    redis.call('SADD', KEYS[3], entries[i])
    redis.call('PEXPIRE', KEYS[3], 3600000)
    removed = removed + 1
    if presence then redis.call('PUBLISH', ARGV[3], '!leave\n' .. json) end
  end
end
return removed
