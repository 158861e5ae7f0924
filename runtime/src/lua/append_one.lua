-- Appends one update to its order's log in the order's own slot: the
-- detector's sequence step in Redis Cluster (where the partition's commit
-- cannot touch order keys) and for outbox re-delivery; tests that stand in for
-- the detector use it too. `append_update` (append_update.lua) is prepended.
-- KEYS: 1 ids hash, 2 seq counter, 3 updates zset, 4 owner (merchant id)
-- ARGV: 1 update id, 2 update encoded without seq, 3 merchant id,
--       4 expire-at of the order's keys (ms since the epoch)
-- Returns the update's sequence number, the same one on every call for the
-- same id.
local seq = append_update(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3])
-- The order log lives as long as its newest update needs it.
for k = 1, 4 do redis.call('PEXPIREAT', KEYS[k], ARGV[4]) end
return seq
