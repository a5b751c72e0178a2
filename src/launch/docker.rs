//! The `docker` launcher: the Docker Engine API through bollard. Pull per
//! `CD_DOCKER_PULL`, create with labels, binds and network, start, follow the
//! logs into the job, wait for the exit, remove. Containers outlive the
//! service; a restarted service finds them again by id or by label.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountTypeEnum};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, KillContainerOptions, ListContainersOptions,
    LogsOptions, RemoveContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::OnceCell;

use super::docker_address::EngineAddress;
use super::{
    Exit, ExitReport, LaunchError, LaunchRecord, LaunchSpec, Launcher, OutputChunk, OutputSink,
    Presence,
};
use crate::domain::{unix_now, CivilTime};

pub const LABEL_JOB_ID: &str = "enac-cd.job-id";
pub const LABEL_INVENTORY: &str = "enac-cd.inventory";
pub const LABEL_DEPLOYMENT_ID: &str = "enac-cd.deployment-id";

/// Last lines of a container's log kept when its exit is found after a restart.
const TAIL_LINES: &str = "20";
/// How long the log follower may lag behind the exit.
const LOG_DRAIN: Duration = Duration::from_secs(5);

/// `CD_DOCKER_PULL`: when the image is pulled before a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DockerPull {
    Always,
    Missing,
    Never,
}

/// What the launcher needs of the settings.
#[derive(Clone, Debug)]
pub struct DockerConfig {
    pub host: Option<String>,
    pub image: String,
    pub pull: DockerPull,
    pub network: Option<String>,
    pub binds: Vec<String>,
    pub registry_user: Option<String>,
    pub registry_password: Option<SecretString>,
    /// Longest request (a wait lasts as long as the job).
    pub request_timeout: Duration,
}

/// How the launcher reaches its engine.
enum Engine {
    /// A client made by the caller (tests against a fake engine).
    Given(Docker),
    At(EngineAddress),
}

pub struct DockerLauncher {
    engine: Engine,
    /// The connection at the API version the engine speaks, made on first
    /// use and tried again until it succeeds, so that an engine that is
    /// down or absent at start (whatever its address) does not stop the
    /// service: `/readyz` answers 503 and launches fail with the reason.
    negotiated: OnceCell<Docker>,
    config: DockerConfig,
}

fn is_not_found(error: &DockerError) -> bool {
    matches!(
        error,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl DockerLauncher {
    /// A launcher for `CD_DOCKER_HOST` (unix://, tcp:// or http://), or
    /// Docker's defaults (`DOCKER_HOST`, then the local socket). Only an
    /// address of another form is refused; the engine is not asked yet.
    pub fn connect(config: DockerConfig) -> Result<DockerLauncher, LaunchError> {
        let address =
            EngineAddress::resolve(config.host.as_deref()).map_err(LaunchError::Unavailable)?;
        Ok(DockerLauncher {
            engine: Engine::At(address),
            negotiated: OnceCell::new(),
            config,
        })
    }

    pub fn with_connection(connection: Docker, config: DockerConfig) -> DockerLauncher {
        DockerLauncher {
            engine: Engine::Given(connection),
            negotiated: OnceCell::new(),
            config,
        }
    }

    async fn docker(&self) -> Result<&Docker, LaunchError> {
        self.negotiated
            .get_or_try_init(|| async {
                let connection = match &self.engine {
                    Engine::Given(connection) => connection.clone(),
                    Engine::At(address) => address
                        .connect(self.config.request_timeout.as_secs())
                        .map_err(|reason| {
                        LaunchError::Unavailable(format!("docker engine: {reason}"))
                    })?,
                };
                connection
                    .negotiate_version()
                    .await
                    .map_err(|error| self.engine_error(error))
            })
            .await
    }

    /// What went wrong, in words an operator can act on: a failure to reach
    /// the socket is explained by opening it ourselves.
    fn reason(&self, error: &DockerError) -> String {
        let reached = matches!(error, DockerError::DockerResponseServerError { .. });
        let diagnosis = match &self.engine {
            Engine::At(address) if !reached => address.diagnose(),
            _ => None,
        };
        if let Some(diagnosis) = diagnosis {
            return diagnosis;
        }
        if let DockerError::DockerResponseServerError { message, .. } = error {
            if let Some(path) = message.split("bind source path does not exist: ").nth(1) {
                return format!(
                    "the bind source {} of CD_DOCKER_BINDS does not exist on the Docker host",
                    path.trim()
                );
            }
        }
        error.to_string()
    }

    fn engine_error(&self, error: DockerError) -> LaunchError {
        LaunchError::Unavailable(format!("docker engine: {}", self.reason(&error)))
    }

    fn start_error(&self, error: DockerError) -> LaunchError {
        LaunchError::Start {
            program: self.config.image.clone(),
            reason: self.reason(&error),
        }
    }

    fn credentials(&self) -> Option<DockerCredentials> {
        let user = self.config.registry_user.clone()?;
        Some(DockerCredentials {
            username: Some(user),
            password: self
                .config
                .registry_password
                .as_ref()
                .map(|password| password.expose_secret().to_owned()),
            ..Default::default()
        })
    }

    /// Pulls the image as `CD_DOCKER_PULL` says, draining the whole stream:
    /// an error anywhere in it fails the launch with the engine's message.
    async fn ensure_image(&self, docker: &Docker) -> Result<(), LaunchError> {
        let image = &self.config.image;
        let pull = match self.config.pull {
            DockerPull::Never => false,
            DockerPull::Always => true,
            DockerPull::Missing => match docker.inspect_image(image).await {
                Ok(_) => false,
                Err(error) if is_not_found(&error) => true,
                Err(error) => return Err(self.engine_error(error)),
            },
        };
        if !pull {
            return Ok(());
        }
        let options = CreateImageOptions {
            from_image: Some(image.clone()),
            ..Default::default()
        };
        let mut progress = docker.create_image(Some(options), None, self.credentials());
        let failed = |reason: String| LaunchError::Start {
            program: image.clone(),
            reason: format!("pull failed: {reason}"),
        };
        while let Some(step) = progress.next().await {
            let step = step.map_err(|error| failed(error.to_string()))?;
            // Engines may report an error only as `errorDetail`.
            if let Some(message) = step.error_detail.and_then(|detail| detail.message) {
                return Err(failed(message));
            }
        }
        Ok(())
    }

    fn container_body(&self, spec: &LaunchSpec) -> ContainerCreateBody {
        let mut env: Vec<String> = spec
            .env
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        env.push(format!(
            "CD_CALLBACK_TOKEN={}",
            spec.callback_token.expose_secret()
        ));
        let labels = HashMap::from([
            (LABEL_JOB_ID.to_owned(), spec.job_id.clone()),
            (LABEL_INVENTORY.to_owned(), spec.inventory.clone()),
            (LABEL_DEPLOYMENT_ID.to_owned(), spec.deployment_id.clone()),
        ]);
        ContainerCreateBody {
            image: Some(self.config.image.clone()),
            cmd: Some(spec.args.clone()),
            env: Some(env),
            labels: Some(labels),
            host_config: Some(HostConfig {
                mounts: (!self.config.binds.is_empty()).then(|| {
                    self.config
                        .binds
                        .iter()
                        .map(|bind| mount_of(bind))
                        .collect()
                }),
                network_mode: self.config.network.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Sends the container's output to `sink` until the container stops,
    /// each chunk with its log timestamp; lines at or before `after` (the
    /// last one saved by an earlier follower) are skipped.
    fn follow_logs(
        &self,
        docker: Docker,
        id: String,
        sink: OutputSink,
        after: Option<String>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            // Whole seconds narrow what the engine sends; the stamps do the rest.
            let since = after.as_deref().and_then(seconds_of).unwrap_or(0);
            let options = LogsOptions {
                follow: true,
                stdout: true,
                stderr: true,
                timestamps: true,
                since: i32::try_from(since).unwrap_or(0),
                ..Default::default()
            };
            let mut logs = docker.logs(&id, Some(options));
            let mut text = Utf8Chunks::default();
            while let Some(Ok(chunk)) = logs.next().await {
                let bytes = chunk.into_bytes();
                let (stamp, line) = split_timestamp(&bytes);
                if stamp.is_some_and(|stamp| after.as_deref().is_some_and(|after| stamp <= after)) {
                    continue;
                }
                let decoded = text.push(line);
                let chunk = OutputChunk {
                    text: decoded,
                    followed_until: stamp.map(str::to_owned),
                };
                if !chunk.text.is_empty() && sink.send(chunk).is_err() {
                    return;
                }
            }
            let rest = text.finish();
            if !rest.is_empty() {
                let _ = sink.send(OutputChunk {
                    text: rest,
                    followed_until: None,
                });
            }
        })
    }

    async fn last_lines(&self, docker: &Docker, id: &str) -> String {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: TAIL_LINES.to_owned(),
            ..Default::default()
        };
        let mut logs = docker.logs(id, Some(options));
        let mut text = Utf8Chunks::default();
        let mut tail = String::new();
        while let Some(Ok(chunk)) = logs.next().await {
            tail.push_str(&text.push(&chunk.into_bytes()));
        }
        tail.push_str(&text.finish());
        tail
    }
}

/// Now, as Docker stamps log lines (UTC, nanoseconds, fixed width).
fn now_stamp() -> String {
    stamp_of(unix_now())
}

/// `seconds` since the epoch as `YYYY-MM-DDTHH:MM:SS.000000000Z`.
fn stamp_of(seconds: i64) -> String {
    let civil = CivilTime::of(seconds);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.000000000Z",
        civil.year, civil.month, civil.day, civil.hour, civil.minute, civil.second
    )
}

/// The whole seconds since the epoch of a stamp like [`stamp_of`]'s.
fn seconds_of(stamp: &str) -> Option<i64> {
    let number = |range: std::ops::Range<usize>| stamp.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    // Days since 1970-01-01 from a civil date (Howard Hinnant's algorithm).
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// A log frame asked for with timestamps: `2026-11-29T23:57:22.123456789Z text`.
/// Docker writes them in a fixed-width form, so they compare as text.
fn split_timestamp(frame: &[u8]) -> (Option<&str>, &[u8]) {
    let Some(space) = frame.iter().position(|byte| *byte == b' ') else {
        return (None, frame);
    };
    match std::str::from_utf8(&frame[..space]) {
        Ok(stamp) if stamp.len() >= 20 && stamp.as_bytes()[4] == b'-' && stamp.ends_with('Z') => {
            (Some(stamp), &frame[space + 1..])
        }
        _ => (None, frame),
    }
}

/// Decodes a byte stream cut anywhere into text: a character split across
/// two chunks is held back until its end arrives.
#[derive(Default)]
struct Utf8Chunks {
    pending: Vec<u8>,
}

impl Utf8Chunks {
    fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let complete = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            // An incomplete character at the end waits; invalid bytes do not.
            Err(error) if error.error_len().is_none() => error.valid_up_to(),
            Err(_) => self.pending.len(),
        };
        let rest = self.pending.split_off(complete);
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = rest;
        text
    }

    fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// A `CD_DOCKER_BINDS` entry as a mount: unlike a bind, a mount whose host
/// path is missing is refused by the engine instead of created as an empty
/// root-owned directory (where a vault password file was expected).
fn mount_of(bind: &str) -> Mount {
    let mut parts = bind.splitn(3, ':');
    let source = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let read_only = parts.next() == Some("ro");
    // `name:/path` is a named volume, as in `docker run -v`.
    let typ = if source.starts_with('/') {
        MountTypeEnum::BIND
    } else {
        MountTypeEnum::VOLUME
    };
    Mount {
        source: Some(source),
        target: Some(target),
        typ: Some(typ),
        read_only: Some(read_only),
        ..Default::default()
    }
}

fn container_id(record: &LaunchRecord) -> Result<&str, LaunchError> {
    match record {
        LaunchRecord::Docker { container_id, .. } => Ok(container_id),
        _ => Err(LaunchError::Foreign),
    }
}

#[async_trait]
impl Launcher for DockerLauncher {
    async fn launch(&self, spec: &LaunchSpec) -> Result<LaunchRecord, LaunchError> {
        let docker = self.docker().await?;
        self.ensure_image(docker).await?;
        let options = CreateContainerOptions {
            name: Some(format!("enac-cd-{}", spec.job_id.to_ascii_lowercase())),
            ..Default::default()
        };
        let created = docker
            .create_container(Some(options), self.container_body(spec))
            .await
            .map_err(|error| self.start_error(error))?;
        let record = LaunchRecord::Docker {
            container_id: created.id.clone(),
            followed_until: None,
        };
        if let Err(error) = docker
            .start_container(
                &created.id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
        {
            self.cleanup(&record).await;
            return Err(self.start_error(error));
        }
        Ok(record)
    }

    async fn wait(
        &self,
        record: &LaunchRecord,
        output: OutputSink,
        resumed: bool,
    ) -> Result<ExitReport, LaunchError> {
        let id = container_id(record)?.to_owned();
        let docker = self.docker().await?.clone();
        // Taken over: the lines saved by the follower before are skipped;
        // a record without a position (an older service's) resumes from now.
        let after = match record {
            LaunchRecord::Docker {
                followed_until: Some(position),
                ..
            } if resumed => Some(position.clone()),
            _ if resumed => Some(now_stamp()),
            _ => None,
        };
        let mut follower = self.follow_logs(docker.clone(), id.clone(), output, after);
        let mut waiting =
            docker.wait_container(&id, None::<bollard::query_parameters::WaitContainerOptions>);
        let exit = match waiting.next().await {
            Some(Ok(response)) => Exit::Code(response.status_code as i32),
            // bollard reports a non-zero exit as an error; it is an exit code.
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => {
                Exit::Code(code as i32)
            }
            Some(Err(error)) => {
                follower.abort();
                return Err(self.engine_error(error));
            }
            None => Exit::Unknown,
        };
        // The log stream ends with the container; give it a moment to drain.
        if tokio::time::timeout(LOG_DRAIN, &mut follower)
            .await
            .is_err()
        {
            tracing::warn!(container = %id, "log follower still running after exit");
            follower.abort();
        }
        Ok(ExitReport {
            exit,
            tail: String::new(),
        })
    }

    async fn stop(&self, record: &LaunchRecord) -> Result<(), LaunchError> {
        let id = container_id(record)?;
        let docker = self.docker().await?;
        match docker
            .kill_container(id, Some(KillContainerOptions::default()))
            .await
        {
            Ok(()) => Ok(()),
            // Already gone or already stopped: nothing to kill.
            Err(DockerError::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => Ok(()),
            Err(error) => Err(self.engine_error(error)),
        }
    }

    async fn find(&self, record: &LaunchRecord) -> Result<Presence, LaunchError> {
        let id = container_id(record)?;
        let docker = self.docker().await?;
        let inspected = match docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Ok(inspected) => inspected,
            Err(error) if is_not_found(&error) => return Ok(Presence::Missing),
            Err(error) => return Err(self.engine_error(error)),
        };
        let state = inspected.state.unwrap_or_default();
        if state.running == Some(true) || state.restarting == Some(true) {
            return Ok(Presence::Running);
        }
        if state.status == Some(bollard::models::ContainerStateStatusEnum::CREATED) {
            // Created but never started: the launch was interrupted.
            return Ok(Presence::Missing);
        }
        Ok(Presence::Exited(ExitReport {
            exit: state
                .exit_code
                .map_or(Exit::Unknown, |code| Exit::Code(code as i32)),
            tail: self.last_lines(docker, id).await,
        }))
    }

    async fn cleanup(&self, record: &LaunchRecord) {
        let (Ok(id), Ok(docker)) = (container_id(record), self.docker().await) else {
            return;
        };
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match docker.remove_container(id, Some(options)).await {
            Ok(()) => {}
            Err(error) if is_not_found(&error) => {}
            Err(error) => tracing::warn!(container = %id, %error, "cannot remove job container"),
        }
    }

    fn owns(&self, record: &LaunchRecord) -> bool {
        matches!(record, LaunchRecord::Docker { .. })
    }

    async fn labelled(&self) -> Result<Vec<(String, LaunchRecord)>, LaunchError> {
        let docker = self.docker().await?;
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_owned(),
                vec![LABEL_JOB_ID.to_owned()],
            )])),
            ..Default::default()
        };
        let containers = docker
            .list_containers(Some(options))
            .await
            .map_err(|error| self.engine_error(error))?;
        Ok(containers
            .into_iter()
            .filter_map(|container| {
                let job_id = container.labels?.remove(LABEL_JOB_ID)?;
                Some((
                    job_id,
                    LaunchRecord::Docker {
                        container_id: container.id?,
                        followed_until: None,
                    },
                ))
            })
            .collect())
    }

    async fn ping(&self) -> Result<(), LaunchError> {
        self.docker()
            .await?
            .ping()
            .await
            .map(|_| ())
            .map_err(|error| self.engine_error(error))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_stamps_are_dockers_fixed_width_utc() {
        assert_eq!(super::stamp_of(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            super::stamp_of(1_796_000_000),
            "2026-11-30T00:53:20.000000000Z"
        );
        assert_eq!(
            super::stamp_of(951_782_400),
            "2000-02-29T00:00:00.000000000Z"
        );
    }

    #[test]
    fn stamps_read_back_as_seconds() {
        for seconds in [0, 951_782_400, 1_796_000_000, 4_102_444_799] {
            let stamp = super::stamp_of(seconds);
            assert_eq!(super::seconds_of(&stamp), Some(seconds), "{stamp}");
        }
        assert_eq!(
            super::seconds_of("2026-11-29T23:57:22.123456789Z"),
            Some(1_795_996_642)
        );
        assert_eq!(super::seconds_of("not a stamp"), None);
    }

    #[test]
    fn a_timestamped_frame_splits_into_stamp_and_line() {
        let (stamp, line) = super::split_timestamp(b"2026-11-29T23:57:22.123456789Z line 1\n");
        assert_eq!(stamp, Some("2026-11-29T23:57:22.123456789Z"));
        assert_eq!(line, b"line 1\n");
        assert_eq!(
            super::split_timestamp(b"no stamp here\n"),
            (None, &b"no stamp here\n"[..])
        );
    }

    use super::Utf8Chunks;

    #[test]
    fn a_character_split_across_chunks_is_decoded_whole() {
        let bytes = "déploy".as_bytes();
        let mut text = Utf8Chunks::default();
        let mut out = text.push(&bytes[..2]);
        out.push_str(&text.push(&bytes[2..]));
        out.push_str(&text.finish());
        assert_eq!(out, "déploy");
    }

    #[test]
    fn invalid_bytes_are_replaced_not_held() {
        let mut text = Utf8Chunks::default();
        assert_eq!(text.push(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(text.finish(), "");
    }
}
