//! The real Docker engine of this machine: the test image, the containers
//! of a job, and their clean-up.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::wait::eventually;

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

/// Runs `docker ARGS`, which must succeed; returns its standard output.
pub async fn docker(args: &[&str]) -> Vec<u8> {
    let ran = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .unwrap_or_else(|error| panic!("docker {} runs: {error}", args[0]));
    assert!(
        ran.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&ran.stderr)
    );
    ran.stdout
}

/// Ids of the containers (running or not) carrying `label` (`key=value`).
pub async fn docker_containers(label: &str) -> Vec<String> {
    let filter = format!("label={label}");
    let listed = docker(&["ps", "-a", "-q", "--no-trunc", "--filter", &filter]).await;
    String::from_utf8_lossy(&listed)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `docker inspect` of one container.
pub async fn docker_inspect(container: &str) -> Value {
    let inspected = docker(&["inspect", container]).await;
    let list: Value = serde_json::from_slice(&inspected).expect("docker inspect prints JSON");
    list[0].clone()
}

pub async fn docker_kill(container: &str) {
    docker(&["kill", container]).await;
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

/// The `Env` of a container's config (`KEY=value` entries), checked to hold
/// each of `wanted`.
pub fn assert_container_env<'a>(env: &'a Value, wanted: &[String]) -> Vec<&'a str> {
    let env: Vec<&str> = env
        .as_array()
        .expect("Env is a list")
        .iter()
        .map(|value| value.as_str().expect("Env entries are strings"))
        .collect();
    for wanted in wanted {
        assert!(
            env.contains(&wanted.as_str()),
            "{wanted} missing from {env:?}"
        );
    }
    env
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
