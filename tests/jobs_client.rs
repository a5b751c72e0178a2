//! `enac-cd jobs` and `enac-cd logs`, the real binary, against a real
//! service: the table, the output, following a running job, and refusals
//! that say why without ever showing the token (contract §10, "Client:").

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::binary::BinaryRun;
use common::{job_id_of, Backend, TestApp, ADMIN_TOKEN};
use tokio::process::Command;

const VIEWER_TOKEN: &str = "test-viewer-token-0123456789";
const DEADLINE: Duration = Duration::from_secs(30);
/// Longest any client run may take before the test gives up on it.
const CLIENT_DEADLINE: Duration = Duration::from_secs(60);

async fn service() -> TestApp {
    let viewer = format!("--viewer-token={VIEWER_TOKEN}");
    TestApp::start(Backend::Embedded, &[&viewer], |_| {}).await
}

/// `enac-cd <args> --url <app>` with `ENAC_CD_TOKEN` set to `token` (or unset).
async fn client(app: &TestApp, token: Option<&str>, args: &[&str]) -> BinaryRun {
    let mut command = Command::new(env!("CARGO_BIN_EXE_enac-cd"));
    command
        .args(args)
        .args(["--url", &app.url("")])
        .env_remove("ENAC_CD_TOKEN")
        .env_remove("CD_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(token) = token {
        command.env("ENAC_CD_TOKEN", token);
    }
    let output = tokio::time::timeout(CLIENT_DEADLINE, command.output())
        .await
        .expect("the client ends within its deadline")
        .expect("the client binary runs");
    BinaryRun::of(output)
}

async fn finished_job(app: &TestApp, deployment_id: &str) -> String {
    let job = job_id_of(&app.deploy(deployment_id).await);
    app.wait_final(deployment_id, &job, DEADLINE).await;
    job
}

/// The job ids of a `jobs` table, top to bottom (the header left out).
fn listed_ids(run: &BinaryRun) -> Vec<&str> {
    run.stdout
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .collect()
}

#[tokio::test]
async fn jobs_lists_deployed_jobs_newest_first_and_filters_them() {
    let app = service().await;
    app.set_apps(&[("app-ok", "ok-inv"), ("app-fail", "fail-inv")])
        .await;
    let first = finished_job(&app, "app-ok").await;
    let failed = finished_job(&app, "app-fail").await;
    let last = finished_job(&app, "app-ok").await;

    let all = client(&app, Some(VIEWER_TOKEN), &["jobs"]).await;
    let errors = client(&app, Some(VIEWER_TOKEN), &["jobs", "--status", "error"]).await;
    let newest = client(&app, Some(ADMIN_TOKEN), &["jobs", "--limit", "2"]).await;
    let of_ok = client(
        &app,
        Some(ADMIN_TOKEN),
        &["jobs", "--deployment-id", "app-ok", "--status", "success"],
    )
    .await;

    assert_eq!(all.code, Some(0), "{all}");
    assert!(all.stdout.starts_with("JOB "), "a header: {all}");
    assert_eq!(listed_ids(&all), [&last, &failed, &first], "{all}");
    let failed_line = all
        .stdout
        .lines()
        .find(|line| line.starts_with(&failed))
        .expect("the failed job's line");
    for column in ["error", "app-fail", "secret"] {
        assert!(failed_line.contains(column), "{column}: {all}");
    }
    let created_at = |line: &str| line.find(" 20").expect("a created time");
    let lines: Vec<&str> = all.stdout.lines().skip(1).collect();
    assert!(
        lines
            .iter()
            .all(|line| created_at(line) == created_at(lines[0])),
        "fixed columns: {all}"
    );
    assert_eq!(listed_ids(&errors), [&failed], "{errors}");
    assert_eq!(listed_ids(&newest), [&last, &failed], "{newest}");
    assert_eq!(listed_ids(&of_ok), [&last, &first], "{of_ok}");
}

#[tokio::test]
async fn logs_prints_a_finished_jobs_output_and_exits_0() {
    let app = service().await;
    app.set_apps(&[("app-fail", "fail-inv")]).await;
    let job = finished_job(&app, "app-fail").await;

    let run = client(&app, Some(VIEWER_TOKEN), &["logs", &job]).await;

    assert_eq!(
        run.code,
        Some(0),
        "without --follow, printing is success: {run}"
    );
    assert_eq!(run.stdout.matches("step 1").count(), 1, "{run}");
    assert_eq!(run.stdout.matches("boom").count(), 1, "{run}");
}

#[tokio::test]
async fn logs_follow_prints_a_running_jobs_output_until_it_ends() {
    let app = service().await;
    // Reports `sleeping`, sleeps 2 s, then `woke up` and success.
    app.set_apps(&[("app-slow", "sleep-2-inv"), ("app-fail", "fail-inv")])
        .await;
    let slow = job_id_of(&app.deploy("app-slow").await);

    let followed = client(
        &app,
        Some(VIEWER_TOKEN),
        // A client that polled would wait a minute: it follows the stream.
        &["logs", &slow, "--follow", "--interval", "60"],
    )
    .await;
    let failed = finished_job(&app, "app-fail").await;
    let failed = client(&app, Some(ADMIN_TOKEN), &["logs", &failed, "--follow"]).await;

    assert_eq!(followed.code, Some(0), "{followed}");
    assert_eq!(followed.stdout.matches("sleeping").count(), 1, "{followed}");
    assert_eq!(followed.stdout.matches("woke up").count(), 1, "{followed}");
    let sleeping = followed.stdout.find("sleeping").expect("sleeping printed");
    let woke = followed.stdout.find("woke up").expect("woke up printed");
    assert!(sleeping < woke, "{followed}");
    let job = app.job(&slow).await;
    assert_eq!(job.status.as_str(), "success", "{job:?}");
    assert_eq!(failed.code, Some(1), "a job that ended in error: {failed}");
    assert!(failed.stdout.contains("boom"), "{failed}");
}

#[tokio::test]
async fn a_wrong_or_missing_token_exits_1_with_the_reason_and_never_the_token() {
    let app = service().await;
    app.set_apps(&[("app-ok", "ok-inv")]).await;
    let job = finished_job(&app, "app-ok").await;
    let wrong = "wrong-token-that-must-stay-secret-42";

    let listed = client(&app, Some(wrong), &["jobs"]).await;
    let logged = client(&app, Some(wrong), &["logs", &job]).await;
    let unset = client(&app, None, &["jobs"]).await;

    for run in [&listed, &logged] {
        assert_eq!(run.code, Some(1), "{run}");
        assert!(run.stderr.starts_with("! Error: "), "{run}");
        assert_eq!(run.stderr.lines().count(), 1, "one line: {run}");
        assert!(run.stderr.contains("invalid bearer token"), "{run}");
        assert!(run.stdout.is_empty(), "{run}");
        assert!(
            !run.stdout.contains(wrong) && !run.stderr.contains(wrong),
            "{run}"
        );
    }
    assert_eq!(unset.code, Some(1), "{unset}");
    assert!(unset.stderr.contains("ENAC_CD_TOKEN is not set"), "{unset}");
}

#[tokio::test]
async fn an_unknown_job_or_one_out_of_reach_exits_1_with_job_not_found() {
    let app = service().await;
    app.set_apps(&[("app-ok", "ok-inv")]).await;
    let mine = app.deploy("app-ok").await;
    let status_token = mine["status_token"].as_str().expect("a status token");
    app.wait_final("app-ok", &job_id_of(&mine), DEADLINE).await;
    let other = finished_job(&app, "app-ok").await;

    let unknown = client(
        &app,
        Some(ADMIN_TOKEN),
        &["logs", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "--follow"],
    )
    .await;
    let not_a_job = client(&app, Some(ADMIN_TOKEN), &["logs", "../../metrics"]).await;
    let out_of_reach = client(&app, Some(status_token), &["logs", &other]).await;

    for run in [&unknown, &not_a_job, &out_of_reach] {
        assert_eq!(run.code, Some(1), "{run}");
        assert!(run.stderr.starts_with("! Error: job not found"), "{run}");
        assert!(run.stdout.is_empty(), "{run}");
    }
}

#[tokio::test]
async fn cancel_stops_a_running_job_with_the_admin_token_only() {
    let app = service().await;
    app.set_apps(&[("app-hang", "hang-client")]).await;
    let job = job_id_of(&app.deploy("app-hang").await);

    let refused = client(&app, Some(VIEWER_TOKEN), &["cancel", &job]).await;
    let cancelled = client(&app, Some(ADMIN_TOKEN), &["cancel", &job]).await;

    assert_eq!(refused.code, Some(1), "{refused}");
    assert!(refused.stderr.contains("! Error:"), "{refused}");
    assert!(!refused.stderr.contains(VIEWER_TOKEN), "{refused}");
    assert_eq!(cancelled.code, Some(0), "{cancelled}");
    assert!(cancelled.stdout.contains("cancelling"), "{cancelled}");
    let done = app.wait_final("app-hang", &job, DEADLINE).await;
    assert_eq!(done["status"], "error", "{done}");
    let again = client(&app, Some(ADMIN_TOKEN), &["cancel", &job]).await;
    assert_eq!(again.code, Some(1), "a final job: {again}");
    assert!(again.stderr.contains("already final"), "{again}");
}
