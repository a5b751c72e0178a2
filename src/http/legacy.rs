//! The seed's deploy and status endpoints, kept compatible with its client.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::extract::{Bearer, JsonBody};
use super::{ApiError, AppState};
use crate::auth::SecretDigest;
use crate::jobs::{
    Job, JobStatus, LifecycleError, StartRequest, Started, TokenError, TokenKind, Trigger,
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
    JsonBody(request): JsonBody<DeployRequest>,
) -> Result<Json<JobView>, ApiError> {
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
    let request = StartRequest {
        deployment_id: app.deployment_id,
        inventory: app.inventory,
        trigger: Trigger::of_kind(TriggerKind::Secret),
        on_busy: state.on_busy,
    };
    let started = match state.lifecycle.start(request).await {
        Ok(started) => started,
        Err(LifecycleError::Busy) => {
            return Err(ApiError::Domain("App deployment is already running"))
        }
        Err(LifecycleError::Store(error)) => return Err(error.into()),
    };
    let job = match started {
        Started::New(job) | Started::Queued(job) | Started::Joined(job) => job,
    };
    let status_token = state.lifecycle.status_token(&job.id);
    Ok(Json(JobView {
        status_token: Some(status_token),
        ..JobView::of(job)
    }))
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

async fn find_status(
    state: &AppState,
    bearer: Option<String>,
    request: StatusRequest,
) -> Result<Job, ApiError> {
    if let Some(token) = bearer {
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
