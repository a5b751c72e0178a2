//! The ways a job is asked for: a deployment secret (`secret.rs`), an OIDC
//! job token (`oidc.rs`), a signed GitHub or GitLab webhook (`webhook/`).
//! Each turns a verified request into the lifecycle's one start request.

mod oidc;
mod secret;
pub mod webhook;

use std::sync::Arc;

use crate::access::Denied;
use crate::auth::oidc::OidcVerifier;
use crate::domain::{Job, OnBusy, Trigger};
use crate::jobs::{Lifecycle, LifecycleError, StartRequest};
use crate::metrics::Metrics;
use crate::policy::{Policies, Policy};
use crate::store::{AppRecord, Store};

/// How `/app-deploy/` proves who is asking.
pub enum DeployCredential {
    /// A deployment id and its secret.
    Secret {
        deployment_id: Option<String>,
        secret: Option<String>,
    },
    /// An OIDC job token; the deployment id may be left to the policies.
    OidcToken {
        token: String,
        deployment_id: Option<String>,
    },
}

/// The job a deploy request got, and the token that reads it.
pub struct Deployed {
    pub job: Job,
    pub status_token: String,
}

/// The start request of every ingress: the app, what triggered it, what a
/// busy inventory does, and the reports the deployment's policy asks for.
fn start_request(
    app: AppRecord,
    trigger: Trigger,
    on_busy: OnBusy,
    policy: Option<&Policy>,
) -> StartRequest {
    let reports = policy
        .map(|policy| policy.report.plan(&app.deployment_id, &trigger))
        .unwrap_or_default();
    StartRequest {
        deployment_id: app.deployment_id,
        inventory: app.inventory,
        trigger,
        on_busy,
        reports,
    }
}

/// Shared by every request behind one `Arc`.
pub struct Ingress {
    store: Arc<dyn Store>,
    lifecycle: Arc<Lifecycle>,
    oidc: Arc<OidcVerifier>,
    policies: Policies,
    metrics: Metrics,
    /// What a `secret` trigger gets while its inventory is busy.
    on_busy: OnBusy,
}

impl From<LifecycleError> for Denied {
    fn from(error: LifecycleError) -> Denied {
        match error {
            LifecycleError::Busy => Denied::Busy,
            LifecycleError::Store(error) => Denied::Unavailable(error),
        }
    }
}

impl Ingress {
    pub fn new(
        store: Arc<dyn Store>,
        lifecycle: Arc<Lifecycle>,
        oidc: Arc<OidcVerifier>,
        policies: Policies,
        metrics: Metrics,
        on_busy: OnBusy,
    ) -> Ingress {
        Ingress {
            store,
            lifecycle,
            oidc,
            policies,
            metrics,
            on_busy,
        }
    }

    /// Forgets remembered keys of a request that started nothing; when the
    /// store fails here too, the key stays until it expires.
    async fn forget(&self, keys: &[&str]) {
        if let Err(error) = self.store.forget(keys).await {
            tracing::warn!(%error, "cannot forget the keys of a request that started nothing");
        }
    }

    /// Starts, queues or joins a job for a deploy request (`/app-deploy/`).
    pub async fn deploy(&self, credential: DeployCredential) -> Result<Deployed, Denied> {
        let (request, spent) = match credential {
            DeployCredential::Secret {
                deployment_id,
                secret,
            } => (self.secret_request(deployment_id, secret).await?, None),
            DeployCredential::OidcToken {
                token,
                deployment_id,
            } => {
                let (request, jti_key) = self.oidc_request(&token, deployment_id).await?;
                (request, Some(jti_key))
            }
        };
        let job = match self.lifecycle.start(request).await {
            Ok(started) => started.into_job(),
            Err(error) => {
                // A token that started nothing may try again.
                if let Some(jti_key) = spent {
                    self.forget(&[&jti_key]).await;
                }
                return Err(error.into());
            }
        };
        Ok(Deployed {
            status_token: self.lifecycle.status_token(&job.id),
            job,
        })
    }
}
