-- Rebuild a platform's calendar points from its entries, once, when upgrading
-- from the calendar of one counter per slot (whose hash this deletes). The
-- entries (every hold and booking) are the truth both calendars were made of:
-- bookings and holds of no set count alone, the holds of one offer set as
-- their envelope (common.lua).
--
-- KEYS: old per-slot usage hash, calendar points, entries.
-- Returns the number of entries counted.
redis.call('DEL', KEYS[2])
local counted = 0
local sets = {}
local raw = redis.call('HGETALL', KEYS[3])
for i = 1, #raw, 2 do
  local state, first, last, cores, memory, offerset = parse_entry(raw[i + 1])
  if state == 'H' and offerset ~= '' then
    sets[offerset] = sets[offerset] or {}
    table.insert(sets[offerset], {first, last, cores, memory})
  else
    count(KEYS[2], first, last, cores, memory)
  end
  counted = counted + 1
end
for _, holds in pairs(sets) do reshape(KEYS[2], {}, holds) end
redis.call('DEL', KEYS[1])
return counted
