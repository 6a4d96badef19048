-- search: one page of the jobs of a queue that match a filter. Read-only. It walks the state
-- sets from a cursor and reads at most ARGV[2] (`scan`) set entries per call, so a page costs
-- Redis the same whatever the queue holds (docs/protocol.md, "search.lua").
--
-- The walk: `waiting`, then each group's waiting set (the groups a `ZSCAN` batch of `groups` at
-- a time, by name within a batch), then `delayed`, `active`, `retry`, `completed`, `dead`; each
-- set in its own order (score, then id). A state filter walks that state's sets only; a group
-- filter reads only `g:<group>:waiting` of the waiting sets, and the group field of the others.
-- The cursor is the last entry examined: `<state> <score> <id>`, or `group <zscan cursor>
-- <name> <score> <id>` (fewer words: the start of that set, batch or stage); a call resumes
-- just after it, even when that job has left the set since.
--
-- KEYS[1] job prefix  KEYS[2] waiting  KEYS[3] delayed  KEYS[4] active  KEYS[5] retry
-- KEYS[6] completed  KEYS[7] dead  KEYS[8] group prefix  KEYS[9] groups
-- ARGV[1] cursor ('' to start)  ARGV[2] scan (set entries to examine, at most)
-- ARGV[3] limit (jobs to return, at most)  ARGV[4] state ('' for every state)
-- ARGV[5] handler  ARGV[6] group  ARGV[7] id prefix  ARGV[8] payload substring (plain, not a
-- pattern)  ARGV[9] time field (`created_at` or `finished_at`)  ARGV[10] since (ms)
-- ARGV[11] until (ms): each '' for no filter; a negative time is that many ms before now.
-- Reply: {next cursor ('' when the walk is over), entries examined, {{id, hash as a flat
-- field/value list ({} when the key is missing or not a hash), lease expiry ms or 0}, ...}}
-- Errors: 'WASMQ_INVALID <reason>' (a cursor or argument that does not read);
-- 'WASMQ_WRONGTYPE <key> <type>' for a set of another type (read_key in lib.lua).

local MAX_SCAN = 10000
local MAX_LIMIT = 1000
local scan = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
if not scan or scan < 1 or scan > MAX_SCAN or scan ~= math.floor(scan) then
  return redis.error_reply('WASMQ_INVALID scan must be 1..' .. MAX_SCAN)
end
if not limit or limit < 1 or limit > MAX_LIMIT or limit ~= math.floor(limit) then
  return redis.error_reply('WASMQ_INVALID limit must be 1..' .. MAX_LIMIT)
end
local function opt(v) if v == nil or v == '' then return nil end return v end
local want_state, want_handler, want_group = opt(ARGV[4]), opt(ARGV[5]), opt(ARGV[6])
local want_prefix, want_text = opt(ARGV[7]), opt(ARGV[8])
local time_field = ARGV[9] or 'created_at'
if time_field ~= 'created_at' and time_field ~= 'finished_at' then
  return redis.error_reply('WASMQ_INVALID time field must be created_at or finished_at')
end
local now
local function time_arg(v, name)
  if not opt(v) then return nil end
  local ms = tonumber(v)
  if not ms or ms ~= math.floor(ms) then return nil, name .. ' is not an integer (ms)' end
  if ms < 0 then
    now = now or now_ms()
    ms = now + ms
  end
  return ms
end
local since, since_err = time_arg(ARGV[10], 'since')
local until_ms, until_err = time_arg(ARGV[11], 'until')
if since_err or until_err then return redis.error_reply('WASMQ_INVALID ' .. (since_err or until_err)) end

local SETS = { waiting = KEYS[2], delayed = KEYS[3], active = KEYS[4], retry = KEYS[5],
  completed = KEYS[6], dead = KEYS[7] }
-- The stages of the walk, in order; `group` is every group's waiting set, one after another.
local STAGES = { 'waiting', 'group', 'delayed', 'active', 'retry', 'completed', 'dead' }
local function stage_wanted(stage)
  if stage == 'group' then return want_state == nil or want_state == 'waiting' end
  if stage == 'waiting' and want_group then return false end
  return want_state == nil or want_state == stage
end
if want_state and not SETS[want_state] then
  return redis.error_reply('WASMQ_INVALID unknown state ' .. want_state)
end

-- Whether id `a` sorts at or before id `b` as a sorted set orders equal scores: bytewise
-- (Lua's `<=` follows the server's collation locale).
local function at_or_before(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a <= #b
end

-- The cursor: stage index, group, score, id (score and id nil at the start of a set); in the
-- groups' stage also `zc`, the `ZSCAN` cursor of `groups` that gave the batch the group is in.
local at = { stage = 1, zc = '0' }
if ARGV[1] ~= '' then
  local words = {}
  for w in string.gmatch(ARGV[1], '[^ ]+') do words[#words + 1] = w end
  local stage = words[1]
  local index
  for i, s in ipairs(STAGES) do if s == stage then index = i end end
  local rest = 2
  if stage == 'group' then
    at.zc = words[2] or '0'
    at.group = words[3]
    rest = 4
  end
  at.stage = index
  at.score, at.id = words[rest], words[rest + 1]
  if not index or words[rest + 2] or not string.match(at.zc, '^%d+$')
      or (at.score and (not at.id or not tonumber(at.score))) then
    return redis.error_reply('WASMQ_INVALID cursor does not read')
  end
end

local budget = scan

-- The groups, a batch at a time: each `ZSCAN` of `groups` (COUNT 100) costs one entry of the
-- budget, and a batch is walked in name order (bytewise). `ZSCAN` from a cursor returns the
-- same batch while `groups` is not resized, which is what lets a page resume inside a batch.
local GROUP_BATCH = 100
local batch, batch_next
local function read_batch(zc)
  local reply, wrong = read_key('ZSCAN', KEYS[9], zc, 'COUNT', GROUP_BATCH)
  if wrong then return wrong end
  budget = budget - 1
  batch_next = reply[1]
  batch = {}
  local items = reply[2]
  for i = 1, #items, 2 do
    if items[i] ~= '' then batch[#batch + 1] = items[i] end
  end
  table.sort(batch, function(a, b) return a ~= b and at_or_before(a, b) end)
  return nil
end

-- The first group after `after` (nil: the first of the batch `at.zc`), moving `at.zc` on to
-- later batches as they run out: the group (nil after the last one); an error answer; or
-- `exhausted` when the budget ran out first (the walk then resumes at the start of the batch
-- `at.zc`, a later one than it started in). The batch `after` is in is read even on an empty
-- budget (at most one read past it per call), so a walk always moves on.
local function next_group(after)
  if want_group then
    if after == nil then return want_group end
    return nil
  end
  local first = true
  while first or budget > 0 do
    first = false
    if batch == nil then
      local wrong = read_batch(at.zc)
      if wrong then return nil, wrong end
    end
    for _, g in ipairs(batch) do
      if after == nil or not at_or_before(g, after) then return g end
    end
    if batch_next == '0' then return nil end
    at.zc, batch, after = batch_next, nil, nil
  end
  return nil, nil, true
end

-- The rank just after the entry (score, id) in `key`: that entry's rank + 1 while it is there
-- at that score, else found among the entries of that score by halving (ids of one score sort
-- bytewise), so a job that left the set since the last page costs O(log n) commands.
local function resume(key, score, id)
  local found, wrong = read_key('ZSCORE', key, id)
  if wrong then return nil, wrong end
  if found and tonumber(found) == tonumber(score) then
    return redis.call('ZRANK', key, id) + 1
  end
  local lo = redis.call('ZCOUNT', key, '-inf', '(' .. score)
  local hi = lo + redis.call('ZCOUNT', key, score, score)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local member = redis.call('ZRANGE', key, mid, mid)[1]
    if member and at_or_before(member, id) then lo = mid + 1 else hi = mid end
  end
  return lo
end

local fields = { 'handler', 'group', time_field }
if want_text then fields[#fields + 1] = 'payload' end
local filters_fields = want_handler or (want_group and true) or want_text or since or until_ms

-- Whether the job `id`, found in a set of stage `stage`, matches the filter.
local function matches(id, stage)
  if want_prefix and string.sub(id, 1, #want_prefix) ~= want_prefix then return false end
  if not filters_fields then return true end
  local f = redis.pcall('HMGET', KEYS[1] .. id, unpack(fields))
  if f.err then return false end
  if want_handler and f[1] ~= want_handler then return false end
  if want_group and stage ~= 'group' and f[2] ~= want_group then return false end
  if since or until_ms then
    local t = tonumber(f[3])
    if not t or (since and t < since) or (until_ms and t > until_ms) then return false end
  end
  if want_text then
    if type(f[4]) ~= 'string' or not string.find(f[4], want_text, 1, true) then return false end
  end
  return true
end

local examined = 0
local out = {}
local cursor = ''
-- Moves the walk to the start of the next set: the next group's, or the next stage's.
local function advance()
  if STAGES[at.stage] == 'group' and at.group and not want_group then
    local g, wrong, exhausted = next_group(at.group)
    if wrong then return wrong end
    at.group, at.score, at.id = g, nil, nil
    if g or exhausted then return nil end
  end
  at.stage, at.group, at.score, at.id = at.stage + 1, nil, nil, nil
  return nil
end
while at.stage <= #STAGES and budget > 0 and #out < limit do
  local stage = STAGES[at.stage]
  local key
  local wanted = stage_wanted(stage)
  if wanted and stage == 'group' and at.group == nil then
    local g, wrong, exhausted = next_group(nil)
    if wrong then return wrong end
    if exhausted then break end
    at.group, at.score, at.id = g, nil, nil
    -- The batch read took the last of the budget: the next call starts at this group.
    if budget <= 0 then break end
  end
  if wanted then
    if stage == 'group' then
      if at.group then key = KEYS[8] .. at.group .. ':waiting' end
    else
      key = SETS[stage]
    end
  end
  if key then
    local start = 0
    if at.score then
      local rank, wrong = resume(key, at.score, at.id)
      if wrong then return wrong end
      start = rank
    end
    local asked = budget
    local entries, wrong = read_key('ZRANGE', key, start, start + asked - 1, 'WITHSCORES')
    if wrong then return wrong end
    -- An empty read costs one entry of the budget too, so a call reads at most `scan` sets.
    if #entries == 0 then budget = budget - 1 end
    local full = false
    for i = 1, #entries, 2 do
      local id, score = entries[i], entries[i + 1]
      budget = budget - 1
      examined = examined + 1
      at.score, at.id = score, id
      if matches(id, stage) then
        local hash = redis.pcall('HGETALL', KEYS[1] .. id)
        if hash.err then hash = {} end
        out[#out + 1] = { id, hash, stage == 'active' and math.floor(tonumber(score)) or 0 }
        if #out >= limit then
          full = true
          break
        end
      end
    end
    -- Fewer entries than asked for: the set is done. Otherwise the budget or the page is,
    -- and the cursor stays at the last entry examined.
    if not full and #entries / 2 < asked then
      local wrong2 = advance()
      if wrong2 then return wrong2 end
    end
  else
    at.stage, at.group, at.score, at.id = at.stage + 1, nil, nil, nil
  end
end
-- A walk at the start of a set it does not want ends there rather than one call later.
while at.stage <= #STAGES and at.score == nil and not stage_wanted(STAGES[at.stage]) do
  at.stage, at.group, at.zc = at.stage + 1, nil, '0'
end
if at.stage <= #STAGES then
  local stage = STAGES[at.stage]
  local parts = { stage }
  if stage == 'group' then
    parts[2] = at.zc
    if at.group then parts[3] = at.group end
  end
  if at.score then
    parts[#parts + 1] = at.score
    parts[#parts + 1] = at.id
  end
  cursor = table.concat(parts, ' ')
end
return { cursor, examined, out }
