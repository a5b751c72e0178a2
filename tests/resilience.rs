//! Replicas, crashes and outages: one job per inventory across instances,
//! jobs surviving a kill -9 of the service, Redis going away and coming back.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(20);
/// The statuses a job ends in.
const FINAL: &[&str] = &["success", "error"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_deploys_on_two_instances_start_exactly_one_job() {
    let redis = RedisServer::start();
    let first = TestApp::spawn(&redis, &[]).await;
    let second = TestApp::spawn(&redis, &[]).await;
    first.set_apps(&[("app-one", "sleep-2-race")]).await;

    let body = json!({"deployment_id": "app-one", "deployment_secret": SECRET});
    let requests = (0..200).map(|n| {
        let app = if n % 2 == 0 { &first } else { &second };
        let body = body.clone();
        async move { app.post("/app-deploy/", &body).await }
    });
    let answers: Vec<(u16, Value)> = futures::future::join_all(requests).await;

    let started: Vec<&Value> = answers
        .iter()
        .filter(|(_, body)| body["status"] == "starting")
        .map(|(_, body)| body)
        .collect();
    assert_eq!(started.len(), 1, "exactly one job starts");
    let refused = answers
        .iter()
        .filter(|(status, body)| {
            *status == 200 && body["error"] == "App deployment is already running"
        })
        .count();
    assert_eq!(refused, 199);

    let job_id = started[0]["job_id"].as_str().expect("job id");
    assert_eq!(
        second.wait_final("app-one", job_id, DEADLINE).await["status"],
        "success"
    );
    let (_, load) = first.admin_get("/load/?periods=1_hour:3600").await;
    let counts = &load["load"]["1_hour"];
    let total: u64 = ["queued", "starting", "running", "success", "error"]
        .iter()
        .map(|status| counts[status].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, 1, "{load}");
}

/// The client of app-one on the service process at `addr`.
fn app_one(addr: SocketAddr) -> DeploymentClient {
    DeploymentClient {
        addr,
        id: "app-one",
    }
}

#[tokio::test]
async fn a_job_survives_a_kill_9_of_the_service_and_its_lock_is_released() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let addr = free_addr();
    let env = serve_env_at(&Backend::Redis(&redis), data_dir.path(), addr);
    let mut service = ServiceProcess::start(&env, addr);
    let app = app_one(addr);
    app.register("sleep-3-crash").await;

    let started = app.deploy().await;
    let job_id = job_id_of(&started);
    app.wait_status(&job_id, &["running"], DEADLINE).await;

    service.kill_hard();
    // The program keeps running while the service is down; a new instance
    // picks the job up and takes its final callback.
    let _service = ServiceProcess::start(&env, addr);
    let done = app.wait_status(&job_id, FINAL, DEADLINE).await;
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(done["output"], "sleeping\nwoke up\n");

    let next = app.deploy().await;
    assert_eq!(next["status"], "starting", "the lock was released: {next}");
    let next_id = next["job_id"].as_str().expect("job id");
    app.wait_status(next_id, FINAL, DEADLINE).await;
}

#[tokio::test]
async fn a_program_that_ends_silently_while_the_service_is_down_ends_error_after_restart() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let addr = free_addr();
    let env = serve_env_at(&Backend::Redis(&redis), data_dir.path(), addr);
    let mut service = ServiceProcess::start(&env, addr);
    let app = app_one(addr);
    app.register("quiet-1-crash").await;

    let job_id = job_id_of(&app.deploy().await);
    let connection = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    eventually("the program to be launched", DEADLINE, || {
        let mut connection = connection.clone();
        let key = format!("enac-cd:job:{job_id}");
        async move {
            let launched: bool = redis::cmd("HEXISTS")
                .arg(key)
                .arg("launch")
                .query_async(&mut connection)
                .await
                .ok()?;
            launched.then_some(())
        }
    })
    .await;
    service.kill_hard();
    // Let the program end while no service runs.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _service = ServiceProcess::start(&env, addr);

    let done = app.wait_status(&job_id, FINAL, DEADLINE).await;
    assert_eq!(done["status"], "error", "{done}");
    assert!(
        done["output"]
            .as_str()
            .expect("output")
            .contains("without a final status"),
        "{done}"
    );
    let next = app.deploy().await;
    assert_eq!(next["status"], "starting", "the lock was released: {next}");
    let next_id = next["job_id"].as_str().expect("job id");
    app.wait_status(next_id, FINAL, DEADLINE).await;
}

#[tokio::test]
async fn redis_going_away_makes_the_service_unready_and_it_recovers_without_restart() {
    let mut redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-one", "ok-outage")]).await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status().as_u16(), 200);

    redis.stop();
    let (status, body) = read(app.get("/readyz").await).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "error");
    assert!(
        body["error"].as_str().expect("error").contains("store"),
        "{body}"
    );
    let (status, body) = app
        .post(
            "/app-deploy/",
            &json!({"deployment_id": "app-one", "deployment_secret": SECRET}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "error");
    // The liveness probe does not depend on the store.
    let health = app.get("/healthz").await;
    assert_eq!(health.status().as_u16(), 200);

    // Redis comes back empty (no persistence in the test): set the apps again.
    redis.restart();
    eventually("the service to be ready again", DEADLINE, || async {
        let response = app.http.get(app.url("/readyz")).send().await.ok()?;
        (response.status().as_u16() == 200).then_some(())
    })
    .await;
    app.set_apps(&[("app-one", "ok-outage")]).await;
    let started = app.deploy("app-one").await;
    let job_id = started["job_id"].as_str().expect("job id");
    assert_eq!(
        app.wait_final("app-one", job_id, DEADLINE).await["status"],
        "success"
    );
}

#[tokio::test]
async fn a_program_exit_during_a_store_outage_is_recorded_once_the_store_answers() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-one", "quiet-2-outage")]).await;
    let started = app.deploy("app-one").await;
    let job_id = started["job_id"].as_str().expect("job id").to_owned();
    let pid = eventually("the program to be launched", DEADLINE, || async {
        let launch = app.job(&job_id).await.launch?;
        match enac_cd::launch::LaunchRecord::from_data(&launch)? {
            enac_cd::launch::LaunchRecord::Process { pid, .. } => Some(pid),
            other => panic!("not a process launch: {other:?}"),
        }
    })
    .await;

    // The store stops answering; the program exits 0 meanwhile.
    redis.pause();
    eventually("the program to exit", DEADLINE, || async move {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next());
        matches!(state, None | Some("Z") | Some("X")).then_some(())
    })
    .await;
    // The outage outlasts the store's request timeouts, so recording the
    // exit fails at least once while it lasts.
    tokio::time::sleep(Duration::from_secs(6)).await;
    redis.resume();

    let done = app.wait_final("app-one", &job_id, DEADLINE).await;
    assert_eq!(done["status"], "success", "{done}");
    assert!(
        done["output"]
            .as_str()
            .unwrap_or("")
            .contains("program exited with code 0"),
        "{done}"
    );
    // The lock went with the job: the inventory deploys again.
    let next = app.deploy("app-one").await;
    assert_eq!(next["status"], "starting", "{next}");
}

/// How long a dead replica's jobs may wait for another to adopt them: its
/// lease lapses (20 s), then the next sweep (every 15 s) takes them.
const ADOPTION_DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_live_replica_adopts_the_jobs_of_one_killed_with_minus_9() {
    let redis = RedisServer::start();
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (addr_a, addr_b) = (free_addr(), free_addr());
    let mut replica_a = ServiceProcess::start(
        &serve_env_at(&Backend::Redis(&redis), dir_a.path(), addr_a),
        addr_a,
    );
    let _replica_b = ServiceProcess::start(
        &serve_env_at(&Backend::Redis(&redis), dir_b.path(), addr_b),
        addr_b,
    );
    app_one(addr_a).register("quiet-3-takeover").await;
    let job_id = job_id_of(&app_one(addr_a).deploy().await);
    let launched = redis_job_field(&redis, &job_id, "launch");
    eventually("the program to be launched by A", DEADLINE, launched).await;

    // A dies with its job open; the program ends without a callback.
    replica_a.kill_hard();
    let done = app_one(addr_b)
        .wait_status(&job_id, FINAL, ADOPTION_DEADLINE)
        .await;
    assert_eq!(done["status"], "error", "{done}");
    assert!(
        done["output"]
            .as_str()
            .unwrap_or("")
            .contains("without a final status"),
        "B found the program gone and ended the job: {done}"
    );
    let next = app_one(addr_b).deploy().await;
    assert_eq!(next["status"], "starting", "the lock was released: {next}");
}

#[tokio::test]
async fn a_launch_claimed_by_a_dead_instance_that_never_started_ends_lost() {
    use enac_cd::domain::{now_ms, Lifetimes, NewJob, OnBusy, Trigger, TriggerKind};
    use enac_cd::store::{JobLimits, RedisStore, StartOutcome, Store};

    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-one", "ok-claimed")]).await;
    // What an instance leaves when it dies between claiming a launch and
    // starting the program (an image pull, a lost store reply).
    let limits = JobLimits::new(
        Lifetimes {
            job_timeout: Duration::from_secs(3600),
            job_ttl: Duration::from_secs(3600),
        },
        1 << 20,
    );
    let url = secrecy::SecretString::from(redis.url());
    let store = RedisStore::connect(&url, "enac-cd:", limits)
        .await
        .expect("the store connects");
    let job = NewJob {
        id: ulid::Ulid::new().to_string(),
        deployment_id: "app-one".into(),
        inventory: "ok-claimed".into(),
        trigger: Trigger::of_kind(TriggerKind::Secret),
        created_at: now_ms(),
        reports: Vec::new(),
    };
    let started = store.start_job(&job, OnBusy::Reject).await.expect("start");
    assert!(matches!(started, StartOutcome::Started(_)), "{started:?}");
    assert!(store
        .claim_launch(&job.id, "dead-host:1")
        .await
        .expect("claim"));

    // Nobody holds dead-host:1's lease: a sweep takes the job over, finds no
    // program for it and ends it, well before its one-hour timeout.
    let done = app.wait_final("app-one", &job.id, ADOPTION_DEADLINE).await;
    assert_eq!(done["status"], "error", "{done}");
    assert!(
        done["output"].as_str().unwrap_or("").contains("lost"),
        "{done}"
    );
    let next = app.deploy("app-one").await;
    assert_eq!(next["status"], "starting", "the lock was released: {next}");
}

/// A check that the Redis hash of `job_id` has `field`.
fn redis_job_field<'a>(
    redis: &'a RedisServer,
    job_id: &'a str,
    field: &'a str,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<()>> + 'a>> {
    move || {
        Box::pin(async move {
            let mut connection = redis
                .client()
                .get_multiplexed_async_connection()
                .await
                .ok()?;
            let present: bool = redis::cmd("HEXISTS")
                .arg(format!("enac-cd:job:{job_id}"))
                .arg(field)
                .query_async(&mut connection)
                .await
                .ok()?;
            present.then_some(())
        })
    }
}

#[tokio::test]
async fn sigterm_stops_the_service_and_leaves_the_running_job_to_the_next_start() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let addr = free_addr();
    let env = serve_env_at(&Backend::Redis(&redis), data_dir.path(), addr);
    let mut service = ServiceProcess::start(&env, addr);
    let app = app_one(addr);
    app.register("sleep-2-term").await;
    let job_id = job_id_of(&app.deploy().await);

    let status = service.terminate(DEADLINE);
    assert!(status.success(), "exit status {status}");

    let _service = ServiceProcess::start(&env, addr);
    let done = app.wait_status(&job_id, FINAL, DEADLINE).await;
    assert_eq!(done["status"], "success", "{done}");
}

#[tokio::test]
async fn replicas_share_the_generated_signing_key() {
    let redis = RedisServer::start();
    let first = TestApp::spawn(&redis, &[]).await;
    let second = TestApp::spawn(&redis, &[]).await;
    first.set_apps(&[("app-one", "ok-replica")]).await;

    let started = first.deploy("app-one").await;
    let job_id = started["job_id"].as_str().expect("job id");
    let token = started["status_token"].as_str().expect("status token");
    let (status, body) = second
        .post_with_token("/job-status/", Some(token), &json!({"job_id": job_id}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["job_id"], job_id);
    first.wait_final("app-one", job_id, DEADLINE).await;
}

#[tokio::test]
async fn finished_jobs_are_forgotten_after_the_job_ttl() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &["--job-ttl=1s"]).await;
    app.set_apps(&[("app-one", "ok-ttl")]).await;

    let job_id = job_id_of(&app.deploy("app-one").await);
    assert_eq!(
        app.wait_final("app-one", &job_id, DEADLINE).await["status"],
        "success"
    );
    eventually("the finished job to expire", DEADLINE, || async {
        let body = app.status("app-one", &job_id).await;
        (body["error"] == "Job not found").then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_inventory_lock_outlives_the_job_timeout_and_goes_with_the_job() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &["--job-timeout=60s"]).await;
    app.set_apps(&[("app-one", "sleep-1-lock")]).await;
    let job_id = job_id_of(&app.deploy("app-one").await);

    let mut connection = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let lock = "enac-cd:lock:sleep-1-lock";
    let (owner, ttl_ms): (Option<String>, i64) = redis::pipe()
        .get(lock)
        .pttl(lock)
        .query_async(&mut connection)
        .await
        .expect("lock read");
    assert_eq!(owner.as_deref(), Some(job_id.as_str()));
    assert!(
        ttl_ms > 60_000,
        "lock expires in {ttl_ms} ms, before the job timeout"
    );

    app.wait_final("app-one", &job_id, DEADLINE).await;
    let exists: bool = redis::cmd("EXISTS")
        .arg(lock)
        .query_async(&mut connection)
        .await
        .expect("exists");
    assert!(!exists, "the lock outlived its job");
}
