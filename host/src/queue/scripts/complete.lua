-- complete: finish active jobs successfully (active -> completed), storing each result and
-- its attempt record, then apply the queue's retention to `completed`. The body is
-- complete_jobs in lib.lua, which complete_fetch.lua runs too.
--
-- KEYS[1] job prefix  KEYS[2] config  KEYS[3] active  KEYS[4] completed  KEYS[5] dead
-- KEYS[6] events
-- ARGV: sextuples id, token, result, handler version that ran the attempt ('' if none), the
--   attempt's log ('' if none; the first 4096 bytes are kept), its last progress 0-100 ('' if
--   none), which the attempt's history entry records
-- Reply: {completed_ids, rejected, too_large_ids}: rejected lists {id, reason} as in extend
--   (those jobs are untouched); a result over `max_result_bytes` dead-letters its job with
--   outcome 'result_too_large' (retrying would produce it again).
-- Retention: `completed_keep` newest jobs are kept (default 1000; -1 keeps all; 0 deletes the
-- job on completion); `completed_max_age_ms` > 0 also deletes older ones. Either trims at most
-- 1000 jobs per call.

local K = { config = KEYS[2], active = KEYS[3], completed = KEYS[4], dead = KEYS[5],
  events = KEYS[6] }
local now = now_ms()
return complete_jobs(KEYS[1], K, read_config(K.config, COMPLETE_CONFIG), now, 1)
