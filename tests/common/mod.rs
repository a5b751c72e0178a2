//! Shared test harness, one file per concern: a real `redis-server` on a
//! free port (`redis_server`), the service on port 0 in-process (`app`) or
//! as its binary (`service_process`), polling with deadlines (`wait`),
//! signed webhook deliveries (`webhook`), an OIDC issuer with local keys
//! (`oidc`), runs of the binary as a tool (`binary`), the real Docker
//! engine (`docker`) and a private CA with a TLS endpoint (`tls`).
#![allow(dead_code)]

pub mod app;
pub mod binary;
pub mod browser;
pub mod docker;
pub mod forge;
pub mod oidc;
pub mod program;
pub mod redis_server;
pub mod service_process;
pub mod sse;
pub mod tcp_proxy;
pub mod tls;
pub mod wait;
pub mod webhook;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use serde_json::Value;

// Each test crate uses its own part of these.
#[allow(unused_imports)]
pub use app::{settings, settings_for, Backend, TestApp};
#[allow(unused_imports)]
pub use redis_server::RedisServer;
#[allow(unused_imports)]
pub use service_process::{
    serve_env, serve_env_at, write_apps_file, DeploymentClient, ServiceProcess,
};
#[allow(unused_imports)]
pub use wait::{eventually, unix_now};

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

/// A loopback address on a free port, for a service started as a process.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

pub fn fake_ansible() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-ansible")
}

/// Sends `request`; returns the status and the JSON body (or the text).
pub async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    read(request.send().await.expect("request sent")).await
}

pub async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body read");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// The `job_id` of an answer that started or names a job.
pub fn job_id_of(answer: &Value) -> String {
    answer["job_id"].as_str().expect("job id").to_owned()
}

/// Whether `needle` stands anywhere in `haystack`.
pub fn bytes_contain(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The shared error body: `{"status":"error","error":"<reason>"}`.
pub fn assert_error_body(body: &Value) {
    assert_eq!(body["status"], "error", "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|error| !error.is_empty()),
        "no error message: {body}"
    );
}
