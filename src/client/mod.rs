//! `enac-cd deploy`: starts a deployment and follows its job, with the exit
//! codes of the deployed GitHub Action (0 success, 1 error, 2 timeout).

use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};

/// Exit codes shared with the deployed GitHub Action.
pub const EXIT_SUCCESS: i32 = 0;
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_TIMEOUT: i32 = 2;

/// How long one call is retried on 5xx and connection errors.
const RETRY_FOR: Duration = Duration::from_secs(10);
const RETRY_PAUSE: Duration = Duration::from_millis(500);

#[derive(Clone, Debug, Args)]
pub struct DeployArgs {
    /// Base URL of the enac-cd service.
    #[arg(long, env = "CD_URL")]
    pub url: String,
    /// Deployment id to deploy; the secret is read from `DEPLOYMENT_SECRET`.
    #[arg(long)]
    pub deployment_id: String,
    /// Seconds between status polls.
    #[arg(long, default_value_t = 2)]
    pub interval: u64,
    /// Seconds before giving up (exit 2).
    #[arg(long, default_value_t = 480)]
    pub timeout: u64,
}

struct Deployer {
    http: reqwest::Client,
    base: String,
    deployment_id: String,
    secret: String,
}

impl Deployer {
    /// POSTs JSON, retrying 5xx and connection errors for up to 10 s.
    async fn call(&self, path: &str, body: &Value) -> Result<Value, String> {
        let url = format!("{}/{path}/", self.base);
        let started = Instant::now();
        loop {
            let outcome = self.http.post(&url).json(body).send().await;
            let retry_reason = match outcome {
                Ok(response) if response.status().is_server_error() => {
                    format!("HTTP {}", response.status())
                }
                Ok(response) if response.status().is_success() => {
                    return response
                        .json::<Value>()
                        .await
                        .map_err(|error| format!("{path}: unreadable answer: {error}"));
                }
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    return Err(format!("{path}: HTTP {status}: {text}"));
                }
                Err(error) => format!("{error}"),
            };
            if started.elapsed() >= RETRY_FOR {
                return Err(format!("{path}: {retry_reason}"));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    async fn run(&self, interval: Duration) -> i32 {
        println!(
            "-> Asking for app-deploy of {} on {}",
            self.deployment_id, self.base
        );
        let credentials = json!({
            "deployment_id": self.deployment_id,
            "deployment_secret": self.secret,
        });
        let started = match self.call("app-deploy", &credentials).await {
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
        let mut poll = credentials;
        poll["job_id"] = json!(job_id);
        let mut printed = String::new();
        loop {
            let answer = match self.call("job-status", &poll).await {
                Ok(answer) => answer,
                Err(error) => {
                    println!("! Error: {error}");
                    return EXIT_ERROR;
                }
            };
            print_new_output(&mut printed, answer["output"].as_str().unwrap_or(""));
            match answer["status"].as_str() {
                Some("success") => {
                    println!("-> App deploy finished successfully");
                    return EXIT_SUCCESS;
                }
                Some("error") => {
                    if let Some(error) = answer["error"].as_str() {
                        println!("! Error: {error}");
                    }
                    println!("! Error: App deploy failed");
                    return EXIT_ERROR;
                }
                _ => tokio::time::sleep(interval).await,
            }
        }
    }
}

/// Prints only what was not printed yet; output that was replaced or
/// truncated (no longer extends what was printed) is printed whole.
fn print_new_output(printed: &mut String, output: &str) {
    let new = output.strip_prefix(printed.as_str()).unwrap_or(output);
    if !new.is_empty() {
        print!("{new}");
        let _ = std::io::stdout().flush();
    }
    *printed = output.to_owned();
}

/// Runs the client; returns the process exit code.
pub async fn deploy(args: DeployArgs) -> i32 {
    let Ok(secret) = std::env::var("DEPLOYMENT_SECRET") else {
        println!("! Error: DEPLOYMENT_SECRET is not set");
        return EXIT_ERROR;
    };
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("enac-cd/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(http) => http,
        Err(error) => {
            println!("! Error: {error}");
            return EXIT_ERROR;
        }
    };
    let deployer = Deployer {
        http,
        base: args.url.trim_end_matches('/').to_owned(),
        deployment_id: args.deployment_id,
        secret,
    };
    let limit = Duration::from_secs(args.timeout);
    match tokio::time::timeout(limit, deployer.run(Duration::from_secs(args.interval))).await {
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
