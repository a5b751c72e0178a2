-- KEYS: job. ARGV: who asks.
-- Marks an open job as asked to stop; a final job is left as it is.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'not_found', ''} end
if FINAL[status] then return {'final', status} end
redis.call('HSET', KEYS[1], 'cancel_requested_by', ARGV[1])
return {'requested', status}
