//! The job state machine: statuses and the one table of allowed transitions.

use serde::{Deserialize, Serialize};

/// `queued` → `starting` → `running` → `success` | `error`.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Starting,
    Running,
    Success,
    Error,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Queued,
        JobStatus::Starting,
        JobStatus::Running,
        JobStatus::Success,
        JobStatus::Error,
    ];

    /// A new job that took its inventory's lock.
    pub const LOCK_HOLDER: JobStatus = JobStatus::Starting;
    /// A new job waiting for its inventory's lock; it becomes
    /// [`JobStatus::LOCK_HOLDER`] when promoted.
    pub const WAITING: JobStatus = JobStatus::Queued;

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Starting => "starting",
            JobStatus::Running => "running",
            JobStatus::Success => "success",
            JobStatus::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<JobStatus> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
    }

    /// `success` and `error` are final: nothing changes a final job.
    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Success | JobStatus::Error)
    }

    /// The final statuses, for the stores that keep them apart.
    pub fn finals() -> impl Iterator<Item = JobStatus> {
        JobStatus::ALL
            .into_iter()
            .filter(|status| status.is_final())
    }

    /// The only place the transitions are written; both stores ask it.
    /// `running → running` is allowed so that progress output can be saved.
    pub fn can_become(self, next: JobStatus) -> bool {
        use JobStatus::*;
        matches!(
            (self, next),
            (Queued, Starting)
                | (Queued, Error)
                | (Starting, Running)
                | (Starting, Success)
                | (Starting, Error)
                | (Running, Running)
                | (Running, Success)
                | (Running, Error)
        )
    }

    /// The statuses from which `next` may be reached.
    pub fn sources_of(next: JobStatus) -> impl Iterator<Item = JobStatus> {
        JobStatus::ALL
            .into_iter()
            .filter(move |status| status.can_become(next))
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_statuses_never_change() {
        for from in [JobStatus::Success, JobStatus::Error] {
            for to in JobStatus::ALL {
                assert!(!from.can_become(to), "{from} -> {to} allowed");
            }
        }
    }

    #[test]
    fn the_happy_path_is_allowed() {
        assert!(JobStatus::Queued.can_become(JobStatus::Starting));
        assert!(JobStatus::Starting.can_become(JobStatus::Running));
        assert!(JobStatus::Running.can_become(JobStatus::Success));
        assert!(!JobStatus::Running.can_become(JobStatus::Starting));
        assert!(!JobStatus::Queued.can_become(JobStatus::Running));
    }

    #[test]
    fn promotion_is_a_transition_of_the_table() {
        assert!(JobStatus::WAITING.can_become(JobStatus::LOCK_HOLDER));
        assert!(!JobStatus::LOCK_HOLDER.is_final());
        assert_eq!(
            JobStatus::finals().collect::<Vec<_>>(),
            [JobStatus::Success, JobStatus::Error]
        );
    }

    #[test]
    fn statuses_read_back_from_their_lowercase_names() {
        for status in JobStatus::ALL {
            assert_eq!(JobStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_string(&status).expect("serializes"),
                format!("\"{status}\"")
            );
        }
        assert_eq!(JobStatus::parse("finished"), None);
    }
}
