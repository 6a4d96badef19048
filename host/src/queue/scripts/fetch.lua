-- fetch: lease up to N waiting jobs to one host (waiting -> active), after promoting due
-- delayed and retry jobs, within the queue's rate limits. One call serves a whole batch; cost
-- per job is one HMGET and one HSET, the rest is per call. Respects pause. Fetch is the only
-- place a job starts, so the rate limits are enforced here, atomically for every host. The body
-- is lease_jobs in lib.lua, which complete_fetch.lua runs too.
--
-- Rate limits (queue config; 0 = unlimited): at most `rate_max` starts per `rate_window_ms` in
-- the queue, and at most `group_rate_max` per `group_rate_window_ms` in each group. Each is an
-- exact sliding-window log: a sorted set of start times (`rate`, `g:<group>:rate`), trimmed to
-- the window on every fetch, one member per start (`<id>:<lease token>`, unique even when a
-- released job starts again with the same attempt number). A fetch starts at most
-- max - ZCARD, so no window of that length ever holds more than max starts.
--
-- Expiry and debounce (enqueue.lua): a taken job whose `expires_at` has passed is
-- dead-lettered with outcome `expired` instead of leased; a leased job with a `debounce_key`
-- releases that key (lease_jobs in lib.lua).
--
-- Who goes first. Ungrouped jobs wait in `waiting`; a job with a group waits in its group's
-- set `g:<group>:waiting`. `groups` holds every group with waiting jobs, scored by when it may
-- start next: when it joined or was last served, or, at its rate limit, when its window frees.
-- Ready groups (score <= now) are served least recently served first; the ungrouped jobs take
-- part as one more participant (member '' of `groups` once served while others wait; absent,
-- they go first). The batch is shared out evenly: each round gives every participant that is
-- neither empty nor at its limit ceil(left / live) jobs, until the batch is full. Within a
-- group, and within the ungrouped jobs, it is priority, then FIFO.
--
-- Group concurrency (`group_concurrency`; 0 = unlimited): at most that many jobs of any one
-- group active at once. A leased job of a group takes one of its slots (`g:<group>:active`,
-- scored by lease expiry; the job's field `group_slot`); a group that is full is parked in
-- `groups` at its oldest lease expiry, skipped at no cost until a job of it leaves `active`
-- and gives its slot back (give_back_group_slots in lib.lua), which brings it back at now.
--
-- KEYS[1] job prefix  KEYS[2] config  KEYS[3] waiting  KEYS[4] delayed  KEYS[5] retry
-- KEYS[6] active      KEYS[7] seq     KEYS[8] events   KEYS[9] wake     KEYS[10] rate
-- KEYS[11] group prefix (wasmq:{q}:g:)  KEYS[12] groups
-- ARGV[1] N (max jobs, 1..10000)  ARGV[2] lease_ms  ARGV[3] lease token (random, unique per
-- call)  ARGV[4] host id
-- Reply: {now_ms, lease_expires_at_ms, jobs, next_due_ms, dropped, held} where jobs is a list of
--   {id, handler, payload, attempt, max_attempts, timeout_ms, priority, created_at,
--   own_policy, traceparent, tracestate} (own_policy: what of its retry policy the job set
--   itself, see enqueue.lua; the trace context as enqueued, '' for none);
--   next_due_ms (only computed when fewer than N jobs were leased; 0 if none) is the earliest
--   time more may be leased: a delayed or retry job due, a rate-limited group's window or the
--   queue's window freeing; dropped counts waiting ids whose hash was missing, or left over
--   from a job that is in its own state's set (a job that cannot be used is buried instead,
--   see bury in lib.lua);
--   held is 1 when a rate limit (the queue's, or a group's) held back jobs that were waiting.
-- Error (nothing written): 'WASMQ_WRONGTYPE <key> <type>', a key of the queue of another type
--   (see type_error in lib.lua).

local K = { config = KEYS[2], waiting = KEYS[3], delayed = KEYS[4], retry = KEYS[5],
  active = KEYS[6], seq = KEYS[7], events = KEYS[8], wake = KEYS[9], rate = KEYS[10],
  gprefix = KEYS[11], groups = KEYS[12] }
local n, lease_ms, token, host = lease_args(1)
if not n then
  return redis.error_reply('WASMQ_INVALID fetch needs N in 1..10000, lease_ms >= 1 and a token')
end
local now = now_ms()
local cfg, err = read_config(K.config, LEASE_CONFIG)
err = err or lease_keys_error(KEYS[1], K, cfg, now, n)
if err then return err end
return lease_jobs(KEYS[1], K, cfg, now, n, lease_ms, token, host)
