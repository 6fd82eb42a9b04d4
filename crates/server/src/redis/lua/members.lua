-- Shared by the member scripts (prepended to each).
--
-- A member entry, in the channel's members hash under the connection id:
-- "<node> <presence 0|1>\n<member JSON>". A node is alive while its score
-- in the nodes sorted set (the end of its lease, ms by Redis's clock) is
-- in the future.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function parse(entry)
  local node, presence, member = string.match(entry, '^(%S+) ([01])\n(.*)$')
  return node, presence == '1', member
end

-- alive(nodes_key, now) returns a function telling whether a node is alive,
-- asking Redis once per node.
local function liveness(nodes, now)
  local known = {}
  return function(node)
    if known[node] == nil then
      local lease = redis.call('ZSCORE', nodes, node)
      known[node] = lease ~= false and tonumber(lease) > now
    end
    return known[node]
  end
end
