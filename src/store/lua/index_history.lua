-- ARGV: key prefix, now ms, then job ids
-- Indexes jobs stored before the history existed; a job already indexed,
-- or gone, is left alone. Each job is read and indexed in this one step.
local indexed = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local job = ARGV[1] .. 'job:' .. id
  local fields = redis.call('HMGET', job, 'status', 'deployment_id')
  local status, deployment = fields[1], fields[2]
  if status and deployment then
    local all = history_keys(ARGV[1], status, deployment)
    if not redis.call('ZSCORE', all, id) then
      history_add(ARGV[1], status, deployment, id)
      local ttl = redis.call('PTTL', job)
      if ttl > 0 then history_expires(ARGV[1], id, deployment, tonumber(ARGV[2]) + ttl) end
      indexed = indexed + 1
    end
  end
end
return indexed
