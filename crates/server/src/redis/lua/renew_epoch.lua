-- A new epoch for a channel whose Redis lost publications it had
-- announced, if no other node gave it one already. Its offset goes on from
-- the highest the history stream has ever held, so no offset is given to
-- two publications.
-- KEYS[1] the channel's meta hash, KEYS[2] its history stream.
-- ARGV[1] the epoch that lost publications, ARGV[2] a new one.
-- Returns {epoch, offset} as they are now.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch == ARGV[1] then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  if redis.call('EXISTS', KEYS[2]) == 1 then
    local info = redis.call('XINFO', 'STREAM', KEYS[2])
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then
        local highest = tonumber(string.match(info[i + 1], '^(%d+)'))
        if highest > tonumber(redis.call('HGET', KEYS[1], 'offset') or '0') then
          redis.call('HSET', KEYS[1], 'offset', highest)
        end
      end
    end
  end
end
return {epoch or '', tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')}
