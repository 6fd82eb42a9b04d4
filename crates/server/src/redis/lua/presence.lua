-- Who is present: the member JSON of every presence entry of a live node.
-- KEYS[1] the channel's members hash, KEYS[2] the nodes sorted set.
local alive = liveness(KEYS[2], now_ms())
local entries = redis.call('HGETALL', KEYS[1])
local present = {}
for i = 1, #entries, 2 do
  local node, presence, json = parse(entries[i + 1])
  if presence and alive(node) then present[#present + 1] = json end
end
return present
