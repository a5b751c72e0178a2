//! The one error type of the HTTP layer and its mapping to status and body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tracing::error;
use utoipa::ToSchema;

use super::answer::ErrorStatus;
use crate::access::Denied;
use crate::apps::AppProblem;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A refusal of the legacy API: HTTP 200, because the deployed client
    /// retries every other status.
    #[error("{0}")]
    Domain(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("request body is too large")]
    TooLarge,
    #[error("{0}")]
    Unprocessable(String),
    #[error("invalid apps")]
    InvalidApps(Vec<AppProblem>),
    #[error("{0}")]
    Unauthorized(&'static str),
    /// An OIDC token refused: the message names the failed check.
    #[error("{0}")]
    TokenRefused(String),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// The store cannot be reached; the cause is logged, not returned.
    #[error("service unavailable, try again")]
    Unavailable(String),
    /// `/readyz`: what does not answer (no secret in it).
    #[error("{0}")]
    NotReady(String),
}

/// The body of every error: `{"status":"error","error":…}`. Legacy domain
/// refusals (unknown app, busy inventory, unknown job) carry it with HTTP 200.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    status: ErrorStatus,
    /// What went wrong, for a person.
    #[schema(example = "App not found")]
    error: String,
    /// `/set-available-apps/` only: each invalid entry of the list.
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<Vec<AppProblem>>,
}

/// An error of `/job-status/` once the request was read: the deployed client
/// reads `output` before it looks at `status`.
#[derive(Serialize, ToSchema)]
pub struct JobErrorBody {
    #[serde(flatten)]
    error: ErrorBody,
    /// The job asked for, as sent.
    job_id: String,
    /// Always empty.
    output: String,
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::Unavailable(error.to_string())
    }
}

/// A store failure shared by several waiters (one read for many followers).
impl From<std::sync::Arc<StoreError>> for ApiError {
    fn from(error: std::sync::Arc<StoreError>) -> Self {
        ApiError::Unavailable(error.to_string())
    }
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> Self {
        match denied {
            Denied::AppNotFound => ApiError::Domain("App not found"),
            Denied::JobNotFound => ApiError::Domain("Job not found"),
            Denied::Busy => ApiError::Domain("App deployment is already running"),
            Denied::Unauthenticated(reason) => ApiError::Unauthorized(reason),
            Denied::TokenRefused(reason) => ApiError::TokenRefused(reason),
            Denied::Forbidden(reason) => ApiError::Forbidden(reason),
            Denied::Unavailable(error) => error.into(),
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Domain(_) => StatusCode::OK,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unprocessable(_) | ApiError::InvalidApps(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Unauthorized(_) | ApiError::TokenRefused(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) | ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `{"status":"error","error":…}` body every error shares.
    pub fn body(self) -> ErrorBody {
        let mut body = ErrorBody {
            status: ErrorStatus::Error,
            error: self.to_string(),
            errors: None,
        };
        match self {
            ApiError::InvalidApps(problems) => {
                let listed: Vec<String> = problems.iter().map(ToString::to_string).collect();
                body.error = format!("invalid apps: {}", listed.join("; "));
                body.errors = Some(problems);
            }
            ApiError::Unavailable(cause) => error!(%cause, "request failed: store unavailable"),
            _ => {}
        }
        body
    }

    /// The same error for `/job-status/`, whose client reads `output` first.
    pub fn with_job(self, job_id: &str) -> Response {
        let status = self.status();
        let body = JobErrorBody {
            error: self.body(),
            job_id: job_id.to_owned(),
            output: String::new(),
        };
        (status, Json(body)).into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(self.body())).into_response()
    }
}
