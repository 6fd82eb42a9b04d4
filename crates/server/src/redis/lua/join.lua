-- A subscriber joins a channel.
-- KEYS[1] the channel's members hash, KEYS[2] its banned set,
-- KEYS[3] this node's channels set, KEYS[4] the nodes sorted set,
-- KEYS[5] the channel's kicked set.
-- ARGV[1] node, ARGV[2] connection id, ARGV[3] presence (0|1),
-- ARGV[4] member JSON, ARGV[5] the announce channel, ARGV[6] the channel,
-- ARGV[7] 1 for a new subscription, 0 to register again one that this
-- node may have missed news about (announced only if it was gone).
-- Both are checked for the name banned and the name held by another user
-- on a live node; registering again also for the connection kicked (a
-- kick this node may not have heard of).
-- Returns 'ok', 'banned', 'kicked' or 'name_taken'.
local member = cjson.decode(ARGV[4])
if redis.call('SISMEMBER', KEYS[2], member.name) == 1 then return 'banned' end
if ARGV[7] == '0' and redis.call('SISMEMBER', KEYS[5], ARGV[2]) == 1 then return 'kicked' end
if ARGV[3] == '1' then
  local alive = liveness(KEYS[4], now_ms())
  local entries = redis.call('HGETALL', KEYS[1])
  for i = 1, #entries, 2 do
    local node, presence, json = parse(entries[i + 1])
    if presence and entries[i] ~= ARGV[2] then
      local other = cjson.decode(json)
      if other.name == member.name and other.user ~= member.user and alive(node) then
        return 'name_taken'
      end
    end
  end
end
local added = redis.call('HSET', KEYS[1], ARGV[2], ARGV[1] .. ' ' .. ARGV[3] .. '\n' .. ARGV[4])
redis.call('SADD', KEYS[3], ARGV[6])
if ARGV[3] == '1' and (ARGV[7] == '1' or added == 1) then
  redis.call('PUBLISH', ARGV[5], '!join\n' .. ARGV[4])
end
return 'ok'
