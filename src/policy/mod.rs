//! Policy files (`CD_POLICY_DIR/*.toml`): which signed webhooks and OIDC job
//! tokens may deploy which deployment id. Rules in a file are OR'd, keys in
//! a rule AND'd, a list means any-of, a missing claim or field never matches.

pub mod explain;
mod load;
mod report;
mod rules;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub use load::{load_dir, load_dir_with, parse_policy, EnvLookup, PolicyError};
pub use report::{GithubAuth, NotifyFormat, NotifyRule, ReportPolicy};
pub use rules::{Mismatch, OidcRule, Provider, WebhookRule};

use crate::domain::OnBusy;

/// One deployment's policy file.
#[derive(Debug)]
pub struct Policy {
    pub file: PathBuf,
    pub deployment_id: String,
    pub on_busy: OnBusy,
    pub oidc: Vec<OidcRule>,
    pub webhooks: Vec<WebhookRule>,
    /// Where its jobs are reported (`[report]`, `[[notify]]`).
    pub report: ReportPolicy,
}

/// Every loaded policy; replaced whole on reload.
#[derive(Debug, Default)]
pub struct PolicySet {
    pub policies: Vec<Policy>,
}

impl PolicySet {
    /// Webhook rules of `provider` whose immutable id (`/repository/id` for
    /// GitHub, `/project/id` for GitLab) equals `id`, with their policy.
    pub fn webhook_candidates(
        &self,
        provider: Provider,
        id: &serde_json::Value,
    ) -> Vec<(&Policy, &WebhookRule)> {
        self.policies
            .iter()
            .flat_map(|policy| policy.webhooks.iter().map(move |rule| (policy, rule)))
            .filter(|(_, rule)| rule.provider == provider && rule.binds_id(id))
            .collect()
    }
}

impl PolicySet {
    /// Policies with an `[[oidc]]` rule matching a verified token's claims.
    pub fn oidc_matches(&self, issuer: &str, claims: &serde_json::Value) -> Vec<&Policy> {
        self.policies
            .iter()
            .filter(|policy| {
                policy
                    .oidc
                    .iter()
                    .any(|rule| rule.check(issuer, claims).is_ok())
            })
            .collect()
    }

    /// The policy of `deployment_id`, if one is loaded.
    pub fn for_deployment(&self, deployment_id: &str) -> Option<&Policy> {
        self.policies
            .iter()
            .find(|policy| policy.deployment_id == deployment_id)
    }

    /// Refuses `[report] github = true` when no GitHub App is configured.
    pub fn check_github_app(&self, configured: bool) -> Result<(), PolicyError> {
        match self.policies.iter().find(|policy| {
            matches!(policy.report.github, Some(GithubAuth::App)) && !configured
        }) {
            Some(policy) => Err(PolicyError {
                file: policy.file.display().to_string(),
                message: "`report.github`: no GitHub App is configured ([github] app_id and private_key_file)".into(),
            }),
            None => Ok(()),
        }
    }

    /// Refuses rules naming an issuer that is not configured.
    pub fn check_issuers(&self, configured: &[String]) -> Result<(), PolicyError> {
        for policy in &self.policies {
            for (index, rule) in policy.oidc.iter().enumerate() {
                if !configured.contains(&rule.issuer) {
                    return Err(PolicyError {
                        file: policy.file.display().to_string(),
                        message: format!(
                            "`oidc[{index}].issuer`: \"{}\" is not a configured [[issuer]]",
                            rule.issuer
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

/// The live policy set, shared by handlers and swapped by `SIGHUP`.
#[derive(Clone, Default)]
pub struct Policies {
    current: Arc<RwLock<Arc<PolicySet>>>,
    /// Names of the configured OIDC issuers rules may use.
    issuers: Arc<Vec<String>>,
    /// Whether `[report] github = true` can be served.
    github_app: bool,
}

impl Policies {
    /// The live set, checked against the configured issuer names and
    /// whether a GitHub App is configured.
    pub fn new(
        set: PolicySet,
        issuers: Vec<String>,
        github_app: bool,
    ) -> Result<Policies, PolicyError> {
        set.check_issuers(&issuers)?;
        set.check_github_app(github_app)?;
        Ok(Policies {
            current: Arc::new(RwLock::new(Arc::new(set))),
            issuers: Arc::new(issuers),
            github_app,
        })
    }

    pub fn current(&self) -> Arc<PolicySet> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Replaces the whole set.
    pub fn replace(&self, set: PolicySet) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(set);
    }

    /// Loads `dir` again; a bad set is refused and the old one kept.
    pub fn reload(&self, dir: &Path) -> Result<usize, PolicyError> {
        let set = load_dir(dir)?;
        set.check_issuers(&self.issuers)?;
        set.check_github_app(self.github_app)?;
        let count = set.policies.len();
        self.replace(set);
        Ok(count)
    }
}
