use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use enac_cd::client::healthcheck::{healthcheck, HealthcheckArgs};
use enac_cd::client::jobs::{cancel, jobs, logs, CancelArgs, JobsArgs, LogsArgs};
use enac_cd::client::{deploy, DeployArgs};
use enac_cd::config::{merge_config_file, Settings};

#[derive(Parser)]
#[command(name = "enac-cd", version, about = "Continuous-deployment broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    #[command(args_override_self = true)]
    Serve(Box<Settings>),
    /// Deploy an app and follow its job until it ends.
    Deploy(DeployArgs),
    /// List jobs, newest first (token in ENAC_CD_TOKEN).
    Jobs(JobsArgs),
    /// Print a job's output; with --follow, until it ends (token in ENAC_CD_TOKEN).
    Logs(LogsArgs),
    /// Cancel a job: its program is stopped and it ends error (admin token in ENAC_CD_TOKEN).
    Cancel(CancelArgs),
    /// Validate policy files, or explain which deployments a delivery or token matches.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Ask a running service whether it is ready (exit 0) or not (exit 1), for a container's HEALTHCHECK.
    Healthcheck(HealthcheckArgs),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Load every policy file of DIR (default `CD_POLICY_DIR`); non-zero on any error.
    Check {
        #[arg(env = "CD_POLICY_DIR", default_value = "./policies")]
        dir: PathBuf,
    },
    /// Print which deployment ids match, and for each rule that does not, the first key that failed.
    Explain(ExplainArgs),
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("subject").required(true).args(["github_event", "gitlab_event", "claims"])))]
struct ExplainArgs {
    /// Policy directory.
    #[arg(long, env = "CD_POLICY_DIR", default_value = "./policies")]
    dir: PathBuf,
    /// A GitHub delivery of this event (`X-GitHub-Event`), with --payload.
    #[arg(long, requires = "payload")]
    github_event: Option<String>,
    /// A GitLab delivery of this event (`X-Gitlab-Event`), with --payload.
    #[arg(long, requires = "payload")]
    gitlab_event: Option<String>,
    /// The delivery: its JSON body, or a sample file `{"headers", "body"}`.
    #[arg(long)]
    payload: Option<PathBuf>,
    /// A JSON file of OIDC token claims.
    #[arg(long)]
    claims: Option<PathBuf>,
    /// With --claims: the configured issuer name the token came from.
    #[arg(long)]
    issuer: Option<String>,
}

fn read_json(path: &std::path::Path) -> Result<serde_json::Value, String> {
    let text =
        std::fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))?;
    serde_json::from_str(&text).map_err(|error| format!("{}: not JSON: {error}", path.display()))
}

fn policy(command: PolicyCommand) -> ExitCode {
    use enac_cd::policy::explain::{explain, payload_of, Subject};
    use enac_cd::policy::{load_dir, Provider};
    match command {
        PolicyCommand::Check { dir } => ExitCode::from(enac_cd::policy::explain::check(&dir) as u8),
        PolicyCommand::Explain(args) => {
            let set = match load_dir(&args.dir) {
                Ok(set) => set,
                Err(error) => return fail(error),
            };
            let subject = match (
                &args.github_event,
                &args.gitlab_event,
                &args.payload,
                &args.claims,
            ) {
                (Some(event), _, Some(path), _) | (_, Some(event), Some(path), _) => {
                    let provider = if args.github_event.is_some() {
                        Provider::Github
                    } else {
                        Provider::Gitlab
                    };
                    match read_json(path) {
                        Ok(document) => Subject::Webhook {
                            provider,
                            event: event.clone(),
                            payload: payload_of(document),
                        },
                        Err(error) => return fail(error),
                    }
                }
                (_, _, _, Some(path)) => match read_json(path) {
                    Ok(claims) => Subject::Claims {
                        issuer: args.issuer.clone(),
                        claims,
                    },
                    Err(error) => return fail(error),
                },
                _ => {
                    return fail(
                        "give --github-event or --gitlab-event with --payload, or --claims",
                    )
                }
            };
            if let Subject::Webhook {
                provider,
                event,
                payload,
            } = &subject
            {
                let provider = enac_cd::ingress::webhook::provider_of(*provider);
                if let Some(reason) = provider.never_deploys(event, payload) {
                    println!("never deploys: {reason}");
                }
            }
            let (matched, lines) = explain(&set, &subject);
            if matched.is_empty() {
                println!("matching deployment ids: none");
            } else {
                println!("matching deployment ids: {}", matched.join(", "));
            }
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
    }
}

/// Bad settings stop the start with one line naming the setting.
fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

fn arguments() -> Result<Vec<OsString>, enac_cd::config::SettingsError> {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|command| command == "serve") {
        let rest = args.split_off(2);
        args.extend(merge_config_file(rest)?);
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match arguments() {
        Ok(args) => args,
        Err(error) => return fail(error),
    };
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => error.exit(),
        Err(error) => {
            let rendered = error.render().to_string();
            let line = rendered.lines().next().unwrap_or("invalid arguments");
            return fail(line.trim_start_matches("error: "));
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return fail(format!("cannot start the runtime: {error}")),
    };
    match cli.command {
        Command::Serve(mut settings) => {
            match enac_cd::config::issuers_from(settings.config.as_deref()) {
                Ok(issuers) => settings.issuers = issuers,
                Err(error) => return fail(error),
            }
            enac_cd::telemetry::init(settings.log_format);
            match runtime.block_on(enac_cd::run(*settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(error),
            }
        }
        Command::Policy(command) => policy(command),
        Command::Healthcheck(args) => ExitCode::from(runtime.block_on(healthcheck(args)) as u8),
        Command::Jobs(args) => ExitCode::from(runtime.block_on(jobs(args)) as u8),
        Command::Logs(args) => ExitCode::from(runtime.block_on(logs(args)) as u8),
        Command::Cancel(args) => ExitCode::from(runtime.block_on(cancel(args)) as u8),
        Command::Deploy(args) => {
            let code = runtime.block_on(deploy(args));
            ExitCode::from(code as u8)
        }
    }
}
