-- fetch: lease up to N waiting jobs to one host (waiting -> active), after promoting due
-- delayed and retry jobs, within the queue's rate limits. One call serves a whole batch; cost
-- per job is one HMGET and one HSET, the rest is per call. Respects pause. Fetch is the only
-- place a job starts, so the rate limits are enforced here, atomically for every host.
--
-- Rate limits (queue config; 0 = unlimited): at most `rate_max` starts per `rate_window_ms` in
-- the queue, and at most `group_rate_max` per `group_rate_window_ms` in each group. Each is an
-- exact sliding-window log: a sorted set of start times (`rate`, `g:<group>:rate`), trimmed to
-- the window on every fetch, one member per start (`<id>:<lease token>`, unique even when a
-- released job starts again with the same attempt number). A fetch starts at most
-- max - ZCARD, so no window of that length ever holds more than max starts.
--
-- Who goes first. Ungrouped jobs wait in `waiting`; a job with a group waits in its group's
-- set `g:<group>:waiting`. `groups` holds every group with waiting jobs, scored by when it may
-- start next: when it joined or was last served, or, at its rate limit, when its window frees.
-- Ready groups (score <= now) are served least recently served first; the ungrouped jobs take
-- part as one more participant (member '' of `groups` once served while others wait; absent,
-- they go first). The batch is shared out evenly: each round gives every participant that is
-- neither empty nor at its limit ceil(left / live) jobs, until the batch is full. Within a
-- group, and within the ungrouped jobs, it is priority, then FIFO.
--
-- KEYS[1] job prefix  KEYS[2] config  KEYS[3] waiting  KEYS[4] delayed  KEYS[5] retry
-- KEYS[6] active      KEYS[7] seq     KEYS[8] events   KEYS[9] wake     KEYS[10] rate
-- KEYS[11] group prefix (wasmq:{q}:g:)  KEYS[12] groups
-- ARGV[1] N (max jobs, 1..10000)  ARGV[2] lease_ms  ARGV[3] lease token (random, unique per
-- call)  ARGV[4] host id
-- Reply: {now_ms, lease_expires_at_ms, jobs, next_due_ms, dropped} where jobs is a list of
--   {id, handler, payload, attempt, max_attempts, timeout_ms, priority, created_at};
--   next_due_ms (only computed when fewer than N jobs were leased; 0 if none) is the earliest
--   time more may be leased: a delayed or retry job due, a rate-limited group's window or the
--   queue's window freeing; dropped counts waiting ids whose hash was missing or not 'waiting'.

local prefix = KEYS[1]
local K = { config = KEYS[2], waiting = KEYS[3], delayed = KEYS[4], retry = KEYS[5],
  active = KEYS[6], seq = KEYS[7], events = KEYS[8], wake = KEYS[9], rate = KEYS[10],
  gprefix = KEYS[11], groups = KEYS[12] }
local n = math.floor(tonumber(ARGV[1]) or 0)
local lease_ms = math.floor(tonumber(ARGV[2]) or 0)
local token, host = ARGV[3], ARGV[4] or ''
if n < 1 or n > 10000 or lease_ms < 1 or not token or token == '' then
  return redis.error_reply('WASMQ_INVALID fetch needs N in 1..10000, lease_ms >= 1 and a token')
end

local now = now_ms()
local cfg = read_config(K.config, { 'paused', 'events_maxlen', 'rate_max', 'rate_window_ms',
  'group_rate_max', 'group_rate_window_ms' })
local expires = now + lease_ms
if cfg.paused == 1 then return { now, expires, {}, 0, 0 } end

-- When the sliding-window log `key` (window `w`, already trimmed) frees its oldest start.
local function frees_at(key, w)
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return (tonumber(oldest[2]) or now) + w
end

local budget = n
local queue_limited = cfg.rate_max > 0 and cfg.rate_window_ms > 0
local queue_used = 0
if queue_limited then
  redis.call('ZREMRANGEBYSCORE', K.rate, '-inf', now - cfg.rate_window_ms)
  queue_used = redis.call('ZCARD', K.rate)
  budget = math.min(n, cfg.rate_max - queue_used)
  if budget <= 0 then
    -- At the limit: start nothing, and tell the worker when the window frees.
    return { now, expires, {}, frees_at(K.rate, cfg.rate_window_ms), 0 }
  end
end
local group_limited = cfg.group_rate_max > 0 and cfg.group_rate_window_ms > 0

promote(prefix, K, now, n, cfg.events_maxlen)

-- The participants of this round-robin, in turn order. Without a group limit every group is
-- ready, even one scored in the future while a limit was on.
-- A group served within this millisecond is still ready (scores below now + 1; see `turn`).
local ready_until = group_limited and string.format('(%d', now + 1) or '+inf'
local ready = redis.call('ZRANGEBYSCORE', K.groups, '-inf', ready_until, 'LIMIT', 0, budget)
local parts, plain_listed = {}, false
for _, group in ipairs(ready) do
  if group == '' then
    plain_listed = true
    parts[#parts + 1] = { group = '', key = K.waiting, cap = budget }
  else
    parts[#parts + 1] = { group = group, key = K.gprefix .. group .. ':waiting', cap = budget }
  end
end
if not plain_listed and (#ready < budget or not redis.call('ZSCORE', K.groups, '')) then
  table.insert(parts, 1, { group = '', key = K.waiting, cap = budget })
end
for _, p in ipairs(parts) do
  p.took = 0
  if group_limited and p.group ~= '' then
    p.rate = K.gprefix .. p.group .. ':rate'
    redis.call('ZREMRANGEBYSCORE', p.rate, '-inf', now - cfg.group_rate_window_ms)
    p.cap = cfg.group_rate_max - redis.call('ZCARD', p.rate)
  end
  p.done = p.cap <= 0
end

-- Share the budget out evenly (water-filling).
local taken, owner, left = {}, {}, budget
while left > 0 do
  local live = 0
  for _, p in ipairs(parts) do
    if not p.done then live = live + 1 end
  end
  if live == 0 then break end
  local share = math.ceil(left / live)
  for _, p in ipairs(parts) do
    if left == 0 then break end
    if not p.done then
      local want = math.min(share, left, p.cap - p.took)
      local popped = redis.call('ZPOPMIN', p.key, want)
      local got = #popped / 2
      for i = 1, #popped, 2 do
        taken[#taken + 1] = popped[i]
        owner[#taken] = p
      end
      p.visited = true
      p.took = p.took + got
      left = left - got
      if got < want then
        p.done, p.empty = true, true
      elseif p.took >= p.cap then
        p.done = true
      end
    end
  end
end

local jobs, active, events, starts, dropped = {}, {}, {}, {}, 0
for i, id in ipairs(taken) do
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
    if queue_limited then
      starts[#starts + 1] = now
      starts[#starts + 1] = id .. ':' .. token
    end
    local p = owner[i]
    if p.rate then
      p.starts = p.starts or {}
      p.starts[#p.starts + 1] = now
      p.starts[#p.starts + 1] = id .. ':' .. token
    end
  else
    -- An id without a waiting job behind it (hash deleted or rewritten by hand): dropping it
    -- is all that can be done; the count tells the caller to log it.
    dropped = dropped + 1
  end
end
zadd_pairs(K.active, active)
zadd_pairs(K.rate, starts)
emit(K.events, cfg.events_maxlen, 'active', events)

-- A served participant goes to the back of the line: behind every ready group, including
-- those that joined or were served in this same millisecond (1/1024 ms apart, exact in a
-- double at today's epoch ms), so ties never hand one group two turns in a row.
local tail = nil
local function turn()
  if not tail then
    local last = redis.call('ZREVRANGEBYSCORE', K.groups, string.format('(%d', now + 1), '-inf',
      'LIMIT', 0, 1, 'WITHSCORES')
    tail = math.max(now, tonumber(last[2]) or now)
  end
  tail = tail + 1 / 1024
  return tail
end

-- Each participant's next turn; `more` notes ready work left for another worker.
local more = false
for _, p in ipairs(parts) do
  if p.starts then
    zadd_pairs(p.rate, p.starts)
    -- A group's log is useless after a window: an idle group leaves nothing behind.
    redis.call('PEXPIRE', p.rate, cfg.group_rate_window_ms)
  end
  local limited = p.rate ~= nil and p.took >= p.cap
  if p.visited or limited then
    if p.visited and not p.empty and redis.call('ZCARD', p.key) == 0 then p.empty = true end
    if p.group == '' then
      if p.empty then
        if plain_listed then redis.call('ZREM', K.groups, '') end
      else
        more = true
        -- The ungrouped jobs' turn is recorded only while others take part too.
        if #parts > 1 or plain_listed then redis.call('ZADD', K.groups, turn(), '') end
      end
    elseif p.empty then
      redis.call('ZREM', K.groups, p.group)
    elseif limited then
      redis.call('ZADD', K.groups, frees_at(p.rate, cfg.group_rate_window_ms), p.group)
    else
      more = true
      redis.call('ZADD', K.groups, turn(), p.group)
    end
  else
    -- Not reached: the batch was full first. It keeps its place at the front.
    more = true
  end
end

local next_due = 0
local function sooner(t)
  if t and t > 0 and (next_due == 0 or t < next_due) then next_due = t end
end
if #taken < n then
  for _, set in ipairs({ K.delayed, K.retry }) do
    local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
    sooner(tonumber(first[2]))
  end
  if group_limited then
    -- The first rate-limited group whose window frees.
    local first = redis.call('ZRANGEBYSCORE', K.groups, string.format('(%d', now + 1), '+inf',
      'LIMIT', 0, 1, 'WITHSCORES')
    sooner(tonumber(first[2]))
  end
  if queue_limited and left == 0 then
    sooner(frees_at(K.rate, cfg.rate_window_ms))
  end
elseif more and (not queue_limited or cfg.rate_max - queue_used - #jobs > 0) then
  -- A full batch and more ready: pass the wake-up on to the next idle worker.
  wake(K.wake)
end
return { now, expires, jobs, next_due, dropped }
