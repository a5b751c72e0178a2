//! Faults between the service and Redis that Redis itself does not see: a
//! connection that stops answering without closing (a dropped NAT entry, a
//! partition) is replaced, and requests are answered again within seconds.

mod common;

use std::time::{Duration, Instant};

use common::tcp_proxy::TcpProxy;
use common::*;
use serde_json::json;

/// Two response timeouts and a reconnect fit well within this.
const RECOVERY: Duration = Duration::from_secs(15);
const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_stops_answering_is_replaced_within_seconds() {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(redis.port).await;
    let through_proxy = format!("--redis-url={}", proxy.redis_url());
    let app = TestApp::start(Backend::Redis(&redis), &[&through_proxy], |_| {}).await;
    app.set_apps(&[("app-one", "ok-faults")]).await;
    let job_id = job_id_of(&app.deploy("app-one").await);
    assert_eq!(
        app.wait_final("app-one", &job_id, DEADLINE).await["status"],
        "success"
    );

    proxy.freeze_existing();
    let frozen_at = Instant::now();
    let connections_before = proxy.accepted();
    let status_request = json!({
        "deployment_id": "app-one",
        "deployment_secret": SECRET,
        "job_id": job_id,
    });

    // The connection in use never answers again: the first request fails
    // after the response timeout instead of hanging.
    let (status, body) = app.post("/job-status/", &status_request).await;
    assert_eq!(status, 503, "{body}");
    assert_error_body(&body);

    let body = eventually("/job-status/ to answer again", RECOVERY, || async {
        let (status, body) = app.post("/job-status/", &status_request).await;
        (status == 200).then_some(body)
    })
    .await;
    let recovered_in = frozen_at.elapsed();
    eprintln!("/job-status/ answered again {recovered_in:?} after the freeze");
    assert_eq!(body["status"], "success", "{body}");
    assert!(
        proxy.accepted() > connections_before,
        "the answer came through a new connection"
    );

    // Deploys work again too, through to the job's last callback.
    let job_id = job_id_of(&app.deploy("app-one").await);
    assert_eq!(
        app.wait_final("app-one", &job_id, DEADLINE).await["status"],
        "success"
    );
}
