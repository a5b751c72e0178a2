-- KEYS: job, open set
-- ARGV: job id, new status, allowed sources (",a,b,"), output mode
--       (none|replace|append), output text, max output bytes, truncation marker,
--       now ms, is final (1|0), job ttl ms, lock ttl ms, key prefix,
--       exit code ('' when none), cancelled by ('' when not), whether the
--       new status raises a report event (1|0)
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return {'not_found'} end
if not string.find(ARGV[3], ',' .. current .. ',', 1, true) then
  return {'refused', current}
end
local added = ''
if ARGV[4] ~= 'none' then
  added = change_output(KEYS[1], ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7])
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'updated_at', ARGV[8])
if ARGV[15] == '1' and current ~= ARGV[2] and redis.call('HEXISTS', KEYS[1], 'reports') == 1 then
  -- The event's reports are due now, in the step that raises it; LT keeps
  -- an earlier due time.
  redis.call('ZADD', ARGV[12] .. 'outbox', 'LT', ARGV[8], ARGV[1])
end
history_move(ARGV[12], KEYS[1], ARGV[1], current, ARGV[2])
announce(ARGV[12], KEYS[1], ARGV[1], added)
if ARGV[9] ~= '1' then return {'applied', ''} end

redis.call('HSET', KEYS[1], 'finished_at', ARGV[8])
if ARGV[13] ~= '' then redis.call('HSET', KEYS[1], 'exit_code', ARGV[13]) end
if ARGV[14] ~= '' then redis.call('HSET', KEYS[1], 'cancelled_by', ARGV[14]) end
redis.call('PEXPIRE', KEYS[1], ARGV[10])
redis.call('SREM', KEYS[2], ARGV[1])
local deployment = redis.call('HGET', KEYS[1], 'deployment_id')
history_expires(ARGV[12], ARGV[1], deployment, tonumber(ARGV[8]) + tonumber(ARGV[10]))
local inventory = redis.call('HGET', KEYS[1], 'inventory')
local lock = ARGV[12] .. 'lock:' .. inventory
-- compare-and-delete: only the job that owns the lock releases it
if redis.call('GET', lock) == ARGV[1] then redis.call('DEL', lock) end
local queued_key = ARGV[12] .. 'queued:' .. inventory
if redis.call('GET', queued_key) == ARGV[1] then redis.call('DEL', queued_key) end
return {'applied', promote(ARGV[12], inventory, ARGV[11], ARGV[8]) or ''}
