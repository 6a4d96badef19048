-- pause: stop fetch from leasing jobs of this queue (enqueue still works; active jobs finish).
--
-- KEYS[1] config  KEYS[2] events
-- Reply: 1 if the queue was running, 0 if it was already paused.

local cfg = read_config(KEYS[1], { 'events_maxlen', 'paused' })
redis.call('HSET', KEYS[1], 'paused', 1)
if cfg.events_maxlen > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', cfg.events_maxlen, '*', 'event', 'paused',
    'jobs', '[]')
end
return cfg.paused == 1 and 0 or 1
