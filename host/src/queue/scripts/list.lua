-- list: one page of the jobs in a state set, in the set's order (waiting: next to run first;
-- delayed/retry: soonest due first; active: soonest lease expiry first; completed/dead:
-- oldest first), each with its whole hash.
--
-- Waiting jobs with a group wait in their group's set: listing `waiting` (ARGV[3] = 'waiting')
-- pages through the ungrouped jobs first, then each group's in round-robin order.
--
-- KEYS[1] job prefix  KEYS[2] the state's set  KEYS[3] active  KEYS[4] group prefix
-- KEYS[5] groups
-- ARGV[1] offset  ARGV[2] limit  ARGV[3] the state's name
-- Reply: list of {id, hash as a flat field/value list, lease expiry ms (0 unless active)}.
-- Error: 'WASMQ_WRONGTYPE <key> <type>' for a set of another type (read_key in lib.lua).

local offset = math.max(math.floor(tonumber(ARGV[1]) or 0), 0)
local limit = math.floor(tonumber(ARGV[2]) or 0)
if limit < 1 then return {} end
local sets = { KEYS[2] }
if ARGV[3] == 'waiting' and KEYS[5] then
  local groups, wrong = read_key('ZRANGE', KEYS[5], 0, -1)
  if wrong then return wrong end
  for _, group in ipairs(groups) do
    if group ~= '' then sets[#sets + 1] = KEYS[4] .. group .. ':waiting' end
  end
end
local ids = {}
for _, set in ipairs(sets) do
  if #ids >= limit then break end
  local size, wrong = read_key('ZCARD', set)
  if wrong then return wrong end
  if offset >= size then
    offset = offset - size
  else
    local page = redis.call('ZRANGE', set, offset, offset + (limit - #ids) - 1)
    for _, id in ipairs(page) do ids[#ids + 1] = id end
    offset = 0
  end
end
local out = {}
if #ids > 0 then
  local _, wrong = read_key('ZCARD', KEYS[3])
  if wrong then return wrong end
end
for i, id in ipairs(ids) do
  local expiry = redis.call('ZSCORE', KEYS[3], id)
  -- A key that is not a hash (edited by hand) lists as no hash, which the reader reports
  -- naming the job, rather than failing the page with WRONGTYPE.
  local hash = redis.pcall('HGETALL', KEYS[1] .. id)
  if hash.err then hash = {} end
  out[i] = { id, hash, tonumber(expiry) or 0 }
end
return out
