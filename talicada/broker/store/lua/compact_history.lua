-- Keep a finished session's history as one compressed field of its hash
-- instead of a list of JSON records (a third of the memory or less: most of a
-- finished session's Redis bytes were its history). Nothing is appended once
-- a session is final; should something be, it goes to a new list, which reads
-- put after the compressed part.
--
-- KEYS: session, history.  ARGV: records compressed, compressed history.
-- Applies only while the list still holds exactly the records compressed
-- (returns 1), so a record appended meanwhile is never lost (returns 0).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('LLEN', KEYS[2]) ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'history', ARGV[2])
redis.call('DEL', KEYS[2])
return 1
