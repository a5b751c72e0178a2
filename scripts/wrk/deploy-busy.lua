-- POST /app-deploy/ for an inventory whose job is running, with the right
-- secret: the busy answer ("App deployment is already running" with the
-- default CD_ON_BUSY=reject), which must not take a write.
-- Reads BENCH_SECRET from the environment.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"deployment_id":"busy","deployment_secret":"%s"}',
  os.getenv("BENCH_SECRET"))
