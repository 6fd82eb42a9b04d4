-- Claims a file transfer's nameplate for this node, or says which live
-- node holds it. A claim of a node whose lease ended counts as no claim:
-- a transfer dies with its node, and its sender may open it again
-- elsewhere under the same code.
-- KEYS[1] the transfer's hash (`node`, `url`), KEYS[2] the nodes sorted set.
-- ARGV[1] node, ARGV[2] its URL, ARGV[3] the claim's time to live (ms),
-- ARGV[4] '1' to claim (or renew), '0' only to look.
-- Returns {1} when this node holds it (now), {0, node, url} when another
-- live node does, and when only looking (ARGV[4] '0'): {2} when a node whose
-- lease ended holds it (it stopped renewing: dead, or cut off from Redis),
-- {} when nobody does.
local now = now_ms()
local held = redis.call('HMGET', KEYS[1], 'node', 'url')
local owner, url = held[1], held[2]
if owner and owner ~= ARGV[1] then
  local lease = redis.call('ZSCORE', KEYS[2], owner)
  if lease ~= false and tonumber(lease) > now then
    return {0, owner, url or ''}
  end
end
if ARGV[4] == '0' then
  if owner == ARGV[1] then return {1} end
  if owner then return {2} end
  return {}
end
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'url', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1}
