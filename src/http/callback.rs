//! `POST /set-job-status/`: the ansible program reports status and output
//! with its job's callback token.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{Callback, IdempotencyKey, JsonBody};
use super::{ApiError, AppState};
use crate::domain::JobStatus;
use crate::jobs::UpdateRefused;
use crate::store::OutputChange;

#[derive(Deserialize)]
pub struct CallbackRequest {
    job_id: String,
    status: String,
    output: Option<String>,
    #[serde(default)]
    append: bool,
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

pub async fn set_job_status(
    State(state): State<AppState>,
    Callback(caller): Callback,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(request): JsonBody<CallbackRequest>,
) -> Result<Json<Value>, ApiError> {
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
        Ok(()) => Ok(Json(json!({"status": "saved"}))),
        Err(UpdateRefused::NotFound) => Err(ApiError::NotFound("Job not found")),
        Err(UpdateRefused::Final(current)) => Err(ApiError::Conflict(format!(
            "job is already final ({current})"
        ))),
        Err(UpdateRefused::NotAllowed(current)) => Err(ApiError::Conflict(format!(
            "job is {current}; it cannot become {status}"
        ))),
    }
}
