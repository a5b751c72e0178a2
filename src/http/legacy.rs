//! The seed's deploy and status endpoints, kept compatible with its client.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::extract::{Bearer, JsonBody};
use super::{ApiError, AppState};
use crate::access::Reader;
use crate::domain::{Job, JobStatus};
use crate::ingress::DeployCredential;

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
