"""Lua scripts of the Redis bus: each queue operation is one atomic step.

Inline strings rather than ``.lua`` files so the package data needs no entry of
its own. Times come from the server (``TIME``), never from the client, so clock
skew between hosts cannot make a retry early or late. Redis 7 replicates the
effects of scripts, which is what allows ``TIME`` before a write.

Why a sorted set for retries: ``XCLAIM … TIME <future>`` would be the natural
way to hide a message until its retry is due, but Redis 7.0 silently clamps a
future ``TIME`` (and a negative ``IDLE``) to *now*, so a pending entry can only
be made to look older, never younger. Due times therefore live in a per-group
sorted set; the reclaim pass takes due ids from it and leaves alone the ids it
still holds when XAUTOCLAIM finds them idle.
"""

from __future__ import annotations

_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

#: KEYS: stream, retries. ARGV: group, consumer, count, reclaim idle (ms), cursor.
#: Returns {next cursor, {{id, {field, value, …}, delivery count}, …}}.
RECLAIM = (
    _NOW
    + """
local stream, retries = KEYS[1], KEYS[2]
local group, consumer, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
local claimed = {}
-- XCLAIM counts a delivery and resets the idle time; report each with its count.
local function claim(ids)
  if #ids == 0 then return end
  for _, entry in ipairs(redis.call('XCLAIM', stream, group, consumer, 0, unpack(ids))) do
    if entry then  -- Redis 6.2 answered nil for entries deleted while pending
      local p = redis.call('XPENDING', stream, group, entry[1], entry[1], 1)
      claimed[#claimed + 1] = {entry[1], entry[2], p[1][4]}
    end
  end
end
-- 1. retries whose time has come. Claimed at once, so that the idle scan below
-- (which they would match, being idle and no longer in the set) skips them.
local due = redis.call('ZRANGEBYSCORE', retries, '-inf', now, 'LIMIT', 0, count)
for _, id in ipairs(due) do redis.call('ZREM', retries, id) end
claim(due)
-- 2. messages held past the idle time by a consumer that must have died. JUSTID
-- so that the delivery count rises once, in claim().
local cursor = ARGV[5]
if #claimed < count then
  local found = redis.call('XAUTOCLAIM', stream, group, consumer, ARGV[4], cursor,
                           'COUNT', count - #claimed, 'JUSTID')
  cursor = found[1]
  local dead = {}
  for _, id in ipairs(found[2]) do
    -- Still in the retry set: parked for longer than the idle time. XAUTOCLAIM
    -- has just reset its idle time, which is all it needs; the set releases it.
    if not redis.call('ZSCORE', retries, id) then dead[#dead + 1] = id end
  end
  -- Redis 7 reports entries deleted (trimmed) while pending, and drops them.
  for _, id in ipairs(found[3] or {}) do redis.call('ZREM', retries, id) end
  claim(dead)
end
return {cursor, claimed}
"""
)

#: KEYS: stream, retries. ARGV: group, message id, delay (ms).
#: Returns 1, or 0 when the message was no longer pending.
RETRY = (
    _NOW
    + """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 then return 0 end
-- Reset the idle time (JUSTID: not a delivery) so the dead-consumer pass does not
-- find it before the retry set releases it.
redis.call('XCLAIM', KEYS[1], ARGV[1], pending[1][2], 0, ARGV[2], 'JUSTID')
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
return 1
"""
)

#: KEYS: stream, retries, dead letters. ARGV: group, message id, maxlen, then the
#: dead letter's field/value pairs. Returns its id, or nil when the message was no
#: longer pending (another consumer settled it first: nothing to give up on).
DEAD_LETTER = """
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[2])
if acked == 0 then return false end
return redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
"""
