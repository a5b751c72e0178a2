//! `enac-cd jobs` and `enac-cd logs`: the job history and one job's output,
//! read through the jobs API (contract §10) with the token in `ENAC_CD_TOKEN`.

use std::time::Duration;

use clap::Args;
use reqwest::Url;
use serde_json::Value;

use super::follow::{follow_output, Followed};
use super::{call_with_retry, http_client, print_new_output, CallError, EXIT_ERROR, EXIT_SUCCESS};
use crate::domain::JobStatus;

/// The environment variable holding the bearer token. A token is never a
/// flag: the command line of a running process is visible to every user.
pub const TOKEN_ENV: &str = "ENAC_CD_TOKEN";

/// The most jobs the API hands out per page.
const MAX_PAGE: usize = 500;

const TOKEN_HELP: &str = "The token (admin, viewer, a job's status token or an OIDC job token) \
is read from the ENAC_CD_TOKEN environment variable, never from a flag, so that it does not show \
in `ps`.";

/// Where the service is (the token comes from `ENAC_CD_TOKEN`).
#[derive(Clone, Debug, Args)]
pub struct ServiceArgs {
    /// Base URL of the enac-cd service.
    #[arg(long, env = "CD_URL")]
    pub url: String,
}

#[derive(Clone, Debug, Args)]
#[command(after_help = TOKEN_HELP)]
pub struct JobsArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Only this deployment's jobs.
    #[arg(long)]
    pub deployment_id: Option<String>,
    /// Only jobs in this status (queued, starting, running, success, error); may repeat.
    #[arg(long, value_parser = parse_status)]
    pub status: Vec<JobStatus>,
    /// How many jobs to print, newest first.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
}

#[derive(Clone, Debug, Args)]
#[command(after_help = TOKEN_HELP)]
pub struct LogsArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    /// The job's id.
    pub job: String,
    /// Keep printing new output until the job ends; exit 0 on success, 1 on error.
    #[arg(long)]
    pub follow: bool,
    /// Seconds between polls with --follow, against a service without the
    /// live output stream.
    #[arg(long, default_value_t = 2)]
    pub interval: u64,
}

#[derive(Clone, Debug, Args)]
#[command(after_help = TOKEN_HELP)]
pub struct CancelArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    /// The job's id.
    pub job: String,
}

fn parse_status(text: &str) -> Result<JobStatus, String> {
    JobStatus::parse(text)
        .ok_or_else(|| "must be queued, starting, running, success or error".to_owned())
}

/// A client of the jobs API, with its bearer token.
struct JobsClient {
    http: reqwest::Client,
    base: Url,
    token: String,
}

impl JobsClient {
    fn new(service: &ServiceArgs) -> Result<JobsClient, String> {
        let token = match std::env::var(TOKEN_ENV) {
            Ok(token) if !token.trim().is_empty() => token.trim().to_owned(),
            _ => return Err(format!("{TOKEN_ENV} is not set")),
        };
        let base = Url::parse(&service.url).map_err(|error| format!("--url: {error}"))?;
        if base.cannot_be_a_base() {
            return Err(format!("--url: {} cannot be a base URL", service.url));
        }
        Ok(JobsClient {
            http: http_client()?,
            base,
            token,
        })
    }

    /// The URL of `segments` under `/api/v1/`, each segment escaped.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        url
    }

    async fn get(&self, url: Url, query: &[(&str, String)]) -> Result<Value, String> {
        self.send(|| {
            self.http
                .get(url.clone())
                .query(query)
                .bearer_auth(&self.token)
        })
        .await
    }

    /// A POST without a body (asking twice does no harm: it is retried).
    async fn post(&self, url: Url) -> Result<Value, String> {
        self.send(|| self.http.post(url.clone()).bearer_auth(&self.token))
            .await
    }

    async fn send(&self, request: impl Fn() -> reqwest::RequestBuilder) -> Result<Value, String> {
        call_with_retry(request).await.map_err(|error| match error {
            CallError::Refused { status, body } => refusal(status, &body),
            CallError::Failed(reason) => reason,
        })
    }

    /// Up to `limit` jobs, newest first, following `next_cursor`.
    async fn jobs(&self, args: &JobsArgs) -> Result<Vec<Value>, String> {
        let limit = args.limit as usize;
        let mut jobs = Vec::new();
        let mut cursor: Option<String> = None;
        while jobs.len() < limit {
            let mut query = vec![("limit", (limit - jobs.len()).min(MAX_PAGE).to_string())];
            if let Some(deployment_id) = &args.deployment_id {
                query.push(("deployment_id", deployment_id.clone()));
            }
            for status in &args.status {
                query.push(("status", status.as_str().to_owned()));
            }
            if let Some(cursor) = &cursor {
                query.push(("cursor", cursor.clone()));
            }
            let page = self.get(self.url(&["jobs"]), &query).await?;
            let Some(listed) = page["jobs"].as_array() else {
                return Err("the answer has no job list".into());
            };
            jobs.extend(listed.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) if !listed.is_empty() => cursor = Some(next.to_owned()),
                _ => break,
            }
        }
        jobs.truncate(limit);
        Ok(jobs)
    }
}

/// The service's own reason for a refusal (`{"error": …}`), else the status.
fn refusal(status: reqwest::StatusCode, body: &str) -> String {
    let reason = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|body| body["error"].as_str().map(str::to_owned));
    match reason {
        Some(reason) => format!("{reason} (HTTP {})", status.as_u16()),
        None => format!("HTTP {status}"),
    }
}

fn text<'a>(job: &'a Value, field: &str) -> &'a str {
    job[field].as_str().unwrap_or("-")
}

/// `2024-05-01T09:30:12.345Z` as `2024-05-01 09:30:12`.
fn short_time(rfc3339: &str) -> String {
    match rfc3339.get(..19) {
        Some(seconds) => seconds.replacen('T', " ", 1),
        None => rfc3339.to_owned(),
    }
}

/// What started the job: its trigger kind, then ref, short sha and sender
/// when known.
fn trigger_of(job: &Value) -> String {
    let trigger = &job["trigger"];
    let mut parts = vec![trigger["kind"].as_str().unwrap_or("-").to_owned()];
    if let Some(git_ref) = trigger["ref"].as_str() {
        parts.push(git_ref.to_owned());
    }
    if let Some(sha) = trigger["sha"].as_str() {
        parts.push(sha.chars().take(7).collect());
    }
    if let Some(sender) = trigger["sender"].as_str() {
        parts.push(format!("by {sender}"));
    }
    parts.join(" ")
}

/// The jobs as a table, one line each, columns as wide as their widest cell.
fn table(jobs: &[Value]) -> Vec<String> {
    let header = ["JOB", "STATUS", "DEPLOYMENT", "CREATED (UTC)", "TRIGGER"].map(str::to_owned);
    let rows: Vec<[String; 5]> = std::iter::once(header)
        .chain(jobs.iter().map(|job| {
            [
                text(job, "job_id").to_owned(),
                text(job, "status").to_owned(),
                text(job, "deployment_id").to_owned(),
                short_time(text(job, "created_at")),
                trigger_of(job),
            ]
        }))
        .collect();
    let mut widths = [0; 4];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|[id, status, deployment, created, trigger]| {
            format!(
                "{id:<w0$}  {status:<w1$}  {deployment:<w2$}  {created:<w3$}  {trigger}",
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3],
            )
        })
        .collect()
}

/// `enac-cd jobs`; returns the process exit code.
pub async fn jobs(args: JobsArgs) -> i32 {
    let listed = match JobsClient::new(&args.service) {
        Ok(client) => client.jobs(&args).await,
        Err(error) => Err(error),
    };
    match listed {
        Ok(jobs) if jobs.is_empty() => {
            eprintln!("no jobs");
            EXIT_SUCCESS
        }
        Ok(jobs) => {
            for line in table(&jobs) {
                println!("{line}");
            }
            EXIT_SUCCESS
        }
        Err(error) => {
            eprintln!("! Error: {error}");
            EXIT_ERROR
        }
    }
}

/// `enac-cd cancel` (admin token); returns the process exit code.
pub async fn cancel(args: CancelArgs) -> i32 {
    let client = match JobsClient::new(&args.service) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("! Error: {error}");
            return EXIT_ERROR;
        }
    };
    match client
        .post(client.url(&["jobs", &args.job, "cancel"]))
        .await
    {
        Ok(_) => {
            println!(
                "-> Job {} cancelling: its program is stopped, then it ends error",
                args.job
            );
            EXIT_SUCCESS
        }
        Err(error) => {
            eprintln!("! Error: {error}");
            EXIT_ERROR
        }
    }
}

/// `enac-cd logs`; returns the process exit code.
pub async fn logs(args: LogsArgs) -> i32 {
    let client = match JobsClient::new(&args.service) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("! Error: {error}");
            return EXIT_ERROR;
        }
    };
    if args.follow {
        let stream = client.url(&["jobs", &args.job, "output"]);
        match follow_output(&stream, &client.token).await {
            Ok(Followed::Ended(status)) => return ended(&args.job, &status),
            Ok(Followed::Unavailable) => {}
            Err(error) => eprintln!("\n-> Live output lost ({error}): polling"),
        }
    }
    let url = client.url(&["jobs", &args.job]);
    let mut printed = String::new();
    loop {
        let job = match client.get(url.clone(), &[]).await {
            Ok(job) => job,
            Err(error) => {
                eprintln!("! Error: {error}");
                return EXIT_ERROR;
            }
        };
        print_new_output(&mut printed, job["output"].as_str().unwrap_or(""));
        if !args.follow {
            return EXIT_SUCCESS;
        }
        match job["status"].as_str() {
            Some(status @ ("success" | "error")) => return ended(&args.job, status),
            _ => tokio::time::sleep(Duration::from_secs(args.interval)).await,
        }
    }
}

/// Says how the followed job ended; its exit code (0 success, 1 otherwise).
fn ended(job: &str, status: &str) -> i32 {
    if status == "success" {
        eprintln!("-> Job {job} ended: success");
        EXIT_SUCCESS
    } else {
        eprintln!("! Error: job {job} ended: {status}");
        EXIT_ERROR
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_aligns_columns_and_shows_the_known_trigger_facts() {
        let jobs = [
            json!({"job_id": "01J0000000000000000000000A", "status": "success",
                "deployment_id": "app-long-name", "created_at": "2024-05-01T09:30:12.345Z",
                "trigger": {"kind": "github-webhook", "ref": "refs/heads/main",
                    "sha": "0123456789abcdef", "sender": "octocat"}}),
            json!({"job_id": "01J0000000000000000000000B", "status": "error",
                "deployment_id": "app", "created_at": "2024-05-01T09:31:00.000Z",
                "trigger": {"kind": "secret"}}),
        ];

        let lines = table(&jobs);

        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("JOB "), "{lines:?}");
        assert!(
            lines[1].ends_with("github-webhook refs/heads/main 0123456 by octocat"),
            "{lines:?}"
        );
        assert!(lines[1].contains("2024-05-01 09:30:12"), "{lines:?}");
        assert!(lines[2].ends_with("secret"), "{lines:?}");
        let column = |line: &str| line.find("2024").expect("a created time");
        assert_eq!(column(&lines[1]), column(&lines[2]), "{lines:?}");
    }

    #[test]
    fn a_refusal_shows_the_services_reason() {
        let reason = refusal(
            reqwest::StatusCode::NOT_FOUND,
            r#"{"status":"error","error":"job not found"}"#,
        );
        assert_eq!(reason, "job not found (HTTP 404)");
        let bare = refusal(reqwest::StatusCode::UNAUTHORIZED, "<html>");
        assert_eq!(bare, "HTTP 401 Unauthorized");
    }
}
