//! `enac-cd deploy`, the real binary, against a real service: the exit codes
//! and the output a CI job relies on (contract §9).

mod common;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    eventually, free_addr, serve_env_at, write_apps_file, Backend, RedisServer, ServiceProcess,
    TestApp, SECRET,
};
use enac_cd::domain::JobStatus;
use tokio::process::Command;

/// Longest any client run may take before the test gives up on it.
const CLIENT_DEADLINE: Duration = Duration::from_secs(60);

struct ClientRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl ClientRun {
    fn of(output: Output, elapsed: Duration) -> ClientRun {
        ClientRun {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed,
        }
    }

    fn occurrences(&self, text: &str) -> usize {
        self.stdout.matches(text).count()
    }

    /// The job id the client announces (`-> Job <id>`).
    fn job_id(&self) -> &str {
        self.stdout
            .lines()
            .find_map(|line| line.strip_prefix("-> Job "))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no job announced:\n{}", self.stdout))
    }
}

impl std::fmt::Display for ClientRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} after {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// `enac-cd deploy --url URL --deployment-id ID --interval 1 [extra]`, with
/// `DEPLOYMENT_SECRET` set to `secret` (or unset).
fn client(url: &str, deployment_id: &str, secret: Option<&str>, extra: &[&str]) -> Command {
    client_polling_every(url, deployment_id, secret, "1", extra)
}

/// [`client`] with another `--interval`: the polls' pause, when it polls.
fn client_polling_every(
    url: &str,
    deployment_id: &str,
    secret: Option<&str>,
    interval: &str,
    extra: &[&str],
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_enac-cd"));
    command
        .args(["deploy", "--url", url, "--deployment-id", deployment_id])
        .args(["--interval", interval])
        .args(extra)
        .env_remove("DEPLOYMENT_SECRET")
        .env_remove("CD_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(secret) = secret {
        command.env("DEPLOYMENT_SECRET", secret);
    }
    command
}

async fn run(mut command: Command) -> ClientRun {
    let started = Instant::now();
    let output = tokio::time::timeout(CLIENT_DEADLINE, command.output())
        .await
        .expect("the client ends within its deadline")
        .expect("the client binary runs");
    ClientRun::of(output, started.elapsed())
}

async fn run_against(app: &TestApp, deployment_id: &str, secret: Option<&str>) -> ClientRun {
    run(client(&app.url(""), deployment_id, secret, &[])).await
}

#[tokio::test]
async fn a_successful_job_exits_0_and_prints_its_output_once() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-one", "ok-one")]).await;

    let outcome = run_against(&app, "app-one", Some(SECRET)).await;

    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_eq!(outcome.occurrences("step 1"), 1, "{outcome}");
    assert_eq!(outcome.occurrences("done"), 1, "{outcome}");
    let job = app.status("app-one", outcome.job_id()).await;
    assert_eq!(job["status"], "success", "{job}");
}

#[tokio::test]
async fn output_that_grows_while_the_client_follows_is_printed_once() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    // Reports `sleeping`, sleeps 2 s, then appends `woke up`: the output
    // grows while the client follows it.
    app.set_apps(&[("app-one", "sleep-2")]).await;

    let outcome = run_against(&app, "app-one", Some(SECRET)).await;

    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_eq!(outcome.occurrences("sleeping"), 1, "{outcome}");
    assert_eq!(outcome.occurrences("woke up"), 1, "{outcome}");
    let sleeping = outcome.stdout.find("sleeping").expect("sleeping printed");
    let woke = outcome.stdout.find("woke up").expect("woke up printed");
    assert!(sleeping < woke, "{outcome}");
}

#[tokio::test]
async fn a_failed_job_exits_1_with_its_output() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-one", "fail-one")]).await;

    let outcome = run_against(&app, "app-one", Some(SECRET)).await;

    assert_eq!(outcome.code, Some(1), "{outcome}");
    assert_eq!(outcome.occurrences("step 1"), 1, "{outcome}");
    assert_eq!(outcome.occurrences("boom"), 1, "{outcome}");
    let job = app.status("app-one", outcome.job_id()).await;
    assert_eq!(job["status"], "error", "{job}");
}

#[tokio::test]
async fn a_wrong_secret_exits_1_with_app_not_found_and_starts_nothing() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-one", "ok-one")]).await;

    let outcome = run_against(&app, "app-one", Some("not-the-secret-of-app-one")).await;

    assert_eq!(outcome.code, Some(1), "{outcome}");
    assert!(outcome.stdout.contains("App not found"), "{outcome}");
    assert!(!outcome.stdout.contains("-> Job"), "{outcome}");
    assert_eq!(app.jobs_started().await, 0);
}

#[tokio::test]
async fn an_unset_secret_exits_1_and_starts_nothing() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-one", "ok-one")]).await;

    let outcome = run_against(&app, "app-one", None).await;

    assert_eq!(outcome.code, Some(1), "{outcome}");
    assert!(outcome.stdout.contains("DEPLOYMENT_SECRET"), "{outcome}");
    assert_eq!(app.jobs_started().await, 0);
}

#[tokio::test]
async fn a_job_longer_than_the_client_timeout_exits_2() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &["--job-timeout=30s"]).await;
    app.set_apps(&[("app-one", "hang")]).await;

    let outcome = run(client(
        &app.url(""),
        "app-one",
        Some(SECRET),
        &["--timeout", "2"],
    ))
    .await;

    assert_eq!(outcome.code, Some(2), "{outcome}");
    assert!(outcome.stdout.contains("Timeout"), "{outcome}");
    assert!(outcome.stdout.contains("hanging"), "{outcome}");
    assert!(
        outcome.elapsed >= Duration::from_secs(2) && outcome.elapsed < Duration::from_secs(10),
        "{outcome}"
    );

    // The client giving up does not stop the job; stop the hanging program
    // (by its recorded pid) so that it does not outlive the test.
    let job_id = outcome.job_id().to_owned();
    let job = app.job(&job_id).await;
    assert_eq!(job.status, JobStatus::Running, "{job:?}");
    let record = job
        .launch
        .as_ref()
        .and_then(enac_cd::launch::LaunchRecord::from_data)
        .expect("the job was launched");
    app.state
        .launcher
        .stop(&record)
        .await
        .expect("the hanging program stops");
    app.wait_final("app-one", &job_id, Duration::from_secs(15))
        .await;
}

/// The environment of the service binary at `addr` on `redis`, with
/// `app-one` deploying `inventory`.
fn service_env(
    redis: &RedisServer,
    data_dir: &std::path::Path,
    addr: std::net::SocketAddr,
    inventory: &str,
) -> Vec<(&'static str, String)> {
    let mut envs = serve_env_at(&Backend::Redis(redis), data_dir, addr);
    let apps = write_apps_file(data_dir, &[("app-one", inventory)]);
    envs.push(("CD_APPS_FILE", apps.display().to_string()));
    envs
}

/// Waits for a spawned client to end.
async fn finished(pending: tokio::process::Child, started: Instant) -> ClientRun {
    let output = tokio::time::timeout(CLIENT_DEADLINE, pending.wait_with_output())
        .await
        .expect("the client ends within its deadline")
        .expect("the client's output is read");
    ClientRun::of(output, started.elapsed())
}

#[tokio::test]
async fn the_client_retries_until_the_service_comes_up() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let addr = free_addr();
    let envs = service_env(&redis, data_dir.path(), addr, "ok-one");

    let started = Instant::now();
    let pending = client(&format!("http://{addr}"), "app-one", Some(SECRET), &[])
        .spawn()
        .expect("the client binary runs");
    // Deliberate: the service comes up while the client is already retrying.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let service = tokio::task::spawn_blocking(move || ServiceProcess::start(&envs, addr))
        .await
        .expect("the service starts");
    let outcome = finished(pending, started).await;

    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_eq!(outcome.occurrences("step 1"), 1, "{outcome}");
    assert_eq!(outcome.occurrences("done"), 1, "{outcome}");
    drop(service);
}

/// Far longer than any job here: a client that polled would wait this long
/// after its first poll, and run into the test's deadline.
const NEVER: &str = "120";

#[tokio::test]
async fn the_client_follows_the_live_output_instead_of_polling() {
    let app = TestApp::spawn_embedded(&[]).await;
    // Reports `sleeping`, sleeps 2 s, then appends `woke up` and succeeds.
    app.set_apps(&[("app-one", "sleep-2")]).await;

    let outcome = run(client_polling_every(
        &app.url(""),
        "app-one",
        Some(SECRET),
        NEVER,
        &[],
    ))
    .await;

    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_eq!(outcome.occurrences("sleeping"), 1, "{outcome}");
    assert_eq!(outcome.occurrences("woke up"), 1, "{outcome}");
    assert!(
        outcome.stdout.contains("finished successfully"),
        "{outcome}"
    );
    assert!(outcome.elapsed < Duration::from_secs(30), "{outcome}");
}

#[tokio::test]
async fn against_a_service_without_the_stream_the_client_polls() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    // An enac-cd from before the live output: a status token, but no stream.
    let older = MockServer::start().await;
    let answer = |body: serde_json::Value| ResponseTemplate::new(200).set_body_json(body);
    Mock::given(method("POST"))
        .and(path("/app-deploy/"))
        .respond_with(answer(serde_json::json!({
            "status": "starting", "job_id": "01J0000000000000000000000A", "output": "",
            "status_token": "a-status-token"
        })))
        .mount(&older)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/jobs/01J0000000000000000000000A/output"))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(serde_json::json!({"error": "not found"})),
        )
        .mount(&older)
        .await;
    Mock::given(method("POST"))
        .and(path("/job-status/"))
        .respond_with(answer(serde_json::json!({
            "status": "success", "job_id": "01J0000000000000000000000A", "output": "polled output\n"
        })))
        .mount(&older)
        .await;

    let outcome = run(client(&older.uri(), "app-one", Some(SECRET), &[])).await;

    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_eq!(outcome.occurrences("polled output"), 1, "{outcome}");
}

#[tokio::test]
async fn a_stream_cut_by_a_service_restart_resumes_without_repeating_output() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let addr = free_addr();
    let envs = service_env(&redis, data_dir.path(), addr, "sleep-4");
    let first_envs = envs.clone();
    let mut first = tokio::task::spawn_blocking(move || ServiceProcess::start(&first_envs, addr))
        .await
        .expect("the service starts");
    let started = Instant::now();
    let pending = client_polling_every(
        &format!("http://{addr}"),
        "app-one",
        Some(SECRET),
        NEVER,
        &[],
    )
    .spawn()
    .expect("the client binary runs");
    let http = reqwest::Client::new();
    // Running: the program reported `sleeping`, which the client was sent.
    eventually("the job to run", Duration::from_secs(20), || async {
        let request = http
            .get(format!("http://{addr}/api/v1/jobs?status=running"))
            .bearer_auth(common::ADMIN_TOKEN);
        let (_, list) = common::send(request).await;
        (list["jobs"].as_array().is_some_and(|jobs| !jobs.is_empty())).then_some(())
    })
    .await;

    // A stop closes every stream; the next instance serves the same store.
    first.terminate(Duration::from_secs(15));
    let service = tokio::task::spawn_blocking(move || ServiceProcess::start(&envs, addr))
        .await
        .expect("the service starts again");
    let outcome = finished(pending, started).await;

    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_eq!(outcome.occurrences("sleeping"), 1, "{outcome}");
    assert_eq!(outcome.occurrences("woke up"), 1, "{outcome}");
    assert!(outcome.elapsed < Duration::from_secs(50), "{outcome}");
    drop(service);
}
