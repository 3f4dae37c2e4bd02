-- Rebuild a platform's calendar points from its entries, once, when upgrading
-- from the calendar of one counter per slot (whose hash this deletes). The
-- entries (every hold and booking) are the truth both calendars were made of.
--
-- KEYS: old per-slot usage hash, calendar points, entries.
-- Returns the number of entries counted.
redis.call('DEL', KEYS[2])
local counted = 0
local raw = redis.call('HGETALL', KEYS[3])
for i = 1, #raw, 2 do
  local _, first, last, cores, memory = parse_entry(raw[i + 1])
  count(KEYS[2], first, last, cores, memory, 1)
  counted = counted + 1
end
redis.call('DEL', KEYS[1])
return counted
