//! Notifications of job events to `[[notify]]` URLs: Standard Webhooks
//! signed JSON, or Slack-style `{"text":…}`.

use secrecy::ExposeSecret;
use serde_json::json;

use super::{DeliveryError, OutboundClient};
use crate::auth::webhook::sign_standard;
use crate::domain::rfc3339_of_ms;
use crate::policy::{NotifyFormat, NotifyRule};

/// One event of a job, in both shapes a target may take.
#[derive(Clone, Debug)]
pub struct Notification {
    /// Stable per job and event, so that a receiver can drop a redelivery.
    pub webhook_id: String,
    /// `job.started`, `job.success` or `job.error`.
    pub event_type: String,
    /// Unix seconds of the delivery attempt (signed with the body).
    pub timestamp: i64,
    /// The job, as the jobs API shows it.
    pub data: serde_json::Value,
    /// The line a Slack-style target shows.
    pub text: String,
}

/// Posts `message` to `rule`'s URL in the rule's format; delivered on 2xx.
pub async fn notify(
    client: &OutboundClient,
    rule: &NotifyRule,
    message: &Notification,
) -> Result<(), DeliveryError> {
    let request = client.http().post(rule.url.expose_secret());
    let request = match &rule.format {
        NotifyFormat::StandardWebhooks { key } => {
            let body = serde_json::to_vec(&json!({
                "type": message.event_type,
                "timestamp": rfc3339_of_ms(message.timestamp.saturating_mul(1000)),
                "data": message.data,
            }))
            .map_err(|_| DeliveryError("the notification cannot be written".to_owned()))?;
            let timestamp = message.timestamp.to_string();
            let signature = sign_standard(key, &message.webhook_id, &timestamp, &body)
                .ok_or_else(|| DeliveryError("the notify signing key is unusable".to_owned()))?;
            request
                .header("content-type", "application/json")
                .header("webhook-id", &message.webhook_id)
                .header("webhook-timestamp", timestamp)
                .header("webhook-signature", signature)
                .body(body)
        }
        NotifyFormat::Slack => request.json(&json!({ "text": message.text })),
    };
    let answer = client.send(request).await?;
    if answer.success() {
        Ok(())
    } else {
        // Only the status: a third party's answer may quote its own URL.
        Err(DeliveryError(format!(
            "notify target answered {}",
            answer.status
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;
    use wiremock::matchers::{body_json, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;
    use crate::auth::webhook::verify_standard;
    use crate::domain::{unix_now, ReportEvent};

    const KEY: &[u8] = b"a key of the whsec_ secret";
    const HOOK_PATH: &str = "/services/T000/B000/s3cr3t";

    fn rule(server: &MockServer, format: NotifyFormat) -> NotifyRule {
        NotifyRule {
            url: SecretString::from(format!("{}{HOOK_PATH}", server.uri())),
            host: "127.0.0.1".to_owned(),
            format,
            events: ReportEvent::ALL.to_vec(),
        }
    }

    fn message(timestamp: i64) -> Notification {
        Notification {
            webhook_id: "msg_j1_success".to_owned(),
            event_type: "job.success".to_owned(),
            timestamp,
            data: json!({"job_id": "j1", "status": "success"}),
            text: "web-prod: success (github push) https://cd.example/ui/jobs/j1".to_owned(),
        }
    }

    fn client() -> OutboundClient {
        OutboundClient::new(Duration::from_secs(5), &[]).expect("client")
    }

    #[tokio::test]
    async fn standard_webhook_is_signed_as_ingress_verifies_it() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(HOOK_PATH))
            .and(header("content-type", "application/json"))
            .respond_with(ResponseTemplate::new(204))
            .expect(1)
            .mount(&server)
            .await;
        let now = unix_now();
        let format = NotifyFormat::StandardWebhooks { key: KEY.to_vec() };
        notify(&client(), &rule(&server, format), &message(now))
            .await
            .expect("delivered");
        let requests = server.received_requests().await.expect("recorded");
        let sent = &requests[0];
        let header = |name: &str| sent.headers.get(name).and_then(|v| v.to_str().ok());
        assert_eq!(header("webhook-id"), Some("msg_j1_success"));
        assert_eq!(header("webhook-timestamp"), Some(now.to_string().as_str()));
        let (id, stamp, signature) = (
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
        );
        verify_standard(KEY, id, stamp, &sent.body, signature, unix_now()).expect("verifies");
        let wrong_key = verify_standard(b"other", id, stamp, &sent.body, signature, unix_now());
        assert!(wrong_key.is_err());
        let body: serde_json::Value = sent.body_json().expect("json");
        let expected = json!({
            "type": "job.success",
            "timestamp": rfc3339_of_ms(now * 1000),
            "data": {"job_id": "j1", "status": "success"},
        });
        assert_eq!(body, expected);
    }

    #[tokio::test]
    async fn slack_target_gets_the_text() {
        let server = MockServer::start().await;
        let text = message(0).text;
        Mock::given(method("POST"))
            .and(path(HOOK_PATH))
            .and(header("content-type", "application/json"))
            .and(body_json(json!({ "text": text })))
            .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
            .expect(1)
            .mount(&server)
            .await;
        notify(&client(), &rule(&server, NotifyFormat::Slack), &message(0))
            .await
            .expect("delivered");
    }

    #[tokio::test]
    async fn refusal_is_reported_without_the_url() {
        let server = MockServer::start().await;
        let echo = format!("no such hook: {}{HOOK_PATH}", server.uri());
        Mock::given(path(HOOK_PATH))
            .respond_with(ResponseTemplate::new(404).set_body_json(json!({ "message": echo })))
            .mount(&server)
            .await;
        let error = notify(&client(), &rule(&server, NotifyFormat::Slack), &message(0))
            .await
            .expect_err("404");
        assert_eq!(error.0, "notify target answered 404 Not Found");
    }

    #[tokio::test]
    async fn plain_http_target_is_refused_without_the_url() {
        let rule = NotifyRule {
            url: SecretString::from("http://hooks.example.com/services/s3cr3t"),
            host: "hooks.example.com".to_owned(),
            format: NotifyFormat::Slack,
            events: ReportEvent::ALL.to_vec(),
        };
        let error = notify(&client(), &rule, &message(0))
            .await
            .expect_err("refused");
        assert!(error.0.starts_with("refused:"), "{error}");
        assert!(!error.0.contains("s3cr3t") && !error.0.contains("hooks.example.com"));
    }
}
