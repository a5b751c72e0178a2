//! Settings: one struct, flags with `CD_*` env twins and an optional TOML file
//! (file < env < flag), validated once at start.

mod file;
mod private_cas;
mod secret_files;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

pub use file::{issuers_from, merge_config_file};
pub use private_cas::PrivateCas;
use secret_files::source_of;

use crate::domain::{Lifetimes, OnBusy};
use crate::launch::docker_address::EngineAddress;
use crate::launch::{is_executable, DockerPull};
use crate::store::RedisAddress;
use crate::units;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LauncherKind {
    Docker,
    Process,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn secret(text: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(text))
}

fn duration(text: &str) -> Result<Duration, String> {
    units::parse_duration(text)
}

fn size(text: &str) -> Result<usize, String> {
    units::parse_size(text)
}

/// Every setting of `enac-cd serve` (contract §2).
#[derive(Clone, Debug, Args)]
pub struct Settings {
    /// TOML file setting the same keys (file < env < flag).
    #[arg(long, env = "CD_CONFIG", value_name = "CD_CONFIG")]
    pub config: Option<PathBuf>,

    /// Listen address.
    #[arg(
        long,
        env = "CD_LISTEN",
        value_name = "CD_LISTEN",
        default_value = "127.0.0.1:8000"
    )]
    pub listen: SocketAddr,

    /// `redis://[:pass@]host:port/db`; unset = embedded store in `CD_DATA_DIR`.
    #[arg(long, env = "CD_REDIS_URL", value_name = "CD_REDIS_URL", value_parser = secret, hide_env_values = true)]
    pub redis_url: Option<SecretString>,

    /// A file holding `CD_REDIS_URL` (a Docker/compose secret).
    #[arg(long, env = "CD_REDIS_URL_FILE", value_name = "CD_REDIS_URL_FILE")]
    pub redis_url_file: Option<PathBuf>,

    /// The Redis password, apart from `CD_REDIS_URL` so that it needs no URL escaping.
    #[arg(long, env = "CD_REDIS_PASSWORD", value_name = "CD_REDIS_PASSWORD", value_parser = secret, hide_env_values = true)]
    pub redis_password: Option<SecretString>,

    /// A file holding `CD_REDIS_PASSWORD`.
    #[arg(
        long,
        env = "CD_REDIS_PASSWORD_FILE",
        value_name = "CD_REDIS_PASSWORD_FILE"
    )]
    pub redis_password_file: Option<PathBuf>,

    /// Embedded store location (`enac-cd.redb`); also the process launcher's job logs.
    #[arg(
        long,
        env = "CD_DATA_DIR",
        value_name = "CD_DATA_DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,

    /// Prefix of every Redis key.
    #[arg(
        long,
        env = "CD_REDIS_PREFIX",
        value_name = "CD_REDIS_PREFIX",
        default_value = "enac-cd:"
    )]
    pub redis_prefix: String,

    /// Bearer token for the admin endpoints; unset = they answer 403.
    #[arg(long, env = "CD_ADMIN_TOKEN", value_name = "CD_ADMIN_TOKEN", value_parser = secret, hide_env_values = true)]
    pub admin_token: Option<SecretString>,

    /// A file holding `CD_ADMIN_TOKEN`.
    #[arg(long, env = "CD_ADMIN_TOKEN_FILE", value_name = "CD_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Bearer token that reads every job (jobs API, status page) and acts on nothing.
    #[arg(long, env = "CD_VIEWER_TOKEN", value_name = "CD_VIEWER_TOKEN", value_parser = secret, hide_env_values = true)]
    pub viewer_token: Option<SecretString>,

    /// A file holding `CD_VIEWER_TOKEN`.
    #[arg(
        long,
        env = "CD_VIEWER_TOKEN_FILE",
        value_name = "CD_VIEWER_TOKEN_FILE"
    )]
    pub viewer_token_file: Option<PathBuf>,

    /// JSON list of apps loaded at start.
    #[arg(long, env = "CD_APPS_FILE", value_name = "CD_APPS_FILE")]
    pub apps_file: Option<PathBuf>,

    /// Base URL that containers use to call back (default `http://<CD_LISTEN>`).
    #[arg(long, env = "CD_PUBLIC_URL", value_name = "CD_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// A request head (or the next one on a kept-alive connection) must arrive within this.
    #[arg(long, env = "CD_HEADER_TIMEOUT", value_name = "CD_HEADER_TIMEOUT", value_parser = duration, default_value = "10s")]
    pub header_timeout: Duration,

    /// A request body must arrive within this.
    #[arg(long, env = "CD_BODY_TIMEOUT", value_name = "CD_BODY_TIMEOUT", value_parser = duration, default_value = "30s")]
    pub body_timeout: Duration,

    /// HTTP connections open at once; more wait in the listen backlog.
    #[arg(
        long,
        env = "CD_MAX_CONNECTIONS",
        value_name = "CD_MAX_CONNECTIONS",
        default_value_t = 1024,
        value_parser = clap::value_parser!(usize)
    )]
    pub max_connections: usize,

    /// How long a stop (SIGTERM) waits for requests in flight.
    #[arg(long, env = "CD_DRAIN_TIMEOUT", value_name = "CD_DRAIN_TIMEOUT", value_parser = duration, default_value = "10s")]
    pub drain_timeout: Duration,

    /// Shortest deployment secret `/set-available-apps/` and `CD_APPS_FILE` accept.
    #[arg(
        long,
        env = "CD_MIN_SECRET_LENGTH",
        value_name = "CD_MIN_SECRET_LENGTH",
        default_value_t = crate::apps::MIN_SECRET_LEN,
        value_parser = clap::value_parser!(usize)
    )]
    pub min_secret_length: usize,

    /// Key for job tokens; unset = generated once and kept in the store.
    #[arg(long, env = "CD_SIGNING_KEY", value_name = "CD_SIGNING_KEY", value_parser = secret, hide_env_values = true)]
    pub signing_key: Option<SecretString>,

    /// A file holding `CD_SIGNING_KEY`.
    #[arg(long, env = "CD_SIGNING_KEY_FILE", value_name = "CD_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,

    /// Policy files directory.
    #[arg(
        long,
        env = "CD_POLICY_DIR",
        value_name = "CD_POLICY_DIR",
        default_value = "./policies"
    )]
    pub policy_dir: PathBuf,

    /// What a `secret` trigger gets while its inventory is busy.
    #[arg(
        long,
        env = "CD_ON_BUSY",
        value_name = "CD_ON_BUSY",
        value_enum,
        default_value = "reject"
    )]
    pub on_busy: OnBusy,

    /// A job not final by then is stopped and ends `error`.
    #[arg(long, env = "CD_JOB_TIMEOUT", value_name = "CD_JOB_TIMEOUT", value_parser = duration, default_value = "1h")]
    pub job_timeout: Duration,

    /// How long finished jobs are kept.
    #[arg(long, env = "CD_JOB_TTL", value_name = "CD_JOB_TTL", value_parser = duration, default_value = "7d")]
    pub job_ttl: Duration,

    /// Output kept per job (the newest bytes win).
    #[arg(long, env = "CD_MAX_OUTPUT", value_name = "CD_MAX_OUTPUT", value_parser = size, default_value = "1MiB")]
    pub max_output: usize,

    /// `docker` or `process`.
    #[arg(
        long,
        env = "CD_LAUNCHER",
        value_name = "CD_LAUNCHER",
        value_enum,
        default_value = "docker"
    )]
    pub launcher: LauncherKind,

    /// Docker engine address (Docker's defaults when unset).
    #[arg(long, env = "CD_DOCKER_HOST", value_name = "CD_DOCKER_HOST")]
    pub docker_host: Option<String>,

    /// Ansible image.
    #[arg(
        long,
        env = "CD_DOCKER_IMAGE",
        value_name = "CD_DOCKER_IMAGE",
        default_value = "ghcr.io/epfl-enac/enacit-ansible:latest"
    )]
    pub docker_image: String,

    /// Image pull policy.
    #[arg(
        long,
        env = "CD_DOCKER_PULL",
        value_name = "CD_DOCKER_PULL",
        value_enum,
        default_value = "missing"
    )]
    pub docker_pull: DockerPull,

    /// Network mode or name for job containers.
    #[arg(long, env = "CD_DOCKER_NETWORK", value_name = "CD_DOCKER_NETWORK")]
    pub docker_network: Option<String>,

    /// Comma list `host:container[:ro]`.
    #[arg(
        long,
        env = "CD_DOCKER_BINDS",
        value_name = "CD_DOCKER_BINDS",
        value_delimiter = ','
    )]
    pub docker_binds: Vec<String>,

    /// Registry user for pulls.
    #[arg(long, env = "CD_REGISTRY_USER", value_name = "CD_REGISTRY_USER")]
    pub registry_user: Option<String>,

    /// Registry password for pulls.
    #[arg(long, env = "CD_REGISTRY_PASSWORD", value_name = "CD_REGISTRY_PASSWORD", value_parser = secret, hide_env_values = true)]
    pub registry_password: Option<SecretString>,

    /// A file holding `CD_REGISTRY_PASSWORD`.
    #[arg(
        long,
        env = "CD_REGISTRY_PASSWORD_FILE",
        value_name = "CD_REGISTRY_PASSWORD_FILE"
    )]
    pub registry_password_file: Option<PathBuf>,

    /// Program run by the `process` launcher.
    #[arg(long, env = "CD_PROCESS_COMMAND", value_name = "CD_PROCESS_COMMAND")]
    pub process_command: Option<PathBuf>,

    /// Passed to ansible as `CD_ENV` (`test`/`prod`).
    #[arg(long = "env", env = "CD_ENV", value_name = "CD_ENV")]
    pub cd_env: Option<String>,

    /// Inventory whose job runs `announce-apps` instead of `app-deploy`.
    #[arg(
        long,
        env = "CD_SELF_INVENTORY",
        value_name = "CD_SELF_INVENTORY",
        default_value = "cd_runner_with_enacit_ansible"
    )]
    pub self_inventory: String,

    /// `text` or `json`.
    #[arg(
        long,
        env = "CD_LOG_FORMAT",
        value_name = "CD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// PEM file of CA certificates trusted, besides the system's, by every
    /// outbound TLS connection (OIDC issuers, `rediss://`).
    #[arg(long, env = "CD_CA_FILE", value_name = "CD_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// GitHub's REST API (`[github] api_url`): GitHub Enterprise Server
    /// is `https://HOST/api/v3`.
    #[arg(
        long,
        env = "CD_GITHUB_API_URL",
        value_name = "CD_GITHUB_API_URL",
        default_value = "https://api.github.com"
    )]
    pub github_api_url: String,

    /// The GitHub App that reports deployments (`[github] app_id`).
    #[arg(long, env = "CD_GITHUB_APP_ID", value_name = "CD_GITHUB_APP_ID")]
    pub github_app_id: Option<String>,

    /// The App's private key, PEM (`[github] private_key_file`).
    #[arg(
        long,
        env = "CD_GITHUB_PRIVATE_KEY_FILE",
        value_name = "CD_GITHUB_PRIVATE_KEY_FILE"
    )]
    pub github_private_key_file: Option<PathBuf>,

    /// GitLab's REST API (`[gitlab] api_url`), for self-managed instances.
    #[arg(
        long,
        env = "CD_GITLAB_API_URL",
        value_name = "CD_GITLAB_API_URL",
        default_value = "https://gitlab.com/api/v4"
    )]
    pub gitlab_api_url: String,

    /// Pause before a failed report is tried again; it doubles (with
    /// jitter) up to 1 h, for 24 h.
    #[arg(long, env = "CD_REPORT_RETRY", value_name = "CD_REPORT_RETRY", value_parser = duration, default_value = "10s")]
    pub report_retry: Duration,

    /// Timeout of each request sent to report a job.
    #[arg(long, env = "CD_REPORT_TIMEOUT", value_name = "CD_REPORT_TIMEOUT", value_parser = duration, default_value = "10s")]
    pub report_timeout: Duration,

    /// OIDC issuers: the `[[issuer]]` entries of the config file.
    #[arg(skip)]
    pub issuers: Vec<crate::auth::oidc::Issuer>,
}

/// A setting that parsed but cannot be used; its message names the setting.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct SettingsError {
    pub setting: &'static str,
    pub reason: String,
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> SettingsError {
    SettingsError {
        setting,
        reason: reason.into(),
    }
}

/// Shortest accepted admin token and signing key: guessable values are refused.
const MIN_SECRET_LEN: usize = 16;

impl Settings {
    /// Checks what clap's parsers cannot see alone: combinations and formats.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.validate_redis()?;
        self.validate_reports()?;
        if let Some(url) = &self.public_url {
            let ok = (url.starts_with("http://") || url.starts_with("https://"))
                && url.len() > "https://".len();
            if !ok {
                return Err(invalid(
                    "CD_PUBLIC_URL",
                    format!("`{url}` is not an http(s) URL"),
                ));
            }
        }
        let tokens = [
            (
                &self.admin_token,
                source_of(
                    "CD_ADMIN_TOKEN",
                    "CD_ADMIN_TOKEN_FILE",
                    &self.admin_token_file,
                ),
            ),
            (
                &self.viewer_token,
                source_of(
                    "CD_VIEWER_TOKEN",
                    "CD_VIEWER_TOKEN_FILE",
                    &self.viewer_token_file,
                ),
            ),
        ];
        for (token, setting) in tokens {
            if token
                .as_ref()
                .is_some_and(|token| token.expose_secret().len() < MIN_SECRET_LEN)
            {
                return Err(invalid(setting, "must be at least 16 characters"));
            }
        }
        if let (Some(admin), Some(viewer)) = (&self.admin_token, &self.viewer_token) {
            // One token for both would make every viewer an admin.
            if admin.expose_secret() == viewer.expose_secret() {
                return Err(invalid(
                    "CD_VIEWER_TOKEN",
                    "must differ from CD_ADMIN_TOKEN",
                ));
            }
        }
        if let Some(key) = &self.signing_key {
            if key.expose_secret().len() < 32 {
                let setting = source_of(
                    "CD_SIGNING_KEY",
                    "CD_SIGNING_KEY_FILE",
                    &self.signing_key_file,
                );
                return Err(invalid(setting, "must be at least 32 characters"));
            }
        }
        if self.max_connections == 0 {
            return Err(invalid("CD_MAX_CONNECTIONS", "must be at least 1"));
        }
        for (setting, value) in [
            ("CD_HEADER_TIMEOUT", self.header_timeout),
            ("CD_BODY_TIMEOUT", self.body_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(setting, "must be more than 0s"));
            }
        }
        if self.min_secret_length == 0 {
            return Err(invalid("CD_MIN_SECRET_LENGTH", "must be at least 1"));
        }
        if self.redis_prefix.is_empty() {
            return Err(invalid("CD_REDIS_PREFIX", "must not be empty"));
        }
        if self.max_output < 1024 {
            return Err(invalid("CD_MAX_OUTPUT", "must be at least 1KiB"));
        }
        if self.self_inventory.is_empty() {
            return Err(invalid("CD_SELF_INVENTORY", "must not be empty"));
        }
        match self.launcher {
            LauncherKind::Process => {
                let Some(command) = &self.process_command else {
                    return Err(invalid(
                        "CD_PROCESS_COMMAND",
                        "required when CD_LAUNCHER=process",
                    ));
                };
                if !is_executable(command) {
                    return Err(invalid(
                        "CD_PROCESS_COMMAND",
                        format!("`{}` is not an executable file", command.display()),
                    ));
                }
            }
            LauncherKind::Docker => {
                if let Some(host) = &self.docker_host {
                    EngineAddress::parse(host)
                        .map_err(|reason| invalid("CD_DOCKER_HOST", reason))?;
                }
                for bind in &self.docker_binds {
                    let parts: Vec<&str> = bind.split(':').collect();
                    let valid = match parts.as_slice() {
                        [host, container] => !host.is_empty() && container.starts_with('/'),
                        [host, container, mode] => {
                            !host.is_empty()
                                && container.starts_with('/')
                                && matches!(*mode, "ro" | "rw")
                        }
                        _ => false,
                    };
                    if !valid {
                        return Err(invalid(
                            "CD_DOCKER_BINDS",
                            format!("`{bind}` is not host:/container[:ro|rw]"),
                        ));
                    }
                }
                if self.docker_image.trim().is_empty() {
                    return Err(invalid("CD_DOCKER_IMAGE", "must not be empty"));
                }
                if self.registry_password.is_some() && self.registry_user.is_none() {
                    let password_setting = source_of(
                        "CD_REGISTRY_PASSWORD",
                        "CD_REGISTRY_PASSWORD_FILE",
                        &self.registry_password_file,
                    );
                    return Err(invalid(
                        "CD_REGISTRY_USER",
                        format!("required when {password_setting} is set"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `CD_REDIS_URL` parses, and the password is given in one place only.
    fn validate_reports(&self) -> Result<(), SettingsError> {
        for (setting, url) in [
            ("CD_GITHUB_API_URL", &self.github_api_url),
            ("CD_GITLAB_API_URL", &self.gitlab_api_url),
        ] {
            if !crate::outbound::is_allowed_url(url) {
                return Err(invalid(
                    setting,
                    format!("`{url}` must be https:// (http:// only on loopback)"),
                ));
            }
        }
        match (&self.github_app_id, &self.github_private_key_file) {
            (Some(id), Some(_)) if id.trim().is_empty() => {
                return Err(invalid("CD_GITHUB_APP_ID", "is empty"))
            }
            (Some(_), None) => {
                return Err(invalid(
                    "CD_GITHUB_PRIVATE_KEY_FILE",
                    "is required with CD_GITHUB_APP_ID",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "CD_GITHUB_APP_ID",
                    "is required with CD_GITHUB_PRIVATE_KEY_FILE",
                ))
            }
            _ => {}
        }
        for (setting, duration) in [
            ("CD_REPORT_RETRY", self.report_retry),
            ("CD_REPORT_TIMEOUT", self.report_timeout),
        ] {
            if duration.is_zero() {
                return Err(invalid(setting, "must be more than 0s"));
            }
        }
        Ok(())
    }

    fn validate_redis(&self) -> Result<(), SettingsError> {
        let url_setting = source_of("CD_REDIS_URL", "CD_REDIS_URL_FILE", &self.redis_url_file);
        let password_setting = source_of(
            "CD_REDIS_PASSWORD",
            "CD_REDIS_PASSWORD_FILE",
            &self.redis_password_file,
        );
        let Some(url) = &self.redis_url else {
            if self.redis_password.is_some() {
                return Err(invalid(
                    password_setting,
                    "set without CD_REDIS_URL: there is no Redis to use it for",
                ));
            }
            return Ok(());
        };
        // Never the URL itself in the message: it may hold the password.
        let address = RedisAddress::parse(url.expose_secret()).map_err(|_| {
            invalid(
                url_setting,
                "not a valid redis://[:pass@]host:port/db, rediss://… or \
                 redis+sentinel://[:pass@]host:port[,host:port…]/primary[/db] URL \
                 (a password with `/`, `+`, `=`, `@` or `#` goes in CD_REDIS_PASSWORD, unescaped)",
            )
        })?;
        if self.redis_password.is_some() && address.has_password() {
            return Err(invalid(
                password_setting,
                format!("{url_setting} holds a password too; give it in one of them"),
            ));
        }
        Ok(())
    }

    /// Base URL for callbacks, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }

    /// How long jobs, locks and tokens live.
    pub fn lifetimes(&self) -> Lifetimes {
        Lifetimes {
            job_timeout: self.job_timeout,
            job_ttl: self.job_ttl,
        }
    }
}
