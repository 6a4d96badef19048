-- cancel: delete jobs that have not started: waiting, delayed or retry. An active job cannot
-- be cancelled (its handler is running); completed and dead jobs are not pending.
--
-- KEYS[1] job prefix  KEYS[2] config  KEYS[3] waiting  KEYS[4] delayed  KEYS[5] retry
-- KEYS[6] events      KEYS[7] group prefix  KEYS[8] groups  KEYS[9] steps prefix (optional:
-- a cancelled job's durable steps are deleted with it)
-- ARGV: job ids
-- Reply: one {id, outcome} per id: 'cancelled', 'not_found', the state it is in, or
--   'malformed' for a key that is not a job hash (left alone: `queue check --repair`).
-- Error (nothing written): 'WASMQ_WRONGTYPE <key> <type>' (type_error in lib.lua).

local prefix = KEYS[1]
local cfg, wrong = read_config(KEYS[2], { 'events_maxlen' })
if wrong then return wrong end
local sets = { waiting = KEYS[3], delayed = KEYS[4], retry = KEYS[5] }
local replies, events = {}, {}
-- Every job is read first, so that its group's waiting set is checked before the first write.
local FIELDS = { 'state', 'attempt', 'group' }
local reads = read_jobs(prefix, ARGV, FIELDS, NO_FIELDS)
wrong = type_error(KEYS[3], 'zset', KEYS[4], 'zset', KEYS[5], 'zset', KEYS[8], 'zset')
  or group_keys_error(KEYS[7], groups_read(reads, 3))
if wrong then return wrong end
for i, id in ipairs(ARGV) do
  local key = prefix .. id
  local f, unusable = job_read(reads, i, key, FIELDS, NO_FIELDS)
  local state, group = f and f[1], f and f[3]
  if not f then
    replies[i] = { id, unusable and 'malformed' or 'not_found' }
  elseif state == 'waiting' and group and group ~= '' then
    -- A grouped job waits in its group's set; an emptied group leaves the round-robin.
    local set = KEYS[7] .. group .. ':waiting'
    redis.call('ZREM', set, id)
    if redis.call('ZCARD', set) == 0 then redis.call('ZREM', KEYS[8], group) end
    redis.call('DEL', key)
    if KEYS[9] then redis.call('DEL', KEYS[9] .. id) end
    replies[i] = { id, 'cancelled' }
    events[#events + 1] = { id, int_field('attempt', f[2], 0) }
  elseif sets[state] then
    redis.call('ZREM', sets[state], id)
    redis.call('DEL', key)
    if KEYS[9] then redis.call('DEL', KEYS[9] .. id) end
    replies[i] = { id, 'cancelled' }
    events[#events + 1] = { id, int_field('attempt', f[2], 0) }
  else
    replies[i] = { id, state }
  end
end
emit(KEYS[6], cfg.events_maxlen, 'cancelled', events)
return replies
