-- pause: stop fetch from leasing jobs of this queue (enqueue still works; active jobs finish).
--
-- KEYS[1] config  KEYS[2] events
-- Reply: 1 if the queue was running, 0 if it was already paused.
-- Error (nothing written): 'WASMQ_WRONGTYPE <key> <type>' (type_error in lib.lua).

local cfg, wrong = read_config(KEYS[1], { 'events_maxlen', 'paused' })
if wrong then return wrong end
redis.call('HSET', KEYS[1], 'paused', 1)
-- The events stream is a record: one of another type is skipped (emit in lib.lua).
if cfg.events_maxlen > 0 then
  redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', cfg.events_maxlen, '*', 'event', 'paused',
    'jobs', '[]')
end
return cfg.paused == 1 and 0 or 1
