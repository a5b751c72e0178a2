//! The one HTTP client reports go through: a total timeout, redirects kept
//! on the same origin, answers read up to a cap, and failures worded without
//! the URL (a notification URL is a secret itself).

use std::error::Error as _;
use std::time::Duration;

use reqwest::redirect::{Action, Attempt, Policy};
use reqwest::StatusCode;

use super::DeliveryError;
use crate::outbound::is_allowed_url;

/// The most of an answer's body kept: ample for an id or an error message.
const BODY_CAP: usize = 64 * 1024;
/// Redirects followed in one request, all to the first URL's origin.
const MAX_REDIRECTS: usize = 3;
/// The longest connection setup, below the total timeout when that is long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest upstream error message quoted in a `DeliveryError`.
const MESSAGE_CAP: usize = 200;
const USER_AGENT: &str = concat!("enac-cd/", env!("CARGO_PKG_VERSION"));

/// A target's answer; `body` holds at most its first 64 KiB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl Answer {
    /// Whether the target took the request (2xx).
    pub fn success(&self) -> bool {
        self.status.is_success()
    }

    /// Why the request failed, e.g. `GitHub deployment answered 422
    /// Unprocessable Entity: Reference does not exist`. Only for forges:
    /// their JSON `message` is quoted, and carries no secret.
    pub fn failure(&self, what: &str) -> DeliveryError {
        let mut reason = format!("{what} answered {}", self.status);
        if let Some(message) = self.message() {
            reason.push_str(": ");
            reason.push_str(&message);
        }
        DeliveryError(reason)
    }

    /// The `message` of a JSON error answer (GitHub's and GitLab's shape),
    /// on one line and cut at 200 characters.
    pub fn message(&self) -> Option<String> {
        let body: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        let message = match body.get("message")? {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let mut line: String = message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(MESSAGE_CAP)
            .collect();
        if message.chars().count() > MESSAGE_CAP {
            line.push('…');
        }
        Some(line)
    }
}

/// The HTTP client every report goes through (GitHub, GitLab, notify).
#[derive(Clone, Debug)]
pub struct OutboundClient {
    http: reqwest::Client,
    timeout: Duration,
}

impl OutboundClient {
    /// A client whose every request ends within `timeout`, trusting
    /// `extra_roots` (`CD_CA_FILE`) besides the system's trust store.
    pub fn new(
        timeout: Duration,
        extra_roots: &[reqwest::Certificate],
    ) -> Result<OutboundClient, String> {
        let http = extra_roots
            .iter()
            .fold(reqwest::Client::builder(), |builder, root| {
                builder.add_root_certificate(root.clone())
            })
            .timeout(timeout)
            .connect_timeout(timeout.min(CONNECT_TIMEOUT))
            .user_agent(USER_AGENT)
            .redirect(Policy::custom(same_origin))
            .build()
            .map_err(|error| format!("outbound HTTP client: {}", error.without_url()))?;
        Ok(OutboundClient { http, timeout })
    }

    /// The client to build requests with; send them with [`Self::send`].
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends `request` if its URL is allowed (`https://`, or `http://` to
    /// loopback) and reads the answer up to 64 KiB.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, DeliveryError> {
        let request = request.build().map_err(|error| {
            DeliveryError(format!("malformed request: {}", error.without_url()))
        })?;
        if !is_allowed_url(request.url().as_str()) {
            return Err(DeliveryError(
                "refused: targets must be https:// (http:// only to loopback)".to_owned(),
            ));
        }
        let mut response = self
            .http
            .execute(request)
            .await
            .map_err(|error| self.transport_failure(error))?;
        let status = response.status();
        let body = read_capped(&mut response)
            .await
            .map_err(|error| self.transport_failure(error))?;
        Ok(Answer { status, body })
    }

    /// A transport error in words that hold no URL.
    fn transport_failure(&self, error: reqwest::Error) -> DeliveryError {
        let reason = if error.is_connect() && error.is_timeout() {
            "connection timed out".to_owned()
        } else if error.is_timeout() {
            format!("timed out after {:?}", self.timeout)
        } else {
            let kind = if error.is_connect() {
                "connection failed"
            } else if error.is_body() || error.is_decode() {
                "reading the answer failed"
            } else {
                "request failed"
            };
            match root_cause(&error) {
                Some(cause) => format!("{kind}: {cause}"),
                None => kind.to_owned(),
            }
        };
        DeliveryError(reason)
    }
}

/// Follows a redirect only to the origin first asked, at most three times:
/// a report must not be bounced to (and its token shown to) another host.
/// A redirect not followed comes back as the answer.
fn same_origin(attempt: Attempt) -> Action {
    let next = attempt.url();
    let same = attempt.previous().first().is_some_and(|first| {
        first.scheme() == next.scheme()
            && first.host_str() == next.host_str()
            && first.port_or_known_default() == next.port_or_known_default()
    });
    // `previous` holds the first URL plus the redirects already followed.
    if same && attempt.previous().len() <= MAX_REDIRECTS {
        attempt.follow()
    } else {
        attempt.stop()
    }
}

/// Reads chunk by chunk and stops at the cap, so that a huge or endless
/// answer costs at most 64 KiB.
async fn read_capped(response: &mut reqwest::Response) -> reqwest::Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = BODY_CAP - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == BODY_CAP {
            break;
        }
    }
    Ok(body)
}

/// The innermost cause (e.g. "Connection refused (os error 111)"), unless
/// it quotes a URL.
fn root_cause(error: &reqwest::Error) -> Option<String> {
    let mut cause = error.source()?;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    (!text.contains("://")).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn client(timeout: Duration) -> OutboundClient {
        OutboundClient::new(timeout, &[]).expect("client")
    }

    async fn get(client: &OutboundClient, url: &str) -> Result<Answer, DeliveryError> {
        client.send(client.http().get(url)).await
    }

    async fn fetch(url: String) -> Result<Answer, DeliveryError> {
        get(&client(Duration::from_secs(5)), &url).await
    }

    #[tokio::test]
    async fn slow_server_times_out_with_a_clear_error() {
        let server = MockServer::start().await;
        Mock::given(path("/slow"))
            .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
            .mount(&server)
            .await;
        let error = get(
            &client(Duration::from_millis(200)),
            &format!("{}/slow", server.uri()),
        )
        .await
        .expect_err("times out");
        assert_eq!(error.0, "timed out after 200ms");
    }

    #[tokio::test]
    async fn body_beyond_the_cap_is_cut() {
        let server = MockServer::start().await;
        Mock::given(path("/big"))
            .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![b'x'; 3 * BODY_CAP]))
            .mount(&server)
            .await;
        let answer = fetch(format!("{}/big", server.uri()))
            .await
            .expect("answer");
        assert!(answer.success());
        assert_eq!(answer.body.len(), BODY_CAP);
    }

    #[tokio::test]
    async fn redirect_to_another_host_is_not_followed() {
        let (first, other) = (MockServer::start().await, MockServer::start().await);
        let elsewhere = format!("{}/steal", other.uri());
        Mock::given(path("/hook"))
            .respond_with(ResponseTemplate::new(302).insert_header("location", elsewhere))
            .mount(&first)
            .await;
        Mock::given(path("/steal"))
            .respond_with(ResponseTemplate::new(200))
            .expect(0)
            .mount(&other)
            .await;
        let answer = fetch(format!("{}/hook", first.uri()))
            .await
            .expect("answer");
        assert_eq!(answer.status, StatusCode::FOUND);
        assert!(!answer.success());
    }

    #[tokio::test]
    async fn same_host_redirect_is_followed() {
        let server = MockServer::start().await;
        Mock::given(path("/old"))
            .respond_with(ResponseTemplate::new(301).insert_header("location", "/new"))
            .mount(&server)
            .await;
        Mock::given(path("/new"))
            .respond_with(ResponseTemplate::new(200).set_body_string("moved"))
            .mount(&server)
            .await;
        let answer = fetch(format!("{}/old", server.uri()))
            .await
            .expect("answer");
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, b"moved");
    }

    #[tokio::test]
    async fn redirect_loop_stops_after_three() {
        let server = MockServer::start().await;
        Mock::given(path("/loop"))
            .respond_with(ResponseTemplate::new(302).insert_header("location", "/loop"))
            .expect(1 + MAX_REDIRECTS as u64)
            .mount(&server)
            .await;
        let answer = fetch(format!("{}/loop", server.uri()))
            .await
            .expect("answer");
        assert_eq!(answer.status, StatusCode::FOUND);
    }

    #[tokio::test]
    async fn plain_http_beyond_loopback_is_refused_before_sending() {
        let client = client(Duration::from_secs(5));
        for url in ["http://example.com/hooks/s3cr3t", "ftp://127.0.0.1/x"] {
            let error = get(&client, url).await.expect_err("refused");
            assert!(error.0.starts_with("refused:"), "{error}");
            assert!(!error.0.contains("s3cr3t") && !error.0.contains("example.com"));
        }
    }

    #[tokio::test]
    async fn connection_failure_does_not_name_the_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        drop(listener);
        let url = format!("http://127.0.0.1:{port}/services/T0/B0/s3cr3t");
        let error = fetch(url).await.expect_err("nothing listens");
        assert!(error.0.starts_with("connection failed"), "{error}");
        assert!(!error.0.contains("s3cr3t") && !error.0.contains(&port.to_string()));
    }

    #[tokio::test]
    async fn requests_carry_the_user_agent() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(header("user-agent", USER_AGENT))
            .respond_with(ResponseTemplate::new(204))
            .expect(1)
            .mount(&server)
            .await;
        let answer = fetch(server.uri()).await.expect("answer");
        assert_eq!(answer.status, StatusCode::NO_CONTENT);
        assert!(USER_AGENT.starts_with("enac-cd/"));
    }

    #[test]
    fn failure_quotes_a_short_json_message() {
        let answer = |status: u16, body: &str| Answer {
            status: StatusCode::from_u16(status).expect("status"),
            body: body.as_bytes().to_vec(),
        };
        assert_eq!(
            answer(502, "<html>oops</html>").failure("GitHub").0,
            "GitHub answered 502 Bad Gateway"
        );
        assert_eq!(
            answer(422, r#"{"message":"Reference does not exist"}"#)
                .failure("GitHub deployment")
                .0,
            "GitHub deployment answered 422 Unprocessable Entity: Reference does not exist"
        );
        let long = format!(r#"{{"message":"{}\nmore"}}"#, "a".repeat(300));
        let quoted = answer(400, &long).failure("GitLab").0;
        assert_eq!(
            quoted,
            format!("GitLab answered 400 Bad Request: {}…", "a".repeat(200))
        );
    }
}
