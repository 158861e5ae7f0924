-- Raises a partition's event-time watermark, never lowers it.
-- KEYS: 1 watermark
-- ARGV: 1 candidate (ms)
-- Returns the watermark after the call.
local c = tonumber(redis.call('GET', KEYS[1]))
local n = tonumber(ARGV[1])
if c == nil or n > c then redis.call('SET', KEYS[1], ARGV[1]); return n end
return c
