//! `POST /webhooks/{provider}`: GitHub and GitLab deliveries.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::extract::SignedDelivery;
use super::{ApiError, AppState};
use crate::ingress::webhook::Outcome;

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
    Ok(match outcome {
        Outcome::Pong => Json(json!({"status": "pong"})).into_response(),
        Outcome::Duplicate => Json(json!({"status": "duplicate"})).into_response(),
        Outcome::Ignored(reason) => {
            Json(json!({"status": "ignored", "reason": reason})).into_response()
        }
        Outcome::Accepted(jobs) => (
            StatusCode::ACCEPTED,
            Json(json!({"status": "accepted", "jobs": jobs})),
        )
            .into_response(),
    })
}
