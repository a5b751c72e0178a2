-- Shared by the scripts that change jobs. FINAL, WAITING, LOCK_HOLDER and
-- STATUSES are written before this file from the Rust status table (redis.rs).

-- The history indexes of a status: every job in it, and the deployment's
-- jobs in it. Members are job ids under one score, so they sort by id
-- (ULIDs: creation order); the deployment id comes last, so any id is safe.
local function history_keys(prefix, status, deployment)
  local base = prefix .. 'history:' .. status .. ':'
  return base .. 'all', base .. 'd:' .. deployment
end

local function history_add(prefix, status, deployment, id)
  local all, own = history_keys(prefix, status, deployment)
  redis.call('ZADD', all, 0, id)
  redis.call('ZADD', own, 0, id)
end

-- Moves a job between status indexes, in the step that changes its status,
-- so that a job is always indexed under the status it has.
local function history_move(prefix, job, id, from, to)
  if from == to then return end
  local deployment = redis.call('HGET', job, 'deployment_id')
  local all, own = history_keys(prefix, from, deployment)
  redis.call('ZREM', all, id)
  redis.call('ZREM', own, id)
  history_add(prefix, to, deployment, id)
end

-- When the job's hash expires (Unix ms): the history trim forgets its
-- entries then. Hashes expire by TTL alone, so nothing else removes them.
local function history_expires(prefix, id, deployment, at)
  redis.call('ZADD', prefix .. 'history:expiring', at, cjson.encode({id, deployment}))
end

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

-- The pub/sub channel every saved change of a job is announced on.
local function changes_channel(prefix)
  return prefix .. 'job-changes'
end

-- Announces a saved change of a job: [id, status, output end offset, the
-- text its output stream grew by] (output.rs's JobChange).
local function announce(prefix, job, id, added)
  local fields = redis.call('HMGET', job, 'status', 'output_end')
  local stream_end = tonumber(fields[2]) or 0
  redis.call('PUBLISH', changes_channel(prefix), cjson.encode({id, fields[1], stream_end, added}))
end

-- Applies an output change ('append' or 'replace') the way output.rs does,
-- offsets included; returns the text the output stream grew by.
local function change_output(job, mode, text, max, marker)
  local fields = redis.call('HMGET', job, 'output', 'output_end', 'output_base')
  local current = fields[1] or ''
  local stream_end = tonumber(fields[2]) or 0
  local base = tonumber(fields[3]) or 0
  if stream_end < #current then stream_end, base = #current, 0 end
  if base > stream_end then base = stream_end end
  local added
  if mode == 'append' then
    added = text
    text = current .. text
    stream_end = stream_end + #added
  else
    local posted = stream_end - base
    local body = current
    if #current ~= posted and string.sub(current, 1, #marker) == marker then
      body = string.sub(current, #marker + 1)
    end
    local from = posted - #body
    if from >= 0 and #text >= posted and string.sub(text, from + 1, posted) == body then
      added = string.sub(text, posted + 1)
      stream_end = base + #text
    else
      added = text
      base = stream_end
      stream_end = stream_end + #text
    end
  end
  redis.call('HSET', job, 'output', cap_output(text, max, marker),
    'output_end', string.format('%d', stream_end), 'output_base', string.format('%d', base))
  return added
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
  history_move(prefix, job, queued, WAITING, LOCK_HOLDER)
  announce(prefix, job, queued, '')
  return queued
end
