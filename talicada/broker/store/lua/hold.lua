-- Save an offer set and hold its offers' capacity, all or nothing.
--
-- KEYS: offerset, timers, then per offer (session, history, owner index),
--       then per platform (calendar points, entries), then the lifecycle stream,
--       the owner's held sums and the index of everyone's sessions.
-- ARGV: offerset doc, offer count, platform count, retention ms,
--       then per offer (uuid, doc, platform number, first slot, last slot,
--       cores, memory, expires ms, created ms, first history record,
--       lifecycle event, expiry timer name), then per platform (capacity cores, capacity memory),
--       then stream maxlen and stream field, the offers' expiry ms, now ms, then per
--       platform (name, the set's share in cores and GiB, the owner's cap in
--       cores and GiB, 0 = none), then the offer set's uuid.
-- Returns 0 when saved (or saved before), the number (1-based) of the first
-- offer that no longer fits, or -(platform number) when the owner's pending
-- offers would hold more than its cap there; in either case nothing of the set
-- was written (stale owner sums may have been restarted: see below).
--
-- The set's offers are alternatives, so on each platform they hold their
-- envelope (common.lua), not their sum.
local offers, platforms, retention = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
-- Saved already: this is a retry of a call whose reply was lost (a dropped
-- connection). Holding again would count the capacity twice.
if redis.call('HEXISTS', KEYS[1], 'doc') == 1 then return 0 end
local FIELDS = 12
local platform_keys = 2 + offers * 3
local capacity_args = 4 + offers * FIELDS
local stream_key = platform_keys + platforms * 2 + 1
local held_key, everyone = KEYS[stream_key + 1], KEYS[stream_key + 2]
local maxlen, field = ARGV[capacity_args + platforms * 2 + 1], ARGV[capacity_args + platforms * 2 + 2]
local share_args = capacity_args + platforms * 2 + 3
local expires, now = ARGV[share_args], tonumber(ARGV[share_args + 1])

local function share_args_of(p)
  local a = share_args + 1 + (p - 1) * 5
  return ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]),
    tonumber(ARGV[a + 5])
end

-- The owner's cap first (cheap): its pending offer sets plus this one.
-- (Sums found stale may be restarted here even when the set is then refused:
-- harmless, a restart only drops what no longer pends.)
local generations = {}
for p = 1, platforms do
  local name, cores, memory, cap_cores, cap_memory = share_args_of(p)
  generations[p] = held_generation(held_key, name, now)
  local held = redis.call('HMGET', held_key, 'c:' .. name, 'm:' .. name)
  if (cap_cores > 0 and tonumber(held[1] or '0') + cores > cap_cores)
      or (cap_memory > 0 and tonumber(held[2] or '0') + memory > cap_memory) then
    return -p
  end
end

local function offer_args(i)
  local a = 4 + (i - 1) * FIELDS
  return ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]),
    tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7]), ARGV[a + 8],
    ARGV[a + 9], ARGV[a + 10], ARGV[a + 11], ARGV[a + 12]
end

-- Every offer must fit on its own on top of what is in use. Then so does the
-- set's envelope on each platform: in every slot its cores are one offer's
-- cores and its memory one offer's memory, and each of those fits.
for i = 1, offers do
  local _, _, p, first, last, cores, memory = offer_args(i)
  local points = KEYS[platform_keys + (p - 1) * 2 + 1]
  local cap_cores = tonumber(ARGV[capacity_args + (p - 1) * 2 + 1])
  local cap_memory = tonumber(ARGV[capacity_args + (p - 1) * 2 + 2])
  if not fits(points, first, last, cores, memory, cap_cores, cap_memory) then return i end
end

-- Apply.
local offerset = ARGV[#ARGV]
local holds, uuids = {}, {}
for i = 1, offers do
  local uuid, doc, p, first, last, cores, memory, expires, created, record, event, timer =
    offer_args(i)
  local entries = KEYS[platform_keys + (p - 1) * 2 + 2]
  redis.call('HSET', entries, uuid, format_entry('H', first, last, cores, memory, offerset))
  holds[p] = holds[p] or {}
  holds[p][#holds[p] + 1] = {first, last, cores, memory}
  uuids[i] = uuid
  local k = 2 + (i - 1) * 3
  redis.call('HSET', KEYS[k + 1], 'phase', 'OFFERED', 'doc', doc, 'expires', expires)
  redis.call('RPUSH', KEYS[k + 2], record)
  redis.call('ZADD', KEYS[2], expires, timer)
  -- Never pruned here by age: a session booked far ahead lives long after it
  -- was created. Entries whose session has expired are dropped when listed.
  redis.call('ZADD', KEYS[k + 3], created, uuid)
  -- The operators' index of every session (a listing aid; pruned when listed).
  redis.call('ZADD', everyone, created, uuid)
  announce(KEYS[stream_key], maxlen, field, event)
end
for p = 1, platforms do
  if holds[p] then reshape(KEYS[platform_keys + (p - 1) * 2 + 1], {}, holds[p]) end
end
local shares = {}
for p = 1, platforms do
  local name, cores, memory = share_args_of(p)
  redis.call('HINCRBY', held_key, 'c:' .. name, cores)
  redis.call('HINCRBY', held_key, 'm:' .. name, memory)
  local latest = tonumber(redis.call('HGET', held_key, 'e:' .. name) or '0')
  if tonumber(expires) > latest then redis.call('HSET', held_key, 'e:' .. name, expires) end
  shares[#shares + 1] = name .. '|' .. cores .. '|' .. memory .. '|' .. generations[p]
end
redis.call('HSET', KEYS[1], 'doc', ARGV[1])
if offers > 0 then
  -- The set's offers ('offers'), for the scripts that later change one of its holds.
  redis.call('HSET', KEYS[1], 'held', table.concat(shares, ';'), 'open', offers,
    'offers', table.concat(uuids, ' '))
end
redis.call('PEXPIRE', KEYS[1], retention)
return 0
