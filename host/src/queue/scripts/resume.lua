-- resume: let fetch lease jobs of this queue again, and wake an idle worker.
--
-- KEYS[1] config  KEYS[2] events  KEYS[3] waiting  KEYS[4] wake  KEYS[5] groups
-- Reply: 1 if the queue was paused, 0 if it was running.
-- Error (nothing written): 'WASMQ_WRONGTYPE <key> <type>' (type_error in lib.lua).

local cfg, wrong = read_config(KEYS[1], { 'events_maxlen', 'paused' })
wrong = wrong or type_error(KEYS[3], 'zset', KEYS[5], 'zset')
if wrong then return wrong end
redis.call('HDEL', KEYS[1], 'paused')
-- The events stream is a record: one of another type is skipped (emit in lib.lua).
if cfg.events_maxlen > 0 then
  redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', cfg.events_maxlen, '*', 'event', 'resumed',
    'jobs', '[]')
end
if redis.call('ZCARD', KEYS[3]) > 0 or redis.call('ZCARD', KEYS[5]) > 0 then wake(KEYS[4]) end
return cfg.paused == 1 and 1 or 0
