-- remove: forget a handler and all its versions; components no other version uses are deleted.
--
-- KEYS[1] wasmq:{@registry}:handler:<name>, KEYS[2] wasmq:{@registry}:current,
-- KEYS[3] wasmq:{@registry}:epoch, KEYS[4] wasmq:{@registry}:refs
-- ARGV[1] name, ARGV[2] the changes channel, ARGV[3] the blob key prefix
-- (wasmq:{@registry}:blob:). Returns the number of versions removed (0: no such handler).
local name = ARGV[1]
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then
  return 0
end
local removed = 0
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 2) == 'v:' then
    removed = removed + 1
    local sha = string.match(fields[i + 1], '"sha256":"(%x+)"')
    if sha then
      if redis.call('HINCRBY', KEYS[4], sha, -1) <= 0 then
        redis.call('HDEL', KEYS[4], sha)
        redis.call('DEL', ARGV[3] .. sha)
      end
    end
  end
end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], name)
local epoch = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[2], epoch .. ' ' .. name)
return removed
