-- promote: move up to `limit` due jobs from `delayed` and `retry` to `waiting`. fetch.lua
-- already promotes up to N per call; this lets a worker catch up in bigger steps and learn
-- when the next job is due without leasing anything.
--
-- KEYS[1] job prefix  KEYS[2] config  KEYS[3] waiting  KEYS[4] delayed  KEYS[5] retry
-- KEYS[6] seq         KEYS[7] events  KEYS[8] wake    KEYS[9] group prefix  KEYS[10] groups
-- ARGV[1] limit (1..10000)
-- Reply: {moved, next_due_ms} (next_due_ms 0 when nothing is scheduled).
-- Error (nothing written): 'WASMQ_WRONGTYPE <key> <type>' (type_error in lib.lua).

local K = { config = KEYS[2], waiting = KEYS[3], delayed = KEYS[4], retry = KEYS[5],
  seq = KEYS[6], events = KEYS[7], wake = KEYS[8], gprefix = KEYS[9], groups = KEYS[10] }
local limit = math.floor(tonumber(ARGV[1]) or 0)
if limit < 1 or limit > 10000 then
  return redis.error_reply('WASMQ_INVALID promote needs limit in 1..10000')
end
local now = now_ms()
local cfg, err = read_config(K.config, { 'events_maxlen', 'paused' })
err = err or promote_keys_error(KEYS[1], K, now, limit)
if err then return err end
local moved, heads = promote(KEYS[1], K, now, limit, cfg.events_maxlen)
if moved > 0 and cfg.paused == 0 then wake(K.wake) end
return { moved, next_scheduled(K, heads) }
