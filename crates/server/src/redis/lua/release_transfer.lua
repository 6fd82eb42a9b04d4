-- Removes a file transfer's claim if this node holds it.
-- KEYS[1] the transfer's hash. ARGV[1] node.
if redis.call('HGET', KEYS[1], 'node') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
