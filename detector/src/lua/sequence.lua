-- Assigns an update its order's sequence number, in the order's slot (Redis
-- Cluster, where the partition's commit cannot touch order keys).
-- KEYS: 1 ids hash, 2 seq counter, 3 updates zset, 4 owner (merchant id)
-- ARGV: 1 update id, 2 update encoded without seq, 3 merchant id,
--       4 expire-at of the order's keys (ms since the epoch)
-- Returns the update's sequence number, assigning it on first sight
-- (idempotent: the same id always gets the same number).
redis.call('SETNX', KEYS[4], ARGV[3])
local seq = redis.call('HGET', KEYS[1], ARGV[1])
if seq then return tonumber(seq) end
seq = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], ARGV[1], seq)
local n, bytes = seq, {}
while n >= 128 do bytes[#bytes + 1] = string.char(n % 128 + 128); n = math.floor(n / 128) end
bytes[#bytes + 1] = string.char(n)
redis.call('ZADD', KEYS[3], seq, string.char(8) .. table.concat(bytes) .. ARGV[2])
-- The order log lives as long as its newest update needs it.
for k = 1, 4 do redis.call('PEXPIREAT', KEYS[k], ARGV[4]) end
return seq
