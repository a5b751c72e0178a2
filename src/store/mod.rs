//! Where apps, jobs, locks and the signing key live. One trait, one file per
//! backend; every guarantee (atomic app replacement, one lock per inventory,
//! at most one queued job, first final write wins) is the backend's to keep.

pub mod redis;

use async_trait::async_trait;

use crate::auth::SecretDigest;
use crate::config::OnBusy;
use crate::jobs::{Job, JobStatus, NewJob};
use crate::launch::LaunchRecord;

pub use self::redis::RedisStore;

/// One deployable app; the secret is only ever held as a digest.
#[derive(Clone, Debug, PartialEq)]
pub struct AppRecord {
    pub deployment_id: String,
    pub inventory: String,
    pub secret: Option<SecretDigest>,
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

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store holds an unreadable record: {0}")]
    Corrupt(String),
}

/// Truncation marker put in front of output whose oldest bytes were dropped.
pub const TRUNCATION_MARKER: &str = "[enac-cd: older output truncated]\n";

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
    /// Promotes the inventory's queued job when its lock is free (after a
    /// crash let the lock lapse).
    async fn promote_queued(&self, inventory: &str) -> Result<Option<Job>, StoreError>;
    /// Marks the job as being launched by `claimant`; false if another did first.
    async fn claim_launch(&self, job_id: &str, claimant: &str) -> Result<bool, StoreError>;
    async fn record_launch(&self, job_id: &str, record: &LaunchRecord) -> Result<(), StoreError>;
    /// Every job not yet final.
    async fn open_jobs(&self) -> Result<Vec<Job>, StoreError>;
    /// `(created_at, status)` of every job created at or after `since_ms`.
    async fn jobs_since(&self, since_ms: i64) -> Result<Vec<(i64, JobStatus)>, StoreError>;

    /// Stores `proposed` as the signing key unless one exists; returns the kept key.
    async fn signing_key(&self, proposed: &str) -> Result<String, StoreError>;
}
