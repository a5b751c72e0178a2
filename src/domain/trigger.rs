//! What asked for a job, and the facts it brought.

use serde::{Deserialize, Serialize};

/// What asked for the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TriggerKind {
    Secret,
    GithubWebhook,
    GitlabWebhook,
    GithubOidc,
    GitlabOidc,
}

impl TriggerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Secret => "secret",
            TriggerKind::GithubWebhook => "github-webhook",
            TriggerKind::GitlabWebhook => "gitlab-webhook",
            TriggerKind::GithubOidc => "github-oidc",
            TriggerKind::GitlabOidc => "gitlab-oidc",
        }
    }
}

/// The trigger and its facts, stored on the job and shown in logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    pub kind: TriggerKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    /// The OIDC issuer (its configured name) of a token trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The OIDC token's `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The policy file (its name) that granted a webhook or token trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

impl Trigger {
    /// The trigger as granted by the policy file at `file`.
    pub fn granted_by(mut self, file: &std::path::Path) -> Trigger {
        self.policy = file
            .file_name()
            .map(|name| name.to_string_lossy().into_owned());
        self
    }

    pub fn of_kind(kind: TriggerKind) -> Trigger {
        Trigger {
            kind,
            repository: None,
            git_ref: None,
            sha: None,
            actor: None,
            event: None,
            delivery_id: None,
            issuer: None,
            subject: None,
            policy: None,
        }
    }
}

/// `secret`, or e.g. `github-webhook repository=epfl-enac/app ref=refs/heads/main sha=…`.
impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind.as_str())?;
        let facts = [
            ("repository", &self.repository),
            ("ref", &self.git_ref),
            ("sha", &self.sha),
            ("actor", &self.actor),
            ("event", &self.event),
            ("delivery", &self.delivery_id),
            ("issuer", &self.issuer),
            ("subject", &self.subject),
            ("policy", &self.policy),
        ];
        for (name, value) in facts {
            if let Some(value) = value {
                write!(f, " {name}={value}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trigger_shows_its_kind_and_known_facts() {
        assert_eq!(Trigger::of_kind(TriggerKind::Secret).to_string(), "secret");
        let trigger = Trigger {
            repository: Some("epfl-enac/app".into()),
            git_ref: Some("refs/heads/main".into()),
            ..Trigger::of_kind(TriggerKind::GithubWebhook)
        };
        assert_eq!(
            trigger.to_string(),
            "github-webhook repository=epfl-enac/app ref=refs/heads/main"
        );
    }
}
