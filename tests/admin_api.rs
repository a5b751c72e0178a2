//! The legacy and admin API (contract §3) and the operations endpoints
//! (§8): admin auth, the app list and its secrets, refusals that must start
//! nothing, who may read a job, the load, health and metrics.

mod common;

use std::time::Duration;

use base64::Engine;
use common::*;
use enac_cd::jobs::TokenKind;
use redis::AsyncCommands;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(15);
const APP_NOT_FOUND: &str = "App not found";

async fn get(app: &TestApp, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = app.http.get(app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    send(request).await
}

/// A raw POST: the body and content type exactly as given.
async fn post_raw(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut request = app.http.post(app.url(path)).body(body);
    if let Some(content_type) = content_type {
        request = request.header("Content-Type", content_type);
    }
    send(request).await
}

fn app_not_found() -> Value {
    json!({"status": "error", "error": APP_NOT_FOUND})
}

/// `{"deployment_id","inventory"}` pairs as `/get-available-apps/` lists them.
async fn listed_apps(app: &TestApp) -> Value {
    let (status, body) = app.admin_get("/get-available-apps/").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok", "{body}");
    body["inventory"].clone()
}

/// Jobs created in the last day, counted by status.
async fn job_counts(app: &TestApp) -> Value {
    let (status, body) = app.admin_get("/load/?periods=day:86400").await;
    assert_eq!(status, 200, "{body}");
    body["load"]["day"].clone()
}

fn counts(queued: u64, starting: u64, running: u64, success: u64, error: u64) -> Value {
    json!({"queued": queued, "starting": starting, "running": running, "success": success, "error": error})
}

async fn assert_no_job(app: &TestApp) {
    assert_eq!(job_counts(app).await, counts(0, 0, 0, 0, 0));
}

async fn started_job(app: &TestApp, deployment_id: &str) -> String {
    let started = app.deploy(deployment_id).await;
    assert_eq!(started["status"], "starting", "{started}");
    job_id_of(&started)
}

async fn status_by_bearer(app: &TestApp, token: &str, body: &Value) -> (u16, Value) {
    app.post_with_token("/job-status/", Some(token), body).await
}

/// The value of every sample of `name` (any labels) whose labels contain
/// each of `labels`.
fn samples(metrics: &str, name: &str, labels: &[&str]) -> Vec<f64> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
        })
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .map(|line| {
            line.rsplit(' ')
                .next()
                .and_then(|value| value.parse().ok())
                .expect("a sample value")
        })
        .collect()
}

async fn metrics_text(app: &TestApp) -> String {
    let response = app.get("/metrics").await;
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.expect("metrics body")
}

// --- admin authentication -------------------------------------------------

#[tokio::test]
async fn admin_endpoints_answer_403_when_no_admin_token_is_configured() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_without_admin(&redis, &[]).await;
    let apps =
        json!([{"deployment_id": "app-one", "inventory": "ok-one", "deployment_secret": SECRET}]);

    for token in [None, Some(ADMIN_TOKEN), Some("")] {
        let (status, body) = app
            .post_with_token("/set-available-apps/", token, &apps)
            .await;
        assert_eq!(status, 403, "set with {token:?}: {body}");
        assert_error_body(&body);
        for path in [
            "/get-available-apps/",
            "/load/",
            "/load/?periods=1_hour:3600",
        ] {
            let (status, body) = get(&app, path, token).await;
            assert_eq!(status, 403, "{path} with {token:?}: {body}");
            assert_error_body(&body);
        }
    }

    // Nothing was set: the app is unknown to the store and to a deploy.
    assert!(app.state.store.apps().await.expect("store").is_empty());
    let (status, body) = app
        .post(
            "/app-deploy/",
            &json!({"deployment_id": "app-one", "deployment_secret": SECRET}),
        )
        .await;
    assert_eq!((status, body), (200, app_not_found()));
}

#[tokio::test]
async fn admin_endpoints_refuse_a_missing_or_wrong_token_with_401_and_change_nothing() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-one", "ok-one")]).await;
    let before = listed_apps(&app).await;
    let replacement = json!([{"deployment_id": "intruder", "inventory": "ok-evil", "deployment_secret": "intruder-secret-0123"}]);
    let almost = format!("{ADMIN_TOKEN}x");
    let prefix = &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1];

    for token in [
        None,
        Some("wrong-admin-token-0123456789"),
        Some(almost.as_str()),
        Some(prefix),
    ] {
        let (status, body) = app
            .post_with_token("/set-available-apps/", token, &replacement)
            .await;
        assert_eq!(status, 401, "set with {token:?}: {body}");
        assert_error_body(&body);
        for path in ["/get-available-apps/", "/load/"] {
            let (status, body) = get(&app, path, token).await;
            assert_eq!(status, 401, "{path} with {token:?}: {body}");
            assert_error_body(&body);
        }
    }
    // The right token in another scheme is no bearer token.
    let request = app
        .http
        .post(app.url("/set-available-apps/"))
        .header("Authorization", format!("Basic {ADMIN_TOKEN}"))
        .json(&replacement);
    let (status, body) = send(request).await;
    assert_eq!(status, 401, "{body}");
    assert_error_body(&body);

    assert_eq!(listed_apps(&app).await, before);
    let (status, body) = app
        .post(
            "/app-deploy/",
            &json!({"deployment_id": "intruder", "deployment_secret": "intruder-secret-0123"}),
        )
        .await;
    assert_eq!((status, body), (200, app_not_found()));
}

// --- the app list ---------------------------------------------------------

#[tokio::test]
async fn invalid_app_entries_are_refused_422_naming_each_and_nothing_changes() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-one", "ok-one")]).await;
    let before = listed_apps(&app).await;

    let list = json!([
        {"deployment_id": "app-new", "inventory": "ok-new", "deployment_secret": "a-valid-secret-0123"},
        {"inventory": "ok-two", "deployment_secret": "a-valid-secret-0123"},
        {"deployment_id": "", "inventory": "ok-two", "deployment_secret": "a-valid-secret-0123"},
        {"deployment_id": "app-three", "deployment_secret": "a-valid-secret-0123"},
        {"deployment_id": "app-four", "inventory": "", "deployment_secret": "a-valid-secret-0123"},
        {"deployment_id": "app-new", "inventory": "ok-dup", "deployment_secret": "a-valid-secret-0123"},
        {"deployment_id": "app-five", "inventory": "ok-five", "deployment_secret": "fifteen-chars-0"},
        {"deployment_id": "app-six", "inventory": "ok-six", "deployment_secret": "ééééééééééééééé"},
        {"deployment_id": "app-seven", "inventory": "ok-seven", "deployment_secret": "sixteen-chars-01"}
    ]);
    let (status, body) = app.admin_post("/set-available-apps/", &list).await;
    assert_eq!(status, 422, "{body}");
    assert_error_body(&body);
    let errors = body["errors"].as_array().expect("an `errors` list");
    let named: Vec<u64> = errors
        .iter()
        .map(|error| error["index"].as_u64().expect("each error names its index"))
        .collect();
    assert_eq!(named, vec![1, 2, 3, 4, 5, 6, 7], "{body}");
    for error in errors {
        assert!(
            error["error"]
                .as_str()
                .is_some_and(|reason| !reason.is_empty()),
            "no reason: {error}"
        );
    }
    let reason_of = |index: usize| {
        errors[index - 1]["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(reason_of(5).contains("duplicate"), "{body}");
    assert!(reason_of(6).contains("16"), "{body}");

    // Not even the valid entries were kept.
    assert_eq!(listed_apps(&app).await, before);
    let (status, body) = app
        .post(
            "/app-deploy/",
            &json!({"deployment_id": "app-new", "deployment_secret": "a-valid-secret-0123"}),
        )
        .await;
    assert_eq!((status, body), (200, app_not_found()));
    assert_no_job(&app).await;
}

#[tokio::test]
async fn a_valid_app_list_replaces_the_whole_set() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-one", "ok-one"), ("app-two", "ok-two")])
        .await;

    let list = json!([
        {"deployment_id": "app-three", "inventory": "ok-three", "deployment_secret": "sixteen-chars-01"},
        {"deployment_id": "app-four", "inventory": "ok-three", "deployment_secret": SECRET}
    ]);
    let (status, body) = app.admin_post("/set-available-apps/", &list).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "ok", "count": 2}));

    let listed = listed_apps(&app).await;
    let mut ids: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|entry| entry["deployment_id"].as_str().expect("an id"))
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, vec!["app-four", "app-three"], "{listed}");

    // The old apps are gone; the new ones deploy with their own secrets.
    let (status, body) = app
        .post(
            "/app-deploy/",
            &json!({"deployment_id": "app-one", "deployment_secret": SECRET}),
        )
        .await;
    assert_eq!((status, body), (200, app_not_found()));
    let (status, body) = app
        .post(
            "/app-deploy/",
            &json!({"deployment_id": "app-three", "deployment_secret": "sixteen-chars-01"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "starting", "{body}");
    // app-four shares the inventory, and with it the job.
    let job_id = body["job_id"].as_str().expect("job id");
    let done = app.wait_final("app-four", job_id, DEADLINE).await;
    assert_eq!(done["status"], "success", "{done}");

    // An empty list is a valid set too: no apps at all.
    let (status, body) = app.admin_post("/set-available-apps/", &json!([])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "ok", "count": 0}));
    assert_eq!(listed_apps(&app).await, json!([]));
}

#[tokio::test]
async fn an_app_without_secret_cannot_be_deployed_by_secret() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    let list = json!([
        {"deployment_id": "app-null", "inventory": "ok-one", "deployment_secret": null},
        {"deployment_id": "app-omitted", "inventory": "ok-two"}
    ]);
    let (status, body) = app.admin_post("/set-available-apps/", &list).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "ok", "count": 2}));
    assert_eq!(
        listed_apps(&app).await,
        json!([
            {"deployment_id": "app-null", "inventory": "ok-one"},
            {"deployment_id": "app-omitted", "inventory": "ok-two"}
        ])
    );

    for deployment_id in ["app-null", "app-omitted"] {
        for secret in [
            json!(""),
            json!(null),
            json!("null"),
            json!(SECRET),
            json!("\0no secret can match this\0"),
        ] {
            let (status, body) = app
                .post(
                    "/app-deploy/",
                    &json!({"deployment_id": deployment_id, "deployment_secret": secret}),
                )
                .await;
            assert_eq!(
                (status, &body),
                (200, &app_not_found()),
                "{deployment_id} with {secret}"
            );
        }
        let (status, body) = app
            .post("/app-deploy/", &json!({"deployment_id": deployment_id}))
            .await;
        assert_eq!(
            (status, body),
            (200, app_not_found()),
            "{deployment_id} without secret"
        );
    }
    assert_no_job(&app).await;
}

#[tokio::test]
async fn the_app_list_never_shows_a_secret() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    let list = json!([
        {"deployment_id": "app-one", "inventory": "ok-one", "deployment_secret": "listed-secret-one-0123"},
        {"deployment_id": "app-two", "inventory": "ok-one", "deployment_secret": "listed-secret-two-0123"},
        {"deployment_id": "app-three", "inventory": "ok-three"}
    ]);
    let (status, body) = app.admin_post("/set-available-apps/", &list).await;
    assert_eq!(status, 200, "{body}");

    let response = app
        .http
        .get(app.url("/get-available-apps/"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.expect("body");
    assert!(!text.contains("listed-secret"), "{text}");
    assert!(!text.contains("secret"), "a secret field is listed: {text}");
    let body: Value = serde_json::from_str(&text).expect("JSON body");
    assert_eq!(
        body,
        json!({"status": "ok", "inventory": [
            {"deployment_id": "app-one", "inventory": "ok-one"},
            {"deployment_id": "app-three", "inventory": "ok-three"},
            {"deployment_id": "app-two", "inventory": "ok-one"}
        ]})
    );
}

/// Every byte stored in the test Redis: key names and the values of every
/// key, whatever its type.
async fn everything_in_redis(redis: &RedisServer) -> Vec<u8> {
    fn flatten(value: &redis::Value, into: &mut Vec<u8>) {
        match value {
            redis::Value::BulkString(bytes) => into.extend_from_slice(bytes),
            redis::Value::SimpleString(text) => into.extend_from_slice(text.as_bytes()),
            redis::Value::Int(number) => into.extend_from_slice(number.to_string().as_bytes()),
            redis::Value::Array(items) | redis::Value::Set(items) => {
                items.iter().for_each(|item| flatten(item, into))
            }
            redis::Value::Map(pairs) => pairs.iter().for_each(|(key, value)| {
                flatten(key, into);
                flatten(value, into);
            }),
            _ => {}
        }
        into.push(b'\n');
    }
    let mut connection = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let keys: Vec<String> = connection.keys("*").await.expect("KEYS *");
    let mut everything = Vec::new();
    for key in keys {
        everything.extend_from_slice(key.as_bytes());
        everything.push(b'\n');
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .expect("TYPE");
        let read = match kind.as_str() {
            "string" => redis::cmd("GET").arg(&key).clone(),
            "hash" => redis::cmd("HGETALL").arg(&key).clone(),
            "set" => redis::cmd("SMEMBERS").arg(&key).clone(),
            "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).clone(),
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .clone(),
            "stream" => redis::cmd("XRANGE").arg(&key).arg("-").arg("+").clone(),
            "none" => continue, // expired between KEYS and TYPE
            other => panic!("key {key} has a type this scan cannot read: {other}"),
        };
        let value: redis::Value = read.query_async(&mut connection).await.expect("key read");
        flatten(&value, &mut everything);
    }
    everything
}

#[tokio::test]
async fn no_secret_is_readable_anywhere_in_redis() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    let secret_one = "plaintext-secret-of-app-one-7Q2";
    let secret_two = "plaintext-secret-of-app-two-8R3";
    let wrong = "a-wrong-secret-somebody-tried-9S4";
    let list = json!([
        {"deployment_id": "app-one", "inventory": "ok-one", "deployment_secret": secret_one},
        {"deployment_id": "app-two", "inventory": "exit-ok-two", "deployment_secret": secret_two}
    ]);
    let (status, body) = app.admin_post("/set-available-apps/", &list).await;
    assert_eq!(status, 200, "{body}");

    // Secrets also travel in deploy and status requests, right and wrong.
    let (status, body) = app
        .post(
            "/app-deploy/",
            &json!({"deployment_id": "app-one", "deployment_secret": secret_one}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let job_id = job_id_of(&body);
    let (status, body) = app
        .post(
            "/app-deploy/",
            &json!({"deployment_id": "app-two", "deployment_secret": wrong}),
        )
        .await;
    assert_eq!((status, body), (200, app_not_found()));
    eventually("the job to end", DEADLINE, || async {
        let (_, body) = app
            .post(
                "/job-status/",
                &json!({"deployment_id": "app-one", "deployment_secret": secret_one, "job_id": job_id}),
            )
            .await;
        (body["status"] == "success").then_some(())
    })
    .await;

    let everything = everything_in_redis(&redis).await;
    // The scan did read the apps and the job (it is not vacuous).
    for seen in ["app-one", "app-two", "exit-ok-two", job_id.as_str()] {
        assert!(
            bytes_contain(&everything, seen.as_bytes()),
            "{seen} not found in Redis"
        );
    }
    let base64 = base64::engine::general_purpose::STANDARD;
    for secret in [secret_one, secret_two, wrong, ADMIN_TOKEN] {
        for form in [
            secret.to_owned(),
            hex::encode(secret),
            base64.encode(secret),
            serde_json::to_string(secret).expect("JSON string"),
        ] {
            assert!(
                !bytes_contain(&everything, form.as_bytes()),
                "a secret is stored readable in Redis (as {form})"
            );
        }
    }
}

// --- deploy refusals ------------------------------------------------------

#[tokio::test]
async fn an_unknown_id_and_a_wrong_secret_get_the_same_app_not_found() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-one", "ok-one")]).await;

    let attempts = [
        json!({"deployment_id": "no-such-app", "deployment_secret": SECRET}),
        json!({"deployment_id": "app-one", "deployment_secret": "wrong-secret-0123456789"}),
        json!({"deployment_id": "app-one", "deployment_secret": format!("{SECRET}x")}),
        json!({"deployment_id": "app-one", "deployment_secret": ""}),
        json!({"deployment_id": "app-one"}),
        json!({"deployment_id": "APP-ONE", "deployment_secret": SECRET}),
    ];
    let mut answers = Vec::new();
    for attempt in attempts {
        let response = app
            .http
            .post(app.url("/app-deploy/"))
            .json(&attempt)
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status().as_u16(), 200, "{attempt}");
        let text = response.text().await.expect("body");
        let body: Value = serde_json::from_str(&text).expect("JSON body");
        assert_eq!(body, app_not_found(), "{attempt}");
        answers.push(text);
    }
    // Byte for byte the same answer: nothing tells whether an id exists.
    answers.dedup();
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_no_job(&app).await;
}

/// A request the right app with the right secret would make, but malformed.
fn valid_deploy_body() -> Value {
    json!({"deployment_id": "app-one", "deployment_secret": SECRET})
}

#[tokio::test]
async fn a_deploy_body_that_is_not_json_is_refused_400_and_starts_nothing() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-one", "ok-one")]).await;

    let valid = valid_deploy_body().to_string();
    let cut = valid[..valid.len() - 2].to_owned();
    for body in ["", "not json", "deployment_id=app-one", cut.as_str()] {
        let (status, answer) = post_raw(
            &app,
            "/app-deploy/",
            Some("application/json"),
            body.as_bytes().to_vec(),
        )
        .await;
        assert_eq!(status, 400, "{body:?}: {answer}");
        assert_error_body(&answer);
    }
    assert_no_job(&app).await;
}

#[tokio::test]
async fn a_deploy_body_of_another_content_type_is_refused_415_and_starts_nothing() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-one", "ok-one")]).await;

    let valid = valid_deploy_body().to_string().into_bytes();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let (status, answer) = post_raw(&app, "/app-deploy/", content_type, valid.clone()).await;
        assert_eq!(status, 415, "{content_type:?}: {answer}");
        assert_error_body(&answer);
    }
    assert_no_job(&app).await;
}

#[tokio::test]
async fn a_deploy_body_over_1_mib_is_refused_413_and_starts_nothing() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-one", "ok-one")]).await;

    let mut body = valid_deploy_body();
    body["padding"] = Value::String("x".repeat(1 << 20));
    let (status, answer) = post_raw(
        &app,
        "/app-deploy/",
        Some("application/json"),
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 413, "{answer}");
    assert_error_body(&answer);
    assert_no_job(&app).await;

    // The same request under the cap is served.
    let job_id = started_job(&app, "app-one").await;
    app.wait_final("app-one", &job_id, DEADLINE).await;
}

// --- who may read a job ---------------------------------------------------

#[tokio::test]
async fn the_job_of_another_app_is_not_found_but_an_app_sharing_the_inventory_reads_it() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[
        ("app-one", "ok-one"),
        ("app-sibling", "ok-one"),
        ("app-other", "ok-other"),
    ])
    .await;
    let job_id = started_job(&app, "app-one").await;
    let done = app.wait_final("app-one", &job_id, DEADLINE).await;
    assert_eq!(done["status"], "success", "{done}");

    let other = app.status("app-other", &job_id).await;
    assert_eq!(
        other,
        json!({"status": "error", "error": "Job not found", "job_id": job_id, "output": ""})
    );
    let sibling = app.status("app-sibling", &job_id).await;
    assert_eq!(sibling, done);

    // A wrong secret for the right app reads nothing either.
    let (status, body) = app
        .post(
            "/job-status/",
            &json!({"deployment_id": "app-one", "deployment_secret": "wrong-secret-0123456789", "job_id": job_id}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["job_id"], job_id.as_str(), "{body}");
    assert_eq!(body["output"], "", "{body}");
}

#[tokio::test]
async fn the_status_token_reads_its_job_without_secret() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-one", "ok-one")]).await;
    let started = app.deploy("app-one").await;
    let job_id = job_id_of(&started);
    let token = started["status_token"]
        .as_str()
        .expect("status token")
        .to_owned();

    let done = eventually("the job to end, read by its token", DEADLINE, || async {
        let (status, body) = status_by_bearer(&app, &token, &json!({"job_id": job_id})).await;
        assert_eq!(status, 200, "{body}");
        (body["status"] == "success").then_some(body)
    })
    .await;
    assert_eq!(
        done,
        json!({"status": "success", "job_id": job_id, "output": "step 1\ndone\n"})
    );
    // The same as what the secret reads.
    assert_eq!(app.status("app-one", &job_id).await, done);
}

#[tokio::test]
async fn a_status_token_reads_no_other_job() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-one", "ok-one"), ("app-two", "ok-two")])
        .await;
    let first = app.deploy("app-one").await;
    let first_id = job_id_of(&first);
    let first_token = first["status_token"]
        .as_str()
        .expect("status token")
        .to_owned();
    app.wait_final("app-one", &first_id, DEADLINE).await;
    // Another job of the same app, and one of another app.
    let second_id = started_job(&app, "app-one").await;
    let third_id = started_job(&app, "app-two").await;

    for other in [&second_id, &third_id] {
        let (status, body) = status_by_bearer(&app, &first_token, &json!({"job_id": other})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            json!({"status": "error", "error": "Job not found", "job_id": other, "output": ""})
        );
    }
    app.wait_final("app-one", &second_id, DEADLINE).await;
    app.wait_final("app-two", &third_id, DEADLINE).await;
}

#[tokio::test]
async fn a_bad_bearer_on_job_status_is_refused_401() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-one", "ok-one")]).await;
    let job_id = started_job(&app, "app-one").await;
    let done = app.wait_final("app-one", &job_id, DEADLINE).await;

    // A callback token is for the program, not for reading the status.
    let callback_token =
        app.state
            .lifecycle
            .tokens()
            .issue(TokenKind::Callback, &job_id, Duration::from_secs(600));
    for token in ["garbage", "a.b.c", callback_token.as_str()] {
        let (status, body) = status_by_bearer(&app, token, &json!({"job_id": job_id})).await;
        assert_eq!(status, 401, "{token}: {body}");
        assert_error_body(&body);
        assert_eq!(body["job_id"], job_id.as_str(), "{body}");
        assert_eq!(body["output"], "", "the output leaked: {body}");
    }
    assert_eq!(app.status("app-one", &job_id).await, done);
}

// --- load -----------------------------------------------------------------

#[tokio::test]
async fn load_counts_jobs_by_status_per_period() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-ok", "ok-one"), ("app-fail", "fail-one")])
        .await;
    let ok = started_job(&app, "app-ok").await;
    let failed = started_job(&app, "app-fail").await;
    app.wait_final("app-ok", &ok, DEADLINE).await;
    app.wait_final("app-fail", &failed, DEADLINE).await;

    let (status, body) = app.admin_get("/load/?periods=1_hour:3600").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "ok", "load": {"1_hour": counts(0, 0, 0, 1, 1)}})
    );

    let (status, body) = app.admin_get("/load/").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "ok", "load": {
            "1_hour": counts(0, 0, 0, 1, 1),
            "1_day": counts(0, 0, 0, 1, 1),
            "1_week": counts(0, 0, 0, 1, 1)
        }})
    );
}

#[tokio::test]
async fn a_bad_periods_value_is_refused_400() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;

    for periods in [
        "1_hour",
        "1_hour:",
        "1_hour:-5",
        "1_hour:an_hour",
        ":3600",
        "",
        "1_hour:3600,",
    ] {
        let (status, body) = app.admin_get(&format!("/load/?periods={periods}")).await;
        assert_eq!(status, 400, "{periods:?}: {body}");
        assert_error_body(&body);
    }
}

// --- operations -----------------------------------------------------------

#[tokio::test]
async fn root_names_the_app_and_its_version() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;

    let (status, body) = get(&app, "/", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"app": "enac-cd", "version": env!("CARGO_PKG_VERSION")})
    );
    let version = body["version"].as_str().expect("version");
    let parts: Vec<&str> = version.split('.').collect();
    assert_eq!(parts.len(), 3, "not semver: {version}");
    assert!(
        parts.iter().all(|part| part.parse::<u64>().is_ok()),
        "not semver: {version}"
    );
}

#[tokio::test]
async fn healthz_and_readyz_answer_200_with_a_live_redis() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;

    let (status, body) = get(&app, "/healthz", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(&app, "/readyz", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready", "{body}");
}

#[tokio::test]
async fn short_secrets_are_refused_naming_the_setting_and_accepted_below_it() {
    let redis = RedisServer::start();
    let seed_list =
        json!([{"deployment_id": "app-1", "inventory": "inv1", "deployment_secret": "secret123"}]);
    let strict = TestApp::spawn(&redis, &[]).await;
    let (status, body) = strict.admin_post("/set-available-apps/", &seed_list).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("CD_MIN_SECRET_LENGTH"),
        "the refusal names the setting: {body}"
    );
    assert_eq!(listed_apps(&strict).await, json!([]));

    // The seed's own sample list uses 9-character secrets.
    let lenient = TestApp::spawn(&redis, &["--min-secret-length=8"]).await;
    let (status, body) = lenient.admin_post("/set-available-apps/", &seed_list).await;
    assert_eq!((status, body["count"].as_u64()), (200, Some(1)), "{body}");
    let (status, body) = lenient
        .post(
            "/app-deploy/",
            &json!({"deployment_id": "app-1", "deployment_secret": "secret123"}),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("starting")),
        "{body}"
    );
}

#[tokio::test]
async fn made_up_methods_do_not_grow_the_metrics() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    let before = metrics_text(&app).await.len();
    for n in 0..200 {
        let method = reqwest::Method::from_bytes(format!("MADEUP{n}").as_bytes())
            .expect("a valid method token");
        let response = app
            .http
            .request(method, app.url("/job-status/"))
            .send()
            .await
            .expect("the service answers");
        assert_eq!(response.status().as_u16(), 405);
    }
    let text = metrics_text(&app).await;
    assert!(!text.contains("MADEUP"), "a made-up method became a label");
    assert!(text.contains(r#"method="other""#), "{text}");
    assert!(
        text.len() < before + 4096,
        "metrics grew from {before} to {} bytes",
        text.len()
    );
}

#[tokio::test]
async fn metrics_count_finished_jobs_and_auth_refusals() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis, &[]).await;
    app.set_apps(&[("app-one", "ok-one")]).await;

    let before = metrics_text(&app).await;
    assert!(
        samples(&before, "enac_cd_jobs_finished_total", &[])
            .iter()
            .all(|value| *value == 0.0),
        "{before}"
    );
    assert!(
        samples(&before, "enac_cd_auth_refusals_total", &[])
            .iter()
            .all(|value| *value == 0.0),
        "{before}"
    );

    let job_id = started_job(&app, "app-one").await;
    app.wait_final("app-one", &job_id, DEADLINE).await;
    let (status, body) = get(
        &app,
        "/get-available-apps/",
        Some("wrong-admin-token-0123456789"),
    )
    .await;
    assert_eq!(status, 401, "{body}");

    let after = metrics_text(&app).await;
    assert_eq!(
        samples(
            &after,
            "enac_cd_jobs_finished_total",
            &["status=\"success\"", "trigger=\"secret\""]
        ),
        vec![1.0],
        "{after}"
    );
    assert_eq!(
        samples(&after, "enac_cd_auth_refusals_total", &[])
            .iter()
            .sum::<f64>(),
        1.0,
        "{after}"
    );
    assert!(after.contains("enac_cd_jobs_finished"), "{after}");
}
