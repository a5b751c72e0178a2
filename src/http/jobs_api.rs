//! The jobs API (contract §10): the job history and one job, for the admin,
//! the viewer, a job's status token or an OIDC job token. Who may read what
//! is `JobAccess`'s answer; here requests are only read and answers shaped.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures::{Stream, StreamExt};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::Bearer;
use super::AppState;
use crate::access::{ApiCaller, Denied, ListScope};
use crate::domain::{
    is_plausible_job_id, rfc3339_of_ms, Job, JobStatus, ReportState, Trigger, TriggerKind,
};
use crate::jobs::{Cancel, FollowEvent};
use crate::store::{AppRecord, JobCursor, JobPage, JobQuery};

/// Jobs per page when `limit` is not given, and the most a page may hold.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

/// The caller, from `Authorization: Bearer`; a missing or invalid token is 401.
pub struct Caller(pub ApiCaller);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Bearer(token) = Bearer::from_request_parts(parts, state).await?;
        let caller = state.access.api_caller(token.as_deref()).await?;
        Ok(Caller(caller))
    }
}

/// The jobs API's answer to a job out of reach: 404, as for no job at all.
pub(crate) fn api_error(denied: Denied) -> ApiError {
    match denied {
        Denied::JobNotFound | Denied::AppNotFound => ApiError::NotFound("job not found"),
        other => other.into(),
    }
}

/// A job's trigger and the facts it brought, as the API shows them; a
/// fact is present when known.
#[derive(Serialize, ToSchema)]
pub struct TriggerView {
    kind: TriggerKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    repository: Option<String>,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    git_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sender: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<String>,
}

impl From<Trigger> for TriggerView {
    fn from(trigger: Trigger) -> TriggerView {
        let provider = match trigger.kind {
            TriggerKind::Secret => None,
            TriggerKind::GithubWebhook | TriggerKind::GithubOidc => Some("github"),
            TriggerKind::GitlabWebhook | TriggerKind::GitlabOidc => Some("gitlab"),
        };
        TriggerView {
            kind: trigger.kind,
            provider,
            event: trigger.event,
            repository: trigger.repository,
            git_ref: trigger.git_ref,
            sha: trigger.sha,
            sender: trigger.actor,
            delivery_id: trigger.delivery_id,
            issuer: trigger.issuer,
            subject: trigger.subject,
            policy: trigger.policy,
        }
    }
}

/// `Job` of contract §10; `output` only where one job is asked for. Times
/// are RFC 3339 UTC.
#[derive(Serialize, ToSchema)]
pub struct ApiJob {
    job_id: String,
    deployment_id: String,
    inventory: String,
    status: JobStatus,
    created_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    trigger: TriggerView,
    /// The program's exit code, when its exit ended the job.
    exit_code: Option<i32>,
    /// `admin` when a cancel ended the job.
    cancelled_by: Option<String>,
    /// Where the job is reported (GitHub, GitLab, notification targets)
    /// and how far each got.
    reports: Vec<ApiReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<String>,
}

/// One report target of a job (contract §12).
#[derive(Serialize, ToSchema)]
pub struct ApiReport {
    /// `github`, `gitlab` or `notify:<host>`.
    target: String,
    state: ReportState,
    /// Requests tried so far.
    attempts: u32,
    /// Why the last try failed.
    last_error: Option<String>,
}

impl ApiJob {
    /// The job as the API shows it; its output only `with_output`.
    pub fn of(job: Job, with_output: bool) -> ApiJob {
        let reports = job
            .reports
            .iter()
            .map(|report| ApiReport {
                target: report.target.name(),
                state: report.state_for(&job),
                attempts: report.attempts,
                last_error: report.last_error.clone(),
            })
            .collect();
        ApiJob {
            job_id: job.id,
            deployment_id: job.deployment_id,
            inventory: job.inventory,
            status: job.status,
            created_at: rfc3339_of_ms(job.created_at),
            started_at: job.started_at.map(rfc3339_of_ms),
            finished_at: job.finished_at.map(rfc3339_of_ms),
            trigger: job.trigger.into(),
            exit_code: job.exit_code,
            cancelled_by: job.cancelled_by,
            reports,
            output: with_output.then_some(job.output),
        }
    }
}

/// One page of the history, newest first.
#[derive(Serialize, ToSchema)]
pub struct JobList {
    jobs: Vec<ApiJob>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// `?deployment_id=&status=&limit=&cursor=`, each checked; a bad or unknown
/// parameter is a 400 naming it.
fn list_query(raw: Option<&str>) -> Result<JobQuery, ApiError> {
    let mut query = JobQuery {
        limit: DEFAULT_LIMIT,
        ..JobQuery::default()
    };
    let pairs = form_urlencoded::parse(raw.unwrap_or_default().as_bytes());
    for (name, value) in pairs {
        let bad = |reason: &str| ApiError::BadRequest(format!("{name}: {reason}"));
        match name.as_ref() {
            "deployment_id" if value.is_empty() || value.len() > 256 => {
                return Err(bad("must be 1 to 256 characters"))
            }
            "deployment_id" => query.deployment_id = Some(value.into_owned()),
            "status" => match JobStatus::parse(&value) {
                Some(status) => query.statuses.push(status),
                None => return Err(bad("must be queued, starting, running, success or error")),
            },
            "limit" => match value.parse::<usize>() {
                Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => query.limit = limit,
                _ => return Err(bad("must be a whole number from 1 to 500")),
            },
            "cursor" => match JobCursor::parse(&value) {
                Ok(cursor) => query.before = Some(cursor),
                Err(_) => return Err(bad("not a cursor this API handed out")),
            },
            _ => return Err(ApiError::BadRequest(format!("unknown parameter `{name}`"))),
        }
    }
    Ok(query)
}

#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs",
    summary = "The job history, newest first",
    description = "Every job the caller may read: all of them for the admin and viewer tokens, the \
deployments its policies grant for an OIDC job token, its one job for a status token. Paging with \
`cursor` never repeats or skips a job, even while new jobs start.",
    params(
        ("deployment_id" = Option<String>, Query, description = "Only this deployment's jobs"),
        ("status" = Option<Vec<JobStatus>>, Query, description = "Only jobs in this status; may repeat"),
        ("limit" = Option<usize>, Query, description = "Jobs per page, 1 to 500 (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    security(("admin_token" = []), ("viewer_token" = []), ("job_token" = [])),
    responses(
        (status = 200, description = "One page", body = JobList),
        (status = 400, description = "A bad or unknown parameter, named", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 503, description = "Store unavailable, try again", body = ErrorBody),
    ))]
pub async fn list_jobs(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<JobList>, ApiError> {
    let query = list_query(raw.as_deref())?;
    let scope = state.access.list_scope(&caller).await.map_err(api_error)?;
    let page = match scope {
        ListScope::All => state.store.list_jobs(&query).await?,
        ListScope::Job(job_id) => {
            let job = state.store.job(&job_id).await?;
            let before = |job: &Job| {
                query
                    .before
                    .as_ref()
                    .is_none_or(|c| job.id.as_str() < c.as_str())
            };
            JobPage {
                jobs: job
                    .filter(|job| query.matches(job) && before(job))
                    .into_iter()
                    .collect(),
                next: None,
            }
        }
        ListScope::Deployments(granted) => granted_page(&state, &query, granted).await?,
    };
    Ok(Json(JobList {
        jobs: page
            .jobs
            .into_iter()
            .map(|job| ApiJob::of(job, false))
            .collect(),
        next_cursor: page.next.map(|cursor| cursor.as_str().to_owned()),
    }))
}

/// A page of the jobs of the deployments an OIDC token is granted: each
/// deployment's own page, merged newest first. Cursors are job ids, so the
/// next page starts after the last job shown whichever deployment it is of.
async fn granted_page(
    state: &AppState,
    query: &JobQuery,
    granted: Vec<String>,
) -> Result<JobPage, ApiError> {
    let deployments: Vec<String> = match &query.deployment_id {
        Some(asked) => granted.into_iter().filter(|id| id == asked).collect(),
        None => granted,
    };
    let mut jobs = Vec::new();
    let mut more = false;
    for deployment_id in deployments {
        let one = JobQuery {
            deployment_id: Some(deployment_id),
            ..query.clone()
        };
        let page = state.store.list_jobs(&one).await?;
        more |= page.next.is_some();
        jobs.extend(page.jobs);
    }
    jobs.sort_by(|a, b| b.id.cmp(&a.id));
    more |= jobs.len() > query.limit;
    jobs.truncate(query.limit);
    let next = more
        .then(|| jobs.last().and_then(|job| JobCursor::parse(&job.id).ok()))
        .flatten();
    Ok(JobPage { jobs, next })
}

#[utoipa::path(get, path = "/api/v1/jobs/{job_id}", tag = "jobs",
    summary = "One job, with its output",
    params(("job_id" = String, Path, description = "The job's id (a ULID)",
        example = "01HZX3K6V9Q2T7B8C4D5E6F7G8")),
    security(("admin_token" = []), ("viewer_token" = []), ("job_token" = [])),
    responses(
        (status = 200, description = "The job", body = ApiJob),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such job, or one out of the caller's reach", body = ErrorBody),
        (status = 503, description = "Store unavailable, try again", body = ErrorBody),
    ))]
pub async fn get_job(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(job_id): Path<String>,
) -> Result<Json<ApiJob>, ApiError> {
    if !is_plausible_job_id(&job_id) {
        return Err(ApiError::NotFound("job not found"));
    }
    let job = state
        .access
        .api_job(&caller, &job_id)
        .await
        .map_err(api_error)?;
    Ok(Json(ApiJob::of(job, true)))
}

/// Comments keep an idle stream open through proxies (contract §10: at
/// least every 15 s).
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// `Last-Event-ID`: the offset a reconnecting follower resumes from.
pub(crate) fn resume_offset(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get("last-event-id")
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::BadRequest("Last-Event-ID: must be an output event's id".to_owned())
                })
        })
        .transpose()
}

fn sse_event(event: FollowEvent) -> Event {
    match event {
        FollowEvent::Output { text, end } => Event::default()
            .event("output")
            .id(end.to_string())
            .data(text),
        FollowEvent::Status(status) => Event::default().event("status").data(status.as_str()),
        FollowEvent::End(status) => Event::default().event("end").data(status.as_str()),
    }
}

#[utoipa::path(get, path = "/api/v1/jobs/{job_id}/output", tag = "jobs",
    summary = "Follow a job's output live (Server-Sent Events)",
    description = "`event: output` events carry the stored output, then every appended chunk; each \
has `id:` = the byte offset of the output after it, and a reconnect with `Last-Event-ID` resumes \
there. `event: status` gives the status, then each change; `event: end` the final status, then the \
stream closes. Output appended through any replica reaches followers on every other within a second. \
A comment line comes at least every 15 s. SSE cannot carry a carriage return: one arrives as a line \
break.",
    params(("job_id" = String, Path, description = "The job's id (a ULID)",
        example = "01HZX3K6V9Q2T7B8C4D5E6F7G8"),
        ("Last-Event-ID" = Option<u64>, Header, description = "The id of the last output event received")),
    security(("admin_token" = []), ("viewer_token" = []), ("job_token" = [])),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "A Last-Event-ID that is not an offset", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such job, or one out of the caller's reach", body = ErrorBody),
        (status = 503, description = "Store unavailable, try again", body = ErrorBody),
    ))]
pub async fn follow_output(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(job_id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    live_output(&state, &caller, &job_id, resume_offset(&headers)?).await
}

/// The live output of `job_id` for `caller`, resuming at `Last-Event-ID`
/// (also the status page's, for its sessions).
pub(crate) async fn live_output(
    state: &AppState,
    caller: &ApiCaller,
    job_id: &str,
    from: Option<u64>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    if !is_plausible_job_id(job_id) || !state.access.may_ask_for(caller, job_id) {
        return Err(ApiError::NotFound("job not found"));
    }
    let from = from.unwrap_or(0);
    let joined = state.feed.join(job_id, from).await?;
    let joined = joined.ok_or(ApiError::NotFound("job not found"))?;
    state
        .access
        .may_read(caller, joined.job())
        .await
        .map_err(api_error)?;
    let events = joined.events().map(|event| Ok(sse_event(event)));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// `{"status":"cancelling","job_id"}`.
#[derive(Serialize, ToSchema)]
pub struct Cancelling {
    /// Always `cancelling`: the job ends `error` once its program is stopped.
    #[schema(example = "cancelling")]
    status: &'static str,
    job_id: String,
}

#[utoipa::path(post, path = "/api/v1/jobs/{job_id}/cancel", tag = "jobs",
    summary = "Cancel a job (admin)",
    description = "The program is stopped (container killed; process group TERM, then KILL after 10 s), \
the job ends `error` with the last output line `cancelled by admin` and `cancelled_by: \"admin\"`, the \
lock is released and the inventory's queued job starts. A queued job is cancelled without being \
launched. On any replica: the instance following the job stops it within about a second.",
    params(("job_id" = String, Path, description = "The job's id (a ULID)",
        example = "01HZX3K6V9Q2T7B8C4D5E6F7G8")),
    security(("admin_token" = [])),
    responses(
        (status = 202, description = "Cancelling", body = Cancelling),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "A token that reads only (viewer, status or OIDC token)", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is already final", body = ErrorBody),
        (status = 503, description = "Store unavailable, try again", body = ErrorBody),
    ))]
pub async fn cancel_job(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(job_id): Path<String>,
) -> Result<(StatusCode, Json<Cancelling>), ApiError> {
    cancel_for(&state, &caller, &job_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Cancelling {
            status: "cancelling",
            job_id,
        }),
    ))
}

/// Cancels a job for `caller`, who must be allowed to act: the one cancel
/// of the jobs API and of the status page.
pub(crate) async fn cancel_for(
    state: &AppState,
    caller: &ApiCaller,
    job_id: &str,
) -> Result<(), ApiError> {
    state.access.may_act(caller)?;
    if !is_plausible_job_id(job_id) {
        return Err(ApiError::NotFound("job not found"));
    }
    match state.lifecycle.cancel(job_id, "admin").await? {
        Cancel::Cancelling => Ok(()),
        Cancel::NotFound => Err(ApiError::NotFound("job not found")),
        Cancel::Final(status) => Err(ApiError::Conflict(format!(
            "job is already final ({status})"
        ))),
    }
}

/// A way a deployment can be asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Ingress {
    Secret,
    Webhook,
    Oidc,
}

/// A deployment of the app list, how it can be asked for and its last job.
#[derive(Serialize, ToSchema)]
pub struct DeploymentView {
    deployment_id: String,
    inventory: String,
    ingress: Vec<Ingress>,
    last_job: Option<ApiJob>,
}

#[derive(Serialize, ToSchema)]
pub struct DeploymentList {
    deployments: Vec<DeploymentView>,
}

#[utoipa::path(get, path = "/api/v1/deployments", tag = "jobs",
    summary = "Every deployment, how it can be asked for, and its last job",
    description = "From the app list and the policies: `secret` when the app has a deployment secret, \
`webhook` and `oidc` when a policy file grants it to deliveries or job tokens.",
    security(("admin_token" = []), ("viewer_token" = [])),
    responses(
        (status = 200, description = "Every deployment, by id", body = DeploymentList),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "A job's own token (status or OIDC)", body = ErrorBody),
        (status = 503, description = "Store unavailable, try again", body = ErrorBody),
    ))]
pub async fn list_deployments(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<DeploymentList>, ApiError> {
    state.access.may_read_all(&caller)?;
    let deployments = deployments(&state)
        .await?
        .into_iter()
        .map(|deployment| DeploymentView {
            deployment_id: deployment.app.deployment_id,
            inventory: deployment.app.inventory,
            ingress: deployment.ingress,
            last_job: deployment.last_job.map(|job| ApiJob::of(job, false)),
        })
        .collect();
    Ok(Json(DeploymentList { deployments }))
}

/// A deployment of the app list, how it can be asked for, its last job.
pub(crate) struct Deployment {
    pub app: AppRecord,
    pub ingress: Vec<Ingress>,
    pub last_job: Option<Job>,
}

/// Every deployment, by id, from the app list and the policies.
pub(crate) async fn deployments(state: &AppState) -> Result<Vec<Deployment>, ApiError> {
    let mut apps = state.store.apps().await?;
    apps.sort_by(|a, b| a.deployment_id.cmp(&b.deployment_id));
    let policies = state.policies.current();
    let ids: Vec<String> = apps.iter().map(|app| app.deployment_id.clone()).collect();
    let last_jobs = state.store.last_jobs(&ids).await?;
    Ok(apps
        .into_iter()
        .zip(last_jobs)
        .map(|(app, last_job)| {
            let granted = policies
                .policies
                .iter()
                .filter(|policy| policy.deployment_id == app.deployment_id);
            let mut ingress = Vec::new();
            if app.secret.is_some() {
                ingress.push(Ingress::Secret);
            }
            let (mut webhook, mut oidc) = (false, false);
            for policy in granted {
                webhook |= !policy.webhooks.is_empty();
                oidc |= !policy.oidc.is_empty();
            }
            ingress.extend(webhook.then_some(Ingress::Webhook));
            ingress.extend(oidc.then_some(Ingress::Oidc));
            Deployment {
                app,
                ingress,
                last_job,
            }
        })
        .collect())
}
