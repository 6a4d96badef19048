-- release: hand active jobs back to `waiting` without counting the attempt (graceful shutdown:
-- the host stopped before the jobs finished, the jobs did nothing wrong). The attempt counter
-- goes back down and the job returns to its original place in line (its stored sequence).
--
-- KEYS[1] job prefix  KEYS[2] config  KEYS[3] active  KEYS[4] waiting  KEYS[5] events
-- KEYS[6] wake        KEYS[7] group prefix  KEYS[8] groups
-- ARGV: pairs id, token
-- Reply: {released_ids, rejected} with rejected as in extend. A job whose key or fields
--   cannot be read is buried as malformed (bury in lib.lua) and rejected as 'not_active:dead'.
-- Error (nothing written): 'WASMQ_WRONGTYPE <key> <type>' (type_error in lib.lua).

local prefix = KEYS[1]
local K = { waiting = KEYS[4], gprefix = KEYS[7], groups = KEYS[8] }
local cfg, wrong = read_config(KEYS[2], { 'events_maxlen', 'paused' })
if wrong then return wrong end
local released, rejected, waiting, events, leaving = {}, {}, new_waiting(), {}, {}
local now = now_ms()
local plan = new_fail_plan(nil)
-- Every job is read first, so that its group's waiting set is checked before the first write.
local FIELDS = { 'state', 'lease_token', 'attempt', 'priority', 'seq', 'group', 'group_slot' }
local freed = {}
local ids = {}
for i = 1, #ARGV - 1, 2 do ids[#ids + 1] = ARGV[i] end
local reads = read_jobs(prefix, ids, FIELDS)
wrong = type_error(KEYS[3], 'zset', KEYS[4], 'zset', KEYS[8], 'zset',
    state_set(prefix, 'dead'), 'zset')
  or group_keys_error(KEYS[7], groups_read(reads, 6))
if wrong then return wrong end
for i = 1, #ARGV - 1, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local key = prefix .. id
  local f, unusable = job_read(reads, (i + 1) / 2, key, FIELDS)
  local problem = lease_check(f, unusable, token)
  if f and (not problem or problem == 'malformed') then note_group_slot(freed, f[7], id) end
  if problem and problem ~= 'malformed' then
    rejected[#rejected + 1] = { id, problem }
  elseif unusable then
    bury(prefix, id, unusable, now, plan)
    rejected[#rejected + 1] = { id, 'not_active:dead' }
    leaving[#leaving + 1] = id
  else
    local attempt = math.max((tonumber(f[3]) or 1) - 1, 0)
    if f[7] and f[7] ~= '' then
      redis.call('HSET', key, 'state', 'waiting', 'attempt', attempt, 'lease_token', '',
        'group_slot', '')
    else
      redis.call('HSET', key, 'state', 'waiting', 'attempt', attempt, 'lease_token', '')
    end
    add_waiting(waiting, f[6], waiting_score(f[4], f[5]), id)
    released[#released + 1] = id
    leaving[#leaving + 1] = id
    events[#events + 1] = { id, attempt }
  end
end
zrem_many(KEYS[3], leaving)
if waiting.n > 0 then flush_waiting(waiting, K, now) end
give_back_group_slots(prefix, freed, now)
emit(KEYS[5], cfg.events_maxlen, 'released', events)
zadd_pairs(state_set(prefix, 'dead'), plan.dead)
emit(KEYS[5], cfg.events_maxlen, 'dead', plan.died)
if #released > 0 and cfg.paused == 0 then wake(KEYS[6]) end
return { released, rejected }
