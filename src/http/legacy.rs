//! The seed's deploy and status endpoints, kept compatible with its client.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::extract::{Bearer, JsonBody};
use super::{ApiError, AppState};
use crate::auth::oidc::VerifiedToken;
use crate::auth::SecretDigest;
use crate::jobs::{
    now_ms, Job, JobStatus, LifecycleError, StartRequest, TokenError, TokenKind, Trigger,
    TriggerKind,
};
use crate::store::AppRecord;

const APP_NOT_FOUND: ApiError = ApiError::Domain("App not found");
const JOB_NOT_FOUND: ApiError = ApiError::Domain("Job not found");

#[derive(Deserialize)]
pub struct DeployRequest {
    deployment_id: Option<String>,
    deployment_secret: Option<String>,
}

#[derive(Serialize)]
pub struct JobView {
    status: JobStatus,
    job_id: String,
    output: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_token: Option<String>,
}

impl JobView {
    fn of(job: Job) -> JobView {
        JobView {
            status: job.status,
            job_id: job.id,
            output: job.output,
            status_token: None,
        }
    }
}

/// The app named by `deployment_id` if `secret` is its secret. Unknown ids
/// and wrong secrets cost the same hash and compare, so neither timing nor
/// answer tells whether an id exists.
fn authenticate(app: Option<AppRecord>, secret: &str) -> Option<AppRecord> {
    let digest = app
        .as_ref()
        .and_then(|app| app.secret)
        .unwrap_or_else(|| SecretDigest::of("\0no secret can match this\0"));
    let matches = digest.matches(secret);
    app.filter(|app| matches && app.secret.is_some())
}

pub async fn app_deploy(
    State(state): State<AppState>,
    Bearer(bearer): Bearer,
    JsonBody(request): JsonBody<DeployRequest>,
) -> Result<Json<JobView>, ApiError> {
    let request = match bearer {
        Some(token) => oidc_start_request(&state, &token, request.deployment_id).await?,
        None => secret_start_request(&state, request).await?,
    };
    let started = match state.lifecycle.start(request).await {
        Ok(started) => started,
        Err(LifecycleError::Busy) => {
            return Err(ApiError::Domain("App deployment is already running"))
        }
        Err(LifecycleError::Store(error)) => return Err(error.into()),
    };
    let job = started.into_job();
    let status_token = state.lifecycle.status_token(&job.id);
    Ok(Json(JobView {
        status_token: Some(status_token),
        ..JobView::of(job)
    }))
}

async fn secret_start_request(
    state: &AppState,
    request: DeployRequest,
) -> Result<StartRequest, ApiError> {
    let (Some(deployment_id), Some(secret)) = (request.deployment_id, request.deployment_secret)
    else {
        state.metrics.refuse("secret_missing");
        return Err(APP_NOT_FOUND);
    };
    let app = state.store.app(&deployment_id).await?;
    let Some(app) = authenticate(app, &secret) else {
        state.metrics.refuse("secret_invalid");
        return Err(APP_NOT_FOUND);
    };
    Ok(StartRequest {
        deployment_id: app.deployment_id,
        inventory: app.inventory,
        trigger: Trigger::of_kind(TriggerKind::Secret),
        on_busy: state.on_busy,
    })
}

/// Verifies an OIDC token for a request that reads or starts jobs.
async fn verified_token(state: &AppState, token: &str) -> Result<VerifiedToken, ApiError> {
    state.oidc.verify(token).await.map_err(|error| {
        state.metrics.refuse(&format!("oidc_{}", error.check()));
        tracing::info!(check = %error.check(), "OIDC token refused");
        ApiError::TokenRefused(format!("OIDC token refused: {error}"))
    })
}

/// The deployment an OIDC token may start: named, or the only one its
/// policies grant. The token's `jti` is spent only once all else holds.
async fn oidc_start_request(
    state: &AppState,
    token: &str,
    named: Option<String>,
) -> Result<StartRequest, ApiError> {
    let token = verified_token(state, token).await?;
    let policies = state.policies.current();
    let granted = policies.oidc_matches(&token.issuer, &token.claims);
    let policy = match (&named, granted.as_slice()) {
        (Some(id), _) => granted
            .iter()
            .find(|policy| policy.deployment_id == *id)
            .copied(),
        (None, [only]) => Some(*only),
        (None, _) => None,
    };
    let Some(policy) = policy else {
        state.metrics.refuse("oidc_policy");
        tracing::info!(issuer = %token.issuer, subject = token.subject(), named = named.as_deref().unwrap_or(""),
                       granted = granted.len(), "OIDC token refused by policy");
        let reason = match (&named, granted.len()) {
            (Some(_), _) => "OIDC token refused: policy (no rule grants this deployment_id)",
            (None, 0) => "OIDC token refused: policy (no rule matches the token)",
            (None, _) => "OIDC token refused: policy (several deployments match; name one with deployment_id)",
        };
        return Err(ApiError::TokenRefused(reason.into()));
    };
    let app = state
        .store
        .app(&policy.deployment_id)
        .await?
        .ok_or(APP_NOT_FOUND)?;
    let Some(jti) = token.jti.clone() else {
        state.metrics.refuse("oidc_claim_jti");
        return Err(ApiError::TokenRefused(
            "OIDC token refused: claim `jti` is missing".into(),
        ));
    };
    // Remembered as long as the token is accepted: leeway included, the
    // whole last second (expiry is checked in whole seconds), and one more
    // second for a token verified just before that second ended.
    let lifetime_ms = ((token.accepted_until + 2) * 1000 - now_ms()).max(1000);
    let jti_key = format!("oidc-jti:{}:{jti}", token.issuer);
    if !state.store.remember(&[&jti_key], lifetime_ms).await? {
        state.metrics.refuse("oidc_jti_replayed");
        return Err(ApiError::TokenRefused(
            "OIDC token refused: jti (token already used to start a job)".into(),
        ));
    }
    tracing::info!(issuer = %token.issuer, subject = token.subject(), deployment_id = %app.deployment_id,
                   "OIDC token accepted");
    Ok(StartRequest {
        deployment_id: app.deployment_id,
        inventory: app.inventory,
        trigger: token.trigger(),
        on_busy: policy.on_busy,
    })
}

#[derive(Deserialize)]
pub struct StatusRequest {
    deployment_id: Option<String>,
    deployment_secret: Option<String>,
    job_id: Option<String>,
}

pub async fn job_status(
    State(state): State<AppState>,
    Bearer(bearer): Bearer,
    JsonBody(request): JsonBody<StatusRequest>,
) -> Response {
    let job_id = request.job_id.clone().unwrap_or_default();
    match find_status(&state, bearer, request).await {
        Ok(job) => Json(JobView::of(job)).into_response(),
        Err(error) => error.with_job(&job_id),
    }
}

/// An OIDC token reads the jobs of the inventories its policies grant; it
/// may read repeatedly (its `jti` is spent only by starting a job).
async fn oidc_status(state: &AppState, token: &str, job_id: Option<&str>) -> Result<Job, ApiError> {
    let token = verified_token(state, token).await?;
    let job = state
        .store
        .job(job_id.unwrap_or_default())
        .await?
        .ok_or(JOB_NOT_FOUND)?;
    let policies = state.policies.current();
    for policy in policies.oidc_matches(&token.issuer, &token.claims) {
        if let Some(app) = state.store.app(&policy.deployment_id).await? {
            if app.inventory == job.inventory {
                return Ok(job);
            }
        }
    }
    Err(JOB_NOT_FOUND)
}

async fn find_status(
    state: &AppState,
    bearer: Option<String>,
    request: StatusRequest,
) -> Result<Job, ApiError> {
    if let Some(token) = bearer {
        // An OIDC job token, or the service's own status token.
        if state.oidc.claims_known_issuer(&token) {
            return oidc_status(state, &token, request.job_id.as_deref()).await;
        }
        let token_job = match state.lifecycle.tokens().verify(TokenKind::Status, &token) {
            Ok(job_id) => job_id,
            Err(error) => {
                state.metrics.refuse("status_token_invalid");
                return Err(ApiError::Unauthorized(match error {
                    TokenError::Expired => "status token expired",
                    TokenError::Invalid => "invalid status token",
                }));
            }
        };
        // The token reads only its own job.
        if request
            .job_id
            .as_deref()
            .is_some_and(|asked| asked != token_job)
        {
            return Err(JOB_NOT_FOUND);
        }
        return state.store.job(&token_job).await?.ok_or(JOB_NOT_FOUND);
    }
    let (Some(deployment_id), Some(secret)) = (request.deployment_id, request.deployment_secret)
    else {
        state.metrics.refuse("secret_missing");
        return Err(APP_NOT_FOUND);
    };
    let job_id = request.job_id.unwrap_or_default();
    let (app, job) = state.store.app_and_job(&deployment_id, &job_id).await?;
    let Some(app) = authenticate(app, &secret) else {
        state.metrics.refuse("secret_invalid");
        return Err(APP_NOT_FOUND);
    };
    // Apps sharing an inventory share its jobs (a joined job is theirs too).
    job.filter(|job| job.inventory == app.inventory)
        .ok_or(JOB_NOT_FOUND)
}
