-- fail: record a failed attempt of active jobs and move each on (active -> retry after its
-- backoff, or -> waiting when the backoff is 0, or -> dead when the failure is permanent or
-- the job is out of attempts). Dead-lettering is this transition with permanent = 1.
--
-- KEYS[1] job prefix  KEYS[2] config  KEYS[3] active  KEYS[4] retry  KEYS[5] dead
-- KEYS[6] waiting     KEYS[7] seq     KEYS[8] events  KEYS[9] wake  KEYS[10] group prefix
-- KEYS[11] groups (a job with a group that goes straight back to waiting goes to its group's)
-- ARGV[1] random seed for the backoff jitter (an integer); then per job ten values:
--   id, token, outcome class (e.g. 'timeout', 'trap', 'guest_fail'), error message,
--   permanent ('1' or '0'), handler version that ran the attempt ('' if none), the
--   handler's retry policy ('' if none; format in parse_policy, lib.lua), which applies to
--   the parts of the policy the job did not set itself, the attempt's log ('' if none; the
--   first 4096 bytes are kept), its last progress 0-100 ('' if none), its call record ('' if
--   none; calls_of in lib.lua, docs/protocol.md)
-- Reply: {outcomes, rejected}: outcomes lists {id, 'retry' | 'dead', run_at_ms (retry) or
--   finished_at_ms (dead)}; rejected lists {id, reason} as in extend (those are untouched).
-- A job whose key or fields cannot be read (as the host reads them, under the handler's
-- policy) is buried as malformed (bury in lib.lua) and reported 'dead'; the others go on.
-- Error (nothing written): 'WASMQ_WRONGTYPE <key> <type>' (type_error in lib.lua).

local prefix = KEYS[1]
local K = { config = KEYS[2], active = KEYS[3], retry = KEYS[4], dead = KEYS[5],
  waiting = KEYS[6], seq = KEYS[7], events = KEYS[8], wake = KEYS[9], gprefix = KEYS[10],
  groups = KEYS[11] }
-- Redis seeds the script PRNG identically for every call; the caller's seed makes jitter real.
math.randomseed(tonumber(ARGV[1]) or 0)
local now = now_ms()
local cfg, wrong = read_config(K.config, { 'events_maxlen', 'paused' })
if wrong then return wrong end
K.paused = cfg.paused
-- Every job is read first: the waiting sets of their groups are checked with the queue's keys
-- before the first write. fail_job checks the fields itself, under the handler's policy.
local ids = {}
for i = 2, #ARGV - 9, 10 do ids[#ids + 1] = ARGV[i] end
local reads = read_jobs(prefix, ids, FAIL_FIELDS, NO_FIELDS)
wrong = fail_keys_error(K) or group_keys_error(K.gprefix, groups_read(reads, 13))
if wrong then return wrong end
local plan = new_fail_plan(K.seq)
local outcomes, rejected, leaving, freed = {}, {}, {}, {}
for i = 2, #ARGV - 9, 10 do
  local id, token, outcome, err, permanent = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
    ARGV[i + 4] == '1'
  local version, policy = ARGV[i + 5], parse_policy(ARGV[i + 6])
  local logs, progress, calls = ARGV[i + 7], ARGV[i + 8], ARGV[i + 9]
  local f, unusable = job_read(reads, (i + 8) / 10, prefix .. id, FAIL_FIELDS, NO_FIELDS)
  local problem = lease_check(f, unusable, token)
  if f and (not problem or problem == 'malformed') then note_group_slot(freed, f[16], id) end
  if problem == 'malformed' then
    bury(prefix, id, unusable, now, plan)
    outcomes[#outcomes + 1] = { id, 'dead', now }
    leaving[#leaving + 1] = id
  elseif problem then
    rejected[#rejected + 1] = { id, problem }
  else
    local next_state, at = fail_job(prefix, id, f, now, outcome, err, permanent, plan, version,
      policy, logs, progress, calls)
    outcomes[#outcomes + 1] = { id, next_state, at }
    leaving[#leaving + 1] = id
  end
end
zrem_many(K.active, leaving)
give_back_group_slots(prefix, freed, now)
apply_fail_plan(plan, K, cfg.events_maxlen, now)
return { outcomes, rejected }
