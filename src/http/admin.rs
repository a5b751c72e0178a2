//! Admin endpoints (bearer `CD_ADMIN_TOKEN`): the app list and the load.

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{Admin, JsonBody};
use super::{ApiError, AppState};
use crate::apps::parse_apps;

pub async fn set_available_apps(
    _admin: Admin,
    State(state): State<AppState>,
    JsonBody(list): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let apps = parse_apps(&list, state.min_secret_length).map_err(ApiError::InvalidApps)?;
    state.store.replace_apps(&apps).await?;
    tracing::info!(count = apps.len(), "app list replaced");
    Ok(Json(json!({"status": "ok", "count": apps.len()})))
}

pub async fn get_available_apps(
    _admin: Admin,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let apps = state.store.apps().await?;
    let listed: Vec<Value> = apps
        .iter()
        .map(|app| json!({"deployment_id": app.deployment_id, "inventory": app.inventory}))
        .collect();
    Ok(Json(json!({"status": "ok", "inventory": listed})))
}

const DEFAULT_PERIODS: &str = "1_hour:3600,1_day:86400,1_week:604800";

#[derive(Deserialize)]
pub struct LoadQuery {
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

pub async fn load(
    _admin: Admin,
    State(state): State<AppState>,
    Query(query): Query<LoadQuery>,
) -> Result<Json<Value>, ApiError> {
    let periods = parse_periods(query.periods.as_deref().unwrap_or(DEFAULT_PERIODS))?;
    let load = state.lifecycle.load(&periods).await?;
    Ok(Json(json!({"status": "ok", "load": load})))
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
