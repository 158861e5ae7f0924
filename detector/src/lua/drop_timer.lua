-- Removes a stale timer member, unless a commit re-armed it since it was read.
-- KEYS: 1 timers zset
-- ARGV: 1 member, 2 the score it was read with
-- Returns 1 if removed, 0 if it was re-armed (or already gone).
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
