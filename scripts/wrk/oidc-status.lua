-- POST /job-status/ with an OIDC job token as bearer: every request verifies
-- the token (RS256, warm key cache) and matches it against the policies.
-- Reads BENCH_TOKEN and BENCH_JOB_ID from the environment.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
wrk.body = string.format('{"job_id":"%s"}', os.getenv("BENCH_JOB_ID"))
