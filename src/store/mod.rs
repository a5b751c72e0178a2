//! Where apps, jobs, locks and the signing key live. One trait, one file per
//! backend; every guarantee (atomic app replacement, one lock per inventory,
//! at most one queued job, first final write wins) is the backend's to keep.

pub mod embedded;
pub mod redis;
mod redis_address;

use async_trait::async_trait;

use crate::auth::SecretDigest;
use crate::domain::{Job, JobStatus, LaunchData, Lifetimes, NewJob, OnBusy};

pub use self::embedded::EmbeddedStore;
pub use self::redis::RedisStore;
pub use self::redis_address::RedisAddress;

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

/// Applies an output change, keeping at most `max` bytes: the newest bytes
/// win behind [`TRUNCATION_MARKER`]. (The Redis backend does the same in Lua.)
pub(crate) fn changed_output(current: &str, change: &OutputChange, max: usize) -> String {
    let output = match change {
        OutputChange::Replace(text) => text.clone(),
        OutputChange::Append(text) => format!("{current}{text}"),
    };
    if output.len() <= max {
        return output;
    }
    let mut start = output.len() - max.saturating_sub(TRUNCATION_MARKER.len());
    while !output.is_char_boundary(start) {
        start += 1;
    }
    format!("{TRUNCATION_MARKER}{}", &output[start..])
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
    /// Marks the job as being launched by `claimant`; false if another did first.
    async fn claim_launch(&self, job_id: &str, claimant: &str) -> Result<bool, StoreError>;
    async fn record_launch(&self, job_id: &str, record: &LaunchData) -> Result<(), StoreError>;
    /// Every job not yet final.
    async fn open_jobs(&self) -> Result<Vec<Job>, StoreError>;
    /// `(created_at, status)` of every job created at or after `since_ms`.
    async fn jobs_since(&self, since_ms: i64) -> Result<Vec<(i64, JobStatus)>, StoreError>;

    /// Remembers `keys` for `ttl_ms` (webhook deliveries seen, OIDC token ids
    /// used): true if none was remembered yet; false, and nothing changed,
    /// if any still is.
    async fn remember(&self, keys: &[&str], ttl_ms: i64) -> Result<bool, StoreError>;
    /// Forgets keys this caller remembered, so that a request whose job did
    /// not start (ignored, refused as busy, failed) may come again.
    async fn forget(&self, keys: &[&str]) -> Result<(), StoreError>;

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
