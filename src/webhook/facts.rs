//! What a verified delivery says: the trigger's facts, the events that never
//! deploy, the per-pipeline dedupe key.

use serde_json::Value;

use super::VerifiedDelivery;
use crate::jobs::{Trigger, TriggerKind};
use crate::policy::Provider;

const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

fn text(payload: &Value, pointer: &str) -> Option<String> {
    match payload.pointer(pointer)? {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The facts stored on the job and shown in logs.
pub fn trigger(delivery: &VerifiedDelivery) -> Trigger {
    let payload = &delivery.payload;
    let first = |pointers: &[&str]| pointers.iter().find_map(|pointer| text(payload, pointer));
    let (kind, repository, git_ref, sha, actor) = match delivery.provider {
        Provider::Github => (
            TriggerKind::GithubWebhook,
            first(&["/repository/full_name"]),
            first(&["/ref", "/workflow_run/head_branch"]),
            first(&["/after", "/workflow_run/head_sha"]),
            first(&["/sender/login"]),
        ),
        Provider::Gitlab => (
            TriggerKind::GitlabWebhook,
            first(&["/project/path_with_namespace"]),
            first(&["/ref", "/object_attributes/ref"]),
            first(&["/checkout_sha", "/after", "/object_attributes/sha"]),
            first(&["/user_username", "/user/username"]),
        ),
    };
    Trigger {
        kind,
        repository,
        git_ref,
        sha,
        actor,
        event: Some(delivery.event.clone()),
        delivery_id: delivery.delivery_id.clone(),
    }
}

/// Deliveries that never deploy, whatever the rules say.
pub fn never_deploys(provider: Provider, event: &str, payload: &Value) -> Option<String> {
    match (provider, event) {
        (Provider::Github, "push") => {
            let deleted = payload.pointer("/deleted").and_then(Value::as_bool) == Some(true);
            deleted.then(|| "push of a deleted branch".to_owned())
        }
        (Provider::Github, "workflow_run") => {
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
        (Provider::Gitlab, "Push Hook" | "Tag Push Hook") => (text(payload, "/after").as_deref()
            == Some(ZERO_SHA))
        .then(|| "push of a deleted ref".to_owned()),
        (Provider::Gitlab, "Pipeline Hook") => {
            let status = text(payload, "/object_attributes/status").unwrap_or_default();
            (status != "success").then(|| format!("pipeline status is `{status}`, not success"))
        }
        _ => None,
    }
}

/// GitLab sends a pipeline's hook at each status: one deploy per pipeline
/// and status, whatever the delivery ids.
pub fn pipeline_key(delivery: &VerifiedDelivery) -> Option<String> {
    if delivery.provider != Provider::Gitlab || delivery.event != "Pipeline Hook" {
        return None;
    }
    let project = text(&delivery.payload, "/project/id")?;
    let pipeline = text(&delivery.payload, "/object_attributes/id")?;
    let status = text(&delivery.payload, "/object_attributes/status")?;
    Some(format!("gitlab-pipeline:{project}:{pipeline}:{status}"))
}
