-- lib: helpers shared by the transition scripts. `scripts.rs` prepends this file to every
-- script except enqueue.lua (which stays standalone for producers), so each script is still
-- one EVALSHA. Keys are always passed in KEYS; job hashes are addressed as KEYS[1] .. id, where
-- KEYS[1] is the queue's job prefix `wasmq:{q}:job:`, so they share the queue's hash tag.

local PRIORITY_SPAN = 4398046511104 -- 2^42: room for the sequence within one priority

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Score in `waiting`: higher priority first, FIFO within a priority by the queue sequence.
local function waiting_score(priority, seq)
  return (1000 - (tonumber(priority) or 0)) * PRIORITY_SPAN + (tonumber(seq) or 0)
end

local CONFIG_DEFAULTS = {
  max_payload_bytes = 524288, max_result_bytes = 524288, completed_keep = 1000,
  completed_max_age_ms = 0, events_maxlen = 10000, paused = 0,
  rate_max = 0, rate_window_ms = 0, group_rate_max = 0, group_rate_window_ms = 0,
}

-- Reads the named fields of the queue config hash, numbers with their defaults.
local function read_config(key, names)
  local values = redis.call('HMGET', key, unpack(names))
  local cfg = {}
  for i, name in ipairs(names) do
    cfg[name] = tonumber(values[i]) or CONFIG_DEFAULTS[name]
  end
  return cfg
end

-- Calls `cmd key args...` in chunks: Lua's unpack() is limited by the C stack.
local function call_chunked(cmd, key, args, step)
  for c = 1, #args, step do
    redis.call(cmd, key, unpack(args, c, math.min(c + step - 1, #args)))
  end
end
local function zadd_pairs(key, args) call_chunked('ZADD', key, args, 2000) end
local function zrem_many(key, members) call_chunked('ZREM', key, members, 1000) end
local function del_many(keys)
  for c = 1, #keys, 1000 do
    redis.call('DEL', unpack(keys, c, math.min(c + 999, #keys)))
  end
end

-- One events-stream entry per transition and script call: `event` and `jobs`, a JSON array of
-- [id, attempt] pairs. Batching keeps the cost at one XADD per call, not per job.
local function emit(events_key, maxlen, name, jobs)
  if maxlen > 0 and #jobs > 0 then
    redis.call('XADD', events_key, 'MAXLEN', '~', maxlen, '*', 'event', name,
      'jobs', cjson.encode(jobs))
  end
end

-- Jobs on their way into waiting, collected per set so that each set gets one ZADD per call:
-- ungrouped jobs go to `waiting`, a job with a group to `g:<group>:waiting`. `K.gprefix` is
-- `wasmq:{q}:g:` and `K.groups` the set of groups with waiting jobs (see fetch.lua).
local function new_waiting()
  return { plain = {}, groups = {}, n = 0 }
end

local function add_waiting(w, group, score, id)
  local list = w.plain
  if group and group ~= '' then
    list = w.groups[group]
    if not list then
      list = {}
      w.groups[group] = list
    end
  end
  list[#list + 1] = score
  list[#list + 1] = id
  w.n = w.n + 1
end

-- Writes what add_waiting collected. A group that had no waiting jobs joins the round-robin
-- at `now`, behind the groups already ready; one that is in it keeps its turn (NX).
local function flush_waiting(w, K, now)
  call_chunked('ZADD', K.waiting, w.plain, 2000)
  for group, list in pairs(w.groups) do
    call_chunked('ZADD', K.gprefix .. group .. ':waiting', list, 2000)
    redis.call('ZADD', K.groups, 'NX', now, group)
  end
end

-- Wakes one idle worker blocked in BLPOP on the wake list, which holds at most one token.
local function wake(wake_key)
  if redis.call('LLEN', wake_key) == 0 then
    redis.call('RPUSH', wake_key, '1')
  end
end

-- Appends one attempt record to a job's `history` (a JSON array) without decoding it.
local function history_append(history, entry)
  local encoded = cjson.encode(entry)
  if not history or string.sub(history, 1, 1) ~= '[' or string.sub(history, -1) ~= ']'
      or history == '[]' then
    return '[' .. encoded .. ']'
  end
  return string.sub(history, 1, -2) .. ',' .. encoded .. ']'
end

-- Delay in ms before the next attempt once attempt `n` failed; mirrors Backoff::delay_ms in
-- job.rs: d = base (fixed) or min(cap, base * 2^(n-1)) (exponential), then
-- min(cap, d * (1 + jitter * (2u - 1))) with u uniform in [0, 1).
local function backoff_ms(kind, base, cap, jitter, n)
  base = tonumber(base) or 1000
  cap = tonumber(cap) or 3600000
  jitter = tonumber(jitter) or 0
  local d
  if kind == 'fixed' then
    d = base
    cap = nil
  else
    local exponent = math.min(math.max((tonumber(n) or 1) - 1, 0), 60)
    d = math.min(cap, base * 2 ^ exponent)
  end
  d = d * (1 + jitter * (2 * math.random() - 1))
  if cap and d > cap then d = cap end
  if d < 0 then d = 0 end
  return math.floor(d + 0.5)
end

local MAX_ERROR_LEN = 4096

-- The fields fail_job needs, in this order (HMGET).
local FAIL_FIELDS = { 'state', 'lease_token', 'attempt', 'max_attempts', 'backoff', 'backoff_ms',
  'backoff_cap_ms', 'backoff_jitter', 'history', 'started_at', 'host', 'priority', 'group' }

-- Records a failed attempt of the active job `id` (fields `f` read with FAIL_FIELDS) and moves
-- it on: to `dead` when permanent or out of attempts, else to `retry` after its backoff (or
-- straight to `waiting` when the backoff is 0). The caller removes it from `active` and applies
-- `plan`: plan.retry/plan.dead collect ZADD pairs, plan.waiting the jobs for waiting (see
-- add_waiting), plan.retried/plan.died events.
local function fail_job(prefix, id, f, now, outcome, err, permanent, plan)
  local attempt = tonumber(f[3]) or 0
  local max_attempts = tonumber(f[4]) or 1
  err = string.sub(err or '', 1, MAX_ERROR_LEN)
  local history = history_append(f[9], { attempt = attempt, outcome = outcome, error = err,
    host = f[11] or '', started_at = tonumber(f[10]) or 0, finished_at = now })
  local key = prefix .. id
  if permanent or attempt >= max_attempts then
    redis.call('HSET', key, 'state', 'dead', 'history', history, 'last_error', err,
      'last_outcome', outcome, 'finished_at', now, 'lease_token', '')
    plan.dead[#plan.dead + 1] = now
    plan.dead[#plan.dead + 1] = id
    plan.died[#plan.died + 1] = { id, attempt }
    return 'dead', now
  end
  local delay = backoff_ms(f[5], f[6], f[7], f[8], attempt)
  if delay <= 0 then
    local seq = redis.call('INCR', plan.seq_key)
    redis.call('HSET', key, 'state', 'waiting', 'history', history, 'last_error', err,
      'last_outcome', outcome, 'run_at', now, 'seq', seq, 'lease_token', '')
    add_waiting(plan.waiting, f[13], waiting_score(f[12], seq), id)
  else
    redis.call('HSET', key, 'state', 'retry', 'history', history, 'last_error', err,
      'last_outcome', outcome, 'run_at', now + delay, 'lease_token', '')
    plan.retry[#plan.retry + 1] = now + delay
    plan.retry[#plan.retry + 1] = id
  end
  plan.retried[#plan.retried + 1] = { id, attempt }
  return 'retry', now + delay
end

local function new_fail_plan(seq_key)
  return { retry = {}, dead = {}, waiting = new_waiting(), retried = {}, died = {},
    seq_key = seq_key }
end

-- Applies a fail plan: the set moves and the events. `K` names the keys.
local function apply_fail_plan(plan, K, maxlen, now)
  zadd_pairs(K.retry, plan.retry)
  zadd_pairs(K.dead, plan.dead)
  flush_waiting(plan.waiting, K, now)
  emit(K.events, maxlen, 'retried', plan.retried)
  emit(K.events, maxlen, 'dead', plan.died)
  if plan.waiting.n > 0 and (K.paused or 0) == 0 then wake(K.wake) end
end

-- Moves up to `limit` due jobs from `delayed` and `retry` to waiting (their group's, if they
-- have one), each with a fresh sequence number (FIFO by the time it became due). Returns how
-- many moved.
local function promote(prefix, K, now, limit, maxlen)
  local moved, waiting, events = 0, new_waiting(), {}
  for _, set in ipairs({ K.delayed, K.retry }) do
    local due = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, limit)
    if #due > 0 then
      zrem_many(set, due)
      local last = redis.call('INCRBY', K.seq, #due)
      for i, id in ipairs(due) do
        local key = prefix .. id
        local f = redis.call('HMGET', key, 'priority', 'attempt', 'state', 'group')
        -- A due id whose hash is gone (deleted by hand) is dropped, not resurrected.
        if f[3] then
          local seq = last - #due + i
          redis.call('HSET', key, 'state', 'waiting', 'seq', seq)
          add_waiting(waiting, f[4], waiting_score(f[1], seq), id)
          events[#events + 1] = { id, tonumber(f[2]) or 0 }
          moved = moved + 1
        end
      end
    end
  end
  flush_waiting(waiting, K, now)
  emit(K.events, maxlen, 'promoted', events)
  return moved
end

-- Checks that `id` is active under `token`. Returns nil when it is, else the rejection reason:
-- 'not_found', 'not_active:<state>' or 'token_mismatch'.
-- The dead jobs a DLQ script (replay, purge) acts on: the ids in ARGV[2..] when given, else
-- the ARGV[1] oldest of the dead set.
local function dlq_ids(dead_key)
  if #ARGV > 1 then
    local ids = {}
    for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
    return ids
  end
  local limit = math.floor(tonumber(ARGV[1]) or 0)
  if limit > 0 then
    return redis.call('ZRANGE', dead_key, 0, limit - 1)
  end
  return {}
end

local function lease_problem(state, held_token, token)
  if not state then return 'not_found' end
  if state ~= 'active' then return 'not_active:' .. state end
  if held_token ~= token then return 'token_mismatch' end
  return nil
end
