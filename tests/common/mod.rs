//! Shared test harness: a real `redis-server` on a free port, the service on
//! port 0 (in-process or as its binary), the fake ansible program, polling
//! with deadlines.
#![allow(dead_code)]

use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use enac_cd::config::Settings;
use serde_json::{json, Value};

/// An empty policy directory (the repository's `policies/` examples would
/// need their secrets).
pub const NO_POLICIES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/no-policies");

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const SECRET: &str = "secret-of-app-one-0123";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port on 127.0.0.1")
}

pub fn fake_ansible() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-ansible")
}

/// Polls `check` until it yields a value or `deadline` passes.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A real `redis-server` on a free loopback port, stopped (by PID) on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts (again) on the same port.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "\n\n*** redis-server cannot be started ({error}).\n*** These tests need a real Redis: \
                     `apt-get install redis-server` (.ci/run installs it).\n\n"
                )
            });
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < until, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("redis url")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Settings as `serve` would parse them from flags (a later flag wins).
#[derive(Parser)]
#[command(args_override_self = true)]
struct SettingsParser {
    #[command(flatten)]
    settings: Settings,
}

/// Which store a test service runs on.
pub enum Backend<'a> {
    Redis(&'a RedisServer),
    /// The embedded store in the service's data dir.
    Embedded,
}

pub fn settings(redis: &RedisServer, extra: &[&str], data_dir: &std::path::Path) -> Settings {
    settings_for(&Backend::Redis(redis), extra, data_dir)
}

pub fn settings_for(backend: &Backend, extra: &[&str], data_dir: &std::path::Path) -> Settings {
    let mut args = vec!["serve".to_owned()];
    if let Backend::Redis(redis) = backend {
        args.push(format!("--redis-url={}", redis.url()));
    }
    args.extend([
        "--launcher=process".to_owned(),
        format!("--process-command={}", fake_ansible().display()),
        format!("--admin-token={ADMIN_TOKEN}"),
        format!("--data-dir={}", data_dir.display()),
        "--env=test".to_owned(),
        // The repository's example policies need their secrets in the
        // environment: tests load policies of their own.
        format!("--policy-dir={NO_POLICIES}"),
    ]);
    args.extend(extra.iter().map(|arg| arg.to_string()));
    SettingsParser::try_parse_from(args)
        .expect("test settings parse")
        .settings
}

/// The service running in this test process on a free port.
pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub state: enac_cd::AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    _data_dir: tempfile::TempDir,
}

impl TestApp {
    pub async fn spawn(redis: &RedisServer, extra: &[&str]) -> TestApp {
        TestApp::start(Backend::Redis(redis), extra, |_| {}).await
    }

    /// The service on the embedded store, in its own temporary data dir.
    pub async fn spawn_embedded(extra: &[&str]) -> TestApp {
        TestApp::start(Backend::Embedded, extra, |_| {}).await
    }

    /// Starts the service on `backend`, with the parsed settings changed by
    /// `adjust` before the state is built (for settings a flag cannot unset).
    pub async fn start(
        backend: Backend<'_>,
        extra: &[&str],
        adjust: impl FnOnce(&mut Settings),
    ) -> TestApp {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let mut args = vec![format!("--public-url=http://{addr}")];
        args.extend(extra.iter().map(|arg| arg.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut settings = settings_for(&backend, &args, data_dir.path());
        adjust(&mut settings);
        let state = enac_cd::build_state(&settings).await.expect("state builds");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let served = state.clone();
        tokio::spawn(async move {
            let _ = enac_cd::serve_until(listener, served, async {
                let _ = rx.await;
            })
            .await;
        });
        TestApp {
            addr,
            http: reqwest::Client::new(),
            state,
            shutdown: Some(tx),
            _data_dir: data_dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent");
        read(response).await
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(body)
            .send()
            .await
            .expect("request sent");
        read(response).await
    }

    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request sent");
        read(response).await
    }

    /// Registers one app per `(deployment_id, inventory)` with [`SECRET`].
    pub async fn set_apps(&self, apps: &[(&str, &str)]) {
        let list: Vec<Value> = apps
            .iter()
            .map(|(id, inventory)| {
                json!({"deployment_id": id, "inventory": inventory, "deployment_secret": SECRET})
            })
            .collect();
        let (status, body) = self.admin_post("/set-available-apps/", &json!(list)).await;
        assert_eq!(status, 200, "{body}");
    }

    pub async fn deploy(&self, deployment_id: &str) -> Value {
        let (status, body) = self
            .post(
                "/app-deploy/",
                &json!({"deployment_id": deployment_id, "deployment_secret": SECRET}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn status(&self, deployment_id: &str, job_id: &str) -> Value {
        let (status, body) = self
            .post(
                "/job-status/",
                &json!({"deployment_id": deployment_id, "deployment_secret": SECRET, "job_id": job_id}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Polls `/job-status/` until the job is final; returns the last answer.
    pub async fn wait_final(&self, deployment_id: &str, job_id: &str, deadline: Duration) -> Value {
        eventually(&format!("job {job_id} to end"), deadline, || async {
            let body = self.status(deployment_id, job_id).await;
            matches!(body["status"].as_str(), Some("success" | "error")).then_some(body)
        })
        .await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body read");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// The `enac-cd` binary running as its own process, stopped on drop.
pub struct ServiceProcess {
    pub child: Child,
    pub addr: SocketAddr,
}

impl ServiceProcess {
    pub fn start(envs: &[(&str, String)], addr: SocketAddr) -> ServiceProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_enac-cd"));
        command
            .arg("serve")
            .env("CD_LISTEN", addr.to_string())
            .env("CD_POLICY_DIR", NO_POLICIES);
        for (name, value) in envs {
            command.env(name, value);
        }
        ServiceProcess::spawn(command, addr)
    }

    /// Runs `command` (an `enac-cd serve`) and waits until `addr` answers.
    pub fn spawn(mut command: Command, addr: SocketAddr) -> ServiceProcess {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("enac-cd binary starts");
        let mut service = ServiceProcess { child, addr };
        let until = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = service.child.try_wait() {
                panic!("enac-cd exited with {status} before listening");
            }
            assert!(Instant::now() < until, "enac-cd did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        service
    }

    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

/// The environment of `enac-cd serve` run as its own process (every value a
/// contract setting): real Redis, the process launcher running the fake
/// ansible, data and job logs in `data_dir`.
pub fn serve_env(redis: &RedisServer, data_dir: &std::path::Path) -> Vec<(&'static str, String)> {
    vec![
        ("CD_REDIS_URL", redis.url()),
        ("CD_LAUNCHER", "process".to_owned()),
        ("CD_PROCESS_COMMAND", fake_ansible().display().to_string()),
        ("CD_DATA_DIR", data_dir.display().to_string()),
        ("CD_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("CD_ENV", "test".to_owned()),
    ]
}

/// Writes a `CD_APPS_FILE` in `dir` with one app per `(deployment_id,
/// inventory)`, each with [`SECRET`]; returns its path.
pub fn write_apps_file(dir: &std::path::Path, apps: &[(&str, &str)]) -> PathBuf {
    let list: Vec<Value> = apps
        .iter()
        .map(|(id, inventory)| {
            json!({"deployment_id": id, "inventory": inventory, "deployment_secret": SECRET})
        })
        .collect();
    let path = dir.join("apps.json");
    std::fs::write(&path, Value::Array(list).to_string()).expect("apps file written");
    path
}

impl TestApp {
    /// Like [`TestApp::spawn`], with the parsed settings changed by `adjust`.
    pub async fn spawn_adjusted(
        redis: &RedisServer,
        extra: &[&str],
        adjust: impl FnOnce(&mut Settings),
    ) -> TestApp {
        TestApp::start(Backend::Redis(redis), extra, adjust).await
    }

    /// The service with `CD_ADMIN_TOKEN` unset: admin endpoints disabled.
    pub async fn spawn_without_admin(redis: &RedisServer, extra: &[&str]) -> TestApp {
        TestApp::spawn_adjusted(redis, extra, |settings| settings.admin_token = None).await
    }
}

/// The image the real-engine Docker tests run: `tests/fixtures/ansible-image`
/// on busybox, built locally (there is no registry to pull from).
pub const TEST_IMAGE: &str = "enac-cd-test-ansible:latest";

/// Whether a Docker engine answers here (`docker info`); when it does, the
/// test image is built, once per test binary. Without an engine the test
/// says so in one loud line and should return, unless the environment
/// demands the engine (`ENAC_CD_REQUIRE_DOCKER=1`, set by `scripts/test`
/// where `docker info` works): then a missing engine fails the test.
pub fn docker_engine_available(test: &str) -> bool {
    static ENGINE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let available = *ENGINE.get_or_init(|| {
        let answers = Command::new("docker")
            .arg("info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if answers {
            build_test_image();
        }
        answers
    });
    if !available {
        assert!(
            std::env::var("ENAC_CD_REQUIRE_DOCKER").as_deref() != Ok("1"),
            "ENAC_CD_REQUIRE_DOCKER=1 but `docker info` fails: real-engine test {test} cannot run"
        );
        // Straight to the process's stderr: libtest would swallow an
        // `eprintln!` of a passing test.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "*** DOCKER ENGINE NOT AVAILABLE: real-engine test {test} did not run ***"
        );
    }
    available
}

/// `docker build` of [`TEST_IMAGE`] from the fixture and Debian's static
/// busybox; idempotent, so concurrent test binaries may all run it.
fn build_test_image() {
    let busybox = std::path::Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "the real-engine Docker tests need /bin/busybox: `apt-get install busybox-static` \
         (scripts/test installs it)"
    );
    let context = tempfile::tempdir().expect("temp dir for the image build");
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ansible-image");
    std::fs::copy(busybox, context.path().join("busybox")).expect("busybox copied");
    for file in ["Dockerfile", "entry.sh"] {
        std::fs::copy(fixture.join(file), context.path().join(file)).expect("fixture copied");
    }
    let built = Command::new("docker")
        .args(["build", "-q", "-t", TEST_IMAGE])
        .arg(context.path())
        .output()
        .expect("docker build runs");
    assert!(
        built.status.success(),
        "docker build of {TEST_IMAGE} failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
}

/// Ids of the containers (running or not) carrying `label` (`key=value`).
pub async fn docker_containers(label: &str) -> Vec<String> {
    let listed = tokio::process::Command::new("docker")
        .args(["ps", "-a", "-q", "--no-trunc", "--filter"])
        .arg(format!("label={label}"))
        .output()
        .await
        .expect("docker ps runs");
    assert!(
        listed.status.success(),
        "docker ps: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `docker inspect` of one container.
pub async fn docker_inspect(container: &str) -> Value {
    let inspected = tokio::process::Command::new("docker")
        .args(["inspect", container])
        .output()
        .await
        .expect("docker inspect runs");
    assert!(
        inspected.status.success(),
        "docker inspect {container}: {}",
        String::from_utf8_lossy(&inspected.stderr)
    );
    let list: Value =
        serde_json::from_slice(&inspected.stdout).expect("docker inspect prints JSON");
    list[0].clone()
}

/// The container of `job_id`, once the launcher has created it.
pub async fn job_container(job_id: &str, deadline: Duration) -> String {
    let label = format!("enac-cd.job-id={job_id}");
    eventually(
        &format!("a container labelled {label}"),
        deadline,
        || async { docker_containers(&label).await.into_iter().next() },
    )
    .await
}

/// Waits until no container of `job_id` is left, running or not.
pub async fn wait_job_containers_removed(job_id: &str, deadline: Duration) {
    let label = format!("enac-cd.job-id={job_id}");
    eventually(
        &format!("no container labelled {label}"),
        deadline,
        || async { docker_containers(&label).await.is_empty().then_some(()) },
    )
    .await
}

/// An inventory name unique to this run, starting with `behaviour` (the
/// test image acts on the prefix: `ok`, `fail`, `exit-ok`, `sleep-N`, `hang`).
pub fn unique_inventory(behaviour: &str) -> String {
    let id = ulid::Ulid::new().to_string().to_ascii_lowercase();
    format!("{behaviour}-{}", &id[16..])
}

/// Removes, when dropped (even by a failing test), every container of the
/// inventories and jobs it was given.
pub struct JobContainers {
    labels: std::sync::Mutex<Vec<String>>,
}

impl JobContainers {
    pub fn for_inventories(inventories: &[&str]) -> JobContainers {
        JobContainers {
            labels: std::sync::Mutex::new(
                inventories
                    .iter()
                    .map(|inventory| format!("enac-cd.inventory={inventory}"))
                    .collect(),
            ),
        }
    }

    pub fn track_job(&self, job_id: &str) {
        self.labels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(format!("enac-cd.job-id={job_id}"));
    }
}

impl Drop for JobContainers {
    fn drop(&mut self) {
        let labels = self
            .labels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for label in labels.iter() {
            let Ok(listed) = Command::new("docker")
                .args(["ps", "-a", "-q", "--filter"])
                .arg(format!("label={label}"))
                .output()
            else {
                continue;
            };
            let ids = String::from_utf8_lossy(&listed.stdout).into_owned();
            let ids: Vec<&str> = ids.lines().collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}
