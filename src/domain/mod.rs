//! The domain model: what a job is, its statuses and their transitions, what
//! triggered it, what a busy inventory does, how long things live, and the
//! clock. It imports nothing else of the crate, so every other module may
//! use it.

mod clock;
mod job;
mod lifetimes;
mod on_busy;
mod report;
mod status;
mod trigger;

pub use clock::{now_ms, rfc3339_of_ms, unix_now, unix_of_rfc3339, CivilTime};
pub use job::{is_plausible_job_id, Job, LaunchData, NewJob, MAX_JOB_ID_LEN};
pub use lifetimes::Lifetimes;
pub use on_busy::OnBusy;
pub use report::{next_due, Report, ReportEvent, ReportState, ReportTarget};
pub use status::JobStatus;
pub use trigger::{Trigger, TriggerKind};
