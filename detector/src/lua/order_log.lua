-- The order log's append: the one place that assigns an update its order's
-- sequence number and encodes the log entry. Not a script on its own: it is
-- prepended (Rust `concat!`) to every script that appends to an order log
-- (commit.lua on a standalone server, sequence.lua in Redis Cluster), so the
-- assignment and the encoding exist once. Layout: runtime/src/order_log.rs.
--
-- append_update(ids, seq, updates, owner, id, body, merchant)
--   ids: `{o:..}:ids` hash, seq: `{o:..}:seq` counter, updates: `{o:..}:updates`
--   zset, owner: `{o:..}:merchant`; id: the update id, body: the update
--   protobuf-encoded WITHOUT `seq`, merchant: its merchant id.
-- Returns the log entry: protobuf field 1 (`seq`, varint) followed by body,
-- which decodes as the update with its `seq` set (prost writes fields in tag
-- order, so this is also the canonical encoding). Idempotent: an id seen
-- before keeps its number and returns the entry stored for it.
-- Expiry is the caller's (it must come after the script's last write).
local function append_update(ids, seq_key, updates, owner, id, body, merchant)
  local seq = redis.call('HGET', ids, id)
  if seq then
    local stored = redis.call('ZRANGEBYSCORE', updates, seq, seq, 'LIMIT', 0, 1)
    if stored[1] then return stored[1] end
    seq = tonumber(seq)
  else
    seq = redis.call('INCR', seq_key)
    redis.call('HSET', ids, id, seq)
    redis.call('SETNX', owner, merchant)
  end
  local n, bytes = seq, {string.char(8)}
  while n >= 128 do bytes[#bytes + 1] = string.char(n % 128 + 128); n = math.floor(n / 128) end
  bytes[#bytes + 1] = string.char(n)
  local entry = table.concat(bytes) .. body
  redis.call('ZADD', updates, seq, entry)
  return entry
end
