//! A reader of the live output stream (`text/event-stream`), event by event.

use std::time::Duration;

use super::app::TestApp;

/// One event as a client sees it: data lines joined with `\n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// An open event stream and what was read of it but not yet parsed.
pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
    /// Comment lines seen (keep-alives).
    pub comments: usize,
}

/// `GET /api/v1/jobs/{job}/output` with `token`; the answer, whatever it is.
pub async fn follow_request(
    app: &TestApp,
    job_id: &str,
    token: Option<&str>,
    last_event_id: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .http
        .get(app.url(&format!("/api/v1/jobs/{job_id}/output")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    request.send().await.expect("the request is sent")
}

impl EventStream {
    /// Opens the stream, asserting it is one.
    pub async fn open(
        app: &TestApp,
        job_id: &str,
        token: &str,
        last_event_id: Option<&str>,
    ) -> EventStream {
        let response = follow_request(app, job_id, Some(token), last_event_id).await;
        assert_eq!(response.status(), 200, "the stream opens");
        let content_type = response.headers()["content-type"]
            .to_str()
            .expect("a content type")
            .to_owned();
        assert_eq!(content_type, "text/event-stream");
        EventStream {
            response,
            buffer: String::new(),
            comments: 0,
        }
    }

    /// The next event; `None` once the service closed the stream. Panics
    /// when none comes within `deadline`.
    pub async fn next(&mut self, deadline: Duration) -> Option<SseEvent> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = self.parse(&block) {
                    return Some(event);
                }
            }
            let chunk = tokio::time::timeout_at(until, self.response.chunk())
                .await
                .expect("an event within the deadline")
                .expect("the stream reads");
            let chunk = chunk?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8 events"));
        }
    }

    /// The next event, which must be `event` with `data`.
    pub async fn expect(&mut self, event: &str, data: &str, deadline: Duration) -> SseEvent {
        let got = self.next(deadline).await.expect("the stream is still open");
        assert_eq!(
            (got.event.as_str(), got.data.as_str()),
            (event, data),
            "{got:?}"
        );
        got
    }

    fn parse(&mut self, block: &str) -> Option<SseEvent> {
        let mut event = SseEvent {
            event: "message".to_owned(),
            id: None,
            data: String::new(),
        };
        let mut data = Vec::new();
        for line in block.lines() {
            if line.starts_with(':') {
                self.comments += 1;
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event.event = value.to_owned(),
                "id" => event.id = Some(value.to_owned()),
                "data" => data.push(value),
                _ => {}
            }
        }
        if data.is_empty() && event.id.is_none() && event.event == "message" {
            return None;
        }
        event.data = data.join("\n");
        Some(event)
    }
}
