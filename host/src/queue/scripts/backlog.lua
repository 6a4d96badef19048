-- backlog: how far behind a queue is, for backlog alerts: the number of waiting jobs and when
-- the longest-waiting one became due. Read-only.
--
-- KEYS[1] job prefix  KEYS[2] config  KEYS[3] waiting  KEYS[4] group prefix  KEYS[5] groups
-- KEYS[6] alerts
-- Reply: {now_ms, waiting, oldest_due_ms (0: none known), paused (0/1), alerts} where alerts
-- is the HGETALL of the alerts hash: the conditions in force and since when.
-- Error: 'WASMQ_WRONGTYPE <key> <type>' for a key of another type (read_key in lib.lua).
--
-- Within one priority, waiting jobs are in FIFO order (the score is the priority's band plus
-- the queue sequence), so the longest-waiting job heads one of the priority bands of one of
-- the waiting sets. This looks at the head of every band present (usually one or two) in
-- `waiting` and in each group's set: O(bands x groups), at most MAX_HEADS heads in all. A job's
-- due time is its `run_at` (enqueue, retry, promote and replay set it; a job replayed before
-- replay did has none, and counts in `waiting` but not in the age).

local MAX_HEADS = 1000
local prefix = KEYS[1]
local now = now_ms()
local heads, waiting, oldest = 0, 0, 0

-- Returns the WASMQ_WRONGTYPE error of a set of another type (read_key in lib.lua).
local function scan(set)
  local size, wrong = read_key('ZCARD', set)
  if wrong then return wrong end
  waiting = waiting + size
  local head = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
  while head[1] and heads < MAX_HEADS do
    heads = heads + 1
    local due = redis.pcall('HGET', prefix .. head[1], 'run_at')
    due = type(due) == 'string' and int_field('run_at', due, nil) or nil
    if due and (oldest == 0 or due < oldest) then oldest = due end
    local band = math.floor(tonumber(head[2]) / PRIORITY_SPAN)
    head = redis.call('ZRANGEBYSCORE', set, string.format('%d', (band + 1) * PRIORITY_SPAN),
      '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  end
end

local wrong = scan(KEYS[3])
if wrong then return wrong end
local groups, paused, alerts
groups, wrong = read_key('ZRANGE', KEYS[5], 0, -1)
if wrong then return wrong end
for _, group in ipairs(groups) do
  -- '' is the turn of the ungrouped jobs in the round-robin (fetch.lua), not a group.
  if group ~= '' then
    wrong = scan(KEYS[4] .. group .. ':waiting')
    if wrong then return wrong end
  end
end
paused, wrong = read_key('HGET', KEYS[2], 'paused')
if wrong then return wrong end
alerts, wrong = read_key('HGETALL', KEYS[6])
if wrong then return wrong end
return { now, waiting, oldest, paused == '1' and 1 or 0, alerts }
