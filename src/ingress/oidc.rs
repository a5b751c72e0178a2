//! An OIDC job token (GitHub Actions, GitLab CI `id_tokens`): verified, mapped
//! to a deployment by the policies, and spent (`jti`) once all else holds.

use super::Ingress;
use crate::access::{verify_oidc, Denied};
use crate::auth::oidc::OidcError;
use crate::domain::now_ms;
use crate::jobs::StartRequest;
use crate::metrics::Refusal;

impl Ingress {
    /// The deployment an OIDC token may start: named, or the only one its
    /// policies grant; and the key of its spent `jti`, to forget if the
    /// start then fails.
    pub(super) async fn oidc_request(
        &self,
        token: &str,
        named: Option<String>,
    ) -> Result<(StartRequest, String), Denied> {
        let token = verify_oidc(&self.oidc, &self.metrics, token).await?;
        let policies = self.policies.current();
        let granted = policies.oidc_matches(&token.issuer, &token.claims);
        let policy = match (&named, granted.as_slice()) {
            (Some(id), _) => granted
                .iter()
                .find(|policy| policy.deployment_id == *id)
                .copied(),
            (None, [only]) => Some(*only),
            (None, _) => None,
        };
        let Some(policy) = policy else {
            self.metrics.refuse(Refusal::OidcPolicy);
            tracing::info!(issuer = %token.issuer, subject = token.subject(), named = named.as_deref().unwrap_or(""),
                           granted = granted.len(), "OIDC token refused by policy");
            let reason = match (&named, granted.len()) {
                (Some(_), _) => "OIDC token refused: policy (no rule grants this deployment_id)",
                (None, 0) => "OIDC token refused: policy (no rule matches the token)",
                (None, _) => "OIDC token refused: policy (several deployments match; name one with deployment_id)",
            };
            return Err(Denied::TokenRefused(reason.into()));
        };
        let app = self
            .store
            .app(&policy.deployment_id)
            .await?
            .ok_or(Denied::AppNotFound)?;
        let Some(jti) = token.jti.clone() else {
            let missing = OidcError::MissingClaim("jti".into());
            self.metrics.refuse(Refusal::Oidc(missing.check()));
            return Err(Denied::TokenRefused(format!(
                "OIDC token refused: {missing}"
            )));
        };
        // Remembered as long as the token is accepted: leeway included, the
        // whole last second (expiry is checked in whole seconds), and one more
        // second for a token verified just before that second ended.
        let lifetime_ms = ((token.accepted_until + 2) * 1000 - now_ms()).max(1000);
        let jti_key = format!("oidc-jti:{}:{jti}", token.issuer);
        if !self.store.remember(&[&jti_key], lifetime_ms).await? {
            self.metrics.refuse(Refusal::OidcJtiReplayed);
            return Err(Denied::TokenRefused(
                "OIDC token refused: jti (token already used to start a job)".into(),
            ));
        }
        tracing::info!(issuer = %token.issuer, subject = token.subject(), deployment_id = %app.deployment_id,
                       "OIDC token accepted");
        let trigger = token.trigger().granted_by(&policy.file);
        let request = super::start_request(app, trigger, policy.on_busy, Some(policy));
        Ok((request, jti_key))
    }
}
