-- Delete a final session now (UWS DELETE) rather than at the end of the
-- retention period: its hash, history and applied deliveries, its rows in the
-- owner's and the operators' indexes; then tell observers.
--
-- KEYS: session, history, applied, owner index, operators' index, lifecycle stream.
-- ARGV: uuid, final phases (space separated), stream maxlen, stream field, event.
-- Returns {status, phase}: 'ok', 'phase' (not final: nothing done) or 'missing'.
local phase = redis.call('HGET', KEYS[1], 'phase')
if not phase then return {'missing'} end
if not string.find(' ' .. ARGV[2] .. ' ', ' ' .. phase .. ' ', 1, true) then
  return {'phase', phase}
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
announce(KEYS[6], ARGV[3], ARGV[4], ARGV[5])
return {'ok', phase}
