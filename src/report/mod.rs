//! Reporting jobs where developers look (contract §12): GitHub deployments
//! (`github.rs`), GitLab commit statuses (`gitlab.rs`) and notification
//! URLs (`notify.rs`), sent through one outbound client (`client.rs`) by
//! the outbox deliverer (`outbox.rs`).

mod client;
mod github;
mod gitlab;
mod notify;
mod outbox;

pub use client::{Answer, OutboundClient};
pub use github::{Github, GithubApp};
pub use gitlab::{Gitlab, GitlabState};
pub use notify::{notify, Notification};
pub use outbox::{Reporter, ReporterConfig};

/// Why a report did not reach its target: shown as `last_error`, so it
/// never holds a secret (token, signing key, notification URL).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DeliveryError(pub String);
