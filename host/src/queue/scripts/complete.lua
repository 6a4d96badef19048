-- complete: finish active jobs successfully (active -> completed), storing each result and
-- its attempt record, then apply the queue's retention to `completed`. The body is
-- complete_jobs in lib.lua, which complete_fetch.lua runs too.
--
-- KEYS[1] job prefix  KEYS[2] config  KEYS[3] active  KEYS[4] completed  KEYS[5] dead
-- KEYS[6] events  KEYS[7] steps prefix  KEYS[8] outbox
-- ARGV: octuples id, token, result, handler version that ran the attempt ('' if none), the
--   attempt's log ('' if none; the first 4096 bytes are kept), its last progress 0-100 ('' if
--   none), which the attempt's history entry records, its child jobs ('' if none: an
--   opaque blob that goes to the outbox with the completion, see docs/workflows.md), and its
--   call record ('' if none; calls_of in lib.lua, docs/protocol.md), which the history entry
--   records too
-- Reply: {completed_ids, rejected, too_large_ids}: rejected lists {id, reason} as in extend
--   (those jobs are untouched); a result over `max_result_bytes` dead-letters its job with
--   outcome 'result_too_large' (retrying would produce it again).
-- Retention: `completed_keep` newest jobs are kept (default 1000; -1 keeps all; 0 deletes the
-- job on completion); `completed_max_age_ms` > 0 also deletes older ones. Either trims at most
-- 1000 jobs more than the call completed, so a batch of any size keeps within retention.
-- Error (nothing written): 'WASMQ_WRONGTYPE <key> <type>' (type_error in lib.lua).

local K = { config = KEYS[2], active = KEYS[3], completed = KEYS[4], dead = KEYS[5],
  events = KEYS[6], steps = KEYS[7], outbox = KEYS[8] }
if not K.outbox then
  return redis.error_reply('WASMQ_INVALID complete needs 8 keys')
end
local now = now_ms()
local cfg, err = read_config(K.config, COMPLETE_CONFIG)
err = err or complete_keys_error(K, cfg, 1)
if err then return err end
return complete_jobs(KEYS[1], K, cfg, now, 1)
