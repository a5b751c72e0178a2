//! The fixed words of JSON answers (`"status":"ok"`, `"status":"error"`…),
//! typed so that the OpenAPI document shows each as the one value it is.

use serde::Serialize;
use utoipa::ToSchema;

/// `"ok"`: an admin or health answer.
#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OkStatus {
    Ok,
}

/// `"saved"`: a callback report was stored.
#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SavedStatus {
    Saved,
}

/// `"ready"`: the store and the launcher answer.
#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReadyStatus {
    Ready,
}

/// `"error"`: the status of every error body.
#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ErrorStatus {
    Error,
}
