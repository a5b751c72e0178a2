//! GitLab: a Standard Webhooks signature when the rule has a signing secret,
//! else `X-Gitlab-Token`; the project id, the `webhook-id` delivery id,
//! push and pipeline facts, one deploy per pipeline and status.

use axum::http::HeaderMap;
use secrecy::ExposeSecret;
use serde_json::Value;

use super::{header, text, Unverified, WebhookProvider};
use crate::auth::webhook::{verify_gitlab_token, verify_standard, SignatureError};
use crate::domain::{unix_now, Trigger, TriggerKind};
use crate::policy::{Provider, WebhookRule};

const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

pub struct Gitlab;

impl WebhookProvider for Gitlab {
    fn provider(&self) -> Provider {
        Provider::Gitlab
    }

    fn event_header(&self) -> &'static str {
        "x-gitlab-event"
    }

    fn unverified_id(&self, body: Unverified) -> Option<Value> {
        body.project.and_then(|project| project.id)
    }

    fn delivery_id(&self, headers: &HeaderMap) -> Option<String> {
        header(headers, "webhook-id")
            .or_else(|| header(headers, "idempotency-key"))
            .or_else(|| header(headers, "x-gitlab-event-uuid"))
            .map(str::to_owned)
    }

    /// A signing secret makes the signature mandatory, token or not.
    fn check_signature(
        &self,
        rule: &WebhookRule,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        match (&rule.signing_key, &rule.secret) {
            (Some(key), _) => verify_standard(
                key,
                header(headers, "webhook-id"),
                header(headers, "webhook-timestamp"),
                body,
                header(headers, "webhook-signature"),
                unix_now(),
            ),
            (None, Some(token)) => {
                verify_gitlab_token(token.expose_secret(), header(headers, "x-gitlab-token"))
            }
            (None, None) => Err(SignatureError::Mismatch),
        }
    }

    fn trigger(&self, payload: &Value) -> Trigger {
        let first = |pointers: &[&str]| pointers.iter().find_map(|pointer| text(payload, pointer));
        Trigger {
            repository: first(&["/project/path_with_namespace"]),
            git_ref: first(&["/ref", "/object_attributes/ref"]),
            sha: first(&["/checkout_sha", "/after", "/object_attributes/sha"]),
            actor: first(&["/user_username", "/user/username"]),
            ..Trigger::of_kind(TriggerKind::GitlabWebhook)
        }
    }

    fn never_deploys(&self, event: &str, payload: &Value) -> Option<String> {
        match event {
            "Push Hook" | "Tag Push Hook" => (text(payload, "/after").as_deref() == Some(ZERO_SHA))
                .then(|| "push of a deleted ref".to_owned()),
            "Pipeline Hook" => {
                let status = text(payload, "/object_attributes/status").unwrap_or_default();
                (status != "success").then(|| format!("pipeline status is `{status}`, not success"))
            }
            _ => None,
        }
    }

    /// GitLab sends a pipeline's hook at each status: one deploy per
    /// pipeline and status, whatever the delivery ids.
    fn dedupe_key(&self, event: &str, payload: &Value) -> Option<String> {
        if event != "Pipeline Hook" {
            return None;
        }
        let project = text(payload, "/project/id")?;
        let pipeline = text(payload, "/object_attributes/id")?;
        let status = text(payload, "/object_attributes/status")?;
        Some(format!("gitlab-pipeline:{project}:{pipeline}:{status}"))
    }
}
