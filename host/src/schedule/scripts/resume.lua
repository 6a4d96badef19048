-- resume: the schedule runs again. Ticks that fell while it was paused count as missed
-- (resumed_at_ms marks them), so its missed-tick policy applies to them: none are enqueued
-- by default, at most catch_up with one.
--
-- KEYS[1] wasmq:{@schedules}:schedule:<name>, KEYS[2] wasmq:{@schedules}:version
-- Returns 1 when it was paused, 0 when it was already running, -1 when there is no such
-- schedule.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
if redis.call('HGET', KEYS[1], 'paused') ~= '1' then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'paused', '0', 'resumed_at_ms', now)
redis.call('INCR', KEYS[2])
return 1
