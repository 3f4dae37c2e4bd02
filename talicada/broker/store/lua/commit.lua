-- Commit one lifecycle change: the session's new record and phase, its
-- history, its timers and the events it causes, all at once (the outbox
-- rule: no event without its change, no change without its events).
--
-- KEYS: session, history, applied deliveries, timers, points, entries,
--       the session's offer set (its offers: a hold counts with its siblings'),
--       then one stream key per event.
-- ARGV: expected version, phase, record, delivery ('' = none), final ('1'/'0'),
--       retention ms, stream maxlen, stream field, session uuid,
--       new last booking slot ('' = unchanged), capacity cores, capacity memory,
--       history count, records...,
--       timers-to-add count, (name, due ms)..., timers-to-drop count, names...,
--       then one event payload per stream key.
-- Returns 'ok', 'stale' (version moved on), 'duplicate' (delivery applied),
-- 'full' (the booking cannot grow: nothing written) or 'missing'.
local session, history, applied, timers, points, entries = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local offerset = KEYS[7]
if redis.call('EXISTS', session) == 0 then return 'missing' end
local delivery = ARGV[4]
if delivery ~= '' and redis.call('SISMEMBER', applied, delivery) == 1 then return 'duplicate' end
if tonumber(redis.call('HGET', session, 'v') or '0') ~= tonumber(ARGV[1]) then return 'stale' end

local retention, maxlen, field = tonumber(ARGV[6]), ARGV[7], ARGV[8]
if ARGV[10] ~= '' and not rebook(points, entries, ARGV[9], tonumber(ARGV[10]),
    tonumber(ARGV[11]), tonumber(ARGV[12]), members_of(offerset)) then
  return 'full'
end
redis.call('HSET', session, 'phase', ARGV[2], 'doc', ARGV[3])
redis.call('HINCRBY', session, 'v', 1)
local i = 13
-- 'n', not 'count': that name is the shared calendar helper (common.lua).
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('RPUSH', history, ARGV[i]); i = i + 1 end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('ZADD', timers, tonumber(ARGV[i + 1]), ARGV[i]); i = i + 2 end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('ZREM', timers, ARGV[i]); i = i + 1 end
for k = 8, #KEYS do
  redis.call('XADD', KEYS[k], 'MAXLEN', '~', maxlen, '*', field, ARGV[i]); i = i + 1
end
if delivery ~= '' then
  redis.call('SADD', applied, delivery)
  redis.call('PEXPIRE', applied, retention)
end
if ARGV[5] == '1' then
  free_entry(points, entries, ARGV[9], members_of(offerset))
  redis.call('PEXPIRE', session, retention)
  redis.call('PEXPIRE', history, retention)
end
return 'ok'
