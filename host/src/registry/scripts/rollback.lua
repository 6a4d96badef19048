-- rollback: point a handler back at an earlier version (no new version is made).
--
-- KEYS[1] wasmq:{@registry}:handler:<name>, KEYS[2] wasmq:{@registry}:current,
-- KEYS[3] wasmq:{@registry}:epoch
-- ARGV[1] name, ARGV[2] target version, or '' for the newest version older than the current
-- one, ARGV[3] the changes channel.
-- Returns { version record (JSON), epoch }.
local name = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('WASMQ_NO_HANDLER ' .. name)
end
local current = tonumber(redis.call('HGET', KEYS[1], 'current')) or 0
local target = tonumber(ARGV[2])
if target == nil then
  local n = current - 1
  while n >= 1 and redis.call('HEXISTS', KEYS[1], 'v:' .. n) == 0 do
    n = n - 1
  end
  if n < 1 then
    return redis.error_reply('WASMQ_NO_VERSION ' .. name .. ' has no version before ' .. current)
  end
  target = n
end
local record = redis.call('HGET', KEYS[1], 'v:' .. target)
if not record then
  return redis.error_reply('WASMQ_NO_VERSION ' .. name .. ' has no version ' .. target)
end
redis.call('HSET', KEYS[1], 'current', target)
redis.call('HSET', KEYS[2], name, record)
local epoch = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[3], epoch .. ' ' .. name)
return { record, epoch }
