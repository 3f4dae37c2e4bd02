-- OFFERED -> ACCEPTED: the hold becomes a booking and OFFERED siblings are
-- REJECTED, their holds freed. At most one offer of a set is ever accepted.
--
-- KEYS: session, history, offerset, timers, usage, entries,
--       then per sibling (session, history, usage, entries).
-- ARGV: uuid, now ms, accept record, reject record, retention ms, sibling uuids...
-- Returns {status, phase[, detail]}.
local uuid, now = ARGV[1], tonumber(ARGV[2])
local phase = redis.call('HGET', KEYS[1], 'phase')
if not phase then return {'missing'} end
if phase ~= 'OFFERED' then return {'phase', phase} end
if tonumber(redis.call('HGET', KEYS[1], 'expires')) <= now then return {'expired', phase} end
local taken = redis.call('HGET', KEYS[3], 'accepted')
if taken then return {'taken', phase, taken} end

redis.call('HSET', KEYS[3], 'accepted', uuid)
redis.call('HSET', KEYS[1], 'phase', 'ACCEPTED')
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('ZREM', KEYS[4], 'expire:' .. uuid)
local entry = redis.call('HGET', KEYS[6], uuid)
if entry then redis.call('HSET', KEYS[6], uuid, 'B' .. string.sub(entry, 2)) end

for j = 6, #ARGV do
  local k = 6 + (j - 6) * 4
  if redis.call('HGET', KEYS[k + 1], 'phase') == 'OFFERED' then
    finish_session(KEYS[k + 1], KEYS[k + 2], KEYS[4], KEYS[k + 3], KEYS[k + 4], ARGV[j],
      'REJECTED', ARGV[4], tonumber(ARGV[5]))
  end
end
return {'ok', 'ACCEPTED'}
