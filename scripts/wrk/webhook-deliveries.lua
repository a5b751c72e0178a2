-- Signed GitHub push deliveries, read from BENCH_REQUESTS: one per line,
-- `<X-GitHub-Delivery>\t<X-Hub-Signature-256>\t<body>`, made by
-- scripts/bench-webhooks.sh (LuaJIT has no HMAC, so nothing is signed here).
--   BENCH_MODE=fixed  the first line on every request (a replay)
--   BENCH_MODE=cycle  every line once per thread in turn (thread i sends
--                     lines i, i+T, i+2T, …); a wrap-around repeats deliveries
-- Counts answers by HTTP status and prints them at the end.
local threads = {}

function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
end

function init(args)
  mode = os.getenv("BENCH_MODE") or "fixed"
  local path = assert(os.getenv("BENCH_REQUESTS"), "BENCH_REQUESTS is unset")
  local threads_total = tonumber(os.getenv("BENCH_THREADS") or "1")
  requests = {}
  local n = 0
  for line in io.lines(path) do
    if mode == "fixed" then
      if n == 0 then table.insert(requests, line) end
    elseif n % threads_total == index then
      table.insert(requests, line)
    end
    n = n + 1
  end
  assert(#requests > 0, "no request for this thread in " .. path)
  next_request = 1
  wrapped = 0
  statuses = {}
end

function request()
  local line = requests[next_request]
  next_request = next_request + 1
  if next_request > #requests then
    next_request = 1
    if mode == "cycle" then wrapped = wrapped + 1 end
  end
  local delivery, signature, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["X-GitHub-Event"] = "push",
    ["X-GitHub-Delivery"] = delivery,
    ["X-Hub-Signature-256"] = signature,
  }, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total, wraps = {}, 0
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses") or {}) do
      total[status] = (total[status] or 0) + count
    end
    wraps = wraps + (thread:get("wrapped") or 0)
  end
  local line = "statuses:"
  for status, count in pairs(total) do
    line = line .. string.format(" %d=%d", status, count)
  end
  print(line)
  if os.getenv("BENCH_MODE") == "cycle" then
    print(string.format("wrapped: %d", wraps))
  end
end
