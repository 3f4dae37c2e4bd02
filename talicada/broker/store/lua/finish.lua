-- Move a session to a final phase (REJECTED, EXPIRED) when its phase is one
-- of the allowed sources; free its capacity and tell observers.
--
-- KEYS: session, history, timers, points, entries, lifecycle stream, offer set
--       (its offers: a hold leaving its set leaves the envelope of the others),
--       the owner's held sums (an offer leaving OFFERED may end its set's share).
-- ARGV: uuid, allowed source phases (space separated), target, record,
--       due ms ('' = any time), retention ms, stream maxlen, stream field, event,
--       expiry timer name.
-- Returns {status, phase[, detail]}.
local phase = redis.call('HGET', KEYS[1], 'phase')
if not phase then return {'missing'} end
if not string.find(' ' .. ARGV[2] .. ' ', ' ' .. phase .. ' ', 1, true) then
  return {'phase', phase}
end
if ARGV[5] ~= '' and tonumber(redis.call('HGET', KEYS[1], 'expires')) > tonumber(ARGV[5]) then
  return {'phase', phase, 'not due'}
end
finish_session(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[3], ARGV[4],
  tonumber(ARGV[6]), ARGV[10], members_of(KEYS[7]))
if phase == 'OFFERED' and redis.call('EXISTS', KEYS[7]) == 1
    and redis.call('HINCRBY', KEYS[7], 'open', -1) <= 0 then
  release_held(KEYS[7], KEYS[8])
end
announce(KEYS[6], ARGV[7], ARGV[8], ARGV[9])
return {'ok', ARGV[3]}
