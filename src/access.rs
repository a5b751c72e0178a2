//! Who may read or act on a job: one answer for every caller (a deployment
//! secret, a status token, a callback token, an OIDC job token, the admin
//! token), so that no handler writes its own rule.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use crate::apps;
use crate::auth::bearer_matches;
use crate::auth::oidc::{OidcVerifier, VerifiedToken};
use crate::domain::Job;
use crate::jobs::{TokenError, TokenKind, TokenSigner};
use crate::metrics::{Metrics, Refusal};
use crate::policy::Policies;
use crate::store::{Store, StoreError};

/// Why a caller was refused, or what stopped the answer.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// Unknown deployment id or wrong secret: the same answer for both, so
    /// that neither tells whether an id exists.
    #[error("App not found")]
    AppNotFound,
    /// No such job, or a job outside the caller's reach: never a hint which.
    #[error("Job not found")]
    JobNotFound,
    /// No credential, or one that does not verify.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// An OIDC token refused; the message names the failed check.
    #[error("{0}")]
    TokenRefused(String),
    /// A known caller asking for what it may not do.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The inventory is busy and the trigger asked to be refused.
    #[error("App deployment is already running")]
    Busy,
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

/// Who reads a job.
pub enum Reader {
    /// A deployment id and its secret (the seed's `/job-status/`).
    Secret {
        deployment_id: Option<String>,
        secret: Option<String>,
    },
    /// `Authorization: Bearer`: a status token or an OIDC job token.
    Bearer(String),
}

/// A verified callback token: the one job it may report on.
pub struct CallbackCaller {
    job_id: String,
}

/// Who calls the jobs API (contract §10), from its bearer token.
pub enum ApiCaller {
    /// `CD_ADMIN_TOKEN`: reads everything, acts.
    Admin,
    /// `CD_VIEWER_TOKEN`: reads everything, acts on nothing.
    Viewer,
    /// A status token: reads its one job.
    StatusToken { job_id: String },
    /// An OIDC job token: reads the jobs of the deployments its policies grant.
    Oidc(VerifiedToken),
}

/// Which jobs a caller may list.
pub enum ListScope {
    All,
    /// These deployments only (an OIDC token's grants).
    Deployments(Vec<String>),
    /// One job (a status token).
    Job(String),
}

/// Shared by every request behind one `Arc` (the token keys inside are
/// not cheap to copy).
pub struct JobAccess {
    store: Arc<dyn Store>,
    tokens: TokenSigner,
    oidc: Arc<OidcVerifier>,
    policies: Policies,
    admin_token: Option<Arc<SecretString>>,
    viewer_token: Option<Arc<SecretString>>,
    metrics: Metrics,
}

impl JobAccess {
    pub fn new(
        store: Arc<dyn Store>,
        tokens: TokenSigner,
        oidc: Arc<OidcVerifier>,
        policies: Policies,
        admin_token: Option<Arc<SecretString>>,
        viewer_token: Option<Arc<SecretString>>,
        metrics: Metrics,
    ) -> JobAccess {
        JobAccess {
            store,
            tokens,
            oidc,
            policies,
            admin_token,
            viewer_token,
            metrics,
        }
    }

    /// The jobs API caller a bearer token names; every token is compared in
    /// constant time, and a refusal never says which kinds were tried.
    pub async fn api_caller(&self, token: Option<&str>) -> Result<ApiCaller, Denied> {
        let Some(token) = token else {
            return Err(self.refuse(
                Refusal::ApiTokenMissing,
                Denied::Unauthenticated("missing bearer token"),
            ));
        };
        let matches = |expected: &Option<Arc<SecretString>>| {
            expected
                .as_deref()
                .is_some_and(|expected| bearer_matches(token, expected.expose_secret()))
        };
        if matches(&self.admin_token) {
            return Ok(ApiCaller::Admin);
        }
        if matches(&self.viewer_token) {
            return Ok(ApiCaller::Viewer);
        }
        if self.oidc.claims_known_issuer(token) {
            let verified = verify_oidc(&self.oidc, &self.metrics, token).await?;
            return Ok(ApiCaller::Oidc(verified));
        }
        match self.tokens.verify(TokenKind::Status, token) {
            Ok(job_id) => Ok(ApiCaller::StatusToken { job_id }),
            Err(_) => Err(self.refuse(
                Refusal::ApiTokenInvalid,
                Denied::Unauthenticated("invalid bearer token"),
            )),
        }
    }

    /// The job `job_id` if `caller` may read it; else `JobNotFound`, the
    /// same as for a job that does not exist.
    pub async fn api_job(&self, caller: &ApiCaller, job_id: &str) -> Result<Job, Denied> {
        if !self.may_ask_for(caller, job_id) {
            return Err(Denied::JobNotFound);
        }
        let job = self.store.job(job_id).await?.ok_or(Denied::JobNotFound)?;
        self.may_read(caller, &job).await?;
        Ok(job)
    }

    /// Whether `caller` may ask for `job_id` at all (a status token names
    /// its one job): checked before any store read.
    pub fn may_ask_for(&self, caller: &ApiCaller, job_id: &str) -> bool {
        match caller {
            ApiCaller::StatusToken { job_id: own } => own == job_id,
            _ => true,
        }
    }

    /// Whether `caller` may read `job`, already read; `JobNotFound` if not.
    pub async fn may_read(&self, caller: &ApiCaller, job: &Job) -> Result<(), Denied> {
        let reaches = match caller {
            ApiCaller::StatusToken { job_id } => *job_id == job.id,
            ApiCaller::Oidc(token) => self.oidc_reaches(token, job).await?,
            ApiCaller::Admin | ApiCaller::Viewer => true,
        };
        if reaches {
            Ok(())
        } else {
            Err(Denied::JobNotFound)
        }
    }

    /// Which jobs `caller` may list.
    pub async fn list_scope(&self, caller: &ApiCaller) -> Result<ListScope, Denied> {
        Ok(match caller {
            ApiCaller::Admin | ApiCaller::Viewer => ListScope::All,
            ApiCaller::StatusToken { job_id } => ListScope::Job(job_id.clone()),
            ApiCaller::Oidc(token) => {
                let policies = self.policies.current();
                let mut granted: Vec<String> = policies
                    .oidc_matches(&token.issuer, &token.claims)
                    .into_iter()
                    .map(|policy| policy.deployment_id.clone())
                    .collect();
                granted.sort();
                granted.dedup();
                ListScope::Deployments(granted)
            }
        })
    }

    /// Admin and viewer read every deployment; a job's own token does not.
    pub fn may_read_all(&self, caller: &ApiCaller) -> Result<(), Denied> {
        match caller {
            ApiCaller::Admin | ApiCaller::Viewer => Ok(()),
            _ => Err(self.refuse(
                Refusal::ApiReadOnly,
                Denied::Forbidden("only the admin and viewer tokens list deployments"),
            )),
        }
    }

    /// Only the admin acts (cancel); a reader asking to is refused with 403.
    pub fn may_act(&self, caller: &ApiCaller) -> Result<(), Denied> {
        match caller {
            ApiCaller::Admin => Ok(()),
            _ => Err(self.refuse(
                Refusal::ApiReadOnly,
                Denied::Forbidden("this token reads jobs and acts on nothing"),
            )),
        }
    }

    /// Whether an OIDC token's policies grant a deployment of the job's inventory.
    async fn oidc_reaches(&self, token: &VerifiedToken, job: &Job) -> Result<bool, Denied> {
        let policies = self.policies.current();
        for policy in policies.oidc_matches(&token.issuer, &token.claims) {
            if let Some(app) = self.store.app(&policy.deployment_id).await? {
                if app.inventory == job.inventory {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    fn refuse(&self, reason: Refusal, denied: Denied) -> Denied {
        self.metrics.refuse(reason);
        denied
    }

    /// The job `asked` if `reader` may read it.
    pub async fn read(&self, reader: Reader, asked: Option<&str>) -> Result<Job, Denied> {
        match reader {
            Reader::Secret {
                deployment_id: Some(deployment_id),
                secret: Some(secret),
            } => self.read_with_secret(&deployment_id, &secret, asked).await,
            Reader::Secret { .. } => Err(self.refuse(Refusal::SecretMissing, Denied::AppNotFound)),
            Reader::Bearer(token) if self.oidc.claims_known_issuer(&token) => {
                let token = verify_oidc(&self.oidc, &self.metrics, &token).await?;
                self.read_with_oidc(&token, asked).await
            }
            Reader::Bearer(token) => self.read_with_status_token(&token, asked).await,
        }
    }

    /// One store round trip: the status-polling hot path.
    async fn read_with_secret(
        &self,
        deployment_id: &str,
        secret: &str,
        asked: Option<&str>,
    ) -> Result<Job, Denied> {
        let (app, job) = self
            .store
            .app_and_job(deployment_id, asked.unwrap_or_default())
            .await?;
        let Some(app) = apps::authenticate(app, secret) else {
            return Err(self.refuse(Refusal::SecretInvalid, Denied::AppNotFound));
        };
        // Apps sharing an inventory share its jobs (a joined job is theirs too).
        job.filter(|job| job.inventory == app.inventory)
            .ok_or(Denied::JobNotFound)
    }

    /// A status token reads only the job it was issued for.
    async fn read_with_status_token(
        &self,
        token: &str,
        asked: Option<&str>,
    ) -> Result<Job, Denied> {
        let token_job = self
            .tokens
            .verify(TokenKind::Status, token)
            .map_err(|error| {
                self.refuse(
                    Refusal::StatusTokenInvalid,
                    Denied::Unauthenticated(match error {
                        TokenError::Expired => "status token expired",
                        TokenError::Invalid => "invalid status token",
                    }),
                )
            })?;
        if asked.is_some_and(|asked| asked != token_job) {
            return Err(Denied::JobNotFound);
        }
        self.store.job(&token_job).await?.ok_or(Denied::JobNotFound)
    }

    /// An OIDC token reads the jobs of the inventories its policies grant;
    /// it may read repeatedly (its `jti` is spent only by starting a job).
    async fn read_with_oidc(
        &self,
        token: &VerifiedToken,
        asked: Option<&str>,
    ) -> Result<Job, Denied> {
        let job = self
            .store
            .job(asked.unwrap_or_default())
            .await?
            .ok_or(Denied::JobNotFound)?;
        if self.oidc_reaches(token, &job).await? {
            Ok(job)
        } else {
            Err(Denied::JobNotFound)
        }
    }

    /// Verifies a program's callback token (before its body is read).
    pub fn callback(&self, token: Option<&str>) -> Result<CallbackCaller, Denied> {
        let Some(token) = token else {
            return Err(self.refuse(
                Refusal::CallbackTokenMissing,
                Denied::Unauthenticated("missing callback token"),
            ));
        };
        match self.tokens.verify(TokenKind::Callback, token) {
            Ok(job_id) => Ok(CallbackCaller { job_id }),
            Err(TokenError::Expired) => Err(self.refuse(
                Refusal::CallbackTokenExpired,
                Denied::Unauthenticated("callback token expired"),
            )),
            Err(TokenError::Invalid) => Err(self.refuse(
                Refusal::CallbackTokenInvalid,
                Denied::Unauthenticated("invalid callback token"),
            )),
        }
    }

    /// A callback token reports on its own job only.
    pub fn may_report(&self, caller: &CallbackCaller, job_id: &str) -> Result<(), Denied> {
        if caller.job_id == job_id {
            Ok(())
        } else {
            Err(self.refuse(
                Refusal::CallbackTokenOtherJob,
                Denied::Forbidden("callback token is for another job"),
            ))
        }
    }

    /// Whether a bearer token is `CD_ADMIN_TOKEN` (compared in constant time).
    pub fn admin(&self, token: Option<&str>) -> Result<(), Denied> {
        let Some(expected) = self.admin_token.as_deref() else {
            return Err(self.refuse(
                Refusal::AdminDisabled,
                Denied::Forbidden("admin endpoints are disabled (CD_ADMIN_TOKEN is unset)"),
            ));
        };
        match token {
            Some(token) if bearer_matches(token, expected.expose_secret()) => Ok(()),
            Some(_) => Err(self.refuse(
                Refusal::AdminTokenInvalid,
                Denied::Unauthenticated("invalid admin token"),
            )),
            None => Err(self.refuse(
                Refusal::AdminTokenMissing,
                Denied::Unauthenticated("missing admin bearer token"),
            )),
        }
    }
}

/// Verifies an OIDC job token; a refusal is counted and names the check.
pub async fn verify_oidc(
    oidc: &OidcVerifier,
    metrics: &Metrics,
    token: &str,
) -> Result<VerifiedToken, Denied> {
    oidc.verify(token).await.map_err(|error| {
        metrics.refuse(Refusal::Oidc(error.check()));
        tracing::info!(check = error.check(), "OIDC token refused");
        Denied::TokenRefused(format!("OIDC token refused: {error}"))
    })
}
