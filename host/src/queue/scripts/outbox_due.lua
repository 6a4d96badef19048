-- outbox_due: the parents whose child jobs were written by a completion at least `age_ms` ago
-- and are still not delivered (the host that completed them delivers at once; this is how
-- any host finds what a host that died in between left behind). Read-only.
--
-- KEYS[1] outbox
-- ARGV[1] age_ms  ARGV[2] limit
-- Reply: {parent ids, oldest first}
-- Error: 'WASMQ_WRONGTYPE <key> <type>' (read_key in lib.lua).

local age = math.floor(tonumber(ARGV[1]) or 0)
local limit = math.floor(tonumber(ARGV[2]) or 0)
if limit < 1 then return {} end
local due, wrong = read_key('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms() - age, 'LIMIT', 0, limit)
return due or wrong
