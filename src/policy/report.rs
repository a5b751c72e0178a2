//! A policy's `[report]` and `[[notify]]` keys (contract §12): where the
//! deployment's jobs are reported, and with which secrets.

use secrecy::SecretString;
use serde::Deserialize;

use crate::domain::{Report, ReportEvent, ReportTarget, Trigger, TriggerKind};

/// How GitHub deployments of the policy's jobs are authenticated.
#[derive(Debug)]
pub enum GithubAuth {
    /// Through the operator's GitHub App, installed on the repository.
    App,
    /// A token held by an environment variable (read at load).
    Token(SecretString),
}

/// How a `[[notify]]` target is posted to.
pub enum NotifyFormat {
    /// Standard Webhooks-signed JSON, with the key of a `whsec_…` secret.
    StandardWebhooks { key: Vec<u8> },
    /// `{"text":…}`, as Slack and Mattermost incoming webhooks take it.
    Slack,
}

impl std::fmt::Debug for NotifyFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotifyFormat::StandardWebhooks { .. } => "StandardWebhooks",
            NotifyFormat::Slack => "Slack",
        })
    }
}

/// One `[[notify]]` entry.
pub struct NotifyRule {
    /// Incoming-webhook URLs are secrets themselves: never logged or shown.
    pub url: SecretString,
    /// The URL's host, which names the target.
    pub host: String,
    pub format: NotifyFormat,
    pub events: Vec<ReportEvent>,
}

impl std::fmt::Debug for NotifyRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyRule")
            .field("host", &self.host)
            .field("format", &self.format)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

/// Where a policy's jobs are reported.
#[derive(Debug, Default)]
pub struct ReportPolicy {
    pub github: Option<GithubAuth>,
    pub gitlab_token: Option<SecretString>,
    /// The GitHub environment; the deployment id when unset.
    pub environment: Option<String>,
    pub notify: Vec<NotifyRule>,
}

impl ReportPolicy {
    /// The reports a new job of `deployment_id` owes, for its trigger:
    /// GitHub for GitHub triggers, GitLab for GitLab ones, every notify
    /// target for any. A forge target the trigger cannot serve (no commit)
    /// is listed as failed, so that the job says why nothing was reported.
    pub fn plan(&self, deployment_id: &str, trigger: &Trigger) -> Vec<Report> {
        let mut reports = Vec::new();
        let commit = trigger.repository.clone().zip(trigger.sha.clone());
        let github = matches!(
            trigger.kind,
            TriggerKind::GithubWebhook | TriggerKind::GithubOidc
        );
        let gitlab = matches!(
            trigger.kind,
            TriggerKind::GitlabWebhook | TriggerKind::GitlabOidc
        );
        if github && self.github.is_some() {
            let (repository, sha) = commit.clone().unwrap_or_default();
            let target = ReportTarget::Github {
                repository,
                sha,
                environment: self
                    .environment
                    .clone()
                    .unwrap_or_else(|| deployment_id.to_owned()),
            };
            reports.push(forge_report(target, commit.is_some()));
        }
        if gitlab && self.gitlab_token.is_some() {
            let (project, sha) = commit.clone().unwrap_or_default();
            let target = ReportTarget::Gitlab { project, sha };
            reports.push(forge_report(target, commit.is_some()));
        }
        for (index, rule) in self.notify.iter().enumerate() {
            reports.push(Report::new(ReportTarget::Notify {
                index,
                host: rule.host.clone(),
                events: rule.events.clone(),
            }));
        }
        reports
    }
}

fn forge_report(target: ReportTarget, has_commit: bool) -> Report {
    if has_commit {
        Report::new(target)
    } else {
        Report::unreachable(target, "the trigger names no repository and commit")
    }
}

impl ReportPolicy {
    /// `, reports to github (App), notify:hooks.example` for `policy check`;
    /// empty when the policy reports nowhere. Never a secret.
    pub fn summary(&self) -> String {
        let mut targets = Vec::new();
        match &self.github {
            Some(GithubAuth::App) => targets.push("github (App)".to_owned()),
            Some(GithubAuth::Token(_)) => targets.push("github (token)".to_owned()),
            None => {}
        }
        if self.gitlab_token.is_some() {
            targets.push("gitlab".to_owned());
        }
        targets.extend(
            self.notify
                .iter()
                .map(|rule| format!("notify:{}", rule.host)),
        );
        if targets.is_empty() {
            String::new()
        } else {
            format!(", reports to {}", targets.join(", "))
        }
    }
}

/// `[report]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ReportFile {
    #[serde(default)]
    pub github: bool,
    pub github_token_env: Option<String>,
    pub gitlab_token_env: Option<String>,
    pub environment: Option<String>,
}

/// `[[notify]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NotifyFile {
    pub url: String,
    pub format: String,
    pub secret_env: Option<String>,
    pub events: Option<Vec<String>>,
}

/// The host of an allowed notify URL (`https://`, `http://` on loopback).
pub(super) fn notify_host(url: &str) -> Option<String> {
    if !crate::outbound::is_allowed_url(url) {
        return None;
    }
    let parsed = reqwest::Url::parse(url).ok()?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return None;
    }
    parsed.host_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(kind: TriggerKind, with_commit: bool) -> Trigger {
        Trigger {
            repository: with_commit.then(|| "epfl-enac/app".to_owned()),
            sha: with_commit.then(|| "abc123".to_owned()),
            ..Trigger::of_kind(kind)
        }
    }

    fn policy() -> ReportPolicy {
        ReportPolicy {
            github: Some(GithubAuth::App),
            gitlab_token: Some(SecretString::from("glpat")),
            environment: None,
            notify: vec![NotifyRule {
                url: SecretString::from("https://hooks.example/x"),
                host: "hooks.example".into(),
                format: NotifyFormat::Slack,
                events: vec![ReportEvent::Error],
            }],
        }
    }

    #[test]
    fn a_forge_hears_of_its_own_triggers_and_notify_of_all() {
        let names = |kind| -> Vec<String> {
            policy()
                .plan("app-one", &trigger(kind, true))
                .iter()
                .map(|report| report.target.name())
                .collect()
        };
        assert_eq!(
            names(TriggerKind::GithubWebhook),
            ["github", "notify:hooks.example"]
        );
        assert_eq!(
            names(TriggerKind::GitlabOidc),
            ["gitlab", "notify:hooks.example"]
        );
        assert_eq!(names(TriggerKind::Secret), ["notify:hooks.example"]);
        let plan = policy().plan("app-one", &trigger(TriggerKind::GithubOidc, true));
        assert_eq!(
            plan[0].target,
            ReportTarget::Github {
                repository: "epfl-enac/app".into(),
                sha: "abc123".into(),
                environment: "app-one".into()
            }
        );
    }

    #[test]
    fn a_trigger_without_a_commit_is_shown_as_not_reportable() {
        let plan = policy().plan("app-one", &trigger(TriggerKind::GithubWebhook, false));
        assert_eq!(plan[0].state, crate::domain::ReportState::Failed);
        assert!(plan[0].last_error.is_some());
    }

    #[test]
    fn notify_urls_are_https_or_loopback_without_credentials() {
        assert_eq!(
            notify_host("https://hooks.example/x").as_deref(),
            Some("hooks.example")
        );
        assert_eq!(
            notify_host("http://127.0.0.1:9/x").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(notify_host("http://hooks.example/x"), None);
        assert_eq!(notify_host("https://user:pw@hooks.example/x"), None);
        assert_eq!(notify_host("ftp://hooks.example/x"), None);
    }
}
