-- Read a platform's calendar over slots [first, last): the level in effect at
-- first, then every change point after it. Read-only; costs the points in range.
--
-- KEYS: calendar points.  ARGV: first slot, last slot.
-- Returns a flat list: slot, cores, memory, slot, cores, memory, ...
local first, last = tonumber(ARGV[1]), tonumber(ARGV[2])
local cores, memory = level(KEYS[1], first, true)
local out = {first, cores, memory}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. first, '(' .. last)) do
  local slot, point_cores, point_memory = parse_point(member)
  out[#out + 1] = slot
  out[#out + 1] = point_cores
  out[#out + 1] = point_memory
end
return out
