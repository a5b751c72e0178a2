//! Running the ansible program: one trait, one file per backend.

pub mod docker;
pub mod docker_address;
pub mod process;

use async_trait::async_trait;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::domain::LaunchData;

pub use docker::{DockerLauncher, DockerPull};
pub use process::{is_executable, ProcessLauncher};

/// Where a launcher that can follow a running program's output sends it.
pub type OutputSink = tokio::sync::mpsc::UnboundedSender<OutputChunk>;

/// Output followed from a program, and how far it reaches in the program's
/// log (kept with the output, so that a follower that takes over resumes
/// there: no line lost, none twice).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputChunk {
    pub text: String,
    pub followed_until: Option<String>,
}

/// Everything a backend needs to start one job's program.
#[derive(Debug)]
pub struct LaunchSpec {
    pub job_id: String,
    pub deployment_id: String,
    pub inventory: String,
    /// `app-deploy <inventory> <job_id>` or `announce-apps`.
    pub args: Vec<String>,
    /// Plain environment (`CD_ENV`, `CD_JOB_ID`, …), without the token.
    pub env: Vec<(String, String)>,
    /// Passed as `CD_CALLBACK_TOKEN`; kept apart so `Debug` cannot show it.
    pub callback_token: SecretString,
}

/// What was recorded at launch, so a restarted service can find the program again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LaunchRecord {
    Process {
        host: String,
        pid: u32,
        /// Start time in clock ticks since boot (`/proc/<pid>/stat`), which
        /// tells a reused pid from ours.
        start_ticks: u64,
        /// File receiving the program's stdout and stderr.
        log: std::path::PathBuf,
    },
    Docker {
        container_id: String,
        /// The log timestamp (RFC 3339, nanoseconds) of the last line
        /// saved to the job.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        followed_until: Option<String>,
    },
}

impl LaunchRecord {
    /// The record once output up to `position` is saved.
    pub fn followed_until(&self, position: Option<String>) -> LaunchRecord {
        match (self, position) {
            (LaunchRecord::Docker { container_id, .. }, Some(position)) => LaunchRecord::Docker {
                container_id: container_id.clone(),
                followed_until: Some(position),
            },
            (record, _) => record.clone(),
        }
    }

    /// As the store keeps it.
    pub fn to_data(&self) -> LaunchData {
        LaunchData(serde_json::to_value(self).unwrap_or(serde_json::Value::Null))
    }

    /// Read back from the store; `None` for a record no launcher here wrote.
    pub fn from_data(data: &LaunchData) -> Option<LaunchRecord> {
        serde_json::from_value(data.0.clone()).ok()
    }
}

/// How a program ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Gone while no one could read its exit status (e.g. across a restart).
    Unknown,
}

/// An ended program and the last lines it printed (empty when its output
/// was followed into the job as it ran).
#[derive(Clone, Debug)]
pub struct ExitReport {
    pub exit: Exit,
    pub tail: String,
}

/// What a restarted service finds of a program launched before.
#[derive(Clone, Debug)]
pub enum Presence {
    Running,
    Exited(ExitReport),
    Missing,
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot start {program}: {reason}")]
    Start { program: String, reason: String },
    #[error("launcher unavailable: {0}")]
    Unavailable(String),
    #[error("launch record belongs to another launcher")]
    Foreign,
}

#[async_trait]
pub trait Launcher: Send + Sync + 'static {
    /// Starts the program; it must outlive this service if the service dies.
    async fn launch(&self, spec: &LaunchSpec) -> Result<LaunchRecord, LaunchError>;
    /// Waits for the program to end. A launcher that can follow output sends
    /// it to `output` as it comes; `resumed` (after a restart) asks only for
    /// output not followed before.
    async fn wait(
        &self,
        record: &LaunchRecord,
        output: OutputSink,
        resumed: bool,
    ) -> Result<ExitReport, LaunchError>;
    /// Stops the program (timeout); `wait` then returns.
    async fn stop(&self, record: &LaunchRecord) -> Result<(), LaunchError>;
    /// Finds a program launched before a restart.
    async fn find(&self, record: &LaunchRecord) -> Result<Presence, LaunchError>;
    /// Frees what the program left once its job is done with it.
    async fn cleanup(&self, record: &LaunchRecord);
    /// Whether this launcher can see the recorded program (same host, same kind).
    fn owns(&self, record: &LaunchRecord) -> bool;
    /// Programs this launcher can find by their labels, with their job ids,
    /// whatever the store recorded (a launch interrupted before its record).
    async fn labelled(&self) -> Result<Vec<(String, LaunchRecord)>, LaunchError> {
        Ok(Vec::new())
    }
    /// Ready to launch (for `/readyz`).
    async fn ping(&self) -> Result<(), LaunchError>;
}
