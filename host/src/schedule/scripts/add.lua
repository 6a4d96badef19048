-- add: create a schedule, or replace the definition of one with the same name.
--
-- KEYS[1] wasmq:{@schedules}:schedule:<name>, KEYS[2] wasmq:{@schedules}:names,
-- KEYS[3] wasmq:{@schedules}:version
-- ARGV[1] name, ARGV[2] cron, ARGV[3] tz, ARGV[4] queue, ARGV[5] handler, ARGV[6] payload,
-- ARGV[7] catch_up. Arguments are validated by the caller before this runs.
-- A replaced schedule keeps its created_at_ms and paused flag. Either way its last tick
-- becomes now: a definition fires only for ticks after it was written.
-- Returns {created (1, or 0 for a replace), now_ms}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  created = 1
  redis.call('HSET', KEYS[1], 'created_at_ms', now, 'paused', '0')
end
redis.call('HDEL', KEYS[1], 'resumed_at_ms')
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'cron', ARGV[2], 'tz', ARGV[3], 'queue', ARGV[4],
  'handler', ARGV[5], 'payload', ARGV[6], 'catch_up', ARGV[7], 'updated_at_ms', now,
  'last_tick_ms', now)
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('INCR', KEYS[3])
return {created, now}
