//! Admin endpoints (bearer `CD_ADMIN_TOKEN`): the app list and the load.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::answer::OkStatus;
use super::error::ErrorBody;
use super::extract::{Admin, JsonBody};
use super::{ApiError, AppState};
use crate::apps::parse_apps;
use crate::domain::JobStatus;

/// One entry of the list `/set-available-apps/` takes (and `CD_APPS_FILE`
/// holds). The list is checked by `parse_apps`, entry by entry, so that a
/// refusal names each bad entry: this type only describes it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AppEntry {
    #[schema(example = "app-one")]
    deployment_id: String,
    /// What ansible deploys, and what is locked.
    #[schema(example = "app-one-prod")]
    inventory: String,
    /// At least `CD_MIN_SECRET_LENGTH` characters; omitted or null: the app
    /// can only be deployed through policies.
    deployment_secret: Option<String>,
}

/// The app list was replaced.
#[derive(Serialize, ToSchema)]
pub struct AppsReplaced {
    status: OkStatus,
    /// How many apps the list now holds.
    count: usize,
}

#[utoipa::path(post, path = "/set-available-apps/", tag = "admin",
    summary = "Replace the app list",
    description = "Replaces the whole set atomically. An invalid list (missing or empty id or inventory, \
duplicate id, secret shorter than `CD_MIN_SECRET_LENGTH`) changes nothing.",
    request_body(content = Vec<AppEntry>, description = "Every app"),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Replaced", body = AppsReplaced),
        (status = 400, description = "Body is not valid JSON", body = ErrorBody),
        (status = 401, description = "Missing or invalid admin token", body = ErrorBody),
        (status = 403, description = "Admin endpoints are disabled (`CD_ADMIN_TOKEN` unset)", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Content-Type is not JSON", body = ErrorBody),
        (status = 422, description = "Invalid entries, each named in `errors`; nothing changed", body = ErrorBody),
        (status = 503, description = "Store unavailable, try again", body = ErrorBody),
    ))]
pub async fn set_available_apps(
    _admin: Admin,
    State(state): State<AppState>,
    JsonBody(list): JsonBody<Value>,
) -> Result<Json<AppsReplaced>, ApiError> {
    let apps = parse_apps(&list, state.min_secret_length).map_err(ApiError::InvalidApps)?;
    state.store.replace_apps(&apps).await?;
    tracing::info!(count = apps.len(), "app list replaced");
    Ok(Json(AppsReplaced {
        status: OkStatus::Ok,
        count: apps.len(),
    }))
}

/// An app, without its secret (never returned).
#[derive(Serialize, ToSchema)]
pub struct ListedApp {
    deployment_id: String,
    inventory: String,
}

/// The app list.
#[derive(Serialize, ToSchema)]
pub struct AppList {
    status: OkStatus,
    inventory: Vec<ListedApp>,
}

#[utoipa::path(get, path = "/get-available-apps/", tag = "admin",
    summary = "The app list, without secrets",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every app", body = AppList),
        (status = 401, description = "Missing or invalid admin token", body = ErrorBody),
        (status = 403, description = "Admin endpoints are disabled (`CD_ADMIN_TOKEN` unset)", body = ErrorBody),
        (status = 503, description = "Store unavailable, try again", body = ErrorBody),
    ))]
pub async fn get_available_apps(
    _admin: Admin,
    State(state): State<AppState>,
) -> Result<Json<AppList>, ApiError> {
    let apps = state.store.apps().await?;
    let inventory = apps
        .into_iter()
        .map(|app| ListedApp {
            deployment_id: app.deployment_id,
            inventory: app.inventory,
        })
        .collect();
    Ok(Json(AppList {
        status: OkStatus::Ok,
        inventory,
    }))
}

const DEFAULT_PERIODS: &str = "1_hour:3600,1_day:86400,1_week:604800";

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LoadQuery {
    /// Comma list of `name:seconds`; default `1_hour:3600,1_day:86400,1_week:604800`.
    #[param(example = "1_hour:3600,1_day:86400", nullable = false)]
    periods: Option<String>,
}

fn parse_periods(text: &str) -> Result<Vec<(String, i64)>, ApiError> {
    let bad = || ApiError::BadRequest(format!("`periods` must look like {DEFAULT_PERIODS}"));
    text.split(',')
        .map(|period| {
            let (name, seconds) = period.split_once(':').ok_or_else(bad)?;
            let seconds: i64 = seconds.trim().parse().map_err(|_| bad())?;
            if name.trim().is_empty() || seconds <= 0 || seconds > 10 * 365 * 86_400 {
                return Err(bad());
            }
            Ok((name.trim().to_owned(), seconds))
        })
        .collect()
}

/// Per requested period, the jobs started within it counted by status.
#[derive(Serialize, ToSchema)]
pub struct Load {
    status: OkStatus,
    /// Period name → status → count; every status is present.
    #[schema(example = json!({"1_hour": {"queued": 0, "starting": 0, "running": 1, "success": 4, "error": 0}}))]
    load: BTreeMap<String, BTreeMap<JobStatus, u64>>,
}

#[utoipa::path(get, path = "/load/", tag = "admin",
    summary = "Jobs started per period, by status",
    params(LoadQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Counts per period", body = Load),
        (status = 400, description = "Bad `periods`", body = ErrorBody),
        (status = 401, description = "Missing or invalid admin token", body = ErrorBody),
        (status = 403, description = "Admin endpoints are disabled (`CD_ADMIN_TOKEN` unset)", body = ErrorBody),
        (status = 503, description = "Store unavailable, try again", body = ErrorBody),
    ))]
pub async fn load(
    _admin: Admin,
    State(state): State<AppState>,
    query: Result<Query<LoadQuery>, QueryRejection>,
) -> Result<Json<Load>, ApiError> {
    // A malformed query gets the shared error body, not axum's plain text.
    let Query(query) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let periods = parse_periods(query.periods.as_deref().unwrap_or(DEFAULT_PERIODS))?;
    let load = state.lifecycle.load(&periods).await?;
    Ok(Json(Load {
        status: OkStatus::Ok,
        load,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_periods("1_hour:3600,1_day:86400").expect("valid"),
            vec![("1_hour".to_owned(), 3600), ("1_day".to_owned(), 86400)]
        );
        for bad in ["1_hour", "x:-1", ":5", "a:b", ""] {
            assert!(parse_periods(bad).is_err(), "{bad} accepted");
        }
    }
}
