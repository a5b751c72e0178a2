//! Loading `CD_POLICY_DIR/*.toml` strictly: any problem refuses the whole
//! set, with a message naming the file and the key.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use base64::Engine;
use regex::Regex;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;

use super::report::{
    notify_host, GithubAuth, NotifyFile, NotifyFormat, NotifyRule, ReportFile, ReportPolicy,
};
use super::rules::{AnyOf, OidcRule, Provider, WebhookRule};
use super::{Policy, PolicySet};
use crate::domain::{OnBusy, ReportEvent};

/// Why a policy set was refused.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct PolicyError {
    pub file: String,
    pub message: String,
}

fn refuse(file: &Path, message: impl Into<String>) -> PolicyError {
    PolicyError {
        file: file.display().to_string(),
        message: message.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    deployment_id: String,
    on_busy: Option<OnBusy>,
    #[serde(default)]
    oidc: Vec<OidcRuleFile>,
    #[serde(default)]
    webhook: Vec<WebhookRuleFile>,
    report: Option<ReportFile>,
    #[serde(default)]
    notify: Vec<NotifyFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OidcRuleFile {
    issuer: String,
    #[serde(default)]
    claims: BTreeMap<String, toml::Value>,
    #[serde(default)]
    claims_regex: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookRuleFile {
    provider: Provider,
    secret_env: Option<String>,
    token_env: Option<String>,
    signing_secret_env: Option<String>,
    events: Vec<String>,
    #[serde(rename = "match", default)]
    matches: BTreeMap<String, toml::Value>,
}

/// A TOML scalar as JSON, or a list of them (any-of).
fn any_of(value: &toml::Value) -> Option<AnyOf> {
    let scalar = |value: &toml::Value| -> Option<Value> {
        match value {
            toml::Value::String(text) => Some(Value::String(text.clone())),
            toml::Value::Integer(number) => Some(Value::from(*number)),
            toml::Value::Boolean(flag) => Some(Value::Bool(*flag)),
            _ => None,
        }
    };
    match value {
        toml::Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()
            .map(AnyOf),
        other => scalar(other).map(|value| AnyOf(vec![value])),
    }
}

/// Reads an environment variable (the process's, or a test's map).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The secret held by the environment variable `name`; empty or unset refuses.
fn secret_from_env(
    env: EnvLookup,
    file: &Path,
    key: &str,
    name: &str,
) -> Result<String, PolicyError> {
    match env(name) {
        Some(value) if !value.trim().is_empty() => Ok(value),
        _ => Err(refuse(
            file,
            format!("`{key}`: environment variable {name} is unset or empty"),
        )),
    }
}

/// The key of a `whsec_<base64>` secret held by the variable `name`.
fn whsec_key(env: EnvLookup, file: &Path, key: &str, name: &str) -> Result<Vec<u8>, PolicyError> {
    let text = secret_from_env(env, file, key, name)?;
    let encoded = text.trim().strip_prefix("whsec_").unwrap_or(text.trim());
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| refuse(file, format!("`{key}`: {name} is not whsec_<base64>")))?;
    if decoded.is_empty() {
        return Err(refuse(file, format!("`{key}`: {name} holds an empty key")));
    }
    Ok(decoded)
}

fn report_policy(
    env: EnvLookup,
    file: &Path,
    report: Option<ReportFile>,
    notify: Vec<NotifyFile>,
) -> Result<ReportPolicy, PolicyError> {
    let report = report.unwrap_or_default();
    let token = |key: &str, name: &Option<String>| {
        name.as_deref()
            .map(|name| secret_from_env(env, file, key, name).map(SecretString::from))
            .transpose()
    };
    let github = match (
        report.github,
        token("report.github_token_env", &report.github_token_env)?,
    ) {
        (true, Some(_)) => {
            return Err(refuse(
                file,
                "`report.github` and `report.github_token_env` exclude each other",
            ))
        }
        (true, None) => Some(GithubAuth::App),
        (false, token) => token.map(GithubAuth::Token),
    };
    if report
        .environment
        .as_deref()
        .is_some_and(|name| name.trim().is_empty())
    {
        return Err(refuse(file, "`report.environment` is empty"));
    }
    let notify = notify
        .into_iter()
        .enumerate()
        .map(|(index, raw)| notify_rule(env, file, index, raw))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ReportPolicy {
        github,
        gitlab_token: token("report.gitlab_token_env", &report.gitlab_token_env)?,
        environment: report.environment,
        notify,
    })
}

fn notify_rule(
    env: EnvLookup,
    file: &Path,
    index: usize,
    raw: NotifyFile,
) -> Result<NotifyRule, PolicyError> {
    let at = |key: &str| format!("notify[{index}].{key}");
    let host = notify_host(&raw.url).ok_or_else(|| {
        refuse(
            file,
            format!(
                "`{}` must be an https:// URL without credentials (http:// only on loopback)",
                at("url")
            ),
        )
    })?;
    let format = match (raw.format.as_str(), raw.secret_env.as_deref()) {
        ("standard-webhooks", Some(name)) => NotifyFormat::StandardWebhooks {
            key: whsec_key(env, file, &at("secret_env"), name)?,
        },
        ("standard-webhooks", None) => {
            return Err(refuse(
                file,
                format!("`{}` is required by standard-webhooks", at("secret_env")),
            ))
        }
        ("slack", None) => NotifyFormat::Slack,
        ("slack", Some(_)) => {
            return Err(refuse(
                file,
                format!("`{}` is for standard-webhooks only", at("secret_env")),
            ))
        }
        _ => {
            return Err(refuse(
                file,
                format!(
                    "`{}` must be \"standard-webhooks\" or \"slack\"",
                    at("format")
                ),
            ))
        }
    };
    let events = match raw.events {
        None => ReportEvent::ALL.to_vec(),
        Some(names) if names.is_empty() => {
            return Err(refuse(file, format!("`{}` lists no event", at("events"))))
        }
        Some(names) => names
            .iter()
            .map(|name| {
                ReportEvent::parse(name).ok_or_else(|| {
                    refuse(
                        file,
                        format!(
                            "`{}`: \"{name}\" is not started, success or error",
                            at("events")
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(NotifyRule {
        url: SecretString::from(raw.url),
        host,
        format,
        events,
    })
}

fn webhook_rule(
    env: EnvLookup,
    file: &Path,
    index: usize,
    raw: WebhookRuleFile,
) -> Result<WebhookRule, PolicyError> {
    let at = |key: &str| format!("webhook[{index}].{key}");
    if raw.events.is_empty() {
        return Err(refuse(
            file,
            format!("`{}` must list at least one event", at("events")),
        ));
    }
    let mut matches = BTreeMap::new();
    for (pointer, value) in &raw.matches {
        if !pointer.starts_with('/') {
            return Err(refuse(
                file,
                format!(
                    "`{}` is not a JSON pointer",
                    at(&format!("match.{pointer}"))
                ),
            ));
        }
        let wanted = any_of(value).ok_or_else(|| {
            refuse(
                file,
                format!(
                    "`{}` must be a string, integer, boolean or a list of them",
                    at(&format!("match.{pointer}"))
                ),
            )
        })?;
        matches.insert(pointer.clone(), wanted);
    }
    if !matches.contains_key(raw.provider.id_pointer()) {
        return Err(refuse(
            file,
            format!(
                "`{}` must bind the immutable id \"{}\"",
                at("match"),
                raw.provider.id_pointer()
            ),
        ));
    }
    let (secret, signing_key) = match raw.provider {
        Provider::Github => {
            if raw.token_env.is_some() || raw.signing_secret_env.is_some() {
                let key = if raw.token_env.is_some() {
                    "token_env"
                } else {
                    "signing_secret_env"
                };
                return Err(refuse(
                    file,
                    format!("`{}` is for GitLab rules; GitHub uses secret_env", at(key)),
                ));
            }
            let name = raw
                .secret_env
                .as_deref()
                .ok_or_else(|| refuse(file, format!("`{}` is missing", at("secret_env"))))?;
            (
                Some(secret_from_env(env, file, &at("secret_env"), name)?),
                None,
            )
        }
        Provider::Gitlab => {
            if raw.secret_env.is_some() {
                return Err(refuse(
                    file,
                    format!(
                        "`{}` is for GitHub rules; GitLab uses token_env or signing_secret_env",
                        at("secret_env")
                    ),
                ));
            }
            if raw.token_env.is_none() && raw.signing_secret_env.is_none() {
                return Err(refuse(
                    file,
                    format!(
                        "`{}` or `{}` is required",
                        at("token_env"),
                        at("signing_secret_env")
                    ),
                ));
            }
            let token = raw
                .token_env
                .as_deref()
                .map(|name| secret_from_env(env, file, &at("token_env"), name))
                .transpose()?;
            let signing_key = raw
                .signing_secret_env
                .as_deref()
                .map(|name| whsec_key(env, file, &at("signing_secret_env"), name))
                .transpose()?;
            (token, signing_key)
        }
    };
    Ok(WebhookRule {
        provider: raw.provider,
        secret: secret.map(SecretString::from),
        signing_key,
        events: raw.events,
        matches,
    })
}

fn oidc_rule(file: &Path, index: usize, raw: OidcRuleFile) -> Result<OidcRule, PolicyError> {
    let at = |key: &str| format!("oidc[{index}].{key}");
    if raw.issuer.trim().is_empty() {
        return Err(refuse(file, format!("`{}` is empty", at("issuer"))));
    }
    let mut claims = BTreeMap::new();
    for (name, value) in &raw.claims {
        let wanted = any_of(value).ok_or_else(|| {
            refuse(
                file,
                format!(
                    "`{}` must be a string, integer, boolean or a list of them",
                    at(&format!("claims.{name}"))
                ),
            )
        })?;
        claims.insert(name.clone(), wanted);
    }
    if !claims.contains_key("repository_id") && !claims.contains_key("project_id") {
        return Err(refuse(
            file,
            format!(
                "`{}` must bind the immutable id `repository_id` (GitHub) or `project_id` (GitLab)",
                at("claims")
            ),
        ));
    }
    let mut claims_regex = BTreeMap::new();
    for (name, value) in &raw.claims_regex {
        let key = at(&format!("claims_regex.{name}"));
        let patterns = any_of(value)
            .and_then(|any| {
                any.0
                    .into_iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| {
                refuse(
                    file,
                    format!("`{key}` must be a string or a list of strings"),
                )
            })?;
        let compiled = patterns
            .iter()
            .map(|pattern| Regex::new(&format!("^(?:{pattern})$")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| refuse(file, format!("`{key}` is not a valid regex: {error}")))?;
        claims_regex.insert(name.clone(), compiled);
    }
    Ok(OidcRule {
        issuer: raw.issuer,
        claims,
        claims_regex,
    })
}

fn load_file(env: EnvLookup, path: &Path) -> Result<Policy, PolicyError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| refuse(path, format!("cannot read: {error}")))?;
    parse_policy(&text, path, env)
}

/// One policy file's text, checked as a load checks it (`path` only names
/// it in errors; secrets are looked up through `env`).
pub fn parse_policy(text: &str, path: &Path, env: EnvLookup) -> Result<Policy, PolicyError> {
    let raw: PolicyFile =
        toml::from_str(text).map_err(|error| refuse(path, error.message().to_owned()))?;
    if raw.deployment_id.trim().is_empty() {
        return Err(refuse(path, "`deployment_id` is empty"));
    }
    if raw.oidc.is_empty() && raw.webhook.is_empty() {
        return Err(refuse(path, "no `[[oidc]]` or `[[webhook]]` rule"));
    }
    let oidc = raw
        .oidc
        .into_iter()
        .enumerate()
        .map(|(index, rule)| oidc_rule(path, index, rule))
        .collect::<Result<Vec<_>, _>>()?;
    let webhooks = raw
        .webhook
        .into_iter()
        .enumerate()
        .map(|(index, rule)| webhook_rule(env, path, index, rule))
        .collect::<Result<Vec<_>, _>>()?;
    let report = report_policy(env, path, raw.report, raw.notify)?;
    Ok(Policy {
        file: path.to_owned(),
        deployment_id: raw.deployment_id,
        on_busy: raw.on_busy.unwrap_or(OnBusy::Queue),
        oidc,
        webhooks,
        report,
    })
}

/// Loads every `*.toml` of `dir`, secrets from the process environment; a
/// missing directory is an empty set.
pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyError> {
    load_dir_with(dir, &|name| std::env::var(name).ok())
}

/// [`load_dir`] with secrets read through `env`.
pub fn load_dir_with(dir: &Path, env: EnvLookup) -> Result<PolicySet, PolicyError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(PolicySet::default())
        }
        Err(error) => return Err(refuse(dir, format!("cannot read: {error}"))),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    let mut policies = Vec::with_capacity(files.len());
    for file in files {
        let policy = load_file(env, &file)?;
        if let Some(first) = seen.insert(policy.deployment_id.clone(), file.clone()) {
            return Err(refuse(
                &file,
                format!(
                    "`deployment_id` \"{}\" is already used by {}",
                    policy.deployment_id,
                    first.display()
                ),
            ));
        }
        policies.push(policy);
    }
    Ok(PolicySet { policies })
}
