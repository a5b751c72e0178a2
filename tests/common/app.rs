//! The service running inside the test process on port 0, with the settings
//! `serve` would parse from its flags.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use enac_cd::config::Settings;
use enac_cd::domain::Job;
use serde_json::{json, Value};

use super::redis_server::RedisServer;
use super::service_process::jobs_started_at;
use super::wait::eventually;
use super::{fake_ansible, send, ADMIN_TOKEN, NO_POLICIES, SECRET};

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
        let mut args = vec![
            format!("--public-url=http://{addr}"),
            // The instance's name in the store comes from its port.
            format!("--listen={addr}"),
        ];
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
        send(self.http.post(self.url(path)).json(body)).await
    }

    /// A JSON POST with `token` as its bearer, or without authorization.
    pub async fn post_with_token(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> (u16, Value) {
        let mut request = self.http.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        send(request).await
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_with_token(path, Some(ADMIN_TOKEN), body).await
    }

    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        send(self.http.get(self.url(path)).bearer_auth(ADMIN_TOKEN)).await
    }

    /// A plain GET, its response as is (status, headers, body).
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// Registers one app per `(deployment_id, inventory)` with [`SECRET`].
    pub async fn set_apps(&self, apps: &[(&str, &str)]) {
        let (status, body) = self
            .admin_post("/set-available-apps/", &apps_list(apps))
            .await;
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

    /// The job as the store holds it.
    pub async fn job(&self, job_id: &str) -> Job {
        self.state
            .store
            .job(job_id)
            .await
            .expect("the store answers")
            .expect("the job exists")
    }

    /// Jobs created in the last hour, whatever their status.
    pub async fn jobs_started(&self) -> u64 {
        jobs_started_at(&self.http, self.addr).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The app list `/set-available-apps/` takes: one app per `(deployment_id,
/// inventory)`, each with [`SECRET`].
pub fn apps_list(apps: &[(&str, &str)]) -> Value {
    apps.iter()
        .map(|(id, inventory)| {
            json!({"deployment_id": id, "inventory": inventory, "deployment_secret": SECRET})
        })
        .collect()
}
