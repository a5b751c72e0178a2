//! How long jobs, locks and tokens live, derived once from the job timeout
//! and the retention of finished jobs.

use std::time::Duration;

/// The lock outlives a job's timeout by this margin, so that only a crash
/// (never a slow job) lets a lock expire on its own.
const LOCK_MARGIN: Duration = Duration::from_secs(300);
/// A callback token outlives its job's timeout by this margin; the store
/// refuses it anyway once the job is final.
const CALLBACK_MARGIN: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    /// `CD_JOB_TIMEOUT`: a job not final by then is stopped.
    pub job_timeout: Duration,
    /// `CD_JOB_TTL`: how long a finished job is kept.
    pub job_ttl: Duration,
}

impl Lifetimes {
    /// An inventory lock's expiry.
    pub fn lock(self) -> Duration {
        self.job_timeout + LOCK_MARGIN
    }

    /// The longest an open job may be kept: a queued job may wait one
    /// timeout, then run for another, then be kept as a finished job.
    pub fn open_job(self) -> Duration {
        self.job_timeout * 2 + self.job_ttl
    }

    /// A status token reads its job for as long as the job may exist.
    pub fn status_token(self) -> Duration {
        self.open_job()
    }

    /// A callback token is good while its job may still run.
    pub fn callback_token(self) -> Duration {
        self.job_timeout + CALLBACK_MARGIN
    }
}
