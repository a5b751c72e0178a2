//! Reports of a job to the places developers look (contract §12): GitHub
//! deployments, GitLab commit statuses, notification URLs. What a job owes
//! each target, and how far each target got, is kept on the job itself, so
//! that the store's outbox entry only says "this job has reports due".

use serde::{Deserialize, Serialize};

use super::{Job, JobStatus};

/// A moment of a job that targets hear about, in the order they happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportEvent {
    Started,
    Success,
    Error,
}

impl ReportEvent {
    pub const ALL: [ReportEvent; 3] = [
        ReportEvent::Started,
        ReportEvent::Success,
        ReportEvent::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReportEvent::Started => "started",
            ReportEvent::Success => "success",
            ReportEvent::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<ReportEvent> {
        ReportEvent::ALL
            .into_iter()
            .find(|event| event.as_str() == text)
    }

    /// The events a job in its current state has given rise to, in order:
    /// `started` once it ran (or began launching and then ended), then its
    /// final status. A queued job cancelled before its launch only ends.
    pub fn of_job(job: &Job) -> Vec<ReportEvent> {
        let mut events = Vec::with_capacity(2);
        let ran =
            job.status == JobStatus::Running || (job.status.is_final() && job.started_at.is_some());
        if ran {
            events.push(ReportEvent::Started);
        }
        match job.status {
            JobStatus::Success => events.push(ReportEvent::Success),
            JobStatus::Error => events.push(ReportEvent::Error),
            _ => {}
        }
        events
    }

    /// Whether a job becoming `status` gives rise to an event: the step
    /// that saves such a change also puts the job in the outbox.
    pub fn is_raised_by(status: JobStatus) -> bool {
        status == JobStatus::Running || status.is_final()
    }
}

/// Where a job is reported, fixed when the job is created. Secrets (tokens,
/// signing keys, notification URLs) are not kept here: they are read from
/// the deployment's policy when a report is delivered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ReportTarget {
    /// A deployment of `repository` (`owner/name`) at `sha`.
    Github {
        repository: String,
        sha: String,
        environment: String,
    },
    /// Commit statuses of `project` (its path, `group/name`) at `sha`.
    Gitlab { project: String, sha: String },
    /// The policy's `[[notify]]` entry at `index`; `host` names it.
    Notify {
        index: usize,
        host: String,
        events: Vec<ReportEvent>,
    },
}

impl ReportTarget {
    /// The target's kind, a fixed set (metrics labels).
    pub fn kind(&self) -> &'static str {
        match self {
            ReportTarget::Github { .. } => "github",
            ReportTarget::Gitlab { .. } => "gitlab",
            ReportTarget::Notify { .. } => "notify",
        }
    }

    /// How the API names it: `github`, `gitlab`, `notify:<host>`.
    pub fn name(&self) -> String {
        match self {
            ReportTarget::Notify { host, .. } => format!("notify:{host}"),
            other => other.kind().to_owned(),
        }
    }

    /// Whether the target hears about `event`: forges hear every event.
    pub fn wants(&self, event: ReportEvent) -> bool {
        match self {
            ReportTarget::Notify { events, .. } => events.contains(&event),
            _ => true,
        }
    }
}

/// Where a target's reports stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportState {
    /// An event is due and was not tried yet.
    Pending,
    /// The last try failed; it is tried again later.
    Retrying,
    /// Every event so far reached the target.
    Delivered,
    /// Given up: 24 h of failures, or the target cannot be reported to.
    Failed,
}

impl ReportState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportState::Pending => "pending",
            ReportState::Retrying => "retrying",
            ReportState::Delivered => "delivered",
            ReportState::Failed => "failed",
        }
    }
}

/// One target of a job and how far its reports got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub target: ReportTarget,
    /// As the last try left it; [`Report::state_for`] is what is shown.
    pub state: ReportState,
    /// Requests tried, successful or not.
    #[serde(default)]
    pub attempts: u32,
    /// Why the last try failed (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Events delivered, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent: Vec<ReportEvent>,
    /// Failed tries in a row: the backoff grows with them.
    #[serde(default)]
    pub failures: u32,
    /// When the first of those failures happened (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<i64>,
    /// Not before (Unix ms), after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<i64>,
    /// The GitHub deployment made for the job, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_deployment: Option<u64>,
}

impl Report {
    pub fn new(target: ReportTarget) -> Report {
        Report {
            target,
            state: ReportState::Pending,
            attempts: 0,
            last_error: None,
            sent: Vec::new(),
            failures: 0,
            failing_since: None,
            retry_at: None,
            github_deployment: None,
        }
    }

    /// A target that cannot be reported to (e.g. the trigger named no
    /// commit): shown as failed, never tried.
    pub fn unreachable(target: ReportTarget, reason: &str) -> Report {
        Report {
            state: ReportState::Failed,
            last_error: Some(reason.to_owned()),
            ..Report::new(target)
        }
    }

    /// The job's events this target wants and has not had yet, in order;
    /// none once it failed for good.
    pub fn due(&self, job: &Job) -> Vec<ReportEvent> {
        if self.state == ReportState::Failed {
            return Vec::new();
        }
        ReportEvent::of_job(job)
            .into_iter()
            .filter(|event| self.target.wants(*event) && !self.sent.contains(event))
            .collect()
    }

    /// Where the target stands for `job` as it is now: an event the job
    /// raised since the last try shows as `pending`, even though that try
    /// left the target `delivered`; `delivered` once something reached it,
    /// or the job ended owing it nothing (errors only, and it succeeded).
    pub fn state_for(&self, job: &Job) -> ReportState {
        if matches!(self.state, ReportState::Failed | ReportState::Retrying) {
            return self.state;
        }
        let owes_nothing = self.due(job).is_empty();
        if owes_nothing && (!self.sent.is_empty() || job.status.is_final()) {
            ReportState::Delivered
        } else {
            ReportState::Pending
        }
    }

    /// When this target should be tried next for `job`, if anything is due.
    pub fn next_attempt(&self, job: &Job, now: i64) -> Option<i64> {
        if self.due(job).is_empty() {
            return None;
        }
        Some(self.retry_at.unwrap_or(now))
    }

    /// Records a delivered event.
    pub fn delivered(&mut self, event: ReportEvent) {
        self.attempts = self.attempts.saturating_add(1);
        self.sent.push(event);
        self.state = ReportState::Delivered;
        self.last_error = None;
        self.failures = 0;
        self.failing_since = None;
        self.retry_at = None;
    }

    /// Records a failed try at `now`: retried after `pause`, unless the
    /// target has failed for `give_up` already.
    pub fn failed(&mut self, error: String, now: i64, pause: i64, give_up: i64) {
        self.attempts = self.attempts.saturating_add(1);
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some(error);
        let since = *self.failing_since.get_or_insert(now);
        if now.saturating_sub(since) >= give_up {
            self.state = ReportState::Failed;
            self.retry_at = None;
        } else {
            self.state = ReportState::Retrying;
            self.retry_at = Some(now.saturating_add(pause));
        }
    }

    /// Gives up at once: the target can no longer be reported to.
    pub fn abandon(&mut self, error: String) {
        self.state = ReportState::Failed;
        self.last_error = Some(error);
        self.retry_at = None;
    }
}

/// When a job's outbox entry is due next: the earliest target with
/// something due; `None` when nothing is.
pub fn next_due(job: &Job, now: i64) -> Option<i64> {
    job.reports
        .iter()
        .filter_map(|report| report.next_attempt(job, now))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{NewJob, Trigger, TriggerKind};

    fn job(status: JobStatus, started: bool) -> Job {
        let mut job = NewJob {
            id: "01J".into(),
            deployment_id: "app".into(),
            inventory: "inv".into(),
            trigger: Trigger::of_kind(TriggerKind::GithubWebhook),
            created_at: 1,
            reports: Vec::new(),
        }
        .into_job(status);
        job.started_at = started.then_some(2);
        job
    }

    fn notify(events: &[ReportEvent]) -> Report {
        Report::new(ReportTarget::Notify {
            index: 0,
            host: "hooks.example".into(),
            events: events.to_vec(),
        })
    }

    #[test]
    fn a_job_raises_started_then_its_end() {
        assert!(ReportEvent::of_job(&job(JobStatus::Queued, false)).is_empty());
        assert!(ReportEvent::of_job(&job(JobStatus::Starting, true)).is_empty());
        assert_eq!(
            ReportEvent::of_job(&job(JobStatus::Running, true)),
            [ReportEvent::Started]
        );
        assert_eq!(
            ReportEvent::of_job(&job(JobStatus::Success, true)),
            [ReportEvent::Started, ReportEvent::Success]
        );
        // A queued job cancelled before its launch never started.
        assert_eq!(
            ReportEvent::of_job(&job(JobStatus::Error, false)),
            [ReportEvent::Error]
        );
    }

    #[test]
    fn a_target_is_due_only_the_events_it_wants_and_lacks() {
        let ended = job(JobStatus::Error, true);
        let mut report = notify(&[ReportEvent::Started, ReportEvent::Error]);
        assert_eq!(
            report.due(&ended),
            [ReportEvent::Started, ReportEvent::Error]
        );
        report.delivered(ReportEvent::Started);
        assert_eq!(report.due(&ended), [ReportEvent::Error]);
        assert!(notify(&[ReportEvent::Success]).due(&ended).is_empty());
    }

    #[test]
    fn failures_back_off_then_give_up() {
        let running = job(JobStatus::Running, true);
        let mut report = notify(&ReportEvent::ALL);
        assert_eq!(next_due_of(&running, &report, 100), Some(100));
        report.failed("502".into(), 1_000, 10, 500);
        assert_eq!(report.state, ReportState::Retrying);
        assert_eq!(next_due_of(&running, &report, 1_001), Some(1_010));
        report.failed("502".into(), 1_499, 20, 500);
        assert_eq!(report.state, ReportState::Retrying);
        report.failed("502".into(), 1_500, 40, 500);
        assert_eq!(report.state, ReportState::Failed);
        assert_eq!((report.attempts, report.failures), (3, 3));
        assert_eq!(next_due_of(&running, &report, 2_000), None);
    }

    #[test]
    fn an_event_raised_since_the_last_try_shows_as_pending() {
        let mut report = notify(&[ReportEvent::Started, ReportEvent::Success]);
        assert_eq!(
            report.state_for(&job(JobStatus::Starting, true)),
            ReportState::Pending,
            "nothing sent yet"
        );
        assert_eq!(
            report.state_for(&job(JobStatus::Running, true)),
            ReportState::Pending
        );
        report.delivered(ReportEvent::Started);
        assert_eq!(
            report.state_for(&job(JobStatus::Running, true)),
            ReportState::Delivered
        );
        assert_eq!(
            report.state_for(&job(JobStatus::Success, true)),
            ReportState::Pending
        );
        report.failed("502".into(), 1_000, 10, 500);
        assert_eq!(
            report.state_for(&job(JobStatus::Success, true)),
            ReportState::Retrying
        );
        let errors_only = notify(&[ReportEvent::Error]);
        assert_eq!(
            errors_only.state_for(&job(JobStatus::Success, true)),
            ReportState::Delivered
        );
    }

    #[test]
    fn a_delivery_clears_the_failures() {
        let mut report = notify(&ReportEvent::ALL);
        report.failed("timed out".into(), 1_000, 10, 500);
        report.delivered(ReportEvent::Started);
        assert_eq!(report.state, ReportState::Delivered);
        assert_eq!((report.failures, report.failing_since), (0, None));
        assert_eq!(report.last_error, None);
        assert_eq!(report.attempts, 2);
    }

    fn next_due_of(job: &Job, report: &Report, now: i64) -> Option<i64> {
        let mut job = job.clone();
        job.reports = vec![report.clone()];
        next_due(&job, now)
    }
}
