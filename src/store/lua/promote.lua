-- Shared by the scripts below: hand the inventory's lock to its queued job,
-- if the lock is free and the queued job is still waiting.
local function promote(prefix, inventory, lock_ttl, now)
  local lock = prefix .. 'lock:' .. inventory
  local queued_key = prefix .. 'queued:' .. inventory
  if redis.call('EXISTS', lock) == 1 then return false end
  local queued = redis.call('GET', queued_key)
  if not queued then return false end
  redis.call('DEL', queued_key)
  local job = prefix .. 'job:' .. queued
  if redis.call('HGET', job, 'status') ~= 'queued' then return false end
  redis.call('SET', lock, queued, 'PX', lock_ttl)
  redis.call('HSET', job, 'status', 'starting', 'started_at', now, 'updated_at', now)
  return queued
end
