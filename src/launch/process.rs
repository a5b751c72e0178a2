//! The `process` launcher: runs `CD_PROCESS_COMMAND` directly (no shell) in
//! its own process group, with output going to a file rather than a pipe, so
//! the program survives the death of the service and can be found again by
//! its pid and start time.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::ExposeSecret;
use tokio::process::{Child, Command};

use super::{Exit, ExitReport, LaunchError, LaunchRecord, LaunchSpec, Launcher, Presence};

/// Environment variables of the service that the program also gets; nothing
/// else of the service's environment (its secrets) is passed on.
const PASSED_ENV: [&str; 6] = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER"];
/// Last lines of output appended to a job that ends by exiting.
const TAIL_LINES: usize = 20;
const TAIL_BYTES: u64 = 16 * 1024;
/// Time between SIGTERM and SIGKILL when a job is stopped.
const STOP_GRACE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(200);

pub struct ProcessLauncher {
    program: PathBuf,
    log_dir: PathBuf,
    host: String,
    /// Children started by this instance, by pid: only they give an exit code.
    children: Mutex<HashMap<u32, Child>>,
}

impl ProcessLauncher {
    pub fn new(program: PathBuf, data_dir: &Path) -> ProcessLauncher {
        ProcessLauncher {
            program,
            log_dir: data_dir.join("job-logs"),
            host: host_name(),
            children: Mutex::new(HashMap::new()),
        }
    }

    fn take_child(&self, pid: u32) -> Option<Child> {
        self.children
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&pid)
    }

    fn start_error(&self, reason: impl ToString) -> LaunchError {
        LaunchError::Start {
            program: self.program.display().to_string(),
            reason: reason.to_string(),
        }
    }
}

/// This machine's name, as the kernel knows it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// The start time (clock ticks since boot) of a live, non-zombie process.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces or parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `state` is field 3; the start time is field 22.
    fields.nth(18)?.parse().ok()
}

fn is_alive(pid: u32, ticks: u64) -> bool {
    start_ticks(pid) == Some(ticks)
}

fn signal_group(pid: u32, signal: i32) {
    // The program leads its own group (pgid = pid): the whole tree gets it.
    // SAFETY: kill(2) has no memory effects; a stale group only yields ESRCH.
    unsafe {
        libc::kill(-(pid as i32), signal);
    }
}

/// The last lines of a log file, read from its end only.
fn tail_of(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let length = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let start = length.saturating_sub(TAIL_BYTES);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let mut tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
    if !tail.is_empty() {
        tail.push('\n');
    }
    tail
}

fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(signal)) => Exit::Signal(signal),
        (None, None) => Exit::Unknown,
    }
}

#[async_trait]
impl Launcher for ProcessLauncher {
    async fn launch(&self, spec: &LaunchSpec) -> Result<LaunchRecord, LaunchError> {
        crate::private_files::private_dir(&self.log_dir)
            .map_err(|error| self.start_error(error))?;
        let log = self.log_dir.join(format!("{}.log", spec.job_id));
        let stdout = crate::private_files::create_private_file(&log)
            .map_err(|error| self.start_error(error))?;
        let stderr = stdout
            .try_clone()
            .map_err(|error| self.start_error(error))?;
        let mut command = Command::new(&self.program);
        command
            .args(&spec.args)
            .env_clear()
            .envs(
                PASSED_ENV
                    .iter()
                    .filter_map(|name| Some((name, std::env::var_os(name)?))),
            )
            .envs(spec.env.iter().map(|(name, value)| (name, value)))
            .env("CD_CALLBACK_TOKEN", spec.callback_token.expose_secret())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(false);
        let child = command.spawn().map_err(|error| self.start_error(error))?;
        let pid = child
            .id()
            .ok_or_else(|| self.start_error("exited before it could be watched"))?;
        let start_ticks = start_ticks(pid).unwrap_or(0);
        self.children
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(pid, child);
        Ok(LaunchRecord::Process {
            host: self.host.clone(),
            pid,
            start_ticks,
            log,
        })
    }

    /// Output goes to the log file; its last lines come with the exit.
    async fn wait(
        &self,
        record: &LaunchRecord,
        _output: super::OutputSink,
        _resumed: bool,
    ) -> Result<ExitReport, LaunchError> {
        let LaunchRecord::Process {
            pid,
            start_ticks,
            log,
            ..
        } = record
        else {
            return Err(LaunchError::Foreign);
        };
        let exit = match self.take_child(*pid) {
            Some(mut child) => child
                .wait()
                .await
                .map(exit_of)
                .map_err(|error| LaunchError::Unavailable(error.to_string()))?,
            // Not our child (adopted after a restart): poll until it is gone.
            None => {
                while is_alive(*pid, *start_ticks) {
                    tokio::time::sleep(POLL).await;
                }
                Exit::Unknown
            }
        };
        Ok(ExitReport {
            exit,
            tail: tail_of(log),
        })
    }

    async fn stop(&self, record: &LaunchRecord) -> Result<(), LaunchError> {
        let LaunchRecord::Process {
            pid, start_ticks, ..
        } = record.clone()
        else {
            return Err(LaunchError::Foreign);
        };
        if !is_alive(pid, start_ticks) {
            return Ok(());
        }
        signal_group(pid, libc::SIGTERM);
        tokio::spawn(async move {
            tokio::time::sleep(STOP_GRACE).await;
            if is_alive(pid, start_ticks) {
                signal_group(pid, libc::SIGKILL);
            }
        });
        Ok(())
    }

    async fn find(&self, record: &LaunchRecord) -> Result<Presence, LaunchError> {
        let LaunchRecord::Process {
            pid,
            start_ticks,
            log,
            ..
        } = record
        else {
            return Err(LaunchError::Foreign);
        };
        if is_alive(*pid, *start_ticks) {
            return Ok(Presence::Running);
        }
        if !log.exists() {
            return Ok(Presence::Missing);
        }
        Ok(Presence::Exited(ExitReport {
            exit: Exit::Unknown,
            tail: tail_of(log),
        }))
    }

    async fn cleanup(&self, record: &LaunchRecord) {
        if let LaunchRecord::Process { log, .. } = record {
            let _ = tokio::fs::remove_file(log).await;
        }
    }

    fn owns(&self, record: &LaunchRecord) -> bool {
        matches!(record, LaunchRecord::Process { host, .. } if *host == self.host)
    }

    async fn ping(&self) -> Result<(), LaunchError> {
        if !is_executable(&self.program) {
            return Err(LaunchError::Unavailable(format!(
                "{} is not an executable file",
                self.program.display()
            )));
        }
        crate::private_files::private_dir(&self.log_dir).map_err(|error| {
            LaunchError::Unavailable(format!("{}: {error}", self.log_dir.display()))
        })
    }
}

/// Whether `path` is a file someone may execute.
pub fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_start_time_and_a_dead_pid_has_none() {
        assert!(start_ticks(std::process::id()).is_some());
        assert_eq!(start_ticks(u32::MAX), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log");
        let text: String = (1..=50).map(|n| format!("line {n}\n")).collect();
        std::fs::write(&path, text).expect("write log");
        let tail = tail_of(&path);
        assert!(tail.starts_with("line 31\n"), "{tail}");
        assert!(tail.ends_with("line 50\n"), "{tail}");
        assert_eq!(tail_of(&dir.path().join("missing")), "");
    }
}
