-- KEYS: job. ARGV: from instance, to instance
-- Moves an open job's launch claim from one instance to another, only if
-- `from` still holds it.
local status = redis.call('HGET', KEYS[1], 'status')
if not status or FINAL[status] then return 0 end
if redis.call('HGET', KEYS[1], 'launch_claim') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'launch_claim', ARGV[2])
return 1
