//! Redis over TLS (`rediss://`): a real `redis-server` with a TLS port and a
//! certificate from a CA made here, trusted through `SSL_CERT_FILE` (the
//! system trust store's override), as an operator with a private CA would.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const DEADLINE: Duration = Duration::from_secs(20);

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect(
            "\n*** openssl is needed to make the test's certificates (apt-get install openssl)\n",
        );
    assert!(status.success(), "openssl {args:?} failed");
}

/// A CA, and a certificate for 127.0.0.1 signed by it.
fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=enac-cd test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "redis.key",
            "-out",
            "redis.csr",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("ext file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "redis.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "redis.pem",
        ],
    );
}

/// `redis-server` answering TLS only, stopped (by PID) on drop.
struct TlsRedis {
    port: u16,
    child: Child,
}

impl TlsRedis {
    fn start(dir: &Path) -> TlsRedis {
        let port = free_port();
        let path = |name: &str| dir.join(name).display().to_string();
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
                &path("redis.pem"),
                "--tls-key-file",
                &path("redis.key"),
            ])
            .args([
                "--tls-ca-cert-file",
                &path("ca.pem"),
                "--tls-auth-clients",
                "no",
            ])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(dir)
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

#[tokio::test]
async fn the_service_runs_on_redis_over_tls_with_a_private_ca() {
    let certs = tempfile::tempdir().expect("a dir for certificates");
    make_certificates(certs.path());
    let redis = TlsRedis::start(certs.path());
    let data_dir = tempfile::tempdir().expect("data dir");
    let addr = free_addr();
    let mut env = serve_env_at(&Backend::Embedded, data_dir.path(), addr);
    env.push((
        "CD_REDIS_URL",
        format!("rediss://127.0.0.1:{}/0", redis.port),
    ));
    env.push((
        "SSL_CERT_FILE",
        certs.path().join("ca.pem").display().to_string(),
    ));
    let _service = ServiceProcess::start(&env, addr);
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

#[tokio::test]
async fn a_server_certificate_from_an_untrusted_ca_is_refused() {
    let certs = tempfile::tempdir().expect("a dir for certificates");
    make_certificates(certs.path());
    let redis = TlsRedis::start(certs.path());
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
        .output()
        .expect("enac-cd runs");
    assert!(
        !output.status.success(),
        "the service started on an untrusted server"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CD_REDIS_URL"), "{stderr}");
}
