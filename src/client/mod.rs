//! `enac-cd deploy`: starts a deployment and follows its job, with the exit
//! codes of the deployed GitHub Action (0 success, 1 error, 2 timeout); and
//! the HTTP helpers every client subcommand shares.

mod follow;
pub mod healthcheck;
pub mod jobs;

use std::io::Write;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde_json::{json, Value};

/// Exit codes shared with the deployed GitHub Action.
pub const EXIT_SUCCESS: i32 = 0;
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_TIMEOUT: i32 = 2;

/// How long one call is retried on 5xx and connection errors (and a lost
/// output stream reconnected).
const RETRY_FOR: Duration = Duration::from_secs(10);
const RETRY_PAUSE: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OidcSource {
    /// GitHub Actions (`permissions: id-token: write`).
    Github,
}

#[derive(Clone, Debug, Args)]
pub struct DeployArgs {
    /// Base URL of the enac-cd service.
    #[arg(long, env = "CD_URL")]
    pub url: String,
    /// Deployment id to deploy. With a secret (`DEPLOYMENT_SECRET`) it is
    /// required; with an OIDC token it may be left to the policies.
    #[arg(long, required_unless_present_any = ["oidc", "oidc_token_env"])]
    pub deployment_id: Option<String>,
    /// Authenticate with the CI's OIDC job token instead of a secret.
    #[arg(long, value_enum, conflicts_with = "oidc_token_env")]
    pub oidc: Option<OidcSource>,
    /// Read the OIDC token from this environment variable (GitLab `id_tokens`).
    #[arg(long)]
    pub oidc_token_env: Option<String>,
    /// Audience asked for the GitHub token (the issuer's `audience` in enac-cd).
    #[arg(long, default_value = "enac-cd")]
    pub audience: String,
    /// Seconds between status polls, against a service without the live
    /// output stream (the client follows the stream when there is one).
    #[arg(long, default_value_t = 2)]
    pub interval: u64,
    /// Seconds before giving up (exit 2).
    #[arg(long, default_value_t = 480)]
    pub timeout: u64,
}

/// How the client proves who it is.
enum Credentials {
    Secret(String),
    /// An OIDC job token for starting; then the job's status token.
    Token(String),
}

struct Deployer {
    http: reqwest::Client,
    base: String,
    deployment_id: Option<String>,
}

impl Deployer {
    /// POSTs JSON, retrying 5xx and connection errors for up to 10 s.
    async fn call(&self, path: &str, body: &Value, bearer: Option<&str>) -> Result<Value, String> {
        let url = format!("{}/{path}/", self.base);
        let request = || {
            let request = self.http.post(&url).json(body);
            match bearer {
                Some(token) => request.bearer_auth(token),
                None => request,
            }
        };
        call_with_retry(request).await.map_err(|error| match error {
            CallError::Refused { status, body } => format!("{path}: HTTP {status}: {body}"),
            CallError::Failed(reason) => format!("{path}: {reason}"),
        })
    }

    async fn run(&self, credentials: Credentials, interval: Duration) -> i32 {
        let name = self
            .deployment_id
            .as_deref()
            .unwrap_or("(chosen by policy)");
        println!("-> Asking for app-deploy of {name} on {}", self.base);
        let (body, bearer) = match &credentials {
            Credentials::Secret(secret) => (
                json!({"deployment_id": self.deployment_id, "deployment_secret": secret}),
                None,
            ),
            Credentials::Token(token) => (
                json!({"deployment_id": self.deployment_id}),
                Some(token.as_str()),
            ),
        };
        let started = match self.call("app-deploy", &body, bearer).await {
            Ok(answer) => answer,
            Err(error) => {
                println!("! Error: {error}");
                return EXIT_ERROR;
            }
        };
        if started["status"] == "error" {
            println!(
                "! Error: App deploy failed! {}",
                started["error"].as_str().unwrap_or("")
            );
            return EXIT_ERROR;
        }
        let Some(job_id) = started["job_id"].as_str() else {
            println!("! Error: the answer has no job_id");
            return EXIT_ERROR;
        };
        println!("-> Job {job_id}");
        if let Some(status_token) = started["status_token"].as_str() {
            if let Some(code) = self.follow(job_id, status_token).await {
                return code;
            }
        }
        // A secret keeps polling as the deployed action does; a token client
        // polls with the job's own status token.
        let (poll, poll_bearer) = match (&credentials, started["status_token"].as_str()) {
            (Credentials::Token(_), Some(status_token)) => {
                (json!({"job_id": job_id}), Some(status_token))
            }
            (Credentials::Token(token), None) => (json!({"job_id": job_id}), Some(token.as_str())),
            (Credentials::Secret(_), _) => {
                let mut poll = body.clone();
                poll["job_id"] = json!(job_id);
                (poll, None)
            }
        };
        let mut printed = String::new();
        loop {
            let answer = match self.call("job-status", &poll, poll_bearer).await {
                Ok(answer) => answer,
                Err(error) => {
                    println!("! Error: {error}");
                    return EXIT_ERROR;
                }
            };
            print_new_output(&mut printed, answer["output"].as_str().unwrap_or(""));
            if answer["status"] == "error" {
                if let Some(error) = answer["error"].as_str() {
                    println!("! Error: {error}");
                }
            }
            match answer["status"].as_str().and_then(deploy_outcome) {
                Some(code) => return code,
                None => tokio::time::sleep(interval).await,
            }
        }
    }

    /// Follows the job's live output to its end; `None` when the service
    /// offers no stream, or lost it: the caller polls instead.
    async fn follow(&self, job_id: &str, status_token: &str) -> Option<i32> {
        let url = match follow::output_url(&self.base, job_id) {
            Ok(url) => url,
            Err(error) => {
                println!("-> No live output ({error}): polling");
                return None;
            }
        };
        match follow::follow_output(&url, status_token).await {
            Ok(follow::Followed::Ended(status)) => {
                Some(deploy_outcome(&status).unwrap_or_else(|| {
                    println!("! Error: the job ended with an unknown status {status:?}");
                    EXIT_ERROR
                }))
            }
            Ok(follow::Followed::Unavailable) => None,
            Err(error) => {
                println!("\n-> Live output lost ({error}): polling");
                None
            }
        }
    }
}

/// The exit code of a final status, announced as the deployed action does;
/// `None` while the job is not final.
fn deploy_outcome(status: &str) -> Option<i32> {
    match status {
        "success" => {
            println!("-> App deploy finished successfully");
            Some(EXIT_SUCCESS)
        }
        "error" => {
            println!("! Error: App deploy failed");
            Some(EXIT_ERROR)
        }
        _ => None,
    }
}

/// Why a call to the service gave no answer to use.
pub(crate) enum CallError {
    /// The service refused the request (a 4xx status); `body` as sent.
    Refused {
        status: reqwest::StatusCode,
        body: String,
    },
    /// 5xx or connection errors until the retry time ran out, or an answer
    /// that is not JSON.
    Failed(String),
}

/// Sends the request `request` builds and reads its JSON answer, sending it
/// again on 5xx and connection errors for up to 10 s.
pub(crate) async fn call_with_retry(
    request: impl Fn() -> reqwest::RequestBuilder,
) -> Result<Value, CallError> {
    let started = Instant::now();
    loop {
        let retry_reason = match request().send().await {
            Ok(response) if response.status().is_server_error() => {
                format!("HTTP {}", response.status())
            }
            Ok(response) if response.status().is_success() => {
                return response
                    .json::<Value>()
                    .await
                    .map_err(|error| CallError::Failed(format!("unreadable answer: {error}")));
            }
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                return Err(CallError::Refused { status, body });
            }
            Err(error) => with_causes(&error),
        };
        if started.elapsed() >= RETRY_FOR {
            return Err(CallError::Failed(retry_reason));
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// The HTTP client of every subcommand that calls the service.
pub(crate) fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("enac-cd/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|error| error.to_string())
}

/// The error and its causes: reqwest's own line omits why a request failed
/// (a refused certificate: trust its CA with `SSL_CERT_FILE`).
fn with_causes(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(source) = cause {
        text.push_str(": ");
        text.push_str(&source.to_string());
        cause = source.source();
    }
    text
}

/// Prints only what was not printed yet; output that was replaced or
/// truncated (no longer extends what was printed) is printed whole.
pub(crate) fn print_new_output(printed: &mut String, output: &str) {
    let new = output.strip_prefix(printed.as_str()).unwrap_or(output);
    if !new.is_empty() {
        print!("{new}");
        let _ = std::io::stdout().flush();
    }
    *printed = output.to_owned();
}

/// Asks the GitHub Actions runner for an OIDC token for `audience`.
async fn github_token(http: &reqwest::Client, audience: &str) -> Result<String, String> {
    let (Ok(url), Ok(bearer)) = (
        std::env::var("ACTIONS_ID_TOKEN_REQUEST_URL"),
        std::env::var("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
    ) else {
        return Err(
            "ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set \
                    (the job needs `permissions: id-token: write`)"
                .into(),
        );
    };
    let answer: Value = http
        .get(&url)
        .query(&[("audience", audience)])
        .bearer_auth(bearer)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|error| format!("cannot get the GitHub OIDC token: {error}"))?
        .json()
        .await
        .map_err(|error| format!("cannot read the GitHub OIDC token: {error}"))?;
    answer["value"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "the GitHub OIDC answer has no `value`".into())
}

async fn credentials(args: &DeployArgs, http: &reqwest::Client) -> Result<Credentials, String> {
    if args.oidc == Some(OidcSource::Github) {
        return github_token(http, &args.audience)
            .await
            .map(Credentials::Token);
    }
    if let Some(name) = &args.oidc_token_env {
        return match std::env::var(name) {
            Ok(token) if !token.trim().is_empty() => {
                Ok(Credentials::Token(token.trim().to_owned()))
            }
            _ => Err(format!("{name} is not set")),
        };
    }
    match std::env::var("DEPLOYMENT_SECRET") {
        Ok(secret) => Ok(Credentials::Secret(secret)),
        Err(_) => Err("DEPLOYMENT_SECRET is not set".into()),
    }
}

/// Runs the client; returns the process exit code.
pub async fn deploy(args: DeployArgs) -> i32 {
    let http = match http_client() {
        Ok(http) => http,
        Err(error) => {
            println!("! Error: {error}");
            return EXIT_ERROR;
        }
    };
    let credentials = match credentials(&args, &http).await {
        Ok(credentials) => credentials,
        Err(error) => {
            println!("! Error: {error}");
            return EXIT_ERROR;
        }
    };
    let deployer = Deployer {
        http,
        base: args.url.trim_end_matches('/').to_owned(),
        deployment_id: args.deployment_id,
    };
    let limit = Duration::from_secs(args.timeout);
    match tokio::time::timeout(
        limit,
        deployer.run(credentials, Duration::from_secs(args.interval)),
    )
    .await
    {
        Ok(code) => code,
        Err(_) => {
            println!(
                "!! Timeout Error: Process took longer than {} seconds, exiting.",
                args.timeout
            );
            EXIT_TIMEOUT
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_output_is_kept_as_printed() {
        let mut printed = String::new();
        print_new_output(&mut printed, "one\n");
        print_new_output(&mut printed, "one\ntwo\n");
        assert_eq!(printed, "one\ntwo\n");
        print_new_output(&mut printed, "replaced\n");
        assert_eq!(printed, "replaced\n");
    }
}
