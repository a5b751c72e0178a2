//! The embedded backend: one redb file under `CD_DATA_DIR`. Every change is
//! one serializable write transaction, so each guarantee of the Redis
//! backend's scripts holds here by construction; the file is locked while
//! open, so a second service on the same data dir cannot corrupt it. After an
//! I/O failure (a full disk) redb refuses every later transaction until the
//! database is reopened, so the store reopens it itself.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, Table, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::{
    apply_output, parse_app, AppRecord, CancelRequest, JobChange, JobLimits, JobPage, JobQuery,
    JobSignal, JobUpdate, OutputChange, SessionRecord, StartOutcome, Store, StoreError, StoredApp,
    UpdateOutcome, SIGNAL_BACKLOG,
};
use crate::domain::{
    is_plausible_job_id, now_ms, Job, JobStatus, LaunchData, NewJob, OnBusy, Report, ReportEvent,
};

mod reports;

const APPS: TableDefinition<&str, &str> = TableDefinition::new("apps");
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
/// Inventory → [`Lock`].
const LOCKS: TableDefinition<&str, &[u8]> = TableDefinition::new("locks");
/// Inventory → its one queued job.
const QUEUED: TableDefinition<&str, &str> = TableDefinition::new("queued");
const OPEN: TableDefinition<&str, ()> = TableDefinition::new("open");
/// (created_at, job id), for the load and for purging.
const INDEX: TableDefinition<(i64, &str), ()> = TableDefinition::new("index");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// Job id → the job as in [`JOBS`] but with an empty output: what the
/// history and the load read, however long outputs are.
const SUMMARIES: TableDefinition<&str, &[u8]> = TableDefinition::new("summaries");
/// The history: (status, scope, job id), scope being [`ALL_DEPLOYMENTS`] or
/// [`deployment_scope`]. Ids are ULIDs, so a scope's ids of one status sort in
/// creation order.
const HISTORY: TableDefinition<(&str, &str, &str), ()> = TableDefinition::new("history");
/// (expires_at, job id): which jobs a purge deletes, without reading the others.
const EXPIRY: TableDefinition<(i64, &str), ()> = TableDefinition::new("expiry");
/// The `META` key set once the history indexes hold every job (a store file
/// written before them is indexed when it is opened).
const HISTORY_INDEXED: &str = "history-indexed";
/// The history scope of every deployment's jobs; a deployment's scope is
/// never empty.
const ALL_DEPLOYMENTS: &str = "";
/// Remembered keys → Unix ms when they are forgotten.
const SEEN: TableDefinition<&str, i64> = TableDefinition::new("seen");
/// Session key → [`StoredSession`].
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// Instance leases are kept among the remembered keys, under this prefix.
const INSTANCE_PREFIX: &str = "instance:";

/// How often expired jobs are deleted (reads already ignore them).
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// The least time between two reopens: a disk that stays full must not make
/// every request rebuild the database from its file.
const REOPEN_PAUSE: Duration = Duration::from_secs(1);

/// The `META` key `ping` writes: readiness is a durable write.
const READY_PROBE: &str = "ready-probe";

#[derive(Serialize, Deserialize)]
struct StoredJob {
    #[serde(flatten)]
    job: Job,
    /// Unix ms after which the job is gone.
    expires_at: i64,
}

#[derive(Serialize, Deserialize)]
struct StoredSession {
    #[serde(flatten)]
    session: SessionRecord,
    /// Unix ms after which the session is gone.
    expires_at: i64,
}

#[derive(Serialize, Deserialize)]
struct Lock {
    job_id: String,
    expires_at: i64,
}

pub struct EmbeddedStore {
    file: Arc<StoreFile>,
    limits: JobLimits,
    /// Every saved change of a job's status or output, in-process: this
    /// store has no other instance to hear from.
    signals: broadcast::Sender<JobSignal>,
}

/// The store file and the database open on it, closed after an I/O failure
/// and opened again on the next use.
struct StoreFile {
    path: PathBuf,
    // Every operation holds a read guard while it uses the database; a close
    // or a reopen holds the write guard, so it waits for the operations in
    // flight and drops the one `Database` (releasing its file lock: no write
    // transaction outlives an operation) before `Database::create` locks again.
    state: RwLock<OpenState>,
}

struct OpenState {
    /// `None` once an I/O failure closed it.
    db: Option<Database>,
    /// Counts closes, so that the tasks failing on one database close it once.
    generation: u64,
    last_reopen: Option<Instant>,
}

/// Why a store operation failed: an I/O failure, after which redb answers
/// every transaction with `PreviousIo` until the database is reopened, or
/// anything else.
enum Fault {
    Io(String),
    Store(StoreError),
}

impl From<StoreError> for Fault {
    fn from(error: StoreError) -> Fault {
        Fault::Store(error)
    }
}

impl From<Fault> for StoreError {
    fn from(fault: Fault) -> StoreError {
        match fault {
            Fault::Io(error) => StoreError::Unavailable(error),
            Fault::Store(error) => error,
        }
    }
}

fn unavailable(error: impl Into<redb::Error>) -> Fault {
    match error.into() {
        error @ (redb::Error::Io(_) | redb::Error::PreviousIo) => Fault::Io(error.to_string()),
        error => Fault::Store(StoreError::Unavailable(error.to_string())),
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|error| StoreError::Corrupt(error.to_string()))
}

type JobsTable<'t> = Table<'t, &'static str, &'static [u8]>;

fn read_job(
    jobs: &impl ReadableTable<&'static str, &'static [u8]>,
    job_id: &str,
    now: i64,
) -> Result<Option<StoredJob>, Fault> {
    let Some(raw) = jobs.get(job_id).map_err(unavailable)? else {
        return Ok(None);
    };
    let stored: StoredJob =
        serde_json::from_slice(raw.value()).map_err(|_| corrupt(&format!("job {job_id}")))?;
    Ok((stored.expires_at > now).then_some(stored))
}

fn deployment_scope(deployment_id: &str) -> String {
    format!("={deployment_id}")
}

fn parse_stored(raw: &[u8], job_id: &str) -> Result<StoredJob, Fault> {
    serde_json::from_slice(raw).map_err(|_| Fault::Store(corrupt(&format!("job {job_id}"))))
}

/// The job tables of a write, changed together by [`JobTables::save`] and
/// [`JobTables::delete`] only, so that the summaries, the history and the
/// expiry order always match the jobs.
struct JobTables<'t> {
    jobs: JobsTable<'t>,
    summaries: JobsTable<'t>,
    history: Table<'t, (&'static str, &'static str, &'static str), ()>,
    expiry: Table<'t, (i64, &'static str), ()>,
}

impl<'t> JobTables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<JobTables<'t>, Fault> {
        Ok(JobTables {
            jobs: txn.open_table(JOBS).map_err(unavailable)?,
            summaries: txn.open_table(SUMMARIES).map_err(unavailable)?,
            history: txn.open_table(HISTORY).map_err(unavailable)?,
            expiry: txn.open_table(EXPIRY).map_err(unavailable)?,
        })
    }

    /// Writes the job, its summary, and moves its history and expiry
    /// entries when its status or expiry changed.
    fn save(&mut self, stored: &mut StoredJob) -> Result<(), Fault> {
        let full = encode(stored)?;
        let output = std::mem::take(&mut stored.job.output);
        let summary = encode(stored);
        stored.job.output = output;
        let summary = summary?;
        let id = stored.job.id.as_str();
        self.jobs.insert(id, full.as_slice()).map_err(unavailable)?;
        let previous = match self.summaries.get(id).map_err(unavailable)? {
            Some(raw) if raw.value() == summary.as_slice() => return Ok(()),
            Some(raw) => Some(parse_stored(raw.value(), id)?),
            None => None,
        };
        self.summaries
            .insert(id, summary.as_slice())
            .map_err(unavailable)?;
        let job = &stored.job;
        if previous.as_ref().map(|old| old.job.status) != Some(job.status) {
            if let Some(old) = &previous {
                self.unindex(&old.job)?;
            }
            let scope = deployment_scope(&job.deployment_id);
            for scope in [ALL_DEPLOYMENTS, scope.as_str()] {
                self.history
                    .insert((job.status.as_str(), scope, id), ())
                    .map_err(unavailable)?;
            }
        }
        if previous.as_ref().map(|old| old.expires_at) != Some(stored.expires_at) {
            if let Some(old) = &previous {
                self.expiry
                    .remove((old.expires_at, id))
                    .map_err(unavailable)?;
            }
            self.expiry
                .insert((stored.expires_at, id), ())
                .map_err(unavailable)?;
        }
        Ok(())
    }

    fn unindex(&mut self, job: &Job) -> Result<(), Fault> {
        let scope = deployment_scope(&job.deployment_id);
        for scope in [ALL_DEPLOYMENTS, scope.as_str()] {
            self.history
                .remove((job.status.as_str(), scope, job.id.as_str()))
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// Deletes a job and every entry naming it; returns its summary.
    fn delete(&mut self, job_id: &str) -> Result<Option<StoredJob>, Fault> {
        self.jobs.remove(job_id).map_err(unavailable)?;
        let Some(raw) = self.summaries.remove(job_id).map_err(unavailable)? else {
            return Ok(None);
        };
        let summary = parse_stored(raw.value(), job_id)?;
        drop(raw);
        self.unindex(&summary.job)?;
        self.expiry
            .remove((summary.expires_at, job_id))
            .map_err(unavailable)?;
        Ok(Some(summary))
    }
}

fn live_lock(
    locks: &impl ReadableTable<&'static str, &'static [u8]>,
    inventory: &str,
    now: i64,
) -> Result<Option<Lock>, Fault> {
    let Some(raw) = locks.get(inventory).map_err(unavailable)? else {
        return Ok(None);
    };
    let lock: Lock = serde_json::from_slice(raw.value()).map_err(|_| corrupt("lock"))?;
    Ok((lock.expires_at > now).then_some(lock))
}

fn write(
    db: &Database,
    change: impl FnOnce(&WriteTransaction) -> Result<(), Fault>,
) -> Result<(), Fault> {
    let txn = db.begin_write().map_err(unavailable)?;
    change(&txn)?;
    txn.commit().map_err(unavailable)
}

/// Hands the inventory's lock to its queued job when the lock is free.
fn promote(
    txn: &WriteTransaction,
    limits: &JobLimits,
    inventory: &str,
    now: i64,
) -> Result<Option<Job>, Fault> {
    let mut locks = txn.open_table(LOCKS).map_err(unavailable)?;
    if live_lock(&locks, inventory, now)?.is_some() {
        return Ok(None);
    }
    let mut queued = txn.open_table(QUEUED).map_err(unavailable)?;
    let Some(job_id) = queued
        .remove(inventory)
        .map_err(unavailable)?
        .map(|id| id.value().to_owned())
    else {
        return Ok(None);
    };
    let mut tables = JobTables::open(txn)?;
    let Some(mut stored) = read_job(&tables.jobs, &job_id, now)? else {
        return Ok(None);
    };
    if stored.job.status != JobStatus::WAITING {
        return Ok(None);
    }
    stored.job.status = JobStatus::LOCK_HOLDER;
    stored.job.started_at = Some(now);
    tables.save(&mut stored)?;
    let lock = Lock {
        job_id: job_id.clone(),
        expires_at: now + limits.lock_ttl_ms,
    };
    locks
        .insert(inventory, encode(&lock)?.as_slice())
        .map_err(unavailable)?;
    Ok(Some(stored.job))
}

/// Opens (or creates) the database at `path` and its tables.
fn open_database(path: &Path) -> Result<Database, StoreError> {
    let db = Database::create(path).map_err(|error| match error {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(path.display().to_string()),
        other => StoreError::Unavailable(format!("{}: {other}", path.display())),
    })?;
    write(&db, |txn| {
        txn.open_table(APPS).map_err(unavailable)?;
        txn.open_table(JOBS).map_err(unavailable)?;
        txn.open_table(LOCKS).map_err(unavailable)?;
        txn.open_table(QUEUED).map_err(unavailable)?;
        txn.open_table(OPEN).map_err(unavailable)?;
        txn.open_table(INDEX).map_err(unavailable)?;
        txn.open_table(META).map_err(unavailable)?;
        txn.open_table(SEEN).map_err(unavailable)?;
        txn.open_table(SESSIONS).map_err(unavailable)?;
        reports::create_table(txn)?;
        JobTables::open(txn)?;
        Ok(())
    })?;
    write(&db, index_history)?;
    Ok(db)
}

impl StoreFile {
    /// Runs `work` on the database, reopening it first if an I/O failure
    /// closed it, and closing it if `work` meets one.
    fn run<T>(&self, work: impl FnOnce(&Database) -> Result<T, Fault>) -> Result<T, StoreError> {
        let state = self.open_state()?;
        let Some(db) = &state.db else {
            return Err(StoreError::Unavailable(
                "the store file was closed after an I/O error".to_owned(),
            ));
        };
        match work(db) {
            Ok(value) => Ok(value),
            Err(Fault::Store(error)) => Err(error),
            Err(Fault::Io(error)) => {
                let generation = state.generation;
                drop(state);
                self.close(generation, &error);
                Err(StoreError::Unavailable(error))
            }
        }
    }

    /// A read guard on the state, the database reopened if it was closed.
    fn open_state(&self) -> Result<RwLockReadGuard<'_, OpenState>, StoreError> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        if state.db.is_some() {
            return Ok(state);
        }
        drop(state);
        self.reopen()?;
        Ok(self.state.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Drops the database that failed, unless another task did already.
    fn close(&self, generation: u64, error: &str) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if state.generation != generation {
            return;
        }
        state.generation += 1;
        if let Some(db) = state.db.take() {
            tracing::warn!(%error, path = %self.path.display(),
                           "store I/O failure: closing the store file to reopen it");
            // Its error is the latched I/O failure again: the file is left
            // for the reopen to recover, as after a crash.
            let _ = db.close();
        }
    }

    fn reopen(&self) -> Result<(), StoreError> {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if state.db.is_some() {
            return Ok(());
        }
        if state
            .last_reopen
            .is_some_and(|at| at.elapsed() < REOPEN_PAUSE)
        {
            return Err(StoreError::Unavailable(
                "the store file was closed after an I/O error and is reopened shortly".to_owned(),
            ));
        }
        state.last_reopen = Some(Instant::now());
        let db = open_database(&self.path)?;
        tracing::info!(path = %self.path.display(), "store file reopened");
        state.db = Some(db);
        Ok(())
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store file; refuses a file another process holds.
    pub fn open(path: &Path, limits: JobLimits) -> Result<EmbeddedStore, StoreError> {
        // The file holds the generated signing key: the service user's alone.
        if let Some(dir) = path.parent() {
            crate::private_files::private_dir(dir)
                .map_err(|error| StoreError::Unavailable(format!("{}: {error}", dir.display())))?;
        }
        crate::private_files::ensure_private_file(path)
            .map_err(|error| StoreError::Unavailable(format!("{}: {error}", path.display())))?;
        let db = open_database(path)?;
        let file = StoreFile {
            path: path.to_owned(),
            state: RwLock::new(OpenState {
                db: Some(db),
                generation: 0,
                last_reopen: None,
            }),
        };
        let store = EmbeddedStore {
            file: Arc::new(file),
            limits,
            signals: broadcast::channel(SIGNAL_BACKLOG).0,
        };
        store.spawn_purge();
        Ok(store)
    }

    fn spawn_purge(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let file = Arc::downgrade(&self.file);
        runtime.spawn(async move {
            // The first tick waits a period: a store dropped soon after it
            // opened must release its file at once.
            let mut ticker =
                tokio::time::interval_at(tokio::time::Instant::now() + PURGE_EVERY, PURGE_EVERY);
            loop {
                ticker.tick().await;
                // Stops once the store is dropped.
                let Some(file) = file.upgrade() else { return };
                let purged = tokio::task::spawn_blocking(move || file.run(purge)).await;
                if let Ok(Err(error)) = purged {
                    tracing::warn!(%error, "purging expired jobs failed");
                }
            }
        });
    }

    /// Runs blocking store work off the async workers.
    async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database, &JobLimits) -> Result<T, Fault> + Send + 'static,
    {
        let file = Arc::clone(&self.file);
        let limits = self.limits;
        tokio::task::spawn_blocking(move || file.run(|db| work(db, &limits)))
            .await
            .map_err(|error| StoreError::Unavailable(error.to_string()))?
    }

    /// Announces a saved change (nobody may be listening).
    fn announce(&self, job: &Job, added: String) {
        let _ = self.signals.send(JobSignal::Changed(change_of(job, added)));
    }

    async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, Fault> + Send + 'static,
    {
        self.run(move |db, _| work(&db.begin_read().map_err(unavailable)?))
            .await
    }
}

/// Deletes jobs past their expiry and every index entry naming them (reads
/// already skip them); returns how many it deleted. Only the expired jobs
/// are read, through the expiry order.
fn purge(db: &Database) -> Result<usize, Fault> {
    let now = now_ms();
    let mut purged = 0;
    write(db, |txn| {
        let mut tables = JobTables::open(txn)?;
        let mut index = txn.open_table(INDEX).map_err(unavailable)?;
        let mut due = Vec::new();
        // `read_job` counts a job gone once `expires_at <= now`.
        let until = (now.saturating_add(1), "");
        for entry in tables.expiry.range(..until).map_err(unavailable)? {
            let (key, _) = entry.map_err(unavailable)?;
            due.push(key.value().1.to_owned());
        }
        for id in due {
            if let Some(summary) = tables.delete(&id)? {
                index
                    .remove((summary.job.created_at, id.as_str()))
                    .map_err(unavailable)?;
                purged += 1;
            }
        }
        let mut seen = txn.open_table(SEEN).map_err(unavailable)?;
        seen.retain(|_, forget_at| forget_at > now)
            .map_err(unavailable)?;
        let mut sessions = txn.open_table(SESSIONS).map_err(unavailable)?;
        sessions
            .retain(|_, raw| {
                serde_json::from_slice::<StoredSession>(raw)
                    .is_ok_and(|stored| stored.expires_at > now)
            })
            .map_err(unavailable)?;
        Ok(())
    })?;
    Ok(purged)
}

/// Indexes the jobs of a store file written before the history existed:
/// once, when it is first opened by a service that keeps the history.
fn index_history(txn: &WriteTransaction) -> Result<(), Fault> {
    let mut meta = txn.open_table(META).map_err(unavailable)?;
    if meta.get(HISTORY_INDEXED).map_err(unavailable)?.is_some() {
        return Ok(());
    }
    let mut tables = JobTables::open(txn)?;
    let mut ids = Vec::new();
    for entry in tables.jobs.iter().map_err(unavailable)? {
        let (id, _) = entry.map_err(unavailable)?;
        ids.push(id.value().to_owned());
    }
    for id in ids {
        let mut stored = match tables.jobs.get(id.as_str()).map_err(unavailable)? {
            Some(raw) => parse_stored(raw.value(), &id)?,
            None => continue,
        };
        tables.save(&mut stored)?;
    }
    meta.insert(HISTORY_INDEXED, "1").map_err(unavailable)?;
    Ok(())
}

/// One page of the history from a read transaction: the wanted status
/// indexes of the scope, walked newest first below the cursor and merged.
/// Every index entry names a job in that status (a move is one
/// transaction), so only expired jobs are skipped; reading stops at one job
/// more than the page, which proves a next page exists.
fn history_page(txn: &ReadTransaction, query: &JobQuery) -> Result<JobPage, Fault> {
    let limit = query.page_size();
    let history = txn.open_table(HISTORY).map_err(unavailable)?;
    let summaries = txn.open_table(SUMMARIES).map_err(unavailable)?;
    let jobs = txn.open_table(JOBS).map_err(unavailable)?;
    let scope = query
        .deployment_id
        .as_deref()
        .map_or_else(|| ALL_DEPLOYMENTS.to_owned(), deployment_scope);
    // The least key above every id of the scope.
    let scope_end = format!("{scope}\0");
    let mut sources = Vec::new();
    for status in query.wanted_statuses() {
        let slot = status.as_str();
        let lowest = (slot, scope.as_str(), "");
        let range = match &query.before {
            Some(cursor) => history.range(lowest..(slot, scope.as_str(), cursor.as_str())),
            None => history.range(lowest..(slot, scope_end.as_str(), "")),
        };
        sources.push(range.map_err(unavailable)?.rev());
    }
    let mut heads: Vec<Option<String>> = Vec::with_capacity(sources.len());
    for source in &mut sources {
        heads.push(next_id(source)?);
    }
    let now = now_ms();
    let mut found = Vec::new();
    while found.len() <= limit {
        let Some((newest, id)) = heads
            .iter()
            .enumerate()
            .filter_map(|(at, head)| Some((at, head.clone()?)))
            .max_by(|a, b| a.1.cmp(&b.1))
        else {
            break;
        };
        heads[newest] = next_id(&mut sources[newest])?;
        let table = if query.with_output { &jobs } else { &summaries };
        match read_job(table, &id, now)? {
            Some(stored) if query.matches(&stored.job) => found.push(stored.job),
            _ => {}
        }
    }
    Ok(JobPage::of(found, limit))
}

type HistoryRange<'t> =
    std::iter::Rev<redb::Range<'t, (&'static str, &'static str, &'static str), ()>>;

fn next_id(source: &mut HistoryRange<'_>) -> Result<Option<String>, Fault> {
    match source.next() {
        Some(entry) => {
            let (key, _) = entry.map_err(unavailable)?;
            Ok(Some(key.value().2.to_owned()))
        }
        None => Ok(None),
    }
}

/// Whether any of `keys` is still remembered.
fn any_held(seen: &impl ReadableTable<&'static str, i64>, keys: &[String]) -> Result<bool, Fault> {
    let now = now_ms();
    for key in keys {
        let held = seen
            .get(key.as_str())
            .map_err(unavailable)?
            .is_some_and(|forget_at| forget_at.value() > now);
        if held {
            return Ok(true);
        }
    }
    Ok(false)
}

fn read_app(
    apps: &impl ReadableTable<&'static str, &'static str>,
    deployment_id: &str,
) -> Result<Option<AppRecord>, Fault> {
    apps.get(deployment_id)
        .map_err(unavailable)?
        .map(|raw| parse_app(deployment_id, raw.value()))
        .transpose()
        .map_err(Fault::from)
}

#[async_trait]
impl Store for EmbeddedStore {
    /// Ready means able to write: a read passes on a database that redb
    /// refuses every write to. One small durable write, cheap at the pace
    /// `/readyz` is polled.
    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|db, _| {
            write(db, |txn| {
                let mut meta = txn.open_table(META).map_err(unavailable)?;
                meta.insert(READY_PROBE, now_ms().to_string().as_str())
                    .map_err(unavailable)?;
                Ok(())
            })
        })
        .await
    }

    async fn replace_apps(&self, apps: &[AppRecord]) -> Result<(), StoreError> {
        let entries = apps
            .iter()
            .map(|app| Ok((app.deployment_id.clone(), StoredApp::of(app).to_json()?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.run(move |db, _| {
            write(db, |txn| {
                let mut table = txn.open_table(APPS).map_err(unavailable)?;
                table.retain(|_, _| false).map_err(unavailable)?;
                for (id, json) in &entries {
                    table
                        .insert(id.as_str(), json.as_str())
                        .map_err(unavailable)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(APPS).map_err(unavailable)?;
            let mut apps = Vec::new();
            for entry in table.iter().map_err(unavailable)? {
                let (id, raw) = entry.map_err(unavailable)?;
                apps.push(parse_app(id.value(), raw.value())?);
            }
            Ok(apps)
        })
        .await
    }

    async fn app(&self, deployment_id: &str) -> Result<Option<AppRecord>, StoreError> {
        let deployment_id = deployment_id.to_owned();
        self.read(move |txn| read_app(&txn.open_table(APPS).map_err(unavailable)?, &deployment_id))
            .await
    }

    async fn app_and_job(
        &self,
        deployment_id: &str,
        job_id: &str,
    ) -> Result<(Option<AppRecord>, Option<Job>), StoreError> {
        let (deployment_id, job_id) = (deployment_id.to_owned(), job_id.to_owned());
        self.read(move |txn| {
            let app = read_app(&txn.open_table(APPS).map_err(unavailable)?, &deployment_id)?;
            if !is_plausible_job_id(&job_id) {
                return Ok((app, None));
            }
            let jobs = txn.open_table(JOBS).map_err(unavailable)?;
            let job = read_job(&jobs, &job_id, now_ms())?.map(|stored| stored.job);
            Ok((app, job))
        })
        .await
    }

    async fn job(&self, job_id: &str) -> Result<Option<Job>, StoreError> {
        if !is_plausible_job_id(job_id) {
            return Ok(None);
        }
        let job_id = job_id.to_owned();
        self.read(move |txn| {
            let jobs = txn.open_table(JOBS).map_err(unavailable)?;
            Ok(read_job(&jobs, &job_id, now_ms())?.map(|stored| stored.job))
        })
        .await
    }

    async fn start_job(&self, job: &NewJob, on_busy: OnBusy) -> Result<StartOutcome, StoreError> {
        let new = job.clone();
        self.run(move |db, limits| {
            if let Some(answer) =
                busy_answer(&db.begin_read().map_err(unavailable)?, &new, on_busy)?
            {
                return Ok(answer);
            }
            let txn = db.begin_write().map_err(unavailable)?;
            let outcome = start(&txn, limits, new, on_busy)?;
            txn.commit().map_err(unavailable)?;
            Ok(outcome)
        })
        .await
    }

    async fn update_job(
        &self,
        job_id: &str,
        update: &JobUpdate,
    ) -> Result<UpdateOutcome, StoreError> {
        if !is_plausible_job_id(job_id) {
            return Ok(UpdateOutcome::NotFound);
        }
        let (job_id, update) = (job_id.to_owned(), update.clone());
        let (outcome, change) = self
            .run(move |db, limits| {
                let txn = db.begin_write().map_err(unavailable)?;
                let (outcome, change) = apply_update(&txn, limits, &job_id, &update)?;
                // A refused update changed nothing: dropping the transaction aborts it.
                if matches!(outcome, UpdateOutcome::Applied { .. }) {
                    txn.commit().map_err(unavailable)?;
                }
                Ok((outcome, change))
            })
            .await?;
        if let Some(change) = change {
            let _ = self.signals.send(JobSignal::Changed(change));
        }
        if let UpdateOutcome::Applied {
            promoted: Some(job),
        } = &outcome
        {
            self.announce(job, String::new());
        }
        Ok(outcome)
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
        let (job_id, text, launch) = (job_id.to_owned(), text.to_owned(), launch.cloned());
        let appended = self
            .run(move |db, limits| {
                let mut appended = None;
                write(db, |txn| {
                    let mut tables = JobTables::open(txn)?;
                    if let Some(mut stored) = read_job(&tables.jobs, &job_id, now_ms())? {
                        if !stored.job.status.is_final() {
                            let change = OutputChange::Append(text);
                            let added = change_output(&mut stored.job, &change, limits);
                            if launch.is_some() {
                                stored.job.launch = launch;
                            }
                            tables.save(&mut stored)?;
                            appended = Some(change_of(&stored.job, added));
                        }
                    }
                    Ok(())
                })?;
                Ok(appended)
            })
            .await?;
        let Some(change) = appended else {
            return Ok(false);
        };
        let _ = self.signals.send(JobSignal::Changed(change));
        Ok(true)
    }

    async fn promote_queued(&self, inventory: &str) -> Result<Option<Job>, StoreError> {
        let inventory = inventory.to_owned();
        let promoted = self
            .run(move |db, limits| {
                let txn = db.begin_write().map_err(unavailable)?;
                let promoted = promote(&txn, limits, &inventory, now_ms())?;
                txn.commit().map_err(unavailable)?;
                Ok(promoted)
            })
            .await?;
        if let Some(job) = &promoted {
            self.announce(job, String::new());
        }
        Ok(promoted)
    }

    fn job_signals(&self) -> broadcast::Receiver<JobSignal> {
        self.signals.subscribe()
    }

    async fn claim_launch(&self, job_id: &str, claimant: &str) -> Result<bool, StoreError> {
        let (job_id, claimant) = (job_id.to_owned(), claimant.to_owned());
        self.run(move |db, _| {
            let mut claimed = false;
            write(db, |txn| {
                let mut tables = JobTables::open(txn)?;
                if let Some(mut stored) = read_job(&tables.jobs, &job_id, now_ms())? {
                    if stored.job.launch_claim.is_none() {
                        stored.job.launch_claim = Some(claimant);
                        tables.save(&mut stored)?;
                        claimed = true;
                    }
                }
                Ok(())
            })?;
            Ok(claimed)
        })
        .await
    }

    async fn record_launch(&self, job_id: &str, record: &LaunchData) -> Result<(), StoreError> {
        let (job_id, record) = (job_id.to_owned(), record.clone());
        self.run(move |db, _| {
            write(db, |txn| {
                let mut tables = JobTables::open(txn)?;
                if let Some(mut stored) = read_job(&tables.jobs, &job_id, now_ms())? {
                    stored.job.launch = Some(record);
                    tables.save(&mut stored)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn job_summary(&self, job_id: &str) -> Result<Option<Job>, StoreError> {
        if !is_plausible_job_id(job_id) {
            return Ok(None);
        }
        let job_id = job_id.to_owned();
        self.read(move |txn| {
            let summaries = txn.open_table(SUMMARIES).map_err(unavailable)?;
            Ok(read_job(&summaries, &job_id, now_ms())?.map(|stored| stored.job))
        })
        .await
    }

    async fn request_cancel(&self, job_id: &str, by: &str) -> Result<CancelRequest, StoreError> {
        if !is_plausible_job_id(job_id) {
            return Ok(CancelRequest::NotFound);
        }
        let (job_id, by) = (job_id.to_owned(), by.to_owned());
        self.run(move |db, _| {
            let mut found = CancelRequest::NotFound;
            write(db, |txn| {
                let mut tables = JobTables::open(txn)?;
                if let Some(mut stored) = read_job(&tables.jobs, &job_id, now_ms())? {
                    let status = stored.job.status;
                    found = if status.is_final() {
                        CancelRequest::Final(status)
                    } else {
                        stored.job.cancel_requested_by = Some(by.clone());
                        tables.save(&mut stored)?;
                        CancelRequest::Requested(status)
                    };
                }
                Ok(())
            })?;
            Ok(found)
        })
        .await
    }

    async fn open_jobs(&self) -> Result<Vec<Job>, StoreError> {
        self.read(|txn| {
            let open = txn.open_table(OPEN).map_err(unavailable)?;
            let jobs = txn.open_table(JOBS).map_err(unavailable)?;
            let now = now_ms();
            let mut found = Vec::new();
            for entry in open.iter().map_err(unavailable)? {
                let (id, _) = entry.map_err(unavailable)?;
                if let Some(stored) = read_job(&jobs, id.value(), now)? {
                    if !stored.job.status.is_final() {
                        found.push(stored.job);
                    }
                }
            }
            Ok(found)
        })
        .await
    }

    async fn jobs_since(&self, since_ms: i64) -> Result<Vec<(i64, JobStatus)>, StoreError> {
        self.read(move |txn| {
            let index = txn.open_table(INDEX).map_err(unavailable)?;
            let jobs = txn.open_table(SUMMARIES).map_err(unavailable)?;
            let now = now_ms();
            let mut found = Vec::new();
            for entry in index.range((since_ms, "")..).map_err(unavailable)? {
                let (key, _) = entry.map_err(unavailable)?;
                let (created, id) = key.value();
                if let Some(stored) = read_job(&jobs, id, now)? {
                    found.push((created, stored.job.status));
                }
            }
            Ok(found)
        })
        .await
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage, StoreError> {
        let query = query.clone();
        self.read(move |txn| history_page(txn, &query)).await
    }

    async fn last_jobs(&self, deployment_ids: &[String]) -> Result<Vec<Option<Job>>, StoreError> {
        let ids = deployment_ids.to_vec();
        // One read transaction for them all.
        self.read(move |txn| {
            let history = txn.open_table(HISTORY).map_err(unavailable)?;
            let summaries = txn.open_table(SUMMARIES).map_err(unavailable)?;
            let now = now_ms();
            let mut last = Vec::with_capacity(ids.len());
            for deployment_id in ids {
                // The newest id of each status; the newest of those, read alone.
                let scope = deployment_scope(&deployment_id);
                let scope_end = format!("{scope}\0");
                let mut newest: Option<String> = None;
                for status in JobStatus::ALL {
                    let slot = status.as_str();
                    let range = (slot, scope.as_str(), "")..(slot, scope_end.as_str(), "");
                    let id = next_id(&mut history.range(range).map_err(unavailable)?.rev())?;
                    newest = newest.max(id);
                }
                let job = match newest {
                    None => None,
                    Some(id) => match read_job(&summaries, &id, now)? {
                        Some(stored) => Some(stored.job),
                        // Expired, not purged yet: the history knows the one before.
                        None => {
                            let query = JobQuery {
                                deployment_id: Some(deployment_id),
                                limit: 1,
                                ..JobQuery::default()
                            };
                            history_page(txn, &query)?.jobs.into_iter().next()
                        }
                    },
                };
                last.push(job);
            }
            Ok(last)
        })
        .await
    }

    async fn trim_history(&self) -> Result<usize, StoreError> {
        self.run(|db, _| purge(db)).await
    }

    async fn forget(&self, keys: &[&str]) -> Result<(), StoreError> {
        let keys: Vec<String> = keys.iter().map(|key| (*key).to_owned()).collect();
        self.run(move |db, _| {
            write(db, |txn| {
                let mut seen = txn.open_table(SEEN).map_err(unavailable)?;
                for key in &keys {
                    seen.remove(key.as_str()).map_err(unavailable)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn remember(&self, keys: &[&str], ttl_ms: i64) -> Result<bool, StoreError> {
        let keys: Vec<String> = keys.iter().map(|key| (*key).to_owned()).collect();
        self.run(move |db, _| {
            // A replay is answered from a read, without a durable write.
            let read = db.begin_read().map_err(unavailable)?;
            if any_held(&read.open_table(SEEN).map_err(unavailable)?, &keys)? {
                return Ok(false);
            }
            let mut first = false;
            write(db, |txn| {
                let mut seen = txn.open_table(SEEN).map_err(unavailable)?;
                // Checked again inside the write: another request may have won.
                if any_held(&seen, &keys)? {
                    return Ok(());
                }
                let forget_at = now_ms() + ttl_ms;
                for key in &keys {
                    seen.insert(key.as_str(), forget_at).map_err(unavailable)?;
                }
                first = true;
                Ok(())
            })?;
            Ok(first)
        })
        .await
    }

    async fn claim_reports(
        &self,
        claimant: &str,
        lease_ms: i64,
        max: usize,
    ) -> Result<Vec<Job>, StoreError> {
        let claimant = claimant.to_owned();
        self.run(move |db, _| reports::claim(db, &claimant, lease_ms, max, now_ms()))
            .await
    }

    async fn finish_reports(
        &self,
        job_id: &str,
        claimant: &str,
        seen: JobStatus,
        reports: &[Report],
        next_due: Option<i64>,
    ) -> Result<bool, StoreError> {
        let (job_id, claimant, reports) =
            (job_id.to_owned(), claimant.to_owned(), reports.to_vec());
        self.run(move |db, _| {
            reports::finish(db, &job_id, &claimant, seen, &reports, next_due, now_ms())
        })
        .await
    }

    async fn save_session(
        &self,
        key: &str,
        session: &SessionRecord,
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        let stored = StoredSession {
            session: session.clone(),
            expires_at: now_ms() + ttl_ms,
        };
        let (key, raw) = (key.to_owned(), encode(&stored)?);
        self.run(move |db, _| {
            write(db, |txn| {
                let mut sessions = txn.open_table(SESSIONS).map_err(unavailable)?;
                sessions
                    .insert(key.as_str(), raw.as_slice())
                    .map_err(unavailable)?;
                Ok(())
            })
        })
        .await
    }

    async fn session(&self, key: &str) -> Result<Option<SessionRecord>, StoreError> {
        let key = key.to_owned();
        self.read(move |txn| {
            let sessions = txn.open_table(SESSIONS).map_err(unavailable)?;
            let Some(raw) = sessions.get(key.as_str()).map_err(unavailable)? else {
                return Ok(None);
            };
            let stored: StoredSession =
                serde_json::from_slice(raw.value()).map_err(|_| corrupt("session"))?;
            Ok((stored.expires_at > now_ms()).then_some(stored.session))
        })
        .await
    }

    async fn end_session(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.run(move |db, _| {
            write(db, |txn| {
                let mut sessions = txn.open_table(SESSIONS).map_err(unavailable)?;
                sessions.remove(key.as_str()).map_err(unavailable)?;
                Ok(())
            })
        })
        .await
    }

    async fn heartbeat(&self, instance: &str, ttl_ms: i64) -> Result<(), StoreError> {
        let key = format!("{INSTANCE_PREFIX}{instance}");
        self.run(move |db, _| {
            write(db, |txn| {
                let mut seen = txn.open_table(SEEN).map_err(unavailable)?;
                let until = now_ms().saturating_add(ttl_ms.max(1));
                seen.insert(key.as_str(), until).map_err(unavailable)?;
                Ok(())
            })
        })
        .await
    }

    async fn retire(&self, instance: &str) -> Result<(), StoreError> {
        self.forget(&[&format!("{INSTANCE_PREFIX}{instance}")])
            .await
    }

    async fn live_instances(&self) -> Result<Vec<String>, StoreError> {
        self.read(|txn| {
            let seen = txn.open_table(SEEN).map_err(unavailable)?;
            let now = now_ms();
            let mut live = Vec::new();
            for entry in seen.range(INSTANCE_PREFIX..).map_err(unavailable)? {
                let (key, until) = entry.map_err(unavailable)?;
                let Some(instance) = key.value().strip_prefix(INSTANCE_PREFIX) else {
                    break;
                };
                if until.value() > now {
                    live.push(instance.to_owned());
                }
            }
            Ok(live)
        })
        .await
    }

    async fn take_over(&self, job_id: &str, from: &str, to: &str) -> Result<bool, StoreError> {
        if !is_plausible_job_id(job_id) {
            return Ok(false);
        }
        let (job_id, from, to) = (job_id.to_owned(), from.to_owned(), to.to_owned());
        self.run(move |db, _| {
            let mut taken = false;
            write(db, |txn| {
                let mut tables = JobTables::open(txn)?;
                if let Some(mut stored) = read_job(&tables.jobs, &job_id, now_ms())? {
                    let open = !stored.job.status.is_final();
                    if open && stored.job.launch_claim.as_deref() == Some(from.as_str()) {
                        stored.job.launch_claim = Some(to);
                        tables.save(&mut stored)?;
                        taken = true;
                    }
                }
                Ok(())
            })?;
            Ok(taken)
        })
        .await
    }

    async fn signing_key(&self, proposed: &str) -> Result<String, StoreError> {
        let proposed = proposed.to_owned();
        self.run(move |db, _| {
            let mut kept = proposed.clone();
            write(db, |txn| {
                let mut meta = txn.open_table(META).map_err(unavailable)?;
                let existing = meta
                    .get("signing-key")
                    .map_err(unavailable)?
                    .map(|value| value.value().to_owned());
                match existing {
                    Some(existing) => kept = existing,
                    None => {
                        meta.insert("signing-key", proposed.as_str())
                            .map_err(unavailable)?;
                    }
                }
                Ok(())
            })?;
            Ok(kept)
        })
        .await
    }
}

/// What a start gets from the inventory's current state: a busy answer
/// (refused, or joining the running or queued job) decided from reads
/// alone, or `None` with the status the new job is to be created in.
fn busy_outcome(
    locks: &impl ReadableTable<&'static str, &'static [u8]>,
    queued: &impl ReadableTable<&'static str, &'static str>,
    jobs: &impl ReadableTable<&'static str, &'static [u8]>,
    new: &NewJob,
    on_busy: OnBusy,
) -> Result<Result<StartOutcome, JobStatus>, Fault> {
    let now = new.created_at;
    let Some(lock) = live_lock(locks, &new.inventory, now)? else {
        return Ok(Err(JobStatus::LOCK_HOLDER));
    };
    match on_busy {
        OnBusy::Reject => Ok(Ok(StartOutcome::Busy)),
        OnBusy::Join => Ok(Ok(match read_job(jobs, &lock.job_id, now)? {
            Some(stored) => StartOutcome::Joined(stored.job),
            None => StartOutcome::Busy,
        })),
        OnBusy::Queue => {
            let waiting = queued
                .get(new.inventory.as_str())
                .map_err(unavailable)?
                .map(|id| id.value().to_owned());
            if let Some(waiting) = waiting.and_then(|id| read_job(jobs, &id, now).transpose()) {
                let waiting = waiting?;
                if waiting.job.status == JobStatus::WAITING {
                    return Ok(Ok(StartOutcome::Joined(waiting.job)));
                }
            }
            Ok(Err(JobStatus::WAITING))
        }
    }
}

/// Answers a busy start from a read transaction: only a start that
/// creates a job takes a (durable, serialised) write.
fn busy_answer(
    txn: &ReadTransaction,
    new: &NewJob,
    on_busy: OnBusy,
) -> Result<Option<StartOutcome>, Fault> {
    let locks = txn.open_table(LOCKS).map_err(unavailable)?;
    let queued = txn.open_table(QUEUED).map_err(unavailable)?;
    let jobs = txn.open_table(JOBS).map_err(unavailable)?;
    Ok(busy_outcome(&locks, &queued, &jobs, new, on_busy)?.ok())
}

fn start(
    txn: &WriteTransaction,
    limits: &JobLimits,
    new: NewJob,
    on_busy: OnBusy,
) -> Result<StartOutcome, Fault> {
    let now = new.created_at;
    let mut locks = txn.open_table(LOCKS).map_err(unavailable)?;
    let mut tables = JobTables::open(txn)?;
    // Decided again inside the write: another start may have come first.
    let status = {
        let queued = txn.open_table(QUEUED).map_err(unavailable)?;
        match busy_outcome(&locks, &queued, &tables.jobs, &new, on_busy)? {
            Ok(outcome) => return Ok(outcome),
            Err(status) => status,
        }
    };
    let job = new.into_job(status);
    // The job and its history entries in one transaction: never one without the other.
    tables.save(&mut StoredJob {
        job: job.clone(),
        expires_at: now + limits.open_ttl_ms,
    })?;
    txn.open_table(OPEN)
        .map_err(unavailable)?
        .insert(job.id.as_str(), ())
        .map_err(unavailable)?;
    txn.open_table(INDEX)
        .map_err(unavailable)?
        .insert((now, job.id.as_str()), ())
        .map_err(unavailable)?;
    if status == JobStatus::LOCK_HOLDER {
        let lock = Lock {
            job_id: job.id.clone(),
            expires_at: now + limits.lock_ttl_ms,
        };
        locks
            .insert(job.inventory.as_str(), encode(&lock)?.as_slice())
            .map_err(unavailable)?;
        Ok(StartOutcome::Started(job))
    } else {
        txn.open_table(QUEUED)
            .map_err(unavailable)?
            .insert(job.inventory.as_str(), job.id.as_str())
            .map_err(unavailable)?;
        Ok(StartOutcome::Queued(job))
    }
}

/// Applies an output change to the job; returns the text its stream grew by.
fn change_output(job: &mut Job, change: &OutputChange, limits: &JobLimits) -> String {
    let applied = apply_output(job, change, limits.max_output);
    job.output = applied.output;
    job.output_end = applied.end;
    job.output_base = applied.base;
    applied.added
}

fn change_of(job: &Job, added: String) -> JobChange {
    JobChange {
        job_id: job.id.clone(),
        status: job.status,
        end: job.output_end,
        added: added.into(),
    }
}

/// Applies an update; an applied one also returns the change to announce.
fn apply_update(
    txn: &WriteTransaction,
    limits: &JobLimits,
    job_id: &str,
    update: &JobUpdate,
) -> Result<(UpdateOutcome, Option<JobChange>), Fault> {
    let now = now_ms();
    let (inventory, change) = {
        let mut tables = JobTables::open(txn)?;
        let Some(mut stored) = read_job(&tables.jobs, job_id, now)? else {
            return Ok((UpdateOutcome::NotFound, None));
        };
        let current = stored.job.status;
        if !current.can_become(update.status) {
            return Ok((UpdateOutcome::Refused { current }, None));
        }
        let added = match &update.output {
            Some(change) => change_output(&mut stored.job, change, limits),
            None => String::new(),
        };
        stored.job.status = update.status;
        if current != update.status
            && ReportEvent::is_raised_by(update.status)
            && !stored.job.reports.is_empty()
        {
            reports::raise(txn, job_id, now)?;
        }
        if update.status.is_final() {
            stored.job.finished_at = Some(now);
            stored.job.exit_code = update.exit_code;
            stored.job.cancelled_by.clone_from(&update.cancelled_by);
            stored.expires_at = now + limits.job_ttl_ms;
        }
        tables.save(&mut stored)?;
        let change = change_of(&stored.job, added);
        if !update.status.is_final() {
            return Ok((UpdateOutcome::Applied { promoted: None }, Some(change)));
        }
        (stored.job.inventory, change)
    };
    txn.open_table(OPEN)
        .map_err(unavailable)?
        .remove(job_id)
        .map_err(unavailable)?;
    {
        // Compare-and-delete: only the job that owns the lock releases it.
        let mut locks = txn.open_table(LOCKS).map_err(unavailable)?;
        let owned = live_lock(&locks, &inventory, now)?.is_some_and(|lock| lock.job_id == job_id);
        if owned {
            locks.remove(inventory.as_str()).map_err(unavailable)?;
        }
        let mut queued = txn.open_table(QUEUED).map_err(unavailable)?;
        let is_queued = queued
            .get(inventory.as_str())
            .map_err(unavailable)?
            .is_some_and(|id| id.value() == job_id);
        if is_queued {
            queued.remove(inventory.as_str()).map_err(unavailable)?;
        }
    }
    let promoted = promote(txn, limits, &inventory, now)?.map(Box::new);
    Ok((UpdateOutcome::Applied { promoted }, Some(change)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Trigger, TriggerKind};

    fn new_job(id: &str) -> NewJob {
        NewJob {
            id: id.to_owned(),
            deployment_id: "app".to_owned(),
            inventory: "inv".to_owned(),
            trigger: Trigger::of_kind(TriggerKind::Secret),
            created_at: now_ms(),
            reports: Vec::new(),
        }
    }

    /// Busy answers are reads: a flood of them for a busy inventory neither
    /// waits for nor makes a durable write (the store file is unchanged).
    #[tokio::test]
    async fn busy_answers_leave_the_store_file_untouched() {
        let dir = tempfile::tempdir().expect("a temporary dir");
        let path = dir.path().join("enac-cd.redb");
        let limits = JobLimits::new(
            crate::domain::Lifetimes {
                job_timeout: Duration::from_secs(3600),
                job_ttl: Duration::from_secs(3600),
            },
            1 << 20,
        );
        let store = EmbeddedStore::open(&path, limits).expect("the store opens");
        let running = store.start_job(&new_job("01RUNNING"), OnBusy::Reject).await;
        assert!(
            matches!(running, Ok(StartOutcome::Started(_))),
            "{running:?}"
        );
        let queued = store.start_job(&new_job("01QUEUED"), OnBusy::Queue).await;
        assert!(matches!(queued, Ok(StartOutcome::Queued(_))), "{queued:?}");
        let before = std::fs::read(&path).expect("the store file");

        for (index, on_busy) in [OnBusy::Reject, OnBusy::Join, OnBusy::Queue]
            .into_iter()
            .cycle()
            .take(30)
            .enumerate()
        {
            let outcome = store
                .start_job(&new_job(&format!("01BUSY{index}")), on_busy)
                .await
                .expect("the store answers");
            match (on_busy, outcome) {
                (OnBusy::Reject, StartOutcome::Busy) => {}
                (OnBusy::Join, StartOutcome::Joined(job)) => assert_eq!(job.id, "01RUNNING"),
                (OnBusy::Queue, StartOutcome::Joined(job)) => assert_eq!(job.id, "01QUEUED"),
                (on_busy, outcome) => panic!("{on_busy:?} got {outcome:?}"),
            }
        }
        let after = std::fs::read(&path).expect("the store file");
        assert!(before == after, "a busy answer wrote to the store file");
    }
}
