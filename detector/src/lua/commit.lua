-- The detector's one commit: the waybills of one partition that a consumer
-- batch or the timer loop folded, each on its own compare-and-set. A conflict
-- skips that waybill only (nothing of it is written) and the caller reloads
-- and re-applies it. `append_update` (order_log.lua) is prepended to this file.
-- KEYS: 1 timers zset, 2 outbox hash, then per waybill its state hash and
--       history hash, followed (inline sequencing only) by 4 order keys per
--       update output: ids hash, seq counter, updates zset, merchant.
-- ARGV: 1 inline sequencing ('1' / '0'), 2 waybill count,
--       3 expire-at of order keys (ms since the epoch; inline only), then per
--       waybill: expected version, state, registration ('' = unchanged),
--       expire-at of its state and history (ms since the epoch),
--       history count, (id, bytes)*, timer set count, (member, score)*,
--       timer delete count, (member)*, output count,
--       (kind 'u' | 'a', outbox id, body, merchant ('' for alerts))*
-- Returns per waybill {-1} on conflict, else {new version, then (inline only)
-- the sequence number of each update output, in order}. Inline sequencing is only used on a standalone server, where the
-- order keys may be touched from the partition's script; in Redis Cluster
-- sequence.lua appends each update in its order's slot after this commit.
-- Timer and outbox writes of all committed waybills go in a few commands each
-- (members and fields are distinct per waybill), which is most of what
-- batching saves.
--
-- Bounded: every multi-value command takes at most CHUNK values. Lua's
-- `unpack` fails past ~8 000 values, and it fails *after* the script's
-- earlier writes (Redis does not roll a script back), so an unbounded unpack
-- turned one large commit (a registration joining thousands of stored scans)
-- into a half-written state that every retry repeated.
local CHUNK = 512 -- even: pairs never straddle two commands
local call = redis.call
local inline = ARGV[1] == '1'
local order_expire = ARGV[3]

-- cmd(key, t[from..to]) in commands of at most CHUNK values.
local function chunked(cmd, key, t, from, to)
  while from <= to do
    local last = math.min(from + CHUNK - 1, to)
    call(cmd, key, unpack(t, from, last))
    from = last + 1
  end
end

local out, zadd, zrem, outbox = {}, {}, {}, {}
local nz, nr, no = 0, 0, 0
local expired, orders = {}, {}
local i, k = 4, 3
for w = 1, tonumber(ARGV[2]) do
  local state = KEYS[k]
  local history = KEYS[k + 1]
  local version = tonumber(call('HGET', state, 'v') or '0')
  local ok = version == tonumber(ARGV[i])
  local expire = ARGV[i + 3]
  if ok then
    if ARGV[i + 2] ~= '' then
      call('HSET', state, 'v', version + 1, 's', ARGV[i + 1], 'r', ARGV[i + 2])
    else
      call('HSET', state, 'v', version + 1, 's', ARGV[i + 1])
    end
    out[w] = {version + 1}
  else
    out[w] = {-1}
  end
  local res = out[w]
  i = i + 4
  local n = tonumber(ARGV[i]); i = i + 1
  if ok and n > 0 then chunked('HSET', history, ARGV, i, i + 2 * n - 1) end
  if ok then
    -- Lifecycle: absolute expiry from the detector's wall clock.
    call('PEXPIREAT', state, expire)
    call('PEXPIREAT', history, expire)
  end
  k = k + 2
  i = i + 2 * n
  n = tonumber(ARGV[i]); i = i + 1
  if ok then
    for j = i, i + 2 * n - 1, 2 do
      zadd[nz + 1] = ARGV[j + 1]
      zadd[nz + 2] = ARGV[j]
      nz = nz + 2
    end
  end
  i = i + 2 * n
  n = tonumber(ARGV[i]); i = i + 1
  if ok then
    for j = i, i + n - 1 do nr = nr + 1; zrem[nr] = ARGV[j] end
  end
  i = i + n
  n = tonumber(ARGV[i]); i = i + 1
  for _ = 1, n do
    local kind, id, body = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    if ok then
      outbox[no + 1] = id
      outbox[no + 2] = kind .. body
      no = no + 2
    end
    if inline and kind == 'u' then
      if ok then
        res[#res + 1] = append_update(KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3],
          id, body, ARGV[i + 3])
        if not expired[KEYS[k]] then
          expired[KEYS[k]] = true
          orders[#orders + 1] = k
        end
      end
      k = k + 4
    end
    i = i + 4
  end
end
if nz > 0 then chunked('ZADD', KEYS[1], zadd, 1, nz) end
if nr > 0 then chunked('ZREM', KEYS[1], zrem, 1, nr) end
if no > 0 then chunked('HSET', KEYS[2], outbox, 1, no) end
-- Order logs expire last: an expiry already in the past deletes the key, and a
-- later write of the same script would recreate it without one.
for _, o in ipairs(orders) do
  for j = o, o + 3 do call('PEXPIREAT', KEYS[j], order_expire) end
end
return out
