-- KEYS: outbox. ARGV: now ms, claimant, lease ms, most jobs, key prefix.
-- Claims due outbox entries: each one's lease is taken (or renewed by the
-- claimant that left it, after a restart); an expired job's entry goes.
-- Claimed entries stay due (only the lease keeps others off), so that the
-- same claimant finds its own again; the scan reaches past the entries
-- other claimants hold.
local max = tonumber(ARGV[4])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, max + 256)
local claimed = {}
for _, id in ipairs(due) do
  if #claimed >= max then break end
  local lease = ARGV[5] .. 'outbox-lease:' .. id
  local holder = redis.call('GET', lease)
  if not holder or holder == ARGV[2] then
    if redis.call('EXISTS', ARGV[5] .. 'job:' .. id) == 0 then
      redis.call('ZREM', KEYS[1], id)
      redis.call('DEL', lease)
    else
      redis.call('SET', lease, ARGV[2], 'PX', ARGV[3])
      table.insert(claimed, id)
    end
  end
end
return claimed
