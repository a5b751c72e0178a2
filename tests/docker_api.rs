//! The `docker` launcher against a fake Docker Engine API (wiremock): what it
//! sends to create, start, pull, wait, kill and remove a job's container, and
//! how it reads the engine's answers. The real engine is in `docker_engine.rs`.

mod common;

use std::time::Duration;

use base64::Engine as _;
use bollard::{Docker, API_DEFAULT_VERSION};
use common::docker::assert_container_env;
use common::unix_now;
use enac_cd::launch::docker::DockerConfig;
use enac_cd::launch::DockerPull;
use enac_cd::launch::{
    DockerLauncher, Exit, LaunchError, LaunchRecord, LaunchSpec, Launcher, Presence,
};
use secrecy::SecretString;
use serde_json::{json, Value};
use wiremock::matchers::{method, path_regex, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate, Times};

const JOB_ID: &str = "01HZX3J7Q9V6D2K8M4N5P7R9ST";
const CONTAINER_ID: &str = "c0ffee0123456789";
const IMAGE: &str = "registry.example/enacit-ansible:latest";
const TOKEN: &str = "callback-token-of-this-job";

/// A fake engine that speaks API 1.41 (the engine of this machine). The
/// launcher negotiates once, whatever it is asked afterwards.
async fn engine() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex(api("/version")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ApiVersion": "1.41",
            "MinAPIVersion": "1.12",
            "Version": "20.10.24",
            "Os": "linux",
            "Arch": "amd64",
        })))
        .expect(1)
        .mount(&server)
        .await;
    server
}

/// A path pattern for an Engine API endpoint, with or without the version
/// prefix (bollard 0.19 sends none: the engine then speaks its own version).
fn api(endpoint: &str) -> String {
    format!(r"^(/v1\.\d+)?{endpoint}$")
}

fn config(pull: DockerPull) -> DockerConfig {
    DockerConfig {
        host: None,
        image: IMAGE.to_owned(),
        pull,
        network: Some("host".to_owned()),
        binds: vec![
            "/srv/inventories:/inventories:ro".to_owned(),
            "/srv/keys:/keys".to_owned(),
        ],
        registry_user: None,
        registry_password: None,
        request_timeout: Duration::from_secs(10),
    }
}

fn launcher(server: &MockServer, config: DockerConfig) -> DockerLauncher {
    let docker = Docker::connect_with_http(&server.uri(), 10, API_DEFAULT_VERSION)
        .expect("an http connection to the fake engine");
    DockerLauncher::with_connection(docker, config)
}

fn spec(inventory: &str) -> LaunchSpec {
    let callback_url = "http://127.0.0.1:8000/set-job-status/";
    LaunchSpec {
        job_id: JOB_ID.to_owned(),
        deployment_id: "app-one".to_owned(),
        inventory: inventory.to_owned(),
        args: vec![
            "app-deploy".to_owned(),
            inventory.to_owned(),
            JOB_ID.to_owned(),
        ],
        env: vec![
            ("CD_JOB_ID".to_owned(), JOB_ID.to_owned()),
            ("CD_DEPLOYMENT_ID".to_owned(), "app-one".to_owned()),
            ("CD_INVENTORY".to_owned(), inventory.to_owned()),
            ("CD_CALLBACK_URL".to_owned(), callback_url.to_owned()),
            ("CD_ENV".to_owned(), "test".to_owned()),
        ],
        callback_token: SecretString::from(TOKEN),
    }
}

fn record() -> LaunchRecord {
    LaunchRecord::Docker {
        container_id: CONTAINER_ID.to_owned(),
        followed_until: None,
    }
}

/// Create answers with [`CONTAINER_ID`], start answers 204; each expected
/// `times` times.
async fn mount_create_and_start(server: &MockServer, times: u64) {
    Mock::given(method("POST"))
        .and(path_regex(api("/containers/create")))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"Id": CONTAINER_ID, "Warnings": []})),
        )
        .expect(times)
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(api(&format!(
            "/containers/{CONTAINER_ID}/start"
        ))))
        .respond_with(ResponseTemplate::new(204))
        .expect(times)
        .mount(server)
        .await;
}

async fn mount_image_inspect(server: &MockServer, status: u16, times: impl Into<Times>) {
    let body = if status == 200 {
        json!({"Id": "sha256:0123", "RepoTags": [IMAGE]})
    } else {
        json!({"message": format!("No such image: {IMAGE}")})
    };
    Mock::given(method("GET"))
        .and(path_regex(api("/images/.+/json")))
        .respond_with(ResponseTemplate::new(status).set_body_json(body))
        .expect(times)
        .mount(server)
        .await;
}

/// The pull endpoint answering 200 with `lines` as its JSON progress stream.
async fn mount_pull(server: &MockServer, lines: &[Value], times: u64) {
    let body: String = lines.iter().map(|line| format!("{line}\r\n")).collect();
    Mock::given(method("POST"))
        .and(path_regex(api("/images/create")))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
        .expect(times)
        .mount(server)
        .await;
}

async fn requests_to(server: &MockServer, verb: &str, path_end: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .expect("request recording is on")
        .into_iter()
        .filter(|request| request.method.as_str() == verb && request.url.path().ends_with(path_end))
        .collect()
}

fn query(request: &Request, name: &str) -> Option<String> {
    request
        .url
        .query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// One frame of Docker's multiplexed log stream: stream type (1 stdout,
/// 2 stderr), three zero bytes, the payload length (u32 big-endian), the payload.
fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
    let mut framed = vec![stream, 0, 0, 0];
    framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    framed.extend_from_slice(payload);
    framed
}

async fn mount_logs(server: &MockServer, body: Vec<u8>, content_type: &str) {
    Mock::given(method("GET"))
        .and(path_regex(api(&format!("/containers/{CONTAINER_ID}/logs"))))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, content_type))
        .mount(server)
        .await;
}

async fn mount_wait(server: &MockServer, body: Value) {
    Mock::given(method("POST"))
        .and(path_regex(api(&format!("/containers/{CONTAINER_ID}/wait"))))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .expect(1)
        .mount(server)
        .await;
}

/// Everything `wait` sent to the output sink, once the launcher let it go.
async fn collected(
    mut output: tokio::sync::mpsc::UnboundedReceiver<enac_cd::launch::OutputChunk>,
) -> String {
    let mut text = String::new();
    while let Some(chunk) = output.recv().await {
        text.push_str(&chunk.text);
    }
    text
}

#[tokio::test]
async fn launch_creates_the_container_with_command_environment_labels_binds_and_network() {
    let server = engine().await;
    mount_create_and_start(&server, 1).await;
    let launcher = launcher(&server, config(DockerPull::Never));

    let launched = launcher
        .launch(&spec("inv-prod"))
        .await
        .expect("the launch succeeds");
    assert_eq!(launched, record());

    let created = requests_to(&server, "POST", "/containers/create").await;
    assert_eq!(created.len(), 1);
    assert_eq!(
        query(&created[0], "name").as_deref(),
        Some("enac-cd-01hzx3j7q9v6d2k8m4n5p7r9st"),
        "named after the lowercase job id"
    );
    let body: Value = created[0].body_json().expect("a JSON create body");
    assert_eq!(body["Image"], IMAGE);
    assert_eq!(body["Cmd"], json!(["app-deploy", "inv-prod", JOB_ID]));
    assert_container_env(
        &body["Env"],
        &[
            format!("CD_JOB_ID={JOB_ID}"),
            "CD_DEPLOYMENT_ID=app-one".to_owned(),
            "CD_INVENTORY=inv-prod".to_owned(),
            "CD_CALLBACK_URL=http://127.0.0.1:8000/set-job-status/".to_owned(),
            format!("CD_CALLBACK_TOKEN={TOKEN}"),
            "CD_ENV=test".to_owned(),
        ],
    );
    assert_eq!(
        body["Labels"],
        json!({
            "enac-cd.job-id": JOB_ID,
            "enac-cd.inventory": "inv-prod",
            "enac-cd.deployment-id": "app-one",
        })
    );
    // Mounts, not binds: the engine refuses a missing host path instead of
    // creating it as an empty root-owned directory.
    assert_eq!(
        body["HostConfig"]["Mounts"],
        json!([
            {"Source": "/srv/inventories", "Target": "/inventories", "Type": "bind", "ReadOnly": true},
            {"Source": "/srv/keys", "Target": "/keys", "Type": "bind", "ReadOnly": false},
        ])
    );
    assert!(body["HostConfig"].get("Binds").is_none(), "{body}");
    assert_eq!(body["HostConfig"]["NetworkMode"], "host");

    // Started after it was created, exactly once.
    let started = requests_to(
        &server,
        "POST",
        &format!("/containers/{CONTAINER_ID}/start"),
    )
    .await;
    assert_eq!(started.len(), 1);
    let order: Vec<String> = server
        .received_requests()
        .await
        .expect("request recording is on")
        .iter()
        .map(|request| request.url.path().to_owned())
        .collect();
    let create_at = order.iter().position(|p| p.ends_with("/containers/create"));
    let start_at = order.iter().position(|p| p.ends_with("/start"));
    assert!(create_at < start_at, "create before start: {order:?}");
}

#[tokio::test]
async fn launch_without_binds_or_network_leaves_them_to_the_engine() {
    let server = engine().await;
    mount_create_and_start(&server, 1).await;
    let launcher = launcher(
        &server,
        DockerConfig {
            network: None,
            binds: Vec::new(),
            ..config(DockerPull::Never)
        },
    );

    launcher
        .launch(&spec("inv-plain"))
        .await
        .expect("the launch succeeds");

    let created = requests_to(&server, "POST", "/containers/create").await;
    let body: Value = created[0].body_json().expect("a JSON create body");
    assert!(body["HostConfig"].get("Mounts").is_none(), "{body}");
    assert!(body["HostConfig"].get("NetworkMode").is_none(), "{body}");
}

#[tokio::test]
async fn pull_missing_pulls_an_absent_image_with_the_registry_credentials() {
    let server = engine().await;
    mount_image_inspect(&server, 404, 1).await;
    mount_pull(
        &server,
        &[
            json!({"status": "Pulling from enacit-ansible", "id": "latest"}),
            json!({"status": "Download complete", "id": "0123"}),
            json!({"status": format!("Status: Downloaded newer image for {IMAGE}")}),
        ],
        1,
    )
    .await;
    mount_create_and_start(&server, 1).await;
    let launcher = launcher(
        &server,
        DockerConfig {
            registry_user: Some("robot".to_owned()),
            registry_password: Some(SecretString::from("registry-password")),
            ..config(DockerPull::Missing)
        },
    );

    launcher
        .launch(&spec("inv-pull"))
        .await
        .expect("the launch succeeds");

    let pulls = requests_to(&server, "POST", "/images/create").await;
    assert_eq!(pulls.len(), 1);
    assert_eq!(query(&pulls[0], "fromImage").as_deref(), Some(IMAGE));
    let auth = pulls[0]
        .headers
        .get("X-Registry-Auth")
        .expect("the pull carries X-Registry-Auth")
        .to_str()
        .expect("an ASCII header");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(auth))
        .expect("X-Registry-Auth is base64");
    let credentials: Value = serde_json::from_slice(&decoded).expect("X-Registry-Auth is JSON");
    assert_eq!(credentials["username"], "robot");
    assert_eq!(credentials["password"], "registry-password");

    // The pull came before the container.
    let order: Vec<String> = server
        .received_requests()
        .await
        .expect("request recording is on")
        .iter()
        .map(|request| request.url.path().to_owned())
        .collect();
    let pull_at = order.iter().position(|p| p.ends_with("/images/create"));
    let create_at = order.iter().position(|p| p.ends_with("/containers/create"));
    assert!(pull_at < create_at, "pull before create: {order:?}");
}

#[tokio::test]
async fn pull_missing_without_credentials_sends_no_registry_auth() {
    let server = engine().await;
    mount_image_inspect(&server, 404, 1).await;
    mount_pull(&server, &[json!({"status": "Download complete"})], 1).await;
    mount_create_and_start(&server, 1).await;
    let launcher = launcher(&server, config(DockerPull::Missing));

    launcher
        .launch(&spec("inv-anonymous"))
        .await
        .expect("the launch succeeds");

    let pulls = requests_to(&server, "POST", "/images/create").await;
    assert_eq!(pulls.len(), 1);
    assert!(pulls[0].headers.get("X-Registry-Auth").is_none());
}

#[tokio::test]
async fn pull_missing_does_not_pull_an_image_already_there() {
    let server = engine().await;
    mount_image_inspect(&server, 200, 1).await;
    mount_pull(&server, &[], 0).await;
    mount_create_and_start(&server, 1).await;
    let launcher = launcher(&server, config(DockerPull::Missing));

    launcher
        .launch(&spec("inv-present"))
        .await
        .expect("the launch succeeds");
}

#[tokio::test]
async fn pull_never_makes_no_image_request_at_all() {
    let server = engine().await;
    Mock::given(path_regex(r"/images/"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    mount_create_and_start(&server, 1).await;
    let launcher = launcher(&server, config(DockerPull::Never));

    launcher
        .launch(&spec("inv-never"))
        .await
        .expect("the launch succeeds");
}

#[tokio::test]
async fn pull_always_pulls_even_an_image_already_there() {
    let server = engine().await;
    // Present: a launcher that looked would find it, and must pull anyway.
    mount_image_inspect(&server, 200, 0..=1).await;
    mount_pull(&server, &[json!({"status": "Image is up to date"})], 1).await;
    mount_create_and_start(&server, 1).await;
    let launcher = launcher(&server, config(DockerPull::Always));

    launcher
        .launch(&spec("inv-always"))
        .await
        .expect("the launch succeeds");
}

/// A pull that fails mid-stream answers HTTP 200; only a line of the stream
/// says so. The launch must fail with the engine's words and create nothing.
async fn assert_pull_error_fails_the_launch(error_line: Value) {
    let server = engine().await;
    mount_image_inspect(&server, 404, 1).await;
    mount_pull(
        &server,
        &[
            json!({"status": "Pulling from enacit-ansible", "id": "latest"}),
            error_line,
        ],
        1,
    )
    .await;
    mount_create_and_start(&server, 0).await;
    let launcher = launcher(&server, config(DockerPull::Missing));

    let error = launcher
        .launch(&spec("inv-denied"))
        .await
        .expect_err("a failed pull fails the launch");
    let message = error.to_string();
    assert!(
        message.contains("pull access denied for enacit-ansible"),
        "the engine's message is kept: {message}"
    );
    assert!(matches!(error, LaunchError::Start { .. }), "{error:?}");
}

#[tokio::test]
async fn a_pull_error_in_the_stream_fails_the_launch_and_creates_no_container() {
    // What Docker 20.10 sends: the deprecated `error` and its `errorDetail`.
    assert_pull_error_fails_the_launch(json!({
        "errorDetail": {"message": "pull access denied for enacit-ansible, repository does not exist"},
        "error": "pull access denied for enacit-ansible, repository does not exist",
    }))
    .await;
}

#[tokio::test]
async fn a_pull_error_given_only_as_error_detail_fails_the_launch_too() {
    // `error` is deprecated in the Engine API in favour of `errorDetail`; an
    // engine that sends only the latter has failed the pull just the same.
    assert_pull_error_fails_the_launch(json!({
        "errorDetail": {"message": "pull access denied for enacit-ansible, repository does not exist"},
    }))
    .await;
}

#[tokio::test]
async fn a_pull_refused_by_the_engine_fails_the_launch_with_its_message() {
    let server = engine().await;
    mount_image_inspect(&server, 404, 1).await;
    Mock::given(method("POST"))
        .and(path_regex(api("/images/create")))
        .respond_with(ResponseTemplate::new(404).set_body_json(
            json!({"message": "manifest for registry.example/enacit-ansible:latest not found"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    mount_create_and_start(&server, 0).await;
    let launcher = launcher(&server, config(DockerPull::Missing));

    let error = launcher
        .launch(&spec("inv-unknown"))
        .await
        .expect_err("a refused pull fails the launch");
    assert!(
        error.to_string().contains("manifest for"),
        "the engine's message is kept: {error}"
    );
}

#[tokio::test]
async fn a_missing_image_with_pull_never_fails_the_launch_with_the_engines_reason() {
    let server = engine().await;
    Mock::given(method("POST"))
        .and(path_regex(api("/containers/create")))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"message": format!("No such image: {IMAGE}")})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let launcher = launcher(&server, config(DockerPull::Never));

    let error = launcher
        .launch(&spec("inv-no-image"))
        .await
        .expect_err("no image, no launch");
    assert!(
        error
            .to_string()
            .contains(&format!("No such image: {IMAGE}")),
        "{error}"
    );
}

#[tokio::test]
async fn a_container_that_cannot_start_is_removed_and_the_launch_fails() {
    let server = engine().await;
    Mock::given(method("POST"))
        .and(path_regex(api("/containers/create")))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"Id": CONTAINER_ID, "Warnings": []})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(api(&format!(
            "/containers/{CONTAINER_ID}/start"
        ))))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_json(json!({"message": "network missing-net not found"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path_regex(api(&format!("/containers/{CONTAINER_ID}"))))
        .and(query_param("force", "true"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let launcher = launcher(&server, config(DockerPull::Never));

    let error = launcher
        .launch(&spec("inv-bad-net"))
        .await
        .expect_err("a container that does not start is no launch");
    assert!(
        error.to_string().contains("network missing-net not found"),
        "{error}"
    );
}

#[tokio::test]
async fn an_engine_that_does_not_answer_is_a_launch_error_not_a_panic() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port");
    let docker =
        Docker::connect_with_http(&format!("http://127.0.0.1:{port}"), 2, API_DEFAULT_VERSION)
            .expect("connecting is lazy");
    let launcher = DockerLauncher::with_connection(docker, config(DockerPull::Never));

    let error = launcher
        .launch(&spec("inv-down"))
        .await
        .expect_err("no engine, no launch");
    assert!(matches!(error, LaunchError::Unavailable(_)), "{error:?}");
    assert!(launcher.ping().await.is_err());
}

#[tokio::test]
async fn wait_maps_a_non_zero_status_code_to_the_exit_code() {
    let server = engine().await;
    mount_wait(&server, json!({"StatusCode": 3})).await;
    mount_logs(&server, Vec::new(), "application/vnd.docker.raw-stream").await;
    let launcher = launcher(&server, config(DockerPull::Never));
    let (sink, _output) = tokio::sync::mpsc::unbounded_channel();

    let report = launcher
        .wait(&record(), sink, false)
        .await
        .expect("an exit is no error");
    assert_eq!(report.exit, Exit::Code(3));
}

#[tokio::test]
async fn wait_maps_a_status_code_with_an_error_message_to_the_exit_code() {
    let server = engine().await;
    mount_wait(
        &server,
        json!({"StatusCode": 137, "Error": {"Message": "container killed"}}),
    )
    .await;
    mount_logs(&server, Vec::new(), "application/vnd.docker.raw-stream").await;
    let launcher = launcher(&server, config(DockerPull::Never));
    let (sink, _output) = tokio::sync::mpsc::unbounded_channel();

    let report = launcher
        .wait(&record(), sink, false)
        .await
        .expect("an exit is no error");
    assert_eq!(report.exit, Exit::Code(137));
}

#[tokio::test]
async fn wait_reports_a_clean_exit_as_code_zero() {
    let server = engine().await;
    mount_wait(&server, json!({"StatusCode": 0})).await;
    mount_logs(&server, Vec::new(), "application/vnd.docker.raw-stream").await;
    let launcher = launcher(&server, config(DockerPull::Never));
    let (sink, _output) = tokio::sync::mpsc::unbounded_channel();

    let report = launcher
        .wait(&record(), sink, false)
        .await
        .expect("an exit is no error");
    assert_eq!(report.exit, Exit::Code(0));
}

#[tokio::test]
async fn wait_decodes_the_multiplexed_log_stream_into_the_output() {
    let server = engine().await;
    mount_wait(&server, json!({"StatusCode": 0})).await;
    let mut body = frame(1, b"PLAY [deploy]\n");
    body.extend(frame(2, b"warning: on stderr\n"));
    body.extend(frame(1, b"PLAY RECAP ok=2\n"));
    mount_logs(&server, body, "application/vnd.docker.raw-stream").await;
    let launcher = launcher(&server, config(DockerPull::Never));
    let (sink, output) = tokio::sync::mpsc::unbounded_channel();

    launcher
        .wait(&record(), sink, false)
        .await
        .expect("the container exits");

    let text = collected(output).await;
    assert_eq!(text, "PLAY [deploy]\nwarning: on stderr\nPLAY RECAP ok=2\n");
    let logs = requests_to(&server, "GET", "/logs").await;
    assert_eq!(logs.len(), 1);
    assert_eq!(query(&logs[0], "follow").as_deref(), Some("true"));
    assert_eq!(query(&logs[0], "stdout").as_deref(), Some("true"));
    assert_eq!(query(&logs[0], "stderr").as_deref(), Some("true"));
}

#[tokio::test]
async fn wait_decodes_the_log_stream_under_its_api_1_42_content_type() {
    let server = engine().await;
    mount_wait(&server, json!({"StatusCode": 0})).await;
    let mut body = frame(1, b"one\n");
    body.extend(frame(2, b"two\n"));
    mount_logs(&server, body, "application/vnd.docker.multiplexed-stream").await;
    let launcher = launcher(&server, config(DockerPull::Never));
    let (sink, output) = tokio::sync::mpsc::unbounded_channel();

    launcher
        .wait(&record(), sink, false)
        .await
        .expect("the container exits");

    assert_eq!(collected(output).await, "one\ntwo\n");
}

#[tokio::test]
async fn wait_keeps_a_character_split_across_two_log_frames() {
    // The engine frames what the program wrote in pieces (the json-file log
    // driver splits long lines at 16 KiB), so a frame may end inside a
    // multi-byte character: "é" is 0xC3 0xA9.
    let server = engine().await;
    mount_wait(&server, json!({"StatusCode": 0})).await;
    let mut body = frame(1, b"d\xc3");
    body.extend(frame(1, b"\xa9ploy\n"));
    mount_logs(&server, body, "application/vnd.docker.raw-stream").await;
    let launcher = launcher(&server, config(DockerPull::Never));
    let (sink, output) = tokio::sync::mpsc::unbounded_channel();

    launcher
        .wait(&record(), sink, false)
        .await
        .expect("the container exits");

    assert_eq!(collected(output).await, "déploy\n");
}

#[tokio::test]
async fn wait_after_a_restart_asks_only_for_logs_since_now() {
    let server = engine().await;
    mount_wait(&server, json!({"StatusCode": 0})).await;
    mount_logs(
        &server,
        frame(1, b"after restart\n"),
        "application/vnd.docker.raw-stream",
    )
    .await;
    let launcher = launcher(&server, config(DockerPull::Never));
    let (sink, output) = tokio::sync::mpsc::unbounded_channel();
    let before = unix_now();

    launcher
        .wait(&record(), sink, true)
        .await
        .expect("the container exits");

    assert_eq!(collected(output).await, "after restart\n");
    let logs = requests_to(&server, "GET", "/logs").await;
    let since: i64 = query(&logs[0], "since")
        .expect("a resumed follow sets since")
        .parse()
        .expect("since is a number");
    assert!(since >= before, "since={since}, before={before}");
}

#[tokio::test]
async fn wait_after_a_take_over_resumes_after_the_last_saved_line() {
    let server = engine().await;
    mount_wait(&server, json!({"StatusCode": 0})).await;
    let mut body = frame(1, b"2026-11-29T10:00:00.100000000Z line 1\n");
    body.extend(frame(1, b"2026-11-29T10:00:00.200000000Z line 2\n"));
    body.extend(frame(1, b"2026-11-29T10:00:00.300000000Z line 3\n"));
    mount_logs(&server, body, "application/vnd.docker.raw-stream").await;
    let launcher = launcher(&server, config(DockerPull::Never));
    let (sink, mut output) = tokio::sync::mpsc::unbounded_channel();
    let saved = LaunchRecord::Docker {
        container_id: CONTAINER_ID.to_owned(),
        followed_until: Some("2026-11-29T10:00:00.200000000Z".to_owned()),
    };

    launcher
        .wait(&saved, sink, true)
        .await
        .expect("the container exits");

    let mut chunks = Vec::new();
    while let Some(chunk) = output.recv().await {
        chunks.push(chunk);
    }
    assert_eq!(
        chunks,
        [enac_cd::launch::OutputChunk {
            text: "line 3\n".to_owned(),
            followed_until: Some("2026-11-29T10:00:00.300000000Z".to_owned()),
        }],
        "the lines saved before are skipped, the stamps are not output"
    );
    let logs = requests_to(&server, "GET", "/logs").await;
    assert_eq!(query(&logs[0], "timestamps").as_deref(), Some("true"));
    assert_eq!(
        query(&logs[0], "since").as_deref(),
        Some("1795946400"),
        "the engine is asked from the saved line's second on"
    );
}

#[tokio::test]
async fn stop_kills_the_container() {
    let server = engine().await;
    Mock::given(method("POST"))
        .and(path_regex(api(&format!("/containers/{CONTAINER_ID}/kill"))))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let launcher = launcher(&server, config(DockerPull::Never));

    launcher.stop(&record()).await.expect("killed");
}

#[tokio::test]
async fn stop_of_a_container_already_stopped_or_gone_is_no_error() {
    for status in [409, 404] {
        let server = engine().await;
        Mock::given(method("POST"))
            .and(path_regex(api(&format!("/containers/{CONTAINER_ID}/kill"))))
            .respond_with(
                ResponseTemplate::new(status)
                    .set_body_json(json!({"message": "container is not running"})),
            )
            .expect(1)
            .mount(&server)
            .await;
        let launcher = launcher(&server, config(DockerPull::Never));

        launcher
            .stop(&record())
            .await
            .unwrap_or_else(|error| panic!("kill answered {status}: {error}"));
    }
}

#[tokio::test]
async fn cleanup_force_removes_the_container() {
    let server = engine().await;
    Mock::given(method("DELETE"))
        .and(path_regex(api(&format!("/containers/{CONTAINER_ID}"))))
        .and(query_param("force", "true"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let launcher = launcher(&server, config(DockerPull::Never));

    launcher.cleanup(&record()).await;
}

#[tokio::test]
async fn find_reports_a_running_container_as_running() {
    let server = engine().await;
    Mock::given(method("GET"))
        .and(path_regex(api(&format!("/containers/{CONTAINER_ID}/json"))))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "Id": CONTAINER_ID,
            "State": {"Status": "running", "Running": true, "ExitCode": 0},
        })))
        .expect(1)
        .mount(&server)
        .await;
    let launcher = launcher(&server, config(DockerPull::Never));

    let presence = launcher.find(&record()).await.expect("inspected");
    assert!(matches!(presence, Presence::Running), "{presence:?}");
}

#[tokio::test]
async fn find_reports_an_exited_container_with_its_code_and_last_lines() {
    let server = engine().await;
    Mock::given(method("GET"))
        .and(path_regex(api(&format!("/containers/{CONTAINER_ID}/json"))))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "Id": CONTAINER_ID,
            "State": {"Status": "exited", "Running": false, "ExitCode": 2},
        })))
        .expect(1)
        .mount(&server)
        .await;
    let mut logs = frame(1, b"TASK [copy]\n");
    logs.extend(frame(2, b"fatal: unreachable\n"));
    mount_logs(&server, logs, "application/vnd.docker.raw-stream").await;
    let launcher = launcher(&server, config(DockerPull::Never));

    let presence = launcher.find(&record()).await.expect("inspected");
    let Presence::Exited(report) = presence else {
        panic!("an exited container: {presence:?}");
    };
    assert_eq!(report.exit, Exit::Code(2));
    assert_eq!(report.tail, "TASK [copy]\nfatal: unreachable\n");
    let logs = requests_to(&server, "GET", "/logs").await;
    assert_eq!(logs.len(), 1);
    assert!(query(&logs[0], "tail").is_some(), "only the last lines");
    assert_ne!(query(&logs[0], "follow").as_deref(), Some("true"));
}

#[tokio::test]
async fn find_reports_a_container_that_is_gone_as_missing() {
    let server = engine().await;
    Mock::given(method("GET"))
        .and(path_regex(api(&format!("/containers/{CONTAINER_ID}/json"))))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"message": format!("No such container: {CONTAINER_ID}")})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let launcher = launcher(&server, config(DockerPull::Never));

    let presence = launcher.find(&record()).await.expect("a 404 is an answer");
    assert!(matches!(presence, Presence::Missing), "{presence:?}");
}

#[tokio::test]
async fn find_reports_a_container_created_but_never_started_as_missing() {
    let server = engine().await;
    Mock::given(method("GET"))
        .and(path_regex(api(&format!("/containers/{CONTAINER_ID}/json"))))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "Id": CONTAINER_ID,
            "State": {"Status": "created", "Running": false, "ExitCode": 0},
        })))
        .expect(1)
        .mount(&server)
        .await;
    let launcher = launcher(&server, config(DockerPull::Never));

    let presence = launcher.find(&record()).await.expect("inspected");
    assert!(matches!(presence, Presence::Missing), "{presence:?}");
}

#[tokio::test]
async fn find_of_a_foreign_record_is_refused_without_asking_the_engine() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    let launcher = launcher(&server, config(DockerPull::Never));
    let foreign = LaunchRecord::Process {
        host: "elsewhere".to_owned(),
        pid: 1,
        start_ticks: 1,
        log: "/tmp/job.log".into(),
    };

    assert!(!launcher.owns(&foreign));
    assert!(matches!(
        launcher.find(&foreign).await,
        Err(LaunchError::Foreign)
    ));
}

#[tokio::test]
async fn labelled_lists_the_containers_of_jobs_by_their_job_id_label() {
    let server = engine().await;
    Mock::given(method("GET"))
        .and(path_regex(api("/containers/json")))
        .and(query_param("all", "true"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            {"Id": CONTAINER_ID, "Labels": {"enac-cd.job-id": JOB_ID, "enac-cd.inventory": "inv"}},
            {"Id": "other", "Labels": {"unrelated": "x"}},
        ])))
        .expect(1)
        .mount(&server)
        .await;
    let launcher = launcher(&server, config(DockerPull::Never));

    let labelled = launcher.labelled().await.expect("listed");
    assert_eq!(labelled, vec![(JOB_ID.to_owned(), record())]);
    let listed = requests_to(&server, "GET", "/containers/json").await;
    let filters: Value =
        serde_json::from_str(&query(&listed[0], "filters").expect("a label filter"))
            .expect("filters are JSON");
    assert_eq!(filters, json!({"label": ["enac-cd.job-id"]}));
}

#[tokio::test]
async fn the_engine_version_is_negotiated_once_for_every_call() {
    let server = engine().await;
    mount_create_and_start(&server, 1).await;
    Mock::given(method("POST"))
        .and(path_regex(api(&format!("/containers/{CONTAINER_ID}/kill"))))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path_regex(api(&format!("/containers/{CONTAINER_ID}"))))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let launcher = launcher(&server, config(DockerPull::Never));

    let launched = launcher
        .launch(&spec("inv-once"))
        .await
        .expect("the launch succeeds");
    launcher.stop(&launched).await.expect("killed");
    launcher.cleanup(&launched).await;
    // `engine()` expects exactly one GET /version; no request asks for an
    // API newer than the engine's.
    let paths: Vec<String> = server
        .received_requests()
        .await
        .expect("request recording is on")
        .iter()
        .map(|request| request.url.path().to_owned())
        .collect();
    assert_eq!(paths.len(), 5, "{paths:?}");
    assert!(
        paths
            .iter()
            .all(|path| !path.starts_with("/v1.") || path.starts_with("/v1.41/")),
        "{paths:?}"
    );
}
