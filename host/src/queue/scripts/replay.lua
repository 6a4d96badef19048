-- replay: move dead-lettered jobs back to `waiting` for a fresh run. The attempt counter is
-- reset to 0 (the job gets max_attempts new attempts); its history, last error and payload are
-- kept, and `replays` counts the replays. `run_at` becomes now: the job has been due since its
-- replay (what a backlog's oldest-waiting age measures). Its expiry (`expires_at`, see
-- enqueue.lua) is cleared: a job replayed is meant to run, however late.
--
-- KEYS[1] job prefix  KEYS[2] config  KEYS[3] dead  KEYS[4] waiting  KEYS[5] seq
-- KEYS[6] events      KEYS[7] wake  KEYS[8] group prefix  KEYS[9] groups
-- ARGV[1] limit; ARGV[2..] job ids. Without ids, replays the `limit` oldest dead jobs.
-- Reply: {replayed_ids, skipped} where skipped lists {id, 'not_found' | <state> |
--   'malformed: <reason>'} (a job that cannot be read is left as it is).
-- Error (nothing written): 'WASMQ_WRONGTYPE <key> <type>' (type_error in lib.lua).

local prefix = KEYS[1]
local K = { waiting = KEYS[4], gprefix = KEYS[8], groups = KEYS[9] }
local cfg, wrong = read_config(KEYS[2], { 'events_maxlen', 'paused' })
wrong = wrong or type_error(KEYS[3], 'zset', KEYS[4], 'zset', KEYS[5], 'string', KEYS[9], 'zset')
if wrong then return wrong end
local ids = dlq_ids(KEYS[3])
local now = now_ms()
local replayed, skipped, waiting, events = {}, {}, new_waiting(), {}
local last = nil
-- Every job is read first, so that its group's waiting set is checked before the first write.
local FIELDS = { 'state', 'priority', 'replays', 'group' }
local reads = read_jobs(prefix, ids, FIELDS)
wrong = group_keys_error(KEYS[8], groups_read(reads, 4))
if wrong then return wrong end
for i, id in ipairs(ids) do
  local key = prefix .. id
  local f, unusable = job_read(reads, i, key, FIELDS)
  if f and unusable then
    skipped[#skipped + 1] = { id, 'malformed: ' .. unusable }
  elseif not f then
    skipped[#skipped + 1] = { id, unusable and 'malformed: ' .. unusable or 'not_found' }
  elseif f[1] == 'dead' then
    last = last and last + 1 or next_seq(KEYS[5], #ids) - #ids + 1
    redis.call('HSET', key, 'state', 'waiting', 'attempt', 0, 'seq', last, 'run_at', now,
      'replays', (tonumber(f[3]) or 0) + 1, 'lease_token', '')
    redis.call('HDEL', key, 'expires_at')
    add_waiting(waiting, f[4], waiting_score(f[2], last), id)
    replayed[#replayed + 1] = id
    events[#events + 1] = { id, 0 }
  else
    skipped[#skipped + 1] = { id, f[1] }
  end
end
zrem_many(KEYS[3], replayed)
if waiting.n > 0 then flush_waiting(waiting, K, now) end
emit(KEYS[6], cfg.events_maxlen, 'replayed', events)
if #replayed > 0 and cfg.paused == 0 then wake(KEYS[7]) end
return { replayed, skipped }
