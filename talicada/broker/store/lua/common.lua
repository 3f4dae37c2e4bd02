-- Shared by the scripts that change state (prepended when loaded).

-- A calendar entry 'state|first|last|cores|memory[|offerset]', parsed. A hold
-- names its offer set: the holds of one set count as their envelope (below).
-- Bookings, and holds written before sets were recorded, name none ('') and
-- count alone.
local function parse_entry(entry)
  local state, first, last, cores, memory, rest =
    string.match(entry, '^(%a)|(-?%d+)|(-?%d+)|(%d+)|(%d+)(.*)$')
  return state, tonumber(first), tonumber(last), tonumber(cores), tonumber(memory),
    string.sub(rest, 2)
end

local function format_entry(state, first, last, cores, memory, offerset)
  local text = table.concat({state, first, last, cores, memory}, '|')
  if offerset ~= '' then text = text .. '|' .. offerset end
  return text
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

-- Add cores and memory (signed: negative takes off) over slots [first, last).
local function count(points, first, last, cores, memory)
  if first >= last then return end
  split(points, first)
  split(points, last)
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', points, first, '(' .. last)) do
    local slot, used_cores, used_memory = parse_point(member)
    set_point(points, slot, used_cores + cores, used_memory + memory, member)
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

-- The offers of an offer set, as hold.lua listed them in its hash ('offers').
local function members_of(offerset)
  local found = {}
  for uuid in string.gmatch(redis.call('HGET', offerset, 'offers') or '', '%S+') do
    found[#found + 1] = uuid
  end
  return found
end

-- The offers of one set are alternatives (at most one is ever accepted), so
-- their holds on a platform count together as their envelope: per slot the
-- most cores and, apart, the most memory any of them holds. Each change to a
-- set's holds replaces the envelope of the holds before it by the envelope of
-- those after it (talicada/broker/calendar.py, envelope_change and
-- Steps.reshape, does the same sums). A hold is {first, last, cores, memory}.

local function most(holds, slot)
  local cores, memory = 0, 0
  for _, hold in ipairs(holds) do
    if hold[1] <= slot and slot < hold[2] then
      if hold[3] > cores then cores = hold[3] end
      if hold[4] > memory then memory = hold[4] end
    end
  end
  return cores, memory
end

-- Where the envelope of after differs from that of before: stretches
-- {first, last, cores, memory} of signed differences, in slot order.
local function envelope_change(before, after)
  local bounds, seen = {}, {}
  for _, holds in ipairs({before, after}) do
    for _, hold in ipairs(holds) do
      for b = 1, 2 do
        if not seen[hold[b]] then
          seen[hold[b]] = true
          bounds[#bounds + 1] = hold[b]
        end
      end
    end
  end
  table.sort(bounds)
  local stretches = {}
  for i = 1, #bounds - 1 do
    local start, stop = bounds[i], bounds[i + 1]
    local was_cores, was_memory = most(before, start)
    local cores, memory = most(after, start)
    cores, memory = cores - was_cores, memory - was_memory
    if cores ~= 0 or memory ~= 0 then
      local last = stretches[#stretches]
      if last and last[2] == start and last[3] == cores and last[4] == memory then
        last[2] = stop
      else
        stretches[#stretches + 1] = {start, stop, cores, memory}
      end
    end
  end
  return stretches
end

-- Count the envelope of after instead of that of before. With capacity, only
-- when every stretch where it grows has room (false, nothing changed, when one
-- has not); a hold leaving its set never makes it grow.
local function reshape(points, before, after, cap_cores, cap_memory)
  local stretches = envelope_change(before, after)
  if cap_cores then
    for _, s in ipairs(stretches) do
      local cores, memory = math.max(s[3], 0), math.max(s[4], 0)
      if (cores > 0 or memory > 0)
          and not fits(points, s[1], s[2], cores, memory, cap_cores, cap_memory) then
        return false
      end
    end
  end
  for _, s in ipairs(stretches) do count(points, s[1], s[2], s[3], s[4]) end
  return true
end

-- The entries counted together with uuid's (entry: its text, as read): the
-- holds of its offer set on this platform, whose offers are members; or, for
-- a booking or a hold of no set, itself. As {uuid = hold}.
local function counted_with(entries, uuid, entry, members)
  local state, first, last, cores, memory, offerset = parse_entry(entry)
  local together = {[uuid] = {first, last, cores, memory}}
  if state ~= 'H' or offerset == '' then return together end
  local others = {}
  for _, member in ipairs(members) do
    if member ~= uuid then others[#others + 1] = member end
  end
  if #others == 0 then return together end
  local found = redis.call('HMGET', entries, unpack(others))
  for i, member in ipairs(others) do
    if found[i] then
      local s, f, l, c, m, set = parse_entry(found[i])
      if s == 'H' and set == offerset then together[member] = {f, l, c, m} end
    end
  end
  return together
end

local function holds_of(together)
  local list = {}
  for _, hold in pairs(together) do list[#list + 1] = hold end
  return list
end

-- Replace uuid's entry by moved ({first, last, cores, memory}; nil: drop it)
-- in what the calendar counts; with capacity only when there is room for it.
local function change_entry(points, entries, uuid, entry, members, moved, cap_cores, cap_memory)
  local together = counted_with(entries, uuid, entry, members)
  local before = holds_of(together)
  together[uuid] = moved
  return reshape(points, before, holds_of(together), cap_cores, cap_memory)
end

-- Free a session's calendar entry: take it off the calendar (for a hold, its
-- set's envelope becomes that of the set's other holds). members: the offers
-- of the session's offer set (members_of).
local function free_entry(points, entries, uuid, members)
  local entry = redis.call('HGET', entries, uuid)
  if not entry then return end
  change_entry(points, entries, uuid, entry, members, nil)
  redis.call('HDEL', entries, uuid)
end

-- Take all of offerset's holds on one platform off the calendar at once and
-- drop their entries (accept: the set stops pending): one reshape, where
-- freeing them one by one would reshape the envelope once per hold.
-- members: the set's offers (members_of).
local function drop_set(points, entries, members, offerset)
  if #members == 0 then return end
  local found = redis.call('HMGET', entries, unpack(members))
  local holds, gone = {}, {}
  for i, member in ipairs(members) do
    if found[i] then
      local state, first, last, cores, memory, set = parse_entry(found[i])
      if state == 'H' and set == offerset then
        holds[#holds + 1] = {first, last, cores, memory}
        gone[#gone + 1] = member
      end
    end
  end
  if #gone == 0 then return end
  reshape(points, holds, {})
  redis.call('HDEL', entries, unpack(gone))
end

-- Turn a hold into a booking: it leaves its set's envelope and counts alone.
-- It was part of that envelope, so it fits wherever the envelope did.
local function book_entry(points, entries, uuid, members)
  local entry = redis.call('HGET', entries, uuid)
  if not entry then return end
  local _, first, last, cores, memory = parse_entry(entry)
  change_entry(points, entries, uuid, entry, members, nil)
  count(points, first, last, cores, memory)
  redis.call('HSET', entries, uuid, format_entry('B', first, last, cores, memory, ''))
end

-- An offer set's share of its owner's held capacity, 'platform|cores|memory|generation;...'
-- (its largest offer per platform: siblings are alternatives), is kept in the
-- offer set's 'held' field from hold to the moment the set stops pending: an
-- offer accepted, or its last OFFERED offer rejected or expired. Releasing
-- takes the share off the owner's sums once (the field is dropped with it).
local function release_held(offerset, held)
  local share = redis.call('HGET', offerset, 'held')
  if not share then return end
  for platform, cores, memory, generation in string.gmatch(share, '([^|;]+)|(%d+)|(%d+)|(%d+)') do
    -- A share of an earlier generation was wiped when the sums restarted.
    if tonumber(generation) == tonumber(redis.call('HGET', held, 'g:' .. platform) or '0') then
      local left = redis.call('HINCRBY', held, 'c:' .. platform, -tonumber(cores))
      redis.call('HINCRBY', held, 'm:' .. platform, -tonumber(memory))
      if left <= 0 then
        redis.call('HDEL', held, 'c:' .. platform, 'm:' .. platform, 'e:' .. platform)
      end
    end
  end
  redis.call('HDEL', offerset, 'held')
end

-- The generation of an owner's sums on one platform, restarting them first
-- when every set they count has expired (their latest expiry has passed):
-- what is left then is an expiry timer still due, or a share whose release
-- was lost (a replica of an older version, a failover that dropped a write).
-- Restarting bumps the generation, so no share of an earlier one is taken
-- off the new sums: they heal instead of drifting.
local function held_generation(held, platform, now)
  local latest = tonumber(redis.call('HGET', held, 'e:' .. platform) or '0')
  if latest <= now and redis.call('HEXISTS', held, 'c:' .. platform) == 1 then
    redis.call('HDEL', held, 'c:' .. platform, 'm:' .. platform, 'e:' .. platform)
    return redis.call('HINCRBY', held, 'g:' .. platform, 1)
  end
  return tonumber(redis.call('HGET', held, 'g:' .. platform) or '0')
end

-- Tell observers about a transition: append to the lifecycle stream.
local function announce(stream, maxlen, field, payload)
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', field, payload)
end

-- Move a session to a final phase: record it, drop its expiry timer (named by
-- the caller: timer names are made in Python only), free its capacity and let
-- its keys expire after the retention period.
local function finish_session(session, history, timers, points, entries, uuid, target, record,
    retention, expire_timer, members)
  redis.call('HSET', session, 'phase', target)
  redis.call('HINCRBY', session, 'v', 1)
  redis.call('RPUSH', history, record)
  redis.call('ZREM', timers, expire_timer)
  free_entry(points, entries, uuid, members)
  redis.call('PEXPIRE', session, retention)
  redis.call('PEXPIRE', history, retention)
end

-- Move the end of a booking (or hold) to slot new_last: slots gained must have
-- room (false when they do not, nothing changed); slots lost are freed.
local function rebook(points, entries, uuid, new_last, cap_cores, cap_memory, members)
  local entry = redis.call('HGET', entries, uuid)
  if not entry then return true end
  local state, first, _, cores, memory, offerset = parse_entry(entry)
  if not change_entry(points, entries, uuid, entry, members, {first, new_last, cores, memory},
      cap_cores, cap_memory) then
    return false
  end
  redis.call('HSET', entries, uuid, format_entry(state, first, new_last, cores, memory, offerset))
  return true
end
