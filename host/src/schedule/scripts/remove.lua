-- remove: forget a schedule. Jobs it already enqueued stay in their queue.
--
-- KEYS[1] wasmq:{@schedules}:schedule:<name>, KEYS[2] wasmq:{@schedules}:names,
-- KEYS[3] wasmq:{@schedules}:version
-- ARGV[1] name. Returns 1 when it existed, 0 otherwise.
local existed = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
if existed == 1 then
  redis.call('INCR', KEYS[3])
end
return existed
