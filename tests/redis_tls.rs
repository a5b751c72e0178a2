//! Redis over TLS (`rediss://`): a real `redis-server` with a TLS port and a
//! certificate from a CA made here, trusted through `SSL_CERT_FILE` (the
//! system trust store's override) or `CD_CA_FILE` (added to it), as an
//! operator with a private CA would.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::tls::TestCertificates;
use common::*;

const DEADLINE: Duration = Duration::from_secs(20);

/// `redis-server` answering TLS only, stopped (by PID) on drop.
struct TlsRedis {
    port: u16,
    child: Child,
}

impl TlsRedis {
    fn start(certificates: &TestCertificates) -> TlsRedis {
        let port = free_port();
        let path = |path: std::path::PathBuf| path.display().to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--tls-cert-file",
                &path(certificates.server_certificate()),
                "--tls-key-file",
                &path(certificates.server_key()),
            ])
            .args([
                "--tls-ca-cert-file",
                &path(certificates.ca()),
                "--tls-auth-clients",
                "no",
            ])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(certificates.dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("\n*** redis-server is needed (apt-get install redis-server)\n");
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < until,
                "redis-server (TLS) did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsRedis { port, child }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Registers an app on the service at `addr` and deploys it to success.
async fn assert_deploys(addr: std::net::SocketAddr) {
    let app = DeploymentClient {
        addr,
        id: "app-one",
    };
    app.register("ok-tls").await;
    let started = app.deploy().await;
    let job_id = job_id_of(&started);
    let done = app
        .wait_status(&job_id, &["success", "error"], DEADLINE)
        .await;
    assert_eq!(done["status"], "success", "{done}");
}

/// The service's environment for a TLS-only `redis` with nothing trusting
/// its CA yet.
fn tls_env(
    redis: &TlsRedis,
    data_dir: &std::path::Path,
    addr: std::net::SocketAddr,
) -> Vec<(&'static str, String)> {
    let mut env = serve_env_at(&Backend::Embedded, data_dir, addr);
    env.push((
        "CD_REDIS_URL",
        format!("rediss://127.0.0.1:{}/0", redis.port),
    ));
    env
}

#[tokio::test]
async fn the_service_runs_on_redis_over_tls_with_a_private_ca() {
    let certificates = TestCertificates::make();
    let redis = TlsRedis::start(&certificates);
    let data_dir = tempfile::tempdir().expect("data dir");
    let addr = free_addr();
    let mut env = tls_env(&redis, data_dir.path(), addr);
    env.push(("SSL_CERT_FILE", certificates.ca().display().to_string()));
    let _service = ServiceProcess::start(&env, addr);
    assert_deploys(addr).await;
}

#[tokio::test]
async fn cd_ca_file_adds_a_private_ca_for_redis_over_tls() {
    let certificates = TestCertificates::make();
    let redis = TlsRedis::start(&certificates);
    let data_dir = tempfile::tempdir().expect("data dir");
    let addr = free_addr();
    let mut env = tls_env(&redis, data_dir.path(), addr);
    env.push(("CD_CA_FILE", certificates.ca().display().to_string()));
    let mut command = Command::new(env!("CARGO_BIN_EXE_enac-cd"));
    command
        .arg("serve")
        .env("CD_LISTEN", addr.to_string())
        // The system's trust store stays in use: only CD_CA_FILE names the CA.
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .envs(env);
    let log = data_dir.path().join("service.log");
    let _service = ServiceProcess::spawn_logged(command, addr, &log);
    assert_deploys(addr).await;
}

#[tokio::test]
async fn a_server_certificate_from_an_untrusted_ca_is_refused() {
    let certificates = TestCertificates::make();
    let redis = TlsRedis::start(&certificates);
    let data_dir = tempfile::tempdir().expect("data dir");
    let output = Command::new(env!("CARGO_BIN_EXE_enac-cd"))
        .arg("serve")
        .env("CD_LISTEN", free_addr().to_string())
        .env("CD_POLICY_DIR", NO_POLICIES)
        .env("CD_LAUNCHER", "process")
        .env("CD_PROCESS_COMMAND", fake_ansible())
        .env("CD_DATA_DIR", data_dir.path())
        .env(
            "CD_REDIS_URL",
            format!("rediss://127.0.0.1:{}/0", redis.port),
        )
        // The private CA is not trusted: nothing names it.
        .env("SSL_CERT_FILE", "/nonexistent-ca.pem")
        .env_remove("CD_CA_FILE")
        .output()
        .expect("enac-cd runs");
    assert!(
        !output.status.success(),
        "the service started on an untrusted server"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CD_REDIS_URL"), "{stderr}");
}
