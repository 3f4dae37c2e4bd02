-- Read a platform's calendar over slots [first, last): the level in effect at
-- first, then the change points after it, at most ARGV[3] of them (the caller
-- reads the rest from the last slot returned, so no one call runs long).
--
-- KEYS: calendar points.  ARGV: first slot, last slot, most points.
-- Returns a flat list: slot, cores, memory, slot, cores, memory, ...
local first, last = tonumber(ARGV[1]), tonumber(ARGV[2])
local cores, memory = level(KEYS[1], first, true)
local out = {first, cores, memory}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. first, '(' .. last,
    'LIMIT', 0, tonumber(ARGV[3]))) do
  local slot, point_cores, point_memory = parse_point(member)
  out[#out + 1] = slot
  out[#out + 1] = point_cores
  out[#out + 1] = point_memory
end
return out
