//! Reporting jobs (contract §12) over real HTTP: GitHub deployments through
//! a GitHub App, GitLab commit statuses and notifications, against wiremock
//! stand-ins; retries, order, restarts, replicas, and a forge that hangs
//! while the job ends on time.

mod common;

use std::time::Duration;

use common::forge::{
    bearer, body, header, requests_to, FakeGithub, GITLAB_TOKEN, INSTALLATION_TOKEN,
};
use common::oidc::{github_claims, FakeIssuer, SigningKey};
use common::program::hanging_program;
use common::service_process::DeploymentClient;
use common::webhook::{github_push, Delivery, GH_SECRET_APP_ONE, GL_SIGNING_APP_TWO};
use common::*;
use enac_cd::domain::{Job, JobStatus};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const DEADLINE: Duration = Duration::from_secs(20);
/// The receiver's key, and the policy's `whsec_` secret holding it.
const NOTIFY_KEY: &[u8] = b"notify key of the receiver 01234";
const NOTIFY_SECRET: &str = "whsec_bm90aWZ5IGtleSBvZiB0aGUgcmVjZWl2ZXIgMDEyMzQ=";
/// A token a policy gives for GitHub, instead of the App.
const POLICY_GITHUB_TOKEN: &str = "github_pat_of_the_policy_0123";
const SHA: &str = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c";
const GITLAB_SHA: &str = "bcbb5ec396a2c0f828686f14fac9b80b780504f2";

fn policy_env(name: &str) -> Option<String> {
    match name {
        "GH_HOOK_SECRET_APP_ONE" => Some(GH_SECRET_APP_ONE.into()),
        "GL_HOOK_SIGNING_APP_TWO" => Some(GL_SIGNING_APP_TWO.into()),
        "GITLAB_TOKEN_APP_TWO" => Some(GITLAB_TOKEN.into()),
        "NOTIFY_SECRET" => Some(NOTIFY_SECRET.into()),
        "GH_TOKEN_APP_ONE" => Some(POLICY_GITHUB_TOKEN.into()),
        _ => None,
    }
}

/// app-one deploys on a GitHub push; `report` is the rest of its policy.
fn app_one_policy(report: &str) -> String {
    format!(
        r#"deployment_id = "app-one"
[[webhook]]
provider = "github"
secret_env = "GH_HOOK_SECRET_APP_ONE"
events = ["push"]
[webhook.match]
"/repository/id" = 123456
{report}"#
    )
}

fn notify_to(receiver: &MockServer, format: &str) -> String {
    let secret = match format {
        "standard-webhooks" => "secret_env = \"NOTIFY_SECRET\"\n",
        _ => "",
    };
    format!(
        "[[notify]]\nurl = \"{}/{format}\"\nformat = \"{format}\"\n{secret}",
        receiver.uri()
    )
}

/// Replaces the policies of `app` by one file holding `text`.
fn load_policy(app: &TestApp, text: &str) {
    let dir = tempfile::tempdir().expect("a policy dir");
    std::fs::write(dir.path().join("policy.toml"), text).expect("policy written");
    let set = enac_cd::policy::load_dir_with(dir.path(), &policy_env).expect("the policy loads");
    app.state.policies.replace(set);
}

async fn push(app: &TestApp, sha: &str) -> String {
    let delivery = github_push(|body| body["after"] = json!(sha));
    let (status, answer) = delivery.to_github(app).await;
    assert_eq!(status, 202, "{answer}");
    answer["jobs"][0]["job_id"]
        .as_str()
        .expect("a job id")
        .to_owned()
}

/// The job as `GET /api/v1/jobs/{id}` shows it.
async fn api_job(app: &TestApp, job_id: &str) -> Value {
    let (status, job) = app.admin_get(&format!("/api/v1/jobs/{job_id}")).await;
    assert_eq!(status, 200, "{job}");
    job
}

/// Waits until every report of the job is in `state`; returns the reports.
async fn reports_reach(app: &TestApp, job_id: &str, state: &str) -> Vec<Value> {
    eventually(
        &format!("the reports of {job_id} to be {state}"),
        DEADLINE,
        || async {
            let job = api_job(app, job_id).await;
            let reports = job["reports"].as_array().cloned().unwrap_or_default();
            (!reports.is_empty() && reports.iter().all(|report| report["state"] == state))
                .then_some(reports)
        },
    )
    .await
}

/// Retries after 100–200 ms, then 200–400 ms… (a flag takes whole seconds).
fn quick_retries(settings: &mut enac_cd::config::Settings) {
    settings.report_retry = Duration::from_millis(200);
}

async fn wait_final(app: &TestApp, job_id: &str) -> Job {
    eventually(&format!("job {job_id} to end"), DEADLINE, || async {
        let job = app.job(job_id).await;
        job.status.is_final().then_some(job)
    })
    .await
}

/// A status page as an admin session sees it.
async fn status_page(app: &TestApp, path: &str) -> String {
    let login = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client")
        .post(app.url("/ui/login"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .expect("the login is sent");
    let cookie = login.headers()["set-cookie"].to_str().expect("ASCII");
    let cookie = cookie.split(';').next().expect("a cookie").to_owned();
    let page = app
        .http
        .get(app.url(path))
        .header("cookie", cookie)
        .send()
        .await;
    page.expect("the page is asked for")
        .text()
        .await
        .expect("a page")
}

/// A receiver answering `status` to every notification.
async fn receiver(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(status))
        .mount(&server)
        .await;
    server
}

/// A receiver answering `first` to its first `count` notifications, then 200.
async fn receiver_after(count: u64, first: ResponseTemplate) -> MockServer {
    let server = receiver(200).await;
    Mock::given(method("POST"))
        .respond_with(first)
        .up_to_n_times(count)
        .with_priority(1)
        .mount(&server)
        .await;
    server
}

/// The `webhook-id`s of the Standard Webhooks notifications received.
async fn webhook_ids(receiver: &MockServer) -> Vec<String> {
    requests_to(receiver, "/standard-webhooks")
        .await
        .iter()
        .map(|request| {
            verified(request);
            header(request, "webhook-id").unwrap_or_default()
        })
        .collect()
}

/// Checks a Standard Webhooks notification as a receiver would, with the
/// service's own ingress check; returns its JSON.
fn verified(request: &Request) -> Value {
    enac_cd::auth::webhook::verify_standard(
        NOTIFY_KEY,
        header(request, "webhook-id").as_deref(),
        header(request, "webhook-timestamp").as_deref(),
        &request.body,
        header(request, "webhook-signature").as_deref(),
        unix_now(),
    )
    .expect("the notification is signed with the receiver's key");
    body(request)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_push_is_reported_as_a_deployment_and_notified() {
    let github = FakeGithub::start(Duration::ZERO).await;
    let notified = receiver(204).await;
    let flags = github.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let app = TestApp::spawn_embedded(&flags).await;
    app.set_apps(&[("app-one", "ok-github")]).await;
    let report = format!(
        "[report]\ngithub = true\nenvironment = \"production\"\n{}{}events = [\"error\"]\n",
        notify_to(&notified, "standard-webhooks"),
        notify_to(&notified, "slack"),
    );
    load_policy(&app, &app_one_policy(&report));

    let job_id = push(&app, SHA).await;
    assert_eq!(wait_final(&app, &job_id).await.status, JobStatus::Success);
    let reports = reports_reach(&app, &job_id, "delivered").await;
    let targets: Vec<&str> = reports
        .iter()
        .filter_map(|r| r["target"].as_str())
        .collect();
    assert_eq!(targets, ["github", "notify:127.0.0.1", "notify:127.0.0.1"]);
    assert_eq!(reports[0]["attempts"], 2, "{reports:?}");
    assert_eq!(reports[0]["last_error"], Value::Null);
    assert_eq!(
        reports[2]["attempts"], 0,
        "the error-only target had nothing to hear"
    );

    // One deployment of the pushed commit, then its statuses in order.
    let deployments = github
        .requests_to("/repos/epfl-enac/app-one/deployments")
        .await;
    assert_eq!(deployments.len(), 1);
    assert_eq!(bearer(&deployments[0]).as_deref(), Some(INSTALLATION_TOKEN));
    let created = body(&deployments[0]);
    assert_eq!(created["ref"], SHA);
    assert_eq!(created["environment"], "production");
    assert_eq!(created["auto_merge"], false);
    assert_eq!(created["required_contexts"], json!([]));
    let statuses = github.requests_to("/deployments/9001/statuses").await;
    let states: Vec<Value> = statuses.iter().map(|s| body(s)["state"].clone()).collect();
    assert_eq!(states, [json!("in_progress"), json!("success")]);
    let log_url = app.url(&format!("/ui/jobs/{job_id}"));
    assert!(statuses
        .iter()
        .all(|s| body(s)["log_url"] == log_url.as_str()));

    // The signed notifications, one per event, in order.
    let sent = requests_to(&notified, "/standard-webhooks").await;
    let kinds: Vec<Value> = sent.iter().map(|r| verified(r)["type"].clone()).collect();
    assert_eq!(kinds, [json!("job.started"), json!("job.success")]);
    assert_eq!(verified(&sent[1])["data"]["job_id"], job_id.as_str());
    assert_eq!(verified(&sent[1])["data"]["status"], "success");
    assert_eq!(
        header(&sent[0], "webhook-id"),
        Some(format!("{job_id}_started"))
    );
    assert!(requests_to(&notified, "/slack").await.is_empty());
    let page = status_page(&app, &format!("/ui/jobs/{job_id}")).await;
    assert!(page.contains("Reported to github"), "{page}");
    assert!(page.contains("report-delivered"), "{page}");

    // The next job of the repository reuses the installation token.
    let next = push(&app, "1111111111111111111111111111111111111111").await;
    reports_reach(&app, &next, "delivered").await;
    assert_eq!(github.requests_to("/access_tokens").await.len(), 1);
    assert_eq!(github.requests_to("/deployments").await.len(), 2);
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics
            .contains(r#"enac_cd_report_deliveries_total{target="github",result="delivered"} 4"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_oidc_job_is_reported_with_the_policy_token() {
    let key = SigningKey::rsa(1, "gh-key");
    let issuer = FakeIssuer::serving("github", &[&key]).await;
    let github = FakeGithub::start(Duration::ZERO).await;
    let api = format!("--github-api-url={}", github.server.uri());
    let config = issuer.config("enac-cd", &["RS256"]);
    let app = TestApp::start(Backend::Embedded, &[&api], move |settings| {
        settings.issuers = vec![config];
    })
    .await;
    app.set_apps(&[("app-one", "ok-oidc")]).await;
    load_policy(
        &app,
        "deployment_id = \"app-one\"\n[[oidc]]\nissuer = \"github\"\n[oidc.claims]\n\
         repository_id = \"123456\"\n[report]\ngithub_token_env = \"GH_TOKEN_APP_ONE\"\n",
    );
    let claims = github_claims(&issuer.iss(), "enac-cd");
    let token = key.sign(&claims);
    let (status, answer) = app
        .post_with_token("/app-deploy/", Some(&token), &json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let job_id = answer["job_id"].as_str().expect("a job id").to_owned();
    reports_reach(&app, &job_id, "delivered").await;
    let deployments = github.requests_to("/repos/epfl-enac/app/deployments").await;
    assert_eq!(deployments.len(), 1);
    assert_eq!(
        bearer(&deployments[0]).as_deref(),
        Some(POLICY_GITHUB_TOKEN)
    );
    assert_eq!(body(&deployments[0])["ref"], claims["sha"]);
    assert_eq!(
        body(&deployments[0])["environment"],
        "app-one",
        "the deployment id by default"
    );
    assert!(
        github.requests_to("/access_tokens").await.is_empty(),
        "a policy token needs no App"
    );
    assert_eq!(github.requests_to("/statuses").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitlab_pipeline_gets_commit_statuses_and_a_cancel_is_canceled() {
    let gitlab = receiver(201).await;
    let chat = receiver(200).await;
    let api = format!("--gitlab-api-url={}", gitlab.uri());
    let app = TestApp::spawn_embedded(&[&api]).await;
    app.set_apps(&[("app-two", "hang-gitlab")]).await;
    let policy = format!(
        r#"deployment_id = "app-two"
[[webhook]]
provider = "gitlab"
signing_secret_env = "GL_HOOK_SIGNING_APP_TWO"
events = ["Pipeline Hook"]
[webhook.match]
"/project/id" = 42
[report]
gitlab_token_env = "GITLAB_TOKEN_APP_TWO"
{}"#,
        notify_to(&chat, "slack")
    );
    load_policy(&app, &policy);
    let delivery = Delivery::sample("gitlab-pipeline.json", |_| {}).standard_signed();
    let (status, answer) = delivery.to_gitlab(&app).await;
    assert_eq!(status, 202, "{answer}");
    let job_id = answer["jobs"][0]["job_id"]
        .as_str()
        .expect("a job id")
        .to_owned();
    let _program = hanging_program(&app, &job_id, DEADLINE).await;
    let statuses_path = format!("/projects/enac%2Fapp-two/statuses/{GITLAB_SHA}");
    let running = eventually("the running status", DEADLINE, || async {
        requests_to(&gitlab, &statuses_path).await.pop()
    })
    .await;
    assert_eq!(
        header(&running, "private-token").as_deref(),
        Some(GITLAB_TOKEN)
    );
    let sent = body(&running);
    assert_eq!(sent["state"], "running");
    assert_eq!(sent["name"], "enac-cd/app-two");
    assert_eq!(
        sent["target_url"],
        app.url(&format!("/ui/jobs/{job_id}")).as_str()
    );

    let (status, answer) = app
        .admin_post(&format!("/api/v1/jobs/{job_id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(wait_final(&app, &job_id).await.status, JobStatus::Error);
    let states = eventually("the canceled status", DEADLINE, || async {
        let states: Vec<Value> = requests_to(&gitlab, &statuses_path)
            .await
            .iter()
            .map(|request| body(request)["state"].clone())
            .collect();
        (states.len() == 2).then_some(states)
    })
    .await;
    assert_eq!(states, [json!("running"), json!("canceled")]);
    reports_reach(&app, &job_id, "delivered").await;
    let lines: Vec<String> = requests_to(&chat, "/slack")
        .await
        .iter()
        .map(|request| {
            body(request)["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("enac-cd: app-two started (gitlab-webhook enac/app-two@bcbb5ec3"),
        "{lines:?}"
    );
    assert!(lines[1].contains("app-two cancelled"), "{lines:?}");
    assert!(
        lines[1].contains(&format!("/ui/jobs/{job_id}|job {job_id}>")),
        "{lines:?}"
    );
}

/// Two replicas on one Redis; the receiver fails three times first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_each_event_once_in_order_after_retries() {
    let redis = RedisServer::start();
    let notified = receiver_after(3, ResponseTemplate::new(500)).await;
    let first = TestApp::spawn_adjusted(&redis, &[], quick_retries).await;
    let second = TestApp::spawn_adjusted(&redis, &[], quick_retries).await;
    first.set_apps(&[("app-one", "ok-notify")]).await;
    let policy = app_one_policy(&notify_to(&notified, "standard-webhooks"));
    load_policy(&first, &policy);
    load_policy(&second, &policy);

    let job_id = push(&first, SHA).await;
    let reports = reports_reach(&second, &job_id, "delivered").await;
    assert_eq!(reports[0]["attempts"], 5, "{reports:?}");
    assert_eq!(reports[0]["last_error"], Value::Null);
    let ids = webhook_ids(&notified).await;
    let started = format!("{job_id}_started");
    let success = format!("{job_id}_success");
    assert_eq!(
        ids,
        [&started, &started, &started, &started, &success].map(String::clone),
        "three failures, then each event once, in order, by one replica"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forge_that_hangs_does_not_hold_the_job() {
    let github = FakeGithub::start(Duration::from_secs(30)).await;
    let mut flags = github.flags();
    flags.push("--report-timeout=1s".into());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let app = TestApp::spawn_embedded(&flags).await;
    app.set_apps(&[("app-one", "ok-hanging-forge")]).await;
    load_policy(&app, &app_one_policy("[report]\ngithub = true\n"));

    let job_id = push(&app, SHA).await;
    let job = wait_final(&app, &job_id).await;
    assert_eq!(job.status, JobStatus::Success);
    let took = job.finished_at.unwrap_or_default() - job.created_at;
    assert!(took < 10_000, "the job took {took} ms");
    let reports = reports_reach(&app, &job_id, "retrying").await;
    let error = reports[0]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("timed out"), "{reports:?}");
    assert!(!error.contains("127.0.0.1"), "no URL in errors: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_pending_at_a_stop_are_made_after_the_restart() {
    let redis = RedisServer::start();
    let notified = receiver(503).await;
    let policy = app_one_policy(&notify_to(&notified, "standard-webhooks"));
    let before = TestApp::spawn_adjusted(&redis, &[], quick_retries).await;
    before.set_apps(&[("app-one", "ok-restart")]).await;
    load_policy(&before, &policy);
    let job_id = push(&before, SHA).await;
    assert_eq!(
        wait_final(&before, &job_id).await.status,
        JobStatus::Success
    );
    reports_reach(&before, &job_id, "retrying").await;
    drop(before);

    notified.reset().await;
    Mock::given(method("POST"))
        .and(path("/standard-webhooks"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&notified)
        .await;
    let after = TestApp::spawn_adjusted(&redis, &[], quick_retries).await;
    load_policy(&after, &policy);
    reports_reach(&after, &job_id, "delivered").await;
    // The stopped instance may have tried once more while it stopped.
    let kinds: Vec<String> = requests_to(&notified, "/standard-webhooks")
        .await
        .iter()
        .map(|request| {
            verified(request)["type"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let last_started = kinds.iter().rposition(|kind| kind == "job.started");
    let first_success = kinds.iter().position(|kind| kind == "job.success");
    assert!(
        matches!((last_started, first_success), (Some(started), Some(success)) if started < success),
        "started, then success: {kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("job.success"),
        "{kinds:?}"
    );
}

/// Replica A is killed (-9) while a receiver holds its delivery; replica B
/// takes the job's reports over once A's claim lapses (60 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reports_of_a_replica_killed_mid_delivery_are_taken_over() {
    let redis = RedisServer::start();
    let held = ResponseTemplate::new(200).set_delay(Duration::from_secs(600));
    let notified = receiver_after(1, held).await;
    let policies = tempfile::tempdir().expect("a policy dir");
    let policy = app_one_policy(&notify_to(&notified, "standard-webhooks"));
    std::fs::write(policies.path().join("app-one.toml"), &policy).expect("policy written");
    let data = tempfile::tempdir().expect("a data dir");
    let addr = free_addr();
    let mut env = serve_env_at(&Backend::Redis(&redis), data.path(), addr);
    env.retain(|(name, _)| *name != "CD_POLICY_DIR");
    env.extend([
        ("CD_POLICY_DIR", policies.path().display().to_string()),
        ("CD_REPORT_TIMEOUT", "1h".to_owned()),
        ("GH_HOOK_SECRET_APP_ONE", GH_SECRET_APP_ONE.to_owned()),
        ("NOTIFY_SECRET", NOTIFY_SECRET.to_owned()),
    ]);
    let mut replica_a = ServiceProcess::start(&env, addr);
    let client = DeploymentClient {
        addr,
        id: "app-one",
    };
    client.register("ok-replica-loss").await;
    let job_id = job_id_of(&client.deploy().await);
    client.wait_status(&job_id, &["success"], DEADLINE).await;
    eventually("A's delivery to hang at the receiver", DEADLINE, || async {
        (!requests_to(&notified, "/standard-webhooks")
            .await
            .is_empty())
        .then_some(())
    })
    .await;
    replica_a.kill_hard();

    let replica_b = TestApp::spawn(&redis, &[]).await;
    load_policy(&replica_b, &policy);
    let reports = eventually(
        "B to deliver once A's claim lapses",
        Duration::from_secs(120),
        || async {
            let job = api_job(&replica_b, &job_id).await;
            let reports = job["reports"].as_array().cloned().unwrap_or_default();
            (reports
                .first()
                .is_some_and(|report| report["state"] == "delivered"))
            .then_some(reports)
        },
    )
    .await;
    assert_eq!(
        reports[0]["attempts"], 2,
        "B sent started and success: {reports:?}"
    );
    let ids = webhook_ids(&notified).await;
    let (started, success) = (format!("{job_id}_started"), format!("{job_id}_success"));
    assert_eq!(
        ids,
        [&started, &started, &success].map(String::clone),
        "A's attempt that never ended, then B's, in order"
    );
}
