-- KEYS: lock, queued pointer, job, open set, job index
-- ARGV: job id, on_busy, lock ttl ms, open ttl ms, now ms, deployment id,
--       inventory, trigger json, key prefix, reports json ('' when none)
local function create(status)
  redis.call('HSET', KEYS[3], 'deployment_id', ARGV[6], 'inventory', ARGV[7],
    'status', status, 'output', '', 'trigger', ARGV[8], 'created_at', ARGV[5],
    'updated_at', ARGV[5])
  if status == LOCK_HOLDER then redis.call('HSET', KEYS[3], 'started_at', ARGV[5]) end
  if ARGV[10] ~= '' then redis.call('HSET', KEYS[3], 'reports', ARGV[10]) end
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
  redis.call('SADD', KEYS[4], ARGV[1])
  redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1])
  history_add(ARGV[9], status, ARGV[6], ARGV[1])
  history_expires(ARGV[9], ARGV[1], ARGV[6], tonumber(ARGV[5]) + tonumber(ARGV[4]))
end

if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[3]) then
  create(LOCK_HOLDER)
  return {'started'}
end
local holder = redis.call('GET', KEYS[1])
if ARGV[2] == 'reject' then return {'busy'} end
if ARGV[2] == 'join' then return {'joined', holder} end
local queued = redis.call('GET', KEYS[2])
if queued then
  local job = ARGV[9] .. 'job:' .. queued
  if redis.call('HGET', job, 'status') == WAITING then return {'joined', queued} end
end
create(WAITING)
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[4])
return {'queued'}
