//! The `enac-cd` binary running as its own process, its environment, and a
//! client that reaches it by address (it outlives a restart of the service).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::app::{apps_list, Backend};
use super::redis_server::RedisServer;
use super::wait::eventually;
use super::{fake_ansible, send, ADMIN_TOKEN, NO_POLICIES, SECRET};

/// How long a service process may take to listen.
const START_DEADLINE: Duration = Duration::from_secs(20);

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
        command.stdout(Stdio::null()).stderr(Stdio::null());
        ServiceProcess::listening(command, addr, None)
    }

    /// Like [`ServiceProcess::spawn`], with the service's log (its stderr)
    /// in `log`, shown when it exits before listening.
    pub fn spawn_logged(mut command: Command, addr: SocketAddr, log: &Path) -> ServiceProcess {
        let log_file = std::fs::File::create(log).expect("log file created");
        command.stdout(Stdio::null()).stderr(log_file);
        ServiceProcess::listening(command, addr, Some(log))
    }

    fn listening(mut command: Command, addr: SocketAddr, log: Option<&Path>) -> ServiceProcess {
        let child = command.spawn().expect("enac-cd binary starts");
        let mut service = ServiceProcess { child, addr };
        let until = Instant::now() + START_DEADLINE;
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = service.child.try_wait() {
                match log {
                    Some(log) => panic!(
                        "enac-cd exited with {status} before listening:\n{}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    ),
                    None => panic!("enac-cd exited with {status} before listening"),
                }
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

    /// Sends `signal` (`libc::SIGHUP`, `libc::SIGTERM`…) to the service.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) with a pid we spawned and a valid signal number.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "signal {signal} sent to {pid}");
    }

    /// Sends SIGTERM and waits, up to `deadline`, for the service to exit.
    pub fn terminate(&mut self, deadline: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < until, "no exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
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
pub fn serve_env(redis: &RedisServer, data_dir: &Path) -> Vec<(&'static str, String)> {
    let mut env = vec![("CD_REDIS_URL", redis.url())];
    env.extend(process_env(data_dir));
    env
}

/// [`serve_env`] on `backend`, for a service answering at `addr`
/// (`CD_PUBLIC_URL`, where its jobs call back).
pub fn serve_env_at(
    backend: &Backend,
    data_dir: &Path,
    addr: SocketAddr,
) -> Vec<(&'static str, String)> {
    let mut env = match backend {
        Backend::Redis(redis) => serve_env(redis, data_dir),
        Backend::Embedded => process_env(data_dir),
    };
    env.push(("CD_PUBLIC_URL", format!("http://{addr}")));
    env.push(("CD_POLICY_DIR", NO_POLICIES.to_owned()));
    env
}

/// Everything of [`serve_env`] but the store.
fn process_env(data_dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("CD_LAUNCHER", "process".to_owned()),
        ("CD_PROCESS_COMMAND", fake_ansible().display().to_string()),
        ("CD_DATA_DIR", data_dir.display().to_string()),
        ("CD_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("CD_ENV", "test".to_owned()),
    ]
}

/// Writes a `CD_APPS_FILE` in `dir` with one app per `(deployment_id,
/// inventory)`, each with [`SECRET`]; returns its path.
pub fn write_apps_file(dir: &Path, apps: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("apps.json");
    std::fs::write(&path, apps_list(apps).to_string()).expect("apps file written");
    path
}

/// Jobs the service at `addr` created in the last hour, whatever their status.
pub async fn jobs_started_at(http: &reqwest::Client, addr: SocketAddr) -> u64 {
    let request = http
        .get(format!("http://{addr}/load/?periods=1_hour:3600"))
        .bearer_auth(ADMIN_TOKEN);
    let (status, body) = send(request).await;
    assert_eq!(status, 200, "{body}");
    body["load"]["1_hour"]
        .as_object()
        .unwrap_or_else(|| panic!("no 1_hour load in {body}"))
        .values()
        .map(|count| count.as_u64().expect("counts are numbers"))
        .sum()
}

/// A client of the service at `addr` acting for one deployment id with
/// [`SECRET`]; every call must answer 200.
pub struct DeploymentClient {
    pub addr: SocketAddr,
    pub id: &'static str,
}

impl DeploymentClient {
    pub async fn call(&self, path: &str, body: &Value) -> Value {
        let mut request = reqwest::Client::new().post(format!("http://{}{path}", self.addr));
        if path == "/set-available-apps/" {
            request = request.bearer_auth(ADMIN_TOKEN);
        }
        let (status, body) = send(request.json(body)).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    /// Makes this deployment the only app, on `inventory`.
    pub async fn register(&self, inventory: &str) {
        self.call("/set-available-apps/", &apps_list(&[(self.id, inventory)]))
            .await;
    }

    pub async fn deploy(&self) -> Value {
        let body = json!({"deployment_id": self.id, "deployment_secret": SECRET});
        self.call("/app-deploy/", &body).await
    }

    pub async fn status(&self, job_id: &str) -> Value {
        let body = json!({"deployment_id": self.id, "deployment_secret": SECRET, "job_id": job_id});
        self.call("/job-status/", &body).await
    }

    /// Polls `/job-status/` until the job's status is one of `wanted`.
    pub async fn wait_status(&self, job_id: &str, wanted: &[&str], deadline: Duration) -> Value {
        eventually(
            &format!("job {job_id} to be one of {wanted:?}"),
            deadline,
            || async {
                let answer = self.status(job_id).await;
                wanted
                    .contains(&answer["status"].as_str().unwrap_or(""))
                    .then_some(answer)
            },
        )
        .await
    }
}
