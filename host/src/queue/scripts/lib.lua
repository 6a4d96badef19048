-- lib: helpers shared by the transition bodies. `scripts.rs` loads this file and every body
-- but enqueue.lua and counts.lua (standalone scripts for producers) as one Redis function
-- library; a producer that runs a management body as a script sends this file before it
-- (docs/protocol.md, "Stable contract"). Keys are always passed in KEYS; job hashes are
-- addressed as KEYS[1] .. id, where KEYS[1] is the queue's job prefix `wasmq:{q}:job:`, so
-- they share the queue's hash tag.

local PRIORITY_SPAN = 4398046511104 -- 2^42: room for the sequence within one priority

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Score in `waiting`: higher priority first, FIFO within a priority by the queue sequence.
local function waiting_score(priority, seq)
  return (1000 - (tonumber(priority) or 0)) * PRIORITY_SPAN + (tonumber(seq) or 0)
end

-- A job's key and fields are written by producers (any Redis client, by hand) and Redis does not
-- undo a call's earlier writes when a later command fails. So the scripts read a job with
-- redis.pcall (a key of another type answers an error instead of raising), check each field
-- they use as the host reads it back (the plain decimal integers enqueue.lua stores: Lua's
-- tonumber also takes 'nan', 'inf' and hex, which a ZADD score or cjson.encode then refuses),
-- and move a job that fails either out of the way with bury() instead of raising.
-- **Invariant:** no script raises after its first write because of what a job's key holds.

-- The integer fields of a job: their range, and the digits the host parses (a minus sign
-- only where the range has negatives, as enqueue.lua stores them).
local UNSIGNED, SIGNED = '^%d+$', '^%-?%d+$'
local INT_RANGES = {
  priority = { -1000, 1000, SIGNED }, attempt = { 0, 4294967295, UNSIGNED },
  max_attempts = { 0, 4294967295, UNSIGNED }, replays = { 0, 4294967295, UNSIGNED },
  seq = { 0, PRIORITY_SPAN - 1, UNSIGNED }, timeout_ms = { 0, 1e15, UNSIGNED },
  backoff_ms = { 0, 1e15, UNSIGNED }, backoff_cap_ms = { 0, 1e15, UNSIGNED },
  created_at = { 0, 1e15, UNSIGNED }, started_at = { 0, 1e15, UNSIGNED },
  run_at = { 0, 1e15, UNSIGNED }, finished_at = { 0, 1e15, UNSIGNED },
  depth = { 0, 4294967295, UNSIGNED }, expires_at = { 0, 1e15, UNSIGNED },
}

local STATES = { waiting = true, delayed = true, active = true, retry = true, completed = true,
  dead = true }

local function name_ok(s)
  return #s >= 1 and #s <= 128 and string.find(s, '^[%w%p]+$') ~= nil
end

-- The integer `v` holds: nil when absent or empty, false when it is not a plain decimal
-- integer in lo..hi.
local function int_in(v, lo, hi)
  if not v or v == '' then return nil end
  local n = tonumber(v)
  if not n or n < lo or n > hi or not string.find(v, lo < 0 and SIGNED or UNSIGNED) then
    return false
  end
  return n
end

-- The integer field `name` of a job holds (`v`), or `default` when absent or unreadable.
local function int_field(name, v, default)
  local range = INT_RANGES[name]
  return int_in(v, range[1], range[2]) or default
end

-- A decimal fraction in 0..1 as enqueue.lua accepts it (see `fraction` there).
local function fraction_ok(v)
  local mantissa, exponent = string.match(v, '^[+-]?([%d.]*)(.*)$')
  if not mantissa or not string.find(mantissa, '^%d*%.?%d*$') or not string.find(mantissa, '%d') then
    return false
  end
  if exponent ~= '' and not string.find(exponent, '^[eE][+-]?%d+$') then return false end
  local n = tonumber(v)
  return n ~= nil and n >= 0 and n <= 1
end

local function quoted(v)
  if #v > 40 then v = string.sub(v, 1, 40) .. '...' end
  return string.format('%q', v)
end

-- The checks of a job's text fields: each returns why `v` is not what the host reads, or nil.
local TEXT_CHECKS = {
  state = function(v)
    if not STATES[v] then return 'field state is not a job state: ' .. quoted(v) end
  end,
  handler = function(v)
    if not name_ok(v) then return 'field handler is not a handler name: ' .. quoted(v) end
  end,
  group = function(v)
    if not name_ok(v) then return 'field group is not a group name: ' .. quoted(v) end
  end,
  debounce_key = function(v)
    if not name_ok(v) then return 'field debounce_key is not a key name: ' .. quoted(v) end
  end,
  own_policy = function(v)
    if not string.find(v, '^[%w%p]+$') then
      return 'field own_policy is not printable text: ' .. quoted(v)
    end
  end,
  backoff = function(v)
    if v ~= 'exponential' and v ~= 'fixed' then
      return 'field backoff is not exponential or fixed: ' .. quoted(v)
    end
  end,
  backoff_jitter = function(v)
    if not fraction_ok(v) then
      return 'field backoff_jitter is not a decimal number in 0..1: ' .. quoted(v)
    end
  end,
}

-- Why the fields `f` of a job, read with HMGET `names`, cannot be used as the host reads them,
-- or nil when they can. An absent or empty field is no problem here: its reader has a default.
-- With `only` (a set of names), only those fields are looked at. This runs for every job
-- every script reads, so it is written for speed: one table lookup per field, and for an
-- integer a tonumber, two comparisons and one anchored match.
local function field_problem(names, f, only)
  for i = 1, #names do
    local v = f[i]
    if v and v ~= '' then
      local name = names[i]
      if not only or only[name] then
        local range = INT_RANGES[name]
        if range then
          local n = tonumber(v)
          if not n or n < range[1] or n > range[2] or not string.find(v, range[3]) then
            return string.format('field %s is not an integer in %d..%d: %s', name, range[1],
              range[2], quoted(v))
          end
        else
          local check = TEXT_CHECKS[name]
          if check then
            local problem = check(v)
            if problem then return problem end
          end
        end
      end
    end
  end
  return nil
end

-- Reads the fields `names` of the job at `key`; names[1] must be 'state'. Returns the values
-- and, when one of them cannot be used, why (field_problem); or nil and why there is no job to
-- use: false when the key does not exist, else the reason (a key of another type, a hash
-- without a state). `only` as in field_problem. Costs one HMGET; the rest only for a job that
-- is not well.
local function read_job(key, names, only)
  local f = redis.pcall('HMGET', key, unpack(names))
  if f.err then
    local t = redis.call('TYPE', key)
    return nil, 'the job key holds a ' .. tostring(t.ok or t) .. ', not a hash'
  end
  if not f[1] or f[1] == '' then
    if redis.call('EXISTS', key) == 0 then return nil, false end
    return nil, 'field state is missing'
  end
  return f, field_problem(names, f, only)
end

-- The sorted set of state `state` (`<q><state>`), from the job prefix `<q>job:`; a waiting job
-- with a group waits in its group's set instead (`<q>g:<group>:waiting`).
local function state_set(prefix, state, group)
  local base = string.sub(prefix, 1, -5)
  if state == 'waiting' and group and group ~= '' then
    return base .. 'g:' .. group .. ':waiting'
  end
  return base .. state
end

-- Queue keys. A queue's own keys (`<q>waiting`, `<q>config`, `<q>seq`, a group's waiting set...)
-- are written by wasmq alone, but Redis lets anyone write them with another type (`SET
-- <q>waiting x`). A command of one type on a key of another raises WRONGTYPE, and Redis keeps
-- a call's earlier writes when a later command raises. So every body checks, before its first
-- write, the type of every queue key it may write or read with a type's own command, and
-- refuses the call when one holds another type: 'WASMQ_WRONGTYPE <key> <type found>' (as
-- enqueue.lua does), with nothing written. One TYPE per key per call. Two keys are records or
-- hints, not state, and are skipped when damaged instead (emit, wake): `<q>events` and
-- `<q>wake`. **Invariant:** no body raises after its first write because of what a queue key
-- holds; a WASMQ_WRONGTYPE error means the call wrote nothing.

local function type_of(key)
  local t = redis.call('TYPE', key)
  return t.ok or t
end

-- The queue keys this call has already found of the type it wants (type_error, and the reads
-- of due_groups and lease_keys_error, which check as much), so that a key checked twice in one
-- call costs one TYPE: only a write changes a key's type, and a call writes each key with its
-- one type.
-- Emptied as each call starts (new_call, from the wrapper scripts.rs puts around each body of
-- the library; lib.lua evaluated in front of a body starts with an empty one anyway).
local checked_types = {}
-- The heads of `delayed` and `retry` as due_groups read them (ZRANGE 0 0 WITHSCORES), for
-- promote() in the same call, which would read them again. A head read before a write to its
-- set would only delay a promotion to the next call, never lose one.
local heads_read = {}
-- The ready groups as lease_keys_error read them ({ upto, n, list }), for lease_jobs in the same
-- call, which would read them again; forgotten at every write to `groups` in between
-- (flush_waiting, give_back_group_slots).
local ready_read = nil
local function new_call()
  checked_types = {}
  heads_read = {}
  ready_read = nil
end

local function wrong_type(key, found)
  return redis.error_reply('WASMQ_WRONGTYPE ' .. key .. ' ' .. found)
end

-- Checks keys given as pairs key, type (a nil key is skipped): the error reply for the first
-- that exists with another type, or nil.
local function type_error(...)
  local args, n = { ... }, select('#', ...)
  for i = 1, n - 1, 2 do
    local key, want = args[i], args[i + 1]
    if key and checked_types[key] ~= want then
      local found = type_of(key)
      if found ~= 'none' and found ~= want then return wrong_type(key, found) end
      checked_types[key] = want
    end
  end
  return nil
end

-- The order of the state sets.
local STATE_ORDER = { 'waiting', 'delayed', 'active', 'retry', 'completed', 'dead' }

-- type_error for the six state sets of the queue of job prefix `prefix`: a body that may look
-- a job up in the set of whatever state its hash names (misplaced) checks them all.
local function state_sets_error(prefix)
  local base = string.sub(prefix, 1, -5)
  for _, state in ipairs(STATE_ORDER) do
    local err = type_error(base .. state, 'zset')
    if err then return err end
  end
  return nil
end

-- type_error for the waiting sets (and with `rate`, the rate logs; with `slots`, the slots of
-- group concurrency) of the groups `groups` (a list of names, '' skipped: the ungrouped jobs'
-- turn) under the group prefix `gprefix`. `checked` (a set, or nil) holds the groups already
-- checked.
local function group_keys_error(gprefix, groups, rate, checked, slots)
  checked = checked or {}
  for _, group in ipairs(groups) do
    if group ~= '' and not checked[group] then
      checked[group] = true
      local err = type_error(gprefix .. group .. ':waiting', 'zset',
        rate and gprefix .. group .. ':rate' or nil, 'zset',
        slots and gprefix .. group .. ':active' or nil, 'zset')
      if err then return err end
    end
  end
  return nil
end

-- Runs the read-only command `cmd key ...` (redis.pcall): its reply, or nil and the
-- WASMQ_WRONGTYPE error when `key` holds another type. For read-only bodies, which need no
-- check first: an error there has written nothing, and the check costs nothing until then.
local function read_key(cmd, key, ...)
  local reply = redis.pcall(cmd, key, ...)
  if type(reply) == 'table' and reply.err then
    return nil, wrong_type(key, type_of(key))
  end
  return reply
end

-- Where a malformed job's key is kept as it was found: `<q>malformed:<id>`.
local function malformed_key(prefix, id)
  return string.sub(prefix, 1, -5) .. 'malformed:' .. id
end

-- Whether the job `id` in state `state` (a known one) is missing from its state's set, found
-- in the set of another state: nil when it is in its own set (an id left over in the other
-- set, which the caller drops), else the reason to bury it. Only for jobs already out of line.
local function misplaced(prefix, id, state, group, found_in)
  if redis.call('ZSCORE', state_set(prefix, state, group), id) then return nil end
  return 'state ' .. state .. ' but found in ' .. found_in .. ' and not in its own set'
end

-- What a malformed job's dead-letter record takes over from its hash, when readable.
local KEPT_FIELDS = { 'handler', 'payload', 'group', 'priority', 'max_attempts', 'attempt',
  'created_at', 'timeout_ms' }

-- Moves the job `id`, whose key or fields cannot be used (`reason`), out of the way into the
-- dead-letter queue: its key, whatever it holds, is renamed to malformed_key (kept exactly as
-- found; purge deletes it with the job), and a dead-letter record takes its place: state
-- `dead`, outcome `malformed`, the reason as `last_error` and in `history`, and those of
-- KEPT_FIELDS that were readable. `extra` (field/value pairs, or nil) is stored with it.
-- `plan` (new_fail_plan) collects the ZADD to `dead` and the event; the caller takes the id
-- out of the set it was found in. Never raises: RENAME and HSET cannot fail on a key that
-- exists, and every number written is checked.
local function bury(prefix, id, reason, now, plan, extra)
  local key = prefix .. id
  local kept = malformed_key(prefix, id)
  redis.call('RENAME', key, kept)
  local attempt = 0
  local record = { 'id', id, 'state', 'dead', 'handler', '', 'max_attempts', '1', 'attempt', '0',
    'created_at', now, 'finished_at', now, 'last_outcome', 'malformed', 'last_error', reason,
    'lease_token', '', 'malformed_key', kept }
  local f = redis.pcall('HMGET', kept, unpack(KEPT_FIELDS))
  if not f.err then
    for i, name in ipairs(KEPT_FIELDS) do
      if f[i] and f[i] ~= '' and not field_problem({ name }, { f[i] }) then
        record[#record + 1] = name
        record[#record + 1] = f[i]
        if name == 'attempt' then attempt = tonumber(f[i]) end
      end
    end
  end
  record[#record + 1] = 'history'
  record[#record + 1] = cjson.encode({ { attempt = attempt, outcome = 'malformed',
    error = reason, host = '', started_at = 0, finished_at = now } })
  for _, v in ipairs(extra or {}) do record[#record + 1] = v end
  redis.call('HSET', key, unpack(record))
  plan.dead[#plan.dead + 1] = now
  plan.dead[#plan.dead + 1] = id
  plan.died[#plan.died + 1] = { id, attempt }
  plan.buried[#plan.buried + 1] = id
end

local CONFIG_DEFAULTS = {
  max_payload_bytes = 524288, max_result_bytes = 524288, completed_keep = 1000,
  completed_max_age_ms = 0, events_maxlen = 10000, paused = 0,
  rate_max = 0, rate_window_ms = 0, group_rate_max = 0, group_rate_window_ms = 0,
  dead_step_bytes = 67108864, group_concurrency = 0,
}

-- Reads the named fields of the queue config hash, numbers with their defaults (a value that
-- is not a plain integer, edited by hand, counts as absent).
-- Returns nil and the WASMQ_WRONGTYPE error when the config key is not a hash, having written
-- nothing: callers read it before their first write.
local function read_config(key, names)
  local values = redis.pcall('HMGET', key, unpack(names))
  if values.err then return nil, wrong_type(key, type_of(key)) end
  local cfg = {}
  for i, name in ipairs(names) do
    cfg[name] = int_in(values[i], -1e15, 1e15) or CONFIG_DEFAULTS[name]
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

-- Most jobs one events-stream entry lists (enqueue.lua has its own copy).
local EVENT_JOBS = 100

-- Events-stream entries for one transition in one script call: `event` and `jobs`, a JSON
-- array of [id, attempt] pairs, at most EVENT_JOBS of them an entry. Batching keeps the cost
-- at one XADD per call (per EVENT_JOBS jobs), not per job; the cap keeps an entry small, so
-- that `events_maxlen` entries bound the stream's memory whatever the batch sizes.
local function emit(events_key, maxlen, name, jobs)
  if maxlen <= 0 then return end
  for c = 1, #jobs, EVENT_JOBS do
    local part = jobs
    if #jobs > EVENT_JOBS then part = { unpack(jobs, c, math.min(c + EVENT_JOBS - 1, #jobs)) } end
    -- The stream is a record, not the state: a key of another type must not stop a call that
    -- has moved jobs already.
    redis.pcall('XADD', events_key, 'MAXLEN', '~', maxlen, '*', 'event', name,
      'jobs', cjson.encode(part))
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
    ready_read = nil
  end
end

-- Wakes one idle worker blocked in BLPOP on the wake list, which holds at most one token.
-- With `if_any_in` (a set), only if that set holds jobs; it is looked at only when no token
-- waits already, which is the usual case for a busy queue.
local function wake(wake_key, if_any_in)
  -- A wake list of another type (edited by hand) only costs idle workers their wake-up.
  if redis.pcall('LLEN', wake_key) == 0
      and (not if_any_in or redis.call('ZCARD', if_any_in) > 0) then
    redis.pcall('RPUSH', wake_key, '1')
  end
end

-- Group concurrency (`group_concurrency` in the config; docs/protocol.md, "Group concurrency").
-- While it is set, each job of a group that lease_jobs leases holds one of its group's slots:
-- its id is in the sorted set `<q>g:<group>:active`, scored by its lease expiry (extend.lua
-- moves the score with the lease), and its hash names the group in the field `group_slot`.
-- Whatever takes a job out of `active` reads that field with the job (no command more) and
-- gives the slot back with give_back_group_slots, in the same call. The job's own field drives
-- the give-back, not the config, so a limit changed or removed meanwhile leaves nothing
-- behind. A slot whose job left `active` some other way (a hash deleted by hand, a repair by
-- `queue check`) is dropped by lease_jobs once its lease has expired (repair_group_slots).

-- Notes that the job `id`, whose field `group_slot` reads `slot`, leaves `active` (or, for
-- extend, keeps it): `freed` collects the ids per group for give_back_group_slots. Nothing
-- for a job that holds no slot.
local function note_group_slot(freed, slot, id)
  if slot and slot ~= '' and name_ok(slot) then
    local ids = freed[slot]
    if not ids then
      ids = {}
      freed[slot] = ids
    end
    ids[#ids + 1] = id
  end
end

-- Gives back the group slots `freed` (group -> ids, see note_group_slot) of jobs that left
-- `active`, and puts each such group that was parked at its limit (scored after `now` in
-- `groups`) back in the round robin at `now`, waking one idle worker. One ZREM and one ZADD
-- per group, nothing when `freed` is empty. The keys come from the job prefix `prefix` (same
-- hash tag). With redis.pcall: a group key of another type costs only the give-back (fetch
-- refuses the queue with WASMQ_WRONGTYPE until it is repaired), never a call that has written.
-- Every script that takes a job out of `active` calls this.
local function give_back_group_slots(prefix, freed, now)
  local base = string.sub(prefix, 1, -5)
  local woke = false
  for group, ids in pairs(freed) do
    local slots = base .. 'g:' .. group .. ':active'
    for c = 1, #ids, 1000 do
      redis.pcall('ZREM', slots, unpack(ids, c, math.min(c + 999, #ids)))
    end
    -- XX: only a group with waiting jobs; LT: only one parked, a ready group keeps its turn.
    local moved = redis.pcall('ZADD', base .. 'groups', 'XX', 'LT', 'CH', now, group)
    ready_read = nil
    if moved == 1 and not woke then
      woke = true
      wake(base .. 'wake')
    end
  end
end

-- Moves the slots `held` (group -> ids, see note_group_slot) to the lease expiry `expires`
-- (extend.lua): one ZADD per group, none when `held` is empty; XX, so a slot given back
-- meanwhile is not taken again.
local function extend_group_slots(prefix, held, expires)
  local base = string.sub(prefix, 1, -5)
  for group, ids in pairs(held) do
    local args = {}
    for _, id in ipairs(ids) do
      args[#args + 1] = expires
      args[#args + 1] = id
    end
    for c = 1, #args, 2000 do
      redis.pcall('ZADD', base .. 'g:' .. group .. ':active', 'XX',
        unpack(args, c, math.min(c + 1999, #args)))
    end
  end
end

-- Drops from the slots `slots` of a group at its limit those whose lease expired before `now`
-- and whose job is no longer in `active` (`active_key`): slots no give-back will ever free.
-- Returns how many it dropped. A slot whose job is still active keeps it until recover.lua
-- fails the attempt, which gives it back. Runs only for a group found at its limit.
local function repair_group_slots(slots, active_key, now)
  local stale = redis.call('ZRANGEBYSCORE', slots, '-inf', string.format('(%d', now),
    'LIMIT', 0, 1000)
  local gone = {}
  for _, id in ipairs(stale) do
    if not redis.call('ZSCORE', active_key, id) then gone[#gone + 1] = id end
  end
  if #gone > 0 then zrem_many(slots, gone) end
  return #gone
end

-- How long a group at its limit stays out of the round robin when its oldest slot's lease
-- has expired already (its job waits for recover.lua, which gives the slot back).
local SLOT_RECHECK_MS = 1000

-- When a group at its limit, with slots `slots`, is looked at again if no give-back comes
-- first: when its oldest lease expires (repair_group_slots may then drop it).
local function slots_free_at(slots, now)
  local oldest = tonumber(redis.call('ZRANGE', slots, 0, 0, 'WITHSCORES')[2]) or now
  return math.max(oldest, now + SLOT_RECHECK_MS)
end

-- Takes `n` numbers from the queue's sequence counter `key` and returns the last. A counter
-- that is not one (edited by hand) starts again from the Redis clock in ms, above every
-- number a queue hands out in practice and below 2^42 until the year 2109.
local function next_seq(key, n)
  local last = redis.pcall('INCRBY', key, n)
  if type(last) ~= 'number' then
    last = now_ms() + n
    redis.call('SET', key, last)
  end
  return last
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
-- The most bytes of an attempt's log its history entry keeps (the host cuts it first).
local MAX_LOGS_LEN = 4096

-- The fields fail_job needs, in this order (HMGET).
local FAIL_FIELDS = { 'state', 'lease_token', 'attempt', 'max_attempts', 'backoff', 'backoff_ms',
  'backoff_cap_ms', 'backoff_jitter', 'history', 'started_at', 'host', 'priority', 'group',
  'own_policy', 'handler', 'group_slot' }

-- A handler's retry policy as a host sends it (fail.lua, recover.lua):
-- '<max_attempts>|<backoff kind>|<base ms>|<cap ms>|<jitter>', a part left empty when the
-- handler's deployment does not set it; '' for no policy. Returns nil, or
-- { max_attempts = text or nil, backoff = { kind, base, cap, jitter } or nil }, every part as
-- the text the job's fields take (a part that is not a number the host reads back counts as
-- absent, so a policy can never make a job malformed).
local function parse_policy(text)
  if not text or text == '' then return nil end
  local parts = {}
  for part in string.gmatch(text .. '|', '([^|]*)|') do parts[#parts + 1] = part end
  local policy = {}
  if int_in(parts[1], 1, 1000) then policy.max_attempts = parts[1] end
  if parts[2] == 'exponential' or parts[2] == 'fixed' then
    local function ms(v, default) return int_in(v, 0, 1e15) and v or default end
    policy.backoff = { parts[2], ms(parts[3], '1000'), ms(parts[4], '0'),
      (parts[5] and parts[5] ~= '' and fraction_ok(parts[5])) and parts[5] or '0' }
  end
  return policy
end

-- Applies a handler's `policy` (parse_policy) to the FAIL_FIELDS `f` of a job, for the parts
-- the job did not set itself (`own_policy`, written by enqueue.lua): those fields of `f`
-- become the handler's. Returns the field/value pairs that changed, for the caller to write
-- with the rest, so the job shows the policy it runs under.
local function apply_handler_policy(f, policy)
  local updates = {}
  if not policy then return updates end
  local own = f[14] or ''
  if policy.max_attempts and not string.find(own, 'attempts', 1, true)
      and policy.max_attempts ~= f[4] then
    f[4] = policy.max_attempts
    updates[#updates + 1] = 'max_attempts'
    updates[#updates + 1] = f[4]
  end
  if policy.backoff and not string.find(own, 'backoff', 1, true) then
    local b = policy.backoff
    for i, name in ipairs({ 'backoff', 'backoff_ms', 'backoff_cap_ms', 'backoff_jitter' }) do
      if f[4 + i] ~= b[i] then
        f[4 + i] = b[i]
        updates[#updates + 1] = name
        updates[#updates + 1] = b[i]
      end
    end
  end
  return updates
end

-- A progress argument (0-100) as a number, or nil when there is none.
local function progress_of(text)
  return int_in(text, 0, 100) or nil
end

-- An attempt's call record as a host sends it (complete, fail, suspend; docs/protocol.md):
-- '' for none, else a JSON array of call entries whose last element is a number when calls
-- past the record's bound were only counted (kept below 1e14, which cjson writes as digits).
-- Returns the entries (a table that encodes
-- again) or nil, and the count dropped or nil. Never errors: text that does not decode,
-- is not an array, or would not encode again is dropped, so a write after it cannot fail.
local function calls_of(text)
  if not text or text == '' then return nil, nil end
  local ok, calls = pcall(cjson.decode, text)
  if not ok or type(calls) ~= 'table' then return nil, nil end
  local n, dropped = #calls, nil
  if n > 0 and type(calls[n]) == 'number' then
    local d = calls[n]
    if d >= 1 and d < 1e14 and d == math.floor(d) then dropped = d end
    calls[n] = nil
    n = n - 1
  end
  if n == 0 or not pcall(cjson.encode, calls) then return nil, dropped end
  return calls, dropped
end

-- Records a failed attempt of the active job `id` (fields `f` read with FAIL_FIELDS) and moves
-- it on: to `dead` when permanent or out of attempts, else to `retry` after its backoff (or
-- straight to `waiting` when the backoff is 0). The caller removes it from `active` and applies
-- `plan`: plan.retry/plan.dead collect ZADD pairs, plan.waiting the jobs for waiting (see
-- add_waiting), plan.retried/plan.died events. `version` is the handler version that ran the
-- attempt ('' when unknown, as for an expired lease); `policy` the handler's retry policy
-- (parse_policy), or nil; `logs` and `progress` what the attempt logged and its last progress
-- ('' when none), `calls` its call record (calls_of; '' or nil when none). A job whose fields cannot be used (under the policy) is buried as malformed
-- instead, with nothing else written: it goes dead too.
local function fail_job(prefix, id, f, now, outcome, err, permanent, plan, version, policy, logs,
    progress, calls)
  local key = prefix .. id
  local updates = apply_handler_policy(f, policy)
  if f[16] and f[16] ~= '' then
    -- The group slot is given back by the caller (give_back_group_slots).
    updates[#updates + 1] = 'group_slot'
    updates[#updates + 1] = ''
  end
  local problem = field_problem(FAIL_FIELDS, f)
  if problem then
    bury(prefix, id, problem, now, plan)
    return 'dead', now
  end
  local attempt = tonumber(f[3]) or 0
  local max_attempts = tonumber(f[4]) or 1
  err = string.sub(err or '', 1, MAX_ERROR_LEN)
  local call_list, dropped = calls_of(calls)
  local history = history_append(f[9], { attempt = attempt, outcome = outcome, error = err,
    host = f[11] or '', started_at = tonumber(f[10]) or 0, finished_at = now,
    version = (version ~= nil and version ~= '') and version or nil,
    logs = (logs ~= nil and logs ~= '') and string.sub(logs, 1, MAX_LOGS_LEN) or nil,
    progress = progress_of(progress), calls = call_list, calls_dropped = dropped })
  local function write(...)
    local args = { ... }
    for _, v in ipairs(updates) do args[#args + 1] = v end
    redis.call('HSET', key, unpack(args))
  end
  if permanent or attempt >= max_attempts then
    write('state', 'dead', 'history', history, 'last_error', err, 'last_outcome', outcome,
      'finished_at', now, 'lease_token', '')
    plan.dead[#plan.dead + 1] = now
    plan.dead[#plan.dead + 1] = id
    plan.died[#plan.died + 1] = { id, attempt }
    return 'dead', now
  end
  local delay = backoff_ms(f[5], f[6], f[7], f[8], attempt)
  if delay <= 0 then
    local seq = next_seq(plan.seq_key, 1)
    write('state', 'waiting', 'history', history, 'last_error', err, 'last_outcome', outcome,
      'run_at', now, 'seq', seq, 'lease_token', '')
    add_waiting(plan.waiting, f[13], waiting_score(f[12], seq), id)
  else
    write('state', 'retry', 'history', history, 'last_error', err, 'last_outcome', outcome,
      'run_at', now + delay, 'lease_token', '')
    plan.retry[#plan.retry + 1] = now + delay
    plan.retry[#plan.retry + 1] = id
  end
  plan.retried[#plan.retried + 1] = { id, attempt }
  return 'retry', now + delay
end

local function new_fail_plan(seq_key)
  return { retry = {}, dead = {}, waiting = new_waiting(), retried = {}, died = {},
    buried = {}, seq_key = seq_key }
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
-- many moved, and `heads` for next_scheduled: per set, its first due time when this saw it
-- (false: empty; nil: jobs moved, so unknown). A due id whose job cannot be used is buried
-- (bury) into `K.dead`, or `<q>dead` when the caller has no such key.
local function promote(prefix, K, now, limit, maxlen)
  local moved, waiting, events, heads = 0, new_waiting(), {}, {}
  local plan = new_fail_plan(nil)
  -- Peek at both heads first: when nothing is due (the usual case) that is the only command
  -- per set, and the head is the set's next due time, which a fetch that comes back short
  -- needs. Both sets are read before anything is written.
  local sets = { { K.delayed, 'delayed' }, { K.retry, 'retry' } }
  for _, s in ipairs(sets) do
    s.head = heads_read[s[1]] or redis.call('ZRANGE', s[1], 0, 0, 'WITHSCORES')
  end
  for _, s in ipairs(sets) do
    local set = s[1]
    local at = tonumber(s.head[2]) or false
    local due = {}
    if at and at <= now then
      due = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, limit)
      at = nil
    end
    heads[set] = at
    if #due > 0 then
      zrem_many(set, due)
      local last = next_seq(K.seq, #due)
      for i, id in ipairs(due) do
        local key = prefix .. id
        local f, problem = read_job(key, { 'state', 'priority', 'attempt', 'group' })
        if f and not problem and f[1] ~= 'delayed' and f[1] ~= 'retry' then
          -- Not scheduled: an id left over in this set, or a job that is nowhere else.
          problem = misplaced(prefix, id, f[1], f[4], s[2])
          if not problem then f = nil end
        end
        if problem then
          bury(prefix, id, problem, now, plan)
        elseif f then
          local seq = last - #due + i
          redis.call('HSET', key, 'state', 'waiting', 'seq', seq)
          add_waiting(waiting, f[4], waiting_score(f[2], seq), id)
          events[#events + 1] = { id, tonumber(f[3]) or 0 }
          moved = moved + 1
        end
        -- A due id whose hash is gone (deleted by hand) is dropped, not resurrected.
      end
    end
  end
  flush_waiting(waiting, K, now)
  emit(K.events, maxlen, 'promoted', events)
  if #plan.dead > 0 then
    zadd_pairs(K.dead or state_set(prefix, 'dead'), plan.dead)
    emit(K.events, maxlen, 'dead', plan.died)
  end
  return moved, heads
end

-- The earliest due time in `delayed` and `retry` (0 when both are empty), looking only at the
-- sets whose head promote() did not already see (`heads`).
local function next_scheduled(K, heads)
  local next_due = 0
  for _, set in ipairs({ K.delayed, K.retry }) do
    local at = heads[set]
    if at == nil then
      at = tonumber(redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')[2]) or false
    end
    if at and (next_due == 0 or at < next_due) then next_due = at end
  end
  return next_due
end

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

-- Checks that `id` is active under `token`. Returns nil when it is, else the rejection reason:
-- 'not_found', 'not_active:<state>' or 'token_mismatch'.
local function lease_problem(state, held_token, token)
  if not state then return 'not_found' end
  if state ~= 'active' then return 'not_active:' .. state end
  if held_token ~= token then return 'token_mismatch' end
  return nil
end

-- The lease check of a lease-checked call on a job read with read_job (`f`, `unusable`): nil
-- when the caller holds the job, else the rejection: 'not_found', 'not_active:<state>',
-- 'token_mismatch', or 'malformed' when the key cannot be read as a job (another type, no
-- state).
local function lease_check(f, unusable, token)
  if not f then return unusable == false and 'not_found' or 'malformed' end
  return lease_problem(f[1], f[2], token)
end

-- For read_job: look at no field (the caller checks what it uses itself).
local NO_FIELDS = {}

-- The fields of FAIL_FIELDS that a completion needs when the job is not kept (the first three
-- at FAIL_FIELDS' positions; then `group_slot`, at COMPLETE_SLOT_AT[fields]).
local COMPLETE_FIELDS_BARE = { 'state', 'lease_token', 'attempt', 'group_slot' }
local COMPLETE_SLOT_AT = { [COMPLETE_FIELDS_BARE] = 4, [FAIL_FIELDS] = 16 }
-- The fields a completion uses (the rest of FAIL_FIELDS only for a result that fails the job).
local COMPLETE_USES = { state = true, attempt = true, started_at = true }

-- The config fields complete_jobs reads.
local COMPLETE_CONFIG = { 'completed_keep', 'completed_max_age_ms', 'max_result_bytes',
  'events_maxlen' }

-- Completes the active jobs given as octuples id, token, result, handler version, logs,
-- progress, children, calls (calls_of) in ARGV[first..] (active ->
-- completed), then applies retention: the body of complete.lua, whose header gives the rules,
-- shared with complete_fetch.lua. `K` names config, active, completed, dead, events, steps
-- (the step-hash prefix) and outbox; `cfg` holds COMPLETE_CONFIG. A completed job's steps are
-- deleted; its children (an opaque blob the host wrote, '' for none) go to the outbox
-- (`<outbox>:<id>`, and the id into `outbox` scored now), in the same call as the completion.
-- Returns complete's reply: {completed_ids, rejected, too_large_ids}.
local function complete_jobs(prefix, K, cfg, now, first)
  local keep = cfg.completed_keep
  local done_ids, rejected, too_large, finished, events, deleted = {}, {}, {}, {}, {}, {}
  local leaving = {}
  local plan = new_fail_plan(nil)
  -- A completion reads what it records: with no job kept, the lease check and the attempt
  -- (for the event); the rest of FAIL_FIELDS only for a result that fails the job.
  local fields = keep == 0 and COMPLETE_FIELDS_BARE or FAIL_FIELDS
  local steps, outbox, freed = {}, {}, {}
  for i = first, #ARGV - 7, 8 do
    local id, token, result, version = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    local logs, progress, children, calls = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
    local key = prefix .. id
    local f, unusable = read_job(key, fields, COMPLETE_USES)
    local problem = lease_check(f, unusable, token)
    local slot = f and f[COMPLETE_SLOT_AT[fields]]
    if not problem or problem == 'malformed' then note_group_slot(freed, slot, id) end
    if problem and problem ~= 'malformed' then
      rejected[#rejected + 1] = { id, problem }
    elseif unusable then
      -- A job that cannot be completed as it is (a key of another type, a field the host
      -- cannot read): the result is kept with it in the dead-letter queue.
      bury(prefix, id, unusable, now, plan, { 'result', result })
      rejected[#rejected + 1] = { id, 'not_active:dead' }
      leaving[#leaving + 1] = id
    elseif #result > cfg.max_result_bytes then
      if fields ~= FAIL_FIELDS then f = redis.call('HMGET', key, unpack(FAIL_FIELDS)) end
      fail_job(prefix, id, f, now, 'result_too_large', 'result of ' .. #result
        .. ' bytes is over the limit of ' .. cfg.max_result_bytes, true, plan, version, nil,
        logs, progress, calls)
      too_large[#too_large + 1] = id
    else
      local attempt = tonumber(f[3]) or 0
      if keep == 0 then
        deleted[#deleted + 1] = key
      else
        local call_list, dropped = calls_of(calls)
        local history = history_append(f[9], { attempt = attempt, outcome = 'ok', error = '',
          host = f[11] or '', started_at = tonumber(f[10]) or 0, finished_at = now,
          version = version ~= '' and version or nil,
          logs = logs ~= '' and string.sub(logs, 1, MAX_LOGS_LEN) or nil,
          progress = progress_of(progress), calls = call_list, calls_dropped = dropped })
        if slot and slot ~= '' then
          redis.call('HSET', key, 'state', 'completed', 'result', result, 'history', history,
            'finished_at', now, 'lease_token', '', 'group_slot', '')
        else
          redis.call('HSET', key, 'state', 'completed', 'result', result, 'history', history,
            'finished_at', now, 'lease_token', '')
        end
        finished[#finished + 1] = now
        finished[#finished + 1] = id
      end
      done_ids[#done_ids + 1] = id
      events[#events + 1] = { id, attempt }
      steps[#steps + 1] = K.steps .. id
      if children ~= '' then
        redis.call('SET', K.outbox .. ':' .. id, children)
        outbox[#outbox + 1] = now
        outbox[#outbox + 1] = id
      end
    end
  end
  del_many(steps)
  zadd_pairs(K.outbox, outbox)
  for _, id in ipairs(done_ids) do leaving[#leaving + 1] = id end
  for _, id in ipairs(too_large) do leaving[#leaving + 1] = id end
  zrem_many(K.active, leaving)
  give_back_group_slots(prefix, freed, now)
  del_many(deleted)
  zadd_pairs(K.completed, finished)
  zadd_pairs(K.dead, plan.dead)
  emit(K.events, cfg.events_maxlen, 'completed', events)
  emit(K.events, cfg.events_maxlen, 'dead', plan.died)

  -- Retention: trim the oldest completed jobs beyond `keep`, then those past the max age.
  -- Each call deletes at most 1000 more jobs than it completed, so lowering `completed_keep`
  -- (or the age) never makes one call slow, and a batch of any size still leaves the set
  -- within its bounds (a cap of 1000 alone let a batch of 5000 leave 4000 behind).
  local trim_limit = #finished + 1000
  if keep > 0 and #finished > 0 then
    local excess = math.min(redis.call('ZCARD', K.completed) - keep, trim_limit)
    if excess > 0 then
      local old = redis.call('ZRANGE', K.completed, 0, excess - 1)
      local keys = {}
      for j, id in ipairs(old) do keys[j] = prefix .. id end
      del_many(keys)
      redis.call('ZREMRANGEBYRANK', K.completed, 0, excess - 1)
    end
  end
  if cfg.completed_max_age_ms > 0 then
    local old = redis.call('ZRANGEBYSCORE', K.completed, '-inf', now - cfg.completed_max_age_ms,
      'LIMIT', 0, trim_limit)
    if #old > 0 then
      local keys = {}
      for j, id in ipairs(old) do keys[j] = prefix .. id end
      del_many(keys)
      zrem_many(K.completed, old)
    end
  end
  return { done_ids, rejected, too_large }
end

-- The fields of a job lease_jobs reads, the job's part of fetch's reply.
local LEASE_FIELDS = { 'state', 'handler', 'payload', 'attempt', 'max_attempts', 'timeout_ms',
  'priority', 'created_at', 'own_policy', 'depth', 'traceparent', 'tracestate', 'expires_at',
  'debounce_key' }

-- A job lease_jobs takes that has a `debounce_key` (enqueue.lua) starts, so it is no longer
-- the key's pending job: the key `<q>debounce:<key>` goes, if it still names this job.
local function release_debounce(prefix, id, debounce_key)
  local key = string.sub(prefix, 1, -5) .. 'debounce:' .. debounce_key
  if redis.pcall('GET', key) == id then redis.call('DEL', key) end
end

-- Dead-letters the job `id` (read with LEASE_FIELDS as `f`), not started by its `expires_at`
-- (enqueue.lua): state dead, outcome `expired`, a history entry (its attempt count so far, no
-- host, never started), into `plan` (new_fail_plan) for the ZADD to `dead` and the event.
-- The only extra command of a lease, and only for such a job: the HGET of its history.
local function expire_job(prefix, id, f, now, plan)
  local key = prefix .. id
  local attempt = tonumber(f[4]) or 0
  local err = 'not started by its expiry at ' .. f[13]
  local history = redis.call('HGET', key, 'history')
  history = history_append(history or nil, { attempt = attempt, outcome = 'expired',
    error = err, host = '', started_at = 0, finished_at = now })
  redis.call('HSET', key, 'state', 'dead', 'history', history, 'last_error', err,
    'last_outcome', 'expired', 'finished_at', now, 'lease_token', '')
  plan.dead[#plan.dead + 1] = now
  plan.dead[#plan.dead + 1] = id
  plan.died[#plan.died + 1] = { id, attempt }
end

-- The config fields lease_jobs reads.
local LEASE_CONFIG = { 'paused', 'events_maxlen', 'rate_max', 'rate_window_ms', 'group_rate_max',
  'group_rate_window_ms', 'group_concurrency' }

-- Reads the lease arguments of fetch.lua and complete_fetch.lua, ARGV[1..4]: N (min_n..10000),
-- lease_ms, token, host. Returns nothing when they are not valid.
local function lease_args(min_n)
  local n = math.floor(tonumber(ARGV[1]) or -1)
  local lease_ms = math.floor(tonumber(ARGV[2]) or 0)
  local token, host = ARGV[3], ARGV[4] or ''
  if n < min_n or n > 10000 or lease_ms < 1 or not token or token == '' then return end
  return n, lease_ms, token, host
end

-- When the sliding-window log `key` (window `w`, already trimmed) frees its oldest start.
local function frees_at(key, w, now)
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return (tonumber(oldest[2]) or now) + w
end

-- Leases up to `n` waiting jobs to `host` under `token` for `lease_ms` (waiting -> active),
-- after promoting due delayed and retry jobs, within the queue's rate limits: the body of
-- fetch.lua, whose header gives the rules (pause, limits, the groups' round-robin), shared with
-- complete_fetch.lua. `K` names the keys of fetch.lua; `cfg` holds LEASE_CONFIG. Returns
-- fetch's reply: {now, lease_expires_at, jobs, next_due, dropped, held}.
local function lease_jobs(prefix, K, cfg, now, n, lease_ms, token, host)
  local expires = now + lease_ms
  if n == 0 or cfg.paused == 1 then return { now, expires, {}, 0, 0, 0 } end

  local budget = n
  local queue_limited = cfg.rate_max > 0 and cfg.rate_window_ms > 0
  local queue_used = 0
  if queue_limited then
    redis.call('ZREMRANGEBYSCORE', K.rate, '-inf', now - cfg.rate_window_ms)
    queue_used = redis.call('ZCARD', K.rate)
    budget = math.min(n, cfg.rate_max - queue_used)
    if budget <= 0 then
      -- At the limit: start nothing, and tell the worker when the window frees.
      local held = (redis.call('ZCARD', K.waiting) > 0 or redis.call('ZCARD', K.groups) > 0)
        and 1 or 0
      return { now, expires, {}, frees_at(K.rate, cfg.rate_window_ms, now), 0, held }
    end
  end
  local group_limited = cfg.group_rate_max > 0 and cfg.group_rate_window_ms > 0
  local slots_max = cfg.group_concurrency
  local slots_limited = slots_max > 0

  local _, heads = promote(prefix, K, now, n, cfg.events_maxlen)

  -- The participants of this round-robin, in turn order. Without a group limit every group is
  -- ready, even one scored in the future while a limit was on.
  -- A group served within this millisecond is still ready (scores below now + 1; see `turn`).
  local ready_until = (group_limited or slots_limited) and string.format('(%d', now + 1)
    or '+inf'
  local ready
  if ready_read and ready_read.upto == ready_until and ready_read.n >= budget then
    -- The first `budget` of them, as LIMIT 0 budget would have given.
    ready = ready_read.list
    if #ready > budget then
      ready = {}
      for i = 1, budget do ready[i] = ready_read.list[i] end
    end
  else
    ready = redis.call('ZRANGEBYSCORE', K.groups, '-inf', ready_until, 'LIMIT', 0, budget)
  end
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
      p.rate_cap = p.cap
    end
    if slots_limited and p.group ~= '' then
      -- Its free slots (group concurrency). A group at its limit is parked below and comes
      -- back at a give-back, so this runs for it about once per slot freed.
      p.slots = K.gprefix .. p.group .. ':active'
      local used = redis.call('ZCARD', p.slots)
      if used >= slots_max then used = used - repair_group_slots(p.slots, K.active, now) end
      p.slot_cap = slots_max - used
      p.cap = math.min(p.cap, p.slot_cap)
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
        -- The ids alone, then their removal: ZPOPMIN would also format every score (a
        -- double) as text, for nothing.
        local popped = want > 0 and redis.call('ZRANGE', p.key, 0, want - 1) or {}
        local got = #popped
        if got > 0 then redis.call('ZREMRANGEBYRANK', p.key, 0, got - 1) end
        for i = 1, got do
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
  -- Numbers go to Redis as text; formatting them once, and as integers, costs less than
  -- letting each call convert a double.
  local now_text, expires_text = string.format('%d', now), string.format('%d', expires)
  local buried = new_fail_plan(nil)
  for i, id in ipairs(taken) do
    local key = prefix .. id
    local f, problem = nil, false
    -- An id the host could not take as text is dropped, its key left for `queue check`.
    if name_ok(id) then f, problem = read_job(key, LEASE_FIELDS) end
    if f and not problem then
      if not f[2] or f[2] == '' then
        problem = 'field handler is missing'
      elseif f[1] ~= 'waiting' then
        problem = misplaced(prefix, id, f[1], nil, 'waiting')
        if not problem then f = nil end
      end
    end
    local p = owner[i]
    if f and not problem and f[14] and f[14] ~= '' then release_debounce(prefix, id, f[14]) end
    if problem then
      bury(prefix, id, problem, now, buried)
    elseif f and f[13] and f[13] ~= '' and now > tonumber(f[13]) then
      expire_job(prefix, id, f, now, buried)
    elseif f then
      local attempt = (tonumber(f[4]) or 0) + 1
      if p.slots then
        redis.call('HSET', key, 'state', 'active', 'attempt', string.format('%d', attempt),
          'lease_token', token, 'host', host, 'started_at', now_text, 'group_slot', p.group)
        p.held = p.held or {}
        p.held[#p.held + 1] = expires_text
        p.held[#p.held + 1] = id
      else
        redis.call('HSET', key, 'state', 'active', 'attempt', string.format('%d', attempt),
          'lease_token', token, 'host', host, 'started_at', now_text)
      end
      jobs[#jobs + 1] = { id, f[2], f[3] or '', attempt, tonumber(f[5]) or 1,
        tonumber(f[6]) or 0, tonumber(f[7]) or 0, tonumber(f[8]) or 0, f[9] or '',
        tonumber(f[10]) or 0, f[11] or '', f[12] or '' }
      active[#active + 1] = expires_text
      active[#active + 1] = id
      events[#events + 1] = { id, attempt }
      if queue_limited then
        starts[#starts + 1] = now
        starts[#starts + 1] = id .. ':' .. token
      end
      if p.rate then
        p.starts = p.starts or {}
        p.starts[#p.starts + 1] = now
        p.starts[#p.starts + 1] = id .. ':' .. token
      end
    else
      -- An id without a job behind it (hash deleted by hand), or left over from a job that
      -- is in its own state's set: dropping it is all that can be done; the count tells the
      -- caller to log it.
      dropped = dropped + 1
    end
  end
  zadd_pairs(K.active, active)
  for _, p in ipairs(parts) do
    if p.held then zadd_pairs(p.slots, p.held) end
  end
  zadd_pairs(K.rate, starts)
  emit(K.events, cfg.events_maxlen, 'active', events)
  if #buried.dead > 0 then
    zadd_pairs(K.dead or state_set(prefix, 'dead'), buried.dead)
    emit(K.events, cfg.events_maxlen, 'dead', buried.died)
  end

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

  -- Each participant's next turn; `more` notes ready work left for another worker, `unsure` a
  -- set that may hold some.
  local more, unsure, held = false, nil, 0
  for _, p in ipairs(parts) do
    if p.starts then
      zadd_pairs(p.rate, p.starts)
      -- A group's log is useless after a window: an idle group leaves nothing behind.
      redis.call('PEXPIRE', p.rate, cfg.group_rate_window_ms)
    end
    local rated = p.rate ~= nil and p.took >= p.rate_cap
    local full = p.slots ~= nil and p.took >= p.slot_cap
    local limited = rated or full
    if rated and not p.empty then held = 1 end
    -- The ungrouped jobs with no group taking part: nothing to record for them in `groups`.
    local alone = p.group == '' and #parts == 1 and not plain_listed
    if p.visited or limited then
      if p.visited and not p.empty and not alone and redis.call('ZCARD', p.key) == 0 then
        p.empty = true
      end
      if p.group == '' then
        if p.empty then
          if plain_listed then redis.call('ZREM', K.groups, '') end
        elseif alone then
          -- Whether jobs are left matters only to the wake-up below, which looks if it must.
          unsure = p.key
        else
          more = true
          -- The ungrouped jobs' turn is recorded only while others take part too.
          redis.call('ZADD', K.groups, turn(), '')
        end
      elseif p.empty then
        redis.call('ZREM', K.groups, p.group)
      elseif limited then
        -- Parked until its window frees or its oldest lease expires, whichever is later; a
        -- give-back (give_back_group_slots) brings a full group back sooner.
        local at = rated and frees_at(p.rate, cfg.group_rate_window_ms, now) or 0
        if full then at = math.max(at, slots_free_at(p.slots, now)) end
        redis.call('ZADD', K.groups, at, p.group)
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
    sooner(next_scheduled(K, heads))
    if group_limited or slots_limited then
      -- The first parked group whose window frees (or whose oldest lease expires).
      local first = redis.call('ZRANGEBYSCORE', K.groups, string.format('(%d', now + 1), '+inf',
        'LIMIT', 0, 1, 'WITHSCORES')
      sooner(tonumber(first[2]))
    end
    if queue_limited and left == 0 then
      sooner(frees_at(K.rate, cfg.rate_window_ms, now))
    end
  elseif (more or unsure) and (not queue_limited or cfg.rate_max - queue_used - #jobs > 0) then
    -- A full batch and more ready: pass the wake-up on to the next idle worker.
    wake(K.wake, not more and unsure or nil)
  end
  -- The queue's limit cut the batch short with jobs left behind.
  if queue_limited and budget < n and left == 0
      and (more or (unsure and redis.call('ZCARD', unsure) > 0)) then
    held = 1
  end
  return { now, expires, jobs, next_due, dropped, held }
end

-- Reads the jobs `ids` of a call (read_job) before it writes anything, so that the keys their
-- fields name (a group's waiting set) can be checked first: {f, unusable} per id, or false for
-- an id already read, which job_read reads again when its turn comes (the call may have moved
-- it by then).
local function read_jobs(prefix, ids, names, only)
  local reads, seen = {}, {}
  for i, id in ipairs(ids) do
    if seen[id] then
      reads[i] = false
    else
      seen[id] = true
      local f, unusable = read_job(prefix .. id, names, only)
      reads[i] = { f, unusable }
    end
  end
  return reads
end

-- The job `i` of read_jobs' `reads` (the one at `key`): read_job's answer.
local function job_read(reads, i, key, names, only)
  local r = reads[i]
  if r then return r[1], r[2] end
  return read_job(key, names, only)
end

-- The group names in field `at` of the jobs read by read_jobs.
local function groups_read(reads, at)
  local groups = {}
  for _, r in ipairs(reads) do
    local group = r and r[1] and r[1][at]
    if group and group ~= '' then groups[#groups + 1] = group end
  end
  return groups
end

-- Whether promote() would move any job (up to `limit` due in `delayed` and in `retry`) and
-- their groups: one HGET per due job, so that their waiting sets are checked before promote()
-- writes. Reads each set's head (kept for promote(), heads_read: when nothing is due, the one
-- command per set), which is its type check. Returns nil and the WASMQ_WRONGTYPE error when
-- either holds another type.
local function due_groups(prefix, K, now, limit)
  local any, groups = false, {}
  for _, set in ipairs({ K.delayed, K.retry }) do
    local head, err = read_key('ZRANGE', set, 0, 0, 'WITHSCORES')
    if err then return nil, err end
    checked_types[set] = 'zset'
    heads_read[set] = head
    local at = tonumber(head[2])
    if at and at <= now then
      any = true
      for _, id in ipairs(redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, limit)) do
        local group = redis.pcall('HGET', prefix .. id, 'group')
        if type(group) == 'string' and group ~= '' then groups[#groups + 1] = group end
      end
    end
  end
  return any, groups
end

-- Every key promote() may write or look in, but the config: the type_error of the first of
-- another type, or nil; then the due jobs' groups. `K` as promote's, `checked` as in
-- group_keys_error. With nothing due (the usual case), promote() writes nothing and reads
-- `delayed` and `retry` only, which due_groups checked: nothing more to look at. Nothing the
-- caller does between this check and its promote() adds to either set.
local function promote_keys_error(prefix, K, now, limit, checked)
  local due, groups = due_groups(prefix, K, now, limit)
  if due == nil then return groups end
  if not due then return nil, groups end
  return type_error(K.waiting, 'zset', K.groups, 'zset', K.seq, 'string', K.dead, 'zset')
    or state_sets_error(prefix)
    or group_keys_error(K.gprefix, groups, false, checked), groups
end

-- Every key lease_jobs (fetch) may write or look in, but the config (read first, `cfg`): the
-- error for the first of another type, or nil. Reads nothing more when lease_jobs would lease
-- nothing. Costs one TYPE per key it has not seen this call: `active`, the state sets (a
-- misplaced job is looked up in its own state's set), `rate` with a queue limit, the due jobs'
-- groups and the ready groups (lease_jobs reads them after promote(), whose new groups are
-- among the due jobs': with a group limit, their rate logs and slots are checked too); the
-- read of the ready groups checks `groups`.
local function lease_keys_error(prefix, K, cfg, now, n)
  if n == 0 or cfg.paused == 1 then return nil end
  local queue_limited = cfg.rate_max > 0 and cfg.rate_window_ms > 0
  local err = type_error(K.active, 'zset', queue_limited and K.rate or nil, 'zset')
  if err then return err end
  local checked = {}
  local due
  err, due = promote_keys_error(prefix, K, now, n, checked)
  err = err or state_sets_error(prefix)
  if err then return err end
  local group_limited = cfg.group_rate_max > 0 and cfg.group_rate_window_ms > 0
  local slots_limited = cfg.group_concurrency > 0
  local ready_until = (group_limited or slots_limited) and string.format('(%d', now + 1)
    or '+inf'
  local ready
  ready, err = read_key('ZRANGEBYSCORE', K.groups, '-inf', ready_until, 'LIMIT', 0, n)
  if err then return err end
  checked_types[K.groups] = 'zset'
  ready_read = { upto = ready_until, n = n, list = ready }
  if not (group_limited or slots_limited) then
    return group_keys_error(K.gprefix, ready, false, checked)
  end
  -- Groups checked for promote() have their rate logs and slots still to check.
  checked = {}
  return group_keys_error(K.gprefix, ready, group_limited, checked, slots_limited)
    or group_keys_error(K.gprefix, due or {}, group_limited, checked, slots_limited)
end

-- Every key complete_jobs may write or look in, but the config (`cfg`, COMPLETE_CONFIG), for
-- the completions in ARGV from `first`: `completed` only when the queue keeps jobs there or
-- ages them out of it, `outbox` only when a completion has children.
local function complete_keys_error(K, cfg, first)
  local outbox = nil
  for i = first + 6, #ARGV - 1, 8 do
    if ARGV[i] ~= '' then
      outbox = K.outbox
      break
    end
  end
  local completed = (cfg.completed_keep ~= 0 or cfg.completed_max_age_ms > 0) and K.completed
    or nil
  return type_error(K.active, 'zset', completed, 'zset', K.dead, 'zset', outbox, 'zset')
end

-- Every key a fail plan (fail_job, apply_fail_plan) may write, but the config and the groups'
-- waiting sets (group_keys_error with the jobs' groups).
local function fail_keys_error(K)
  return type_error(K.active, 'zset', K.retry, 'zset', K.dead, 'zset', K.waiting, 'zset',
    K.groups, 'zset', K.seq, 'string')
end

-- Cancel (cancel.lua, cancel_filter.lua): a job in any state but completed and dead is
-- dead-lettered with outcome `cancelled`, never deleted, so that its history stays and
-- `replay` can run it again. The fields a cancel reads, in this order.
local CANCEL_FIELDS = { 'state', 'lease_token', 'attempt', 'group', 'history', 'started_at',
  'host', 'handler', 'group_slot' }
-- The most bytes of a cancel's `by` and `reason` kept.
local MAX_CANCEL_TEXT = 256

-- What a cancel of the job `id` (CANCEL_FIELDS `f`) writes: state `dead`, `last_outcome`
-- `cancelled`, `cancelled_by` and `cancel_reason`, and one history entry (outcome
-- `cancelled`, `by`, the reason as its error; for a running job the attempt's host and start).
-- plan.dead gets the ZADD pair, plan.cancelled the event. Never raises: every value written
-- is a string or a checked number.
local function cancel_record(prefix, id, f, now, by, reason, plan, running)
  local attempt = int_field('attempt', f[3], 0)
  local last_error = 'cancelled' .. (by ~= '' and (' by ' .. by) or '')
    .. (reason ~= '' and (': ' .. reason) or '')
  local history = history_append(f[5], { attempt = attempt, outcome = 'cancelled',
    error = reason, by = by, host = running and (f[7] or '') or '',
    started_at = running and int_field('started_at', f[6], 0) or 0, finished_at = now })
  redis.call('HSET', prefix .. id, 'state', 'dead', 'history', history, 'last_outcome',
    'cancelled', 'last_error', last_error, 'finished_at', now, 'lease_token', '',
    'cancelled_by', by, 'cancel_reason', reason)
  plan.dead[#plan.dead + 1] = now
  plan.dead[#plan.dead + 1] = id
  plan.cancelled[#plan.cancelled + 1] = { id, attempt }
end

-- Cancels the running (active) job `id`, read with CANCEL_FIELDS into `f`: ends its lease
-- (out of `K.active`, its token cleared, so that whatever its holder sends later under that
-- token, complete, fail, extend, step_save, suspend, is refused as a lost lease), records it
-- as cancel_record does, and tells its holder on `K.channel` (a PUBLISH of '<token> <id>',
-- which the host that runs it hears and stops the attempt on; a host that misses it stops
-- the attempt when its next heartbeat, extend.lua, is refused). This is the one place an
-- active job is cancelled: whatever a running job holds is given back here (its group's
-- slot: noted in plan.freed, which the caller gives back with give_back_group_slots).
local function cancel_active(prefix, id, f, now, by, reason, plan, K)
  redis.call('ZREM', K.active, id)
  note_group_slot(plan.freed, f[9], id)
  cancel_record(prefix, id, f, now, by, reason, plan, true)
  -- A notification is a hint: the heartbeat is the fallback, so nothing about it may fail
  -- the call after its writes.
  if K.channel and f[2] and f[2] ~= '' then
    redis.pcall('PUBLISH', K.channel, f[2] .. ' ' .. id)
  end
end

-- Cancels the job `id` read with CANCEL_FIELDS into `f` (a usable job: not malformed),
-- whatever its state: waiting (its group's set when it has one; a group left empty leaves the
-- round-robin), delayed (a durable sleep too), retry, or active when `K.active` is given
-- (cancel_active). Returns 'cancelled', or the state it was left in (completed, dead; active
-- for a caller without `K.active`). `K` names waiting, delayed, retry, gprefix, groups,
-- active and channel.
local function cancel_job(prefix, id, f, now, by, reason, plan, K)
  local state, group = f[1], f[4]
  if state == 'active' then
    if not K.active then return state end
    cancel_active(prefix, id, f, now, by, reason, plan, K)
    return 'cancelled'
  end
  if state == 'waiting' and group and group ~= '' then
    local set = K.gprefix .. group .. ':waiting'
    redis.call('ZREM', set, id)
    if redis.call('ZCARD', set) == 0 then redis.call('ZREM', K.groups, group) end
  elseif state == 'waiting' or state == 'delayed' or state == 'retry' then
    redis.call('ZREM', K[state], id)
  else
    return state
  end
  cancel_record(prefix, id, f, now, by, reason, plan, false)
  return 'cancelled'
end

-- A cancel's `by` or `reason` argument as it is stored: text, cut to MAX_CANCEL_TEXT bytes.
local function cancel_text(v)
  return string.sub(v or '', 1, MAX_CANCEL_TEXT)
end
