-- POST /job-status/ for one finished job with its app's right secret: the
-- polling path every deploy client hits every few seconds.
-- Reads BENCH_DEPLOYMENT_ID, BENCH_SECRET and BENCH_JOB_ID from the environment.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format(
  '{"deployment_id":"%s","deployment_secret":"%s","job_id":"%s"}',
  os.getenv("BENCH_DEPLOYMENT_ID"), os.getenv("BENCH_SECRET"), os.getenv("BENCH_JOB_ID"))
