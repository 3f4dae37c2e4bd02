-- OFFERED -> ACCEPTED: the hold becomes a booking and OFFERED siblings are
-- REJECTED, their holds freed. At most one offer of a set is ever accepted.
-- The set's holds counted as their envelope: the booking leaves it and counts
-- alone (it fits: it was part of it), and as each sibling goes the envelope
-- shrinks to that of the rest, so nothing is freed twice.
-- The accepted session gets a 'start' timer due now: the lifecycle engine
-- takes it from there, and the timer survives a broker dying right here.
--
-- KEYS: session, history, offerset, timers, points, entries, lifecycle stream,
--       then per sibling (session, history, points, entries), then the owner's
--       held sums (the set stops pending: its share is released).
-- ARGV: uuid, now ms, accept record, reject record, retention ms, stream maxlen,
--       stream field, accept event, expiry timer name, start timer name, then per
--       sibling (uuid, reject event, expiry timer name).
-- Returns {status, phase[, detail]}.
local uuid, now = ARGV[1], tonumber(ARGV[2])
local phase = redis.call('HGET', KEYS[1], 'phase')
if not phase then return {'missing'} end
if phase ~= 'OFFERED' then return {'phase', phase} end
if tonumber(redis.call('HGET', KEYS[1], 'expires')) <= now then return {'expired', phase} end
local taken = redis.call('HGET', KEYS[3], 'accepted')
if taken then return {'taken', phase, taken} end

local retention, maxlen, field = tonumber(ARGV[5]), ARGV[6], ARGV[7]
redis.call('HSET', KEYS[3], 'accepted', uuid)
redis.call('HSET', KEYS[1], 'phase', 'ACCEPTED')
redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[9])
redis.call('ZADD', KEYS[4], now, ARGV[10])
local members = members_of(KEYS[3])
local entry = redis.call('HGET', KEYS[6], uuid)
local set = entry and select(6, parse_entry(entry)) or ''
if set ~= '' then
  -- The set stops pending: on each platform its holds leave the calendar
  -- together (the siblings' rejections below then find nothing to free),
  -- and the accepted one counts alone, as a booking.
  local dropped = {}
  local function drop(points, entries)
    if dropped[entries] then return end
    dropped[entries] = true
    drop_set(points, entries, members, set)
  end
  drop(KEYS[5], KEYS[6])
  for s = 0, (#ARGV - 10) / 3 - 1 do
    drop(KEYS[7 + s * 4 + 3], KEYS[7 + s * 4 + 4])
  end
  local _, first, last, cores, memory = parse_entry(entry)
  count(KEYS[5], first, last, cores, memory)
  redis.call('HSET', KEYS[6], uuid, format_entry('B', first, last, cores, memory, ''))
else
  book_entry(KEYS[5], KEYS[6], uuid, members)  -- a hold of no set (written before sets)
end
announce(KEYS[7], maxlen, field, ARGV[8])
release_held(KEYS[3], KEYS[#KEYS])

local sibling = 0
for j = 11, #ARGV, 3 do
  local k = 7 + sibling * 4
  sibling = sibling + 1
  if redis.call('HGET', KEYS[k + 1], 'phase') == 'OFFERED' then
    finish_session(KEYS[k + 1], KEYS[k + 2], KEYS[4], KEYS[k + 3], KEYS[k + 4], ARGV[j],
      'REJECTED', ARGV[4], retention, ARGV[j + 2], members)
    announce(KEYS[7], maxlen, field, ARGV[j + 1])
  end
end
return {'ok', 'ACCEPTED'}
