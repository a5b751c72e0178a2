//! `POST /set-job-status/`: the ansible program reports status and output
//! with its job's callback token.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::answer::SavedStatus;
use super::error::ErrorBody;
use super::extract::{Callback, IdempotencyKey, JsonBody};
use super::{ApiError, AppState};
use crate::domain::JobStatus;
use crate::jobs::UpdateRefused;
use crate::store::OutputChange;

/// A report of the job's program.
#[derive(Deserialize, ToSchema)]
pub struct CallbackRequest {
    /// The job of the callback token.
    job_id: String,
    /// `running`, `success`, `error`, or `finished` (the seed's word for `success`).
    #[schema(example = "running")]
    status: String,
    /// Replaces the job's output, or is appended to it with `append`.
    output: Option<String>,
    #[serde(default)]
    append: bool,
}

/// The report was stored.
#[derive(Serialize, ToSchema)]
pub struct Saved {
    status: SavedStatus,
}

fn reported_status(text: &str) -> Option<JobStatus> {
    match text {
        "running" => Some(JobStatus::Running),
        // "finished" is the seed's word for success.
        "success" | "finished" => Some(JobStatus::Success),
        "error" => Some(JobStatus::Error),
        _ => None,
    }
}

#[utoipa::path(post, path = "/set-job-status/", tag = "callback",
    summary = "Report a job's status and output (the job's program)",
    description = "Called by the ansible program with its job's `CD_CALLBACK_TOKEN`, at `CD_CALLBACK_URL`. \
The body may hold up to about twice `CD_MAX_OUTPUT`.",
    request_body = CallbackRequest,
    params(IdempotencyKey),
    security(("callback_token" = [])),
    responses(
        (status = 200, description = "Saved", body = Saved),
        (status = 400, description = "Body is not valid JSON, or a bad `Idempotency-Key`", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired callback token", body = ErrorBody),
        (status = 403, description = "The token is another job's", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is already final, or cannot take this status", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Content-Type is not JSON", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape, or an unknown `status`", body = ErrorBody),
        (status = 503, description = "Store unavailable, try again", body = ErrorBody),
    ))]
pub async fn set_job_status(
    State(state): State<AppState>,
    Callback(caller): Callback,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(request): JsonBody<CallbackRequest>,
) -> Result<Json<Saved>, ApiError> {
    state.access.may_report(&caller, &request.job_id)?;
    let status = reported_status(&request.status).ok_or_else(|| {
        ApiError::Unprocessable("`status` must be running, success, error or finished".into())
    })?;
    let output = request.output.map(|text| {
        if request.append {
            OutputChange::Append(text)
        } else {
            OutputChange::Replace(text)
        }
    });
    match state
        .lifecycle
        .report(&request.job_id, status, output, key.as_deref())
        .await?
    {
        Ok(()) => Ok(Json(Saved {
            status: SavedStatus::Saved,
        })),
        Err(UpdateRefused::NotFound) => Err(ApiError::NotFound("Job not found")),
        Err(UpdateRefused::Final(current)) => Err(ApiError::Conflict(format!(
            "job is already final ({current})"
        ))),
        Err(UpdateRefused::NotAllowed(current)) => Err(ApiError::Conflict(format!(
            "job is {current}; it cannot become {status}"
        ))),
    }
}
