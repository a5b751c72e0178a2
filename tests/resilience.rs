//! Replicas, crashes and outages: one job per inventory across instances,
//! jobs surviving a kill -9 of the service, Redis going away and coming back.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(20);

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

fn service_env(
    redis: &RedisServer,
    data_dir: &std::path::Path,
    addr: SocketAddr,
) -> Vec<(&'static str, String)> {
    vec![
        ("CD_REDIS_URL", redis.url()),
        ("CD_LAUNCHER", "process".into()),
        ("CD_PROCESS_COMMAND", fake_ansible().display().to_string()),
        ("CD_DATA_DIR", data_dir.display().to_string()),
        ("CD_ADMIN_TOKEN", ADMIN_TOKEN.into()),
        ("CD_PUBLIC_URL", format!("http://{addr}")),
    ]
}

async fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(format!("http://{addr}{path}"));
    if path == "/set-available-apps/" {
        request = request.bearer_auth(ADMIN_TOKEN);
    }
    let response = request.json(body).send().await.expect("request sent");
    read(response).await
}

async fn wait_final(addr: SocketAddr, deployment_id: &str, job_id: &str) -> Value {
    let body =
        json!({"deployment_id": deployment_id, "deployment_secret": SECRET, "job_id": job_id});
    eventually("the job to end", DEADLINE, || async {
        let (_, answer) = post(addr, "/job-status/", &body).await;
        matches!(answer["status"].as_str(), Some("success" | "error")).then_some(answer)
    })
    .await
}

async fn deploy(addr: SocketAddr, deployment_id: &str) -> Value {
    let body = json!({"deployment_id": deployment_id, "deployment_secret": SECRET});
    post(addr, "/app-deploy/", &body).await.1
}

#[tokio::test]
async fn a_job_survives_a_kill_9_of_the_service_and_its_lock_is_released() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let env = service_env(&redis, data_dir.path(), addr);
    let mut service = ServiceProcess::start(&env, addr);
    let apps = json!([{"deployment_id": "app-one", "inventory": "sleep-3-crash", "deployment_secret": SECRET}]);
    assert_eq!(post(addr, "/set-available-apps/", &apps).await.0, 200);

    let started = deploy(addr, "app-one").await;
    let job_id = started["job_id"].as_str().expect("job id").to_owned();
    eventually("the job to run", DEADLINE, || async {
        let body =
            json!({"deployment_id": "app-one", "deployment_secret": SECRET, "job_id": job_id});
        let (_, answer) = post(addr, "/job-status/", &body).await;
        (answer["status"] == "running").then_some(())
    })
    .await;

    service.kill_hard();
    // The program keeps running while the service is down; a new instance
    // picks the job up and takes its final callback.
    let _service = ServiceProcess::start(&env, addr);
    let done = wait_final(addr, "app-one", &job_id).await;
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(done["output"], "sleeping\nwoke up\n");

    let next = deploy(addr, "app-one").await;
    assert_eq!(next["status"], "starting", "the lock was released: {next}");
    wait_final(addr, "app-one", next["job_id"].as_str().expect("job id")).await;
}

#[tokio::test]
async fn a_program_that_ends_silently_while_the_service_is_down_ends_error_after_restart() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let env = service_env(&redis, data_dir.path(), addr);
    let mut service = ServiceProcess::start(&env, addr);
    let apps = json!([{"deployment_id": "app-one", "inventory": "quiet-1-crash", "deployment_secret": SECRET}]);
    assert_eq!(post(addr, "/set-available-apps/", &apps).await.0, 200);

    let job_id = deploy(addr, "app-one").await["job_id"]
        .as_str()
        .expect("job id")
        .to_owned();
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

    let done = wait_final(addr, "app-one", &job_id).await;
    assert_eq!(done["status"], "error", "{done}");
    assert!(
        done["output"]
            .as_str()
            .expect("output")
            .contains("without a final status"),
        "{done}"
    );
    let next = deploy(addr, "app-one").await;
    assert_eq!(next["status"], "starting", "the lock was released: {next}");
    wait_final(addr, "app-one", next["job_id"].as_str().expect("job id")).await;
}

#[tokio::test]
async fn redis_going_away_makes_the_service_unready_and_it_recovers_without_restart() {
    let mut redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-one", "ok-outage")]).await;
    let ready = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);

    redis.stop();
    let (status, body) = read(
        app.http
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz"),
    )
    .await;
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
    let health = app
        .http
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
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
async fn sigterm_stops_the_service_and_leaves_the_running_job_to_the_next_start() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let env = service_env(&redis, data_dir.path(), addr);
    let mut service = ServiceProcess::start(&env, addr);
    let apps = json!([{"deployment_id": "app-one", "inventory": "sleep-2-term", "deployment_secret": SECRET}]);
    assert_eq!(post(addr, "/set-available-apps/", &apps).await.0, 200);
    let job_id = deploy(addr, "app-one").await["job_id"]
        .as_str()
        .expect("job id")
        .to_owned();

    // SAFETY: kill(2) on the pid of our own child.
    unsafe {
        libc::kill(service.child.id() as i32, libc::SIGTERM);
    }
    let status = eventually("the service to exit on SIGTERM", DEADLINE, || {
        let exited = service.child.try_wait().expect("wait");
        async move { exited }
    })
    .await;
    assert!(status.success(), "exit status {status}");

    let _service = ServiceProcess::start(&env, addr);
    let done = wait_final(addr, "app-one", &job_id).await;
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
    let response = second
        .http
        .post(second.url("/job-status/"))
        .bearer_auth(token)
        .json(&json!({"job_id": job_id}))
        .send()
        .await
        .expect("request sent");
    let (status, body) = read(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["job_id"], job_id);
    first.wait_final("app-one", job_id, DEADLINE).await;
}

#[tokio::test]
async fn finished_jobs_are_forgotten_after_the_job_ttl() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &["--job-ttl=1s"]).await;
    app.set_apps(&[("app-one", "ok-ttl")]).await;

    let job_id = app.deploy("app-one").await["job_id"]
        .as_str()
        .expect("job id")
        .to_owned();
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
    let job_id = app.deploy("app-one").await["job_id"]
        .as_str()
        .expect("job id")
        .to_owned();

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
