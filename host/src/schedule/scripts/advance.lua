-- advance: record that every tick up to ARGV[1] (Unix ms) has been dealt with (enqueued, or
-- skipped as missed). The last tick only moves forward, and a removed schedule is not
-- brought back as a partial hash.
--
-- KEYS[1] wasmq:{@schedules}:schedule:<name>
-- ARGV[1] tick_ms. Returns 1 when it moved, 0 otherwise.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local last = tonumber(redis.call('HGET', KEYS[1], 'last_tick_ms') or '0') or 0
local tick = tonumber(ARGV[1])
if tick <= last then
  return 0
end
redis.call('HSET', KEYS[1], 'last_tick_ms', ARGV[1])
return 1
