-- POST /app-deploy/ with a wrong secret: the refusal path ("App not found"),
-- which must stay cheap because anyone can reach it.
-- Reads BENCH_DEPLOYMENT_ID from the environment.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format(
  '{"deployment_id":"%s","deployment_secret":"wrong-secret-for-the-benchmark"}',
  os.getenv("BENCH_DEPLOYMENT_ID"))
