-- kv: one call on one key-value bucket (`wasi:keyvalue`, see docs/capabilities.md).
-- KEYS: the bucket's values (hash: key -> value), its index (zset: every live key, scored by
-- the ms it expires at, +inf for never) and its size (string: bytes of keys and values).
-- ARGV: op, ttl_ms (0: entries never expire), max_keys, max_bytes, then the op's arguments:
--   get K...            -> {'ok', {value or nil, ...}}
--   set K1 V1 K2 V2...  -> {'ok'}, or {'refused', why} with nothing written (quotas)
--   delete K...         -> {'ok'}
--   incr K DELTA        -> {'ok', new value}, or {'invalid', why} (not a number, past 2^63-1)
--   list CURSOR         -> {'ok', next cursor, {key, ...}} (`ZSCAN`'s cursor; '0' at the end)
-- {'corrupt', why} when a key of the bucket holds another type (written by hand): nothing is
-- written then. The only write before the checks is the purge of up to 100 expired entries,
-- complete by itself. **Invariant:** no error is raised after the first write.
local V, T, N = KEYS[1], KEYS[2], KEYS[3]
local op = ARGV[1]
local ttl, max_keys, max_bytes = tonumber(ARGV[2]) or 0, tonumber(ARGV[3]), tonumber(ARGV[4])

local kinds = { 'hash', 'zset', 'string' }
for i = 1, 3 do
  local kind = redis.call('TYPE', KEYS[i]).ok
  if kind ~= 'none' and kind ~= kinds[i] then
    return { 'corrupt', 'key-value key ' .. KEYS[i] .. ' holds a ' .. kind .. ', not a ' .. kinds[i] }
  end
end
local used = redis.call('GET', N)
if used and not string.find(used, '^%d+$') then
  return { 'corrupt', 'key-value key ' .. N .. ' does not hold a byte count' }
end
used = tonumber(used) or 0
local now = now_ms()

-- Forgets `k` (its value, index entry and bytes); true if it was there.
local function forget(k)
  local len = redis.call('HSTRLEN', V, k)
  local had = redis.call('HDEL', V, k) == 1
  if had then used = used - len - #k end
  redis.call('ZREM', T, k)
  return had
end

local function save_used()
  if used <= 0 or redis.call('ZCARD', T) == 0 then
    redis.call('DEL', N)
  else
    redis.call('SET', N, used)
  end
end

local gone = redis.call('ZRANGEBYSCORE', T, '-inf', now, 'LIMIT', 0, 100)
for _, k in ipairs(gone) do forget(k) end
if #gone > 0 then save_used() end

-- The value of `k`, or nil when it is absent or expired.
local function live(k)
  local at = tonumber(redis.call('ZSCORE', T, k) or '')
  if not at or at <= now then return nil end
  return redis.call('HGET', V, k) or nil
end

-- Writes: each entry expires ttl after its last write, and so does the bucket's last key.
local function expiry() if ttl > 0 then return now + ttl end return '+inf' end
local function touch()
  for i = 1, 3 do
    if ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) else redis.call('PERSIST', KEYS[i]) end
  end
end

if op == 'get' then
  local out = {}
  for i = 5, #ARGV do out[#out + 1] = live(ARGV[i]) or false end
  return { 'ok', out }
elseif op == 'set' then
  local count, bytes, seen = redis.call('ZCARD', T), used, {}
  for i = 5, #ARGV - 1, 2 do
    local k, v = ARGV[i], ARGV[i + 1]
    if seen[k] then
      bytes = bytes - #k - seen[k]
    else
      local old = live(k)
      if old then
        bytes = bytes - #k - #old
      elseif redis.call('ZSCORE', T, k) then
        bytes = bytes - #k - redis.call('HSTRLEN', V, k) -- expired, not yet purged
      else
        count = count + 1
      end
    end
    seen[k] = #v
    bytes = bytes + #k + #v
  end
  if count > max_keys then
    return { 'refused', 'bucket quota: at most ' .. max_keys .. ' keys' }
  end
  if bytes > max_bytes then
    return { 'refused', 'bucket quota: at most ' .. max_bytes .. ' bytes of keys and values' }
  end
  local at = expiry()
  for i = 5, #ARGV - 1, 2 do
    local k, v = ARGV[i], ARGV[i + 1]
    forget(k)
    redis.call('HSET', V, k, v)
    redis.call('ZADD', T, at, k)
    used = used + #k + #v
  end
  save_used()
  touch()
  return { 'ok' }
elseif op == 'delete' then
  for i = 5, #ARGV do forget(ARGV[i]) end
  save_used()
  return { 'ok' }
elseif op == 'incr' then
  local k, delta = ARGV[5], ARGV[6]
  local old = live(k) or '0'
  if not string.find(old, '^%d+$') or not string.find(delta, '^%d+$') then
    return { 'invalid', 'increment: the value is not a decimal number' }
  end
  -- Decimal addition on the digits: Lua's numbers are doubles, exact only to 2^53.
  local digits, carry, i, j = {}, 0, #old, #delta
  while i > 0 or j > 0 or carry > 0 do
    local d = carry + (i > 0 and tonumber(string.sub(old, i, i)) or 0)
      + (j > 0 and tonumber(string.sub(delta, j, j)) or 0)
    digits[#digits + 1] = d % 10
    carry = math.floor(d / 10)
    i, j = i - 1, j - 1
  end
  local new = (string.gsub(string.reverse(table.concat(digits)), '^0+(%d)', '%1'))
  if #new > 19 or (#new == 19 and new > '9223372036854775807') then
    return { 'invalid', 'increment: the counter would pass 2^63-1' }
  end
  -- Whatever `k` held (live, or expired and not yet purged) is replaced.
  local indexed = redis.call('ZSCORE', T, k) ~= false
  local count = redis.call('ZCARD', T) + (indexed and 0 or 1)
  local bytes = used + #k + #new
  if indexed then bytes = bytes - #k - redis.call('HSTRLEN', V, k) end
  if count > max_keys then
    return { 'refused', 'bucket quota: at most ' .. max_keys .. ' keys' }
  end
  if bytes > max_bytes then
    return { 'refused', 'bucket quota: at most ' .. max_bytes .. ' bytes of keys and values' }
  end
  forget(k)
  redis.call('HSET', V, k, new)
  redis.call('ZADD', T, expiry(), k)
  used = used + #k + #new
  save_used()
  touch()
  return { 'ok', new }
elseif op == 'list' then
  local page = redis.call('ZSCAN', T, ARGV[5], 'COUNT', 100)
  local keys = {}
  for i = 1, #page[2] - 1, 2 do
    if tonumber(page[2][i + 1]) > now then keys[#keys + 1] = page[2][i] end
  end
  return { 'ok', page[1], keys }
end
return { 'invalid', 'unknown key-value operation ' .. tostring(op) }
