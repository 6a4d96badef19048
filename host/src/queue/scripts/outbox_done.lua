-- outbox_done: forget delivered outbox entries: each parent leaves `outbox` and its entry is
-- deleted. Delivery enqueues children under fixed ids first, so a crash before this call only
-- makes the next delivery find them already enqueued.
--
-- KEYS[1] outbox
-- ARGV: parent ids
-- Reply: how many entries were removed.
-- Error (nothing written): 'WASMQ_WRONGTYPE <key> <type>' (type_error in lib.lua).

local wrong = type_error(KEYS[1], 'zset')
if wrong then return wrong end
local keys = {}
for i, id in ipairs(ARGV) do keys[i] = KEYS[1] .. ':' .. id end
del_many(keys)
local removed = 0
for c = 1, #ARGV, 1000 do
  removed = removed + redis.call('ZREM', KEYS[1], unpack(ARGV, c, math.min(c + 999, #ARGV)))
end
return removed
