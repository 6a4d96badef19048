-- enqueue: add N jobs to a queue, each to `waiting` or (run_at in the future) `delayed`.
-- Standalone (no prelude), so producers in any language can EVAL it as it is.
-- wasmq protocol 3; a stable contract for producers (docs/protocol.md, "Stable contract").
--
-- KEYS[1] wasmq:{q}:job:   (job hash prefix)   KEYS[2] wasmq:{q}:config
-- KEYS[3] wasmq:{q}:waiting                      KEYS[4] wasmq:{q}:delayed
-- KEYS[5] wasmq:{q}:seq                          KEYS[6] wasmq:{q}:events
-- KEYS[7] wasmq:{q}:wake
-- KEYS[8] wasmq:{q}:g:     (group key prefix)   KEYS[9] wasmq:{q}:groups
--         (needed only for jobs with a group: a call with 7 keys enqueues ungrouped jobs)
-- KEYS[10] wasmq:{q}:dedupe:  (dedupe key prefix)  KEYS[11] wasmq:{q}:debounce:  (debounce
--         key prefix) (needed only for jobs with a dedupe_key or a debounce_key: a call with 7
--         or 9 keys enqueues jobs without them, and its replies are as before)
-- ARGV[1] N, the number of jobs (1 to 10000); then, per job: id, P (number of field/value
--         pairs, 0 to 64), then P field/value pairs from: handler (required), payload,
--         priority, delay_ms, run_at_ms, max_attempts, timeout_ms, backoff, backoff_ms,
--         backoff_cap_ms, backoff_jitter, group, depth, traceparent, tracestate,
--         expires_in_ms, expires_at_ms, dedupe_key, dedupe_ttl_ms, debounce_key, debounce_ms,
--         debounce_max_wait_ms; each field at most once. `depth` (a child job's generation,
--         0..4294967295, written by hosts; absent reads as 0) is stored as given.
-- A job that gives max_attempts, or any backoff field, keeps that part of its retry policy;
-- for the part it leaves out, the hash records the queue default (3 attempts, exponential 1 s)
-- and the handler's own policy, if its deployment has one, applies instead (see fail_job in
-- lib.lua). The hash field `own_policy` lists what the job set: 'attempts', 'backoff', both
-- (comma-separated) or nothing.
-- A job with a group waits in its group's set `wasmq:{q}:g:<group>:waiting`, not in `waiting`;
-- the group joins `groups` (the round-robin that fetch.lua serves) unless it is there already.
-- Expiry: `expires_in_ms` (from now) or `expires_at_ms` (Unix ms), not both, is stored as the
-- job field `expires_at`: a job not started by then is dead-lettered with outcome `expired`
-- when a fetch would lease it (lease_jobs in lib.lua), at every lease: a retry, a released job
-- or a durable sleep's wake-up due after it expires too.
-- Throttle: a job with `dedupe_key` (1-128 printable ASCII) needs `dedupe_ttl_ms` (1..1e12).
-- While `wasmq:{q}:dedupe:<key>` (a string: the id of the job that took the key, expiring
-- after the TTL) lives, another job with that key is not created, whatever became of the first
-- (waiting, running, completed, dead or gone): its reply is {<first id>, 'deduplicated',
-- <its state, or '' when its hash is gone>}.
-- Debounce: a job with `debounce_key` (1-128 printable ASCII) needs `debounce_ms` (1..1e12)
-- and may give `debounce_max_wait_ms` (1..1e12); it takes no delay_ms or run_at_ms (its start
-- is the window's end) and no dedupe_key. `wasmq:{q}:debounce:<key>` (a string, no TTL) names
-- the key's pending job: one not started yet (state delayed or waiting, attempt 0, its field
-- `debounce_key` the same key). With none, the job is created delayed to now + debounce_ms (or
-- its first enqueue + max wait when sooner), and takes the key. With one, nothing is created:
-- the pending job's payload becomes this job's and its start moves to now + debounce_ms, never
-- past `debounce_until` (its first enqueue + the max wait the first enqueue gave); the rest of
-- this job (handler, priority, ...) is not used. The reply is {<pending id>, 'debounced',
-- <its state>}. A running job is never touched: an enqueue then creates a new pending job.
-- A fetch deletes the key when it leases the job it names.
-- Reply: one {id, 'created' | 'exists', state} per job, in order (or, for the fields above,
-- {id of the job that stands for it, 'deduplicated' | 'debounced', state}).
-- The queue's `max_waiting` (config; absent or 0: no limit) bounds its backlog: the jobs not
-- finished, waiting (grouped or not), delayed, retrying or active. Only enqueue (and a replay)
-- adds to that number, so it never passes the limit. A call whose new jobs would take the
-- backlog past it is refused whole.
-- Errors (nothing is written): 'WASMQ_INVALID <reason>',
--   'WASMQ_PAYLOAD_TOO_LARGE <id> <size> <limit>',
--   'WASMQ_QUEUE_FULL <queue> <backlog> <new jobs> <max_waiting>',
--   'WASMQ_WRONGTYPE <key> <type>' (a key of
--   the queue holds another type than the protocol's: written by hand, or a damaged Redis).
-- All jobs, and the type of every key written, are checked before anything is written: a
-- batch is enqueued whole or not at all, and no error stops the script after a write.

local function invalid(id, reason)
  return redis.error_reply('WASMQ_INVALID job ' .. tostring(id) .. ': ' .. reason)
end
local function wrong_type(key, found)
  return redis.error_reply('WASMQ_WRONGTYPE ' .. key .. ' ' .. found)
end

-- The keys must be the queue's own, in the documented order: a key out of place would be
-- written as if it were another (the job hashes into the config, say).
local KEY_NAMES = { 'job:', 'config', 'waiting', 'delayed', 'seq', 'events', 'wake', 'g:',
  'groups', 'dedupe:', 'debounce:' }
if #KEYS ~= 7 and #KEYS ~= 9 and #KEYS ~= 11 then
  return invalid('-', 'give the 11 keys of the queue (or its first 7 or 9), got ' .. #KEYS)
end
local queue = string.match(KEYS[1], '^wasmq:{([%w%-_.:]+)}:job:$')
if queue == nil or #queue > 128 then
  return invalid('-', 'KEYS[1] must be wasmq:{<queue>}:job:, got ' .. KEYS[1])
end
for i = 2, #KEYS do
  local want = 'wasmq:{' .. queue .. '}:' .. KEY_NAMES[i]
  if KEYS[i] ~= want then
    return invalid('-', 'KEYS[' .. i .. '] must be ' .. want .. ', got ' .. KEYS[i])
  end
end

local prefix = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_text = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
local cfg = redis.pcall('HMGET', KEYS[2], 'max_payload_bytes', 'events_maxlen', 'paused',
  'max_waiting')
if cfg.err then return wrong_type(KEYS[2], redis.call('TYPE', KEYS[2]).ok) end
local max_payload = tonumber(cfg[1]) or 524288
local events_maxlen = tonumber(cfg[2]) or 10000
local paused = cfg[3] == '1'
local max_waiting = tonumber(cfg[4]) or 0

-- Integers must be plain decimal ('5', '-3'); they are stored as given, unformatted, and the
-- hosts read them with Rust's integer parse, which takes no '-' at all for an unsigned field:
-- so a minus sign only where the range has negatives ('-0' is no millisecond count).
local function integer(value, lo, hi)
  if type(value) ~= 'string' then return nil end
  if not string.find(value, lo < 0 and '^%-?%d+$' or '^%d+$') then return nil end
  local n = tonumber(value)
  if n < lo or n > hi then return nil end
  return n
end
-- A decimal fraction in 0..1: digits with at most one point ('0.5', '1', '.5', '1.'), an
-- optional sign and exponent ('1e-1'). Stored as given, it is read with Rust's f64 parse; Lua's
-- tonumber alone would also take spaces around it, hex ('0x0.8'), 'nan' and text after a NUL.
local function fraction(value)
  local mantissa, exponent = string.match(value, '^[+-]?([%d.]*)(.*)$')
  if not string.find(mantissa, '^%d*%.?%d*$') or not string.find(mantissa, '%d') then
    return nil
  end
  if exponent ~= '' and not string.find(exponent, '^[eE][+-]?%d+$') then return nil end
  local n = tonumber(value)
  if n == nil or n < 0 or n > 1 then return nil end
  return n
end
local function name_ok(s)
  return #s >= 1 and #s <= 128 and string.find(s, '^[%w%p]+$') ~= nil
end
-- A W3C traceparent (version-traceid-parentid-flags, lowercase hex), version not ff, ids not
-- all zeros; a tracestate is 1-512 printable ASCII characters and needs a traceparent.
local HEX = '[0-9a-f]'
local TRACEPARENT = '^' .. string.rep(HEX, 2) .. '%-' .. string.rep(HEX, 32) .. '%-'
  .. string.rep(HEX, 16) .. '%-' .. string.rep(HEX, 2) .. '$'
local function traceparent_ok(s)
  return string.find(s, TRACEPARENT) ~= nil and string.sub(s, 1, 2) ~= 'ff'
    and string.sub(s, 4, 35) ~= string.rep('0', 32) and string.sub(s, 37, 52) ~= string.rep('0', 16)
end

local n = integer(ARGV[1], 1, 10000)
if n == nil then return invalid('-', 'ARGV[1] must be the number of jobs, 1 to 10000') end
local jobs, seen, pos = {}, {}, 2
for i = 1, n do
  local id = ARGV[pos]
  local pairs_n = integer(ARGV[pos + 1], 0, 64)
  if id == nil or ARGV[pos + 1] == nil then return invalid(i, 'truncated argument list') end
  if pairs_n == nil then
    return invalid(id, 'the number of field/value pairs must be 0 to 64')
  end
  if not name_ok(id) then return invalid(id, 'id must be 1-128 printable ASCII characters') end
  local job = { id = id, payload = '', priority = 0, max_attempts = 3, timeout_ms = 0,
    backoff = 'exponential', backoff_ms = 1000, backoff_cap_ms = 3600000, backoff_jitter = '0.2' }
  -- The stored text of each integer field (defaults, or the producer's own digits).
  local text = { priority = '0', max_attempts = '3', timeout_ms = '0', backoff_ms = '1000',
    backoff_cap_ms = '3600000' }
  job.text = text
  local own_attempts, own_backoff = false, false
  -- A field given twice is refused rather than letting the last one win unnoticed.
  local given = {}
  for p = 0, pairs_n - 1 do
    local field, value = ARGV[pos + 2 + 2 * p], ARGV[pos + 3 + 2 * p]
    if value == nil then return invalid(id, 'truncated argument list') end
    if given[field] then return invalid(id, 'field ' .. field .. ' given twice') end
    given[field] = true
    if field == 'handler' or field == 'payload' or field == 'backoff' then
      job[field] = value
      if field == 'backoff' then own_backoff = true end
    elseif field == 'group' then
      if not name_ok(value) then
        return invalid(id, 'group must be 1-128 printable ASCII characters')
      end
      if KEYS[9] == nil then return invalid(id, 'a job with a group needs KEYS[8] and KEYS[9]') end
      job.group = value
    elseif field == 'traceparent' then
      if not traceparent_ok(value) then
        return invalid(id, 'traceparent must be a W3C traceparent (2, 32, 16 and 2 lowercase hex '
          .. 'digits joined by -, ids not all zeros)')
      end
      job.traceparent = value
    elseif field == 'tracestate' then
      if #value < 1 or #value > 512 or not string.find(value, '^[\32-\126]+$') then
        return invalid(id, 'tracestate must be 1-512 printable ASCII characters')
      end
      job.tracestate = value
    elseif field == 'priority' then
      job.priority = integer(value, -1000, 1000)
      if job.priority == nil then
        return invalid(id, 'priority must be an integer in -1000..1000')
      end
      text.priority = value
    elseif field == 'max_attempts' then
      job.max_attempts = integer(value, 1, 1000)
      if job.max_attempts == nil then
        return invalid(id, 'max_attempts must be an integer in 1..1000')
      end
      text.max_attempts = value
      own_attempts = true
    elseif field == 'dedupe_key' or field == 'debounce_key' then
      if not name_ok(value) then
        return invalid(id, field .. ' must be 1-128 printable ASCII characters')
      end
      if KEYS[11] == nil then return invalid(id, 'a job with a ' .. field .. ' needs 11 keys') end
      job[field] = value
    elseif field == 'dedupe_ttl_ms' or field == 'debounce_ms'
        or field == 'debounce_max_wait_ms' or field == 'expires_in_ms' then
      job[field] = integer(value, 1, 1e12)
      if job[field] == nil then return invalid(id, field .. ' must be an integer in 1..1e12') end
    elseif field == 'expires_at_ms' then
      job[field] = integer(value, 0, 1e15)
      if job[field] == nil then return invalid(id, field .. ' must be a non-negative integer') end
      text.expires_at = value
    elseif field == 'delay_ms' or field == 'run_at_ms' or field == 'timeout_ms'
        or field == 'backoff_ms' or field == 'backoff_cap_ms' then
      job[field] = integer(value, 0, 1e15)
      if job[field] == nil then return invalid(id, field .. ' must be a non-negative integer') end
      text[field] = value
      if field == 'backoff_ms' or field == 'backoff_cap_ms' then own_backoff = true end
    elseif field == 'depth' then
      if integer(value, 0, 4294967295) == nil then
        return invalid(id, 'depth must be an integer in 0..4294967295')
      end
      job.depth = value
    elseif field == 'backoff_jitter' then
      if fraction(value) == nil then
        return invalid(id, 'backoff_jitter must be a decimal number in 0..1')
      end
      job.backoff_jitter = value
      own_backoff = true
    else
      return invalid(id, 'unknown field ' .. tostring(field))
    end
  end
  local own = {}
  if own_attempts then own[#own + 1] = 'attempts' end
  if own_backoff then own[#own + 1] = 'backoff' end
  job.own_policy = table.concat(own, ',')
  if job.tracestate and not job.traceparent then
    return invalid(id, 'tracestate needs a traceparent')
  end
  if job.handler == nil or not name_ok(job.handler) then
    return invalid(id, 'handler must be 1-128 printable ASCII characters')
  end
  if job.backoff ~= 'exponential' and job.backoff ~= 'fixed' then
    return invalid(id, 'backoff must be exponential or fixed')
  end
  -- The default cap (1 h) is no cap the producer chose: a longer exponential base is its own cap.
  if job.backoff == 'exponential' and not given.backoff_cap_ms
      and job.backoff_ms > job.backoff_cap_ms then
    job.backoff_cap_ms = job.backoff_ms
    text.backoff_cap_ms = text.backoff_ms
  end
  if job.backoff == 'exponential' and job.backoff_cap_ms < job.backoff_ms then
    return invalid(id, 'backoff_cap_ms must not be below backoff_ms')
  end
  if job.delay_ms ~= nil and job.run_at_ms ~= nil then
    return invalid(id, 'give delay_ms or run_at_ms, not both')
  end
  if job.expires_in_ms ~= nil and job.expires_at_ms ~= nil then
    return invalid(id, 'give expires_in_ms or expires_at_ms, not both')
  end
  if (job.dedupe_key == nil) ~= (job.dedupe_ttl_ms == nil) then
    return invalid(id, 'dedupe_key and dedupe_ttl_ms go together')
  end
  if (job.debounce_key == nil) ~= (job.debounce_ms == nil) then
    return invalid(id, 'debounce_key and debounce_ms go together')
  end
  if job.debounce_max_wait_ms ~= nil and job.debounce_key == nil then
    return invalid(id, 'debounce_max_wait_ms needs a debounce_key')
  end
  if job.debounce_key ~= nil and (job.delay_ms ~= nil or job.run_at_ms ~= nil
      or job.dedupe_key ~= nil) then
    return invalid(id, 'a debounce_key takes no delay_ms, run_at_ms or dedupe_key')
  end
  if #job.payload > max_payload then
    return redis.error_reply('WASMQ_PAYLOAD_TOO_LARGE ' .. id .. ' ' .. #job.payload .. ' '
      .. max_payload)
  end
  jobs[i] = job
  pos = pos + 2 + 2 * pairs_n
end
if ARGV[pos] ~= nil then return invalid('-', 'more arguments than the jobs declared') end

-- A string key's value (nil when absent), or the WASMQ_WRONGTYPE error for another type.
local function get_string(key)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' and v.err then return nil, wrong_type(key, redis.call('TYPE', key).ok) end
  return v or nil
end
-- The fields of the job `id` that debounce reads: nil when the hash is gone.
local PENDING_FIELDS = { 'state', 'attempt', 'debounce_key', 'debounce_until', 'group' }
local function read_pending(id)
  local key = prefix .. id
  local f = redis.pcall('HMGET', key, unpack(PENDING_FIELDS))
  if f.err then return nil, wrong_type(key, redis.call('TYPE', key).ok) end
  return f
end

-- Dedupe: an id that exists (or repeats within the batch) writes nothing; so does a job whose
-- dedupe_key is taken, or whose debounce_key has a pending job (that job is updated instead).
-- `taken`: dedupe keys taken in this call; `pending`: per debounce key, the pending job
-- (a fresh one of this call, or an update of a stored one).
local replies, fresh, taken, pending, updates = {}, {}, {}, {}, {}
for i, job in ipairs(jobs) do
  local existing = seen[job.id]
  if not existing then
    existing = redis.pcall('HGET', prefix .. job.id, 'state')
    if type(existing) == 'table' and existing.err then
      return wrong_type(prefix .. job.id, redis.call('TYPE', prefix .. job.id).ok)
    end
  end
  local holder, problem
  if not existing and job.dedupe_key then
    holder = taken[job.dedupe_key]
    if not holder then
      holder, problem = get_string(KEYS[10] .. job.dedupe_key)
      if problem then return problem end
      if holder then
        local state = redis.pcall('HGET', prefix .. holder, 'state')
        if type(state) == 'table' then state = nil end
        holder = { id = holder, state = state or '' }
        taken[job.dedupe_key] = holder
      end
    end
  end
  local target
  if not existing and job.debounce_key then
    target = pending[job.debounce_key]
    if not target then
      local pid
      pid, problem = get_string(KEYS[11] .. job.debounce_key)
      if problem then return problem end
      if pid then
        local f
        f, problem = read_pending(pid)
        if problem then return problem end
        if (f[1] == 'delayed' or f[1] == 'waiting') and f[2] == '0'
            and f[3] == job.debounce_key then
          local until_ms = tonumber(f[4])
          target = { id = pid, state = f[1], group = f[5], until_ms = until_ms }
          updates[#updates + 1] = target
          pending[job.debounce_key] = target
        end
      end
    end
  end
  if existing then
    replies[i] = { job.id, 'exists', existing }
  elseif holder then
    replies[i] = { holder.id, 'deduplicated', holder.state }
  elseif target then
    -- The last enqueue wins: its payload, and a start pushed back, within the max wait.
    target.payload = job.payload
    target.run_at = now + job.debounce_ms
    -- Past the max wait the job is due (since its debounce_until).
    if target.until_ms and target.until_ms < target.run_at then target.run_at = target.until_ms end
    -- A stored job already delayed stays so (due now, the next fetch promotes it).
    target.new_state = (target.run_at > now or target.state == 'delayed') and 'delayed'
      or 'waiting'
    if target.fresh then
      target.fresh.payload = target.payload
      target.fresh.run_at = target.run_at
      target.fresh.state = target.new_state
      seen[target.id] = target.new_state
    end
    replies[i] = { target.id, 'debounced', target.new_state }
  else
    if job.debounce_key then
      job.debounce_until = job.debounce_max_wait_ms and now + job.debounce_max_wait_ms
      job.delay_ms = math.min(job.debounce_ms, job.debounce_max_wait_ms or job.debounce_ms)
      pending[job.debounce_key] = { id = job.id, fresh = job, until_ms = job.debounce_until }
    end
    if job.dedupe_key then
      taken[job.dedupe_key] = { id = job.id, state = '' }
    end
    -- A run-at in the past means now: the job is due, and its run_at says when it became so.
    job.run_at = math.max(job.run_at_ms or (now + (job.delay_ms or 0)), now)
    job.state = job.run_at > now and 'delayed' or 'waiting'
    if job.dedupe_key then taken[job.dedupe_key].state = job.state end
    seen[job.id] = job.state
    fresh[#fresh + 1] = job
    replies[i] = { job.id, 'created', job.state }
  end
end
-- A reply names the state a job has when the call ends (a job of this call that a later one
-- debounced, say).
for _, reply in ipairs(replies) do
  if reply[2] ~= 'exists' and seen[reply[1]] then reply[3] = seen[reply[1]] end
end
if #fresh == 0 and #updates == 0 then return replies end

-- The backlog limit, read before any write (a key of another type answers an error here).
if max_waiting > 0 and #fresh > 0 then
  local function card(key)
    local n = redis.pcall('ZCARD', key)
    if type(n) == 'table' then return nil, wrong_type(key, redis.call('TYPE', key).ok) end
    return n
  end
  local backlog, problem = 0, nil
  -- The group keys are named from the queue (a call with 7 keys may still find groups).
  local gprefix = 'wasmq:{' .. queue .. '}:g:'
  local groups = redis.pcall('ZRANGE', 'wasmq:{' .. queue .. '}:groups', 0, -1)
  if groups.err then
    return wrong_type('wasmq:{' .. queue .. '}:groups',
      redis.call('TYPE', 'wasmq:{' .. queue .. '}:groups').ok)
  end
  local sets = { KEYS[3], KEYS[4], 'wasmq:{' .. queue .. '}:retry',
    'wasmq:{' .. queue .. '}:active' }
  for _, group in ipairs(groups) do
    if group ~= '' then sets[#sets + 1] = gprefix .. group .. ':waiting' end
  end
  for _, key in ipairs(sets) do
    local n
    n, problem = card(key)
    if problem then return problem end
    backlog = backlog + n
  end
  if backlog + #fresh > max_waiting then
    return redis.error_reply('WASMQ_QUEUE_FULL ' .. queue .. ' ' .. backlog .. ' ' .. #fresh
      .. ' ' .. string.format('%d', max_waiting))
  end
end

-- Every key this call writes (but the events stream and the wake list, which are skipped when
-- damaged) must be of its type before the first write: Redis keeps a script's writes when a
-- later command fails, so a WRONGTYPE half-way would leave jobs in no set.
local function type_problem(key, want)
  local found = redis.call('TYPE', key).ok
  if found ~= 'none' and found ~= want then return wrong_type(key, found) end
end
local problem = type_problem(KEYS[3], 'zset') or type_problem(KEYS[4], 'zset')
  or type_problem(KEYS[5], 'string')
if problem then return problem end
local checked = {}
for _, job in ipairs(fresh) do
  if job.group and job.state == 'waiting' and not checked[job.group] then
    checked[job.group] = true
    problem = type_problem(KEYS[9], 'zset')
      or type_problem(KEYS[8] .. job.group .. ':waiting', 'zset')
    if problem then return problem end
  end
end
for _, target in ipairs(updates) do
  if target.state == 'waiting' and target.group and target.group ~= '' then
    problem = type_problem(KEYS[8] .. target.group .. ':waiting', 'zset')
      or type_problem(KEYS[9], 'zset')
    if problem then return problem end
  end
end

-- Waiting score: higher priority first, then FIFO by the queue's sequence (see protocol.md).
-- INCRBY is the first write, and writes nothing when `seq` is not an integer.
local last_seq = #fresh > 0 and redis.pcall('INCRBY', KEYS[5], #fresh) or 0
if type(last_seq) == 'table' and last_seq.err then
  return wrong_type(KEYS[5], 'string (not an integer)')
end
-- The debounced jobs stored before this call: payload and start (a waiting one whose start
-- moves back goes back to delayed). The keys were checked above.
for _, target in ipairs(updates) do
  local key = prefix .. target.id
  if target.new_state == 'delayed' then
    if target.state == 'waiting' then
      if target.group and target.group ~= '' then
        -- A group is in `groups` exactly while its waiting set is not empty.
        local set = KEYS[8] .. target.group .. ':waiting'
        redis.call('ZREM', set, target.id)
        if redis.call('ZCARD', set) == 0 then redis.call('ZREM', KEYS[9], target.group) end
      else
        redis.call('ZREM', KEYS[3], target.id)
      end
    end
    redis.call('HSET', key, 'payload', target.payload, 'state', 'delayed', 'run_at',
      string.format('%d', target.run_at))
    redis.call('ZADD', KEYS[4], target.run_at, target.id)
  else
    redis.call('HSET', key, 'payload', target.payload, 'run_at', string.format('%d', target.run_at))
  end
end
if #fresh == 0 then return replies end
local waiting, delayed, events, grouped, group_order = {}, {}, {}, {}, {}
for i, job in ipairs(fresh) do
  local seq = last_seq - #fresh + i
  local text = job.text
  local fields = { 'id', job.id, 'handler', job.handler,
    'payload', job.payload, 'state', job.state, 'priority', text.priority, 'seq', seq,
    'attempt', '0', 'max_attempts', text.max_attempts, 'timeout_ms', text.timeout_ms,
    'backoff', job.backoff, 'backoff_ms', text.backoff_ms, 'backoff_cap_ms', text.backoff_cap_ms,
    'backoff_jitter', job.backoff_jitter, 'created_at', now_text,
    'run_at', job.run_at == now and now_text or job.run_at }
  if job.own_policy ~= '' then
    fields[#fields + 1] = 'own_policy'
    fields[#fields + 1] = job.own_policy
  end
  if job.group then
    fields[#fields + 1] = 'group'
    fields[#fields + 1] = job.group
  end
  if job.depth then
    fields[#fields + 1] = 'depth'
    fields[#fields + 1] = job.depth
  end
  if job.expires_in_ms or job.expires_at_ms then
    fields[#fields + 1] = 'expires_at'
    fields[#fields + 1] = text.expires_at or string.format('%d', now + job.expires_in_ms)
  end
  if job.debounce_key then
    fields[#fields + 1] = 'debounce_key'
    fields[#fields + 1] = job.debounce_key
    if job.debounce_until then
      fields[#fields + 1] = 'debounce_until'
      fields[#fields + 1] = string.format('%d', job.debounce_until)
    end
    redis.call('SET', KEYS[11] .. job.debounce_key, job.id)
  end
  if job.dedupe_key then
    fields[#fields + 1] = 'dedupe_key'
    fields[#fields + 1] = job.dedupe_key
    redis.call('SET', KEYS[10] .. job.dedupe_key, job.id, 'PX', job.dedupe_ttl_ms)
  end
  for _, name in ipairs({ 'traceparent', 'tracestate' }) do
    if job[name] then
      fields[#fields + 1] = name
      fields[#fields + 1] = job[name]
    end
  end
  redis.call('HSET', prefix .. job.id, unpack(fields))
  if job.state == 'waiting' and job.group then
    local list = grouped[job.group]
    if not list then
      list = {}
      grouped[job.group] = list
      group_order[#group_order + 1] = job.group
    end
    list[#list + 1] = (1000 - job.priority) * 4398046511104 + seq
    list[#list + 1] = job.id
  elseif job.state == 'waiting' then
    waiting[#waiting + 1] = (1000 - job.priority) * 4398046511104 + seq
    waiting[#waiting + 1] = job.id
  else
    delayed[#delayed + 1] = job.run_at
    delayed[#delayed + 1] = job.id
  end
  events[#events + 1] = { job.id, 0 }
end
-- ZADD in chunks: Lua's unpack() is limited by the C stack (about 8000 values).
local function zadd(key, args)
  for c = 1, #args, 2000 do
    redis.call('ZADD', key, unpack(args, c, math.min(c + 1999, #args)))
  end
end
zadd(KEYS[3], waiting)
zadd(KEYS[4], delayed)
for _, group in ipairs(group_order) do
  zadd(KEYS[8] .. group .. ':waiting', grouped[group])
  -- NX: a group already in the round-robin keeps its turn; a new one queues behind the others.
  redis.call('ZADD', KEYS[9], 'NX', now, group)
end
-- One event entry per 100 jobs: `events_maxlen` entries then bound the stream's memory.
-- The stream and the wake list come after the jobs are written, and neither is needed for a
-- job's state: one of another type (edited by hand) is skipped, never a half-done call.
if events_maxlen > 0 then
  for c = 1, #events, 100 do
    redis.pcall('XADD', KEYS[6], 'MAXLEN', '~', events_maxlen, '*', 'event', 'enqueued',
      'jobs', cjson.encode({ unpack(events, c, math.min(c + 99, #events)) }))
  end
end
-- Wake one idle worker (the wake list holds at most one token).
if (#waiting > 0 or #group_order > 0) and not paused and redis.pcall('LLEN', KEYS[7]) == 0 then
  redis.pcall('RPUSH', KEYS[7], '1')
end
return replies
