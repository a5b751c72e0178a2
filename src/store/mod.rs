//! Where apps, jobs, locks and the signing key live. One trait, one file per
//! backend; every guarantee (atomic app replacement, one lock per inventory,
//! at most one queued job, first final write wins) is the backend's to keep.

pub mod embedded;
mod output;
pub mod redis;
mod redis_address;
mod redis_feed;

use async_trait::async_trait;

use crate::auth::SecretDigest;
use crate::domain::{Job, JobStatus, LaunchData, Lifetimes, NewJob, OnBusy, Report};

pub use self::embedded::EmbeddedStore;
pub(crate) use self::output::apply_output;
pub use self::output::{output_since, JobChange, JobSignal, OutputSince, TRUNCATION_MARKER};
pub use self::redis::RedisStore;
pub use self::redis_address::RedisAddress;

/// One deployable app; the secret is only ever held as a digest.
#[derive(Clone, Debug, PartialEq)]
pub struct AppRecord {
    pub deployment_id: String,
    pub inventory: String,
    pub secret: Option<SecretDigest>,
}

/// A status-page session as the store keeps it, under a digest of the
/// cookie's id (the store never holds an id a cookie could replay).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionRecord {
    /// Whose token opened it: `admin` or `viewer`.
    pub role: String,
    /// The token every form POST of the session must carry.
    pub csrf: String,
}

/// Limits the store applies to every job.
#[derive(Clone, Copy, Debug)]
pub struct JobLimits {
    /// Lock expiry: above the job timeout, so only a crash lets it lapse.
    pub lock_ttl_ms: i64,
    /// How long a finished job is kept.
    pub job_ttl_ms: i64,
    /// How long an open job may live at most before the store forgets it.
    pub open_ttl_ms: i64,
    pub max_output: usize,
}

impl JobLimits {
    pub fn new(lifetimes: Lifetimes, max_output: usize) -> JobLimits {
        let ms = |duration: std::time::Duration| duration.as_millis().min(i64::MAX as u128) as i64;
        JobLimits {
            lock_ttl_ms: ms(lifetimes.lock()),
            job_ttl_ms: ms(lifetimes.job_ttl),
            open_ttl_ms: ms(lifetimes.open_job()),
            max_output,
        }
    }
}

/// What happened to a start request.
#[derive(Clone, Debug)]
pub enum StartOutcome {
    /// The lock was free: the new job holds it and is `starting`.
    Started(Job),
    /// The inventory is busy: the new job waits as the inventory's one queued job.
    Queued(Job),
    /// The inventory is busy: the caller is given this existing job.
    Joined(Job),
    /// The inventory is busy and the caller asked to be refused.
    Busy,
}

/// A change of output carried by a status update.
#[derive(Clone, Debug)]
pub enum OutputChange {
    Replace(String),
    Append(String),
}

#[derive(Clone, Debug)]
pub struct JobUpdate {
    pub status: JobStatus,
    pub output: Option<OutputChange>,
    /// The program's exit code, kept when the update makes the job final.
    pub exit_code: Option<i32>,
    /// Who cancelled the job, kept when the update makes it final.
    pub cancelled_by: Option<String>,
}

/// What asking to cancel a job found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelRequest {
    NotFound,
    /// Already ended: nothing to cancel.
    Final(JobStatus),
    /// Marked; the job was in this status.
    Requested(JobStatus),
}

#[derive(Clone, Debug, PartialEq)]
pub enum UpdateOutcome {
    /// Saved; when the job became final and a queued job took the lock, that
    /// job is returned to be launched.
    Applied {
        promoted: Option<Box<Job>>,
    },
    NotFound,
    /// The job's current status does not allow the change (final, or e.g.
    /// `running` asked of a queued job).
    Refused {
        current: JobStatus,
    },
}

/// Changes a slow reader of [`Store::job_signals`] may fall behind by
/// before it is told it missed some.
pub(crate) const SIGNAL_BACKLOG: usize = 1024;

/// Most jobs one history page holds (contract §10: `limit` at most 500).
pub const MAX_PAGE: usize = 500;

/// A position in the job history: the id of the last job of the previous
/// page. Job ids are ULIDs, so id order is creation order; a page holds the
/// jobs strictly older than the cursor, whether or not the job it names
/// still exists (an expired or never-stored id is still a position).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobCursor(String);

/// A cursor that is not a job id (a ULID), refused before any store access.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cursor is not a job id")]
pub struct BadCursor;

impl JobCursor {
    /// Reads a cursor given by a caller; the canonical (upper-case) ULID is
    /// kept, so a lower-case spelling pages from the same position.
    pub fn parse(text: &str) -> Result<JobCursor, BadCursor> {
        ulid::Ulid::from_string(text)
            .map(|id| JobCursor(id.to_string()))
            .map_err(|_| BadCursor)
    }

    /// The cursor after `job_id`, as the store hands it out.
    pub(crate) fn after(job_id: &str) -> JobCursor {
        JobCursor(job_id.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for JobCursor {
    type Err = BadCursor;

    fn from_str(text: &str) -> Result<JobCursor, BadCursor> {
        JobCursor::parse(text)
    }
}

impl std::fmt::Display for JobCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which jobs of the history to list, newest first.
#[derive(Clone, Debug, Default)]
pub struct JobQuery {
    /// Only this deployment's jobs; `None` for every deployment.
    pub deployment_id: Option<String>,
    /// Jobs in any of these statuses; empty for every status.
    pub statuses: Vec<JobStatus>,
    /// Page size; the store keeps it within `1..=MAX_PAGE` as well.
    pub limit: usize,
    /// Only jobs older than this position (exclusive); `None` from the newest.
    pub before: Option<JobCursor>,
    /// Whether listed jobs carry their output. Without it every `output` is
    /// empty and the store does not read outputs at all: a page may hold
    /// hundreds of jobs of up to `CD_MAX_OUTPUT` each, which a list never shows.
    pub with_output: bool,
}

impl JobQuery {
    pub(crate) fn page_size(&self) -> usize {
        self.limit.clamp(1, MAX_PAGE)
    }

    /// The statuses to read, each once, in the order jobs move through them;
    /// every status when none is asked for.
    pub(crate) fn wanted_statuses(&self) -> Vec<JobStatus> {
        JobStatus::ALL
            .into_iter()
            .filter(|status| self.statuses.is_empty() || self.statuses.contains(status))
            .collect()
    }

    pub(crate) fn matches(&self, job: &Job) -> bool {
        (self.statuses.is_empty() || self.statuses.contains(&job.status))
            && self
                .deployment_id
                .as_ref()
                .is_none_or(|deployment| *deployment == job.deployment_id)
    }
}

/// One page of the job history.
#[derive(Clone, Debug, PartialEq)]
pub struct JobPage {
    /// Newest first.
    pub jobs: Vec<Job>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<JobCursor>,
}

impl JobPage {
    /// Cuts `found` (up to one job more than a page, newest first) to `limit`;
    /// the extra job, when there is one, proves a next page exists.
    pub(crate) fn of(mut found: Vec<Job>, limit: usize) -> JobPage {
        if found.len() <= limit {
            return JobPage {
                jobs: found,
                next: None,
            };
        }
        found.truncate(limit);
        let next = found.last().map(|job| JobCursor::after(&job.id));
        JobPage { jobs: found, next }
    }
}

/// Merges the newest ids of several history indexes, each read newest first
/// and cut at `batch` entries: the ids (each once, newest first) whose order
/// is known for sure, at most `take` of them, and whether older ids may
/// follow. Below the oldest id of an index that filled its batch, another
/// index's ids may be missing, so the merge stops there.
pub(crate) fn merge_newest(
    lists: Vec<Vec<String>>,
    batch: usize,
    take: usize,
) -> (Vec<String>, bool) {
    let frontier = lists
        .iter()
        .filter(|list| list.len() >= batch)
        .filter_map(|list| list.last())
        .max()
        .cloned();
    let mut ids: Vec<String> = lists.into_iter().flatten().collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.dedup();
    if let Some(frontier) = &frontier {
        ids.retain(|id| id >= frontier);
    }
    let more = frontier.is_some() || ids.len() > take;
    ids.truncate(take);
    (ids, more)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("{0} is in use by another enac-cd (its store file is locked)")]
    Locked(String),
    #[error("store holds an unreadable record: {0}")]
    Corrupt(String),
}

/// How an app is kept by every backend: never the secret, only its digest.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredApp {
    inventory: String,
    secret_sha256: Option<String>,
}

impl StoredApp {
    pub(crate) fn of(app: &AppRecord) -> StoredApp {
        StoredApp {
            inventory: app.inventory.clone(),
            secret_sha256: app.secret.map(SecretDigest::to_hex),
        }
    }

    pub(crate) fn to_json(&self) -> Result<String, StoreError> {
        serde_json::to_string(self).map_err(|error| StoreError::Corrupt(error.to_string()))
    }
}

pub(crate) fn parse_app(deployment_id: &str, raw: &str) -> Result<AppRecord, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("app {deployment_id}"));
    let stored: StoredApp = serde_json::from_str(raw).map_err(|_| corrupt())?;
    let secret = match stored.secret_sha256 {
        Some(hex) => Some(SecretDigest::from_hex(&hex).ok_or_else(corrupt)?),
        None => None,
    };
    Ok(AppRecord {
        deployment_id: deployment_id.to_owned(),
        inventory: stored.inventory,
        secret,
    })
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn ping(&self) -> Result<(), StoreError>;

    /// Replaces the whole app set in one atomic step.
    async fn replace_apps(&self, apps: &[AppRecord]) -> Result<(), StoreError>;
    async fn apps(&self) -> Result<Vec<AppRecord>, StoreError>;
    async fn app(&self, deployment_id: &str) -> Result<Option<AppRecord>, StoreError>;
    /// The status-polling hot path: an app and a job in one round trip.
    async fn app_and_job(
        &self,
        deployment_id: &str,
        job_id: &str,
    ) -> Result<(Option<AppRecord>, Option<Job>), StoreError>;
    async fn job(&self, job_id: &str) -> Result<Option<Job>, StoreError>;
    /// The job without its output (empty): cheap enough to ask every second.
    async fn job_summary(&self, job_id: &str) -> Result<Option<Job>, StoreError>;

    /// Takes the inventory lock for `job`, or applies `on_busy`, atomically.
    async fn start_job(&self, job: &NewJob, on_busy: OnBusy) -> Result<StartOutcome, StoreError>;
    /// Applies a status change allowed by [`JobStatus::can_become`]; a final
    /// status also releases the lock (only if this job owns it) and promotes
    /// the inventory's queued job, in the same atomic step.
    async fn update_job(
        &self,
        job_id: &str,
        update: &JobUpdate,
    ) -> Result<UpdateOutcome, StoreError>;
    /// Appends to an open job's output (progress followed from a running
    /// program), and with `launch` replaces the launch record in the same
    /// step (how far the output was followed); false, and nothing changed,
    /// for a final or unknown job.
    async fn append_output(
        &self,
        job_id: &str,
        text: &str,
        launch: Option<&LaunchData>,
    ) -> Result<bool, StoreError>;
    /// Promotes the inventory's queued job when its lock is free (after a
    /// crash let the lock lapse).
    async fn promote_queued(&self, inventory: &str) -> Result<Option<Job>, StoreError>;
    /// Every saved change of a job's status or output, from whichever
    /// instance made it, as soon as the store has it; each reader gets all.
    fn job_signals(&self) -> tokio::sync::broadcast::Receiver<JobSignal>;
    /// Marks the job as being launched by `claimant`; false if another did first.
    async fn claim_launch(&self, job_id: &str, claimant: &str) -> Result<bool, StoreError>;
    async fn record_launch(&self, job_id: &str, record: &LaunchData) -> Result<(), StoreError>;
    /// Marks an open job as asked to stop by `by`, atomically against its
    /// ending; the job's watcher, on whichever instance, stops the program.
    async fn request_cancel(&self, job_id: &str, by: &str) -> Result<CancelRequest, StoreError>;
    /// Every job not yet final.
    async fn open_jobs(&self) -> Result<Vec<Job>, StoreError>;
    /// `(created_at, status)` of every job created at or after `since_ms`.
    async fn jobs_since(&self, since_ms: i64) -> Result<Vec<(i64, JobStatus)>, StoreError>;

    /// A page of the job history, newest first (see [`JobQuery`]). Paging
    /// with [`JobPage::next`] never repeats a job, and skips none that
    /// matched the query all along, however many jobs start meanwhile.
    async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage, StoreError>;
    /// The newest job of each deployment (`None` for one without a kept
    /// job), in the order asked, without output: the deployments page.
    async fn last_jobs(&self, deployment_ids: &[String]) -> Result<Vec<Option<Job>>, StoreError>;
    /// Forgets the history entries of jobs that expired; returns how many
    /// jobs it forgot. Listing already skips them: this keeps the indexes
    /// from growing (run by the sweep).
    async fn trim_history(&self) -> Result<usize, StoreError>;

    /// Remembers `keys` for `ttl_ms` (webhook deliveries seen, OIDC token ids
    /// used): true if none was remembered yet; false, and nothing changed,
    /// if any still is.
    async fn remember(&self, keys: &[&str], ttl_ms: i64) -> Result<bool, StoreError>;
    /// Forgets keys this caller remembered, so that a request whose job did
    /// not start (ignored, refused as busy, failed) may come again.
    async fn forget(&self, keys: &[&str]) -> Result<(), StoreError>;

    /// Claims, for `lease_ms`, up to `max` jobs whose reports are due (the
    /// outbox): entries another claimant holds are skipped, and a claim this
    /// claimant left (a restart) is taken again. Jobs come without output.
    async fn claim_reports(
        &self,
        claimant: &str,
        lease_ms: i64,
        max: usize,
    ) -> Result<Vec<Job>, StoreError>;
    /// Saves how a claimed job's reports got on and gives up the claim:
    /// the outbox entry is due again at `next_due`, or dropped when `None`,
    /// unless the job's status moved on from `seen` meanwhile (then it is
    /// due at once). Nothing is saved when the claim was lost to another
    /// claimant; false then.
    async fn finish_reports(
        &self,
        job_id: &str,
        claimant: &str,
        seen: JobStatus,
        reports: &[Report],
        next_due: Option<i64>,
    ) -> Result<bool, StoreError>;

    /// Keeps a status-page session under `key` for `ttl_ms`.
    async fn save_session(
        &self,
        key: &str,
        session: &SessionRecord,
        ttl_ms: i64,
    ) -> Result<(), StoreError>;
    /// The session under `key`, unless it expired or was ended.
    async fn session(&self, key: &str) -> Result<Option<SessionRecord>, StoreError>;
    /// Ends the session under `key` (a logout): it is gone for every replica.
    async fn end_session(&self, key: &str) -> Result<(), StoreError>;

    /// Renews `instance`'s lease for `ttl_ms`.
    async fn heartbeat(&self, instance: &str, ttl_ms: i64) -> Result<(), StoreError>;
    /// Gives up `instance`'s lease (a graceful stop).
    async fn retire(&self, instance: &str) -> Result<(), StoreError>;
    /// The instances whose lease holds.
    async fn live_instances(&self) -> Result<Vec<String>, StoreError>;
    /// Moves an open job's launch claim from `from` to `to`, atomically;
    /// false, and nothing changed, if the claim is no longer `from` (another
    /// instance took it first) or the job is final or unknown.
    async fn take_over(&self, job_id: &str, from: &str, to: &str) -> Result<bool, StoreError>;

    /// Stores `proposed` as the signing key unless one exists; returns the kept key.
    async fn signing_key(&self, proposed: &str) -> Result<String, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| (*id).to_owned()).collect()
    }

    #[test]
    fn a_merge_stops_where_a_full_index_may_hide_older_ids() {
        // The first index filled its batch of 2: below "08" it may hold ids
        // newer than "05", so only "09" and "08" are known to come first.
        let (ids, more) = merge_newest(vec![list(&["09", "08"]), list(&["07", "05"])], 2, 10);
        assert_eq!(ids, list(&["09", "08"]));
        assert!(more);
    }

    #[test]
    fn a_merge_of_exhausted_indexes_takes_everything_once() {
        let (ids, more) = merge_newest(vec![list(&["09", "03"]), list(&["09", "05"])], 3, 10);
        assert_eq!(ids, list(&["09", "05", "03"]));
        assert!(!more);
        let (ids, more) = merge_newest(vec![list(&["09", "03"]), list(&["05"])], 3, 2);
        assert_eq!(ids, list(&["09", "05"]));
        assert!(more, "one id was left for the next round");
        assert_eq!(merge_newest(vec![vec![], vec![]], 3, 2), (vec![], false));
    }

    #[test]
    fn cursors_are_canonical_job_ids() {
        let id = ulid::Ulid::new().to_string();
        let lower = JobCursor::parse(&id.to_lowercase()).expect("a lower-case ULID");
        assert_eq!(lower.as_str(), id);
        assert_eq!(JobCursor::parse("x"), Err(BadCursor));
    }

    #[test]
    fn a_page_of_one_job_too_many_has_a_next_cursor() {
        let job = |id: &str| {
            crate::domain::NewJob {
                id: id.to_owned(),
                deployment_id: "app".to_owned(),
                inventory: "inv".to_owned(),
                trigger: crate::domain::Trigger::of_kind(crate::domain::TriggerKind::Secret),
                created_at: 0,
                reports: Vec::new(),
            }
            .into_job(JobStatus::Queued)
        };
        let page = JobPage::of(vec![job("3"), job("2"), job("1")], 2);
        assert_eq!(page.jobs.len(), 2);
        assert_eq!(page.next, Some(JobCursor::after("2")));
        assert_eq!(JobPage::of(vec![job("3"), job("2")], 2).next, None);
    }
}
