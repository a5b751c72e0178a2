//! Live output (contract §10): `GET /api/v1/jobs/{id}/output` as Server-Sent
//! Events, on both stores and across replicas: the stored output, then each
//! chunk with its byte offset as `id`, status changes and the end; resuming
//! with `Last-Event-ID`; who may follow; keep-alive comments.
//!
//! Jobs run the fake program on a `hang*` inventory: it reports `running`
//! with `hanging\n`, then sleeps, so every later output is the test's own.

mod common;

use std::time::{Duration, Instant};

use common::program::{hanging_program, report, ProgramGuard};
use common::sse::{follow_request, EventStream};
use common::*;
use serde_json::{json, Value};

const VIEWER_TOKEN: &str = "test-viewer-token-0123456789";
const DEADLINE: Duration = Duration::from_secs(15);
/// Contract §10: output appended through any replica reaches followers on
/// any other within 1 s.
const ACROSS_REPLICAS: Duration = Duration::from_secs(1);

async fn service(backend: Backend<'_>) -> TestApp {
    let viewer = format!("--viewer-token={VIEWER_TOKEN}");
    TestApp::start(backend, &[&viewer, "--job-timeout=60s"], |_| {}).await
}

/// A running `hang` job: its id, status token and program.
struct HangingJob {
    id: String,
    status_token: String,
    _program: ProgramGuard,
}

async fn hanging_job(app: &TestApp, deployment_id: &str) -> HangingJob {
    let started = app.deploy(deployment_id).await;
    let id = job_id_of(&started);
    HangingJob {
        _program: hanging_program(app, &id, DEADLINE).await,
        status_token: started["status_token"]
            .as_str()
            .expect("a status token")
            .to_owned(),
        id,
    }
}

async fn a_follower_gets_the_stored_output_then_each_chunk_and_the_end(app: TestApp) {
    app.set_apps(&[("app-hang", "hang-follow")]).await;
    let job = hanging_job(&app, "app-hang").await;
    let mut events = EventStream::open(&app, &job.id, VIEWER_TOKEN, None).await;

    let stored = events.expect("output", "hanging\n", DEADLINE).await;
    assert_eq!(stored.id.as_deref(), Some("8"), "the byte offset after it");
    events.expect("status", "running", DEADLINE).await;

    report(&app, &job.id, "running", "step é\n", true).await;
    let chunk = events.expect("output", "step é\n", DEADLINE).await;
    assert_eq!(chunk.id.as_deref(), Some("16"));
    // The container's way: the whole output again, longer; only the new part comes.
    report(&app, &job.id, "running", "hanging\nstep é\ntwo\n", false).await;
    let chunk = events.expect("output", "two\n", DEADLINE).await;
    assert_eq!(chunk.id.as_deref(), Some("20"));

    report(&app, &job.id, "success", "done\n", true).await;
    events.expect("output", "done\n", DEADLINE).await;
    events.expect("status", "success", DEADLINE).await;
    events.expect("end", "success", DEADLINE).await;
    assert_eq!(
        events.next(DEADLINE).await,
        None,
        "the stream closes after its end"
    );

    // A final job's stream is the whole output, its status and the end.
    let mut again = EventStream::open(&app, &job.id, &job.status_token, None).await;
    let whole = again
        .expect("output", "hanging\nstep é\ntwo\ndone\n", DEADLINE)
        .await;
    assert_eq!(whole.id.as_deref(), Some("25"));
    again.expect("status", "success", DEADLINE).await;
    again.expect("end", "success", DEADLINE).await;
    assert_eq!(again.next(DEADLINE).await, None);
}

#[tokio::test]
async fn a_follower_gets_the_stored_output_then_each_chunk_and_the_end_embedded() {
    a_follower_gets_the_stored_output_then_each_chunk_and_the_end(service(Backend::Embedded).await)
        .await;
}

#[tokio::test]
async fn a_follower_gets_the_stored_output_then_each_chunk_and_the_end_redis() {
    let redis = RedisServer::start();
    a_follower_gets_the_stored_output_then_each_chunk_and_the_end(
        service(Backend::Redis(&redis)).await,
    )
    .await;
}

#[tokio::test]
async fn a_reconnect_with_last_event_id_resumes_after_what_it_got() {
    let app = service(Backend::Embedded).await;
    app.set_apps(&[("app-hang", "hang-resume")]).await;
    let job = hanging_job(&app, "app-hang").await;
    let mut events = EventStream::open(&app, &job.id, ADMIN_TOKEN, None).await;
    let first = events.expect("output", "hanging\n", DEADLINE).await;
    drop(events);

    report(&app, &job.id, "running", "missed while away\n", true).await;
    let last_id = first.id.expect("an id");
    let mut resumed = EventStream::open(&app, &job.id, ADMIN_TOKEN, Some(&last_id)).await;
    let caught_up = resumed
        .expect("output", "missed while away\n", DEADLINE)
        .await;
    assert_eq!(caught_up.id.as_deref(), Some("26"));
    resumed.expect("status", "running", DEADLINE).await;

    // Up to date: nothing but the status until the next chunk.
    let mut current = EventStream::open(&app, &job.id, ADMIN_TOKEN, Some("26")).await;
    current.expect("status", "running", DEADLINE).await;
    report(&app, &job.id, "running", "next\n", true).await;
    current.expect("output", "next\n", DEADLINE).await;
    resumed.expect("output", "next\n", DEADLINE).await;
}

async fn a_follower_joining_later_gets_the_output_as_it_is_now(app: TestApp) {
    app.set_apps(&[("app-hang", "hang-later")]).await;
    let job = hanging_job(&app, "app-hang").await;
    // The first follower keeps the job followed (and its read kept).
    let mut first = EventStream::open(&app, &job.id, VIEWER_TOKEN, None).await;
    first.expect("output", "hanging\n", DEADLINE).await;
    first.expect("status", "running", DEADLINE).await;

    report(&app, &job.id, "running", "more\n", true).await;
    first.expect("output", "more\n", DEADLINE).await;
    let mut later = EventStream::open(&app, &job.id, VIEWER_TOKEN, None).await;
    let stored = later.expect("output", "hanging\nmore\n", DEADLINE).await;
    assert_eq!(stored.id.as_deref(), Some("13"));
}

#[tokio::test]
async fn a_follower_joining_later_gets_the_output_as_it_is_now_embedded() {
    a_follower_joining_later_gets_the_output_as_it_is_now(service(Backend::Embedded).await).await;
}

#[tokio::test]
async fn a_follower_joining_later_gets_the_output_as_it_is_now_redis() {
    let redis = RedisServer::start();
    a_follower_joining_later_gets_the_output_as_it_is_now(service(Backend::Redis(&redis)).await)
        .await;
}

#[tokio::test]
async fn a_long_stored_output_comes_in_pieces_each_with_its_offset() {
    let app = service(Backend::Embedded).await;
    app.set_apps(&[("app-hang", "hang-long")]).await;
    let job = hanging_job(&app, "app-hang").await;
    let long: String = (0..2000).map(|line| format!("ligne {line} é\n")).collect();
    report(&app, &job.id, "running", &long, true).await;
    let whole = format!("hanging\n{long}");

    let mut events = EventStream::open(&app, &job.id, VIEWER_TOKEN, None).await;
    let mut received = String::new();
    let mut ids = Vec::new();
    while received.len() < whole.len() {
        let piece = events.next(DEADLINE).await.expect("the stream is open");
        assert_eq!(piece.event, "output", "{piece:?}");
        assert!(
            piece.data.len() <= 16 * 1024 + 3,
            "{} bytes",
            piece.data.len()
        );
        received.push_str(&piece.data);
        let id: u64 = piece.id.expect("an id").parse().expect("an offset");
        assert_eq!(id, received.len() as u64, "the offset after the piece");
        ids.push(id);
    }
    assert_eq!(received, whole);
    assert!(ids.len() >= 2, "several pieces: {ids:?}");
    events.expect("status", "running", DEADLINE).await;

    // Resuming at a piece's id gives exactly the rest.
    let middle = ids[0];
    let mut resumed =
        EventStream::open(&app, &job.id, VIEWER_TOKEN, Some(&middle.to_string())).await;
    let mut rest = String::new();
    while rest.len() < whole.len() - middle as usize {
        rest.push_str(&resumed.next(DEADLINE).await.expect("open").data);
    }
    assert_eq!(rest, whole[middle as usize..]);
}

#[tokio::test]
async fn output_through_one_replica_reaches_a_follower_of_another_within_a_second() {
    let redis = RedisServer::start();
    let writer = service(Backend::Redis(&redis)).await;
    let reader = service(Backend::Redis(&redis)).await;
    writer.set_apps(&[("app-hang", "hang-replicas")]).await;
    let job = hanging_job(&writer, "app-hang").await;
    let mut events = EventStream::open(&reader, &job.id, VIEWER_TOKEN, None).await;
    events.expect("output", "hanging\n", DEADLINE).await;
    events.expect("status", "running", DEADLINE).await;

    for line in 0..5 {
        let chunk = format!("line {line}\n");
        let sent = Instant::now();
        report(&writer, &job.id, "running", &chunk, true).await;
        events.expect("output", &chunk, DEADLINE).await;
        let took = sent.elapsed();
        assert!(took < ACROSS_REPLICAS, "chunk {line} took {took:?}");
    }
    let (code, _) = writer
        .post_with_token(
            &format!("/api/v1/jobs/{}/cancel", job.id),
            Some(ADMIN_TOKEN),
            &json!({}),
        )
        .await;
    assert_eq!(code, 202);
    events
        .expect("output", "\ncancelled by admin\n", DEADLINE)
        .await;
    events.expect("status", "error", DEADLINE).await;
    events.expect("end", "error", DEADLINE).await;
}

/// `CLIENT KILL TYPE pubsub`: every subscription of the server is cut.
async fn cut_subscriptions(redis: &RedisServer) {
    let client = redis::Client::open(redis.url()).expect("a redis client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("a redis connection");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut connection)
        .await
        .expect("CLIENT KILL");
    assert!(killed >= 1, "the service's subscription was cut");
}

#[tokio::test]
async fn a_cut_subscription_loses_no_chunk() {
    let redis = RedisServer::start();
    let app = service(Backend::Redis(&redis)).await;
    app.set_apps(&[("app-hang", "hang-cut")]).await;
    let job = hanging_job(&app, "app-hang").await;
    let mut events = EventStream::open(&app, &job.id, ADMIN_TOKEN, None).await;
    events.expect("output", "hanging\n", DEADLINE).await;
    events.expect("status", "running", DEADLINE).await;

    cut_subscriptions(&redis).await;
    // Announced while nobody listens: the follower reads the job again once
    // the subscription is back.
    report(&app, &job.id, "running", "during the cut\n", true).await;
    events.expect("output", "during the cut\n", DEADLINE).await;
    report(&app, &job.id, "running", "after\n", true).await;
    events.expect("output", "after\n", DEADLINE).await;
}

async fn status_of(response: reqwest::Response) -> (u16, Value) {
    read(response).await
}

#[tokio::test]
async fn following_is_refused_like_reading_and_changes_nothing() {
    let app = service(Backend::Embedded).await;
    app.set_apps(&[("app-hang", "hang-refused"), ("app-other", "hang-other")])
        .await;
    let job = hanging_job(&app, "app-hang").await;
    let other = hanging_job(&app, "app-other").await;

    let (code, body) = status_of(follow_request(&app, &job.id, None, None).await).await;
    assert_eq!(code, 401, "{body}");
    assert_error_body(&body);
    let (code, body) =
        status_of(follow_request(&app, &job.id, Some("not-a-token"), None).await).await;
    assert_eq!(code, 401, "{body}");
    let (code, body) =
        status_of(follow_request(&app, &job.id, Some(&other.status_token), None).await).await;
    assert_eq!(code, 404, "another job's status token: {body}");
    let unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    let (code, body) =
        status_of(follow_request(&app, unknown, Some(ADMIN_TOKEN), None).await).await;
    assert_eq!(code, 404, "{body}");
    for bad in ["abc", "-1", "1.5"] {
        let (code, body) =
            status_of(follow_request(&app, &job.id, Some(ADMIN_TOKEN), Some(bad)).await).await;
        assert_eq!(code, 400, "Last-Event-ID {bad}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("Last-Event-ID"),
            "{body}"
        );
    }
    // The job's own status token follows it.
    let mut own = EventStream::open(&app, &job.id, &job.status_token, None).await;
    own.expect("output", "hanging\n", DEADLINE).await;
    assert_eq!(
        app.job(&job.id).await.output,
        "hanging\n",
        "nothing changed"
    );
}

#[tokio::test]
async fn an_idle_stream_gets_a_comment_at_least_every_15_seconds() {
    let app = service(Backend::Embedded).await;
    app.set_apps(&[("app-hang", "hang-idle")]).await;
    let job = hanging_job(&app, "app-hang").await;
    let mut events = EventStream::open(&app, &job.id, VIEWER_TOKEN, None).await;
    events.expect("output", "hanging\n", DEADLINE).await;
    events.expect("status", "running", DEADLINE).await;

    let idle = Instant::now();
    while events.comments == 0 {
        // Nothing but comments comes: an event here would be a bug.
        let got = tokio::time::timeout(Duration::from_millis(200), events.next(DEADLINE)).await;
        assert!(got.is_err(), "an unexpected event: {got:?}");
        assert!(
            idle.elapsed() <= Duration::from_secs(15),
            "no comment in 15 s"
        );
    }
}
