-- counts: the number of jobs in each state, read atomically, and whether the queue is paused.
--
-- KEYS[1] config  KEYS[2] waiting  KEYS[3] delayed  KEYS[4] active  KEYS[5] retry
-- KEYS[6] completed  KEYS[7] dead
-- Reply: {waiting, delayed, active, retry, completed, dead, paused (0/1), now_ms}

local out = {}
for i = 2, 7 do out[#out + 1] = redis.call('ZCARD', KEYS[i]) end
out[#out + 1] = redis.call('HGET', KEYS[1], 'paused') == '1' and 1 or 0
out[#out + 1] = now_ms()
return out
