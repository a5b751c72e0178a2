//! The jobs API's history and one job (contract §10), on both stores: who
//! may read what (admin, viewer, status token, OIDC job token), filters,
//! paging that never repeats or skips, the job's facts, and refusals.

mod common;

use std::time::Duration;

use common::oidc::{github_claims, FakeIssuer, SigningKey};
use common::*;
use serde_json::Value;

const VIEWER_TOKEN: &str = "test-viewer-token-0123456789";
const AUDIENCE: &str = "jobs-api-audience";
const DEADLINE: Duration = Duration::from_secs(30);

/// The service with a viewer token, on `backend`.
async fn service(backend: Backend<'_>) -> TestApp {
    let viewer = format!("--viewer-token={VIEWER_TOKEN}");
    TestApp::start(backend, &[&viewer], |_| {}).await
}

async fn get(app: &TestApp, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = app.http.get(app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    send(request).await
}

fn ids(list: &Value) -> Vec<String> {
    list["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("a job list: {list}"))
        .iter()
        .map(|job| job["job_id"].as_str().expect("a job id").to_owned())
        .collect()
}

/// Deploys `deployment_id` and waits for its job to end; returns its id.
async fn finished_job(app: &TestApp, deployment_id: &str) -> String {
    let job = job_id_of(&app.deploy(deployment_id).await);
    app.wait_final(deployment_id, &job, DEADLINE).await;
    job
}

async fn history_filters_and_shows_each_jobs_facts(app: TestApp) {
    app.set_apps(&[("app-ok", "ok-inv"), ("app-fail", "fail-inv")])
        .await;
    let first = finished_job(&app, "app-ok").await;
    let failed = finished_job(&app, "app-fail").await;
    let last = finished_job(&app, "app-ok").await;

    let (code, all) = get(&app, "/api/v1/jobs", Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 200, "{all}");
    assert_eq!(
        ids(&all),
        [last.clone(), failed.clone(), first.clone()],
        "newest first"
    );
    assert_eq!(all["next_cursor"], Value::Null, "{all}");
    let (_, ok_only) = get(
        &app,
        "/api/v1/jobs?deployment_id=app-ok",
        Some(VIEWER_TOKEN),
    )
    .await;
    assert_eq!(ids(&ok_only), [last.clone(), first.clone()]);
    let (_, errors) = get(&app, "/api/v1/jobs?status=error", Some(VIEWER_TOKEN)).await;
    assert_eq!(ids(&errors), std::slice::from_ref(&failed));
    let (_, both) = get(
        &app,
        "/api/v1/jobs?status=error&status=success",
        Some(VIEWER_TOKEN),
    )
    .await;
    assert_eq!(ids(&both).len(), 3, "{both}");

    let listed = &all["jobs"][1];
    assert_eq!(listed["deployment_id"], "app-fail");
    assert_eq!(listed["inventory"], "fail-inv");
    assert_eq!(listed["status"], "error");
    assert_eq!(listed["trigger"]["kind"], "secret");
    assert!(
        listed.get("output").is_none(),
        "a list carries no output: {listed}"
    );
    for time in ["created_at", "started_at", "finished_at"] {
        let text = listed[time]
            .as_str()
            .unwrap_or_else(|| panic!("{time}: {listed}"));
        assert!(
            text.len() == 24 && text.ends_with('Z') && text.as_bytes()[10] == b'T',
            "{time} is RFC 3339 UTC: {text}"
        );
    }
    assert!(listed["created_at"].as_str() <= listed["finished_at"].as_str());

    let (code, one) = get(&app, &format!("/api/v1/jobs/{failed}"), Some(VIEWER_TOKEN)).await;
    assert_eq!(code, 200, "{one}");
    assert_eq!(one["job_id"], failed.as_str());
    assert!(
        one["output"]
            .as_str()
            .is_some_and(|output| output.contains("boom")),
        "one job carries its output: {one}"
    );
}

#[tokio::test]
async fn history_filters_and_shows_each_jobs_facts_on_the_embedded_store() {
    history_filters_and_shows_each_jobs_facts(service(Backend::Embedded).await).await;
}

#[tokio::test]
async fn history_filters_and_shows_each_jobs_facts_on_redis() {
    let redis = RedisServer::start();
    history_filters_and_shows_each_jobs_facts(service(Backend::Redis(&redis)).await).await;
}

#[tokio::test]
async fn a_job_ended_by_its_programs_exit_shows_the_exit_code() {
    let app = service(Backend::Embedded).await;
    app.set_apps(&[("app-exit", "exit-fail-inv"), ("app-ok", "ok-inv")])
        .await;
    let exited = finished_job(&app, "app-exit").await;
    let reported = finished_job(&app, "app-ok").await;

    let (_, exited) = get(&app, &format!("/api/v1/jobs/{exited}"), Some(ADMIN_TOKEN)).await;
    let (_, reported) = get(&app, &format!("/api/v1/jobs/{reported}"), Some(ADMIN_TOKEN)).await;

    assert_eq!(exited["status"], "error", "{exited}");
    assert_eq!(exited["exit_code"], 3, "{exited}");
    assert_eq!(exited["cancelled_by"], Value::Null, "{exited}");
    assert_eq!(reported["status"], "success", "{reported}");
    assert_eq!(
        reported["exit_code"],
        Value::Null,
        "ended by its callback, before any exit: {reported}"
    );
}

#[tokio::test]
async fn pages_never_repeat_or_skip_a_job_even_while_jobs_start() {
    let app = service(Backend::Embedded).await;
    let apps: Vec<(String, String)> = (0..7)
        .map(|n| (format!("app-{n}"), format!("ok-{n}")))
        .collect();
    let pairs: Vec<(&str, &str)> = apps.iter().map(|(a, i)| (a.as_str(), i.as_str())).collect();
    app.set_apps(&pairs).await;
    let mut started = Vec::new();
    for (deployment_id, _) in &pairs[..5] {
        started.push(finished_job(&app, deployment_id).await);
    }

    let mut seen = Vec::new();
    let mut path = "/api/v1/jobs?limit=2".to_owned();
    loop {
        let (code, page) = get(&app, &path, Some(ADMIN_TOKEN)).await;
        assert_eq!(code, 200, "{page}");
        assert!(ids(&page).len() <= 2, "{page}");
        seen.extend(ids(&page));
        if seen.len() == 2 {
            // New jobs between two pages land before the first page, not in the next.
            finished_job(&app, pairs[5].0).await;
            finished_job(&app, pairs[6].0).await;
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/jobs?limit=2&cursor={cursor}"),
            None => break,
        }
    }

    started.reverse();
    assert_eq!(seen, started, "every job once, newest first");
}

#[tokio::test]
async fn a_status_token_reads_its_own_job_only_and_others_are_not_found() {
    let app = service(Backend::Embedded).await;
    app.set_apps(&[("app-ok", "ok-inv")]).await;
    let mine = app.deploy("app-ok").await;
    let job = job_id_of(&mine);
    app.wait_final("app-ok", &job, DEADLINE).await;
    let other = finished_job(&app, "app-ok").await;
    let token = mine["status_token"].as_str().expect("a status token");

    let (code, own) = get(&app, &format!("/api/v1/jobs/{job}"), Some(token)).await;
    assert_eq!(code, 200, "{own}");
    let (_, listed) = get(&app, "/api/v1/jobs", Some(token)).await;
    assert_eq!(
        ids(&listed),
        std::slice::from_ref(&job),
        "the list holds its one job"
    );

    let (code, hidden) = get(&app, &format!("/api/v1/jobs/{other}"), Some(token)).await;
    let (absent_code, absent) = get(
        &app,
        "/api/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!((code, absent_code), (404, 404), "{hidden} {absent}");
    assert_eq!(hidden, absent, "no hint that the other job exists");
}

#[tokio::test]
async fn missing_or_wrong_tokens_are_401_and_bad_parameters_400_naming_them() {
    let app = service(Backend::Embedded).await;

    for token in [
        None,
        Some("not-a-token-of-any-kind"),
        Some("test-admin-token-012345678"),
    ] {
        let (code, body) = get(&app, "/api/v1/jobs", token).await;
        assert_eq!(code, 401, "{token:?}: {body}");
        assert_error_body(&body);
    }
    for (query, named) in [
        ("status=finished", "status"),
        ("limit=501", "limit"),
        ("limit=0", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        ("sort=asc", "sort"),
    ] {
        let (code, body) = get(&app, &format!("/api/v1/jobs?{query}"), Some(ADMIN_TOKEN)).await;
        assert_eq!(code, 400, "{query}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|error| error.contains(named)),
            "{query}: {body}"
        );
    }
}

#[tokio::test]
async fn a_viewer_token_equal_to_the_admin_token_is_refused_at_start() {
    let redis_less = tempfile::tempdir().expect("a data dir");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_enac-cd"))
        .args(["serve", "--launcher=process", "--process-command=/bin/true"])
        .arg(format!("--data-dir={}", redis_less.path().display()))
        .arg(format!("--admin-token={ADMIN_TOKEN}"))
        .arg(format!("--viewer-token={ADMIN_TOKEN}"))
        .arg(format!("--listen={}", free_addr()))
        .env_clear()
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("CD_VIEWER_TOKEN"), "{stderr}");
    assert!(
        !stderr.contains(ADMIN_TOKEN),
        "the token is never shown: {stderr}"
    );
}

#[tokio::test]
async fn an_oidc_token_lists_the_jobs_of_the_deployments_its_policies_grant() {
    let key = SigningKey::rsa(0, "jobs-api-key");
    let issuer = FakeIssuer::serving("github", &[&key]).await;
    let policy_dir = tempfile::tempdir().expect("a policy dir");
    std::fs::write(
        policy_dir.path().join("granted.toml"),
        "deployment_id = \"app-granted\"\n[[oidc]]\nissuer = \"github\"\n[oidc.claims]\nrepository_id = \"123456\"\n",
    )
    .expect("a policy file");
    let config = issuer.config(AUDIENCE, &["RS256"]);
    let dir = policy_dir.path().to_owned();
    let app = TestApp::start(Backend::Embedded, &[], move |settings| {
        settings.issuers = vec![config];
        settings.policy_dir = dir;
    })
    .await;
    app.set_apps(&[("app-granted", "ok-granted"), ("app-other", "ok-other")])
        .await;
    let token = key.sign(&github_claims(&issuer.iss(), AUDIENCE));
    let (code, started) = app
        .post_with_token("/app-deploy/", Some(&token), &serde_json::json!({}))
        .await;
    assert_eq!(code, 200, "{started}");
    let granted = job_id_of(&started);
    app.wait_final("app-granted", &granted, DEADLINE).await;
    let other = finished_job(&app, "app-other").await;

    let (code, listed) = get(&app, "/api/v1/jobs", Some(&token)).await;
    assert_eq!(code, 200, "{listed}");
    assert_eq!(ids(&listed), std::slice::from_ref(&granted));
    let trigger = &listed["jobs"][0]["trigger"];
    assert_eq!(trigger["kind"], "github-oidc", "{trigger}");
    assert_eq!(trigger["provider"], "github", "{trigger}");
    assert_eq!(trigger["repository"], "epfl-enac/app", "{trigger}");
    assert_eq!(trigger["sender"], "octocat", "{trigger}");
    assert_eq!(trigger["issuer"], "github", "{trigger}");
    assert_eq!(trigger["policy"], "granted.toml", "{trigger}");
    assert!(trigger["subject"].is_string(), "{trigger}");
    let (code, _) = get(&app, &format!("/api/v1/jobs/{other}"), Some(&token)).await;
    assert_eq!(code, 404, "a job of a deployment it is not granted");
    let (_, none) = get(&app, "/api/v1/jobs?deployment_id=app-other", Some(&token)).await;
    assert_eq!(ids(&none), Vec::<String>::new());

    let (code, refused) = get(&app, "/api/v1/deployments", Some(&token)).await;
    assert_eq!(
        code, 403,
        "a job token does not list deployments: {refused}"
    );
    let (code, listed) = get(&app, "/api/v1/deployments", Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 200, "{listed}");
    let ingress: Vec<(&str, &Value)> = listed["deployments"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|d| (d["deployment_id"].as_str().unwrap_or(""), &d["ingress"]))
        .collect();
    assert_eq!(
        ingress,
        [
            ("app-granted", &serde_json::json!(["secret", "oidc"])),
            ("app-other", &serde_json::json!(["secret"])),
        ]
    );
}

#[tokio::test]
async fn deployments_show_their_last_job_to_admin_and_viewer() {
    let app = service(Backend::Embedded).await;
    app.set_apps(&[
        ("app-b", "ok-b"),
        ("app-a", "fail-a"),
        ("app-idle", "ok-idle"),
    ])
    .await;
    finished_job(&app, "app-a").await;
    let last_a = finished_job(&app, "app-a").await;
    let last_b = finished_job(&app, "app-b").await;

    for token in [ADMIN_TOKEN, VIEWER_TOKEN] {
        let (code, listed) = get(&app, "/api/v1/deployments", Some(token)).await;
        assert_eq!(code, 200, "{listed}");
        let deployments = listed["deployments"].as_array().expect("a list");
        let summary: Vec<(&str, &str, &Value)> = deployments
            .iter()
            .map(|d| {
                (
                    d["deployment_id"].as_str().unwrap_or(""),
                    d["inventory"].as_str().unwrap_or(""),
                    &d["last_job"]["job_id"],
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("app-a", "fail-a", &Value::from(last_a.as_str())),
                ("app-b", "ok-b", &Value::from(last_b.as_str())),
                ("app-idle", "ok-idle", &Value::Null),
            ],
            "by id, each with its newest job"
        );
        assert_eq!(deployments[0]["last_job"]["status"], "error");
        assert_eq!(deployments[2]["last_job"], Value::Null);
    }
    let (code, _) = get(&app, "/api/v1/deployments", None).await;
    assert_eq!(code, 401);
}

async fn cancel(app: &TestApp, job_id: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = app
        .http
        .post(app.url(&format!("/api/v1/jobs/{job_id}/cancel")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    send(request).await
}

/// The pid of a job's program (process launcher), once it is recorded.
async fn program_pid(app: &TestApp, job_id: &str) -> i32 {
    eventually("the launch to be recorded", DEADLINE, || async {
        let data = app.job(job_id).await.launch?;
        data.0["pid"]
            .as_i64()
            .and_then(|pid| i32::try_from(pid).ok())
    })
    .await
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only asks whether the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn last_line(job: &Value) -> &str {
    job["output"]
        .as_str()
        .unwrap_or_default()
        .trim_end()
        .lines()
        .last()
        .unwrap_or_default()
}

#[tokio::test]
async fn cancel_stops_the_program_ends_the_job_and_releases_the_lock() {
    let app = service(Backend::Embedded).await;
    app.set_apps(&[("app-hang", "hang-cancel")]).await;
    let running = job_id_of(&app.deploy("app-hang").await);
    let pid = program_pid(&app, &running).await;
    assert!(alive(pid), "the program runs");

    let (code, answer) = cancel(&app, &running, Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["status"], "cancelling");
    assert_eq!(answer["job_id"], running.as_str());
    let done = app.wait_final("app-hang", &running, DEADLINE).await;

    assert_eq!(done["status"], "error", "{done}");
    assert_eq!(last_line(&done), "cancelled by admin", "{done}");
    let (_, shown) = get(&app, &format!("/api/v1/jobs/{running}"), Some(ADMIN_TOKEN)).await;
    assert_eq!(shown["cancelled_by"], "admin", "{shown}");
    eventually("the program to be gone", DEADLINE, || async {
        (!alive(pid)).then_some(())
    })
    .await;
    let next = app.deploy("app-hang").await;
    assert_eq!(next["status"], "starting", "the lock is released: {next}");
    let (code, _) = cancel(&app, &job_id_of(&next), Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 202);
    let (code, again) = cancel(&app, &running, Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 409, "a final job: {again}");
}

#[tokio::test]
async fn a_queued_job_is_cancelled_without_a_launch_and_the_next_takes_the_lock() {
    let app = TestApp::start(Backend::Embedded, &["--on-busy=queue"], |_| {}).await;
    app.set_apps(&[("app-hang", "hang-queue")]).await;
    let running = job_id_of(&app.deploy("app-hang").await);
    let queued = app.deploy("app-hang").await;
    assert_eq!(queued["status"], "queued", "{queued}");
    let queued = job_id_of(&queued);

    let (code, _) = cancel(&app, &queued, Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 202);
    let done = app.wait_final("app-hang", &queued, DEADLINE).await;

    assert_eq!(done["status"], "error", "{done}");
    assert_eq!(last_line(&done), "cancelled by admin", "{done}");
    let stored = app.job(&queued).await;
    assert!(
        stored.launch.is_none() && stored.started_at.is_none(),
        "never launched: {stored:?}"
    );
    let still = app.status("app-hang", &running).await;
    assert!(
        still["status"] == "running" || still["status"] == "starting",
        "the running job goes on: {still}"
    );

    // The next queued job takes the lock when the running one is cancelled.
    let next = job_id_of(&app.deploy("app-hang").await);
    let (code, _) = cancel(&app, &running, Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 202);
    eventually("the queued job to start", DEADLINE, || async {
        let status = app.status("app-hang", &next).await["status"].clone();
        (status == "running" || status == "starting").then_some(())
    })
    .await;
    let (code, _) = cancel(&app, &next, Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 202);
    app.wait_final("app-hang", &next, DEADLINE).await;
}

#[tokio::test]
async fn only_the_admin_cancels() {
    let app = service(Backend::Embedded).await;
    app.set_apps(&[("app-hang", "hang-refuse")]).await;
    let started = app.deploy("app-hang").await;
    let job = job_id_of(&started);
    let status_token = started["status_token"].as_str().expect("a status token");

    for token in [VIEWER_TOKEN, status_token] {
        let (code, body) = cancel(&app, &job, Some(token)).await;
        assert_eq!(code, 403, "{body}");
    }
    let (code, _) = cancel(&app, &job, None).await;
    assert_eq!(code, 401);
    let (code, _) = cancel(&app, "01ARZ3NDEKTSV4RRFFQ69G5FAV", Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 404);
    assert_ne!(
        app.status("app-hang", &job).await["status"],
        "error",
        "nothing changed"
    );
    let (code, _) = cancel(&app, &job, Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 202);
    app.wait_final("app-hang", &job, DEADLINE).await;
}

#[tokio::test]
async fn a_cancel_asked_of_one_replica_stops_the_program_another_one_watches() {
    let redis = RedisServer::start();
    let watching = service(Backend::Redis(&redis)).await;
    let other = service(Backend::Redis(&redis)).await;
    watching.set_apps(&[("app-hang", "hang-replica")]).await;
    let job = job_id_of(&watching.deploy("app-hang").await);
    let pid = program_pid(&watching, &job).await;

    let (code, _) = cancel(&other, &job, Some(ADMIN_TOKEN)).await;

    assert_eq!(code, 202);
    let done = other.wait_final("app-hang", &job, DEADLINE).await;
    assert_eq!(last_line(&done), "cancelled by admin", "{done}");
    eventually("the program to be gone", DEADLINE, || async {
        (!alive(pid)).then_some(())
    })
    .await;
}
