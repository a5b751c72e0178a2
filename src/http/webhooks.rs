//! `POST /webhooks/github` and `POST /webhooks/gitlab`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::extract::{GithubDelivery, GitlabDelivery};
use super::{ApiError, AppState};
use crate::metrics::DeliveryLabels;
use crate::webhook::{process, Outcome, VerifiedDelivery};

pub async fn github(
    State(state): State<AppState>,
    GithubDelivery(delivery): GithubDelivery,
) -> Result<Response, ApiError> {
    respond(&state, delivery).await
}

pub async fn gitlab(
    State(state): State<AppState>,
    GitlabDelivery(delivery): GitlabDelivery,
) -> Result<Response, ApiError> {
    respond(&state, delivery).await
}

async fn respond(state: &AppState, delivery: VerifiedDelivery) -> Result<Response, ApiError> {
    let provider = delivery.provider.as_str();
    let event = delivery.event.clone();
    let delivery_id = delivery.delivery_id.clone().unwrap_or_default();
    let outcome = process(state.store.as_ref(), &state.lifecycle, delivery).await?;
    state
        .metrics
        .webhook_deliveries
        .get_or_create(&DeliveryLabels {
            provider: provider.to_owned(),
            result: outcome.result().to_owned(),
        })
        .inc();
    tracing::info!(provider, %event, delivery_id, result = outcome.result(), "webhook delivery");
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
