-- Shared by the scripts that change state (prepended when loaded).

-- A calendar entry 'state|first|last|cores|memory', parsed.
local function parse_entry(entry)
  local state, first, last, cores, memory = string.match(entry, '^(%a)|(-?%d+)|(-?%d+)|(%d+)|(%d+)$')
  return state, tonumber(first), tonumber(last), tonumber(cores), tonumber(memory)
end

-- Add (sign 1) or take off (sign -1) cores and memory over slots [first, last).
-- Counters that reach zero are dropped, so the usage hash only holds slots in use.
local function count(usage, first, last, cores, memory, sign)
  for slot = first, last - 1 do
    if redis.call('HINCRBY', usage, 'c' .. slot, sign * cores) <= 0 then
      redis.call('HDEL', usage, 'c' .. slot)
    end
    if redis.call('HINCRBY', usage, 'm' .. slot, sign * memory) <= 0 then
      redis.call('HDEL', usage, 'm' .. slot)
    end
  end
end

-- Whether cores and memory more fit in every slot of [first, last).
local function fits(usage, first, last, cores, memory, cap_cores, cap_memory)
  for slot = first, last - 1 do
    local used = redis.call('HMGET', usage, 'c' .. slot, 'm' .. slot)
    if tonumber(used[1] or 0) + cores > cap_cores or tonumber(used[2] or 0) + memory > cap_memory then
      return false
    end
  end
  return true
end

-- Free a session's calendar entry: take its size off every slot it counted in.
local function free_entry(usage, entries, uuid)
  local entry = redis.call('HGET', entries, uuid)
  if not entry then return end
  local _, first, last, cores, memory = parse_entry(entry)
  count(usage, first, last, cores, memory, -1)
  redis.call('HDEL', entries, uuid)
end

-- Tell observers about a transition: append to the lifecycle stream.
local function announce(stream, maxlen, field, payload)
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', field, payload)
end

-- Move a session to a final phase: record it, drop its expiry timer (named by
-- the caller: timer names are made in Python only), free its capacity and let
-- its keys expire after the retention period.
local function finish_session(session, history, timers, usage, entries, uuid, target, record,
    retention, expire_timer)
  redis.call('HSET', session, 'phase', target)
  redis.call('HINCRBY', session, 'v', 1)
  redis.call('RPUSH', history, record)
  redis.call('ZREM', timers, expire_timer)
  free_entry(usage, entries, uuid)
  redis.call('PEXPIRE', session, retention)
  redis.call('PEXPIRE', history, retention)
end

-- Move the end of a booking to slot new_last: slots gained must have room
-- (false when they do not, nothing changed); slots lost are freed.
local function rebook(usage, entries, uuid, new_last, cap_cores, cap_memory)
  local entry = redis.call('HGET', entries, uuid)
  if not entry then return true end
  local state, first, last, cores, memory = parse_entry(entry)
  if not fits(usage, last, new_last, cores, memory, cap_cores, cap_memory) then
    return false
  end
  count(usage, last, new_last, cores, memory, 1)
  count(usage, new_last, last, cores, memory, -1)
  redis.call('HSET', entries, uuid, table.concat({state, first, new_last, cores, memory}, '|'))
  return true
end
