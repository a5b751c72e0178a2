//! `GET /openapi.json`: the OpenAPI 3.1 document of every endpoint, made from
//! the handlers' `#[utoipa::path]` attributes, the same ones the router is
//! built from (see [`super::openapi`]).

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// What the generated paths do not say: the service, its tags and the
/// bearer tokens the operations name.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "enac-cd",
        description = "Continuous-deployment broker: authenticated deploy requests, one job per inventory, \
ansible launches, status polling. The legacy endpoints keep their trailing slash; their domain refusals \
answer HTTP 200 with `{\"status\":\"error\",\"error\":…}`, because the deployed client retries every \
other status."
    ),
    modifiers(&BearerTokens),
    tags(
        (name = "legacy", description = "Deploy and status, compatible with the seed's client"),
        (name = "admin", description = "Bearer `CD_ADMIN_TOKEN`"),
        (name = "callback", description = "The job's program reports back"),
        (name = "jobs", description = "The job history (contract §10): admin, viewer, status or OIDC job token"),
        (name = "webhooks", description = "GitHub and GitLab deliveries, verified against the policies"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "ui", description = "The status page (HTML, for people): a session opened with the admin or viewer token"),
    )
)]
pub struct ApiDoc;

/// The bearer tokens, by the name operations refer to them.
struct BearerTokens;

impl Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let bearer = |format: Option<&str>, description: &str| {
            let mut scheme = HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(description));
            if let Some(format) = format {
                scheme = scheme.bearer_format(format);
            }
            SecurityScheme::Http(scheme.build())
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            bearer(None, "`CD_ADMIN_TOKEN`; unset, admin endpoints answer 403"),
        );
        components.add_security_scheme(
            "viewer_token",
            bearer(None, "`CD_VIEWER_TOKEN`: reads every job, acts on nothing"),
        );
        components.add_security_scheme(
            "callback_token",
            bearer(
                Some("JWT"),
                "The job's `CD_CALLBACK_TOKEN`: valid for its job only, until the job is final",
            ),
        );
        components.add_security_scheme(
            "job_token",
            bearer(
                Some("JWT"),
                "A job's `status_token` (from `/app-deploy/`) or an OIDC job token of a configured issuer \
(GitHub Actions, GitLab CI `id_tokens`)",
            ),
        );
    }
}

/// The document as served, serialized once per process.
pub fn document() -> &'static Bytes {
    static DOCUMENT: OnceLock<Bytes> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        // Serializing maps with string keys and plain values cannot fail.
        let json = serde_json::to_vec(&super::openapi()).expect("the OpenAPI document serializes");
        Bytes::from(json)
    })
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    summary = "This document (OpenAPI 3.1)",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document().clone(),
    )
}
