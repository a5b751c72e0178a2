-- KEYS: job, outbox, lease. ARGV: job id, claimant, status seen, reports
-- json, next due ms ('' = nothing due), now ms.
-- Saves a claimed job's report progress and gives up the claim; nothing is
-- saved by a claimant whose lease lapsed to another.
if redis.call('GET', KEYS[3]) ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[3])
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 1
end
redis.call('HSET', KEYS[1], 'reports', ARGV[4])
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[3] then
  redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
elseif ARGV[5] == '' then
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
end
return 1
