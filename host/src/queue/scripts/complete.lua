-- complete: finish active jobs successfully (active -> completed), storing each result and
-- its attempt record, then apply the queue's retention to `completed`.
--
-- KEYS[1] job prefix  KEYS[2] config  KEYS[3] active  KEYS[4] completed  KEYS[5] dead
-- KEYS[6] events
-- ARGV: triples id, token, result
-- Reply: {completed_ids, rejected, too_large_ids}: rejected lists {id, reason} as in extend
--   (those jobs are untouched); a result over `max_result_bytes` dead-letters its job with
--   outcome 'result_too_large' (retrying would produce it again).
-- Retention: `completed_keep` newest jobs are kept (default 1000; -1 keeps all; 0 deletes the
-- job on completion); `completed_max_age_ms` > 0 also deletes older ones. Either trims at most
-- 1000 jobs per call.

local prefix = KEYS[1]
local K = { config = KEYS[2], active = KEYS[3], completed = KEYS[4], dead = KEYS[5],
  events = KEYS[6] }
local now = now_ms()
local cfg = read_config(K.config, { 'completed_keep', 'completed_max_age_ms', 'max_result_bytes',
  'events_maxlen' })
local keep = cfg.completed_keep
local done_ids, rejected, too_large, finished, events, deleted = {}, {}, {}, {}, {}, {}
local plan = new_fail_plan(nil)
for i = 1, #ARGV - 2, 3 do
  local id, token, result = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = prefix .. id
  local f = redis.call('HMGET', key, unpack(FAIL_FIELDS))
  local problem = lease_problem(f[1], f[2], token)
  if problem then
    rejected[#rejected + 1] = { id, problem }
  elseif #result > cfg.max_result_bytes then
    fail_job(prefix, id, f, now, 'result_too_large', 'result of ' .. #result
      .. ' bytes is over the limit of ' .. cfg.max_result_bytes, true, plan)
    too_large[#too_large + 1] = id
  else
    local attempt = tonumber(f[3]) or 0
    if keep == 0 then
      deleted[#deleted + 1] = key
    else
      local history = history_append(f[9], { attempt = attempt, outcome = 'ok', error = '',
        host = f[11] or '', started_at = tonumber(f[10]) or 0, finished_at = now })
      redis.call('HSET', key, 'state', 'completed', 'result', result, 'history', history,
        'finished_at', now, 'lease_token', '')
      finished[#finished + 1] = now
      finished[#finished + 1] = id
    end
    done_ids[#done_ids + 1] = id
    events[#events + 1] = { id, attempt }
  end
end
local leaving = {}
for _, id in ipairs(done_ids) do leaving[#leaving + 1] = id end
for _, id in ipairs(too_large) do leaving[#leaving + 1] = id end
zrem_many(K.active, leaving)
del_many(deleted)
zadd_pairs(K.completed, finished)
zadd_pairs(K.dead, plan.dead)
emit(K.events, cfg.events_maxlen, 'completed', events)
emit(K.events, cfg.events_maxlen, 'dead', plan.died)

-- Retention: trim the oldest completed jobs beyond `keep`, then those past the max age.
if keep > 0 and #finished > 0 then
  -- At most 1000 deletions per call, so lowering `completed_keep` never makes one call slow.
  local excess = math.min(redis.call('ZCARD', K.completed) - keep, 1000)
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
    'LIMIT', 0, 1000)
  if #old > 0 then
    local keys = {}
    for j, id in ipairs(old) do keys[j] = prefix .. id end
    del_many(keys)
    zrem_many(K.completed, old)
  end
end
return { done_ids, rejected, too_large }
