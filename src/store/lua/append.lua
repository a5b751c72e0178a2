-- KEYS: job. ARGV: text, max output bytes, truncation marker, now ms,
--       launch record json (empty: unchanged)
-- Appends to an open job's output; a final or unknown job is left alone.
local status = redis.call('HGET', KEYS[1], 'status')
if not status or FINAL[status] then return 0 end
local output = (redis.call('HGET', KEYS[1], 'output') or '') .. ARGV[1]
redis.call('HSET', KEYS[1], 'output', cap_output(output, tonumber(ARGV[2]), ARGV[3]), 'updated_at', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'launch', ARGV[5]) end
return 1
