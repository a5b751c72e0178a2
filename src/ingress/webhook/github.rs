//! GitHub: `X-Hub-Signature-256` over the raw body, the repository id, the
//! `X-GitHub-Delivery` id, push and workflow-run facts.

use axum::http::HeaderMap;
use secrecy::ExposeSecret;
use serde_json::Value;

use super::{header, text, Unverified, WebhookProvider};
use crate::auth::webhook::{verify_github, SignatureError};
use crate::domain::{Trigger, TriggerKind};
use crate::policy::{Provider, WebhookRule};

pub struct Github;

impl WebhookProvider for Github {
    fn provider(&self) -> Provider {
        Provider::Github
    }

    fn event_header(&self) -> &'static str {
        "x-github-event"
    }

    fn unverified_id(&self, body: Unverified) -> Option<Value> {
        body.repository.and_then(|repository| repository.id)
    }

    fn delivery_id(&self, headers: &HeaderMap) -> Option<String> {
        header(headers, "x-github-delivery").map(str::to_owned)
    }

    fn check_signature(
        &self,
        rule: &WebhookRule,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        let secret = rule.secret.as_ref().ok_or(SignatureError::Mismatch)?;
        verify_github(
            secret.expose_secret().as_bytes(),
            body,
            header(headers, "x-hub-signature-256"),
        )
    }

    fn answers_ping(&self, event: &str) -> bool {
        event == "ping"
    }

    fn trigger(&self, payload: &Value) -> Trigger {
        let first = |pointers: &[&str]| pointers.iter().find_map(|pointer| text(payload, pointer));
        Trigger {
            repository: first(&["/repository/full_name"]),
            git_ref: first(&["/ref", "/workflow_run/head_branch"]),
            sha: first(&["/after", "/workflow_run/head_sha"]),
            actor: first(&["/sender/login"]),
            ..Trigger::of_kind(TriggerKind::GithubWebhook)
        }
    }

    fn never_deploys(&self, event: &str, payload: &Value) -> Option<String> {
        match event {
            "push" => {
                let deleted = payload.pointer("/deleted").and_then(Value::as_bool) == Some(true);
                deleted.then(|| "push of a deleted branch".to_owned())
            }
            "workflow_run" => {
                let conclusion = text(payload, "/workflow_run/conclusion").unwrap_or_default();
                if conclusion != "success" {
                    return Some(format!(
                        "workflow run conclusion is `{conclusion}`, not success"
                    ));
                }
                let head = payload.pointer("/workflow_run/head_repository/id");
                let own = payload.pointer("/repository/id");
                (head.is_none() || head != own)
                    .then(|| "workflow run from another repository (fork)".to_owned())
            }
            _ => None,
        }
    }
}
