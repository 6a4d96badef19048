-- resume: let fetch lease jobs of this queue again, and wake an idle worker.
--
-- KEYS[1] config  KEYS[2] events  KEYS[3] waiting  KEYS[4] wake  KEYS[5] groups
-- Reply: 1 if the queue was paused, 0 if it was running.

local cfg = read_config(KEYS[1], { 'events_maxlen', 'paused' })
redis.call('HDEL', KEYS[1], 'paused')
if cfg.events_maxlen > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', cfg.events_maxlen, '*', 'event', 'resumed',
    'jobs', '[]')
end
if redis.call('ZCARD', KEYS[3]) > 0 or redis.call('ZCARD', KEYS[5]) > 0 then wake(KEYS[4]) end
return cfg.paused == 1 and 1 or 0
