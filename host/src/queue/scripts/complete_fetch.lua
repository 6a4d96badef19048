-- complete_fetch: complete.lua and then fetch.lua in one call, for a worker whose finished
-- attempts leave it room for the next jobs of the same queue: records the completions exactly
-- as complete.lua does, then leases up to N jobs exactly as fetch.lua does (promotion of due
-- jobs, pause, rate limits, groups). At low concurrency that is one round trip per job instead
-- of two. Both run on one Redis TIME and one read of the queue config.
--
-- The two parts do not depend on each other. A completion refused because the lease was lost
-- (token mismatch, no longer active, not found) leaves that job untouched and is reported as
-- in complete.lua; the fetch is still done, since the attempt has ended either way and its room
-- is free. A paused queue, or one at its rate limit, leases nothing and still records the
-- completions. N = 0 only completes.
--
-- KEYS[1] job prefix  KEYS[2] config  KEYS[3] waiting  KEYS[4] delayed  KEYS[5] retry
-- KEYS[6] active      KEYS[7] seq     KEYS[8] events   KEYS[9] wake     KEYS[10] rate
-- KEYS[11] group prefix  KEYS[12] groups (1..12 as fetch.lua)  KEYS[13] completed
-- KEYS[14] dead  KEYS[15] steps prefix  KEYS[16] outbox
-- ARGV[1] N (jobs to lease, 0..10000)  ARGV[2] lease_ms  ARGV[3] lease token (random, unique
-- per call)  ARGV[4] host id; then octuples id, token, result, version, logs, progress,
-- children, calls as in complete.lua
-- Reply: {completed_ids, rejected, too_large_ids, fetched}: complete.lua's reply, then
--   fetch.lua's as `fetched` ({now_ms, lease_expires_at_ms, jobs, next_due_ms, dropped, held}).
-- Error (nothing written, neither part): 'WASMQ_WRONGTYPE <key> <type>' (type_error in lib.lua).

local K = { config = KEYS[2], waiting = KEYS[3], delayed = KEYS[4], retry = KEYS[5],
  active = KEYS[6], seq = KEYS[7], events = KEYS[8], wake = KEYS[9], rate = KEYS[10],
  gprefix = KEYS[11], groups = KEYS[12], completed = KEYS[13], dead = KEYS[14],
  steps = KEYS[15], outbox = KEYS[16] }
local n, lease_ms, token, host = lease_args(0)
if not n or not K.outbox then
  return redis.error_reply('WASMQ_INVALID complete_fetch needs 16 keys, N in 0..10000, '
    .. 'lease_ms >= 1 and a token')
end
local now = now_ms()
local names = { unpack(COMPLETE_CONFIG) }
for _, name in ipairs(LEASE_CONFIG) do names[#names + 1] = name end
local cfg, err = read_config(K.config, names)
-- Both parts' keys are checked before the completions write anything.
err = err or complete_keys_error(K, cfg, 5) or lease_keys_error(KEYS[1], K, cfg, now, n)
if err then return err end
local reply = complete_jobs(KEYS[1], K, cfg, now, 5)
reply[4] = lease_jobs(KEYS[1], K, cfg, now, n, lease_ms, token, host)
return reply
