-- step_save: store one durable step result of an active job, checked against its lease, so
-- that a host that lost the lease (the job runs elsewhere now) cannot write into the steps of
-- the attempt that replaced it. The step hash lives in the queue's slot, next to the job.
--
-- KEYS[1] job prefix  KEYS[2] steps prefix  KEYS[3] config  KEYS[4] events
-- ARGV[1] id  ARGV[2] lease token  ARGV[3] field (`run:<name>`)  ARGV[4] value
-- Reply: 'ok', or the rejection reason as in extend ('not_found', 'not_active:<state>',
--   'token_mismatch', 'malformed'), in which case nothing is written.
-- Event: `step` with the job, its attempt and the field, one per save.
-- Error (nothing written): 'WASMQ_WRONGTYPE <key> <type>' (type_error in lib.lua).

local id, token, field, value = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if not value or not KEYS[4] then
  return redis.error_reply('WASMQ_INVALID step_save needs 4 keys and id, token, field, value')
end
local f, unusable = read_job(KEYS[1] .. id, { 'state', 'lease_token', 'attempt' }, NO_FIELDS)
local problem = lease_check(f, unusable, token)
if problem then return problem end
-- Everything that can fail is read before the one write.
local cfg, wrong = read_config(KEYS[3], { 'events_maxlen' })
wrong = wrong or type_error(KEYS[2] .. id, 'hash')
if wrong then return wrong end
redis.call('HSET', KEYS[2] .. id, field, value)
if cfg.events_maxlen > 0 then
  redis.pcall('XADD', KEYS[4], 'MAXLEN', '~', cfg.events_maxlen, '*', 'event', 'step',
    'jobs', cjson.encode({ { id, int_field('attempt', f[3], 0) } }), 'field', field)
end
return 'ok'
