//! The embedded store as the default: the service needs nothing else, keeps
//! everything across restarts, refuses a second instance on its data dir, and
//! the README's quick start works.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_deployment_runs_to_success_on_the_embedded_store() {
    let app = TestApp::spawn_embedded(&[]).await;
    app.set_apps(&[("app-one", "ok-embedded")]).await;
    let started = app.deploy("app-one").await;
    assert_eq!(started["status"], "starting");
    let job_id = started["job_id"].as_str().expect("job id");
    let done = app.wait_final("app-one", job_id, DEADLINE).await;
    assert_eq!(done["status"], "success");
    assert_eq!(done["output"], "step 1\ndone\n");
    let next = app.deploy("app-one").await;
    assert_eq!(
        next["status"], "starting",
        "the lock went with the job: {next}"
    );
    app.wait_final(
        "app-one",
        next["job_id"].as_str().expect("job id"),
        DEADLINE,
    )
    .await;
}

#[tokio::test]
async fn busy_inventories_queue_on_the_embedded_store() {
    let app = TestApp::spawn_embedded(&["--on-busy=queue"]).await;
    app.set_apps(&[("app-a", "sleep-1-emb"), ("app-b", "sleep-1-emb")])
        .await;
    let running = app.deploy("app-a").await;
    let queued = app.deploy("app-a").await;
    assert_eq!(queued["status"], "queued", "{queued}");
    let joined = app.deploy("app-b").await;
    assert_eq!(joined["job_id"], queued["job_id"]);
    let running_id = running["job_id"].as_str().expect("job id");
    let queued_id = queued["job_id"].as_str().expect("job id");
    assert_eq!(
        app.wait_final("app-a", running_id, DEADLINE).await["status"],
        "success"
    );
    assert_eq!(
        app.wait_final("app-b", queued_id, DEADLINE).await["status"],
        "success"
    );
}

#[tokio::test]
async fn two_hundred_concurrent_deploys_start_exactly_one_job_on_the_embedded_store() {
    let app = TestApp::spawn_embedded(&[]).await;
    app.set_apps(&[("app-one", "sleep-1-race")]).await;
    let body = json!({"deployment_id": "app-one", "deployment_secret": SECRET});
    let answers: Vec<(u16, Value)> =
        futures::future::join_all((0..200).map(|_| app.post("/app-deploy/", &body))).await;
    let started: Vec<&Value> = answers
        .iter()
        .map(|(_, body)| body)
        .filter(|body| body["status"] == "starting")
        .collect();
    assert_eq!(started.len(), 1);
    let job_id = started[0]["job_id"].as_str().expect("job id");
    app.wait_final("app-one", job_id, DEADLINE).await;
}

/// The client of app-one on the service process at `addr`.
fn app_one(addr: SocketAddr) -> DeploymentClient {
    DeploymentClient {
        addr,
        id: "app-one",
    }
}

/// Stops the service (kill -9 or SIGTERM) while a job runs, starts it again
/// on the same data dir: apps, the finished job and the running job are
/// there, the running job calls back and finishes, its lock is released.
async fn restart_keeps_everything(stop: impl FnOnce(&mut ServiceProcess)) {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let addr = free_addr();
    let env = serve_env_at(&Backend::Embedded, data_dir.path(), addr);
    let mut service = ServiceProcess::start(&env, addr);
    let app = app_one(addr);
    app.register("sleep-3-restart").await;

    // One finished job, then one running when the service stops.
    let finished_id = job_id_of(&app.deploy().await);
    app.wait_status(&finished_id, &["success"], DEADLINE).await;
    let running_id = job_id_of(&app.deploy().await);
    app.wait_status(&running_id, &["running"], DEADLINE).await;

    stop(&mut service);
    let _service = ServiceProcess::start(&env, addr);

    let finished = app.status(&finished_id).await;
    assert_eq!(
        finished["status"], "success",
        "the finished job is kept: {finished}"
    );
    assert_eq!(finished["output"], "sleeping\nwoke up\n");
    let busy = app.deploy().await;
    assert_eq!(
        busy["error"], "App deployment is already running",
        "the lock is kept: {busy}"
    );
    let done = app
        .wait_status(&running_id, &["success", "error"], DEADLINE)
        .await;
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(done["output"], "sleeping\nwoke up\n");
    let next = app.deploy().await;
    assert_eq!(next["status"], "starting", "the lock is released: {next}");
    app.wait_status(
        next["job_id"].as_str().expect("job id"),
        &["success"],
        DEADLINE,
    )
    .await;
}

#[tokio::test]
async fn nothing_is_lost_across_a_kill_9() {
    restart_keeps_everything(ServiceProcess::kill_hard).await;
}

#[tokio::test]
async fn nothing_is_lost_across_a_sigterm() {
    restart_keeps_everything(|service| {
        let status = service.terminate(DEADLINE);
        assert!(status.success(), "exit status {status}");
    })
    .await;
}

#[tokio::test]
async fn a_second_service_on_the_same_data_dir_refuses_to_start() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let addr = free_addr();
    let _first = ServiceProcess::start(
        &serve_env_at(&Backend::Embedded, data_dir.path(), addr),
        addr,
    );

    let other = free_addr();
    let output = Command::new(env!("CARGO_BIN_EXE_enac-cd"))
        .arg("serve")
        .envs(serve_env_at(&Backend::Embedded, data_dir.path(), other))
        .env("CD_LISTEN", other.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("second enac-cd runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("CD_DATA_DIR"), "{stderr}");
    assert!(lines[0].contains("in use by another enac-cd"), "{stderr}");

    // The first one is unharmed.
    let root = reqwest::get(format!("http://{addr}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(root.status().as_u16(), 200);
}

#[tokio::test]
async fn the_readme_quick_start_deploys_the_example_app() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data_dir = tempfile::tempdir().expect("temp dir");
    let addr = free_addr();
    let mut command = Command::new(env!("CARGO_BIN_EXE_enac-cd"));
    command
        .current_dir(repo)
        .args(["serve", "--config", "examples/quickstart.toml"])
        // The README's command as is, but on a free port and a fresh data dir.
        .args(["--listen", &addr.to_string()])
        .args(["--data-dir", &data_dir.path().display().to_string()]);
    let _service = ServiceProcess::spawn(command, addr);

    let deployed = tokio::process::Command::new(env!("CARGO_BIN_EXE_enac-cd"))
        .args([
            "deploy",
            "--url",
            &format!("http://{addr}"),
            "--deployment-id",
            "hello",
            "--interval",
            "1",
        ])
        .env("DEPLOYMENT_SECRET", "hello-secret-0123456789")
        .output()
        .await
        .expect("deploy runs");
    let stdout = String::from_utf8_lossy(&deployed.stdout);
    assert_eq!(deployed.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("PLAY [deploy hello-world]"), "{stdout}");
    assert!(
        stdout.contains("PLAY RECAP: ok=2 changed=1 failed=0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("App deploy finished successfully"),
        "{stdout}"
    );
}

#[tokio::test]
async fn the_store_file_and_job_logs_are_readable_by_the_service_user_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let root = tempfile::tempdir().expect("temp dir");
    let data_dir = root.path().join("data");
    // Left world-readable by an older version or a careless copy.
    std::fs::create_dir(&data_dir).expect("data dir");
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let store_file = data_dir.join("enac-cd.redb");
    std::fs::write(&store_file, b"").expect("empty store file");
    std::fs::set_permissions(&store_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let addr = free_addr();
    let _service = ServiceProcess::start(&serve_env_at(&Backend::Embedded, &data_dir, addr), addr);
    let app = DeploymentClient {
        addr,
        id: "app-one",
    };
    app.register("sleep-2-modes").await;
    let job_id = job_id_of(&app.deploy().await);
    app.wait_status(&job_id, &["running"], DEADLINE).await;

    assert_eq!(mode(&data_dir), 0o700, "the data dir");
    assert_eq!(
        mode(&store_file),
        0o600,
        "the store file, which holds the signing key"
    );
    // The running job's log, which holds everything its program printed.
    let logs = data_dir.join("job-logs");
    assert_eq!(mode(&logs), 0o700, "the job logs dir");
    let files: Vec<_> = std::fs::read_dir(&logs)
        .expect("job logs")
        .map(|entry| entry.expect("entry").path())
        .collect();
    assert!(!files.is_empty(), "the running job has a log file");
    for path in files {
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    app.wait_status(&job_id, &["success", "error"], DEADLINE)
        .await;
}
