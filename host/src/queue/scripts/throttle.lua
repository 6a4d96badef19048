-- throttle: admit the start of one leased job under its handler's throttle, at most `max`
-- starts per `window_ms` per key, the key being the job's group ('' without one). The log is
-- an exact sliding window, as the queue's rate limit in fetch.lua, one per handler and key
-- in the queue's slot; it expires one window after its last start. A start that is admitted
-- is logged, whatever then becomes of the attempt. A start that is not is left to the caller,
-- which gives the job back with suspend.lua (empty field) to wait `wait_ms`.
--
-- KEYS[1] job prefix  KEYS[2] throttle prefix (`<q>throttle:`)
-- ARGV[1] id  ARGV[2] lease token  ARGV[3] handler  ARGV[4] max  ARGV[5] window_ms
-- Reply: {1, 0} admitted; {0, wait_ms} not admitted: the window frees in wait_ms; {-1, reason}
--   the lease does not hold the job (nothing written).
-- Error (nothing written): 'WASMQ_WRONGTYPE <key> <type>' (type_error in lib.lua).

local id, token, handler = ARGV[1], ARGV[2], ARGV[3]
local max, w = math.floor(tonumber(ARGV[4]) or 0), math.floor(tonumber(ARGV[5]) or 0)
if max < 1 or w < 1 or not handler then
  return redis.error_reply('WASMQ_INVALID throttle needs id, token, handler, max >= 1 and '
    .. 'window_ms >= 1')
end
local f, unusable = read_job(KEYS[1] .. id, { 'state', 'lease_token', 'group' }, NO_FIELDS)
local problem = lease_check(f, unusable, token)
if problem then return { -1, problem } end
-- The handler's length keeps `a:b` + `c` apart from `a` + `b:c`.
local log = KEYS[2] .. #handler .. ':' .. handler .. ':' .. (f[3] or '')
local wrong = type_error(log, 'zset')
if wrong then return wrong end
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', log, '-inf', now - w)
if redis.call('ZCARD', log) < max then
  redis.call('ZADD', log, now, id .. ':' .. token)
  redis.call('PEXPIRE', log, w)
  return { 1, 0 }
end
local oldest = redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')
return { 0, math.max((tonumber(oldest[2]) or now) + w - now, 1) }
