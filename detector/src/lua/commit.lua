-- One waybill's commit (the timer loop and outbox re-delivery path).
-- KEYS: 1 state hash, 2 history hash, 3 timers zset, 4 outbox hash
-- ARGV: 1 expected version, 2 state, 3 registration ('' = unchanged),
--       4 waybill key, 5 expire-at (ms since the epoch; state and history),
--       then counted groups: history (id, bytes)*, timer sets (rule, deadline)*,
--       timer deletes (rule)*, outbox (id, bytes)*
-- Returns the new version, or -1 when the version moved (reload, re-apply).
-- One command per element: nothing is unpacked, so no group size can hit
-- Lua's stack limit.
local version = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if version ~= tonumber(ARGV[1]) then return -1 end
redis.call('HSET', KEYS[1], 'v', version + 1, 's', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'r', ARGV[3]) end
local i = 6
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]); i = i + 2 end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('ZADD', KEYS[3], ARGV[i + 1], ARGV[4] .. '|' .. ARGV[i]); i = i + 2 end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('ZREM', KEYS[3], ARGV[4] .. '|' .. ARGV[i]); i = i + 1 end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1]); i = i + 2 end
-- Lifecycle: absolute expiry from the detector's wall clock (a time in the
-- past deletes the keys now, which is what retention asks for).
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
redis.call('PEXPIREAT', KEYS[2], ARGV[5])
return version + 1
