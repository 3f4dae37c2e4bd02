-- Shared by the scripts that change state (prepended when loaded).

-- A calendar entry 'state|first|last|cores|memory', parsed.
local function parse_entry(entry)
  local state, first, last, cores, memory = string.match(entry, '^(%a)|(-?%d+)|(-?%d+)|(%d+)|(%d+)$')
  return state, tonumber(first), tonumber(last), tonumber(cores), tonumber(memory)
end

-- The calendar of a platform is a step function kept in one sorted set: each
-- member 'slot|cores|memory' (scored by slot) says how much is in use from
-- that slot until the next member; before the first, nothing is. A booking
-- touches only the members inside it, so its cost grows with the bookings it
-- overlaps and never with its length (talicada/broker/calendar.py, Steps).

local function parse_point(member)
  local slot, cores, memory = string.match(member, '^(-?%d+)|(-?%d+)|(-?%d+)$')
  return tonumber(slot), tonumber(cores), tonumber(memory)
end

-- The member starting exactly at slot, or nil.
local function point_at(points, slot)
  return redis.call('ZRANGEBYSCORE', points, slot, slot)[1]
end

-- Cores and memory in use during slot (inclusive = true) or just before it.
local function level(points, slot, inclusive)
  local bound = inclusive and slot or ('(' .. slot)
  local found = redis.call('ZREVRANGEBYSCORE', points, bound, '-inf', 'LIMIT', 0, 1)
  if #found == 0 then return 0, 0 end
  local _, cores, memory = parse_point(found[1])
  return cores, memory
end

local function set_point(points, slot, cores, memory, old)
  if old then redis.call('ZREM', points, old) end
  redis.call('ZADD', points, slot, slot .. '|' .. cores .. '|' .. memory)
end

-- Make sure a member starts at slot.
local function split(points, slot)
  if point_at(points, slot) then return end
  local cores, memory = level(points, slot, true)
  set_point(points, slot, cores, memory, nil)
end

-- Drop the member at slot when it says what the one before it says.
local function tidy(points, slot)
  local member = point_at(points, slot)
  if not member then return end
  local _, cores, memory = parse_point(member)
  local before_cores, before_memory = level(points, slot, false)
  if cores == before_cores and memory == before_memory then redis.call('ZREM', points, member) end
end

-- Add (sign 1) or take off (sign -1) cores and memory over slots [first, last).
local function count(points, first, last, cores, memory, sign)
  if first >= last then return end
  split(points, first)
  split(points, last)
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', points, first, '(' .. last)) do
    local slot, used_cores, used_memory = parse_point(member)
    set_point(points, slot, used_cores + sign * cores, used_memory + sign * memory, member)
  end
  -- Only the two ends can have become redundant: inside, neighbours moved together.
  tidy(points, last)
  tidy(points, first)
end

-- Most change points a booking may span (constants.BOOKING_POINTS, doubled):
-- count() costs a call per point, and nothing else runs meanwhile.
local MAX_SPANNED = {{MAX_SPANNED}}

-- Whether cores and memory more fit in every slot of [first, last), spanning
-- no more than MAX_SPANNED change points.
local function fits(points, first, last, cores, memory, cap_cores, cap_memory)
  if first >= last then return true end
  local used_cores, used_memory = level(points, first, true)
  if used_cores + cores > cap_cores or used_memory + memory > cap_memory then return false end
  local inside = redis.call('ZRANGEBYSCORE', points, '(' .. first, '(' .. last,
    'LIMIT', 0, MAX_SPANNED + 1)
  if #inside > MAX_SPANNED then return false end
  for _, member in ipairs(inside) do
    local _, point_cores, point_memory = parse_point(member)
    if point_cores + cores > cap_cores or point_memory + memory > cap_memory then
      return false
    end
  end
  return true
end

-- Free a session's calendar entry: take its size off the calendar.
local function free_entry(points, entries, uuid)
  local entry = redis.call('HGET', entries, uuid)
  if not entry then return end
  local _, first, last, cores, memory = parse_entry(entry)
  count(points, first, last, cores, memory, -1)
  redis.call('HDEL', entries, uuid)
end

-- An offer set's share of its owner's held capacity, 'platform|cores|memory;...'
-- (its largest offer per platform: siblings are alternatives), is kept in the
-- offer set's 'held' field from hold to the moment the set stops pending: an
-- offer accepted, or its last OFFERED offer rejected or expired. Releasing
-- takes the share off the owner's sums once (the field is dropped with it).
local function release_held(offerset, held)
  local share = redis.call('HGET', offerset, 'held')
  if not share then return end
  for platform, cores, memory in string.gmatch(share, '([^|;]+)|(%d+)|(%d+)') do
    local left = redis.call('HINCRBY', held, 'c:' .. platform, -tonumber(cores))
    redis.call('HINCRBY', held, 'm:' .. platform, -tonumber(memory))
    if left <= 0 then redis.call('HDEL', held, 'c:' .. platform, 'm:' .. platform, 'e:' .. platform) end
  end
  redis.call('HDEL', offerset, 'held')
end

-- Tell observers about a transition: append to the lifecycle stream.
local function announce(stream, maxlen, field, payload)
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', field, payload)
end

-- Move a session to a final phase: record it, drop its expiry timer (named by
-- the caller: timer names are made in Python only), free its capacity and let
-- its keys expire after the retention period.
local function finish_session(session, history, timers, points, entries, uuid, target, record,
    retention, expire_timer)
  redis.call('HSET', session, 'phase', target)
  redis.call('HINCRBY', session, 'v', 1)
  redis.call('RPUSH', history, record)
  redis.call('ZREM', timers, expire_timer)
  free_entry(points, entries, uuid)
  redis.call('PEXPIRE', session, retention)
  redis.call('PEXPIRE', history, retention)
end

-- Move the end of a booking to slot new_last: slots gained must have room
-- (false when they do not, nothing changed); slots lost are freed.
local function rebook(points, entries, uuid, new_last, cap_cores, cap_memory)
  local entry = redis.call('HGET', entries, uuid)
  if not entry then return true end
  local state, first, last, cores, memory = parse_entry(entry)
  if new_last > last then
    if not fits(points, last, new_last, cores, memory, cap_cores, cap_memory) then
      return false
    end
    count(points, last, new_last, cores, memory, 1)
  elseif new_last < last then
    count(points, new_last, last, cores, memory, -1)
  end
  redis.call('HSET', entries, uuid, table.concat({state, first, new_last, cores, memory}, '|'))
  return true
end
