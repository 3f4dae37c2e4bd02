-- Shared by the scripts that change a session's phase (prepended when loaded).

-- Free a calendar entry 'state|first|last|cores|memory': take its size off
-- every slot it counted in, dropping counters that reach zero so the usage
-- hash only holds slots that are in use.
local function free_entry(usage, entries, uuid)
  local entry = redis.call('HGET', entries, uuid)
  if not entry then return end
  local _, first, last, cores, memory = string.match(entry, '^(%a)|(-?%d+)|(-?%d+)|(%d+)|(%d+)$')
  first, last, cores, memory = tonumber(first), tonumber(last), tonumber(cores), tonumber(memory)
  for slot = first, last - 1 do
    if redis.call('HINCRBY', usage, 'c' .. slot, -cores) <= 0 then
      redis.call('HDEL', usage, 'c' .. slot)
    end
    if redis.call('HINCRBY', usage, 'm' .. slot, -memory) <= 0 then
      redis.call('HDEL', usage, 'm' .. slot)
    end
  end
  redis.call('HDEL', entries, uuid)
end

-- Tell observers about a transition: append to the lifecycle stream.
local function announce(stream, maxlen, field, payload)
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', field, payload)
end

-- Move a session to a final phase: record it, drop its timer, free its
-- capacity and let its keys expire after the retention period.
local function finish_session(session, history, timers, usage, entries, uuid, target, record, retention)
  redis.call('HSET', session, 'phase', target)
  redis.call('HINCRBY', session, 'v', 1)
  redis.call('RPUSH', history, record)
  redis.call('ZREM', timers, 'expire:' .. uuid)
  free_entry(usage, entries, uuid)
  redis.call('PEXPIRE', session, retention)
  redis.call('PEXPIRE', history, retention)
end

-- Move the end of a booking to slot new_last: slots gained must have room
-- (false when they do not, nothing changed); slots lost are freed.
local function rebook(usage, entries, uuid, new_last, cap_cores, cap_memory)
  local entry = redis.call('HGET', entries, uuid)
  if not entry then return true end
  local state, first, last, cores, memory = string.match(entry, '^(%a)|(-?%d+)|(-?%d+)|(%d+)|(%d+)$')
  first, last, cores, memory = tonumber(first), tonumber(last), tonumber(cores), tonumber(memory)
  for slot = last, new_last - 1 do
    local used = redis.call('HMGET', usage, 'c' .. slot, 'm' .. slot)
    if tonumber(used[1] or 0) + cores > cap_cores or tonumber(used[2] or 0) + memory > cap_memory then
      return false
    end
  end
  for slot = last, new_last - 1 do
    redis.call('HINCRBY', usage, 'c' .. slot, cores)
    redis.call('HINCRBY', usage, 'm' .. slot, memory)
  end
  for slot = new_last, last - 1 do
    if redis.call('HINCRBY', usage, 'c' .. slot, -cores) <= 0 then redis.call('HDEL', usage, 'c' .. slot) end
    if redis.call('HINCRBY', usage, 'm' .. slot, -memory) <= 0 then redis.call('HDEL', usage, 'm' .. slot) end
  end
  redis.call('HSET', entries, uuid, table.concat({state, first, new_last, cores, memory}, '|'))
  return true
end
