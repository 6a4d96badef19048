-- counts: the number of jobs in each state, read atomically, and whether the queue is paused.
-- Standalone (no prelude), so producers in any language can EVAL it as it is, like enqueue.lua.
-- wasmq protocol 3; a stable contract for producers (docs/protocol.md, "Stable contract").
--
-- KEYS[1] config  KEYS[2] waiting  KEYS[3] delayed  KEYS[4] active  KEYS[5] retry
-- KEYS[6] completed  KEYS[7] dead     KEYS[8] group prefix  KEYS[9] groups
-- Reply: {waiting, delayed, active, retry, completed, dead, paused (0/1), now_ms}
-- `waiting` counts the ungrouped jobs and those in every group's waiting set: O(groups).
-- Read-only: a key of another type stops it with Redis's WRONGTYPE error, having written nothing.

local out = {}
for i = 2, 7 do out[#out + 1] = redis.call('ZCARD', KEYS[i]) end
for _, group in ipairs(redis.call('ZRANGE', KEYS[9], 0, -1)) do
  -- '' is the turn of the ungrouped jobs in the round-robin (fetch.lua), not a group.
  if group ~= '' then
    out[1] = out[1] + redis.call('ZCARD', KEYS[8] .. group .. ':waiting')
  end
end
out[#out + 1] = redis.call('HGET', KEYS[1], 'paused') == '1' and 1 or 0
local t = redis.call('TIME')
out[#out + 1] = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return out
