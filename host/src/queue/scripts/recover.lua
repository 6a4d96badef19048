-- recover: find active jobs whose lease expired (the holder crashed, hung or lost Redis) and
-- fail their attempt with outcome 'lease_expired', error 'lease expired': the job retries
-- after its backoff or, out of attempts, goes dead. Any host may call it; a late complete or
-- fail from the old holder is then rejected (the job is no longer active under its token).
--
-- KEYS[1] job prefix  KEYS[2] config  KEYS[3] active  KEYS[4] retry  KEYS[5] dead
-- KEYS[6] waiting     KEYS[7] seq     KEYS[8] events  KEYS[9] wake  KEYS[10] group prefix
-- KEYS[11] groups (as fail.lua)
-- ARGV[1] limit (max jobs per call, 1..10000)  ARGV[2] random seed for the jitter; then
--   pairs handler name, retry policy (as in fail.lua): the policies the calling host knows,
--   applied to the recovered jobs of those handlers as a fail would
-- Reply: {outcomes} as in fail.lua.
-- Error (nothing written): 'WASMQ_WRONGTYPE <key> <type>' (type_error in lib.lua).

local prefix = KEYS[1]
local K = { config = KEYS[2], active = KEYS[3], retry = KEYS[4], dead = KEYS[5],
  waiting = KEYS[6], seq = KEYS[7], events = KEYS[8], wake = KEYS[9], gprefix = KEYS[10],
  groups = KEYS[11] }
local limit = math.floor(tonumber(ARGV[1]) or 0)
if limit < 1 or limit > 10000 then
  return redis.error_reply('WASMQ_INVALID recover needs limit in 1..10000')
end
math.randomseed(tonumber(ARGV[2]) or 0)
local policies = {}
for i = 3, #ARGV - 1, 2 do policies[ARGV[i]] = ARGV[i + 1] end
local now = now_ms()
local cfg, wrong = read_config(K.config, { 'events_maxlen', 'paused' })
wrong = wrong or fail_keys_error(K) or state_sets_error(prefix)
if wrong then return wrong end
K.paused = cfg.paused
local expired = redis.call('ZRANGEBYSCORE', K.active, '-inf', string.format('(%d', now),
  'LIMIT', 0, limit)
-- Every job is read first: the waiting sets of their groups (where a job goes, or is looked
-- for by misplaced) are checked before the first write.
local reads = read_jobs(prefix, expired, FAIL_FIELDS, NO_FIELDS)
wrong = group_keys_error(K.gprefix, groups_read(reads, 13))
if wrong then return wrong end
local plan = new_fail_plan(K.seq)
local outcomes, freed = {}, {}
for i, id in ipairs(expired) do
  local f, unusable = job_read(reads, i, prefix .. id, FAIL_FIELDS, NO_FIELDS)
  -- Its group slot goes back with it (a job still elsewhere holds none: it gave it back).
  if f and f[1] == 'active' then note_group_slot(freed, f[16], id) end
  if f and f[1] == 'active' then
    local next_state, at = fail_job(prefix, id, f, now, 'lease_expired', 'lease expired', false,
      plan, '', parse_policy(policies[f[15]]))
    outcomes[#outcomes + 1] = { id, next_state, at }
  else
    -- An id in `active` whose job is in its own state's set is stale, and removing it is the
    -- whole repair; a job in no set, or that cannot be read, is buried.
    if f then
      unusable = field_problem({ 'state', 'group' }, { f[1], f[13] })
        or misplaced(prefix, id, f[1], f[13], 'active')
    end
    if unusable then
      bury(prefix, id, unusable, now, plan)
      outcomes[#outcomes + 1] = { id, 'dead', now }
    end
  end
end
zrem_many(K.active, expired)
give_back_group_slots(prefix, freed, now)
apply_fail_plan(plan, K, cfg.events_maxlen, now)
return { outcomes }
