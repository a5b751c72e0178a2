//! The Redis backend: every multi-key change is one Lua script, so replicas
//! sharing a server see each step whole; reads on the hot path are one
//! pipelined round trip.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Cmd, Pipeline, RedisFuture, RedisResult, Script, Value};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::broadcast;

use super::redis_address::RedisAddress;
pub use super::redis_address::RedisConnectOptions;
use super::{
    merge_newest, parse_app, AppRecord, CancelRequest, JobLimits, JobPage, JobQuery, JobSignal,
    JobUpdate, OutputChange, SessionRecord, StartOutcome, Store, StoreError, StoredApp,
    UpdateOutcome, SIGNAL_BACKLOG, TRUNCATION_MARKER,
};
use crate::domain::{
    is_plausible_job_id, now_ms, Job, JobStatus, LaunchData, NewJob, OnBusy, Report, ReportEvent,
    Trigger,
};

const COMMON: &str = include_str!("lua/common.lua");

struct Scripts {
    start: Script,
    update: Script,
    promote_queued: Script,
    set_field: Script,
    request_cancel: Script,
    append: Script,
    remember: Script,
    trim_history: Script,
    index_history: Script,
    claim_reports: Script,
    finish_reports: Script,
}

/// The statuses the scripts test, written from [`JobStatus`]'s one table
/// rather than restated in Lua.
fn status_prelude() -> String {
    let finals: Vec<String> = JobStatus::finals()
        .map(|status| format!("['{status}'] = true"))
        .collect();
    let all: Vec<String> = JobStatus::ALL
        .iter()
        .map(|status| format!("'{status}'"))
        .collect();
    format!(
        "local FINAL = {{{}}}\nlocal WAITING = '{}'\nlocal LOCK_HOLDER = '{}'\nlocal STATUSES = {{{}}}\n",
        finals.join(", "),
        JobStatus::WAITING,
        JobStatus::LOCK_HOLDER,
        all.join(", ")
    )
}

impl Scripts {
    fn load() -> Scripts {
        let prelude = format!("{}{COMMON}\n", status_prelude());
        let script = |body: &str| Script::new(&format!("{prelude}{body}"));
        Scripts {
            start: script(include_str!("lua/start.lua")),
            update: script(include_str!("lua/update.lua")),
            promote_queued: script(include_str!("lua/promote_queued.lua")),
            set_field: Script::new(include_str!("lua/set_field.lua")),
            request_cancel: script(include_str!("lua/request_cancel.lua")),
            append: script(include_str!("lua/append.lua")),
            remember: Script::new(include_str!("lua/remember.lua")),
            trim_history: script(include_str!("lua/trim_history.lua")),
            index_history: script(include_str!("lua/index_history.lua")),
            claim_reports: Script::new(include_str!("lua/claim_reports.lua")),
            finish_reports: Script::new(include_str!("lua/finish_reports.lua")),
        }
    }
}

pub struct RedisStore {
    slot: Arc<ConnectionSlot>,
    prefix: String,
    limits: JobLimits,
    scripts: Scripts,
    /// The changes heard on the store's channel, from every instance.
    signals: broadcast::Sender<JobSignal>,
    /// Whether the one subscription of this store was started.
    listening: AtomicBool,
}

fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// Short timeouts and few retries: during an outage a request fails within
/// seconds with a clear error instead of hanging. TCP keepalive is on
/// through the crate's default `keep-alive` feature, with the system's
/// timings: redis 0.27 has no setting for them.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_secs(2))
        .set_number_of_retries(2)
        .set_max_delay(500)
}

/// The connection in use, replaced whole when it stops answering.
///
/// `ConnectionManager` reconnects after a reset or a closed socket, but it
/// counts a response timeout as retryable and keeps its socket: behind a
/// half-open connection (a dropped NAT entry, a partition) every command
/// would time out for ever. So an I/O error, a timeout included, has a
/// fresh manager built in the background and swapped in.
pub(super) struct ConnectionSlot {
    pub(super) address: RedisAddress,
    current: RwLock<Generation>,
    /// One build at a time, however many commands fail meanwhile.
    rebuilding: AtomicBool,
}

/// A manager and how many replaced it before, so that commands failing on
/// an already replaced manager do not replace its successor.
#[derive(Clone)]
struct Generation {
    number: u64,
    manager: ConnectionManager,
}

impl ConnectionSlot {
    async fn open(address: RedisAddress) -> Result<ConnectionSlot, StoreError> {
        let manager = manager_for(&address).await.map_err(unavailable)?;
        Ok(ConnectionSlot {
            address,
            current: RwLock::new(Generation { number: 0, manager }),
            rebuilding: AtomicBool::new(false),
        })
    }

    /// The current manager, cloned out under a short lock. A panic cannot
    /// leave the slot half-written (it only ever holds a whole value), so a
    /// poisoned lock is still read.
    fn current(&self) -> Generation {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn connection(self: &Arc<Self>) -> Connection {
        Connection {
            generation: self.current(),
            slot: Arc::clone(self),
        }
    }

    /// Builds a fresh manager in the background to replace generation
    /// `failed`, unless a build is under way or `failed` is already gone.
    fn replace(self: &Arc<Self>, failed: u64) {
        // Take the build first, then look: a finished build swaps before it
        // lets go, so whoever takes it next sees the new generation.
        if self.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.current().number != failed {
            self.rebuilding.store(false, Ordering::Release);
            return;
        }
        let slot = Arc::clone(self);
        tokio::spawn(async move {
            match manager_for(&slot.address).await {
                Ok(manager) => {
                    let number = failed + 1;
                    *slot.current.write().unwrap_or_else(PoisonError::into_inner) =
                        Generation { number, manager };
                    tracing::warn!(number, "redis: replaced a connection that failed");
                }
                Err(error) => {
                    tracing::warn!(%error, "redis: no fresh connection yet; the next failure retries");
                }
            }
            slot.rebuilding.store(false, Ordering::Release);
        });
    }
}

/// A manager on the server to use now (after a failover, the new primary).
async fn manager_for(address: &RedisAddress) -> RedisResult<ConnectionManager> {
    ConnectionManager::new_with_config(address.client().await?, manager_config()).await
}

/// What every command of the store runs on: the manager current when it was
/// taken, which it reports to its slot when it fails.
#[derive(Clone)]
pub(super) struct Connection {
    generation: Generation,
    slot: Arc<ConnectionSlot>,
}

impl Connection {
    fn check<T>(&self, reply: &RedisResult<T>) {
        if let Err(error) = reply {
            // A former primary that came back as a replica refuses writes:
            // the primary is asked for again, like after a lost connection.
            if error.is_io_error() || error.kind() == redis::ErrorKind::ReadOnly {
                self.slot.replace(self.generation.number);
            }
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let reply = self.generation.manager.req_packed_command(cmd).await;
            self.check(&reply);
            reply
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let reply = self
                .generation
                .manager
                .req_packed_commands(pipeline, offset, count)
                .await;
            self.check(&reply);
            reply
        })
    }

    fn get_db(&self) -> i64 {
        self.generation.manager.get_db()
    }
}

impl RedisStore {
    /// Connects; the connection then reconnects by itself after an outage
    /// and is replaced when it stops answering.
    pub async fn connect(
        url: &SecretString,
        prefix: &str,
        limits: JobLimits,
    ) -> Result<RedisStore, StoreError> {
        RedisStore::connect_with(url, &RedisConnectOptions::default(), prefix, limits).await
    }

    /// Like [`RedisStore::connect`], with a password and TLS roots given apart.
    pub async fn connect_with(
        url: &SecretString,
        options: &RedisConnectOptions,
        prefix: &str,
        limits: JobLimits,
    ) -> Result<RedisStore, StoreError> {
        let address = RedisAddress::parse_with(url.expose_secret(), options)
            .map_err(|_| StoreError::Unavailable("CD_REDIS_URL is not a valid Redis URL".into()))?;
        let store = RedisStore {
            slot: Arc::new(ConnectionSlot::open(address).await?),
            prefix: prefix.to_owned(),
            limits,
            scripts: Scripts::load(),
            signals: broadcast::channel(SIGNAL_BACKLOG).0,
            listening: AtomicBool::new(false),
        };
        if let Err(error) = store.index_history().await {
            tracing::warn!(%error, "job history: indexing older jobs failed; the next start tries again");
        }
        Ok(store)
    }

    /// Indexes the jobs of a store written before the history existed, once.
    /// Replicas starting together may both do it: a job already indexed is
    /// skipped, and each job is read and indexed in one script.
    async fn index_history(&self) -> Result<(), StoreError> {
        let mut connection = self.connection();
        let marker = self.key(HISTORY_INDEXED);
        let done: bool = connection.exists(&marker).await.map_err(unavailable)?;
        if done {
            return Ok(());
        }
        let mut cursor: u64 = 0;
        let mut indexed = 0;
        loop {
            // Every job lives in the load index (`jobs`) until long after it expired.
            let (next, entries): (u64, Vec<String>) = redis::cmd("ZSCAN")
                .arg(self.key("jobs"))
                .arg(cursor)
                .arg("COUNT")
                .arg(TRIM_BATCH)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            let ids: Vec<&String> = entries.iter().step_by(2).collect();
            if !ids.is_empty() {
                let mut invocation = self.scripts.index_history.prepare_invoke();
                invocation.arg(&self.prefix).arg(now_ms()).arg(ids);
                let count: usize = invocation
                    .invoke_async(&mut connection)
                    .await
                    .map_err(unavailable)?;
                indexed += count;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        connection
            .set::<_, _, ()>(&marker, 1)
            .await
            .map_err(unavailable)?;
        if indexed > 0 {
            tracing::info!(indexed, "job history: indexed the jobs stored before it");
        }
        Ok(())
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn job_key(&self, job_id: &str) -> String {
        format!("{}job:{job_id}", self.prefix)
    }

    fn connection(&self) -> Connection {
        self.slot.connection()
    }

    /// The history index of `status` jobs: of one deployment, or of all.
    /// (The scripts name the same keys: `history_keys` in common.lua.)
    fn history_key(&self, status: JobStatus, deployment_id: Option<&str>) -> String {
        match deployment_id {
            Some(deployment_id) => format!("{}history:{status}:d:{deployment_id}", self.prefix),
            None => format!("{}history:{status}:all", self.prefix),
        }
    }

    /// The newest `batch` ids of each index older than `before`, read in
    /// one atomic step, so that a job changing status in between is seen in
    /// one index or the other, never in neither.
    async fn newest_ids(
        &self,
        connection: &mut Connection,
        indexes: &[String],
        before: Option<&str>,
        batch: usize,
    ) -> Result<Vec<Vec<String>>, StoreError> {
        let max = before.map_or_else(|| "+".to_owned(), |id| format!("({id}"));
        let mut pipe = redis::pipe();
        pipe.atomic();
        for index in indexes {
            pipe.cmd("ZREVRANGEBYLEX")
                .arg(index)
                .arg(&max)
                .arg("-")
                .arg("LIMIT")
                .arg(0)
                .arg(batch);
        }
        pipe.query_async(connection).await.map_err(unavailable)
    }

    /// The jobs of `ids` that still exist, in that order, read in one round
    /// trip; without `with_output`, their outputs are not read.
    async fn jobs_by_id(
        &self,
        connection: &mut Connection,
        ids: &[String],
        with_output: bool,
    ) -> Result<Vec<Job>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            if with_output {
                pipe.hgetall(self.job_key(id));
            } else {
                pipe.hget(self.job_key(id), &SUMMARY_FIELDS[..]);
            }
        }
        let mut jobs = Vec::with_capacity(ids.len());
        if with_output {
            let hashes: Vec<HashMap<String, Vec<u8>>> =
                pipe.query_async(connection).await.map_err(unavailable)?;
            for (id, fields) in ids.iter().zip(hashes) {
                jobs.extend(parse_job(id, fields)?);
            }
        } else {
            let rows: Vec<Vec<Option<Vec<u8>>>> =
                pipe.query_async(connection).await.map_err(unavailable)?;
            for (id, values) in ids.iter().zip(rows) {
                let fields = SUMMARY_FIELDS
                    .iter()
                    .zip(values)
                    .filter_map(|(name, value)| Some(((*name).to_owned(), value?)))
                    .collect();
                jobs.extend(parse_job(id, fields)?);
            }
        }
        Ok(jobs)
    }

    /// Sets one field of an existing job (never creating one); with
    /// `only_if_unset`, 1 if this call set it, 0 if it was already set.
    async fn set_field(
        &self,
        job_id: &str,
        field: &str,
        value: &str,
        only_if_unset: bool,
    ) -> Result<i64, StoreError> {
        self.scripts
            .set_field
            .key(self.job_key(job_id))
            .arg(field)
            .arg(value)
            .arg(if only_if_unset { "1" } else { "0" })
            .invoke_async(&mut self.connection())
            .await
            .map_err(unavailable)
    }
}

/// Set once the jobs stored before the history existed are indexed.
const HISTORY_INDEXED: &str = "history-indexed";

/// Expired jobs whose history entries one trim script forgets at most: a
/// script blocks the server while it runs.
const TRIM_BATCH: usize = 200;
/// Scripts one trim runs at most; the next sweep goes on from there.
const TRIM_ROUNDS: usize = 50;

/// Every field of a job hash that [`parse_job`] reads, but the output: what
/// a history page reads of each job.
const SUMMARY_FIELDS: [&str; 15] = [
    "reports",
    "deployment_id",
    "output_end",
    "output_base",
    "exit_code",
    "cancelled_by",
    "cancel_requested_by",
    "inventory",
    "status",
    "trigger",
    "created_at",
    "started_at",
    "finished_at",
    "launch",
    "launch_claim",
];

/// Builds a job from its hash; `None` when the hash is empty (no such job).
fn parse_job(
    job_id: &str,
    mut fields: HashMap<String, Vec<u8>>,
) -> Result<Option<Job>, StoreError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let corrupt = || StoreError::Corrupt(format!("job {job_id}"));
    let mut text = |name: &str| {
        fields
            .remove(name)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    };
    let number = |value: Option<String>| value.and_then(|value| value.parse::<i64>().ok());
    let status = text("status")
        .and_then(|s| JobStatus::parse(&s))
        .ok_or_else(corrupt)?;
    let trigger: Trigger = text("trigger")
        .and_then(|raw| serde_json::from_str(&raw).ok())
        .ok_or_else(corrupt)?;
    let launch = match text("launch") {
        Some(raw) => Some(serde_json::from_str::<LaunchData>(&raw).map_err(|_| corrupt())?),
        None => None,
    };
    let reports: Vec<Report> = match text("reports") {
        Some(raw) => serde_json::from_str(&raw).map_err(|_| corrupt())?,
        None => Vec::new(),
    };
    Ok(Some(Job {
        id: job_id.to_owned(),
        deployment_id: text("deployment_id").ok_or_else(corrupt)?,
        inventory: text("inventory").ok_or_else(corrupt)?,
        status,
        output: text("output").unwrap_or_default(),
        output_end: text("output_end")
            .and_then(|end| end.parse().ok())
            .unwrap_or_default(),
        output_base: text("output_base")
            .and_then(|base| base.parse().ok())
            .unwrap_or_default(),
        trigger,
        created_at: number(text("created_at")).ok_or_else(corrupt)?,
        started_at: number(text("started_at")),
        finished_at: number(text("finished_at")),
        exit_code: text("exit_code").and_then(|code| code.parse().ok()),
        cancelled_by: text("cancelled_by"),
        cancel_requested_by: text("cancel_requested_by"),
        launch,
        launch_claim: text("launch_claim"),
        reports,
    }))
}

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn replace_apps(&self, apps: &[AppRecord]) -> Result<(), StoreError> {
        let key = self.key("apps");
        let mut pipe = redis::pipe();
        pipe.atomic().del(&key).ignore();
        let mut entries = Vec::with_capacity(apps.len());
        for app in apps {
            entries.push((app.deployment_id.clone(), StoredApp::of(app).to_json()?));
        }
        if !entries.is_empty() {
            pipe.hset_multiple(&key, &entries).ignore();
        }
        pipe.query_async::<()>(&mut self.connection())
            .await
            .map_err(unavailable)
    }

    async fn apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        let raw: HashMap<String, String> = self
            .connection()
            .hgetall(self.key("apps"))
            .await
            .map_err(unavailable)?;
        let mut apps = raw
            .iter()
            .map(|(id, raw)| parse_app(id, raw))
            .collect::<Result<Vec<_>, _>>()?;
        apps.sort_by(|a, b| a.deployment_id.cmp(&b.deployment_id));
        Ok(apps)
    }

    async fn app(&self, deployment_id: &str) -> Result<Option<AppRecord>, StoreError> {
        let raw: Option<String> = self
            .connection()
            .hget(self.key("apps"), deployment_id)
            .await
            .map_err(unavailable)?;
        raw.map(|raw| parse_app(deployment_id, &raw)).transpose()
    }

    async fn app_and_job(
        &self,
        deployment_id: &str,
        job_id: &str,
    ) -> Result<(Option<AppRecord>, Option<Job>), StoreError> {
        if !is_plausible_job_id(job_id) {
            return Ok((self.app(deployment_id).await?, None));
        }
        let (raw_app, fields): (Option<String>, HashMap<String, Vec<u8>>) = redis::pipe()
            .hget(self.key("apps"), deployment_id)
            .hgetall(self.job_key(job_id))
            .query_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
        let app = raw_app
            .map(|raw| parse_app(deployment_id, &raw))
            .transpose()?;
        Ok((app, parse_job(job_id, fields)?))
    }

    async fn job(&self, job_id: &str) -> Result<Option<Job>, StoreError> {
        if !is_plausible_job_id(job_id) {
            return Ok(None);
        }
        let fields: HashMap<String, Vec<u8>> = self
            .connection()
            .hgetall(self.job_key(job_id))
            .await
            .map_err(unavailable)?;
        parse_job(job_id, fields)
    }

    async fn start_job(&self, job: &NewJob, on_busy: OnBusy) -> Result<StartOutcome, StoreError> {
        let trigger = serde_json::to_string(&job.trigger)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        let reports = if job.reports.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&job.reports)
                .map_err(|error| StoreError::Corrupt(error.to_string()))?
        };
        let reply: Vec<String> = self
            .scripts
            .start
            .key(self.key(&format!("lock:{}", job.inventory)))
            .key(self.key(&format!("queued:{}", job.inventory)))
            .key(self.job_key(&job.id))
            .key(self.key("open"))
            .key(self.key("jobs"))
            .arg(&job.id)
            .arg(on_busy.as_str())
            .arg(self.limits.lock_ttl_ms)
            .arg(self.limits.open_ttl_ms)
            .arg(job.created_at)
            .arg(&job.deployment_id)
            .arg(&job.inventory)
            .arg(trigger)
            .arg(&self.prefix)
            .arg(reports)
            .invoke_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
        let created = |status: JobStatus| job.clone().into_job(status);
        match reply.first().map(String::as_str) {
            Some("started") => Ok(StartOutcome::Started(created(JobStatus::LOCK_HOLDER))),
            Some("queued") => Ok(StartOutcome::Queued(created(JobStatus::WAITING))),
            Some("busy") => Ok(StartOutcome::Busy),
            Some("joined") => {
                let joined_id = reply.get(1).cloned().unwrap_or_default();
                match self.job(&joined_id).await? {
                    Some(joined) => Ok(StartOutcome::Joined(joined)),
                    // The joined job ended and expired in between: nothing to join.
                    None => Ok(StartOutcome::Busy),
                }
            }
            _ => Err(StoreError::Corrupt("unexpected start reply".into())),
        }
    }

    async fn update_job(
        &self,
        job_id: &str,
        update: &JobUpdate,
    ) -> Result<UpdateOutcome, StoreError> {
        if !is_plausible_job_id(job_id) {
            return Ok(UpdateOutcome::NotFound);
        }
        let sources: String = JobStatus::sources_of(update.status)
            .map(|status| format!(",{status}"))
            .collect::<String>()
            + ",";
        let (mode, text) = match &update.output {
            None => ("none", ""),
            Some(OutputChange::Replace(text)) => ("replace", text.as_str()),
            Some(OutputChange::Append(text)) => ("append", text.as_str()),
        };
        let now = now_ms();
        let reply: Vec<String> = self
            .scripts
            .update
            .key(self.job_key(job_id))
            .key(self.key("open"))
            .arg(job_id)
            .arg(update.status.as_str())
            .arg(sources)
            .arg(mode)
            .arg(text)
            .arg(self.limits.max_output)
            .arg(TRUNCATION_MARKER)
            .arg(now)
            .arg(if update.status.is_final() { "1" } else { "0" })
            .arg(self.limits.job_ttl_ms)
            .arg(self.limits.lock_ttl_ms)
            .arg(&self.prefix)
            .arg(
                update
                    .exit_code
                    .map(|code| code.to_string())
                    .unwrap_or_default(),
            )
            .arg(update.cancelled_by.as_deref().unwrap_or_default())
            .arg(if ReportEvent::is_raised_by(update.status) {
                "1"
            } else {
                "0"
            })
            .invoke_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
        match reply.first().map(String::as_str) {
            Some("not_found") => Ok(UpdateOutcome::NotFound),
            Some("refused") => {
                let current = reply
                    .get(1)
                    .and_then(|status| JobStatus::parse(status))
                    .ok_or_else(|| StoreError::Corrupt(format!("job {job_id}")))?;
                Ok(UpdateOutcome::Refused { current })
            }
            Some("applied") => {
                let promoted = match reply.get(1).map(String::as_str) {
                    Some(id) if !id.is_empty() => self.job(id).await?.map(Box::new),
                    _ => None,
                };
                Ok(UpdateOutcome::Applied { promoted })
            }
            _ => Err(StoreError::Corrupt("unexpected update reply".into())),
        }
    }

    async fn append_output(
        &self,
        job_id: &str,
        text: &str,
        launch: Option<&LaunchData>,
    ) -> Result<bool, StoreError> {
        if !is_plausible_job_id(job_id) {
            return Ok(false);
        }
        let launch = match launch {
            Some(data) => serde_json::to_string(data)
                .map_err(|error| StoreError::Corrupt(error.to_string()))?,
            None => String::new(),
        };
        let appended: i64 = self
            .scripts
            .append
            .key(self.job_key(job_id))
            .arg(text)
            .arg(self.limits.max_output)
            .arg(TRUNCATION_MARKER)
            .arg(now_ms())
            .arg(launch)
            .arg(&self.prefix)
            .arg(job_id)
            .invoke_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
        Ok(appended == 1)
    }

    fn job_signals(&self) -> broadcast::Receiver<JobSignal> {
        let receiver = self.signals.subscribe();
        if !self.listening.swap(true, Ordering::AcqRel) {
            super::redis_feed::listen(
                Arc::downgrade(&self.slot),
                format!("{}job-changes", self.prefix),
                self.signals.clone(),
            );
        }
        receiver
    }

    async fn promote_queued(&self, inventory: &str) -> Result<Option<Job>, StoreError> {
        let promoted: String = self
            .scripts
            .promote_queued
            .arg(&self.prefix)
            .arg(inventory)
            .arg(self.limits.lock_ttl_ms)
            .arg(now_ms())
            .invoke_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
        if promoted.is_empty() {
            return Ok(None);
        }
        self.job(&promoted).await
    }

    async fn claim_launch(&self, job_id: &str, claimant: &str) -> Result<bool, StoreError> {
        Ok(self
            .set_field(job_id, "launch_claim", claimant, true)
            .await?
            == 1)
    }

    async fn record_launch(&self, job_id: &str, record: &LaunchData) -> Result<(), StoreError> {
        let json = serde_json::to_string(record)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        self.set_field(job_id, "launch", &json, false)
            .await
            .map(|_| ())
    }

    async fn job_summary(&self, job_id: &str) -> Result<Option<Job>, StoreError> {
        if !is_plausible_job_id(job_id) {
            return Ok(None);
        }
        let ids = [job_id.to_owned()];
        let mut jobs = self.jobs_by_id(&mut self.connection(), &ids, false).await?;
        Ok(jobs.pop())
    }

    async fn request_cancel(&self, job_id: &str, by: &str) -> Result<CancelRequest, StoreError> {
        if !is_plausible_job_id(job_id) {
            return Ok(CancelRequest::NotFound);
        }
        let reply: (String, String) = self
            .scripts
            .request_cancel
            .key(self.job_key(job_id))
            .arg(by)
            .invoke_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
        let status = || {
            JobStatus::parse(&reply.1).ok_or_else(|| StoreError::Corrupt(format!("job {job_id}")))
        };
        match reply.0.as_str() {
            "final" => Ok(CancelRequest::Final(status()?)),
            "requested" => Ok(CancelRequest::Requested(status()?)),
            _ => Ok(CancelRequest::NotFound),
        }
    }

    async fn open_jobs(&self) -> Result<Vec<Job>, StoreError> {
        let mut connection = self.connection();
        let ids: Vec<String> = connection
            .smembers(self.key("open"))
            .await
            .map_err(unavailable)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(self.job_key(id));
        }
        let hashes: Vec<HashMap<String, Vec<u8>>> = pipe
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let mut jobs = Vec::new();
        let mut vanished = Vec::new();
        for (id, fields) in ids.iter().zip(hashes) {
            match parse_job(id, fields)? {
                Some(job) if !job.status.is_final() => jobs.push(job),
                _ => vanished.push(id.clone()),
            }
        }
        if !vanished.is_empty() {
            let _: i64 = connection
                .srem(self.key("open"), vanished)
                .await
                .map_err(unavailable)?;
        }
        Ok(jobs)
    }

    async fn jobs_since(&self, since_ms: i64) -> Result<Vec<(i64, JobStatus)>, StoreError> {
        let mut connection = self.connection();
        let index = self.key("jobs");
        let forgotten_before = now_ms() - self.limits.job_ttl_ms - self.limits.open_ttl_ms;
        let (ids,): (Vec<String>,) = redis::pipe()
            .zrembyscore(&index, "-inf", forgotten_before)
            .ignore()
            .zrangebyscore(&index, since_ms, "+inf")
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hget(self.job_key(id), &["created_at", "status"]);
        }
        let rows: Vec<(Option<i64>, Option<String>)> = pipe
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .filter_map(|(created, status)| Some((created?, JobStatus::parse(&status?)?)))
            .collect())
    }

    /// Reads each wanted status index and merges them newest first. An
    /// index entry whose job expired (its hash gone) is skipped, and so is a
    /// job that left the wanted statuses since the indexes were read; then
    /// the indexes are read again below what was seen, until one job more
    /// than the page is found (a next page exists) or the indexes end.
    async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage, StoreError> {
        let limit = query.page_size();
        let wanted = limit + 1;
        let indexes: Vec<String> = query
            .wanted_statuses()
            .into_iter()
            .map(|status| self.history_key(status, query.deployment_id.as_deref()))
            .collect();
        let mut connection = self.connection();
        let mut before = query
            .before
            .as_ref()
            .map(|cursor| cursor.as_str().to_owned());
        let mut found: Vec<Job> = Vec::with_capacity(wanted);
        loop {
            let lists = self
                .newest_ids(&mut connection, &indexes, before.as_deref(), wanted)
                .await?;
            let (ids, more) = merge_newest(lists, wanted, wanted - found.len());
            let jobs = self
                .jobs_by_id(&mut connection, &ids, query.with_output)
                .await?;
            found.extend(jobs.into_iter().filter(|job| query.matches(job)));
            match ids.last() {
                Some(last) if more && found.len() < wanted => before = Some(last.clone()),
                _ => break,
            }
        }
        Ok(JobPage::of(found, limit))
    }

    async fn last_jobs(&self, deployment_ids: &[String]) -> Result<Vec<Option<Job>>, StoreError> {
        let statuses = JobStatus::ALL;
        let indexes: Vec<String> = deployment_ids
            .iter()
            .flat_map(|id| statuses.map(|status| self.history_key(status, Some(id))))
            .collect();
        let mut connection = self.connection();
        // Each index's newest id, then the newest of each deployment: two
        // round trips for every deployment.
        let newest = self.newest_ids(&mut connection, &indexes, None, 1).await?;
        let candidates: Vec<Option<String>> = newest
            .chunks(statuses.len())
            .map(|lists| lists.iter().flatten().max().cloned())
            .collect();
        let ids: Vec<String> = candidates.iter().flatten().cloned().collect();
        let mut jobs: HashMap<String, Job> = self
            .jobs_by_id(&mut connection, &ids, false)
            .await?
            .into_iter()
            .map(|job| (job.id.clone(), job))
            .collect();
        let mut last = Vec::with_capacity(deployment_ids.len());
        for (deployment_id, candidate) in deployment_ids.iter().zip(candidates) {
            let Some(id) = candidate else {
                last.push(None);
                continue;
            };
            match jobs.remove(&id) {
                Some(job) => last.push(Some(job)),
                // The newest expired and is not trimmed yet: ask the history.
                None => {
                    let query = JobQuery {
                        deployment_id: Some(deployment_id.clone()),
                        limit: 1,
                        ..JobQuery::default()
                    };
                    last.push(self.list_jobs(&query).await?.jobs.into_iter().next());
                }
            }
        }
        Ok(last)
    }

    async fn trim_history(&self) -> Result<usize, StoreError> {
        let mut forgotten = 0;
        for _ in 0..TRIM_ROUNDS {
            let (trimmed, due): (usize, usize) = self
                .scripts
                .trim_history
                .key(self.key("history:expiring"))
                .arg(&self.prefix)
                .arg(now_ms())
                .arg(TRIM_BATCH)
                .invoke_async(&mut self.connection())
                .await
                .map_err(unavailable)?;
            forgotten += trimmed;
            if due < TRIM_BATCH {
                break;
            }
        }
        Ok(forgotten)
    }

    async fn remember(&self, keys: &[&str], ttl_ms: i64) -> Result<bool, StoreError> {
        let mut invocation = self.scripts.remember.prepare_invoke();
        for key in keys {
            invocation.key(self.key(&format!("seen:{key}")));
        }
        let first: i64 = invocation
            .arg(ttl_ms.max(1))
            .invoke_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
        Ok(first == 1)
    }

    async fn forget(&self, keys: &[&str]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = keys
            .iter()
            .map(|key| self.key(&format!("seen:{key}")))
            .collect();
        self.connection()
            .del::<_, ()>(keys)
            .await
            .map_err(unavailable)
    }

    async fn claim_reports(
        &self,
        claimant: &str,
        lease_ms: i64,
        max: usize,
    ) -> Result<Vec<Job>, StoreError> {
        let mut connection = self.connection();
        let ids: Vec<String> = self
            .scripts
            .claim_reports
            .key(self.key("outbox"))
            .arg(now_ms())
            .arg(claimant)
            .arg(lease_ms)
            .arg(max.max(1))
            .arg(&self.prefix)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        self.jobs_by_id(&mut connection, &ids, false).await
    }

    async fn finish_reports(
        &self,
        job_id: &str,
        claimant: &str,
        seen: JobStatus,
        reports: &[Report],
        next_due: Option<i64>,
    ) -> Result<bool, StoreError> {
        let reports = serde_json::to_string(reports)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        let kept: i64 = self
            .scripts
            .finish_reports
            .key(self.job_key(job_id))
            .key(self.key("outbox"))
            .key(self.key(&format!("outbox-lease:{job_id}")))
            .arg(job_id)
            .arg(claimant)
            .arg(seen.as_str())
            .arg(reports)
            .arg(next_due.map(|due| due.to_string()).unwrap_or_default())
            .arg(now_ms())
            .invoke_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
        Ok(kept == 1)
    }

    async fn save_session(
        &self,
        key: &str,
        session: &SessionRecord,
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        let value = serde_json::to_string(session)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        self.connection()
            .pset_ex::<_, _, ()>(
                self.key(&format!("session:{key}")),
                value,
                ttl_ms.max(1) as u64,
            )
            .await
            .map_err(unavailable)
    }

    async fn session(&self, key: &str) -> Result<Option<SessionRecord>, StoreError> {
        let value: Option<String> = self
            .connection()
            .get(self.key(&format!("session:{key}")))
            .await
            .map_err(unavailable)?;
        value
            .map(|raw| {
                serde_json::from_str(&raw).map_err(|_| StoreError::Corrupt("session".into()))
            })
            .transpose()
    }

    async fn end_session(&self, key: &str) -> Result<(), StoreError> {
        self.connection()
            .del::<_, ()>(self.key(&format!("session:{key}")))
            .await
            .map_err(unavailable)
    }

    async fn heartbeat(&self, instance: &str, ttl_ms: i64) -> Result<(), StoreError> {
        let now = now_ms();
        let key = self.key("instances");
        redis::pipe()
            .zrembyscore(&key, "-inf", now)
            .ignore()
            .zadd(&key, instance, now.saturating_add(ttl_ms.max(1)))
            .ignore()
            .query_async::<()>(&mut self.connection())
            .await
            .map_err(unavailable)
    }

    async fn retire(&self, instance: &str) -> Result<(), StoreError> {
        self.connection()
            .zrem::<_, _, ()>(self.key("instances"), instance)
            .await
            .map_err(unavailable)
    }

    async fn live_instances(&self) -> Result<Vec<String>, StoreError> {
        self.connection()
            .zrangebyscore(self.key("instances"), format!("({}", now_ms()), "+inf")
            .await
            .map_err(unavailable)
    }

    async fn take_over(&self, job_id: &str, from: &str, to: &str) -> Result<bool, StoreError> {
        if !is_plausible_job_id(job_id) {
            return Ok(false);
        }
        // Rare (a sweep after a replica died): the script is built per call.
        let script = Script::new(&format!(
            "{}\n{}",
            status_prelude(),
            include_str!("lua/take_over.lua")
        ));
        let taken: i64 = script
            .key(self.job_key(job_id))
            .arg(from)
            .arg(to)
            .invoke_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
        Ok(taken == 1)
    }

    async fn signing_key(&self, proposed: &str) -> Result<String, StoreError> {
        let key = self.key("signing-key");
        let (_, kept): (Option<String>, String) = redis::pipe()
            .cmd("SET")
            .arg(&key)
            .arg(proposed)
            .arg("NX")
            .cmd("GET")
            .arg(&key)
            .query_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
        Ok(kept)
    }
}
