//! The job programs the service launches, as the tests see them.

use std::time::Duration;

use enac_cd::domain::JobStatus;
use enac_cd::jobs::TokenKind;
use enac_cd::launch::LaunchRecord;
use serde_json::json;

use super::app::TestApp;
use super::wait::eventually;

/// Kills a job's program (its whole process group) when the test ends, even
/// by a panic: a `hang` program would otherwise sleep for an hour.
pub struct ProgramGuard {
    pub pid: u32,
    pub start_ticks: u64,
}

/// The start time of a live process, as the launcher recorded it.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl Drop for ProgramGuard {
    fn drop(&mut self) {
        // Only the process the service launched for this job: same pid and
        // same start time, so a reused pid is never signalled.
        if start_ticks(self.pid) == Some(self.start_ticks) {
            // SAFETY: kill(2) has no memory effects; the program leads its group.
            unsafe {
                libc::kill(-(self.pid as i32), libc::SIGKILL);
            }
        }
    }
}

/// Waits for the fake program of a `hang*` job to report `running` (its one
/// callback: later ones are the test's own), and guards it.
pub async fn hanging_program(app: &TestApp, job_id: &str, deadline: Duration) -> ProgramGuard {
    let record = eventually("the program to report running", deadline, || async {
        let job = app.job(job_id).await;
        (job.status == JobStatus::Running && job.output == "hanging\n")
            .then_some(job.launch)
            .flatten()
            .and_then(|data| LaunchRecord::from_data(&data))
    })
    .await;
    let LaunchRecord::Process {
        pid, start_ticks, ..
    } = record
    else {
        panic!("not a process launch: {record:?}");
    };
    ProgramGuard { pid, start_ticks }
}

/// The job's program reporting through `app`: `POST /set-job-status/` with
/// the job's callback token.
pub async fn report(app: &TestApp, job_id: &str, status: &str, output: &str, append: bool) {
    let token =
        app.state
            .lifecycle
            .tokens()
            .issue(TokenKind::Callback, job_id, Duration::from_secs(600));
    let body = json!({"job_id": job_id, "status": status, "output": output, "append": append});
    let (code, answer) = app
        .post_with_token("/set-job-status/", Some(&token), &body)
        .await;
    assert_eq!(code, 200, "{answer}");
}
