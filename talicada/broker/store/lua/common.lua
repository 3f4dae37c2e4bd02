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
