//! Signed webhook deliveries: verified against the secrets of the policy
//! rules bound to the payload's repository or project id, deduplicated,
//! matched, and started through the one job lifecycle. What differs between
//! providers is in one file each (`github.rs`, `gitlab.rs`).

mod github;
mod gitlab;

use std::sync::Arc;

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Ingress;
use crate::auth::webhook::SignatureError;
use crate::domain::{JobStatus, Trigger};
use crate::jobs::LifecycleError;
use crate::metrics::DeliveryResult;
use crate::policy::{Policy, PolicySet, Provider, WebhookRule};
use crate::store::StoreError;

pub use github::Github;
pub use gitlab::Gitlab;

/// How long a delivery id or body digest is remembered.
pub const DEDUPE_TTL_MS: i64 = 72 * 3600 * 1000;
/// Body cap of the webhook endpoints, applied before anything is read.
pub const BODY_LIMIT: usize = 5 << 20;

/// What differs from one webhook provider to another.
pub trait WebhookProvider: Send + Sync {
    /// The provider's name in policy files and URLs.
    fn provider(&self) -> Provider;
    /// The header naming the event.
    fn event_header(&self) -> &'static str;
    /// The immutable repository or project id: the only part of the
    /// payload read before the signature holds.
    fn unverified_id(&self, body: Unverified) -> Option<Value>;
    fn delivery_id(&self, headers: &HeaderMap) -> Option<String>;
    /// Checks the delivery against one rule's secret.
    fn check_signature(
        &self,
        rule: &WebhookRule,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), SignatureError>;
    /// Whether the event is a liveness check answered `pong`.
    fn answers_ping(&self, _event: &str) -> bool {
        false
    }
    /// The facts of a verified payload stored on the job.
    fn trigger(&self, payload: &Value) -> Trigger;
    /// Deliveries that never deploy, whatever the rules say.
    fn never_deploys(&self, event: &str, payload: &Value) -> Option<String>;
    /// One more key a delivery is deduplicated on.
    fn dedupe_key(&self, _event: &str, _payload: &Value) -> Option<String> {
        None
    }
}

/// The provider of a policy rule's `provider` key.
pub fn provider_of(kind: Provider) -> &'static dyn WebhookProvider {
    match kind {
        Provider::Github => &Github,
        Provider::Gitlab => &Gitlab,
    }
}

/// The provider served at `/webhooks/{name}`.
pub fn provider_named(name: &str) -> Option<&'static dyn WebhookProvider> {
    [Provider::Github, Provider::Gitlab]
        .into_iter()
        .find(|kind| kind.as_str() == name)
        .map(provider_of)
}

/// A string or number at `pointer`, as text.
fn text(payload: &Value, pointer: &str) -> Option<String> {
    match payload.pointer(pointer)? {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// A delivery whose signature holds for at least one rule.
pub struct VerifiedDelivery {
    pub provider: &'static dyn WebhookProvider,
    pub event: String,
    pub delivery_id: Option<String>,
    pub body_digest: String,
    /// The repository or project id the delivery was verified for.
    pub source_id: String,
    pub payload: Value,
    policies: Arc<PolicySet>,
    /// (policy, rule) indices whose secret verified the delivery.
    verified: Vec<(usize, usize)>,
}

impl VerifiedDelivery {
    fn rules(&self) -> impl Iterator<Item = (&Policy, &WebhookRule)> {
        self.verified.iter().map(|&(policy, rule)| {
            let policy = &self.policies.policies[policy];
            (policy, &policy.webhooks[rule])
        })
    }

    /// The facts stored on the job and shown in logs.
    pub fn trigger(&self) -> Trigger {
        Trigger {
            event: Some(self.event.clone()),
            delivery_id: self.delivery_id.clone(),
            ..self.provider.trigger(&self.payload)
        }
    }

    /// The keys a replay of this delivery would find remembered, scoped to
    /// the provider and the repository or project: a tenant who learns
    /// another's delivery id cannot suppress that delivery.
    fn dedupe_keys(&self) -> Vec<String> {
        let scope = format!("{}:{}", self.provider.provider().as_str(), self.source_id);
        let mut keys = vec![format!("{scope}-body:{}", self.body_digest)];
        if let Some(id) = &self.delivery_id {
            keys.push(format!("{scope}-delivery:{id}"));
        }
        keys.extend(self.provider.dedupe_key(&self.event, &self.payload));
        keys
    }
}

/// Why a delivery was refused before any of it was trusted.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("body is not a JSON object with the {0} id")]
    Unreadable(&'static str),
    #[error("{0}")]
    Signature(SignatureError),
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

#[derive(Deserialize)]
pub struct IdOnly {
    #[serde(default)]
    id: Option<Value>,
}

/// Only the immutable id is read before the signature holds.
#[derive(Deserialize)]
pub struct Unverified {
    repository: Option<IdOnly>,
    project: Option<IdOnly>,
}

/// Verifies a delivery against the rules bound to its (not yet trusted) id.
pub fn verify(
    policies: Arc<PolicySet>,
    provider: &'static dyn WebhookProvider,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<VerifiedDelivery, Refusal> {
    let kind = provider.provider();
    // "/repository/id" names the "repository" object.
    let id_name = kind.id_pointer().split('/').nth(1).unwrap_or("id");
    let event_header = provider.event_header();
    let event = header(headers, event_header)
        .ok_or(Refusal::MissingHeader(event_header))?
        .to_owned();
    let unverified: Unverified =
        serde_json::from_slice(body).map_err(|_| Refusal::Unreadable(id_name))?;
    let id = provider
        .unverified_id(unverified)
        .ok_or(Refusal::Unreadable(id_name))?;

    let mut verified = Vec::new();
    let mut failure = SignatureError::Mismatch;
    for (policy_index, policy) in policies.policies.iter().enumerate() {
        for (rule_index, rule) in policy.webhooks.iter().enumerate() {
            if rule.provider != kind || !rule.binds_id(&id) {
                continue;
            }
            match provider.check_signature(rule, headers, body) {
                Ok(()) => verified.push((policy_index, rule_index)),
                Err(error) => failure = error,
            }
        }
    }
    if verified.is_empty() {
        return Err(Refusal::Signature(failure));
    }
    // The signature holds: the payload may now be read.
    let payload: Value = serde_json::from_slice(body).map_err(|_| Refusal::Unreadable(id_name))?;
    Ok(VerifiedDelivery {
        provider,
        event,
        delivery_id: provider.delivery_id(headers),
        body_digest: hex::encode(Sha256::digest(body)),
        source_id: match &id {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        },
        payload,
        policies,
        verified,
    })
}

/// One started (or refused) deployment of an accepted delivery.
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct StartedJob {
    pub deployment_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    pub status: JobStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl StartedJob {
    fn refused(deployment_id: &str, error: &str) -> StartedJob {
        StartedJob {
            deployment_id: deployment_id.to_owned(),
            job_id: None,
            status: JobStatus::Error,
            error: Some(error.to_owned()),
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum Outcome {
    Pong,
    Duplicate,
    Ignored(String),
    Accepted(Vec<StartedJob>),
}

impl Outcome {
    /// The label of the deliveries metric.
    pub fn result(&self) -> DeliveryResult {
        match self {
            Outcome::Pong => DeliveryResult::Pong,
            Outcome::Duplicate => DeliveryResult::Duplicate,
            Outcome::Ignored(_) => DeliveryResult::Ignored,
            Outcome::Accepted(_) => DeliveryResult::Accepted,
        }
    }
}

impl Ingress {
    /// Event rules, policy matching, dedupe, and one start per matched
    /// deployment. Only a delivery that started (or joined) a job is
    /// remembered: an ignored one, or one whose starts all failed, may be
    /// delivered again (after a policy fix, or once the inventory is free).
    pub async fn webhook(&self, delivery: VerifiedDelivery) -> Result<Outcome, StoreError> {
        if delivery.provider.answers_ping(&delivery.event) {
            return Ok(Outcome::Pong);
        }
        if let Some(reason) = delivery
            .provider
            .never_deploys(&delivery.event, &delivery.payload)
        {
            return Ok(Outcome::Ignored(reason));
        }
        let mut matched: Vec<&Policy> = Vec::new();
        let mut misses = Vec::new();
        for (policy, rule) in delivery.rules() {
            match rule.check(&delivery.event, &delivery.payload) {
                Ok(())
                    if !matched
                        .iter()
                        .any(|seen| seen.deployment_id == policy.deployment_id) =>
                {
                    matched.push(policy)
                }
                Ok(()) => {}
                Err(mismatch) => misses.push(format!("{}: {mismatch}", policy.deployment_id)),
            }
        }
        if matched.is_empty() {
            return Ok(Outcome::Ignored(format!(
                "no rule matches ({})",
                misses.join("; ")
            )));
        }
        let keys = delivery.dedupe_keys();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        if !self.store.remember(&keys, DEDUPE_TTL_MS).await? {
            return Ok(Outcome::Duplicate);
        }
        let started = self.start_matched(&delivery, matched).await;
        if !started
            .as_ref()
            .is_ok_and(|jobs| jobs.iter().any(|job| job.job_id.is_some()))
        {
            self.forget(&keys).await;
        }
        Ok(Outcome::Accepted(started?))
    }

    /// One start per matched deployment, through the one lifecycle.
    async fn start_matched(
        &self,
        delivery: &VerifiedDelivery,
        matched: Vec<&Policy>,
    ) -> Result<Vec<StartedJob>, StoreError> {
        let trigger = delivery.trigger();
        let mut jobs = Vec::with_capacity(matched.len());
        for policy in matched {
            let Some(app) = self.store.app(&policy.deployment_id).await? else {
                tracing::warn!(deployment_id = %policy.deployment_id, "policy names an unknown app");
                jobs.push(StartedJob::refused(&policy.deployment_id, "App not found"));
                continue;
            };
            let trigger = trigger.clone().granted_by(&policy.file);
            let request = super::start_request(app, trigger, policy.on_busy, Some(policy));
            jobs.push(match self.lifecycle.start(request).await {
                Ok(started) => {
                    let job = started.into_job();
                    StartedJob {
                        deployment_id: job.deployment_id,
                        job_id: Some(job.id),
                        status: job.status,
                        error: None,
                    }
                }
                Err(error @ LifecycleError::Busy) => {
                    StartedJob::refused(&policy.deployment_id, &error.to_string())
                }
                Err(LifecycleError::Store(error)) => return Err(error),
            });
        }
        Ok(jobs)
    }
}
