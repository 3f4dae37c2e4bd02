-- Claim up to ARGV[3] timers due at ARGV[1] (ms): each is pushed ARGV[2] ms
-- into the future (a lease) so no other replica takes it while it is applied.
-- The operation it triggers removes it; if the claimer dies, the lease ends
-- and another replica claims it.
-- KEYS: timers.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local lease = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, name in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', lease, name)
end
return due
