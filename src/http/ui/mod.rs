//! The status page (contract §11): server-rendered HTML under `/ui/` on top
//! of the jobs API, for people. A session (see [`session`]) is opened by the
//! admin or viewer token; pages without one answer 303 to the login.

mod ansi;
mod pages;
pub mod session;

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use futures::Stream;
use serde::Deserialize;

use self::session::{Role, UiSession};
use super::jobs_api::{api_error, cancel_for, deployments, live_output, resume_offset};
use super::{ApiError, AppState};
use crate::access::ApiCaller;
use crate::store::JobQuery;

/// Jobs one deployment's page shows.
const DEPLOYMENT_PAGE: usize = 50;
/// Assets are named with the version (`?v=`): a browser may keep them a day.
const ASSET_CACHE: &str = "public, max-age=86400";

fn html(markup: maud::Markup) -> Response {
    ([(CACHE_CONTROL, "no-store")], Html(markup.into_string())).into_response()
}

#[utoipa::path(get, path = "/ui/login", tag = "ui",
    summary = "The status page's login form",
    responses((status = 200, description = "The form (HTML)", content_type = "text/html", body = String)))]
pub async fn login_form() -> Response {
    html(pages::login(None))
}

/// The login form's fields.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct Login {
    /// The admin or the viewer token.
    token: String,
}

#[utoipa::path(post, path = "/ui/login", tag = "ui",
    summary = "Open a session with the admin or viewer token",
    request_body(content = Login, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Signed in: to `/ui/`, with the session cookie"),
        (status = 401, description = "A wrong token: the form again, with the error (HTML)", content_type = "text/html", body = String),
        (status = 415, description = "Not a form"),
        (status = 422, description = "No `token` field"),
    ))]
pub async fn login(State(state): State<AppState>, Form(login): Form<Login>) -> Response {
    let role = match state.access.api_caller(Some(login.token.trim())).await {
        Ok(ApiCaller::Admin) => Role::Admin,
        Ok(ApiCaller::Viewer) => Role::Viewer,
        // A job's own tokens, or none that holds: the status page is not theirs.
        Ok(_) | Err(_) => {
            let form = pages::login(Some("That is not the admin or the viewer token."));
            return (StatusCode::UNAUTHORIZED, html(form)).into_response();
        }
    };
    match session::open(&state, role).await {
        Ok(cookie) => ([(SET_COOKIE, cookie)], Redirect::to("/ui/")).into_response(),
        Err(error) => error.into_response(),
    }
}

/// A form that carries the session's CSRF token.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct CsrfForm {
    csrf: String,
}

fn check_csrf(session: &UiSession, form: &CsrfForm) -> Result<(), ApiError> {
    if session.csrf_matches(&form.csrf) {
        Ok(())
    } else {
        Err(ApiError::Forbidden("the form is stale: reload the page"))
    }
}

#[utoipa::path(post, path = "/ui/logout", tag = "ui",
    summary = "End the session, on the server",
    request_body(content = CsrfForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Signed out (or no session): to the login"),
        (status = 403, description = "A CSRF token that is not the session's"),
    ))]
pub async fn logout(
    State(state): State<AppState>,
    session: UiSession,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ApiError> {
    check_csrf(&session, &form)?;
    session.end(&state).await?;
    Ok(([session::cleared()], Redirect::to("/ui/login")).into_response())
}

#[utoipa::path(get, path = "/ui/", tag = "ui",
    summary = "Every deployment and its last job (HTML)",
    responses(
        (status = 200, description = "The page", content_type = "text/html", body = String),
        (status = 303, description = "No session: to the login"),
    ))]
pub async fn deployments_page(
    State(state): State<AppState>,
    session: UiSession,
) -> Result<Response, ApiError> {
    let deployments = deployments(&state).await?;
    Ok(html(pages::deployments(
        session.role,
        &session.csrf,
        &deployments,
    )))
}

#[utoipa::path(get, path = "/ui/deployments/{deployment_id}", tag = "ui",
    summary = "One deployment's jobs, newest first (HTML)",
    params(("deployment_id" = String, Path, description = "The deployment id", example = "app-one")),
    responses(
        (status = 200, description = "The page", content_type = "text/html", body = String),
        (status = 303, description = "No session: to the login"),
    ))]
pub async fn deployment_page(
    State(state): State<AppState>,
    session: UiSession,
    Path(deployment_id): Path<String>,
) -> Result<Response, ApiError> {
    let query = JobQuery {
        deployment_id: Some(deployment_id.clone()),
        limit: DEPLOYMENT_PAGE,
        ..JobQuery::default()
    };
    let page = state.store.list_jobs(&query).await?;
    Ok(html(pages::deployment(
        session.role,
        &session.csrf,
        &deployment_id,
        &page.jobs,
    )))
}

#[utoipa::path(get, path = "/ui/jobs/{job_id}", tag = "ui",
    summary = "One job, its facts and output; live while it runs (HTML)",
    params(("job_id" = String, Path, description = "The job's id (a ULID)", example = "01HZX3K6V9Q2T7B8C4D5E6F7G8")),
    responses(
        (status = 200, description = "The page", content_type = "text/html", body = String),
        (status = 303, description = "No session: to the login"),
        (status = 404, description = "No such job"),
    ))]
pub async fn job_page(
    State(state): State<AppState>,
    session: UiSession,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    let job = state
        .access
        .api_job(&session.role.caller(), &job_id)
        .await
        .map_err(api_error)?;
    Ok(html(pages::job(session.role, &session.csrf, &job)))
}

/// Where the page's stream starts (the browser's `EventSource` cannot send
/// a header; a reconnect sends `Last-Event-ID`, which wins).
#[derive(Deserialize)]
pub struct From {
    from: Option<u64>,
}

#[utoipa::path(get, path = "/ui/jobs/{job_id}/output", tag = "ui",
    summary = "The job's live output for the page (Server-Sent Events, as /api/v1/jobs/{job_id}/output)",
    params(("job_id" = String, Path, description = "The job's id (a ULID)", example = "01HZX3K6V9Q2T7B8C4D5E6F7G8"),
        ("from" = Option<u64>, Query, description = "The offset to start at")),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = String),
        (status = 303, description = "No session: to the login"),
        (status = 404, description = "No such job"),
    ))]
pub async fn job_output(
    State(state): State<AppState>,
    session: UiSession,
    Path(job_id): Path<String>,
    Query(query): Query<From>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let from = resume_offset(&headers)?.or(query.from);
    live_output(&state, &session.role.caller(), &job_id, from).await
}

#[utoipa::path(post, path = "/ui/jobs/{job_id}/cancel", tag = "ui",
    summary = "Cancel the job (an admin session), then back to its page",
    params(("job_id" = String, Path, description = "The job's id (a ULID)", example = "01HZX3K6V9Q2T7B8C4D5E6F7G8")),
    request_body(content = CsrfForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Cancelling (or no session: to the login)"),
        (status = 403, description = "A viewer session, or a CSRF token that is not the session's"),
        (status = 404, description = "No such job"),
        (status = 409, description = "The job is already final"),
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    session: UiSession,
    Path(job_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ApiError> {
    check_csrf(&session, &form)?;
    cancel_for(&state, &session.role.caller(), &job_id).await?;
    Ok(Redirect::to(&format!("/ui/jobs/{job_id}")).into_response())
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, ASSET_CACHE)],
        body,
    )
        .into_response()
}

#[utoipa::path(get, path = "/ui/static/style.css", tag = "ui",
    summary = "The status page's style sheet (embedded in the binary)",
    responses((status = 200, description = "CSS", content_type = "text/css", body = String)))]
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/style.css"))
}

#[utoipa::path(get, path = "/ui/static/app.js", tag = "ui",
    summary = "The status page's script: relative times and the live log (embedded in the binary)",
    responses((status = 200, description = "JavaScript", content_type = "text/javascript", body = String)))]
pub async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    )
}
