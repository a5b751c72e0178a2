//! Slow and idle clients cannot hold the service: header, body and idle
//! timeouts, a cap on open connections, and a stop that drains in-flight
//! requests for a bounded time only. Real sockets against the real binary.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The service on the embedded store with `extra` settings.
fn service(extra: &[(&'static str, &str)]) -> (ServiceProcess, SocketAddr, tempfile::TempDir) {
    let data_dir = tempfile::tempdir().expect("data dir");
    let addr = free_addr();
    let mut env = serve_env_at(&Backend::Embedded, data_dir.path(), addr);
    env.extend(extra.iter().map(|(name, value)| (*name, value.to_string())));
    (ServiceProcess::start(&env, addr), addr, data_dir)
}

/// Reads until the server closes the connection; what it sent, and when.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(read)) => received.extend_from_slice(&buffer[..read]),
            Err(_) => panic!(
                "the connection was still open after {limit:?}: {}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_half_sent_request_head_is_closed_after_the_header_timeout() {
    let (_service, addr, _dir) = service(&[("CD_HEADER_TIMEOUT", "1s")]);
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"POST /app-deploy/ HTTP/1.1\r\nHost: enac-cd\r\nContent-Type: appl")
        .await
        .expect("write");
    let (_, after) = until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(
        after >= Duration::from_millis(800),
        "closed too early: {after:?}"
    );
}

#[tokio::test]
async fn a_stalled_request_body_is_cut_after_the_body_timeout() {
    let (_service, addr, _dir) = service(&[("CD_BODY_TIMEOUT", "1s")]);
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            b"POST /app-deploy/ HTTP/1.1\r\nHost: enac-cd\r\nContent-Type: application/json\r\n\
              Content-Length: 4000\r\n\r\n{\"deployment_id\":",
        )
        .await
        .expect("write");
    let (answer, after) = until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(after < Duration::from_secs(4), "{after:?}");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_header_timeout() {
    let (_service, addr, _dir) = service(&[("CD_HEADER_TIMEOUT", "1s")]);
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: enac-cd\r\n\r\n")
        .await
        .expect("write");
    let (answer, _) = until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn connections_over_the_cap_wait_until_one_closes() {
    let (_service, addr, _dir) =
        service(&[("CD_MAX_CONNECTIONS", "2"), ("CD_HEADER_TIMEOUT", "60s")]);
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .expect("write");
        holders.push(stream);
    }
    let client = reqwest::Client::new();
    let health = format!("http://{addr}/healthz");
    let waiting = client
        .get(&health)
        .timeout(Duration::from_millis(800))
        .send()
        .await;
    assert!(waiting.is_err(), "a third connection was served at the cap");
    drop(holders.pop());
    let served = client
        .get(&health)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("served once a connection closed");
    assert_eq!(served.status().as_u16(), 200);
}

#[tokio::test]
async fn sigterm_stops_within_the_drain_timeout_despite_a_half_sent_request() {
    let (mut service, addr, _dir) = service(&[
        ("CD_HEADER_TIMEOUT", "60s"),
        ("CD_BODY_TIMEOUT", "60s"),
        ("CD_DRAIN_TIMEOUT", "1s"),
    ]);
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            b"POST /app-deploy/ HTTP/1.1\r\nHost: enac-cd\r\nContent-Type: application/json\r\n\
              Content-Length: 4000\r\n\r\n{",
        )
        .await
        .expect("write");
    // The request is in flight: its body will never come.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let status = service.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
