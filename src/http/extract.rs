//! Extractors that guard requests: a handler that needs one cannot forget it.

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Path, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{Required, Type};
use utoipa::IntoParams;

use super::{ApiError, AppState};
use crate::access::CallbackCaller;
use crate::ingress::webhook::{self, Refusal, VerifiedDelivery};
use crate::metrics::DeliveryResult;

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

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The request's `Idempotency-Key`, if any: 1 to 255 visible ASCII characters.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyKey(None));
        };
        let key = value.to_str().unwrap_or_default();
        let valid = !key.is_empty()
            && key.len() <= MAX_IDEMPOTENCY_KEY
            && key.bytes().all(|byte| byte.is_ascii_graphic());
        if !valid {
            return Err(ApiError::BadRequest(
                "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
            ));
        }
        Ok(IdempotencyKey(Some(key.to_owned())))
    }
}

/// An optional header, as the OpenAPI document lists it.
fn optional_header(name: &str, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(utoipa::openapi::Object::with_type(Type::String)))
        .build()
}

impl IntoParams for IdempotencyKey {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![optional_header(
            "Idempotency-Key",
            "1 to 255 visible ASCII characters: a retried request with the same key is answered \
as the first was, and changes nothing",
        )]
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
        let token = bearer_of(parts).ok().flatten();
        AppState::from_ref(state).access.admin(token.as_deref())?;
        Ok(Admin)
    }
}

/// A valid callback token, checked before the body is read.
pub struct Callback(pub CallbackCaller);

impl<S> FromRequestParts<S> for Callback
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let token = bearer_of(parts).ok().flatten();
        let caller = AppState::from_ref(state)
            .access
            .callback(token.as_deref())?;
        Ok(Callback(caller))
    }
}

/// A webhook delivery to `/webhooks/{provider}` whose signature holds for a
/// policy rule bound to its repository or project id; the body is capped by
/// the route's limit before anything is read.
pub struct SignedDelivery(pub VerifiedDelivery);

/// The provider, and the headers that verify and name a delivery.
impl IntoParams for SignedDelivery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let provider = ParameterBuilder::new()
            .name("provider")
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some("`github` or `gitlab`; any other answers 404"))
            .schema(Some(
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["github", "gitlab"])),
            ))
            .example(Some("github".into()))
            .build();
        let headers = [
            ("X-GitHub-Event", "GitHub: the event (`push`, `ping`…)"),
            ("X-GitHub-Delivery", "GitHub: the delivery id, for dedupe"),
            ("X-Hub-Signature-256", "GitHub: `sha256=<hex HMAC-SHA256 of the body>`; SHA-1 is not accepted"),
            ("X-Gitlab-Event", "GitLab: the event (`Push Hook`, `Pipeline Hook`…)"),
            ("X-Gitlab-Token", "GitLab: the rule's token, when it has no signing secret"),
            ("webhook-id", "GitLab, Standard Webhooks: the delivery id, signed and used for dedupe"),
            ("webhook-timestamp", "GitLab, Standard Webhooks: Unix seconds, within 5 minutes of ours"),
            ("webhook-signature", "GitLab, Standard Webhooks: space-separated `v1,<base64 HMAC-SHA256>` over `{webhook-id}.{webhook-timestamp}.{body}`; any match passes"),
            ("Idempotency-Key", "GitLab: the delivery id when `webhook-id` is absent"),
        ];
        std::iter::once(provider)
            .chain(headers.map(|(name, description)| optional_header(name, description)))
            .collect()
    }
}

impl FromRequest<AppState> for SignedDelivery {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let (mut parts, body) = request.into_parts();
        let Ok(Path(name)) = Path::<String>::from_request_parts(&mut parts, state).await else {
            return Err(ApiError::NotFound("not found"));
        };
        let Some(provider) = webhook::provider_named(&name) else {
            return Err(ApiError::NotFound("not found"));
        };
        let label = provider.provider().as_str();
        let count = |result| state.metrics.delivery(label, result);
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    count(DeliveryResult::TooLarge);
                    ApiError::TooLarge
                } else {
                    count(DeliveryResult::BadRequest);
                    ApiError::BadRequest("cannot read request body".into())
                }
            })?;
        let verified = webhook::verify(state.policies.current(), provider, &parts.headers, &bytes);
        verified
            .map(SignedDelivery)
            .map_err(|refusal| match refusal {
                Refusal::Signature(error) => {
                    count(DeliveryResult::Unauthorized);
                    state.metrics.refuse(error.into());
                    ApiError::Unauthorized(error.reason())
                }
                other => {
                    count(DeliveryResult::BadRequest);
                    ApiError::BadRequest(other.to_string())
                }
            })
    }
}
