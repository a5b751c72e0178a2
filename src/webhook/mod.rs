//! Signed webhook deliveries (GitHub, GitLab): verified against the secrets
//! of the policy rules bound to the payload's repository or project id,
//! deduplicated, matched, and started through the one job lifecycle.

pub mod facts;

use std::sync::Arc;

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::auth::webhook::{verify_github, verify_gitlab_token, verify_standard, SignatureError};
use crate::jobs::{unix_now, Lifecycle, LifecycleError, StartRequest};
use crate::policy::{Policy, PolicySet, Provider, WebhookRule};
use crate::store::{Store, StoreError};

/// How long a delivery id or body digest is remembered.
pub const DEDUPE_TTL_MS: i64 = 72 * 3600 * 1000;
/// Body cap of the webhook endpoints, applied before anything is read.
pub const BODY_LIMIT: usize = 5 << 20;

/// A delivery whose signature holds for at least one rule.
pub struct VerifiedDelivery {
    pub provider: Provider,
    pub event: String,
    pub delivery_id: Option<String>,
    pub body_digest: String,
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
struct IdOnly {
    #[serde(default)]
    id: Option<Value>,
}

/// Only the immutable id is read before the signature holds.
#[derive(Deserialize)]
struct Unverified {
    repository: Option<IdOnly>,
    project: Option<IdOnly>,
}

/// Verifies a delivery against the rules bound to its (not yet trusted) id.
pub fn verify(
    policies: Arc<PolicySet>,
    provider: Provider,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<VerifiedDelivery, Refusal> {
    let (event_header, id_name) = match provider {
        Provider::Github => ("x-github-event", "repository"),
        Provider::Gitlab => ("x-gitlab-event", "project"),
    };
    let event = header(headers, event_header)
        .ok_or(Refusal::MissingHeader(event_header))?
        .to_owned();
    let unverified: Unverified =
        serde_json::from_slice(body).map_err(|_| Refusal::Unreadable(id_name))?;
    let id = match provider {
        Provider::Github => unverified.repository,
        Provider::Gitlab => unverified.project,
    }
    .and_then(|object| object.id)
    .ok_or(Refusal::Unreadable(id_name))?;

    let mut verified = Vec::new();
    let mut failure = SignatureError::Mismatch;
    for (policy_index, policy) in policies.policies.iter().enumerate() {
        for (rule_index, rule) in policy.webhooks.iter().enumerate() {
            if rule.provider != provider || !rule.binds_id(&id) {
                continue;
            }
            match check_signature(rule, headers, body) {
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
    let delivery_id = match provider {
        Provider::Github => header(headers, "x-github-delivery"),
        Provider::Gitlab => header(headers, "webhook-id")
            .or_else(|| header(headers, "idempotency-key"))
            .or_else(|| header(headers, "x-gitlab-event-uuid")),
    }
    .map(str::to_owned);
    Ok(VerifiedDelivery {
        provider,
        event,
        delivery_id,
        body_digest: hex::encode(Sha256::digest(body)),
        payload,
        policies,
        verified,
    })
}

fn check_signature(
    rule: &WebhookRule,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), SignatureError> {
    use secrecy::ExposeSecret;
    match rule.provider {
        Provider::Github => {
            let secret = rule.secret.as_ref().ok_or(SignatureError::Mismatch)?;
            verify_github(
                secret.expose_secret().as_bytes(),
                body,
                header(headers, "x-hub-signature-256"),
            )
        }
        // A signing secret makes the signature mandatory, token or not.
        Provider::Gitlab => match (&rule.signing_key, &rule.secret) {
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
        },
    }
}

/// One started (or refused) deployment of an accepted delivery.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StartedJob {
    pub deployment_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    pub fn result(&self) -> &'static str {
        match self {
            Outcome::Pong => "pong",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored(_) => "ignored",
            Outcome::Accepted(_) => "accepted",
        }
    }
}

/// Dedupe, event rules, policy matching, and one start per matched deployment.
pub async fn process(
    store: &dyn Store,
    lifecycle: &Arc<Lifecycle>,
    delivery: VerifiedDelivery,
) -> Result<Outcome, StoreError> {
    if delivery.provider == Provider::Github && delivery.event == "ping" {
        return Ok(Outcome::Pong);
    }
    let provider = delivery.provider.as_str();
    let mut keys = vec![format!("{provider}-body:{}", delivery.body_digest)];
    if let Some(id) = &delivery.delivery_id {
        keys.push(format!("{provider}-delivery:{id}"));
    }
    if let Some(key) = facts::pipeline_key(&delivery) {
        keys.push(key);
    }
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    if !store.remember(&keys, DEDUPE_TTL_MS).await? {
        return Ok(Outcome::Duplicate);
    }
    if let Some(reason) =
        facts::never_deploys(delivery.provider, &delivery.event, &delivery.payload)
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
    let trigger = facts::trigger(&delivery);
    let mut jobs = Vec::with_capacity(matched.len());
    for policy in matched {
        let Some(app) = store.app(&policy.deployment_id).await? else {
            tracing::warn!(deployment_id = %policy.deployment_id, "policy names an unknown app");
            jobs.push(StartedJob {
                deployment_id: policy.deployment_id.clone(),
                job_id: None,
                status: "error".into(),
                error: Some("App not found".into()),
            });
            continue;
        };
        let request = StartRequest {
            deployment_id: app.deployment_id,
            inventory: app.inventory,
            trigger: trigger.clone(),
            on_busy: policy.on_busy,
        };
        jobs.push(match lifecycle.start(request).await {
            Ok(started) => {
                let job = started.into_job();
                StartedJob {
                    deployment_id: job.deployment_id,
                    job_id: Some(job.id),
                    status: job.status.as_str().to_owned(),
                    error: None,
                }
            }
            Err(LifecycleError::Busy) => StartedJob {
                deployment_id: policy.deployment_id.clone(),
                job_id: None,
                status: "error".into(),
                error: Some("App deployment is already running".into()),
            },
            Err(LifecycleError::Store(error)) => return Err(error),
        });
    }
    Ok(Outcome::Accepted(jobs))
}
