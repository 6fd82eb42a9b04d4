-- A subscriber leaves a channel.
-- KEYS[1] the channel's members hash; ARGV[1] connection id,
-- ARGV[2] the announce channel. Returns 1 if it was there.
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if not entry then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
local _, presence, json = parse(entry)
if presence then redis.call('PUBLISH', ARGV[2], '!leave\n' .. json) end
return 1
