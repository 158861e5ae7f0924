-- The order log's append: the one place that assigns an update its order's
-- sequence number and encodes the log entry. Not a script on its own: it is
-- prepended (`runtime::order_log::with_append`) to every script that appends
-- to an order log (the detector's commit.lua on a standalone server,
-- append_one.lua in Redis Cluster, on outbox re-delivery and in the notifier's
-- tests), so the assignment and the encoding exist once. Layout:
-- runtime/src/order_log.rs.
--
-- append_update(ids, seq, updates, owner, id, body, merchant)
--   ids: `{o:..}:ids` hash, seq: `{o:..}:seq` counter, updates: `{o:..}:updates`
--   zset, owner: `{o:..}:merchant`; id: the update id, body: the update
--   protobuf-encoded WITHOUT `seq`, merchant: its merchant id.
-- Stores the log entry: protobuf field 1 (`seq`, varint) followed by body,
-- which decodes as the update with its `seq` set, and is byte for byte the
-- record the detector produces (the protobuf encoding of `{seq}` followed by
-- body, i.e. the update with its seq: fields are written in tag order).
-- Returns the sequence number. Idempotent: an id seen before keeps its
-- number (and its entry). Expiry is the caller's (it must come after the
-- script's last write).
local function append_update(ids, seq_key, updates, owner, id, body, merchant)
  local seq = redis.call('HGET', ids, id)
  if seq then return tonumber(seq) end
  seq = redis.call('INCR', seq_key)
  if seq == 1 then redis.call('SETNX', owner, merchant) end
  redis.call('HSET', ids, id, seq)
  -- Field 1, varint; the common short numbers without a table.
  local prefix
  if seq < 128 then
    prefix = string.char(8, seq)
  elseif seq < 16384 then
    prefix = string.char(8, seq % 128 + 128, math.floor(seq / 128))
  else
    local m, bytes = seq, {8}
    while m >= 128 do bytes[#bytes + 1] = m % 128 + 128; m = math.floor(m / 128) end
    bytes[#bytes + 1] = m
    prefix = string.char(unpack(bytes)) -- at most 11 values
  end
  redis.call('ZADD', updates, seq, prefix .. body)
  return seq
end
