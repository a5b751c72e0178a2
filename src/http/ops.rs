//! Root, health, readiness and metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;

pub async fn root() -> Json<Value> {
    Json(json!({"app": "enac-cd", "version": env!("CARGO_PKG_VERSION")}))
}

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the store and the launcher answer.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
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
    if problems.is_empty() {
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "store": "ok", "launcher": "ok"})),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "error", "error": problems.join("; ")})),
        )
    }
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
