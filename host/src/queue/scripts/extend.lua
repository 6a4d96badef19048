-- extend: renew the leases of active jobs held under the given tokens (heartbeat).
--
-- KEYS[1] job prefix  KEYS[2] active
-- ARGV[1] lease_ms; then pairs: id, token
-- Reply: {lease_expires_at_ms, rejected} where rejected lists {id, reason} with reason
--   'not_found', 'not_active:<state>', 'token_mismatch' or 'malformed' (a key that is not a
--   job hash: recover buries it once the lease expires); those leases were not extended.
-- Error (nothing written): 'WASMQ_WRONGTYPE <key> <type>' (type_error in lib.lua).

local prefix = KEYS[1]
local lease_ms = math.floor(tonumber(ARGV[1]) or 0)
if lease_ms < 1 then return redis.error_reply('WASMQ_INVALID extend needs lease_ms >= 1') end
local wrong = type_error(KEYS[2], 'zset')
if wrong then return wrong end
local expires = now_ms() + lease_ms
local renewed, rejected, slots = {}, {}, {}
for i = 2, #ARGV - 1, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local f, unusable = read_job(prefix .. id, { 'state', 'lease_token', 'group_slot' }, NO_FIELDS)
  local problem = lease_check(f, unusable, token)
  if problem then
    rejected[#rejected + 1] = { id, problem }
  else
    renewed[#renewed + 1] = expires
    renewed[#renewed + 1] = id
    note_group_slot(slots, f[3], id)
  end
end
zadd_pairs(KEYS[2], renewed)
-- A job's group slot (group concurrency) is scored by its lease expiry too.
extend_group_slots(prefix, slots, expires)
return { expires, rejected }
