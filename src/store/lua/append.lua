-- KEYS: job. ARGV: text, max output bytes, truncation marker, now ms,
--       launch record json (empty: unchanged), key prefix, job id
-- Appends to an open job's output; a final or unknown job is left alone.
local status = redis.call('HGET', KEYS[1], 'status')
if not status or FINAL[status] then return 0 end
local added = change_output(KEYS[1], 'append', ARGV[1], tonumber(ARGV[2]), ARGV[3])
redis.call('HSET', KEYS[1], 'updated_at', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'launch', ARGV[5]) end
announce(ARGV[6], KEYS[1], ARGV[7], added)
return 1
