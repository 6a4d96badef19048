-- cancel_filter: cancel, one page at a time, every job of a handler or of a group that has not
-- started: waiting, delayed (a durable sleep too) or retry. Each is dead-lettered as cancel.lua
-- does (cancel_job in lib.lua); running jobs are left alone (cancel them by id). A page looks
-- at about `limit` jobs of the sets it scans (ZSCAN: a small set, kept as a listpack, comes
-- whole, so a page may look at up to `limit` plus one set's listpack more); the call returns
-- a cursor to resume from, '0' when the scan is done. A job that stays in its set for the
-- whole scan is looked at at least once; one enqueued meanwhile may or may not be.
--
-- KEYS[1] job prefix  KEYS[2] config  KEYS[3] waiting  KEYS[4] delayed  KEYS[5] retry
-- KEYS[6] events      KEYS[7] group prefix  KEYS[8] groups  KEYS[9] dead
-- ARGV[1] by, ARGV[2] reason (as cancel.lua's), ARGV[3] 'handler' or 'group', ARGV[4] its
--   name, ARGV[5] cursor ('0' to start), ARGV[6] limit: jobs looked at, 1..10000.
-- Reply: {cursor, cancelled_ids, examined}: the cursor to pass next ('0': done), the ids
--   cancelled by this call, and how many ids it looked at.
-- Error (nothing written): 'WASMQ_WRONGTYPE <key> <type>' (type_error in lib.lua);
--   'WASMQ_INVALID <why>' for arguments it cannot use.

local prefix = KEYS[1]
local kind, name, cursor = ARGV[3], ARGV[4] or '', ARGV[5] or '0'
local limit = int_in(ARGV[6], 1, 10000)
if kind ~= 'handler' and kind ~= 'group' then
  return redis.error_reply('WASMQ_INVALID cancel_filter needs handler or group, got ' ..
    tostring(kind))
end
if name == '' or not limit then
  return redis.error_reply('WASMQ_INVALID cancel_filter needs a name and a limit in 1..10000')
end
local cfg, wrong = read_config(KEYS[2], { 'events_maxlen' })
if wrong then return wrong end
local K = { waiting = KEYS[3], delayed = KEYS[4], retry = KEYS[5], gprefix = KEYS[7],
  groups = KEYS[8], dead = KEYS[9] }
-- The phases, in order: the sets scanned, by letter; 'g' (a handler's) is every group's
-- waiting set, the groups themselves scanned from `groups`.
local phases = kind == 'group' and { 'w', 'd', 'r' } or { 'w', 'd', 'r', 'g' }
local sets = { w = kind == 'group' and (K.gprefix .. name .. ':waiting') or K.waiting,
  d = K.delayed, r = K.retry }
-- The cursor: '<phase>:<zscan cursor>', or 'g:<groups cursor>:<group cursor>:<group>' for
-- the groups (the group last: a name may hold ':').
local phase, at, inner, at_group
if cursor == '0' then
  phase, at = 'w', '0'
else
  phase, at = string.match(cursor, '^([wdrg]):(%d+)')
  if phase == 'g' then
    at, inner, at_group = string.match(cursor, '^g:(%d+):(%d+):(.*)$')
  end
  if not at or (phase == 'g' and kind == 'group') then
    return redis.error_reply('WASMQ_INVALID cancel_filter cursor not understood: ' .. cursor)
  end
end
wrong = type_error(K.waiting, 'zset', K.delayed, 'zset', K.retry, 'zset', K.groups, 'zset',
  K.dead, 'zset', sets.w, 'zset')
if wrong then return wrong end
local by, reason = cancel_text(ARGV[1]), cancel_text(ARGV[2])
local now = now_ms()
local plan, cancelled, examined = { dead = {}, cancelled = {}, freed = {} }, {}, 0
local field = kind == 'group' and 4 or 8

-- Looks at the ids of a ZSCAN reply (member, score pairs) of the set of state `want` and
-- cancels those that match. A job whose hash names another state (or, waiting, another set)
-- is out of step and left to `queue check`: cancel_job writes only to the set scanned.
local function look(batch, want, group)
  for j = 1, #batch, 2 do
    local id = batch[j]
    examined = examined + 1
    local f = read_job(prefix .. id, CANCEL_FIELDS, NO_FIELDS)
    if f and f[field] == name and f[1] == want
        and (want ~= 'waiting' or (f[4] or '') == group)
        and cancel_job(prefix, id, f, now, by, reason, plan, K) == 'cancelled' then
      cancelled[#cancelled + 1] = id
    end
  end
end

-- Scans `key`, the set of state `want` (waiting: of `group`, '' for none), from `from` until
-- it is done or the page is full: the cursor to resume at ('0' when done). A key that is not a
-- sorted set (a group's, edited by hand) has nothing to cancel.
local function scan(key, from, want, group)
  repeat
    local r = redis.pcall('ZSCAN', key, from, 'COUNT', limit - examined)
    if r.err then return '0' end
    from = r[1]
    look(r[2], want, group)
  until from == '0' or examined >= limit
  return from
end
local STATE_OF = { w = 'waiting', d = 'delayed', r = 'retry' }

local next_cursor = '0'
local started = false
for _, p in ipairs(phases) do
  if p == phase then started = true end
  if started and next_cursor == '0' then
    if p ~= 'g' then
      local from = scan(sets[p], p == phase and at or '0', STATE_OF[p],
        (p == 'w' and kind == 'group') and name or '')
      if from ~= '0' then next_cursor = p .. ':' .. from end
    else
      -- Every group's waiting set, the groups scanned from `groups`.
      local outer = p == phase and at or '0'
      local group_from = p == phase and inner or '0'
      local skip_to = p == phase and at_group or ''
      repeat
        local r = redis.call('ZSCAN', K.groups, outer, 'COUNT', 10)
        -- `groups` holds '' too: the ungrouped jobs' turn, whose set is `waiting` (phase w).
        local groups = {}
        for j = 1, #r[2], 2 do
          if r[2][j] ~= '' then groups[#groups + 1] = r[2][j] end
        end
        -- Resuming inside this batch: from the group the last page stopped in (a group gone
        -- since means the batch is looked at again from its start).
        local from_index = 1
        for j, g in ipairs(groups) do
          if skip_to ~= '' and g == skip_to then from_index = j end
        end
        if skip_to == '' or groups[from_index] ~= skip_to then group_from = '0' end
        for j = from_index, #groups do
          if next_cursor == '0' then
            if examined >= limit then
              next_cursor = 'g:' .. outer .. ':0:' .. groups[j]
            else
              local from = scan(K.gprefix .. groups[j] .. ':waiting', group_from, 'waiting',
                groups[j])
              group_from = '0'
              if from ~= '0' then next_cursor = 'g:' .. outer .. ':' .. from .. ':' .. groups[j] end
            end
          end
        end
        skip_to = ''
        outer = r[1]
        if next_cursor == '0' and outer ~= '0' and examined >= limit then
          next_cursor = 'g:' .. outer .. ':0:'
        end
      until outer == '0' or next_cursor ~= '0'
    end
    if next_cursor == '0' and examined >= limit then
      -- The page is full at the end of this phase: the next starts the next one.
      for k, q in ipairs(phases) do
        if q == p and phases[k + 1] then
          next_cursor = phases[k + 1] == 'g' and 'g:0:0:' or (phases[k + 1] .. ':0')
        end
      end
      if next_cursor ~= '0' then break end
    end
  end
end
zadd_pairs(K.dead, plan.dead)
emit(KEYS[6], cfg.events_maxlen, 'cancelled', plan.cancelled)
return { next_cursor, cancelled, examined }
