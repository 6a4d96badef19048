-- suspend: end active jobs' attempts at a durable sleep (active -> delayed), without counting
-- them: like release, the attempt counter goes back down, and the job is due again after its
-- sleep. The sleep's field is written into the job's steps in the same call, so the attempt
-- that runs after the sleep finds it elapsed; a host that dies before this call leaves the
-- job to lease expiry, and the next attempt sleeps again (a sleep lasts at least its time).
--
-- An empty field is a start held back by its handler's throttle (throttle.lua): the job waits
-- the same way, uncounted, but nothing ran, so it gets no history entry and no step field,
-- and the event is `throttled`.
--
-- KEYS[1] job prefix  KEYS[2] config  KEYS[3] active  KEYS[4] delayed  KEYS[5] events
-- KEYS[6] steps prefix
-- ARGV: octuples id, token, sleep field (`sleep:<name>`, or '' for a throttled start),
--   delay_ms, handler version, logs, progress, call record (the last four for the attempt's
--   history entry, '' when none; the call record as in complete.lua). The entry records the
--   sleep as `sleep` (its name) and `sleep_ms` (the delay), and in its error text as before.
-- Reply: {suspended, rejected}: suspended lists {id, run_at_ms}; rejected {id, reason} as in
--   extend (those jobs are untouched, but for a job whose key or fields cannot be read: it is
--   buried as malformed, bury in lib.lua, and rejected as 'not_active:dead').
-- Error (nothing written): 'WASMQ_WRONGTYPE <key> <type>' (type_error in lib.lua).

local prefix = KEYS[1]
if not KEYS[6] then
  return redis.error_reply('WASMQ_INVALID suspend needs 6 keys')
end
local cfg, wrong = read_config(KEYS[2], { 'events_maxlen' })
wrong = wrong or type_error(KEYS[3], 'zset', KEYS[4], 'zset', state_set(prefix, 'dead'), 'zset')
if wrong then return wrong end
local now = now_ms()
local suspended, rejected, delayed, ids, events, throttled = {}, {}, {}, {}, {}, {}
local plan = new_fail_plan(nil)
local freed = {}
for i = 1, #ARGV - 7, 8 do
  local id, token, field = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local delay = int_in(ARGV[i + 3], 0, 1e15) or -1
  local version, logs, progress, calls = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local key = prefix .. id
  local f, unusable = read_job(key, { 'state', 'lease_token', 'attempt', 'history', 'host',
    'started_at', 'group_slot' })
  local problem = lease_check(f, unusable, token)
  if not problem and delay < 0 then problem = 'invalid_delay' end
  if f and (not problem or problem == 'malformed') then note_group_slot(freed, f[7], id) end
  -- Written with the state below when the job held a group slot (given back after the loop).
  local slot = (f and f[7] and f[7] ~= '') and { 'group_slot', '' } or {}
  if problem and problem ~= 'malformed' then
    rejected[#rejected + 1] = { id, problem }
  elseif unusable then
    bury(prefix, id, unusable, now, plan)
    rejected[#rejected + 1] = { id, 'not_active:dead' }
    ids[#ids + 1] = id
  else
    local attempt = tonumber(f[3]) or 1
    local run_at = now + delay
    if field == '' then
      redis.call('HSET', key, 'state', 'delayed', 'attempt', math.max(attempt - 1, 0),
        'run_at', run_at, 'lease_token', '', unpack(slot))
      throttled[#throttled + 1] = { id, attempt }
    else
      local call_list, dropped = calls_of(calls)
      local name = string.sub(field, 1, 6) == 'sleep:' and string.sub(field, 7) or field
      local history = history_append(f[4], { attempt = attempt, outcome = 'suspended',
        error = 'sleeping ' .. delay .. ' ms (' .. field .. ')', host = f[5] or '',
        started_at = tonumber(f[6]) or 0, finished_at = now,
        version = version ~= '' and version or nil,
        logs = logs ~= '' and string.sub(logs, 1, MAX_LOGS_LEN) or nil,
        progress = progress_of(progress), sleep = name,
        sleep_ms = delay < 1e14 and delay or nil,
        calls = call_list, calls_dropped = dropped })
      redis.call('HSET', key, 'state', 'delayed', 'attempt', math.max(attempt - 1, 0),
        'run_at', run_at, 'history', history, 'lease_token', '', unpack(slot))
      -- A steps key of another type loses only the sleep's record: the attempt after it
      -- sleeps again (a sleep lasts at least its time).
      redis.pcall('HSET', KEYS[6] .. id, field, run_at)
      events[#events + 1] = { id, attempt }
    end
    delayed[#delayed + 1] = run_at
    delayed[#delayed + 1] = id
    ids[#ids + 1] = id
    suspended[#suspended + 1] = { id, run_at }
  end
end
zrem_many(KEYS[3], ids)
give_back_group_slots(prefix, freed, now)
zadd_pairs(KEYS[4], delayed)
emit(KEYS[5], cfg.events_maxlen, 'suspended', events)
emit(KEYS[5], cfg.events_maxlen, 'throttled', throttled)
zadd_pairs(state_set(prefix, 'dead'), plan.dead)
emit(KEYS[5], cfg.events_maxlen, 'dead', plan.died)
return { suspended, rejected }
