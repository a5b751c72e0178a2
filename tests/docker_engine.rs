//! The `docker` launcher on the real engine of this machine, with the test
//! image built from `tests/fixtures/ansible-image` (never pulled): jobs end by
//! callback, by exit code and by timeout, their containers carry the labels
//! and are removed, and a restarted service finds its containers again.
//! Each test returns at once, with one loud line, where no engine answers.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::docker::*;
use common::*;
use enac_cd::config::LauncherKind;
use serde_json::{json, Value};

/// Generous: containers start in well under a second here, but CI engines vary.
const DEADLINE: Duration = Duration::from_secs(60);

/// One real-engine test at a time in this binary, or none where no engine
/// answers. A starting service removes every labelled container its store
/// does not know (`Lifecycle::reconcile_labelled`), so services of tests
/// running side by side would remove each other's containers; that is a
/// finding of its own, asserted by
/// `a_second_service_on_the_same_engine_leaves_the_first_ones_containers_alone`.
async fn engine_turn(test: &str) -> Option<tokio::sync::MutexGuard<'static, ()>> {
    static ENGINE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    if !docker_engine_available(test) {
        return None;
    }
    Some(ENGINE.lock().await)
}

/// The service in-process on the embedded store, launching [`TEST_IMAGE`]
/// on the host network so that its callbacks reach our loopback address.
async fn docker_app(extra: &[&str]) -> TestApp {
    docker_app_with_image(extra, TEST_IMAGE).await
}

async fn docker_app_with_image(extra: &[&str], image: &str) -> TestApp {
    let mut flags = vec!["--docker-pull=never", "--docker-network=host"];
    flags.extend(extra);
    // The harness names the process launcher; the parser takes a flag once.
    TestApp::start(Backend::Embedded, &flags, |settings| {
        settings.launcher = LauncherKind::Docker;
        settings.docker_image = image.to_owned();
    })
    .await
}

fn job_id(started: &Value) -> String {
    assert_eq!(started["status"], "starting", "{started}");
    started["job_id"].as_str().expect("a job id").to_owned()
}

fn output(body: &Value) -> &str {
    body["output"].as_str().expect("an output string")
}

#[tokio::test]
async fn a_container_that_reports_success_ends_the_job_success_and_is_removed() {
    let Some(_turn) =
        engine_turn("a_container_that_reports_success_ends_the_job_success_and_is_removed").await
    else {
        return;
    };
    let inventory = unique_inventory("ok");
    let containers = JobContainers::for_inventories(&[&inventory]);
    let app = docker_app(&[]).await;
    app.set_apps(&[("app-ok", &inventory)]).await;

    let job = job_id(&app.deploy("app-ok").await);
    containers.track_job(&job);
    let done = app.wait_final("app-ok", &job, DEADLINE).await;

    assert_eq!(done["status"], "success", "{done}");
    assert!(output(&done).contains("step 1"), "{done}");
    assert!(output(&done).contains("done"), "{done}");
    wait_job_containers_removed(&job, DEADLINE).await;
}

#[tokio::test]
async fn a_container_that_exits_non_zero_ends_the_job_error_with_its_logs() {
    let Some(_turn) =
        engine_turn("a_container_that_exits_non_zero_ends_the_job_error_with_its_logs").await
    else {
        return;
    };
    let inventory = unique_inventory("fail");
    let containers = JobContainers::for_inventories(&[&inventory]);
    let app = docker_app(&[]).await;
    app.set_apps(&[("app-fail", &inventory)]).await;

    let job = job_id(&app.deploy("app-fail").await);
    containers.track_job(&job);
    let done = app.wait_final("app-fail", &job, DEADLINE).await;

    assert_eq!(done["status"], "error", "{done}");
    assert!(
        output(&done).contains("about to fail"),
        "the followed logs are in the output: {done}"
    );
    assert!(output(&done).contains("exited with code 3"), "{done}");
    wait_job_containers_removed(&job, DEADLINE).await;
    let next = app.deploy("app-fail").await;
    assert_eq!(next["status"], "starting", "the lock is released: {next}");
    let next = job_id(&next);
    containers.track_job(&next);
    app.wait_final("app-fail", &next, DEADLINE).await;
}

#[tokio::test]
async fn a_container_that_exits_zero_without_callback_ends_the_job_success() {
    let Some(_turn) =
        engine_turn("a_container_that_exits_zero_without_callback_ends_the_job_success").await
    else {
        return;
    };
    let inventory = unique_inventory("exit-ok");
    let containers = JobContainers::for_inventories(&[&inventory]);
    let app = docker_app(&[]).await;
    app.set_apps(&[("app-quiet", &inventory)]).await;

    let job = job_id(&app.deploy("app-quiet").await);
    containers.track_job(&job);
    let done = app.wait_final("app-quiet", &job, DEADLINE).await;

    assert_eq!(done["status"], "success", "{done}");
    assert!(output(&done).contains("done without callback"), "{done}");
    // The entry point echoes its command and CD_ENV: both reached the container.
    let echoed = format!("container: app-deploy {inventory} {job} (env test)");
    assert!(output(&done).contains(&echoed), "{echoed} in {done}");
    wait_job_containers_removed(&job, DEADLINE).await;
}

#[tokio::test]
async fn a_container_past_the_job_timeout_is_killed_and_removed() {
    let Some(_turn) = engine_turn("a_container_past_the_job_timeout_is_killed_and_removed").await
    else {
        return;
    };
    let inventory = unique_inventory("hang");
    let containers = JobContainers::for_inventories(&[&inventory]);
    let app = docker_app(&["--job-timeout=3s"]).await;
    app.set_apps(&[("app-hang", &inventory)]).await;

    let started = Instant::now();
    let job = job_id(&app.deploy("app-hang").await);
    containers.track_job(&job);
    let container = job_container(&job, DEADLINE).await;
    assert_eq!(
        docker_inspect(&container).await["State"]["Running"],
        true,
        "the container runs until the timeout"
    );
    let done = app.wait_final("app-hang", &job, DEADLINE).await;

    assert_eq!(done["status"], "error", "{done}");
    assert!(output(&done).contains("timed out"), "{done}");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "not before the timeout"
    );
    wait_job_containers_removed(&job, DEADLINE).await;
    let next = app.deploy("app-hang").await;
    assert_eq!(next["status"], "starting", "the lock is released: {next}");
    let next = job_id(&next);
    containers.track_job(&next);
    app.wait_final("app-hang", &next, DEADLINE).await;
}

#[tokio::test]
async fn a_running_container_carries_the_job_labels_command_environment_and_settings() {
    let Some(_turn) =
        engine_turn("a_running_container_carries_the_job_labels_command_environment_and_settings")
            .await
    else {
        return;
    };
    let inventory = unique_inventory("sleep-3");
    let containers = JobContainers::for_inventories(&[&inventory]);
    let bound = tempfile::tempdir().expect("a directory to bind");
    let bind = format!("{}:/cd-bind:ro", bound.path().display());
    let app = docker_app(&[&format!("--docker-binds={bind}")]).await;
    app.set_apps(&[("app-labels", &inventory)]).await;

    let job = job_id(&app.deploy("app-labels").await);
    containers.track_job(&job);
    eventually("the job to run", DEADLINE, || async {
        (app.status("app-labels", &job).await["status"] == "running").then_some(())
    })
    .await;
    let container = job_container(&job, DEADLINE).await;
    let inspected = docker_inspect(&container).await;

    assert_eq!(inspected["State"]["Running"], true, "{inspected}");
    assert_eq!(
        inspected["Name"],
        format!("/enac-cd-{}", job.to_ascii_lowercase())
    );
    let config = &inspected["Config"];
    assert_eq!(config["Image"], TEST_IMAGE);
    assert_eq!(config["Labels"]["enac-cd.job-id"], job.as_str());
    assert_eq!(config["Labels"]["enac-cd.inventory"], inventory.as_str());
    assert_eq!(config["Labels"]["enac-cd.deployment-id"], "app-labels");
    assert_eq!(config["Cmd"], json!(["app-deploy", inventory, job]));
    let env = assert_container_env(
        &config["Env"],
        &[
            format!("CD_JOB_ID={job}"),
            "CD_DEPLOYMENT_ID=app-labels".to_owned(),
            format!("CD_INVENTORY={inventory}"),
            format!("CD_CALLBACK_URL=http://{}/set-job-status/", app.addr),
            "CD_ENV=test".to_owned(),
        ],
    );
    assert!(
        env.iter()
            .any(|entry| entry.len() > "CD_CALLBACK_TOKEN=".len()
                && entry.starts_with("CD_CALLBACK_TOKEN=")),
        "a callback token: {env:?}"
    );
    assert_eq!(inspected["HostConfig"]["NetworkMode"], "host");
    let mount = &inspected["Mounts"][0];
    assert_eq!(mount["Type"], "bind", "{inspected}");
    assert_eq!(mount["Source"], bound.path().display().to_string());
    assert_eq!(mount["Destination"], "/cd-bind");
    assert_eq!(mount["RW"], false, "{inspected}");

    let done = app.wait_final("app-labels", &job, DEADLINE).await;
    assert_eq!(done["status"], "success", "{done}");
    wait_job_containers_removed(&job, DEADLINE).await;
}

#[tokio::test]
async fn a_missing_image_with_pull_never_fails_the_job_and_releases_the_lock() {
    let Some(_turn) =
        engine_turn("a_missing_image_with_pull_never_fails_the_job_and_releases_the_lock").await
    else {
        return;
    };
    let inventory = unique_inventory("ok");
    let _containers = JobContainers::for_inventories(&[&inventory]);
    let image = format!("enac-cd-test-absent-{}:never", &inventory[3..]);
    let app = docker_app_with_image(&[], &image).await;
    app.set_apps(&[("app-noimage", &inventory)]).await;

    let job = job_id(&app.deploy("app-noimage").await);
    let done = app.wait_final("app-noimage", &job, DEADLINE).await;

    assert_eq!(done["status"], "error", "{done}");
    assert!(output(&done).contains("launch failed"), "{done}");
    assert!(output(&done).contains(&image), "names the image: {done}");
    assert!(
        output(&done).contains("No such image"),
        "the engine's reason: {done}"
    );
    assert!(
        docker_containers(&format!("enac-cd.inventory={inventory}"))
            .await
            .is_empty(),
        "no container was created"
    );
    let next = app.deploy("app-noimage").await;
    assert_eq!(next["status"], "starting", "the lock is released: {next}");
    let next = job_id(&next);
    assert_eq!(
        app.wait_final("app-noimage", &next, DEADLINE).await["status"],
        "error"
    );
}

#[tokio::test]
async fn a_missing_bind_source_fails_the_job_naming_it_and_creates_nothing() {
    let Some(_turn) =
        engine_turn("a_missing_bind_source_fails_the_job_naming_it_and_creates_nothing").await
    else {
        return;
    };
    let inventory = unique_inventory("ok");
    let _containers = JobContainers::for_inventories(&[&inventory]);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let missing = dir.path().join("vault-password");
    let bind = format!("{}:/opt/root/.vault:ro", missing.display());
    let app = docker_app(&[&format!("--docker-binds={bind}")]).await;
    app.set_apps(&[("app-nobind", &inventory)]).await;

    let job = job_id(&app.deploy("app-nobind").await);
    let done = app.wait_final("app-nobind", &job, DEADLINE).await;

    assert_eq!(done["status"], "error", "{done}");
    assert!(
        output(&done).contains(&format!(
            "the bind source {} of CD_DOCKER_BINDS does not exist",
            missing.display()
        )),
        "{done}"
    );
    assert!(
        !missing.exists(),
        "the engine did not create the missing path as a directory"
    );
    assert!(
        docker_containers(&format!("enac-cd.inventory={inventory}"))
            .await
            .is_empty(),
        "no container was left"
    );
}

#[tokio::test]
async fn a_second_service_on_the_same_engine_leaves_the_first_ones_containers_alone() {
    let Some(_turn) =
        engine_turn("a_second_service_on_the_same_engine_leaves_the_first_ones_containers_alone")
            .await
    else {
        return;
    };
    let inventory = unique_inventory("sleep-3");
    let containers = JobContainers::for_inventories(&[&inventory]);
    let first = docker_app(&[]).await;
    first.set_apps(&[("app-first", &inventory)]).await;
    let job = job_id(&first.deploy("app-first").await);
    containers.track_job(&job);
    eventually("the job to run", DEADLINE, || async {
        (first.status("app-first", &job).await["status"] == "running").then_some(())
    })
    .await;
    job_container(&job, DEADLINE).await;

    // Another enac-cd with its own store (another environment on the same
    // host, a test instance) starts and reconciles against the same engine.
    let _second = docker_app(&[]).await;

    assert!(
        !docker_containers(&format!("enac-cd.job-id={job}"))
            .await
            .is_empty(),
        "the second service removed a running container of a job it does not own"
    );
    let done = first.wait_final("app-first", &job, DEADLINE).await;
    assert_eq!(done["status"], "success", "{done}");
    assert!(output(&done).contains("woke up"), "{done}");
    wait_job_containers_removed(&job, DEADLINE).await;
}

/// The service as its own process on the embedded store, launching
/// [`TEST_IMAGE`]; only contract settings, as an operator would set them.
fn docker_service_env(data_dir: &Path, addr: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("CD_LAUNCHER", "docker".to_owned()),
        ("CD_DOCKER_IMAGE", TEST_IMAGE.to_owned()),
        ("CD_DOCKER_PULL", "never".to_owned()),
        ("CD_DOCKER_NETWORK", "host".to_owned()),
        ("CD_DATA_DIR", data_dir.display().to_string()),
        ("CD_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("CD_PUBLIC_URL", format!("http://{addr}")),
        ("CD_LISTEN", addr.to_string()),
        ("CD_ENV", "test".to_owned()),
    ]
}

/// The service as its own process on the engine, with one job deployed
/// for a fresh inventory of `behaviour`.
struct DockerJob {
    service: ServiceProcess,
    env: Vec<(&'static str, String)>,
    addr: SocketAddr,
    app: DeploymentClient,
    job: String,
    containers: JobContainers,
    _data_dir: tempfile::TempDir,
}

impl DockerJob {
    async fn start(behaviour: &str, deployment_id: &'static str) -> DockerJob {
        let inventory = unique_inventory(behaviour);
        let containers = JobContainers::for_inventories(&[&inventory]);
        let data_dir = tempfile::tempdir().expect("temp dir");
        let addr = free_addr();
        let env = docker_service_env(data_dir.path(), addr);
        let service = ServiceProcess::start(&env, addr);
        let app = DeploymentClient {
            addr,
            id: deployment_id,
        };
        app.register(&inventory).await;
        let job = job_id(&app.deploy().await);
        containers.track_job(&job);
        DockerJob {
            service,
            env,
            addr,
            app,
            job,
            containers,
            _data_dir: data_dir,
        }
    }
}

#[tokio::test]
async fn a_job_running_across_a_kill_9_of_the_service_ends_success_after_the_restart() {
    let Some(_turn) =
        engine_turn("a_job_running_across_a_kill_9_of_the_service_ends_success_after_the_restart")
            .await
    else {
        return;
    };
    let DockerJob {
        mut service,
        env,
        addr,
        app,
        job,
        containers,
        _data_dir,
    } = DockerJob::start("sleep-4", "app-restart").await;
    app.wait_status(&job, &["running"], DEADLINE).await;
    let container = job_container(&job, DEADLINE).await;
    service.kill_hard();
    assert_eq!(
        docker_inspect(&container).await["State"]["Running"],
        true,
        "the container outlives the service"
    );

    let _service = ServiceProcess::start(&env, addr);
    let busy = app.deploy().await;
    assert_eq!(
        busy["error"], "App deployment is already running",
        "the lock is kept across the restart: {busy}"
    );
    let done = app.wait_status(&job, &["success", "error"], DEADLINE).await;
    assert_eq!(done["status"], "success", "{done}");
    assert!(output(&done).contains("woke up"), "{done}");
    wait_job_containers_removed(&job, DEADLINE).await;

    let next = app.deploy().await;
    assert_eq!(next["status"], "starting", "the lock is released: {next}");
    let next = job_id(&next);
    containers.track_job(&next);
    assert_eq!(
        app.wait_status(&next, &["success", "error"], DEADLINE)
            .await["status"],
        "success"
    );
}

#[tokio::test]
async fn a_container_followed_again_after_a_kill_9_loses_no_line_and_doubles_none() {
    let Some(_turn) =
        engine_turn("a_container_followed_again_after_a_kill_9_loses_no_line_and_doubles_none")
            .await
    else {
        return;
    };
    let DockerJob {
        mut service,
        env,
        addr,
        app,
        job,
        containers: _containers,
        _data_dir,
    } = DockerJob::start("count-30", "app-follow").await;
    eventually("the first lines to be followed", DEADLINE, || async {
        let status = app.status(&job).await;
        output(&status).contains("line 3\n").then_some(())
    })
    .await;

    // Lines printed while no service follows the container must not be lost
    // when the next one follows it again, nor the saved ones doubled.
    service.kill_hard();
    // The container prints about five lines while no service runs.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _service = ServiceProcess::start(&env, addr);
    let done = app.wait_status(&job, &["success", "error"], DEADLINE).await;
    assert_eq!(done["status"], "success", "{done}");
    let lines: Vec<&str> = output(&done)
        .lines()
        .filter(|line| line.starts_with("line "))
        .collect();
    let expected: Vec<String> = (1..=30).map(|n| format!("line {n}")).collect();
    assert_eq!(lines, expected, "{done}");
}

#[tokio::test]
async fn a_container_that_exits_while_the_service_is_down_ends_its_job_from_the_exit_code() {
    let Some(_turn) = engine_turn(
        "a_container_that_exits_while_the_service_is_down_ends_its_job_from_the_exit_code",
    )
    .await
    else {
        return;
    };
    let inventory = unique_inventory("hang");
    let containers = JobContainers::for_inventories(&[&inventory]);
    let data_dir = tempfile::tempdir().expect("temp dir");
    let addr = free_addr();
    let env = docker_service_env(data_dir.path(), addr);
    let mut service = ServiceProcess::start(&env, addr);
    let app = DeploymentClient {
        addr,
        id: "app-down",
    };
    app.register(&inventory).await;

    let job = job_id(&app.deploy().await);
    containers.track_job(&job);
    app.wait_status(&job, &["running"], DEADLINE).await;
    let container = job_container(&job, DEADLINE).await;

    // The service dies, then its container ends (SIGKILL: exit code 137).
    service.kill_hard();
    docker_kill(&container).await;
    eventually("the container to stop", DEADLINE, || async {
        let state = docker_inspect(&container).await["State"].clone();
        (state["Running"] == false).then_some(())
    })
    .await;

    let _service = ServiceProcess::start(&env, addr);
    let done = app.wait_status(&job, &["success", "error"], DEADLINE).await;
    assert_eq!(done["status"], "error", "{done}");
    assert!(output(&done).contains("exited with code 137"), "{done}");
    assert!(
        output(&done).contains(&format!("container: app-deploy {inventory} {job}")),
        "the container's last lines: {done}"
    );
    wait_job_containers_removed(&job, DEADLINE).await;

    // The lock went with the job; the next container, killed while the
    // service watches it, ends its job the same way.
    let next = app.deploy().await;
    assert_eq!(next["status"], "starting", "the lock is released: {next}");
    let next = job_id(&next);
    containers.track_job(&next);
    app.wait_status(&next, &["running"], DEADLINE).await;
    docker_kill(&job_container(&next, DEADLINE).await).await;
    let done = app
        .wait_status(&next, &["success", "error"], DEADLINE)
        .await;
    assert_eq!(done["status"], "error", "{done}");
    assert!(output(&done).contains("exited with code 137"), "{done}");
    wait_job_containers_removed(&next, DEADLINE).await;
}
