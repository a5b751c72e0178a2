//! Extractors that guard requests: a handler that needs one cannot forget it.

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::{ApiError, AppState};
use crate::auth::bearer_matches;
use crate::auth::webhook::SignatureError;
use crate::jobs::{TokenError, TokenKind};
use crate::metrics::DeliveryLabels;
use crate::policy::Provider;
use crate::webhook::{self, Refusal, VerifiedDelivery};
use secrecy::ExposeSecret;

/// A JSON body: content type checked (415), size capped by the route's body
/// limit (413), syntax (400) and shape (422) errors in the shared body.
pub struct JsonBody<T>(pub T);

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge
                } else {
                    ApiError::BadRequest("cannot read request body".into())
                }
            })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|error| {
                if error.is_data() {
                    ApiError::Unprocessable(format!("invalid request body: {error}"))
                } else {
                    ApiError::BadRequest("request body is not valid JSON".into())
                }
            })
    }
}

/// The bearer token of the `Authorization` header, if any.
pub struct Bearer(pub Option<String>);

fn bearer_of(parts: &Parts) -> Result<Option<String>, ApiError> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim().to_owned()))
        }
        _ => Err(ApiError::Unauthorized(
            "Authorization must be `Bearer <token>`",
        )),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        bearer_of(parts).map(Bearer)
    }
}

/// Proof that the request carries `CD_ADMIN_TOKEN`.
pub struct Admin;

impl<S> FromRequestParts<S> for Admin
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AppState::from_ref(state);
        let Some(expected) = state.admin_token.as_deref() else {
            state.metrics.refuse("admin_disabled");
            return Err(ApiError::Forbidden(
                "admin endpoints are disabled (CD_ADMIN_TOKEN is unset)",
            ));
        };
        match bearer_of(parts) {
            Ok(Some(token)) if bearer_matches(&token, expected.expose_secret()) => Ok(Admin),
            Ok(Some(_)) => {
                state.metrics.refuse("admin_token_invalid");
                Err(ApiError::Unauthorized("invalid admin token"))
            }
            Ok(None) | Err(_) => {
                state.metrics.refuse("admin_token_missing");
                Err(ApiError::Unauthorized("missing admin bearer token"))
            }
        }
    }
}

/// A valid callback token; holds the one job it is good for.
pub struct CallbackJob(pub String);

impl<S> FromRequestParts<S> for CallbackJob
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AppState::from_ref(state);
        let Ok(Some(token)) = bearer_of(parts) else {
            state.metrics.refuse("callback_token_missing");
            return Err(ApiError::Unauthorized("missing callback token"));
        };
        match state.lifecycle.tokens().verify(TokenKind::Callback, &token) {
            Ok(job_id) => Ok(CallbackJob(job_id)),
            Err(TokenError::Expired) => {
                state.metrics.refuse("callback_token_expired");
                Err(ApiError::Unauthorized("callback token expired"))
            }
            Err(TokenError::Invalid) => {
                state.metrics.refuse("callback_token_invalid");
                Err(ApiError::Unauthorized("invalid callback token"))
            }
        }
    }
}

/// Reads a webhook body (capped by the route's limit) and verifies it
/// against the policy rules bound to its repository or project id.
async fn signed_delivery(
    request: Request,
    state: &AppState,
    provider: Provider,
) -> Result<VerifiedDelivery, ApiError> {
    let count = |result: &str| {
        state
            .metrics
            .webhook_deliveries
            .get_or_create(&DeliveryLabels {
                provider: provider.as_str().to_owned(),
                result: result.to_owned(),
            })
            .inc();
    };
    let (parts, body) = request.into_parts();
    let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                count("too_large");
                ApiError::TooLarge
            } else {
                count("bad_request");
                ApiError::BadRequest("cannot read request body".into())
            }
        })?;
    webhook::verify(state.policies.current(), provider, &parts.headers, &bytes).map_err(|refusal| {
        match refusal {
            Refusal::Signature(error) => {
                count("unauthorized");
                state.metrics.refuse(match error {
                    SignatureError::Missing => "webhook_signature_missing",
                    SignatureError::Malformed => "webhook_signature_malformed",
                    SignatureError::Mismatch => "webhook_signature_mismatch",
                    SignatureError::Stale => "webhook_timestamp_stale",
                });
                ApiError::Unauthorized(match error {
                    SignatureError::Missing => "missing signature",
                    SignatureError::Malformed => "malformed signature",
                    SignatureError::Mismatch => "signature does not match",
                    SignatureError::Stale => "timestamp outside the 5-minute window",
                })
            }
            other => {
                count("bad_request");
                ApiError::BadRequest(other.to_string())
            }
        }
    })
}

/// A GitHub delivery whose `X-Hub-Signature-256` holds.
pub struct GithubDelivery(pub VerifiedDelivery);

impl FromRequest<AppState> for GithubDelivery {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        signed_delivery(request, state, Provider::Github)
            .await
            .map(GithubDelivery)
    }
}

/// A GitLab delivery whose token or Standard Webhooks signature holds.
pub struct GitlabDelivery(pub VerifiedDelivery);

impl FromRequest<AppState> for GitlabDelivery {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        signed_delivery(request, state, Provider::Gitlab)
            .await
            .map(GitlabDelivery)
    }
}
