//! The seed's deploy and status endpoints, kept compatible with its client.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ErrorBody, JobErrorBody};
use super::extract::{Bearer, JsonBody};
use super::{ApiError, AppState};
use crate::access::Reader;
use crate::domain::{Job, JobStatus};
use crate::ingress::DeployCredential;

/// A deploy request: the deployment's id and secret, or (with an OIDC job
/// token as bearer) the id alone, or nothing when the policies map the token
/// to exactly one deployment.
#[derive(Deserialize, ToSchema)]
pub struct DeployRequest {
    #[schema(example = "app-one")]
    deployment_id: Option<String>,
    deployment_secret: Option<String>,
}

/// A job as the legacy client sees it.
#[derive(Serialize, ToSchema)]
// No other field: tells a job apart from a refusal (`error`) in the schema.
#[serde(deny_unknown_fields)]
pub struct JobView {
    status: JobStatus,
    /// A ULID.
    #[schema(example = "01HZX3K6V9Q2T7B8C4D5E6F7G8")]
    job_id: String,
    /// The job's output so far (the newest bytes, when truncated).
    output: String,
    /// `/app-deploy/` only: a bearer token that reads this job's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    status_token: Option<String>,
}

/// An HTTP 200 answer of the legacy API: the job, or a domain refusal (the
/// deployed client retries every other status).
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Describes the answers only: `ApiError` builds refusals.
pub enum DeployAnswer {
    Job(JobView),
    Refused(ErrorBody),
}

/// The HTTP 200 answer of `/job-status/`: the job, or a domain refusal that
/// also carries `job_id` and an empty `output`.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Describes the answers only: `ApiError` builds refusals.
pub enum StatusAnswer {
    Job(JobView),
    Refused(JobErrorBody),
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

/// Starts a job for a deployment (or joins or queues, per `CD_ON_BUSY` and
/// the policies).
#[utoipa::path(post, path = "/app-deploy/", tag = "legacy",
    summary = "Deploy an app",
    description = "Authenticated by `deployment_secret` in the body, or by an OIDC job token as bearer. \
Domain refusals answer HTTP 200 with `{\"status\":\"error\"}`: `App not found` (unknown id or wrong secret, \
the same answer for both) and `App deployment is already running` (busy inventory, `reject`).",
    request_body = DeployRequest,
    security((), ("job_token" = [])),
    responses(
        (status = 200, description = "The job started, joined or queued; or a domain refusal", body = DeployAnswer),
        (status = 400, description = "Body is not valid JSON", body = ErrorBody),
        (status = 401, description = "Malformed Authorization header, or OIDC token refused (the reason names the failed check)", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Content-Type is not JSON", body = ErrorBody),
        (status = 422, description = "Body is JSON of the wrong shape", body = ErrorBody),
        (status = 503, description = "Store unavailable, try again", body = ErrorBody),
    ))]
pub async fn app_deploy(
    State(state): State<AppState>,
    Bearer(bearer): Bearer,
    JsonBody(request): JsonBody<DeployRequest>,
) -> Result<Json<JobView>, ApiError> {
    let credential = match bearer {
        Some(token) => DeployCredential::OidcToken {
            token,
            deployment_id: request.deployment_id,
        },
        None => DeployCredential::Secret {
            deployment_id: request.deployment_id,
            secret: request.deployment_secret,
        },
    };
    let deployed = state.ingress.deploy(credential).await?;
    Ok(Json(JobView {
        status_token: Some(deployed.status_token),
        ..JobView::of(deployed.job)
    }))
}

/// A status request: the deployment's id and secret, or a status token or
/// OIDC job token as bearer.
#[derive(Deserialize, ToSchema)]
pub struct StatusRequest {
    deployment_id: Option<String>,
    deployment_secret: Option<String>,
    job_id: Option<String>,
}

#[utoipa::path(post, path = "/job-status/", tag = "legacy",
    summary = "A job's status and output",
    description = "Authenticated by `deployment_id` and `deployment_secret` in the body, or by the job's \
`status_token` or an OIDC job token as bearer. A job of another app, like an unknown one, answers HTTP 200 \
`Job not found`. Refusals once the body is read carry `job_id` and `\"output\":\"\"`.",
    request_body = StatusRequest,
    security((), ("job_token" = [])),
    responses(
        (status = 200, description = "The job; or a domain refusal", body = StatusAnswer),
        (status = 400, description = "Body is not valid JSON", body = ErrorBody),
        (status = 401, description = "The bearer token is refused (a malformed Authorization header: without `job_id` and `output`)", body = JobErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Content-Type is not JSON", body = ErrorBody),
        (status = 422, description = "Body is JSON of the wrong shape", body = ErrorBody),
        (status = 503, description = "Store unavailable, try again", body = JobErrorBody),
    ))]
pub async fn job_status(
    State(state): State<AppState>,
    Bearer(bearer): Bearer,
    JsonBody(request): JsonBody<StatusRequest>,
) -> Response {
    let reader = match bearer {
        Some(token) => Reader::Bearer(token),
        None => Reader::Secret {
            deployment_id: request.deployment_id,
            secret: request.deployment_secret,
        },
    };
    let asked = request.job_id.as_deref();
    match state.access.read(reader, asked).await {
        Ok(job) => Json(JobView::of(job)).into_response(),
        Err(denied) => ApiError::from(denied).with_job(asked.unwrap_or_default()),
    }
}
