//! Reaching the Docker engine (contract §8): an engine that cannot be
//! reached, at any address, only makes `/readyz` answer 503 and fails the
//! jobs that need it, with a reason an operator can act on. A socket that
//! appears later is used without a restart.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::app::apps_list;
use common::docker::*;
use common::*;
use enac_cd::config::LauncherKind;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);

/// The service in-process with the `docker` launcher at `host`.
async fn docker_app_at(host: &str) -> TestApp {
    let flags = [
        format!("--docker-host={host}"),
        "--docker-pull=never".to_owned(),
        "--docker-network=host".to_owned(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    TestApp::start(Backend::Embedded, &flags, |settings| {
        settings.launcher = LauncherKind::Docker;
        settings.docker_image = TEST_IMAGE.to_owned();
    })
    .await
}

async fn readyz(addr: SocketAddr) -> (u16, Value) {
    send(reqwest::Client::new().get(format!("http://{addr}/readyz"))).await
}

#[tokio::test]
async fn a_missing_socket_only_makes_readyz_503_and_fails_jobs_naming_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let socket = dir.path().join("docker.sock");
    let app = docker_app_at(&format!("unix://{}", socket.display())).await;

    let (code, ready) = readyz(app.addr).await;
    assert_eq!(code, 503, "{ready}");
    let error = ready["error"].as_str().expect("an error");
    assert!(error.contains("no socket at"), "{ready}");
    assert!(error.contains(&socket.display().to_string()), "{ready}");
    let (code, _) = send(app.http.get(app.url("/healthz"))).await;
    assert_eq!(code, 200, "the process itself is up");

    app.set_apps(&[("app-nosock", "inv-nosock")]).await;
    let job = job_id_of(&app.deploy("app-nosock").await);
    let done = app.wait_final("app-nosock", &job, DEADLINE).await;
    assert_eq!(done["status"], "error", "{done}");
    let output = done["output"].as_str().expect("an output");
    assert!(output.contains("no socket at"), "{done}");
    let next = app.deploy("app-nosock").await;
    assert_eq!(next["status"], "starting", "the lock is released: {next}");
}

#[tokio::test]
async fn a_socket_that_appears_later_is_used_without_a_restart() {
    if !docker_engine_available("a_socket_that_appears_later_is_used_without_a_restart") {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let socket = dir.path().join("docker.sock");
    let app = docker_app_at(&format!("unix://{}", socket.display())).await;
    assert_eq!(readyz(app.addr).await.0, 503);

    std::os::unix::fs::symlink(Path::new("/var/run/docker.sock"), &socket)
        .expect("the engine's socket linked in");

    eventually("/readyz to answer 200", DEADLINE, || async {
        (readyz(app.addr).await.0 == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_tcp_engine_that_refuses_only_makes_readyz_503() {
    let closed = free_port();
    let app = docker_app_at(&format!("tcp://127.0.0.1:{closed}")).await;

    let (code, ready) = readyz(app.addr).await;

    assert_eq!(code, 503, "{ready}");
    assert!(
        ready["error"]
            .as_str()
            .is_some_and(|e| e.contains("docker engine")),
        "{ready}"
    );
}

/// The service as `nobody`, with the socket open to root's group only: the
/// reason names the socket, its group and the service's groups, in
/// `/readyz` and in the job's error. Needs root to switch user (CI runs as
/// root); elsewhere it says so loudly and does not run.
#[test]
fn a_socket_the_service_may_not_open_names_the_group_that_would_let_it_in() {
    if unsafe { libc::geteuid() } != 0 || Command::new("setpriv").arg("--help").output().is_err() {
        assert!(
            std::env::var("ENAC_CD_REQUIRE_DOCKER").as_deref() != Ok("1"),
            "this test needs root and setpriv, which CI has"
        );
        eprintln!("*** NOT ROOT (or no setpriv): permission-denied socket test did not run ***");
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("the directory open to all");
    let socket = dir.path().join("docker.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("a socket");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660))
        .expect("the socket closed to others");
    // The service makes its own data dir (0700, its own) where it may write.
    let writable = dir.path().join("writable");
    std::fs::create_dir(&writable).expect("a writable directory");
    std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o1777))
        .expect("the directory open to nobody");
    let data = writable.join("data");
    let apps = dir.path().join("apps.json");
    std::fs::write(
        &apps,
        apps_list(&[("app-denied", "inv-denied")]).to_string(),
    )
    .expect("an apps file");
    std::fs::set_permissions(&apps, std::fs::Permissions::from_mode(0o644))
        .expect("the apps file readable");

    let addr = free_addr();
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_enac-cd"))
        .arg("serve")
        .env("CD_LISTEN", addr.to_string())
        .env("CD_POLICY_DIR", NO_POLICIES)
        .env("CD_DATA_DIR", &data)
        .env("CD_APPS_FILE", &apps)
        .env("CD_LAUNCHER", "docker")
        .env("CD_DOCKER_PULL", "never")
        .env("CD_DOCKER_HOST", format!("unix://{}", socket.display()));
    let _service = ServiceProcess::spawn_logged(command, addr, &dir.path().join("log"));

    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let (code, ready) = readyz(addr).await;
        assert_eq!(code, 503, "{ready}");
        let error = ready["error"].as_str().expect("an error");
        for wanted in [
            "permission denied on",
            "gid 0",
            "runs as uid 65534 with groups 65534",
            "add group 0",
        ] {
            assert!(error.contains(wanted), "`{wanted}` missing: {ready}");
        }

        let http = reqwest::Client::new();
        let (_, started) = send(http.post(format!("http://{addr}/app-deploy/")).json(
            &serde_json::json!({"deployment_id": "app-denied", "deployment_secret": SECRET}),
        ))
        .await;
        let job = job_id_of(&started);
        let done = eventually("the job to end", DEADLINE, || async {
            let (_, body) = send(
                http.post(format!("http://{addr}/job-status/"))
                    .json(&serde_json::json!({"deployment_id": "app-denied",
                    "deployment_secret": SECRET, "job_id": job})),
            )
            .await;
            (body["status"] == "error").then_some(body)
        })
        .await;
        assert!(
            done["output"]
                .as_str()
                .is_some_and(|o| o.contains("add group 0")),
            "{done}"
        );
    });
}
