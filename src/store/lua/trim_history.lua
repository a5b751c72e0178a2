-- KEYS: expiring set. ARGV: key prefix, now ms, batch size
-- Forgets the history entries of the jobs whose hash expired. A job still
-- there (the service's clock ahead of the server's) is due again when its
-- hash expires; one without expiry is left indexed.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local forgotten = 0
for _, member in ipairs(due) do
  local entry = cjson.decode(member)
  local id, deployment = entry[1], entry[2]
  local ttl = redis.call('PTTL', ARGV[1] .. 'job:' .. id)
  -- 0 is a key in its last millisecond: still there, due again at once.
  if ttl >= 0 then
    redis.call('ZADD', KEYS[1], tonumber(ARGV[2]) + math.max(ttl, 1), member)
  else
    redis.call('ZREM', KEYS[1], member)
    if ttl == -2 then
      for _, status in ipairs(STATUSES) do
        local all, own = history_keys(ARGV[1], status, deployment)
        redis.call('ZREM', all, id)
        redis.call('ZREM', own, id)
      end
      forgotten = forgotten + 1
    end
  end
end
return {forgotten, #due}
