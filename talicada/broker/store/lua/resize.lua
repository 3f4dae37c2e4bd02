-- Move the end of a session's booking to slot ARGV[3] and store its new
-- record, when its phase is one of the allowed sources. Slots gained must
-- have room; slots lost are freed.
--
-- KEYS: session, usage, entries.
-- ARGV: uuid, allowed source phases (space separated), new last slot,
--       new record, capacity cores, capacity memory.
-- Returns {status, phase[, detail]}: ok, missing, phase or full.
local uuid, new_last = ARGV[1], tonumber(ARGV[3])
local phase = redis.call('HGET', KEYS[1], 'phase')
if not phase then return {'missing'} end
if not string.find(' ' .. ARGV[2] .. ' ', ' ' .. phase .. ' ', 1, true) then
  return {'phase', phase}
end
local entry = redis.call('HGET', KEYS[3], uuid)
if not entry then return {'phase', phase, 'no booking'} end
local state, first, last, cores, memory = string.match(entry, '^(%a)|(-?%d+)|(-?%d+)|(%d+)|(%d+)$')
first, last, cores, memory = tonumber(first), tonumber(last), tonumber(cores), tonumber(memory)
local cap_cores, cap_memory = tonumber(ARGV[5]), tonumber(ARGV[6])

for slot = last, new_last - 1 do
  local used = redis.call('HMGET', KEYS[2], 'c' .. slot, 'm' .. slot)
  if tonumber(used[1] or 0) + cores > cap_cores or tonumber(used[2] or 0) + memory > cap_memory then
    return {'full', phase, tostring(slot)}
  end
end
for slot = last, new_last - 1 do
  redis.call('HINCRBY', KEYS[2], 'c' .. slot, cores)
  redis.call('HINCRBY', KEYS[2], 'm' .. slot, memory)
end
for slot = new_last, last - 1 do
  if redis.call('HINCRBY', KEYS[2], 'c' .. slot, -cores) <= 0 then redis.call('HDEL', KEYS[2], 'c' .. slot) end
  if redis.call('HINCRBY', KEYS[2], 'm' .. slot, -memory) <= 0 then redis.call('HDEL', KEYS[2], 'm' .. slot) end
end
redis.call('HSET', KEYS[3], uuid, table.concat({state, first, new_last, cores, memory}, '|'))
redis.call('HSET', KEYS[1], 'doc', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'v', 1)
return {'ok', phase}
