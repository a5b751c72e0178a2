//! `POST /set-job-status/` (contract §5): the callback token guards one job
//! until it is final; status words, append/replace and the output cap.
//!
//! Jobs here run the fake program on a `hang*` inventory: it reports
//! `running` once, then sleeps, so every later callback is the test's own.

mod common;

use std::time::Duration;

use common::program::{hanging_program, ProgramGuard};
use common::*;
use enac_cd::jobs::{TokenKind, TokenSigner};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(15);
const TOKEN_LIFETIME: Duration = Duration::from_secs(600);
const MARKER: &str = "[enac-cd: older output truncated]";
/// Hang jobs end by timeout if a test leaves one behind.
const HANG_TIMEOUT: &str = "--job-timeout=60s";

/// A job whose program is running and has sent its one `running` callback.
struct HangingJob {
    id: String,
    deployment_id: String,
    status_token: String,
    _program: ProgramGuard,
}

impl HangingJob {
    async fn start(app: &TestApp, deployment_id: &str) -> HangingJob {
        let started = app.deploy(deployment_id).await;
        HangingJob::follow(app, deployment_id, &started).await
    }

    /// Follows the job an `/app-deploy/` answer started.
    async fn follow(app: &TestApp, deployment_id: &str, started: &Value) -> HangingJob {
        assert_eq!(started["status"], "starting", "{started}");
        let id = job_id_of(started);
        let status_token = started["status_token"]
            .as_str()
            .expect("status token")
            .to_owned();
        let program = hanging_program(app, &id, DEADLINE).await;
        HangingJob {
            id,
            deployment_id: deployment_id.to_owned(),
            status_token,
            _program: program,
        }
    }

    /// The token the service gives this job's program.
    fn callback_token(&self, app: &TestApp) -> String {
        app.state
            .lifecycle
            .tokens()
            .issue(TokenKind::Callback, &self.id, TOKEN_LIFETIME)
    }

    /// The job as its client sees it through `/job-status/`.
    async fn seen(&self, app: &TestApp) -> Value {
        app.status(&self.deployment_id, &self.id).await
    }
}

async fn callback(app: &TestApp, token: Option<&str>, body: &Value) -> (u16, Value) {
    app.post_with_token("/set-job-status/", token, body).await
}

fn running_job(job: &HangingJob) -> Value {
    json!({"status": "running", "job_id": job.id, "output": "hanging\n"})
}

#[tokio::test]
async fn a_callback_without_token_is_refused_401_and_changes_nothing() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[HANG_TIMEOUT]).await;
    app.set_apps(&[("app-hang", "hang")]).await;
    let job = HangingJob::start(&app, "app-hang").await;

    let report = json!({"job_id": job.id, "status": "success", "output": "forged\n"});
    let (status, body) = callback(&app, None, &report).await;
    assert_eq!(status, 401, "{body}");
    assert_error_body(&body);

    // A header that is not a bearer token is no token either.
    let request = app
        .http
        .post(app.url("/set-job-status/"))
        .header("Authorization", "Basic dXNlcjpwYXNz")
        .json(&report);
    let (status, body) = send(request).await;
    assert_eq!(status, 401, "{body}");
    assert_error_body(&body);

    assert_eq!(job.seen(&app).await, running_job(&job));
}

#[tokio::test]
async fn a_garbage_or_foreign_token_is_refused_401_and_changes_nothing() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[HANG_TIMEOUT]).await;
    app.set_apps(&[("app-hang", "hang")]).await;
    let job = HangingJob::start(&app, "app-hang").await;

    let genuine = job.callback_token(&app);
    let mut tampered = genuine.clone();
    let last = tampered.pop().expect("token not empty");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let other_key = TokenSigner::new(b"not-the-service-key-0123456789abcdef").issue(
        TokenKind::Callback,
        &job.id,
        TOKEN_LIFETIME,
    );
    let report = json!({"job_id": job.id, "status": "error", "output": "forged\n"});
    for token in ["garbage", "a.b.c", tampered.as_str(), other_key.as_str()] {
        let (status, body) = callback(&app, Some(token), &report).await;
        assert_eq!(status, 401, "token {token}: {body}");
        assert_error_body(&body);
    }

    assert_eq!(job.seen(&app).await, running_job(&job));
}

#[tokio::test]
async fn a_status_token_is_not_a_callback_token() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[HANG_TIMEOUT]).await;
    app.set_apps(&[("app-hang", "hang")]).await;
    let job = HangingJob::start(&app, "app-hang").await;

    let report = json!({"job_id": job.id, "status": "success", "output": "forged\n"});
    let (status, body) = callback(&app, Some(&job.status_token), &report).await;
    assert_eq!(status, 401, "{body}");
    assert_error_body(&body);

    assert_eq!(job.seen(&app).await, running_job(&job));
}

#[tokio::test]
async fn a_callback_token_of_another_job_is_refused_403_and_changes_neither_job() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[HANG_TIMEOUT]).await;
    app.set_apps(&[("app-a", "hang-a"), ("app-b", "hang-b")])
        .await;
    let job_a = HangingJob::start(&app, "app-a").await;
    let job_b = HangingJob::start(&app, "app-b").await;

    let token_a = job_a.callback_token(&app);
    for word in ["running", "success", "error"] {
        let report = json!({"job_id": job_b.id, "status": word, "output": "forged\n"});
        let (status, body) = callback(&app, Some(&token_a), &report).await;
        assert_eq!(status, 403, "{word}: {body}");
        assert_error_body(&body);
    }

    assert_eq!(job_a.seen(&app).await, running_job(&job_a));
    assert_eq!(job_b.seen(&app).await, running_job(&job_b));
}

#[tokio::test]
async fn a_final_job_refuses_every_callback_with_409_and_keeps_its_result() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[HANG_TIMEOUT]).await;
    app.set_apps(&[("app-hang", "hang")]).await;
    let job = HangingJob::start(&app, "app-hang").await;
    let token = job.callback_token(&app);

    let (status, body) = callback(
        &app,
        Some(&token),
        &json!({"job_id": job.id, "status": "success", "output": "deployed\n", "append": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "saved"}));
    let done = json!({"status": "success", "job_id": job.id, "output": "hanging\ndeployed\n"});
    assert_eq!(job.seen(&app).await, done);

    for (word, append) in [
        ("error", true),
        ("error", false),
        ("running", true),
        ("success", false),
        ("finished", true),
    ] {
        let report =
            json!({"job_id": job.id, "status": word, "output": "late\n", "append": append});
        let (status, body) = callback(&app, Some(&token), &report).await;
        assert_eq!(status, 409, "{word}: {body}");
        assert_error_body(&body);
    }

    assert_eq!(job.seen(&app).await, done);
}

#[tokio::test]
async fn finished_means_success() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[HANG_TIMEOUT]).await;
    app.set_apps(&[("app-hang", "hang")]).await;
    let job = HangingJob::start(&app, "app-hang").await;

    let (status, body) = callback(
        &app,
        Some(&job.callback_token(&app)),
        &json!({"job_id": job.id, "status": "finished", "output": "all done\n", "append": false}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "saved"}));

    assert_eq!(
        job.seen(&app).await,
        json!({"status": "success", "job_id": job.id, "output": "all done\n"})
    );
    // Final means final: the inventory is free for the next deployment.
    let next = app.deploy("app-hang").await;
    let next = HangingJob::follow(&app, "app-hang", &next).await;
    assert_ne!(next.id, job.id);
}

#[tokio::test]
async fn append_true_appends_and_append_false_replaces() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[HANG_TIMEOUT]).await;
    app.set_apps(&[("app-hang", "hang")]).await;
    let job = HangingJob::start(&app, "app-hang").await;
    let token = job.callback_token(&app);

    let steps = [
        (true, "task 1 ok\n", "hanging\ntask 1 ok\n"),
        (true, "task 2 ok\n", "hanging\ntask 1 ok\ntask 2 ok\n"),
        (false, "recap\n", "recap\n"),
        (true, "more\n", "recap\nmore\n"),
    ];
    for (append, output, expected) in steps {
        let report =
            json!({"job_id": job.id, "status": "running", "output": output, "append": append});
        let (status, body) = callback(&app, Some(&token), &report).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({"status": "saved"}));
        assert_eq!(
            job.seen(&app).await,
            json!({"status": "running", "job_id": job.id, "output": expected}),
            "after append={append} of {output:?}"
        );
    }
}

/// `/set-job-status/` with `Idempotency-Key: key`.
async fn callback_keyed(app: &TestApp, token: &str, key: &str, body: &Value) -> (u16, Value) {
    let response = app
        .http
        .post(app.url("/set-job-status/"))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("the service answers");
    read(response).await
}

#[tokio::test]
async fn a_retried_append_with_the_same_idempotency_key_is_stored_once() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[HANG_TIMEOUT]).await;
    app.set_apps(&[("app-hang", "hang")]).await;
    let job = HangingJob::start(&app, "app-hang").await;
    let token = job.callback_token(&app);
    let append = |output: &str| json!({"job_id": job.id, "status": "running", "output": output, "append": true});

    // The program retries each report whose answer it did not get.
    for (key, output) in [
        ("line-1", "task 1 ok\n"),
        ("line-1", "task 1 ok\n"),
        ("line-2", "task 2 ok\n"),
        ("line-2", "task 2 ok\n"),
    ] {
        let (status, body) = callback_keyed(&app, &token, key, &append(output)).await;
        assert_eq!((status, body), (200, json!({"status": "saved"})));
    }
    assert_eq!(
        job.seen(&app).await["output"],
        "hanging\ntask 1 ok\ntask 2 ok\n",
        "each keyed append is stored once"
    );
    // Without a key, a repeat is another append.
    for _ in 0..2 {
        let (status, _) = callback(&app, Some(&token), &append("again\n")).await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        job.seen(&app).await["output"],
        "hanging\ntask 1 ok\ntask 2 ok\nagain\nagain\n"
    );
    // A malformed key is refused and changes nothing.
    let (status, body) = callback_keyed(&app, &token, "has space", &append("bad\n")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("Idempotency-Key"),
        "{body}"
    );
    assert_eq!(
        job.seen(&app).await["output"],
        "hanging\ntask 1 ok\ntask 2 ok\nagain\nagain\n"
    );
}

#[tokio::test]
async fn output_over_max_output_keeps_the_newest_bytes_behind_a_marker() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[HANG_TIMEOUT, "--max-output=1KiB"]).await;
    app.set_apps(&[("app-hang", "hang")]).await;
    let job = HangingJob::start(&app, "app-hang").await;
    let token = job.callback_token(&app);
    let report = |output: &str, append: bool| json!({"job_id": job.id, "status": "running", "output": output, "append": append});

    // Exactly at the cap: kept whole, no marker.
    let at_cap = "x".repeat(1023) + "\n";
    let (status, body) = callback(&app, Some(&token), &report(&at_cap, false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(job.seen(&app).await["output"], at_cap.as_str());

    // Three times the cap, replaced: the newest bytes stay.
    let sent: String = (0..300).map(|line| format!("line {line:04}\n")).collect();
    let (status, body) = callback(&app, Some(&token), &report(&sent, false)).await;
    assert_eq!(status, 200, "{body}");
    let kept = job.seen(&app).await["output"]
        .as_str()
        .expect("output")
        .to_owned();
    assert!(kept.len() <= 1024, "{} bytes kept", kept.len());
    assert_eq!(kept.matches(MARKER).count(), 1, "{kept}");
    let newest = &kept[kept.find(MARKER).expect("marker") + MARKER.len()..];
    let newest = newest.trim_start_matches('\n');
    assert!(sent.ends_with(newest), "not the newest bytes: {kept}");
    assert!(newest.len() > 512, "too little kept: {kept}");
    assert!(kept.ends_with("line 0298\nline 0299\n"), "{kept}");
    assert!(!kept.contains("line 0000"), "{kept}");

    // Appended past the cap: the new bytes win over the kept ones.
    let appended: String = (0..20).map(|line| format!("tail {line:03}\n")).collect();
    let (status, body) = callback(&app, Some(&token), &report(&appended, true)).await;
    assert_eq!(status, 200, "{body}");
    let now = job.seen(&app).await["output"]
        .as_str()
        .expect("output")
        .to_owned();
    assert!(now.len() <= 1024, "{} bytes kept", now.len());
    assert_eq!(now.matches(MARKER).count(), 1, "{now}");
    assert!(now.ends_with(&appended), "{now}");
    let before_new = now[..now.len() - appended.len()]
        .split_once(MARKER)
        .map(|(_, rest)| rest.trim_start_matches('\n'))
        .expect("marker before the kept bytes");
    assert!(
        kept.ends_with(before_new),
        "older bytes out of order: {now}"
    );
    assert!(!now.contains("line 0201\n"), "{now}");
}

#[tokio::test]
async fn truncation_never_splits_a_character() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[HANG_TIMEOUT, "--max-output=1KiB"]).await;
    app.set_apps(&[("app-hang", "hang")]).await;
    let job = HangingJob::start(&app, "app-hang").await;
    let token = job.callback_token(&app);

    // Two-byte characters with either parity of tail: one of the two cuts
    // falls inside a character, whatever the marker's length.
    for pad in ["", "x"] {
        let sent = "é".repeat(1500) + pad;
        let report =
            json!({"job_id": job.id, "status": "running", "output": sent, "append": false});
        let (status, body) = callback(&app, Some(&token), &report).await;
        assert_eq!(status, 200, "{body}");
        let kept = job.seen(&app).await["output"]
            .as_str()
            .expect("output")
            .to_owned();
        assert!(kept.len() <= 1024, "pad {pad:?}: {} bytes kept", kept.len());
        assert!(kept.contains(MARKER), "pad {pad:?}: {kept}");
        assert!(
            !kept.contains('\u{FFFD}'),
            "pad {pad:?}: a character was cut in half: {kept}"
        );
        let newest =
            kept[kept.find(MARKER).expect("marker") + MARKER.len()..].trim_start_matches('\n');
        assert!(sent.ends_with(newest), "pad {pad:?}: {kept}");
    }
}

#[tokio::test]
async fn an_invalid_status_word_is_refused_422_and_changes_nothing() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[HANG_TIMEOUT]).await;
    app.set_apps(&[("app-hang", "hang")]).await;
    let job = HangingJob::start(&app, "app-hang").await;
    let token = job.callback_token(&app);

    for word in ["done", "queued", "starting", "SUCCESS", "Finished", ""] {
        let report = json!({"job_id": job.id, "status": word, "output": "forged\n"});
        let (status, body) = callback(&app, Some(&token), &report).await;
        assert_eq!(status, 422, "{word:?}: {body}");
        assert_error_body(&body);
    }

    assert_eq!(job.seen(&app).await, running_job(&job));
}
