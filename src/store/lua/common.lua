-- Shared by the scripts that change jobs. FINAL, WAITING and LOCK_HOLDER are
-- written before this file from the Rust status table (redis.rs).

-- Keeps at most `max` bytes of `output`: the newest bytes win behind the
-- marker, and the cut never starts inside a UTF-8 character.
local function cap_output(output, max, marker)
  if #output <= max then return output end
  local start = #output - (max - #marker) + 1
  while start <= #output do
    local byte = string.byte(output, start)
    if byte < 0x80 or byte >= 0xC0 then break end
    start = start + 1
  end
  return marker .. string.sub(output, start)
end

-- Hands the inventory's lock to its queued job, if the lock is free and the
-- queued job is still waiting.
local function promote(prefix, inventory, lock_ttl, now)
  local lock = prefix .. 'lock:' .. inventory
  local queued_key = prefix .. 'queued:' .. inventory
  if redis.call('EXISTS', lock) == 1 then return false end
  local queued = redis.call('GET', queued_key)
  if not queued then return false end
  redis.call('DEL', queued_key)
  local job = prefix .. 'job:' .. queued
  if redis.call('HGET', job, 'status') ~= WAITING then return false end
  redis.call('SET', lock, queued, 'PX', lock_ttl)
  redis.call('HSET', job, 'status', LOCK_HOLDER, 'started_at', now, 'updated_at', now)
  return queued
end
