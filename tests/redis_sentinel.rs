//! Redis with Sentinel: a primary, a replica and three Sentinels on loopback
//! ports. The primary dies while a job runs; the service follows the
//! promoted replica without a restart and the job ends as it should.

mod common;

use std::time::Duration;

use common::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// The port the Sentinel on `sentinel` names as `main`'s primary.
async fn primary_port(sentinel: &RedisServer) -> Option<u16> {
    let mut connection = sentinel
        .client()
        .get_multiplexed_async_connection()
        .await
        .ok()?;
    let (_, port): (String, u16) = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg("main")
        .query_async(&mut connection)
        .await
        .ok()?;
    Some(port)
}

async fn exists(server: &RedisServer, key: &str) -> bool {
    let Ok(mut connection) = server.client().get_multiplexed_async_connection().await else {
        return false;
    };
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<bool>(&mut connection)
        .await
        .unwrap_or(false)
}

/// Polls `/job-status/` until the job is final; 503s (the store between two
/// primaries) are waited out, not failures.
async fn wait_final(app: &TestApp, job_id: &str) -> serde_json::Value {
    eventually(&format!("job {job_id} to end"), DEADLINE, || async {
        let (status, body) = app
            .post(
                "/job-status/",
                &serde_json::json!({"deployment_id": "app-one", "deployment_secret": SECRET, "job_id": job_id}),
            )
            .await;
        let fine = status == 200 && matches!(body["status"].as_str(), Some("success" | "error"));
        fine.then_some(body)
    })
    .await
}

#[tokio::test]
async fn the_service_follows_a_sentinel_failover_without_a_restart_and_loses_no_job() {
    let mut primary = RedisServer::start();
    let replica = RedisServer::replica_of(&primary);
    let dir = tempfile::tempdir().expect("a dir for the Sentinels' configs");
    let sentinels: Vec<RedisServer> = (0..3)
        .map(|_| RedisServer::sentinel(&primary, dir.path()))
        .collect();
    for sentinel in &sentinels {
        eventually("the Sentinels to watch the primary", DEADLINE, || async {
            (primary_port(sentinel).await == Some(primary.port)).then_some(())
        })
        .await;
    }
    let hosts: Vec<String> = sentinels
        .iter()
        .map(|sentinel| format!("127.0.0.1:{}", sentinel.port))
        .collect();
    let url = format!("redis+sentinel://{}/main/0", hosts.join(","));
    let app = TestApp::start(Backend::Redis(&primary), &[], |settings| {
        settings.redis_url = Some(secrecy::SecretString::from(url));
    })
    .await;
    app.set_apps(&[("app-one", "sleep-4-failover")]).await;
    let started = app.deploy("app-one").await;
    let job_id = job_id_of(&started);
    let job_key = format!("enac-cd:job:{job_id}");
    eventually("the job to reach the replica", DEADLINE, || async {
        exists(&replica, &job_key).await.then_some(())
    })
    .await;

    // The primary dies while the job's program runs.
    primary.stop();
    eventually("the Sentinels to promote the replica", DEADLINE, || async {
        (primary_port(&sentinels[0]).await == Some(replica.port)).then_some(())
    })
    .await;

    // The program's final callback reaches the new primary through the
    // same service; the lock goes with the job, and deploys go on.
    let done = wait_final(&app, &job_id).await;
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(done["output"], "sleeping\nwoke up\n");
    let next = app.deploy("app-one").await;
    assert_eq!(next["status"], "starting", "{next}");
    let next_id = job_id_of(&next);
    assert_eq!(wait_final(&app, &next_id).await["status"], "success");
    assert!(
        exists(&replica, &format!("enac-cd:job:{next_id}")).await,
        "the new job lives on the promoted replica"
    );
}
