-- purge: delete dead-lettered jobs for good. Only ever called by a person (CLI, API): nothing
-- in wasmq purges on its own.
--
-- KEYS[1] job prefix  KEYS[2] config  KEYS[3] dead  KEYS[4] events  KEYS[5] steps prefix
-- (optional: a purged job's durable steps are deleted with it)
-- ARGV[1] limit; ARGV[2..] job ids. Without ids, purges the `limit` oldest dead jobs.
-- Reply: {purged_ids, skipped} where skipped lists {id, 'not_found' | <state> | 'malformed'}
--   (a key that is not a job hash is left alone: `queue check --repair` buries it first).
-- A purged job's `<q>malformed:<id>` (what its key held when it was buried) is deleted too.
-- Error (nothing written): 'WASMQ_WRONGTYPE <key> <type>' (type_error in lib.lua).

local prefix = KEYS[1]
local cfg, wrong = read_config(KEYS[2], { 'events_maxlen' })
wrong = wrong or type_error(KEYS[3], 'zset')
if wrong then return wrong end
local ids = dlq_ids(KEYS[3])
local purged, skipped, keys, events = {}, {}, {}, {}
for _, id in ipairs(ids) do
  local f, unusable = read_job(prefix .. id, { 'state', 'attempt' }, NO_FIELDS)
  if f and f[1] == 'dead' then
    purged[#purged + 1] = id
    keys[#keys + 1] = prefix .. id
    -- What a malformed job's key held when it was buried goes with it.
    keys[#keys + 1] = malformed_key(prefix, id)
    if KEYS[5] then keys[#keys + 1] = KEYS[5] .. id end
    events[#events + 1] = { id, int_field('attempt', f[2], 0) }
  else
    skipped[#skipped + 1] = { id, f and f[1] or (unusable and 'malformed' or 'not_found') }
  end
end
del_many(keys)
zrem_many(KEYS[3], purged)
emit(KEYS[4], cfg.events_maxlen, 'purged', events)
return { purged, skipped }
