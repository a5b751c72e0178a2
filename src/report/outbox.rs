//! The outbox deliverer. The store puts a job in the outbox in the step
//! that raises one of its events (it starts running, it ends); each
//! instance claims due jobs for a lease, delivers what each target lacks in
//! order, and saves how far each got. A failure is tried again with an
//! exponential, jittered pause for up to 24 h; a claim left by a dead
//! replica lapses to another. Nothing here touches the job's status: a
//! report never delays, fails or changes a job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{notify, DeliveryError, Github, Gitlab, GitlabState, Notification, OutboundClient};
use crate::domain::{next_due, now_ms, Job, Report, ReportEvent, ReportState, ReportTarget};
use crate::http::{ApiJob, Background};
use crate::metrics::{Metrics, ReportLabels, ReportResult};
use crate::policy::{Policies, ReportPolicy};
use crate::store::Store;

/// How often the outbox is looked at.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// How long a claim holds. Every look renews the claims of deliveries under
/// way, so only a dead instance's claims lapse, to another, after this.
const LEASE: Duration = Duration::from_secs(60);
/// Jobs delivered at once by one instance: a target that hangs holds a
/// slot for up to `CD_REPORT_TIMEOUT` per request, so there are many.
const AT_ONCE: usize = 64;
/// Failures of one target stop being retried after this long.
const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// The longest pause between two tries.
const LONGEST_PAUSE: Duration = Duration::from_secs(3600);

fn millis(duration: Duration) -> i64 {
    duration.as_millis().min(i64::MAX as u128) as i64
}

/// What the deliverer needs besides the store.
pub struct ReporterConfig {
    /// `CD_PUBLIC_URL`: links point at `/ui/jobs/{id}` under it.
    pub public_url: String,
    /// This instance's name, as its claims carry it.
    pub instance: String,
    /// The first pause after a failure (`CD_REPORT_RETRY`).
    pub retry: Duration,
}

/// Why one delivery failed.
enum Failure {
    /// Worth another try later (an answer other than 2xx, no answer).
    Transient(DeliveryError),
    /// No try can succeed: the policy no longer names the target.
    Permanent(DeliveryError),
}

pub struct Reporter {
    store: Arc<dyn Store>,
    policies: Policies,
    client: Arc<OutboundClient>,
    github: Github,
    gitlab: Gitlab,
    metrics: Metrics,
    config: ReporterConfig,
    /// Jobs being delivered here, as claimed, so that a claim renewed
    /// meanwhile is not delivered twice at once, and a stop gives them back.
    in_flight: Mutex<HashMap<String, Job>>,
}

impl Reporter {
    pub fn new(
        store: Arc<dyn Store>,
        policies: Policies,
        (client, github, gitlab): (Arc<OutboundClient>, Github, Gitlab),
        metrics: Metrics,
        config: ReporterConfig,
    ) -> Arc<Reporter> {
        Arc::new(Reporter {
            store,
            policies,
            client,
            github,
            gitlab,
            metrics,
            config,
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    /// Delivers in the background until the service stops. Deliveries
    /// under way are then dropped and their claims given back, due at once
    /// for whichever instance comes next: at least once, never lost.
    pub fn spawn(self: &Arc<Self>, background: &Background) {
        let stop = background.stop.clone();
        background.tasks.spawn(Arc::clone(self).run(stop));
    }

    async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut deliveries = JoinSet::new();
        let mut store_down = false;
        // The last look filled every free slot: more may be due at once.
        let mut backlog = false;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = next_look(&mut deliveries, backlog) => {}
            }
            while deliveries.try_join_next().is_some() {}
            let room = AT_ONCE.saturating_sub(deliveries.len());
            // Our own claims under way come back too (they renew): ask for
            // that many more, so that they take no room from new ones. Each
            // is skipped even if its delivery ends while the claim runs:
            // the job read with it may predate what that delivery saved.
            let busy: Vec<String> = self.in_flight().keys().cloned().collect();
            let ask = room + busy.len();
            let claimed = self
                .store
                .claim_reports(&self.config.instance, millis(LEASE), ask)
                .await;
            let jobs = match claimed {
                Ok(jobs) => jobs,
                Err(error) => {
                    if !store_down {
                        warn!(%error, "cannot read the report outbox; trying again");
                        store_down = true;
                    }
                    backlog = false;
                    continue;
                }
            };
            store_down = false;
            let mut started = 0;
            for job in jobs {
                let fresh = !busy.contains(&job.id) && !self.in_flight().contains_key(&job.id);
                if fresh && started < room {
                    self.in_flight().insert(job.id.clone(), job.clone());
                    deliveries.spawn(Arc::clone(&self).deliver(job));
                    started += 1;
                }
            }
            backlog = started == room;
        }
        deliveries.shutdown().await;
        self.give_back().await;
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<String, Job>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives the claims of interrupted deliveries back as they were claimed:
    /// what they sent meanwhile is sent again.
    async fn give_back(&self) {
        let interrupted: Vec<Job> = self.in_flight().drain().map(|(_, job)| job).collect();
        for job in interrupted {
            let given = self
                .store
                .finish_reports(
                    &job.id,
                    &self.config.instance,
                    job.status,
                    &job.reports,
                    Some(now_ms()),
                )
                .await;
            if let Err(error) = given {
                warn!(job_id = %job.id, %error, "cannot give a report claim back; it lapses");
            }
        }
    }

    /// Delivers what each target of `job` lacks (targets side by side, each
    /// one's events in order), then saves their progress.
    async fn deliver(self: Arc<Self>, job: Job) {
        let now = now_ms();
        let mut reports = job.reports.clone();
        futures::future::join_all(
            reports
                .iter_mut()
                .map(|report| self.deliver_target(&job, report, now)),
        )
        .await;
        let mut progress = job.clone();
        progress.reports = reports;
        let due = next_due(&progress, now_ms());
        let mut pause = Duration::from_millis(250);
        for _ in 0..5 {
            let saved = self
                .store
                .finish_reports(
                    &job.id,
                    &self.config.instance,
                    job.status,
                    &progress.reports,
                    due,
                )
                .await;
            match saved {
                Ok(true) => break,
                Ok(false) => {
                    info!(job_id = %job.id, "report claim lapsed to another instance");
                    break;
                }
                // The claim lapses and the deliveries are made again.
                Err(error) => warn!(job_id = %job.id, %error, "cannot save report progress"),
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
        self.in_flight().remove(&job.id);
    }

    async fn deliver_target(&self, job: &Job, report: &mut Report, now: i64) {
        if report.retry_at.is_some_and(|at| at > now) {
            return;
        }
        for event in report.due(job) {
            let kind = report.target.kind();
            let result = match self.send(job, report, event).await {
                Ok(()) => {
                    report.delivered(event);
                    ReportResult::Delivered
                }
                Err(Failure::Permanent(error)) => {
                    report.abandon(error.0);
                    ReportResult::GaveUp
                }
                Err(Failure::Transient(error)) => {
                    let pause = backoff(self.config.retry, report.failures.saturating_add(1));
                    report.failed(error.0, now_ms(), pause, millis(GIVE_UP_AFTER));
                    if report.state == ReportState::Failed {
                        ReportResult::GaveUp
                    } else {
                        ReportResult::Failed
                    }
                }
            };
            self.metrics
                .report_deliveries
                .get_or_create(&ReportLabels {
                    target: kind,
                    result,
                })
                .inc();
            if result != ReportResult::Delivered {
                warn!(job_id = %job.id, target = %report.target.name(), event = event.as_str(),
                      error = report.last_error.as_deref().unwrap_or_default(),
                      "report not delivered");
                return;
            }
        }
    }

    async fn send(
        &self,
        job: &Job,
        report: &mut Report,
        event: ReportEvent,
    ) -> Result<(), Failure> {
        let policies = self.policies.current();
        let policy: Option<&ReportPolicy> = policies
            .for_deployment(&job.deployment_id)
            .map(|policy| &policy.report);
        let gone = DeliveryError(format!(
            "the policy of {} no longer reports to {}",
            job.deployment_id,
            report.target.name()
        ));
        let link = format!(
            "{}/ui/jobs/{}",
            self.config.public_url.trim_end_matches('/'),
            job.id
        );
        let description = describe(job, event);
        let sent = match &report.target {
            ReportTarget::Github {
                repository,
                sha,
                environment,
            } => {
                let auth = policy
                    .and_then(|policy| policy.github.as_ref())
                    .ok_or(Failure::Permanent(gone))?;
                let deployment = &mut report.github_deployment;
                self.github
                    .report(
                        auth,
                        repository,
                        sha,
                        environment,
                        deployment,
                        event,
                        &link,
                        &description,
                    )
                    .await
            }
            ReportTarget::Gitlab { project, sha } => {
                let token = policy
                    .and_then(|policy| policy.gitlab_token.as_ref())
                    .ok_or(Failure::Permanent(gone))?;
                let name = format!("enac-cd/{}", job.deployment_id);
                let state = gitlab_state(job, event);
                self.gitlab
                    .report(token, project, sha, &name, state, &link, &description)
                    .await
            }
            ReportTarget::Notify { index, host, .. } => {
                // The entry must still be the one the job was planned with.
                let rule = policy
                    .and_then(|policy| policy.notify.get(*index))
                    .filter(|rule| rule.host == *host)
                    .ok_or(Failure::Permanent(gone))?;
                let message = notification(job, event, &link);
                notify(&self.client, rule, &message).await
            }
        };
        sent.map_err(Failure::Transient)
    }
}

/// Waits until the outbox is worth another look: the poll interval; at
/// once after a look that found more due than it had room for; or, with
/// every slot taken, until a delivery ends (or the poll interval passes).
async fn next_look(deliveries: &mut JoinSet<()>, backlog: bool) {
    if backlog && deliveries.len() < AT_ONCE {
        return;
    }
    // Looked at least this often: a look renews the claims under way.
    tokio::select! {
        _ = deliveries.join_next(), if backlog && !deliveries.is_empty() => {}
        () = tokio::time::sleep(POLL_EVERY) => {}
    }
}

/// The pause before the next try after `failures` failures in a row:
/// doubling from `first` up to 1 h, each drawn between its half and its
/// whole, so that replicas and targets do not retry in step.
fn backoff(first: Duration, failures: u32) -> i64 {
    let doublings = failures.saturating_sub(1).min(30);
    let full = millis(first)
        .saturating_mul(1_i64 << doublings)
        .min(millis(LONGEST_PAUSE));
    full / 2 + (rand::random::<f64>() * (full / 2) as f64) as i64
}

fn gitlab_state(job: &Job, event: ReportEvent) -> GitlabState {
    match event {
        ReportEvent::Started => GitlabState::Running,
        ReportEvent::Success => GitlabState::Success,
        ReportEvent::Error if job.cancelled_by.is_some() => GitlabState::Canceled,
        ReportEvent::Error => GitlabState::Failed,
    }
}

/// One line for a forge: `enac-cd: app-one deployed`.
fn describe(job: &Job, event: ReportEvent) -> String {
    let what = match event {
        ReportEvent::Started => "deploying",
        ReportEvent::Success => "deployed",
        ReportEvent::Error => match &job.cancelled_by {
            Some(_) => "cancelled",
            None => "failed",
        },
    };
    format!("enac-cd: {} {what}", job.deployment_id)
}

/// The notification of `event`: Standard Webhooks JSON carrying the job as
/// the API shows it (without output), or a chat line.
fn notification(job: &Job, event: ReportEvent, link: &str) -> Notification {
    let data = serde_json::to_value(ApiJob::of(job.clone(), false)).unwrap_or_default();
    Notification {
        // Stable per job and event, so that a receiver can drop a repeat.
        webhook_id: format!("{}_{}", job.id, event.as_str()),
        event_type: format!("job.{}", event.as_str()),
        timestamp: now_ms() / 1000,
        data,
        text: chat_line(job, event, link),
    }
}

/// Slack's and Mattermost's markup: `&`, `<`, `>` escaped, `<url|label>`.
fn chat_line(job: &Job, event: ReportEvent, link: &str) -> String {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut cause = job.trigger.kind.as_str().to_owned();
    if let Some(repository) = &job.trigger.repository {
        cause.push(' ');
        cause.push_str(repository);
    }
    if let Some(sha) = &job.trigger.sha {
        cause.push('@');
        cause.extend(sha.chars().take(8));
    }
    if let Some(actor) = &job.trigger.actor {
        cause.push_str(" by ");
        cause.push_str(actor);
    }
    let status = match event {
        ReportEvent::Error if job.cancelled_by.is_some() => "cancelled",
        other => other.as_str(),
    };
    format!(
        "enac-cd: {} {status} ({}) <{}|job {}>",
        escape(&job.deployment_id),
        escape(&cause),
        link,
        job.id
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JobStatus, NewJob, Trigger, TriggerKind};

    fn job(status: JobStatus) -> Job {
        NewJob {
            id: "01JOB".into(),
            deployment_id: "app<one>".into(),
            inventory: "inv".into(),
            trigger: Trigger {
                repository: Some("epfl-enac/app".into()),
                sha: Some("0123456789abcdef".into()),
                actor: Some("alice".into()),
                ..Trigger::of_kind(TriggerKind::GithubWebhook)
            },
            created_at: 0,
            reports: Vec::new(),
        }
        .into_job(status)
    }

    #[test]
    fn pauses_double_with_jitter_up_to_an_hour() {
        let first = Duration::from_secs(10);
        for (failures, full) in [(1, 10_000), (2, 20_000), (4, 80_000), (40, 3_600_000)] {
            for _ in 0..50 {
                let pause = backoff(first, failures);
                assert!((full / 2..=full).contains(&pause), "{failures}: {pause}");
            }
        }
        let draws: std::collections::HashSet<i64> = (0..20).map(|_| backoff(first, 3)).collect();
        assert!(draws.len() > 1, "jittered");
    }

    #[test]
    fn a_chat_line_names_the_deployment_status_trigger_and_link() {
        let line = chat_line(
            &job(JobStatus::Success),
            ReportEvent::Success,
            "https://cd/ui/jobs/01JOB",
        );
        assert_eq!(
            line,
            "enac-cd: app&lt;one&gt; success (github-webhook epfl-enac/app@01234567 by alice) <https://cd/ui/jobs/01JOB|job 01JOB>"
        );
        let mut cancelled = job(JobStatus::Error);
        cancelled.cancelled_by = Some("admin".into());
        assert!(chat_line(&cancelled, ReportEvent::Error, "l").contains(" cancelled "));
        assert_eq!(
            gitlab_state(&cancelled, ReportEvent::Error),
            GitlabState::Canceled
        );
        assert_eq!(
            gitlab_state(&job(JobStatus::Error), ReportEvent::Error),
            GitlabState::Failed
        );
    }

    #[test]
    fn a_notification_is_stable_per_job_and_event_and_carries_the_api_job() {
        let message = notification(&job(JobStatus::Running), ReportEvent::Started, "l");
        assert_eq!(message.webhook_id, "01JOB_started");
        assert_eq!(message.event_type, "job.started");
        assert_eq!(message.data["job_id"], "01JOB");
        assert_eq!(message.data["status"], "running");
        assert!(
            message.data.get("output").is_none(),
            "no output in notifications"
        );
    }
}
