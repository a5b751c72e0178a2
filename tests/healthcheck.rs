//! `enac-cd healthcheck`, the image's `HEALTHCHECK`: exit 0 when the
//! service is ready, 1 otherwise with the reason printed (Docker keeps it
//! in the container's health log).

mod common;

use common::binary::BinaryRun;
use common::*;
use enac_cd::config::LauncherKind;

async fn healthcheck(args: &[String]) -> BinaryRun {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_enac-cd"))
        .arg("healthcheck")
        .args(args)
        .env_remove("CD_LISTEN")
        .output()
        .await
        .expect("the binary runs");
    BinaryRun::of(output)
}

#[tokio::test]
async fn a_ready_service_is_healthy_asked_on_the_port_it_listens_on() {
    let app = TestApp::spawn_embedded(&[]).await;
    // As in the image: the service listens on every interface.
    let listen = format!("0.0.0.0:{}", app.addr.port());

    let run = healthcheck(&[format!("--listen={listen}")]).await;

    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.starts_with("healthy:"), "{run}");
}

#[tokio::test]
async fn a_service_that_is_not_ready_is_unhealthy_with_the_reason() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let host = format!("--docker-host=unix://{}/docker.sock", dir.path().display());
    let app = TestApp::start(Backend::Embedded, &[&host], |settings| {
        settings.launcher = LauncherKind::Docker;
    })
    .await;
    let listen = format!("--listen={}", app.addr);

    let not_ready = healthcheck(std::slice::from_ref(&listen)).await;
    let live = healthcheck(&[listen, "--live".to_owned()]).await;

    assert_eq!(not_ready.code, Some(1), "{not_ready}");
    assert!(not_ready.stdout.contains("HTTP 503"), "{not_ready}");
    assert!(not_ready.stdout.contains("no socket at"), "{not_ready}");
    assert_eq!(live.code, Some(0), "the process is up: {live}");
}

#[tokio::test]
async fn nothing_listening_is_unhealthy() {
    let run = healthcheck(&[format!("--url=http://{}/readyz", free_addr())]).await;

    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stdout.starts_with("unhealthy:"), "{run}");
}
