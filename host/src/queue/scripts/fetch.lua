-- fetch: lease up to N waiting jobs to one host (waiting -> active), after promoting due
-- delayed and retry jobs. One call serves a whole batch; cost per job is one HMGET and one
-- HSET, the rest is per call. Respects pause.
--
-- KEYS[1] job prefix  KEYS[2] config  KEYS[3] waiting  KEYS[4] delayed  KEYS[5] retry
-- KEYS[6] active      KEYS[7] seq     KEYS[8] events   KEYS[9] wake
-- ARGV[1] N (max jobs, 1..10000)  ARGV[2] lease_ms  ARGV[3] lease token (random, unique per
-- call)  ARGV[4] host id
-- Reply: {now_ms, lease_expires_at_ms, jobs, next_due_ms, dropped} where jobs is a list of
--   {id, handler, payload, attempt, max_attempts, timeout_ms, priority, created_at}, next_due_ms
--   is the earliest due time in delayed/retry (0 if none; only computed when fewer than N jobs
--   were leased) and dropped counts waiting ids whose hash was missing or not 'waiting'.

local prefix = KEYS[1]
local K = { config = KEYS[2], waiting = KEYS[3], delayed = KEYS[4], retry = KEYS[5],
  active = KEYS[6], seq = KEYS[7], events = KEYS[8], wake = KEYS[9] }
local n = math.floor(tonumber(ARGV[1]) or 0)
local lease_ms = math.floor(tonumber(ARGV[2]) or 0)
local token, host = ARGV[3], ARGV[4] or ''
if n < 1 or n > 10000 or lease_ms < 1 or not token or token == '' then
  return redis.error_reply('WASMQ_INVALID fetch needs N in 1..10000, lease_ms >= 1 and a token')
end

local now = now_ms()
local cfg = read_config(K.config, { 'paused', 'events_maxlen' })
local expires = now + lease_ms
if cfg.paused == 1 then return { now, expires, {}, 0, 0 } end

promote(prefix, K, now, n, cfg.events_maxlen)

local popped = redis.call('ZPOPMIN', K.waiting, n)
local jobs, active, events, dropped = {}, {}, {}, 0
for i = 1, #popped, 2 do
  local id = popped[i]
  local key = prefix .. id
  local f = redis.call('HMGET', key, 'state', 'handler', 'payload', 'attempt', 'max_attempts',
    'timeout_ms', 'priority', 'created_at')
  if f[1] == 'waiting' and f[2] then
    local attempt = (tonumber(f[4]) or 0) + 1
    redis.call('HSET', key, 'state', 'active', 'attempt', attempt, 'lease_token', token,
      'host', host, 'started_at', now)
    jobs[#jobs + 1] = { id, f[2], f[3] or '', attempt, tonumber(f[5]) or 1,
      tonumber(f[6]) or 0, tonumber(f[7]) or 0, tonumber(f[8]) or 0 }
    active[#active + 1] = expires
    active[#active + 1] = id
    events[#events + 1] = { id, attempt }
  else
    -- An id without a waiting job behind it (hash deleted or rewritten by hand): dropping it
    -- is all that can be done; the count tells the caller to log it.
    dropped = dropped + 1
  end
end
zadd_pairs(K.active, active)
emit(K.events, cfg.events_maxlen, 'active', events)

local next_due = 0
if #popped / 2 < n then
  for _, set in ipairs({ K.delayed, K.retry }) do
    local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
    if first[2] and (next_due == 0 or tonumber(first[2]) < next_due) then
      next_due = tonumber(first[2])
    end
  end
elseif redis.call('ZCARD', K.waiting) > 0 then
  -- A full batch and more waiting: pass the wake-up on to the next idle worker.
  wake(K.wake)
end
return { now, expires, jobs, next_due, dropped }
