//! `enac-cd serve`, the real binary: bad settings stop it at start with one
//! line naming the setting (and never the secret), settings combine as
//! file < env < flag (contract §2), and secrets come from `_FILE` twins
//! (contract §8).

mod common;

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    eventually, free_port, job_id_of, serve_env, serve_env_at, Backend, DeploymentClient,
    RedisServer, ServiceProcess, ADMIN_TOKEN, NO_POLICIES,
};
use serde_json::Value;

/// A refused start must end within this (Redis retries excepted).
const QUICKLY: Duration = Duration::from_secs(10);
/// A closed Redis port is retried before giving up: 5 attempts 1 s apart,
/// each with the connection manager's own retries (about 16 s measured).
const AFTER_REDIS_RETRIES: Duration = Duration::from_secs(30);

/// `enac-cd serve` with exactly `envs` (nothing inherited but `PATH`), on a
/// free port unless `envs` or `args` say otherwise.
fn serve_command(envs: &[(&str, String)], args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_enac-cd"));
    command
        .arg("serve")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CD_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("CD_POLICY_DIR", NO_POLICIES)
        .stdin(Stdio::null());
    for (name, value) in envs {
        command.env(name, value);
    }
    command
}

struct Refusal {
    code: Option<i32>,
    stderr: String,
    elapsed: Duration,
}

impl Refusal {
    /// The one line on stderr; fails when there are more or none.
    fn line(&self) -> &str {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "not exactly one line: {self}");
        lines[0]
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} after {:?}, stderr:\n{}",
            self.code, self.elapsed, self.stderr
        )
    }
}

/// Runs a start that must be refused within `deadline`; a service that
/// starts anyway is killed and the test fails.
fn refused_start(mut command: Command, deadline: Duration) -> Refusal {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("enac-cd binary starts");
    let status = loop {
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("enac-cd serve still running after {deadline:?}: the bad setting was accepted");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(
        &mut child.stderr.take().expect("stderr is piped"),
        &mut stderr,
    )
    .expect("stderr is read");
    let refusal = Refusal {
        code: status.code(),
        stderr,
        elapsed,
    };
    assert!(!status.success(), "a bad setting exited 0: {refusal}");
    refusal
}

/// Asserts that `bad` on top of a valid environment stops the start quickly
/// with one line naming `setting`; returns that line.
fn assert_refused(
    redis: &RedisServer,
    data_dir: &Path,
    bad: &[(&str, &str)],
    setting: &str,
) -> String {
    let mut envs = serve_env(redis, data_dir);
    envs.retain(|(name, _)| !bad.iter().any(|(bad_name, _)| bad_name == name));
    envs.extend(bad.iter().map(|(name, value)| (*name, value.to_string())));
    let refusal = refused_start(serve_command(&envs, &[]), QUICKLY);
    let line = refusal.line();
    assert!(line.contains(setting), "{setting} not named: {refusal}");
    line.to_owned()
}

#[test]
fn a_duration_without_a_known_unit_is_refused() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    assert_refused(
        &redis,
        data_dir.path(),
        &[("CD_JOB_TIMEOUT", "5x")],
        "CD_JOB_TIMEOUT",
    );
}

#[test]
fn a_size_that_is_not_a_size_is_refused() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    assert_refused(
        &redis,
        data_dir.path(),
        &[("CD_MAX_OUTPUT", "lots")],
        "CD_MAX_OUTPUT",
    );
}

#[test]
fn the_process_launcher_without_a_command_is_refused() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut envs = serve_env(&redis, data_dir.path());
    envs.retain(|(name, _)| *name != "CD_PROCESS_COMMAND");
    let refusal = refused_start(serve_command(&envs, &[]), QUICKLY);
    assert!(
        refusal.line().contains("CD_PROCESS_COMMAND"),
        "CD_PROCESS_COMMAND not named: {refusal}"
    );
}

#[test]
fn a_redis_url_that_is_not_a_url_is_refused_without_its_password() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    assert_refused(
        &redis,
        data_dir.path(),
        &[("CD_REDIS_URL", "not-a-url")],
        "CD_REDIS_URL",
    );
    let line = assert_refused(
        &redis,
        data_dir.path(),
        &[("CD_REDIS_URL", "redis//:pw-never-echoed-41@127.0.0.1:6379")],
        "CD_REDIS_URL",
    );
    assert!(
        !line.contains("pw-never-echoed-41"),
        "password echoed: {line}"
    );
}

#[test]
fn a_short_admin_token_is_refused_without_echoing_it() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let token = "short-7kQz";
    let line = assert_refused(
        &redis,
        data_dir.path(),
        &[("CD_ADMIN_TOKEN", token)],
        "CD_ADMIN_TOKEN",
    );
    assert!(!line.contains(token), "token echoed: {line}");
}

#[test]
fn an_unknown_key_in_the_config_file_is_refused() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let config = data_dir.path().join("enac-cd.toml");
    std::fs::write(&config, "max_output = \"2MiB\"\nno_such_setting = 1\n")
        .expect("config written");
    let envs = serve_env(&redis, data_dir.path());
    let config_arg = config.display().to_string();
    let refusal = refused_start(serve_command(&envs, &["--config", &config_arg]), QUICKLY);
    let line = refusal.line();
    assert!(line.contains("no_such_setting"), "key not named: {refusal}");
    assert!(line.contains("CD_CONFIG"), "setting not named: {refusal}");
}

#[test]
fn a_policy_reporting_to_github_without_a_github_app_is_refused_naming_the_file() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let policies = tempfile::tempdir().expect("policy dir");
    std::fs::write(
        policies.path().join("app-one.toml"),
        "deployment_id = \"app-one\"\n[[webhook]]\nprovider = \"github\"\n\
         secret_env = \"GH_SECRET\"\nevents = [\"push\"]\n[webhook.match]\n\
         \"/repository/id\" = 1\n[report]\ngithub = true\n",
    )
    .expect("policy written");
    let dir = policies.path().display().to_string();
    let line = assert_refused(
        &redis,
        data_dir.path(),
        &[
            ("CD_POLICY_DIR", &dir),
            ("GH_SECRET", "gh-secret-0123456789"),
        ],
        "report.github",
    );
    assert!(line.contains("app-one.toml"), "{line}");
}

#[test]
fn the_github_and_gitlab_sections_of_the_config_file_are_settings_checked_at_start() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let envs = serve_env(&redis, data_dir.path());
    let config = data_dir.path().join("enac-cd.toml");
    for (text, setting) in [
        (
            "[gitlab]\napi_url = \"http://gitlab.example/api/v4\"\n",
            "CD_GITLAB_API_URL",
        ),
        ("[github]\napp_id = \"42\"\n", "CD_GITHUB_PRIVATE_KEY_FILE"),
        ("[github]\nno_such_key = 1\n", "github_no_such_key"),
    ] {
        std::fs::write(&config, text).expect("config written");
        let config_arg = config.display().to_string();
        let refusal = refused_start(serve_command(&envs, &["--config", &config_arg]), QUICKLY);
        assert!(
            refusal.line().contains(setting),
            "{setting} not named: {refusal}"
        );
    }
}

#[test]
fn an_invalid_apps_file_is_refused_without_its_secrets() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let apps = data_dir.path().join("apps.json");
    std::fs::write(
        &apps,
        r#"[{"deployment_id":"app-one","inventory":"ok-one","deployment_secret":"tiny-S3cret"}]"#,
    )
    .expect("apps file written");
    let line = assert_refused(
        &redis,
        data_dir.path(),
        &[("CD_APPS_FILE", &apps.display().to_string())],
        "CD_APPS_FILE",
    );
    assert!(line.contains("app-one"), "bad entry not named: {line}");
    assert!(!line.contains("tiny-S3cret"), "secret echoed: {line}");
}

#[test]
fn an_unreachable_redis_is_refused_after_retries_without_its_password() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let closed = free_port();
    let mut envs = serve_env(&redis, data_dir.path());
    envs.retain(|(name, _)| *name != "CD_REDIS_URL");
    envs.push((
        "CD_REDIS_URL",
        format!("redis://:pw-never-echoed-42@127.0.0.1:{closed}/0"),
    ));
    let refusal = refused_start(serve_command(&envs, &[]), AFTER_REDIS_RETRIES);
    let line = refusal.line();
    assert!(
        line.contains("CD_REDIS_URL"),
        "setting not named: {refusal}"
    );
    assert!(
        !line.contains("pw-never-echoed-42"),
        "password echoed: {refusal}"
    );
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Starts `enac-cd serve` that must come up answering `GET /` on `expected`.
async fn serving(mut command: Command, expected: SocketAddr, log: &Path) -> ServiceProcess {
    let log_file = File::create(log).expect("service log created");
    let child: Child = command
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("enac-cd binary starts");
    let mut service = ServiceProcess {
        child,
        addr: expected,
    };
    let http = reqwest::Client::new();
    let url = format!("http://{expected}/");
    let body: Value = eventually(
        &format!("GET / on {expected}"),
        Duration::from_secs(20),
        || {
            if let Ok(Some(status)) = service.child.try_wait() {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                panic!("enac-cd serve exited ({status}):\n{log}");
            }
            let request = http.get(&url).send();
            async move { request.await.ok()?.json::<Value>().await.ok() }
        },
    )
    .await;
    assert_eq!(body["app"], "enac-cd", "{body}");
    service
}

fn assert_not_listening(addr: SocketAddr, why: &str) {
    assert!(TcpStream::connect(addr).is_err(), "{addr} answers: {why}");
}

#[tokio::test]
async fn env_overrides_the_config_file_and_a_flag_overrides_both() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    let config = data_dir.path().join("enac-cd.toml");
    std::fs::write(&config, format!("listen = \"127.0.0.1:{file_port}\"\n"))
        .expect("config written");
    let config_arg = config.display().to_string();
    let mut envs = serve_env(&redis, data_dir.path());
    envs.push(("CD_LISTEN", format!("127.0.0.1:{env_port}")));

    // file < env
    let service = serving(
        serve_command(&envs, &["--config", &config_arg]),
        loopback(env_port),
        &data_dir.path().join("env.log"),
    )
    .await;
    assert_not_listening(loopback(file_port), "the env must win over the file");
    drop(service);

    // file < env < flag
    let flag = format!("127.0.0.1:{flag_port}");
    let service = serving(
        serve_command(&envs, &["--config", &config_arg, "--listen", &flag]),
        loopback(flag_port),
        &data_dir.path().join("flag.log"),
    )
    .await;
    assert_not_listening(loopback(file_port), "the flag must win over the file");
    assert_not_listening(loopback(env_port), "the flag must win over the env");
    drop(service);
}

#[tokio::test]
async fn the_config_file_applies_when_neither_env_nor_flag_is_set() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let file_port = free_port();
    let config = data_dir.path().join("enac-cd.toml");
    std::fs::write(&config, format!("listen = \"127.0.0.1:{file_port}\"\n"))
        .expect("config written");
    let config_arg = config.display().to_string();
    let envs = serve_env(&redis, data_dir.path());
    let mut command = serve_command(&envs, &["--config", &config_arg]);
    command.env_remove("CD_LISTEN");

    let service = serving(
        command,
        loopback(file_port),
        &data_dir.path().join("file.log"),
    )
    .await;
    // The file sets only the address; the rest still comes from the env.
    let response = reqwest::Client::new()
        .get(format!("http://{}/get-available-apps/", service.addr))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200);
    drop(service);
}

// ---------------------------------------------------------------- secrets from files

/// Writes `content` to `name` in `dir`, readable by its owner only, as a
/// Docker/compose secret is.
fn secret_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, content).expect("secret file written");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .expect("secret file made private");
    path
}

#[tokio::test]
async fn an_admin_token_file_ending_in_a_newline_opens_the_admin_endpoints_and_is_never_logged() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let token_file = secret_file(data_dir.path(), "admin-token", &format!("{ADMIN_TOKEN}\n"));
    let addr = loopback(free_port());
    let mut envs = serve_env(&redis, data_dir.path());
    envs.retain(|(name, _)| *name != "CD_ADMIN_TOKEN");
    envs.push(("CD_ADMIN_TOKEN_FILE", token_file.display().to_string()));
    envs.push(("CD_LISTEN", addr.to_string()));
    envs.push(("RUST_LOG", "debug".to_owned()));
    let log = data_dir.path().join("service.log");
    let mut service = serving(serve_command(&envs, &[]), addr, &log).await;

    let http = reqwest::Client::new();
    let apps = format!("http://{addr}/get-available-apps/");
    let answer = http
        .get(&apps)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request sent");
    assert_eq!(answer.status(), 200, "the token without its newline opens");
    let answer = http
        .get(&apps)
        .bearer_auth(format!("{ADMIN_TOKEN}x"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(answer.status(), 401, "another token is refused");

    service.terminate(QUICKLY);
    let logged = std::fs::read_to_string(&log).expect("service log read");
    assert!(logged.contains("enac-cd serving"), "{logged}");
    assert!(!logged.contains(ADMIN_TOKEN), "token logged:\n{logged}");
}

#[test]
fn a_secret_set_both_directly_and_from_a_file_is_refused_naming_both() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let token_file = secret_file(data_dir.path(), "admin-token", "file-token-0123456789\n");
    // serve_env sets CD_ADMIN_TOKEN too.
    let line = assert_refused(
        &redis,
        data_dir.path(),
        &[("CD_ADMIN_TOKEN_FILE", &token_file.display().to_string())],
        "CD_ADMIN_TOKEN_FILE",
    );
    assert!(line.contains("CD_ADMIN_TOKEN and"), "{line}");
    assert!(!line.contains(ADMIN_TOKEN), "token echoed: {line}");
    assert!(!line.contains("file-token"), "token echoed: {line}");
}

#[test]
fn a_missing_or_empty_secret_file_is_refused_naming_the_setting_and_the_path() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let missing = data_dir.path().join("no-such-signing-key");
    let line = assert_refused(
        &redis,
        data_dir.path(),
        &[("CD_SIGNING_KEY_FILE", &missing.display().to_string())],
        "CD_SIGNING_KEY_FILE",
    );
    assert!(line.contains(&missing.display().to_string()), "{line}");

    let empty = secret_file(data_dir.path(), "registry-password", "\n");
    let line = assert_refused(
        &redis,
        data_dir.path(),
        &[("CD_REGISTRY_PASSWORD_FILE", &empty.display().to_string())],
        "CD_REGISTRY_PASSWORD_FILE",
    );
    assert!(line.contains(&empty.display().to_string()), "{line}");
    assert!(line.contains("empty"), "{line}");
}

#[test]
fn a_short_admin_token_from_a_file_is_refused_naming_the_file_setting() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let token_file = secret_file(data_dir.path(), "admin-token", "short-9fQz\n");
    let mut envs = serve_env(&redis, data_dir.path());
    envs.retain(|(name, _)| *name != "CD_ADMIN_TOKEN");
    envs.push(("CD_ADMIN_TOKEN_FILE", token_file.display().to_string()));
    let refusal = refused_start(serve_command(&envs, &[]), QUICKLY);
    let line = refusal.line();
    assert!(line.contains("CD_ADMIN_TOKEN_FILE"), "{refusal}");
    assert!(!line.contains("short-9fQz"), "token echoed: {refusal}");
}

/// `POST /job-status/` for `job_id` with `token` as bearer: the status code.
async fn status_with_token(addr: SocketAddr, token: &str, job_id: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("http://{addr}/job-status/"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "job_id": job_id }))
        .send()
        .await
        .expect("request sent")
        .status()
        .as_u16()
}

#[tokio::test]
async fn status_tokens_are_signed_with_the_key_of_cd_signing_key_file() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let first_key = secret_file(data_dir.path(), "key-1", &format!("{}\n", "k1".repeat(20)));
    let second_key = secret_file(data_dir.path(), "key-2", &format!("{}\n", "k2".repeat(20)));
    let addr = loopback(free_port());
    let start = |key: &Path| {
        let mut envs = serve_env_at(&Backend::Embedded, data_dir.path(), addr);
        envs.push(("CD_SIGNING_KEY_FILE", key.display().to_string()));
        ServiceProcess::start(&envs, addr)
    };

    let service = start(&first_key);
    let app = DeploymentClient {
        addr,
        id: "app-one",
    };
    app.register("ok-signed").await;
    let started = app.deploy().await;
    let job_id = job_id_of(&started);
    let status_token = started["status_token"]
        .as_str()
        .expect("a status token")
        .to_owned();
    app.wait_status(&job_id, &["success"], QUICKLY).await;
    drop(service);

    // The same file after a restart: the token still reads its job.
    let service = start(&first_key);
    assert_eq!(status_with_token(addr, &status_token, &job_id).await, 200);
    drop(service);

    // Another key: the token no longer verifies.
    let _service = start(&second_key);
    assert_eq!(status_with_token(addr, &status_token, &job_id).await, 401);
    assert_eq!(app.status(&job_id).await["status"], "success");
}

// ---------------------------------------------------------------- the Redis password

/// What `openssl rand -base64 32` gives: `/`, `+` and `=` that a URL would
/// need escaped.
const BASE64_PASSWORD: &str = "a/b+c=d/Qx9+Rk2Lm7WvZp0sTq/8yHn+3eUo5jKf=";

#[tokio::test]
async fn a_redis_password_with_slash_plus_and_equals_comes_from_cd_redis_password_file() {
    let redis = RedisServer::with_password(BASE64_PASSWORD);
    let data_dir = tempfile::tempdir().expect("temp dir");
    let password_file = secret_file(
        data_dir.path(),
        "redis-password",
        &format!("{BASE64_PASSWORD}\n"),
    );
    let addr = loopback(free_port());
    // serve_env's CD_REDIS_URL carries no password.
    let mut envs = serve_env(&redis, data_dir.path());
    envs.push((
        "CD_REDIS_PASSWORD_FILE",
        password_file.display().to_string(),
    ));
    envs.push(("CD_PUBLIC_URL", format!("http://{addr}")));
    let _service = ServiceProcess::start(&envs, addr);

    let app = DeploymentClient {
        addr,
        id: "app-one",
    };
    app.register("ok-password").await;
    let job_id = job_id_of(&app.deploy().await);
    let done = app
        .wait_status(&job_id, &["success", "error"], QUICKLY)
        .await;
    assert_eq!(done["status"], "success", "{done}");
    let mut connection = redis.client().get_connection().expect("authenticated");
    let stored: bool = redis::cmd("EXISTS")
        .arg(format!("enac-cd:job:{job_id}"))
        .query(&mut connection)
        .expect("EXISTS answered");
    assert!(stored, "the job is not in the password-protected Redis");
}

#[test]
fn a_redis_password_in_both_the_url_and_cd_redis_password_is_refused_naming_both() {
    let redis = RedisServer::with_password(BASE64_PASSWORD);
    let data_dir = tempfile::tempdir().expect("temp dir");
    let line = assert_refused(
        &redis,
        data_dir.path(),
        &[
            (
                "CD_REDIS_URL",
                &format!("redis://:url-pw-never-echoed@127.0.0.1:{}/0", redis.port),
            ),
            ("CD_REDIS_PASSWORD", BASE64_PASSWORD),
        ],
        "CD_REDIS_PASSWORD",
    );
    assert!(line.contains("CD_REDIS_URL"), "{line}");
    assert!(
        !line.contains("url-pw-never-echoed"),
        "password echoed: {line}"
    );
    assert!(!line.contains(BASE64_PASSWORD), "password echoed: {line}");
}

#[test]
fn cd_redis_password_without_cd_redis_url_is_refused() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut envs = serve_env(&redis, data_dir.path());
    envs.retain(|(name, _)| *name != "CD_REDIS_URL");
    envs.push(("CD_REDIS_PASSWORD", BASE64_PASSWORD.to_owned()));
    let refusal = refused_start(serve_command(&envs, &[]), QUICKLY);
    let line = refusal.line();
    assert!(line.contains("CD_REDIS_PASSWORD"), "{refusal}");
    assert!(line.contains("CD_REDIS_URL"), "{refusal}");
    assert!(
        !line.contains(BASE64_PASSWORD),
        "password echoed: {refusal}"
    );
}

#[test]
fn a_raw_base64_password_in_the_url_is_refused_pointing_at_cd_redis_password() {
    let redis = RedisServer::with_password(BASE64_PASSWORD);
    let data_dir = tempfile::tempdir().expect("temp dir");
    let line = assert_refused(
        &redis,
        data_dir.path(),
        &[(
            "CD_REDIS_URL",
            &format!("redis://:{BASE64_PASSWORD}@127.0.0.1:{}/0", redis.port),
        )],
        "CD_REDIS_URL",
    );
    assert!(
        line.contains("CD_REDIS_PASSWORD"),
        "no way out named: {line}"
    );
    assert!(!line.contains("Qx9+Rk2"), "password echoed: {line}");
}

// ---------------------------------------------------------------- CD_CA_FILE

#[test]
fn a_missing_or_unparsable_ca_file_is_refused_naming_it() {
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let missing = data_dir.path().join("no-such-ca.pem");
    let not_pem = data_dir.path().join("not-pem.pem");
    std::fs::write(&not_pem, "this is no certificate\n").expect("file written");
    let broken = data_dir.path().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    )
    .expect("file written");
    for path in [&missing, &not_pem, &broken] {
        let line = assert_refused(
            &redis,
            data_dir.path(),
            &[("CD_CA_FILE", &path.display().to_string())],
            "CD_CA_FILE",
        );
        assert!(line.contains(&path.display().to_string()), "{line}");
    }
}
