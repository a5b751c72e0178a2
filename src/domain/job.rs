//! What a job is, as stored and as shown.

use serde::{Deserialize, Serialize};

use super::{JobStatus, Report, Trigger};

/// A job about to be created; the store decides whether it starts, queues or
/// joins another.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub id: String,
    pub deployment_id: String,
    pub inventory: String,
    pub trigger: Trigger,
    pub created_at: i64,
    /// Where the job is to be reported (contract §12), from its policy.
    pub reports: Vec<Report>,
}

/// One run of the ansible program for one inventory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub deployment_id: String,
    pub inventory: String,
    pub status: JobStatus,
    pub output: String,
    /// Where `output` ends in the job's whole output stream: every byte
    /// ever added counts, those truncation dropped included. Followers of
    /// the live output resume from such offsets.
    #[serde(default)]
    pub output_end: u64,
    /// Where the output the program last posted whole (a callback that
    /// replaces the output) begins in that stream.
    #[serde(default)]
    pub output_base: u64,
    pub trigger: Trigger,
    /// Unix milliseconds.
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The program's exit code, when the job was ended by its exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Who cancelled the job (`admin`), once the cancel ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
    /// Who asked to cancel the open job; its watcher stops the program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested_by: Option<String>,
    /// What the launcher recorded to find the program again; opaque here.
    pub launch: Option<LaunchData>,
    /// Which service instance took the job's launch, if one did.
    pub launch_claim: Option<String>,
    /// Each report target of the job and how far it got.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<Report>,
}

impl NewJob {
    /// The job as stored when it starts (`starting`, holding the lock) or
    /// waits (`queued`).
    pub fn into_job(self, status: JobStatus) -> Job {
        Job {
            started_at: (status == JobStatus::Starting).then_some(self.created_at),
            id: self.id,
            deployment_id: self.deployment_id,
            inventory: self.inventory,
            status,
            output: String::new(),
            output_end: 0,
            output_base: 0,
            trigger: self.trigger,
            created_at: self.created_at,
            finished_at: None,
            exit_code: None,
            cancelled_by: None,
            cancel_requested_by: None,
            launch: None,
            launch_claim: None,
            reports: self.reports,
        }
    }
}

/// The launcher's record of a started program, kept by the store as it is:
/// only the launcher reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LaunchData(pub serde_json::Value);

/// Longest job id a request may name; ids are ULIDs (26 characters), and a
/// longer one is not looked up at all, whichever store is behind.
pub const MAX_JOB_ID_LEN: usize = 128;

/// Whether `id` may name a job (cheap guard before any store access).
pub fn is_plausible_job_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_JOB_ID_LEN
}
