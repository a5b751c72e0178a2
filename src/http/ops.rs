//! Root, health, readiness and metrics.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::answer::{OkStatus, ReadyStatus};
use super::{ApiError, AppState};

/// What answers here.
#[derive(Serialize, ToSchema)]
pub struct About {
    #[schema(example = "enac-cd")]
    app: &'static str,
    #[schema(example = "0.1.0")]
    version: &'static str,
}

#[utoipa::path(get, path = "/", tag = "operations",
    summary = "The service's name and version",
    responses((status = 200, description = "Name and version", body = About)))]
pub async fn root() -> Json<About> {
    Json(About {
        app: "enac-cd",
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// The process answers.
#[derive(Serialize, ToSchema)]
pub struct Health {
    status: OkStatus,
}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    summary = "Liveness: the process is up",
    responses((status = 200, description = "Up", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: OkStatus::Ok,
    })
}

/// The store and the launcher answer.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    status: ReadyStatus,
    #[schema(inline)]
    store: OkStatus,
    #[schema(inline)]
    launcher: OkStatus,
}

/// Ready when the store and the launcher answer.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    summary = "Readiness: the store and the launcher answer",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "The store or the launcher does not answer", body = super::error::ErrorBody),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    let store = state.store.ping().await;
    let launcher = state.launcher.ping().await;
    let mut problems = Vec::new();
    if let Err(error) = &store {
        tracing::warn!(%error, "not ready: store");
        problems.push("store unavailable".to_owned());
    }
    if let Err(error) = &launcher {
        tracing::warn!(%error, "not ready: launcher");
        problems.push(error.to_string());
    }
    if !problems.is_empty() {
        return Err(ApiError::NotReady(problems.join("; ")));
    }
    Ok(Json(Readiness {
        status: ReadyStatus::Ready,
        store: OkStatus::Ok,
        launcher: OkStatus::Ok,
    }))
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    summary = "Prometheus metrics",
    description = "Jobs by trigger and final status, webhook deliveries by result, auth refusals by reason, request latency by route.",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4",
        content_type = "text/plain; version=0.0.4; charset=utf-8", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
