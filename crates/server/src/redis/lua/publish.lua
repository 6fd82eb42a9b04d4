-- One publish, atomically: idempotency check, epoch, offset, capped
-- history, age trimming, announcement. See entry.rs for the formats.
--
-- KEYS[1] meta hash, KEYS[2] history stream, KEYS[3] (optional) the
-- idempotency key.
-- ARGV[1] an epoch to start with if the channel has none
-- ARGV[2] publications kept (MAXLEN)
-- ARGV[3] age kept, ms
-- ARGV[4] how long the channel's epoch and offset outlive its last
--         publication, ms
-- ARGV[5] the pub/sub channel
-- ARGV[6] the body
-- ARGV[7] how long an idempotency key is remembered, ms
--
-- Returns {1, place} for a new publication, {0, place} for a repeated
-- idempotency key (nothing stored, nothing announced), where place is
-- "<epoch> <offset> <ms>".
local meta, history = KEYS[1], KEYS[2]
if KEYS[3] then
  local seen = redis.call('GET', KEYS[3])
  if seen then return {0, seen} end
end
local now = redis.call('TIME')
local ts = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  -- A new epoch: whatever history an older one left is not its history.
  epoch = ARGV[1]
  redis.call('DEL', history)
  redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
end
local offset = redis.call('HINCRBY', meta, 'offset', 1)
local added = redis.pcall('XADD', history, 'MAXLEN', ARGV[2], string.format('%d-0', offset), 't', ts, 'p', ARGV[6])
if type(added) == 'table' and added.err then
  -- The stream remembers a higher offset than the channel's (its epoch
  -- was renewed after Redis lost publications): go on past it.
  local info = redis.call('XINFO', 'STREAM', history)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      offset = tonumber(string.match(info[i + 1], '^(%d+)')) + 1
    end
  end
  redis.call('HSET', meta, 'offset', offset)
  redis.call('XADD', history, 'MAXLEN', ARGV[2], string.format('%d-0', offset), 't', ts, 'p', ARGV[6])
end
local place = string.format('%s %d %d', epoch, offset, ts)
-- Age: drop at most 100 expired entries per publish (readers skip any
-- left), so one publish never does unbounded work.
local cutoff = ts - tonumber(ARGV[3])
local first = redis.call('XRANGE', history, '-', '+', 'COUNT', 1)[1]
if first and tonumber(first[2][2]) < cutoff then
  local oldest = redis.call('XRANGE', history, '-', '+', 'COUNT', 100)
  local keep = nil
  for _, entry in ipairs(oldest) do
    if tonumber(entry[2][2]) >= cutoff then keep = entry[1]; break end
  end
  if keep == nil then
    keep = string.format('%d-0', tonumber(string.match(oldest[#oldest][1], '^(%d+)')) + 1)
  end
  redis.call('XTRIM', history, 'MINID', keep)
end
redis.call('PEXPIRE', history, ARGV[3])
redis.call('PEXPIRE', meta, ARGV[4])
redis.call('PUBLISH', ARGV[5], place .. '\n' .. ARGV[6])
if KEYS[3] then redis.call('SET', KEYS[3], place, 'PX', ARGV[7]) end
return {1, place}
