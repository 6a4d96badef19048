-- cancel: stop jobs whatever their state: waiting, delayed (a durable sleep too), retry, or
-- active (running on a host). A cancelled job is not deleted: it is dead-lettered with
-- `last_outcome` `cancelled`, `cancelled_by`, `cancel_reason` and a history entry (outcome
-- `cancelled`), is not retried, and `replay` can run it again (cancel_job in lib.lua). An
-- active job's lease ends here (cancel_active in lib.lua): its holder's later calls under
-- that lease are refused, its group slot (group concurrency) is given back, and the holder is
-- told on the cancel channel to stop the attempt.
-- Completed and dead jobs are left as they are.
--
-- KEYS[1] job prefix  KEYS[2] config  KEYS[3] waiting  KEYS[4] delayed  KEYS[5] retry
-- KEYS[6] events      KEYS[7] group prefix  KEYS[8] groups  KEYS[9] steps prefix (unused: a
-- cancelled job keeps its durable steps, as any dead job does)  KEYS[10] active
-- KEYS[11] dead  KEYS[12] cancel channel
-- ARGV with the twelve keys: ARGV[1] by (who cancels: an API token's name, 'cli', what a
--   client passes), ARGV[2] reason (each cut to 256 bytes; '' for none), ARGV[3..] job ids.
-- The old form, nine keys (or eight) and ARGV the job ids, still works: the cancelled jobs go
--   to `<q>dead` (named from the job prefix), with no by or reason, and an active job is left
--   running (its reply is 'active').
-- Reply: one {id, outcome} per id: 'cancelled', 'not_found', the state it is in (completed,
--   dead), or 'malformed' for a key that is not a job hash (left alone: `queue check
--   --repair`).
-- Error (nothing written): 'WASMQ_WRONGTYPE <key> <type>' (type_error in lib.lua).

local prefix = KEYS[1]
local cfg, wrong = read_config(KEYS[2], { 'events_maxlen' })
if wrong then return wrong end
local K = { waiting = KEYS[3], delayed = KEYS[4], retry = KEYS[5], gprefix = KEYS[7],
  groups = KEYS[8], active = KEYS[10], dead = KEYS[11] or state_set(prefix, 'dead'),
  channel = KEYS[12] }
local by, reason, first = '', '', 1
if KEYS[11] then
  by, reason, first = cancel_text(ARGV[1]), cancel_text(ARGV[2]), 3
end
local ids = {}
for i = first, #ARGV do ids[#ids + 1] = ARGV[i] end
-- Every job is read first, so that its group's waiting set is checked before the first write.
local reads = read_jobs(prefix, ids, CANCEL_FIELDS, NO_FIELDS)
wrong = type_error(K.waiting, 'zset', K.delayed, 'zset', K.retry, 'zset', K.groups, 'zset',
  K.active, 'zset', K.dead, 'zset') or group_keys_error(K.gprefix, groups_read(reads, 4))
if wrong then return wrong end
local now = now_ms()
local replies, plan = {}, { dead = {}, cancelled = {}, freed = {} }
for i, id in ipairs(ids) do
  local f, unusable = job_read(reads, i, prefix .. id, CANCEL_FIELDS, NO_FIELDS)
  if not f then
    replies[i] = { id, unusable and 'malformed' or 'not_found' }
  else
    replies[i] = { id, cancel_job(prefix, id, f, now, by, reason, plan, K) }
  end
end
zadd_pairs(K.dead, plan.dead)
give_back_group_slots(prefix, plan.freed, now)
emit(KEYS[6], cfg.events_maxlen, 'cancelled', plan.cancelled)
return replies
