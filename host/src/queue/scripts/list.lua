-- list: one page of the jobs in a state set, in the set's order (waiting: next to run first;
-- delayed/retry: soonest due first; active: soonest lease expiry first; completed/dead:
-- oldest first), each with its whole hash.
--
-- KEYS[1] job prefix  KEYS[2] the state's set  KEYS[3] active
-- ARGV[1] offset  ARGV[2] limit
-- Reply: list of {id, hash as a flat field/value list, lease expiry ms (0 unless active)}.

local offset = math.max(math.floor(tonumber(ARGV[1]) or 0), 0)
local limit = math.floor(tonumber(ARGV[2]) or 0)
if limit < 1 then return {} end
local ids = redis.call('ZRANGE', KEYS[2], offset, offset + limit - 1)
local out = {}
for i, id in ipairs(ids) do
  local expiry = redis.call('ZSCORE', KEYS[3], id)
  out[i] = { id, redis.call('HGETALL', KEYS[1] .. id), tonumber(expiry) or 0 }
end
return out
