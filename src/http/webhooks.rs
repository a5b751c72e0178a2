//! `POST /webhooks/{provider}`: GitHub and GitLab deliveries.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::extract::SignedDelivery;
use super::{ApiError, AppState};
use crate::ingress::webhook::{Outcome, StartedJob};

/// What became of a verified delivery.
#[derive(Serialize, ToSchema)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum DeliveryAnswer {
    /// A `ping` (GitHub) delivery.
    Pong,
    /// The same delivery (id or body) was seen within 72 h: no job.
    Duplicate,
    /// No rule matches, or the event never deploys.
    Ignored { reason: String },
    /// HTTP 202: one entry per matched deployment.
    Accepted { jobs: Vec<StartedJob> },
}

impl From<Outcome> for DeliveryAnswer {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Pong => DeliveryAnswer::Pong,
            Outcome::Duplicate => DeliveryAnswer::Duplicate,
            Outcome::Ignored(reason) => DeliveryAnswer::Ignored { reason },
            Outcome::Accepted(jobs) => DeliveryAnswer::Accepted { jobs },
        }
    }
}

#[utoipa::path(post, path = "/webhooks/{provider}", tag = "webhooks",
    summary = "A GitHub or GitLab webhook delivery",
    description = "The body (at most 5 MiB) is verified against the secrets of the policy rules bound to \
its `/repository/id` (GitHub) or `/project/id` (GitLab) before anything else of it is read. GitHub: \
`X-Hub-Signature-256` (SHA-1 is not accepted). GitLab: Standard Webhooks headers when the rule has a \
signing secret, else `X-Gitlab-Token`.",
    params(SignedDelivery),
    request_body(content = Object, description = "The provider's event payload, as sent"),
    responses(
        (status = 200, description = "`pong`, `duplicate` or `ignored`", body = DeliveryAnswer),
        (status = 202, description = "`accepted`: jobs started, joined or queued per matched deployment", body = DeliveryAnswer),
        (status = 400, description = "Body unreadable or not JSON, a missing event header, or no id that binds rules", body = ErrorBody),
        (status = 401, description = "Missing or bad signature or token", body = ErrorBody),
        (status = 404, description = "Unknown provider", body = ErrorBody),
        (status = 413, description = "Body over 5 MiB", body = ErrorBody),
        (status = 503, description = "Store unavailable, try again", body = ErrorBody),
    ))]
pub async fn deliver(
    State(state): State<AppState>,
    SignedDelivery(delivery): SignedDelivery,
) -> Result<Response, ApiError> {
    let provider = delivery.provider.provider().as_str();
    let event = delivery.event.clone();
    let delivery_id = delivery.delivery_id.clone().unwrap_or_default();
    let outcome = state.ingress.webhook(delivery).await?;
    state.metrics.delivery(provider, outcome.result());
    tracing::info!(provider, %event, delivery_id, result = outcome.result().as_str(), "webhook delivery");
    let status = match outcome {
        Outcome::Accepted(_) => StatusCode::ACCEPTED,
        _ => StatusCode::OK,
    };
    Ok((status, Json(DeliveryAnswer::from(outcome))).into_response())
}
