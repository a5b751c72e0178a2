//! The HTTP surface: one file per family of endpoints.

mod admin;
mod answer;
mod callback;
mod error;
mod extract;
mod jobs_api;
mod legacy;
mod openapi;
mod ops;
pub mod server;
mod ui;
mod webhooks;

pub use jobs_api::ApiJob;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
pub use error::ApiError;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::JobAccess;
use crate::ingress::Ingress;
use crate::jobs::{JobFeed, Lifecycle};
use crate::launch::Launcher;
use crate::metrics::{Metrics, RequestLabels};
use crate::policy::Policies;
use crate::store::Store;

/// Body cap of the legacy and admin endpoints.
const BODY_LIMIT: usize = 1 << 20;

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub launcher: Arc<dyn Launcher>,
    pub lifecycle: Arc<Lifecycle>,
    /// The followers of each job's live output.
    pub feed: Arc<JobFeed>,
    /// Every way a job is asked for.
    pub ingress: Arc<Ingress>,
    /// Who may read or act on a job.
    pub access: Arc<JobAccess>,
    pub metrics: Metrics,
    /// `CD_MAX_OUTPUT`: a callback may carry at most about this much output.
    pub max_output: usize,
    /// `CD_MIN_SECRET_LENGTH`: the shortest deployment secret accepted.
    pub min_secret_length: usize,
    /// Whether session cookies are `Secure` (`CD_PUBLIC_URL` is https).
    pub secure_cookies: bool,
    /// Timeouts and the cap of the HTTP connections.
    pub connections: server::ConnectionLimits,
    pub policies: Policies,
    /// Work that runs beside the requests (report deliveries).
    pub background: Background,
}

/// Background work of the service, stopped once it stops serving.
#[derive(Clone, Default)]
pub struct Background {
    /// Cancelled at the stop: each task winds down on its own.
    pub stop: tokio_util::sync::CancellationToken,
    pub tasks: tokio_util::task::TaskTracker,
}

impl Background {
    /// Asks every task to stop and waits for them, `deadline` at most.
    pub async fn stop(&self, deadline: std::time::Duration) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("background work did not stop in time");
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("not found")
}

/// The method as a metric label: a known one, or `other`, so that made-up
/// methods cannot grow the metrics without bound.
fn method_label(method: &axum::http::Method) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"];
    KNOWN
        .into_iter()
        .find(|known| *known == method.as_str())
        .unwrap_or("other")
}

/// Records every request's latency by route; logs at debug level without
/// headers or bodies (they may hold secrets).
async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    tracing::debug!(%method, %route, status, elapsed_ms = elapsed.as_secs_f64() * 1000.0, "request");
    metrics
        .request_duration
        .get_or_create(&RequestLabels {
            method,
            route,
            status,
        })
        .observe(elapsed.as_secs_f64());
    response
}

/// Every endpoint, each routed by its handler's `#[utoipa::path]`: its method
/// and path are written once, so no route is served without its entry in the
/// OpenAPI document, and none is documented without being served.
fn endpoints(callback_limit: usize) -> OpenApiRouter<AppState> {
    let callback = OpenApiRouter::new()
        .routes(routes!(callback::set_job_status))
        .layer(DefaultBodyLimit::max(callback_limit));
    let webhooks = OpenApiRouter::new()
        .routes(routes!(webhooks::deliver))
        .layer(DefaultBodyLimit::max(crate::ingress::webhook::BODY_LIMIT));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(ops::root))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(legacy::app_deploy))
        .routes(routes!(legacy::job_status))
        .routes(routes!(admin::set_available_apps))
        .routes(routes!(admin::get_available_apps))
        .routes(routes!(admin::load))
        .routes(routes!(jobs_api::list_jobs))
        .routes(routes!(jobs_api::get_job))
        .routes(routes!(jobs_api::follow_output))
        .routes(routes!(jobs_api::cancel_job))
        .routes(routes!(jobs_api::list_deployments))
        .routes(routes!(ui::login_form, ui::login))
        .routes(routes!(ui::logout))
        .routes(routes!(ui::deployments_page))
        .routes(routes!(ui::deployment_page))
        .routes(routes!(ui::job_page))
        .routes(routes!(ui::job_output))
        .routes(routes!(ui::cancel))
        .routes(routes!(ui::style))
        .routes(routes!(ui::script))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .merge(callback)
        .merge(webhooks)
}

/// The OpenAPI document of every route [`router`] serves (body limits are
/// layers: they do not change it).
pub fn openapi() -> utoipa::openapi::OpenApi {
    endpoints(BODY_LIMIT).into_openapi()
}

/// Every route of the service. Routes are added in [`endpoints`] only: one
/// added here would be missing from the OpenAPI document.
pub fn router(state: AppState) -> Router {
    // Output replaced in one callback may be up to the cap, plus JSON escaping.
    let callback_limit = state.max_output.saturating_mul(2).max(BODY_LIMIT) + 64 * 1024;
    // Built at start, not on the first request.
    openapi::document();
    let (routes, _) = endpoints(callback_limit).split_for_parts();
    routes
        .fallback(not_found)
        .route_layer(middleware::from_fn_with_state(state.metrics.clone(), track))
        .with_state(state)
}
