-- KEYS: job. ARGV: field, value, only if unset (1|0)
-- Never creates a job hash that has already expired or never existed.
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if ARGV[3] == '1' then return redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
