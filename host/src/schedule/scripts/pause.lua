-- pause: a paused schedule enqueues nothing; its last tick stays where it was.
--
-- KEYS[1] wasmq:{@schedules}:schedule:<name>, KEYS[2] wasmq:{@schedules}:version
-- Returns 1 when it was running, 0 when it was already paused, -1 when there is no such
-- schedule.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
if redis.call('HGET', KEYS[1], 'paused') == '1' then
  return 0
end
redis.call('HSET', KEYS[1], 'paused', '1')
redis.call('INCR', KEYS[2])
return 1
