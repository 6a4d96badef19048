-- deploy: make an uploaded component the current version of a handler.
--
-- KEYS[1] wasmq:{@registry}:handler:<name>  (hash: latest, current, v:<n> -> version record)
-- KEYS[2] wasmq:{@registry}:current         (hash: name -> current version record)
-- KEYS[3] wasmq:{@registry}:epoch           (counter, bumped on every change)
-- KEYS[4] wasmq:{@registry}:blob:<sha256>   (the component's bytes)
-- KEYS[5] wasmq:{@registry}:upload:<token>  (the bytes as uploaded, when not yet stored)
-- KEYS[6] wasmq:{@registry}:refs            (hash: sha256 -> versions referencing the blob)
-- KEYS[7] wasmq:{@registry}:config          (hash: max_upload_bytes)
-- ARGV[1] name, ARGV[2] sha256 (hex), ARGV[3] size in bytes, ARGV[4] the version record as a
-- JSON object without `version` and `deployed_at_ms` (the script adds them), ARGV[5] the
-- changes channel, ARGV[6] the default upload limit in bytes.
-- Returns { version, deployed_at_ms, epoch }.
local name, sha, size = ARGV[1], ARGV[2], tonumber(ARGV[3])
local limit = tonumber(redis.call('HGET', KEYS[7], 'max_upload_bytes')) or tonumber(ARGV[6])
if size > limit then
  redis.call('DEL', KEYS[5])
  return redis.error_reply('WASMQ_TOO_LARGE ' .. size .. ' ' .. limit)
end
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('DEL', KEYS[5])
  if redis.call('STRLEN', KEYS[4]) ~= size then
    return redis.error_reply('WASMQ_CORRUPT stored component ' .. sha .. ' has the wrong size')
  end
else
  if redis.call('EXISTS', KEYS[5]) == 0 then
    return redis.error_reply('WASMQ_NO_UPLOAD ' .. sha)
  end
  local uploaded = redis.call('STRLEN', KEYS[5])
  if uploaded ~= size then
    redis.call('DEL', KEYS[5])
    return redis.error_reply('WASMQ_CORRUPT upload of ' .. uploaded .. ' bytes, expected ' .. size)
  end
  redis.call('RENAME', KEYS[5], KEYS[4])
  redis.call('PERSIST', KEYS[4])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local version = redis.call('HINCRBY', KEYS[1], 'latest', 1)
local record = string.sub(ARGV[4], 1, -2) .. ',"version":' .. version .. ',"deployed_at_ms":' .. now .. '}'
redis.call('HSET', KEYS[1], 'v:' .. version, record, 'current', version)
redis.call('HSET', KEYS[2], name, record)
redis.call('HINCRBY', KEYS[6], sha, 1)
local epoch = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[5], epoch .. ' ' .. name)
return { version, now, epoch }
