//! A deployment id and its secret (the seed's `/app-deploy/`).

use super::Ingress;
use crate::access::Denied;
use crate::apps;
use crate::domain::{Trigger, TriggerKind};
use crate::jobs::StartRequest;
use crate::metrics::Refusal;

impl Ingress {
    pub(super) async fn secret_request(
        &self,
        deployment_id: Option<String>,
        secret: Option<String>,
    ) -> Result<StartRequest, Denied> {
        let (Some(deployment_id), Some(secret)) = (deployment_id, secret) else {
            self.metrics.refuse(Refusal::SecretMissing);
            return Err(Denied::AppNotFound);
        };
        let app = self.store.app(&deployment_id).await?;
        let Some(app) = apps::authenticate(app, &secret) else {
            self.metrics.refuse(Refusal::SecretInvalid);
            return Err(Denied::AppNotFound);
        };
        // A deployment with a policy file is notified of secret jobs too.
        let policies = self.policies.current();
        let policy = policies.for_deployment(&app.deployment_id);
        Ok(super::start_request(
            app,
            Trigger::of_kind(TriggerKind::Secret),
            self.on_busy,
            policy,
        ))
    }
}
