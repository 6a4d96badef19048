-- check: find what is out of step in a queue and, with repair, put it right: one bounded part
-- per call, which `Client::check` (`wasmq queue check`) walks over the whole queue. Every
-- repair is idempotent: checking again after a repair finds nothing.
--
-- What it finds (`kind` in the reply), and the repair:
--   dangling         an id in a set with no job key behind it: removed from the set.
--   malformed        a job key that is not a hash, without a state or handler, or with a field
--                    the host cannot read: buried (bury in lib.lua: the dead-letter queue, outcome
--                    `malformed`, its key kept as `<q>malformed:<id>`), out of every other set.
--   in_no_set        a job in none of the sets: put back into its state's set.
--   contradicts_set  a job in another state's set but not its own: moved to its own.
--   in_two_sets      a job in its own set and another: taken out of the other.
--   group_not_listed a group with waiting jobs missing from `groups`: added (at now).
--   group_listed_empty a group in `groups` with no waiting job: removed.
--   wrong_type       a queue key of another type than the protocol's: reported only (it holds
--                    something wasmq did not write; a person decides), with the commands to
--                    look at it. Every call that writes it is refused meanwhile (type_error in
--                    lib.lua); this check repairs around it (a job whose own set it is stays
--                    where it is), and with `config`, `dead` or `seq` of another type repairs
--                    nothing, reporting its findings unrepaired.
-- A job put back into `active` is scored now: its lease counts as expired, so recover fails
-- the attempt as `lease_expired`, unless its holder heartbeats it first.
--
-- KEYS[1] job prefix  KEYS[2] config  KEYS[3] waiting  KEYS[4] delayed  KEYS[5] active
-- KEYS[6] retry  KEYS[7] completed  KEYS[8] dead  KEYS[9] events  KEYS[10] group prefix
-- KEYS[11] groups  KEYS[12] seq  KEYS[13] wake  KEYS[14] rate  KEYS[15] outbox
-- KEYS[16] alerts (14..16 optional: only the 'keys' part looks at them)
-- ARGV[1] repair ('1' repairs, '0' only reports)  ARGV[2] part:
--   'jobs'   ARGV[3] the group whose waiting set the ids were found in ('' when none), then
--            up to 1000 job ids: each job's key and its place in every set
--   'active' ARGV[3] limit (1..1000): the same for the first ids of `active`, without
--            decoding histories: the cheap part that hosts run on their own
--   'groups' ARGV[3..] up to 1000 group names: each group's waiting set against `groups`
--   'keys'   the type of every queue key above
-- Reply: list of {kind, subject (job id, group or key), detail, repaired (1 or 0)}.

local prefix = KEYS[1]
local repair = ARGV[1] == '1'
local part = ARGV[2]
local now = now_ms()
local findings = {}
local function found(kind, subject, detail, repaired)
  findings[#findings + 1] = { kind, subject, detail, repaired and 1 or 0 }
end

-- What a wrong_type finding says: the type found and wanted, and how to look at the key.
local function wrong_type_detail(key, t, want)
  return 'is a ' .. t .. ', not a ' .. want .. ': calls that write it are refused; look at it '
    .. 'with TYPE ' .. key .. ' and DUMP ' .. key .. ', then RENAME it away or DEL it '
    .. '(wasmq cannot repair it without losing what it holds)'
end

if part == 'keys' then
  local expected = { [2] = 'hash', [3] = 'zset', [4] = 'zset', [5] = 'zset', [6] = 'zset',
    [7] = 'zset', [8] = 'zset', [9] = 'stream', [11] = 'zset', [12] = 'string', [13] = 'list',
    [14] = 'zset', [15] = 'zset', [16] = 'hash' }
  for i = 2, #KEYS do
    if expected[i] then
      local t = type_of(KEYS[i])
      if t ~= 'none' and t ~= expected[i] then
        found('wrong_type', KEYS[i], wrong_type_detail(KEYS[i], t, expected[i]), false)
      end
    end
  end
  return findings
end

-- A repair writes a state set only after finding it of its type (a set that holds the id, or
-- TYPE), and `groups` with redis.pcall; but it buries into `dead` and takes numbers from `seq`
-- as they are: with either of another type, or the config (the 'keys' part reports them),
-- this call only reports.
local cfg = read_config(KEYS[2], { 'events_maxlen' })
if not cfg or type_error(KEYS[8], 'zset', KEYS[12], 'string') then
  repair = false
  cfg = cfg or { events_maxlen = 0 }
end

local gprefix, groups_key = KEYS[10], KEYS[11]
local function group_set(group) return gprefix .. group .. ':waiting' end

-- Takes a group out of the round-robin once its waiting set is empty.
-- (`groups` of another type is left alone: the 'keys' part reports it.)
local function leave_groups_if_empty(group)
  if redis.pcall('ZCARD', group_set(group)) == 0 then redis.pcall('ZREM', groups_key, group) end
end

if part == 'groups' then
  for i = 3, #ARGV do
    local group = ARGV[i]
    if group ~= '' then
      local waiting = redis.pcall('ZCARD', group_set(group))
      local listed = redis.pcall('ZSCORE', groups_key, group)
      if type(listed) == 'table' and listed.err then
        -- `groups` of another type: reported by the 'keys' part.
      elseif type(waiting) ~= 'number' then
        found('wrong_type', group_set(group),
          wrong_type_detail(group_set(group), type_of(group_set(group)), 'zset'), false)
      elseif waiting > 0 and not listed then
        if repair then redis.call('ZADD', groups_key, 'NX', now, group) end
        found('group_not_listed', group, waiting .. ' waiting job(s)', repair)
      elseif waiting == 0 and listed then
        if repair then redis.call('ZREM', groups_key, group) end
        found('group_listed_empty', group, 'no waiting job', repair)
      end
    end
  end
  return findings
end

-- The jobs to look at: those named, or (the cheap part hosts run) the first ids of `active`.
local ids, deep = {}, part == 'jobs'
if part == 'jobs' then
  for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
elseif part == 'active' then
  local limit = int_in(ARGV[3], 1, 1000)
  if not limit then return redis.error_reply('WASMQ_INVALID check active needs a limit') end
  local wrong
  ids, wrong = read_key('ZRANGE', KEYS[5], 0, limit - 1)
  if wrong then return wrong end
else
  return redis.error_reply('WASMQ_INVALID check needs the part: jobs, active, groups or keys')
end

local SETS = { waiting = KEYS[3], delayed = KEYS[4], active = KEYS[5], retry = KEYS[6],
  completed = KEYS[7], dead = KEYS[8] }
local ORDER = { 'waiting', 'delayed', 'active', 'retry', 'completed', 'dead' }
-- Every field the host reads (Job::from_hash), for the same checks as the scripts make.
local FIELDS = { 'state', 'handler', 'max_attempts', 'created_at', 'priority', 'attempt',
  'replays', 'seq', 'timeout_ms', 'backoff', 'backoff_ms', 'backoff_cap_ms', 'backoff_jitter',
  'started_at', 'run_at', 'finished_at', 'group', 'own_policy', 'history' }
local found_group = deep and ARGV[3] or ''
local plan = new_fail_plan(nil)

-- Why a job read with FIELDS is malformed beyond field_problem: fields the host requires.
local function required_problem(f)
  for i = 2, 4 do
    if not f[i] then return 'field ' .. FIELDS[i] .. ' is missing' end
  end
  local history = f[19]
  -- Decoding every history costs Redis time: only a full check does.
  if deep and history and history ~= '' then
    local ok, list = pcall(cjson.decode, history)
    if not ok or type(list) ~= 'table' then return 'field history is not a JSON list' end
  end
  return nil
end

-- The score of a job put back into the set of `state` (its fields `f`, read with FIELDS).
local function score_in(state, f)
  if state == 'waiting' then
    return waiting_score(f[5], f[8] or next_seq(KEYS[12], 1))
  elseif state == 'delayed' or state == 'retry' then
    return tonumber(f[15]) or now
  elseif state == 'completed' or state == 'dead' then
    return tonumber(f[16]) or now
  end
  return now
end

for _, id in ipairs(ids) do
  local key = prefix .. id
  local f, problem = read_job(key, FIELDS)
  if f and not problem then problem = required_problem(f) end
  local group = f and not problem and f[17] or ''
  -- Every set that holds the id: {label, key}.
  local holders = {}
  -- A set of another type holds nothing here (the 'keys' part reports it).
  for _, state in ipairs(ORDER) do
    if type(redis.pcall('ZSCORE', SETS[state], id)) == 'string' then
      holders[#holders + 1] = { state, SETS[state] }
    end
  end
  local seen = {}
  for _, g in ipairs({ group, found_group }) do
    if g ~= '' and not seen[g] then
      seen[g] = true
      -- A set of another type answers an error here; the 'groups' part reports it.
      if type(redis.pcall('ZSCORE', group_set(g), id)) == 'string' then
        holders[#holders + 1] = { 'g:' .. g .. ':waiting', group_set(g), group = g }
      end
    end
  end
  local function remove_from(list)
    for _, h in ipairs(list) do
      redis.call('ZREM', h[2], id)
      if h.group then leave_groups_if_empty(h.group) end
    end
    return true
  end
  local function labels(list)
    local out = {}
    for _, h in ipairs(list) do out[#out + 1] = h[1] end
    return table.concat(out, ', ')
  end

  if not f and problem == false then
    if #holders > 0 then
      if repair then remove_from(holders) end
      found('dangling', id, 'no job key, but in ' .. labels(holders), repair)
    end
  elseif problem then
    if repair then
      remove_from(holders)
      bury(prefix, id, problem, now, plan)
    end
    found('malformed', id, problem, repair)
  else
    local state = f[1]
    local own = state == 'waiting' and group ~= '' and group_set(group) or SETS[state]
    local mine, others = false, {}
    for _, h in ipairs(holders) do
      if h[2] == own then mine = true else others[#others + 1] = h end
    end
    if mine and #others > 0 then
      if repair then remove_from(others) end
      found('in_two_sets', id, 'state ' .. state .. ', also in ' .. labels(others), repair)
    elseif not mine then
      local repaired = false
      -- Its own set may be of another type (reported by the 'keys' part): then the job is
      -- left where it is.
      if repair then
        local t = redis.call('TYPE', own)
        t = t.ok or t
        if t == 'zset' or t == 'none' then
          remove_from(others)
          redis.call('ZADD', own, score_in(state, f), id)
          if own ~= SETS[state] then redis.pcall('ZADD', groups_key, 'NX', now, group) end
          repaired = true
        end
      end
      if #others > 0 then
        found('contradicts_set', id, 'state ' .. state .. ' but in ' .. labels(others), repaired)
      else
        found('in_no_set', id, 'state ' .. state, repaired)
      end
    end
  end
end
zadd_pairs(KEYS[8], plan.dead)
emit(KEYS[9], cfg.events_maxlen, 'dead', plan.died)
return findings
