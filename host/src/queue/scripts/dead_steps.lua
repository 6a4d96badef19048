-- dead_steps: keeps the durable steps of a queue's dead jobs under the queue's
-- `dead_step_bytes` (config; negative: no cap). Every host's watchman calls it each tick; any
-- number may run at once (each call is atomic).
--
-- 1. Counts the steps of the jobs dead-lettered since the last call (at most ARGV[1] of
--    them, and of MAX_FIELDS step fields in all, so that one call stays short; in the order
--    they died): the bytes of each one's steps hash (field names and
--    values), kept per job in `dead_steps_bytes` and in all in `dead_steps_meta`, the job in
--    `dead_steps` scored by when it died. A job dead before this ran at all is counted in
--    turn, from the oldest.
-- 2. While the count is over the cap, drops the steps of the job that died first of those
--    counted: deletes its steps hash and marks its record `steps_dropped` =
--    'dead_letter_byte_cap'. The job itself (its record, payload, history) is never deleted:
--    the dead-letter queue deletes nothing on its own. A job counted that is no longer dead
--    where it was (replayed, purged) only leaves the count.
--
-- KEYS[1] job prefix  KEYS[2] config  KEYS[3] dead  KEYS[4] steps prefix
-- KEYS[5] dead_steps (zset)  KEYS[6] dead_steps_bytes (hash)  KEYS[7] dead_steps_meta (hash:
--   `total` bytes counted, `mark` and `last`: the death time and id counted up to)
-- ARGV[1] most dead jobs to count in this call
-- Reply: {counted, dropped_ids, total_bytes}
-- Error (nothing written): 'WASMQ_WRONGTYPE <key> <type>' (type_error in lib.lua).

local prefix, steps = KEYS[1], KEYS[4]
local cfg, wrong = read_config(KEYS[2], { 'dead_step_bytes' })
wrong = wrong or type_error(KEYS[3], 'zset', KEYS[5], 'zset', KEYS[6], 'hash', KEYS[7], 'hash')
if wrong then return wrong end
local MAX_FIELDS = 20000
local limit = int_in(ARGV[1], 1, 100000) or 1000
local meta = redis.call('HMGET', KEYS[7], 'total', 'mark', 'last')
local total = int_in(meta[1], 0, 1e15) or 0
local mark = int_in(meta[2], 0, 1e15) or 0
local last = meta[3] or ''
local was = { total, mark, last }
local fields_seen = 0

-- The dead jobs after (mark, last), in the dead set's order (by death time, then id): from
-- just after `last` when it is still there at `mark`, else from `mark` on (the ones at `mark`
-- already counted are recognised by their score in `dead_steps`).
local new
local at = last ~= '' and redis.call('ZSCORE', KEYS[3], last)
if at and tonumber(at) == mark then
  local rank = redis.call('ZRANK', KEYS[3], last)
  new = redis.call('ZRANGE', KEYS[3], rank + 1, rank + limit, 'WITHSCORES')
else
  new = redis.call('ZRANGEBYSCORE', KEYS[3], mark, '+inf', 'WITHSCORES', 'LIMIT', 0, limit)
end

-- The bytes of a steps hash (0 when there is none, or the key holds something else).
local function steps_bytes(key)
  if type_of(key) ~= 'hash' then return 0 end
  local bytes = 0
  local fields = redis.call('HKEYS', key)
  fields_seen = fields_seen + #fields
  for _, field in ipairs(fields) do
    bytes = bytes + #field + redis.call('HSTRLEN', key, field)
  end
  return bytes
end

local counted = 0
for i = 1, #new, 2 do
  if fields_seen >= MAX_FIELDS then break end
  local id, died = new[i], tonumber(new[i + 1])
  mark, last = died, id
  local seen = redis.call('ZSCORE', KEYS[5], id)
  if not (seen and tonumber(seen) == died) then
    if seen then
      -- Counted when it died before (then replayed): counted again from now.
      total = total - (int_in(redis.call('HGET', KEYS[6], id), 0, 1e15) or 0)
    end
    local bytes = steps_bytes(steps .. id)
    if bytes > 0 then
      redis.call('ZADD', KEYS[5], died, id)
      redis.call('HSET', KEYS[6], id, bytes)
      total = total + bytes
      counted = counted + 1
    elseif seen then
      redis.call('ZREM', KEYS[5], id)
      redis.call('HDEL', KEYS[6], id)
    end
  end
end

local dropped = {}
local cap = cfg.dead_step_bytes
while cap >= 0 and total > cap do
  local oldest = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
  if not oldest[1] then
    total = 0
    break
  end
  local id, died = oldest[1], tonumber(oldest[2])
  total = total - (int_in(redis.call('HGET', KEYS[6], id), 0, 1e15) or 0)
  redis.call('ZREM', KEYS[5], id)
  redis.call('HDEL', KEYS[6], id)
  local now_at = redis.call('ZSCORE', KEYS[3], id)
  local state = redis.pcall('HGET', prefix .. id, 'state')
  if now_at and tonumber(now_at) == died and state == 'dead' then
    redis.call('DEL', steps .. id)
    redis.call('HSET', prefix .. id, 'steps_dropped', 'dead_letter_byte_cap')
    dropped[#dropped + 1] = id
  end
end
if total < 0 then total = 0 end
-- Written only when it moved: most calls find nothing new.
if total ~= was[1] or mark ~= was[2] or last ~= was[3] then
  redis.call('HSET', KEYS[7], 'total', total, 'mark', mark, 'last', last)
end
return { counted, dropped, total }
