//! Signed GitHub and GitLab deliveries over real HTTP against the example
//! policies of `policies/`: what is accepted, ignored, refused or
//! deduplicated, and whether a job started.

mod common;

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use common::webhook::{
    example_policy_secret, fresh_id, github_push as push, Delivery, GH_SECRET_APP_ONE,
    GH_SECRET_APP_THREE, GL_TOKEN_APP_THREE,
};
use common::*;
use enac_cd::domain::{Job, JobStatus, TriggerKind};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(20);

/// The service on the embedded store with `apps` and the example policies.
async fn spawn(apps: &[(&str, &str)]) -> TestApp {
    // The start-up load would read `./policies` with the process's
    // environment, which holds none of their secrets: start with no policy.
    let empty = tempfile::tempdir().expect("an empty policy dir");
    let policy_dir = format!("--policy-dir={}", empty.path().display());
    let app = TestApp::spawn_embedded(&[&policy_dir]).await;
    app.set_apps(apps).await;
    app.state.policies.replace(
        enac_cd::policy::load_dir_with(
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/policies")),
            &example_policy_secret,
        )
        .expect("the example policies load with their secrets"),
    );
    app
}

/// The GitLab pipeline of `webhooks/gitlab-pipeline.json` with `edit`,
/// signed now with app-two's key.
fn pipeline(edit: impl FnOnce(&mut Value)) -> Delivery {
    Delivery::sample("gitlab-pipeline.json", edit).standard_signed()
}

/// Polls the store until the job is final.
async fn wait_final(app: &TestApp, job_id: &str) -> Job {
    eventually(&format!("job {job_id} to end"), DEADLINE, || async {
        let job = app.job(job_id).await;
        matches!(job.status, JobStatus::Success | JobStatus::Error).then_some(job)
    })
    .await
}

/// The one job of a 202, checked to be `status` for `deployment_id`.
fn accepted_job(status: u16, body: &Value, deployment_id: &str, job_status: &str) -> String {
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "accepted", "{body}");
    let jobs = body["jobs"].as_array().expect("a list of jobs");
    assert_eq!(jobs.len(), 1, "{body}");
    let job_id = jobs[0]["job_id"].as_str().expect("a job id").to_owned();
    assert_eq!(
        jobs[0],
        json!({"deployment_id": deployment_id, "job_id": job_id, "status": job_status})
    );
    job_id
}

fn assert_refused(status: u16, body: &Value, code: u16, error: &str) {
    assert_eq!(status, code, "{body}");
    assert_eq!(body, &json!({"status": "error", "error": error}));
}

fn assert_ignored(status: u16, body: &Value, reason_names: &str) {
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ignored", "{body}");
    let reason = body["reason"].as_str().expect("a reason");
    assert!(
        reason.contains(reason_names),
        "the reason `{reason}` should name {reason_names}"
    );
    assert_eq!(
        body.as_object().map(|object| object.len()),
        Some(2),
        "{body}"
    );
}

const APPS: &[(&str, &str)] = &[
    ("app-one", "ok-app-one"),
    ("app-two", "ok-app-two"),
    ("app-three", "ok-app-three"),
];

// ---- GitHub ----

#[tokio::test]
async fn a_github_push_to_main_starts_app_one_and_the_job_succeeds_with_its_trigger() {
    let app = spawn(APPS).await;
    let delivery = push(|_| {});
    let (status, body) = delivery.to_github(&app).await;
    let job_id = accepted_job(status, &body, "app-one", "starting");
    let done = wait_final(&app, &job_id).await;
    assert_eq!(done.status, JobStatus::Success, "{}", done.output);
    assert_eq!(done.deployment_id, "app-one");
    assert_eq!(done.inventory, "ok-app-one");
    let trigger = done.trigger;
    assert_eq!(trigger.kind, TriggerKind::GithubWebhook);
    assert_eq!(trigger.repository.as_deref(), Some("epfl-enac/app-one"));
    assert_eq!(trigger.git_ref.as_deref(), Some("refs/heads/main"));
    assert_eq!(
        trigger.sha.as_deref(),
        Some("0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c")
    );
    assert_eq!(trigger.actor.as_deref(), Some("janedoe"));
    assert_eq!(trigger.event.as_deref(), Some("push"));
    assert_eq!(
        trigger.delivery_id.as_deref(),
        delivery.header("X-GitHub-Delivery")
    );
    assert_eq!(app.jobs_started().await, 1);
}

#[tokio::test]
async fn a_github_ping_answers_pong_and_starts_nothing() {
    let app = spawn(APPS).await;
    let (status, body) = Delivery::sample("github-ping.json", |_| {})
        .github_signed(GH_SECRET_APP_ONE)
        .to_github(&app)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "pong"}));
    assert_eq!(app.jobs_started().await, 0);
}

#[tokio::test]
async fn a_push_without_signature_is_refused_401_and_starts_nothing() {
    let app = spawn(APPS).await;
    let (status, body) = push(|_| {})
        .without("X-Hub-Signature-256")
        .to_github(&app)
        .await;
    assert_refused(status, &body, 401, "missing signature");
    assert_eq!(app.jobs_started().await, 0);
}

#[tokio::test]
async fn a_push_with_a_wrong_signature_is_refused_401_and_starts_nothing() {
    let app = spawn(APPS).await;
    let (status, body) = push(|_| {})
        .github_signed("not-the-secret-of-app-one")
        .to_github(&app)
        .await;
    assert_refused(status, &body, 401, "signature does not match");
    assert_eq!(app.jobs_started().await, 0);
}

/// A valid HMAC-SHA1 of `body` (the crate has no SHA-1; `openssl` does).
fn hmac_sha1_hex(secret: &str, body: &[u8]) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha1", "-hmac", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl computes the HMAC-SHA1 (apt-get install openssl)");
    child
        .stdin
        .take()
        .expect("openssl's stdin")
        .write_all(body)
        .expect("the body reaches openssl");
    let output = child.wait_with_output().expect("openssl ends");
    assert!(output.status.success(), "openssl failed");
    let text = String::from_utf8(output.stdout).expect("openssl prints text");
    text.split_whitespace()
        .last()
        .expect("openssl prints a digest")
        .to_owned()
}

#[tokio::test]
async fn a_valid_sha1_signature_alone_is_refused_401_and_starts_nothing() {
    let app = spawn(APPS).await;
    let delivery = push(|_| {}).without("X-Hub-Signature-256");
    let sha1 = format!("sha1={}", hmac_sha1_hex(GH_SECRET_APP_ONE, &delivery.body));
    // GitHub's legacy header only.
    let (status, body) = delivery
        .clone()
        .set("X-Hub-Signature", &sha1)
        .to_github(&app)
        .await;
    assert_refused(status, &body, 401, "missing signature");
    // A SHA-1 digest in the SHA-256 header.
    let (status, body) = delivery
        .github_fresh()
        .set("X-Hub-Signature-256", &sha1)
        .to_github(&app)
        .await;
    assert_refused(status, &body, 401, "malformed signature");
    assert_eq!(app.jobs_started().await, 0);
}

#[tokio::test]
async fn the_signature_of_another_body_is_refused_401_and_starts_nothing() {
    let app = spawn(APPS).await;
    let signed = push(|_| {});
    let other = Delivery::sample("github-push.json", |body| {
        body["after"] = json!("1111111111111111111111111111111111111111");
    });
    let (status, body) = Delivery::raw(signed.headers, other.body)
        .to_github(&app)
        .await;
    assert_refused(status, &body, 401, "signature does not match");
    assert_eq!(app.jobs_started().await, 0);
}

#[tokio::test]
async fn app_one_s_repository_signed_with_app_three_s_secret_is_refused_401_and_starts_nothing() {
    let app = spawn(APPS).await;
    let (status, body) = Delivery::sample("github-push.json", |_| {})
        .github_fresh()
        .github_signed(GH_SECRET_APP_THREE)
        .to_github(&app)
        .await;
    assert_refused(status, &body, 401, "signature does not match");
    assert_eq!(app.jobs_started().await, 0);
}

#[tokio::test]
async fn an_unknown_repository_id_is_refused_401_and_starts_nothing() {
    let app = spawn(APPS).await;
    let (status, body) = push(|body| body["repository"]["id"] = json!(999_999))
        .to_github(&app)
        .await;
    assert_refused(status, &body, 401, "signature does not match");
    assert_eq!(app.jobs_started().await, 0);
}

#[tokio::test]
async fn an_ignored_delivery_is_not_remembered_so_its_redelivery_is_judged_again() {
    let app = spawn(APPS).await;
    let delivery = push(|body| body["ref"] = json!("refs/heads/dev"));
    for _ in 0..2 {
        let (status, body) = delivery.to_github(&app).await;
        assert_ignored(status, &body, "`/ref` has another value");
    }
    assert_eq!(app.jobs_started().await, 0);
}

#[tokio::test]
async fn a_verified_push_to_another_branch_is_ignored_naming_the_ref() {
    let app = spawn(APPS).await;
    let (status, body) = push(|body| body["ref"] = json!("refs/heads/dev"))
        .to_github(&app)
        .await;
    assert_ignored(status, &body, "`/ref` has another value");
    assert_eq!(app.jobs_started().await, 0);
}

#[tokio::test]
async fn a_push_deleting_the_branch_is_ignored() {
    let app = spawn(APPS).await;
    let (status, body) = push(|body| {
        body["deleted"] = json!(true);
        body["after"] = json!("0000000000000000000000000000000000000000");
    })
    .to_github(&app)
    .await;
    assert_ignored(status, &body, "deleted branch");
    assert_eq!(app.jobs_started().await, 0);
}

#[tokio::test]
async fn an_event_outside_the_rules_allow_list_is_ignored() {
    let app = spawn(APPS).await;
    let (status, body) = Delivery::sample("github-push.json", |body| {
        *body = json!({
            "action": "opened",
            "issue": {"number": 7, "title": "Deploy me"},
            "repository": {"id": 123456, "full_name": "epfl-enac/app-one"},
            "sender": {"login": "janedoe"}
        });
    })
    .set("X-GitHub-Event", "issues")
    .github_fresh()
    .github_signed(GH_SECRET_APP_ONE)
    .to_github(&app)
    .await;
    assert_ignored(status, &body, "`events` does not list this event");
    assert_eq!(app.jobs_started().await, 0);
}

#[tokio::test]
async fn a_successful_workflow_run_of_the_same_repository_starts_app_one() {
    let app = spawn(APPS).await;
    let (status, body) = Delivery::sample("github-workflow_run.json", |_| {})
        .github_fresh()
        .github_signed(GH_SECRET_APP_ONE)
        .to_github(&app)
        .await;
    let job_id = accepted_job(status, &body, "app-one", "starting");
    let done = wait_final(&app, &job_id).await;
    assert_eq!(done.status, JobStatus::Success, "{}", done.output);
    assert_eq!(done.trigger.event.as_deref(), Some("workflow_run"));
    assert_eq!(done.trigger.git_ref.as_deref(), Some("main"));
    assert_eq!(
        done.trigger.sha.as_deref(),
        Some("0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c")
    );
    assert_eq!(app.jobs_started().await, 1);
}

#[tokio::test]
async fn a_failed_workflow_run_is_ignored() {
    let app = spawn(APPS).await;
    let (status, body) = Delivery::sample("github-workflow_run.json", |body| {
        body["workflow_run"]["conclusion"] = json!("failure");
    })
    .github_fresh()
    .github_signed(GH_SECRET_APP_ONE)
    .to_github(&app)
    .await;
    assert_ignored(status, &body, "conclusion is `failure`");
    assert_eq!(app.jobs_started().await, 0);
}

#[tokio::test]
async fn a_workflow_run_from_a_fork_is_ignored() {
    let app = spawn(APPS).await;
    let (status, body) = Delivery::sample("github-workflow_run.json", |body| {
        body["workflow_run"]["head_repository"] =
            json!({"id": 990_001, "name": "app-one", "full_name": "mallory/app-one"});
    })
    .github_fresh()
    .github_signed(GH_SECRET_APP_ONE)
    .to_github(&app)
    .await;
    assert_ignored(status, &body, "fork");
    assert_eq!(app.jobs_started().await, 0);
}

#[tokio::test]
async fn a_replayed_github_delivery_id_is_a_duplicate_and_starts_no_second_job() {
    let app = spawn(APPS).await;
    let delivery = push(|_| {});
    let (status, body) = delivery.to_github(&app).await;
    accepted_job(status, &body, "app-one", "starting");
    let (status, body) = delivery.to_github(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "duplicate"}));
    // The same id with another (signed) body is the same delivery.
    let (status, body) =
        push(|body| body["after"] = json!("2222222222222222222222222222222222222222"))
            .set(
                "X-GitHub-Delivery",
                delivery.header("X-GitHub-Delivery").expect("a delivery id"),
            )
            .to_github(&app)
            .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "duplicate"}));
    assert_eq!(app.jobs_started().await, 1);
}

#[tokio::test]
async fn a_delivery_id_is_deduplicated_per_repository_not_across_tenants() {
    let app = spawn(&[("tenant-a", "ok-tenant-a"), ("tenant-b", "ok-tenant-b")]).await;
    let dir = tempfile::tempdir().expect("a policy dir");
    for (tenant, repository) in [("tenant-a", 111), ("tenant-b", 222)] {
        std::fs::write(
            dir.path().join(format!("{tenant}.toml")),
            format!(
                "deployment_id = \"{tenant}\"\n[[webhook]]\nprovider = \"github\"\n\
                 secret_env = \"SECRET_{repository}\"\nevents = [\"push\"]\n\
                 [webhook.match]\n\"/repository/id\" = {repository}\n"
            ),
        )
        .expect("policy written");
    }
    let secret = |name: &str| Some(format!("{name}-0123456789abcdef"));
    app.state
        .policies
        .replace(enac_cd::policy::load_dir_with(dir.path(), &secret).expect("the policies load"));
    let push_to = |repository: u64, delivery_id: &str| {
        Delivery::sample("github-push.json", |body| {
            body["repository"]["id"] = json!(repository);
            body["after"] = json!(format!("{repository:040}"));
        })
        .set("X-GitHub-Delivery", delivery_id)
        .github_signed(&format!("SECRET_{repository}-0123456789abcdef"))
    };

    let (status, body) = push_to(111, "shared-delivery-id").to_github(&app).await;
    accepted_job(status, &body, "tenant-a", "starting");
    // Tenant B's delivery under the same id (learnt, or by chance) deploys.
    let (status, body) = push_to(222, "shared-delivery-id").to_github(&app).await;
    accepted_job(status, &body, "tenant-b", "starting");
    // Within one repository the id still deduplicates.
    let (status, body) = push_to(111, "shared-delivery-id").to_github(&app).await;
    assert_eq!((status, body), (200, json!({"status": "duplicate"})));
    assert_eq!(app.jobs_started().await, 2);
}

#[tokio::test]
async fn the_same_body_under_a_new_delivery_id_is_a_duplicate() {
    let app = spawn(APPS).await;
    let delivery = push(|_| {});
    let (status, body) = delivery.to_github(&app).await;
    accepted_job(status, &body, "app-one", "starting");
    // The signature covers the body only, so it still holds.
    let (status, body) = delivery.github_fresh().to_github(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "duplicate"}));
    assert_eq!(app.jobs_started().await, 1);
}

#[tokio::test]
async fn a_body_over_5_mib_is_refused_413_and_starts_nothing() {
    let app = spawn(APPS).await;
    let padding = "x".repeat(enac_cd::ingress::webhook::BODY_LIMIT);
    let (status, body) = push(|body| body["padding"] = json!(padding))
        .to_github(&app)
        .await;
    assert_refused(status, &body, 413, "request body is too large");
    assert_eq!(app.jobs_started().await, 0);
}

#[tokio::test]
async fn a_signed_body_that_is_not_json_is_refused_400_and_starts_nothing() {
    let app = spawn(APPS).await;
    let headers = Delivery::sample("github-push.json", |_| {}).headers;
    let (status, body) = Delivery::raw(
        headers,
        br#"{"repository": {"id": 123456}, "ref": "refs/heads/main", "#.to_vec(),
    )
    .github_fresh()
    .github_signed(GH_SECRET_APP_ONE)
    .to_github(&app)
    .await;
    assert_refused(
        status,
        &body,
        400,
        "body is not a JSON object with the repository id",
    );
    assert_eq!(app.jobs_started().await, 0);
}

// ---- GitLab ----

/// Every GitLab delivery has its own `Idempotency-Key` and event UUID.
fn gitlab_fresh(delivery: Delivery) -> Delivery {
    let id = fresh_id();
    delivery
        .set("Idempotency-Key", &id)
        .set("X-Gitlab-Event-UUID", &id)
}

/// The GitLab push of `webhooks/gitlab-push.json` with `edit`, new
/// delivery ids and app-three's `X-Gitlab-Token`.
fn gitlab_push(edit: impl FnOnce(&mut Value)) -> Delivery {
    gitlab_fresh(Delivery::sample("gitlab-push.json", edit))
        .set("X-Gitlab-Token", GL_TOKEN_APP_THREE)
}

#[tokio::test]
async fn a_signed_gitlab_pipeline_starts_app_two_and_the_job_succeeds() {
    let app = spawn(APPS).await;
    let delivery = gitlab_fresh(pipeline(|_| {}));
    let (status, body) = delivery.to_gitlab(&app).await;
    let job_id = accepted_job(status, &body, "app-two", "starting");
    let done = wait_final(&app, &job_id).await;
    assert_eq!(done.status, JobStatus::Success, "{}", done.output);
    assert_eq!(done.inventory, "ok-app-two");
    let trigger = done.trigger;
    assert_eq!(trigger.kind, TriggerKind::GitlabWebhook);
    assert_eq!(trigger.repository.as_deref(), Some("enac/app-two"));
    assert_eq!(trigger.git_ref.as_deref(), Some("main"));
    assert_eq!(
        trigger.sha.as_deref(),
        Some("bcbb5ec396a2c0f828686f14fac9b80b780504f2")
    );
    assert_eq!(trigger.actor.as_deref(), Some("root"));
    assert_eq!(trigger.event.as_deref(), Some("Pipeline Hook"));
    assert_eq!(
        trigger.delivery_id.as_deref(),
        delivery.header("webhook-id")
    );
    assert_eq!(app.jobs_started().await, 1);
}

#[tokio::test]
async fn one_valid_signature_among_several_is_enough() {
    let app = spawn(APPS).await;
    let delivery = gitlab_fresh(pipeline(|_| {}));
    let valid = delivery
        .header("webhook-signature")
        .expect("signed")
        .to_owned();
    let wrong = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    );
    let (status, body) = delivery
        .set(
            "webhook-signature",
            &format!("{wrong} v2,bm90LWEtdjE= {valid}"),
        )
        .to_gitlab(&app)
        .await;
    accepted_job(status, &body, "app-two", "starting");
    assert_eq!(app.jobs_started().await, 1);
}

#[tokio::test]
async fn a_signature_six_minutes_old_is_refused_401_and_starts_nothing() {
    let app = spawn(APPS).await;
    let (status, body) = gitlab_fresh(
        Delivery::sample("gitlab-pipeline.json", |_| {}).standard_signed_at(unix_now() - 6 * 60),
    )
    .to_gitlab(&app)
    .await;
    assert_refused(status, &body, 401, "timestamp outside the 5-minute window");
    assert_eq!(app.jobs_started().await, 0);
}

#[tokio::test]
async fn a_token_alone_is_refused_401_when_a_signing_secret_is_configured() {
    let app = spawn(APPS).await;
    let (status, body) = gitlab_fresh(Delivery::sample("gitlab-pipeline.json", |_| {}))
        .set("X-Gitlab-Token", GL_TOKEN_APP_THREE)
        .to_gitlab(&app)
        .await;
    assert_refused(status, &body, 401, "missing signature");
    assert_eq!(app.jobs_started().await, 0);
}

#[tokio::test]
async fn a_running_pipeline_is_ignored() {
    let app = spawn(APPS).await;
    let (status, body) = gitlab_fresh(pipeline(|body| {
        body["object_attributes"]["status"] = json!("running");
    }))
    .to_gitlab(&app)
    .await;
    assert_ignored(status, &body, "pipeline status is `running`");
    assert_eq!(app.jobs_started().await, 0);
}

#[tokio::test]
async fn the_same_pipeline_and_status_under_new_ids_is_a_duplicate() {
    let app = spawn(APPS).await;
    let (status, body) = gitlab_fresh(pipeline(|_| {})).to_gitlab(&app).await;
    accepted_job(status, &body, "app-two", "starting");
    // GitLab re-sends a pipeline's hook with new ids and a slightly other body.
    let (status, body) = gitlab_fresh(pipeline(|body| {
        body["object_attributes"]["finished_at"] = json!("2026-11-20 10:21:41 UTC");
    }))
    .to_gitlab(&app)
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "duplicate"}));
    assert_eq!(app.jobs_started().await, 1);
}

#[tokio::test]
async fn a_gitlab_push_with_the_right_token_starts_app_three() {
    let app = spawn(APPS).await;
    let delivery = gitlab_push(|_| {});
    let (status, body) = delivery.to_gitlab(&app).await;
    let job_id = accepted_job(status, &body, "app-three", "starting");
    let done = wait_final(&app, &job_id).await;
    assert_eq!(done.status, JobStatus::Success, "{}", done.output);
    let trigger = done.trigger;
    assert_eq!(trigger.kind, TriggerKind::GitlabWebhook);
    assert_eq!(trigger.repository.as_deref(), Some("enac/app-three"));
    assert_eq!(trigger.git_ref.as_deref(), Some("refs/heads/production"));
    assert_eq!(
        trigger.sha.as_deref(),
        Some("da1560886d4f094c3e6c9ef40349f7d38b5d27d7")
    );
    assert_eq!(trigger.actor.as_deref(), Some("jsmith"));
    assert_eq!(
        trigger.delivery_id.as_deref(),
        delivery.header("Idempotency-Key")
    );
    assert_eq!(app.jobs_started().await, 1);
}

#[tokio::test]
async fn a_gitlab_push_with_a_wrong_token_is_refused_401_and_starts_nothing() {
    let app = spawn(APPS).await;
    let (status, body) = gitlab_push(|_| {})
        .set("X-Gitlab-Token", "gl-hook-token-of-app-three-0124")
        .to_gitlab(&app)
        .await;
    assert_refused(status, &body, 401, "signature does not match");
    let (status, body) = gitlab_push(|_| {})
        .without("X-Gitlab-Token")
        .to_gitlab(&app)
        .await;
    assert_refused(status, &body, 401, "missing signature");
    assert_eq!(app.jobs_started().await, 0);
}

#[tokio::test]
async fn a_replayed_idempotency_key_is_a_duplicate() {
    let app = spawn(APPS).await;
    let delivery = gitlab_push(|_| {});
    let (status, body) = delivery.to_gitlab(&app).await;
    accepted_job(status, &body, "app-three", "starting");
    // Same key, another body: the key alone makes it the same delivery.
    let key = delivery.header("Idempotency-Key").expect("a key");
    let (status, body) = gitlab_push(|body| body["user_name"] = json!("John Q. Smith"))
        .set("Idempotency-Key", key)
        .to_gitlab(&app)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "duplicate"}));
    assert_eq!(app.jobs_started().await, 1);
}

// ---- on_busy, metrics ----

#[tokio::test]
async fn app_two_rejects_a_second_pipeline_while_its_job_runs() {
    let app = spawn(&[("app-two", "sleep-3-app-two")]).await;
    let (status, body) = gitlab_fresh(pipeline(|_| {})).to_gitlab(&app).await;
    let first = accepted_job(status, &body, "app-two", "starting");
    let (status, body) = gitlab_fresh(pipeline(|body| {
        body["object_attributes"]["id"] = json!(32);
        body["object_attributes"]["sha"] = json!("3333333333333333333333333333333333333333");
    }))
    .to_gitlab(&app)
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body,
        json!({"status": "accepted", "jobs": [{
            "deployment_id": "app-two",
            "status": "error",
            "error": "App deployment is already running"
        }]})
    );
    assert!(
        !matches!(
            app.job(&first).await.status,
            JobStatus::Success | JobStatus::Error
        ),
        "the first job was still running when the second came"
    );
    assert_eq!(app.jobs_started().await, 1);
    assert_eq!(wait_final(&app, &first).await.status, JobStatus::Success);
}

#[tokio::test]
async fn a_pipeline_refused_as_busy_deploys_when_redelivered_once_the_inventory_is_free() {
    let app = spawn(&[("app-two", "sleep-2-app-two")]).await;
    let (status, body) = gitlab_fresh(pipeline(|_| {})).to_gitlab(&app).await;
    let first = accepted_job(status, &body, "app-two", "starting");
    let second = gitlab_fresh(pipeline(|body| {
        body["object_attributes"]["id"] = json!(33);
        body["object_attributes"]["sha"] = json!("4444444444444444444444444444444444444444");
    }));
    let (status, body) = second.to_gitlab(&app).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["jobs"][0]["error"],
        "App deployment is already running"
    );
    assert_eq!(wait_final(&app, &first).await.status, JobStatus::Success);

    // The refused delivery started nothing, so it was not remembered.
    let (status, body) = second.to_gitlab(&app).await;
    let redelivered = accepted_job(status, &body, "app-two", "starting");
    assert_eq!(app.jobs_started().await, 2);
    // Now that it deployed, the same delivery is a duplicate.
    let (status, body) = second.to_gitlab(&app).await;
    assert_eq!((status, body), (200, json!({"status": "duplicate"})));
    assert_eq!(
        wait_final(&app, &redelivered).await.status,
        JobStatus::Success
    );
}

#[tokio::test]
async fn app_one_queues_a_second_push_while_its_job_runs() {
    let app = spawn(&[("app-one", "sleep-2-app-one")]).await;
    let (status, body) = push(|_| {}).to_github(&app).await;
    let first = accepted_job(status, &body, "app-one", "starting");
    let (status, body) =
        push(|body| body["after"] = json!("4444444444444444444444444444444444444444"))
            .to_github(&app)
            .await;
    let second = accepted_job(status, &body, "app-one", "queued");
    assert_ne!(first, second);
    let first = wait_final(&app, &first).await;
    let second = wait_final(&app, &second).await;
    assert_eq!(first.status, JobStatus::Success, "{}", first.output);
    assert_eq!(second.status, JobStatus::Success, "{}", second.output);
    assert!(
        second.started_at >= first.finished_at,
        "the queued job started after the first ended"
    );
    assert_eq!(
        second.trigger.sha.as_deref(),
        Some("4444444444444444444444444444444444444444")
    );
    assert_eq!(app.jobs_started().await, 2);
}

#[tokio::test]
async fn metrics_count_deliveries_by_provider_and_result() {
    let app = spawn(APPS).await;
    let accepted = push(|_| {});
    assert_eq!(accepted.to_github(&app).await.0, 202);
    assert_eq!(accepted.to_github(&app).await.0, 200);
    let ignored = push(|body| body["ref"] = json!("refs/heads/dev"));
    assert_eq!(ignored.to_github(&app).await.0, 200);
    let unsigned = push(|_| {}).without("X-Hub-Signature-256");
    assert_eq!(unsigned.to_github(&app).await.0, 401);
    assert_eq!(gitlab_fresh(pipeline(|_| {})).to_gitlab(&app).await.0, 202);
    let stale = Delivery::sample("gitlab-pipeline.json", |_| {}).standard_signed_at(0);
    assert_eq!(gitlab_fresh(stale).to_gitlab(&app).await.0, 401);

    let response = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics answer");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("metrics text");
    for (provider, result) in [
        ("github", "accepted"),
        ("github", "duplicate"),
        ("github", "ignored"),
        ("github", "unauthorized"),
        ("gitlab", "accepted"),
        ("gitlab", "unauthorized"),
    ] {
        let sample = format!(
            "enac_cd_webhook_deliveries_total{{provider=\"{provider}\",result=\"{result}\"}} 1\n"
        );
        assert!(
            text.contains(&sample),
            "missing `{}` in:\n{text}",
            sample.trim()
        );
    }
    assert_eq!(app.jobs_started().await, 2);
}
