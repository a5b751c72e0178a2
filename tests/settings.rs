//! `enac-cd serve`, the real binary: bad settings stop it at start with one
//! line naming the setting (and never the secret), and settings combine as
//! file < env < flag (contract §2).

mod common;

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    eventually, free_port, serve_env, RedisServer, ServiceProcess, ADMIN_TOKEN, NO_POLICIES,
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
