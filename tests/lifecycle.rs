//! The job lifecycle through the legacy API, with the fake ansible program:
//! success, error, exits without callback, timeout, busy inventories.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_deployment_runs_to_success_with_its_output() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-one", "ok-one")]).await;

    let started = app.deploy("app-one").await;
    assert_eq!(started["status"], "starting");
    assert_eq!(started["output"], "");
    let job_id = started["job_id"].as_str().expect("job id");
    assert_eq!(job_id.len(), 26, "a ULID: {job_id}");
    assert!(started["status_token"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));

    let done = app.wait_final("app-one", job_id, DEADLINE).await;
    assert_eq!(done["status"], "success");
    assert_eq!(done["job_id"], job_id);
    assert_eq!(done["output"], "step 1\ndone\n");
}

#[tokio::test]
async fn a_reported_error_ends_the_job_error_and_frees_the_inventory() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-fail", "fail-one")]).await;

    let job_id = job_id_of(&app.deploy("app-fail").await);
    let done = app.wait_final("app-fail", &job_id, DEADLINE).await;
    assert_eq!(done["status"], "error");
    assert_eq!(done["output"], "step 1\nboom\n");

    let again = app.deploy("app-fail").await;
    assert_eq!(again["status"], "starting", "{again}");
    assert_ne!(again["job_id"], job_id.as_str());
}

#[tokio::test]
async fn a_program_that_exits_nonzero_without_callback_ends_error_with_its_last_lines() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-x", "exit-fail")]).await;

    let job_id = job_id_of(&app.deploy("app-x").await);
    let done = app.wait_final("app-x", &job_id, DEADLINE).await;
    assert_eq!(done["status"], "error");
    let output = done["output"].as_str().expect("output");
    assert!(output.contains("exited with code 3"), "{output}");
    assert!(output.contains("something broke"), "{output}");

    // The lock went with the job: the next deploy starts at once.
    let next = app.deploy("app-x").await;
    assert_eq!(next["status"], "starting", "{next}");
}

#[tokio::test]
async fn a_program_that_exits_zero_without_callback_ends_success() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-x", "exit-ok")]).await;

    let job_id = job_id_of(&app.deploy("app-x").await);
    let done = app.wait_final("app-x", &job_id, DEADLINE).await;
    assert_eq!(done["status"], "success");
    assert!(done["output"]
        .as_str()
        .expect("output")
        .contains("last words of success"));
}

#[tokio::test]
async fn a_job_past_its_timeout_is_killed_and_ends_error() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &["--job-timeout=2s"]).await;
    app.set_apps(&[("app-hang", "hang")]).await;

    let job_id = job_id_of(&app.deploy("app-hang").await);
    let done = app.wait_final("app-hang", &job_id, DEADLINE).await;
    assert_eq!(done["status"], "error");
    let output = done["output"].as_str().expect("output");
    assert!(output.starts_with("hanging\n"), "{output}");
    assert!(output.contains("timed out after 2s"), "{output}");

    // The program is gone: its pid no longer runs the fake ansible.
    let job = app.job(&job_id).await;
    let record = job
        .launch
        .as_ref()
        .and_then(enac_cd::launch::LaunchRecord::from_data);
    let Some(enac_cd::launch::LaunchRecord::Process { pid, .. }) = record else {
        panic!("no launch record on {job:?}");
    };
    eventually("the timed-out program to die", DEADLINE, || async move {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "));
        (!alive).then_some(())
    })
    .await;

    let next = app.deploy("app-hang").await;
    assert_eq!(next["status"], "starting", "{next}");
    // Leave nothing running behind the test.
    let next_id = next["job_id"].as_str().expect("job id");
    app.wait_final("app-hang", next_id, DEADLINE).await;
}

#[tokio::test]
async fn a_busy_inventory_rejects_by_default_across_apps_sharing_it() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-a", "sleep-2-shared"), ("app-b", "sleep-2-shared")])
        .await;

    let first = app.deploy("app-a").await;
    assert_eq!(first["status"], "starting");
    for id in ["app-a", "app-b"] {
        let busy = app.deploy(id).await;
        assert_eq!(
            busy,
            json!({"status": "error", "error": "App deployment is already running"})
        );
    }
    let job_id = first["job_id"].as_str().expect("job id");
    let done = app.wait_final("app-a", job_id, DEADLINE).await;
    assert_eq!(done["status"], "success");
}

#[tokio::test]
async fn join_answers_with_the_running_job() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &["--on-busy=join"]).await;
    app.set_apps(&[("app-a", "sleep-2-join")]).await;

    let first = app.deploy("app-a").await;
    let job_id = first["job_id"].as_str().expect("job id");
    let joined = app.deploy("app-a").await;
    assert_eq!(joined["job_id"], job_id);
    assert!(
        matches!(joined["status"].as_str(), Some("starting" | "running")),
        "{joined}"
    );
    assert!(joined["output"].is_string());
    assert_eq!(
        app.wait_final("app-a", job_id, DEADLINE).await["status"],
        "success"
    );
}

#[tokio::test]
async fn queue_keeps_one_queued_job_that_starts_when_the_running_one_ends() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &["--on-busy=queue"]).await;
    app.set_apps(&[("app-a", "sleep-1-queue"), ("app-b", "sleep-1-queue")])
        .await;

    let running = app.deploy("app-a").await;
    let running_id = job_id_of(&running);
    let queued = app.deploy("app-a").await;
    assert_eq!(queued["status"], "queued", "{queued}");
    let queued_id = job_id_of(&queued);
    assert_ne!(queued_id, running_id);
    // Later requests, from any app of the inventory, join the queued job.
    for id in ["app-a", "app-b"] {
        let later = app.deploy(id).await;
        assert_eq!(later["job_id"], queued_id.as_str(), "{later}");
        assert_eq!(later["status"], "queued");
    }

    assert_eq!(
        app.wait_final("app-a", &running_id, DEADLINE).await["status"],
        "success"
    );
    let done = app.wait_final("app-b", &queued_id, DEADLINE).await;
    assert_eq!(done["status"], "success", "{done}");

    let (_, load) = app.admin_get("/load/?periods=1_hour:3600").await;
    assert_eq!(load["load"]["1_hour"]["success"], 2, "{load}");
}

#[tokio::test]
async fn a_queued_job_also_starts_when_the_running_one_fails() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &["--on-busy=queue"]).await;
    app.set_apps(&[("app-a", "exit-fail-queue")]).await;

    let first = app.deploy("app-a").await;
    let second = app.deploy("app-a").await;
    let second_id = second["job_id"].as_str().expect("job id");
    if second["status"] == "queued" {
        let done = app.wait_final("app-a", second_id, DEADLINE).await;
        assert_eq!(done["status"], "error");
        assert!(done["output"]
            .as_str()
            .expect("output")
            .contains("exited with code 3"));
    } else {
        // The first job ended before the second request: it started at once.
        assert_eq!(second["status"], "starting", "{first} {second}");
    }
}

#[tokio::test]
async fn the_self_inventory_runs_announce_apps() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &["--self-inventory=ok-self"]).await;
    app.set_apps(&[("cd-runner", "ok-self")]).await;

    let job_id = job_id_of(&app.deploy("cd-runner").await);
    let done = app.wait_final("cd-runner", &job_id, DEADLINE).await;
    assert_eq!(done["status"], "success");
    assert_eq!(done["output"], "announced\n");
}
