-- KEYS: the keys to remember. ARGV: ttl ms
-- All or nothing: if any key is still remembered, nothing changes.
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then return 0 end
end
for _, key in ipairs(KEYS) do
  redis.call('SET', key, 1, 'PX', ARGV[1])
end
return 1
