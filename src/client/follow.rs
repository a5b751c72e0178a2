//! Following a job's live output stream (`GET /api/v1/jobs/{id}/output`,
//! Server-Sent Events), shared by `enac-cd deploy` and `enac-cd logs
//! --follow`: output is printed as it comes, a dropped stream is resumed
//! where it stopped, and a service without the stream is left to polling.

use std::io::Write;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::Url;

use super::RETRY_FOR;

/// A stream that says nothing for this long is dead (the service sends a
/// comment at least every 15 s).
const SILENCE: Duration = Duration::from_secs(45);
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// How following ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Followed {
    /// The job ended with this status.
    Ended(String),
    /// The service does not offer the stream for this job (an older
    /// service): poll instead. Nothing was printed.
    Unavailable,
}

/// One event: its type, id and data lines joined with `\n`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// Cuts a byte stream into events; comments and unknown fields are skipped.
#[derive(Default)]
pub(crate) struct SseParser {
    buffer: Vec<u8>,
}

impl SseParser {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.windows(2).position(|pair| pair == b"\n\n") {
            let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
            if let Some(event) = parse_block(&String::from_utf8_lossy(&block)) {
                events.push(event);
            }
        }
        events
    }
}

fn parse_block(block: &str) -> Option<SseEvent> {
    let (mut event, mut id, mut data) = (None, None, Vec::new());
    for line in block.lines().filter(|line| !line.starts_with(':')) {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = Some(value.to_owned()),
            "id" => id = Some(value.to_owned()),
            "data" => data.push(value),
            _ => {}
        }
    }
    if event.is_none() && data.is_empty() {
        return None;
    }
    Some(SseEvent {
        event: event.unwrap_or_else(|| "message".to_owned()),
        id,
        data: data.join("\n"),
    })
}

/// The client for streams: no overall timeout, a stream may last the
/// whole deployment; a silent one is given up after [`SILENCE`].
fn stream_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .read_timeout(SILENCE)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("enac-cd/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|error| error.to_string())
}

/// `{base}/api/v1/jobs/{job_id}/output`, the job id escaped.
pub(crate) fn output_url(base: &str, job_id: &str) -> Result<Url, String> {
    let mut url = Url::parse(base).map_err(|error| format!("{base}: {error}"))?;
    url.path_segments_mut()
        .map_err(|_| format!("{base} cannot be a base URL"))?
        .pop_if_empty()
        .extend(["api", "v1", "jobs", job_id, "output"]);
    Ok(url)
}

/// What one connection to the stream came to.
enum Connection {
    Ended(String),
    /// Closed or failed before the end: connect again from `last_id`.
    Dropped(String),
    /// Not a stream at all (`status`, `body`).
    NotOffered(u16, String),
}

/// Follows the output of the job at `url` (`…/api/v1/jobs/{id}/output`),
/// printing it; gives up with an error when the stream cannot be reached
/// again for 10 s.
pub(crate) async fn follow_output(url: &Url, token: &str) -> Result<Followed, String> {
    let http = stream_client()?;
    let mut last_id: Option<String> = None;
    let mut failing_since: Option<Instant> = None;
    loop {
        let before = last_id.clone();
        match connect_once(&http, url, token, &mut last_id).await {
            Connection::Ended(status) => return Ok(Followed::Ended(status)),
            Connection::NotOffered(status, body) if last_id.is_none() => {
                // 404/405 from a service without the stream, or a proxy's own answer.
                tracing::debug!(status, body, "no live output stream: polling instead");
                return Ok(Followed::Unavailable);
            }
            Connection::NotOffered(status, body) => {
                return Err(format!("the output stream: HTTP {status}: {body}"));
            }
            Connection::Dropped(reason) => {
                if last_id != before {
                    // Output came since the last failure: a fresh budget.
                    failing_since = None;
                }
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= RETRY_FOR {
                    return Err(format!("the output stream: {reason}"));
                }
            }
        }
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}

async fn connect_once(
    http: &reqwest::Client,
    url: &Url,
    token: &str,
    last_id: &mut Option<String>,
) -> Connection {
    let mut request = http
        .get(url.clone())
        .bearer_auth(token)
        .header(ACCEPT, "text/event-stream");
    if let Some(id) = last_id.as_deref() {
        request = request.header("Last-Event-ID", id);
    }
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(error) => return Connection::Dropped(super::with_causes(&error)),
    };
    let status = response.status();
    if status.is_server_error() {
        return Connection::Dropped(format!("HTTP {status}"));
    }
    let is_stream = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"));
    if !status.is_success() || !is_stream {
        let body = response.text().await.unwrap_or_default();
        return Connection::NotOffered(status.as_u16(), body);
    }
    let mut parser = SseParser::default();
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Connection::Dropped("the service closed the stream".to_owned()),
            Err(error) => return Connection::Dropped(super::with_causes(&error)),
        };
        for event in parser.push(&chunk) {
            match event.event.as_str() {
                "output" => {
                    print!("{}", event.data);
                    let _ = std::io::stdout().flush();
                    if event.id.is_some() {
                        *last_id = event.id;
                    }
                }
                "end" => return Connection::Ended(event.data),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_cut_at_blank_lines_whatever_the_chunks() {
        let mut parser = SseParser::default();
        let stream = "event: output\nid: 8\ndata: one\ndata: \n\n:\n\nevent: status\ndata: running\n\nevent: end\ndata: success\n\n";
        let mut events = Vec::new();
        // One byte at a time: events never depend on how TCP cut them.
        for byte in stream.as_bytes() {
            events.extend(parser.push(std::slice::from_ref(byte)));
        }
        assert_eq!(
            events,
            [
                SseEvent {
                    event: "output".into(),
                    id: Some("8".into()),
                    data: "one\n".into()
                },
                SseEvent {
                    event: "status".into(),
                    id: None,
                    data: "running".into()
                },
                SseEvent {
                    event: "end".into(),
                    id: None,
                    data: "success".into()
                },
            ]
        );
    }

    #[test]
    fn a_character_cut_between_chunks_is_kept_whole() {
        let mut parser = SseParser::default();
        let bytes = "event: output\ndata: é\n\n".as_bytes();
        let (first, second) = bytes.split_at(bytes.len() - 3);
        assert!(parser.push(first).is_empty());
        assert_eq!(parser.push(second)[0].data, "é");
    }
}
