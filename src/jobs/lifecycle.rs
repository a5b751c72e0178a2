//! The one job lifecycle: every ingress calls [`Lifecycle::start`]; callbacks,
//! exits, timeouts and reconciliation all end in [`Lifecycle::update`], so
//! the lock release and the start of a queued job happen in one place.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::{TokenKind, TokenSigner};
use crate::domain::{now_ms, Job, JobStatus, Lifetimes, NewJob, OnBusy, Report, Trigger};
use crate::launch::{
    Exit, ExitReport, LaunchError, LaunchRecord, LaunchSpec, Launcher, OutputChunk, Presence,
};
use crate::metrics::{JobLabels, Metrics, TriggerLabels};
use crate::store::{
    CancelRequest, JobUpdate, OutputChange, StartOutcome, Store, StoreError, UpdateOutcome,
};

/// Settings the lifecycle needs.
#[derive(Clone, Debug)]
pub struct LifecycleConfig {
    /// Base URL the program calls back (`CD_PUBLIC_URL`).
    pub public_url: String,
    pub cd_env: Option<String>,
    pub self_inventory: String,
    pub lifetimes: Lifetimes,
    /// This service instance, for launch claims.
    pub instance: String,
}

/// A request to run a deployment, whoever made it.
#[derive(Clone, Debug)]
pub struct StartRequest {
    pub deployment_id: String,
    pub inventory: String,
    pub trigger: Trigger,
    pub on_busy: OnBusy,
    /// Where the job is to be reported, from the deployment's policy.
    pub reports: Vec<Report>,
}

/// The job a start request got.
#[derive(Clone, Debug)]
pub enum Started {
    /// A new job holding the inventory's lock.
    New(Job),
    /// A new job waiting for the running one.
    Queued(Job),
    /// An existing job (the running one, or the inventory's queued one).
    Joined(Job),
}

impl Started {
    pub fn into_job(self) -> Job {
        match self {
            Started::New(job) | Started::Queued(job) | Started::Joined(job) => job,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("App deployment is already running")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a status update was not applied.
#[derive(Debug, PartialEq, Eq)]
pub enum UpdateRefused {
    NotFound,
    Final(JobStatus),
    NotAllowed(JobStatus),
}

/// What a cancel found.
#[derive(Debug, PartialEq, Eq)]
pub enum Cancel {
    /// Asked: a queued job is ended at once, a launched one by its watcher
    /// once its program is stopped.
    Cancelling,
    NotFound,
    Final(JobStatus),
}

/// How often a watcher asks the store whether its job was cancelled (from
/// any instance): a cancel stops the program within about this long.
const CANCEL_POLL: Duration = Duration::from_secs(1);

/// Periodic sweep: timeouts of jobs nobody here watches, queued jobs whose
/// lock lapsed, promoted jobs never launched.
const SWEEP_EVERY: Duration = Duration::from_secs(15);
/// The sweep leaves a timeout to the job's own watcher for this long.
const SWEEP_GRACE: Duration = Duration::from_secs(30);
/// After stopping a timed-out program, how long to wait for its exit.
const STOP_WAIT: Duration = Duration::from_secs(15);

pub struct Lifecycle {
    store: Arc<dyn Store>,
    launcher: Arc<dyn Launcher>,
    tokens: TokenSigner,
    config: LifecycleConfig,
    metrics: Metrics,
    /// Jobs whose program this instance is watching.
    watched: Mutex<HashSet<String>>,
    /// Job ids that grow even within one millisecond, so that the history
    /// (newest first, by id) keeps this instance's jobs in creation order.
    job_ids: Mutex<ulid::Generator>,
    launches: TaskTracker,
}

/// Pause that lets a burst of output lines gather into one store write.
const OUTPUT_BATCH: Duration = Duration::from_millis(200);

/// How often an instance renews its lease in the store.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// An instance that has not renewed its lease for this long is taken for
/// dead, and its jobs are adopted by the next sweep of another instance.
const LEASE_TTL: Duration = Duration::from_secs(20);

fn millis(duration: Duration) -> i64 {
    duration.as_millis().min(i64::MAX as u128) as i64
}

/// First pause before a write that must not be lost is tried again.
const RETRY_FIRST: Duration = Duration::from_millis(250);
/// Longest pause between two tries.
const RETRY_MAX: Duration = Duration::from_secs(15);

/// Tries a store write that must not be lost (a program's exit, its output,
/// a job's failure) until the store answers, pausing longer each time: an
/// outage delays it, never drops it.
async fn until_saved<T, F, Fut>(job_id: &str, what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut pause = RETRY_FIRST;
    let mut failed = false;
    loop {
        match attempt().await {
            Ok(value) => {
                if failed {
                    info!(job_id, what, "saved once the store answered again");
                }
                return value;
            }
            Err(error) => {
                if !failed {
                    warn!(job_id, what, %error, "store unavailable; trying again until it answers");
                    failed = true;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Output gathered for one store write, and how far in the program's log
/// it reaches.
#[derive(Default)]
struct OutputBatch {
    text: String,
    followed_until: Option<String>,
}

impl OutputBatch {
    fn add(&mut self, chunk: OutputChunk) {
        self.text.push_str(&chunk.text);
        if chunk.followed_until.is_some() {
            self.followed_until = chunk.followed_until;
        }
    }
}

/// Appends what a launcher follows of a program's output to its job, with
/// the position it reaches in the launch record, in one store step; while
/// the store is away, what comes meanwhile is saved with it once it is back.
async fn pump_output(
    store: Arc<dyn Store>,
    job_id: String,
    record: LaunchRecord,
    mut output: UnboundedReceiver<OutputChunk>,
) {
    while let Some(first) = output.recv().await {
        tokio::time::sleep(OUTPUT_BATCH).await;
        let mut batch = OutputBatch::default();
        batch.add(first);
        until_saved(&job_id, "program output", || {
            while let Ok(more) = output.try_recv() {
                batch.add(more);
            }
            let launch = batch
                .followed_until
                .clone()
                .map(|position| record.followed_until(Some(position)).to_data());
            let (store, job_id, text) = (Arc::clone(&store), job_id.clone(), batch.text.clone());
            async move { store.append_output(&job_id, &text, launch.as_ref()).await }
        })
        .await;
    }
}

/// The launcher's record of a job's program, if one was kept.
fn launch_record(job: &Job) -> Option<LaunchRecord> {
    job.launch.as_ref().and_then(LaunchRecord::from_data)
}

impl Lifecycle {
    pub fn new(
        store: Arc<dyn Store>,
        launcher: Arc<dyn Launcher>,
        tokens: TokenSigner,
        config: LifecycleConfig,
        metrics: Metrics,
    ) -> Arc<Lifecycle> {
        Arc::new(Lifecycle {
            store,
            launcher,
            tokens,
            config,
            metrics,
            watched: Mutex::new(HashSet::new()),
            job_ids: Mutex::new(ulid::Generator::new()),
            launches: TaskTracker::new(),
        })
    }

    pub fn tokens(&self) -> &TokenSigner {
        &self.tokens
    }

    /// A token that reads `job_id`'s status until the job has expired.
    pub fn status_token(&self, job_id: &str) -> String {
        self.tokens.issue(
            TokenKind::Status,
            job_id,
            self.config.lifetimes.status_token(),
        )
    }

    /// Starts, queues or joins a job for the request, per its `on_busy`.
    pub async fn start(self: &Arc<Self>, request: StartRequest) -> Result<Started, LifecycleError> {
        let id = self
            .job_ids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .generate()
            // Only after 2^80 ids in one millisecond.
            .unwrap_or_else(|_| ulid::Ulid::new());
        let new = NewJob {
            id: id.to_string(),
            deployment_id: request.deployment_id,
            inventory: request.inventory,
            trigger: request.trigger,
            created_at: now_ms(),
            reports: request.reports,
        };
        let outcome = self.store.start_job(&new, request.on_busy).await?;
        if matches!(outcome, StartOutcome::Started(_) | StartOutcome::Queued(_)) {
            self.metrics
                .jobs_started
                .get_or_create(&TriggerLabels {
                    trigger: new.trigger.kind,
                })
                .inc();
        }
        match outcome {
            StartOutcome::Started(job) => {
                info!(job_id = %job.id, deployment_id = %job.deployment_id, inventory = %job.inventory,
                      trigger = %job.trigger, "job starting");
                self.spawn_launch(job.clone());
                Ok(Started::New(job))
            }
            StartOutcome::Queued(job) => {
                info!(job_id = %job.id, deployment_id = %job.deployment_id, inventory = %job.inventory,
                      trigger = %job.trigger, "job queued");
                Ok(Started::Queued(job))
            }
            StartOutcome::Joined(job) => Ok(Started::Joined(job)),
            StartOutcome::Busy => Err(LifecycleError::Busy),
        }
    }

    /// Per named period (seconds back from now), the jobs created within it
    /// counted by status (`/load/`).
    pub async fn load(
        &self,
        periods: &[(String, i64)],
    ) -> Result<BTreeMap<String, BTreeMap<JobStatus, u64>>, StoreError> {
        let now = now_ms();
        let longest = periods
            .iter()
            .map(|(_, seconds)| *seconds)
            .max()
            .unwrap_or(0);
        let jobs = self.store.jobs_since(now - longest * 1000).await?;
        let mut load = BTreeMap::new();
        for (name, seconds) in periods {
            let since = now - seconds * 1000;
            let mut counts: BTreeMap<JobStatus, u64> =
                JobStatus::ALL.iter().map(|status| (*status, 0)).collect();
            for (_, status) in jobs.iter().filter(|(created, _)| *created >= since) {
                *counts.entry(*status).or_default() += 1;
            }
            load.insert(name.clone(), counts);
        }
        Ok(load)
    }

    /// A program's report (`/set-job-status/`). With an idempotency key, a
    /// report already saved under that key is answered as saved again and
    /// changes nothing, so a program may retry a report whose answer it lost.
    pub async fn report(
        self: &Arc<Self>,
        job_id: &str,
        status: JobStatus,
        output: Option<OutputChange>,
        idempotency_key: Option<&str>,
    ) -> Result<Result<(), UpdateRefused>, StoreError> {
        let Some(key) = idempotency_key else {
            return self.update(job_id, status, output).await;
        };
        let key = format!("report:{job_id}:{key}");
        let ttl = self.config.lifetimes.callback_token();
        let ttl_ms = ttl.as_millis().min(i64::MAX as u128) as i64;
        if !self.store.remember(&[&key], ttl_ms).await? {
            return Ok(Ok(()));
        }
        let outcome = self.update(job_id, status, output).await;
        // A report that was not saved may be sent again under its key.
        if !matches!(outcome, Ok(Ok(()))) {
            if let Err(error) = self.store.forget(&[&key]).await {
                warn!(job_id, %error, "cannot forget the idempotency key of an unsaved report");
            }
        }
        outcome
    }

    /// Applies a status change from any source (callback, exit, timeout);
    /// the first final write wins, and a queued job it frees is launched.
    pub async fn update(
        self: &Arc<Self>,
        job_id: &str,
        status: JobStatus,
        output: Option<OutputChange>,
    ) -> Result<Result<(), UpdateRefused>, StoreError> {
        let update = JobUpdate {
            status,
            output,
            exit_code: None,
            cancelled_by: None,
        };
        self.apply(job_id, &update).await
    }

    async fn apply(
        self: &Arc<Self>,
        job_id: &str,
        update: &JobUpdate,
    ) -> Result<Result<(), UpdateRefused>, StoreError> {
        let status = update.status;
        let outcome = self.store.update_job(job_id, update).await?;
        match outcome {
            UpdateOutcome::Applied { promoted } => {
                if status.is_final() {
                    self.record_final(job_id, status).await;
                }
                if let Some(next) = promoted {
                    info!(job_id = %next.id, inventory = %next.inventory, "queued job starting");
                    self.spawn_launch(*next);
                }
                Ok(Ok(()))
            }
            UpdateOutcome::NotFound => Ok(Err(UpdateRefused::NotFound)),
            UpdateOutcome::Refused { current } if current.is_final() => {
                Ok(Err(UpdateRefused::Final(current)))
            }
            UpdateOutcome::Refused { current } => Ok(Err(UpdateRefused::NotAllowed(current))),
        }
    }

    async fn record_final(&self, job_id: &str, status: JobStatus) {
        let trigger = match self.store.job(job_id).await {
            Ok(Some(job)) => {
                info!(job_id, deployment_id = %job.deployment_id, inventory = %job.inventory,
                      trigger = %job.trigger, %status, "job finished");
                Some(job.trigger.kind)
            }
            _ => None,
        };
        self.metrics
            .jobs_finished
            .get_or_create(&JobLabels { trigger, status })
            .inc();
    }

    /// Ends a job `error` with a reason appended to its output; a job that is
    /// already final is left as it is.
    async fn fail(self: &Arc<Self>, job_id: &str, reason: &str) {
        let note = OutputChange::Append(format!("\n[enac-cd] {reason}\n"));
        let saved = until_saved(job_id, "job failure", || {
            self.update(job_id, JobStatus::Error, Some(note.clone()))
        })
        .await;
        if saved.is_ok() {
            warn!(job_id, reason, "job failed");
        }
    }

    /// Launches are tracked so that a graceful stop waits for them: a job
    /// claimed but not yet recorded would otherwise be left in between.
    fn spawn_launch(self: &Arc<Self>, job: Job) {
        let this = Arc::clone(self);
        self.launches.spawn(async move {
            if let Some((job_id, started_at, record)) = this.launch(job).await {
                let watcher = Arc::clone(&this);
                tokio::spawn(async move { watcher.watch(job_id, started_at, record, false).await });
            }
        });
    }

    /// Waits (at most `limit`) for launches under way; new ones still start.
    pub async fn finish_launches(&self, limit: Duration) {
        self.launches.close();
        if tokio::time::timeout(limit, self.launches.wait())
            .await
            .is_err()
        {
            warn!("launches still under way at shutdown");
        }
        self.launches.reopen();
    }

    fn spec_for(&self, job: &Job) -> LaunchSpec {
        let args = if job.inventory == self.config.self_inventory {
            vec!["announce-apps".to_owned()]
        } else {
            vec![
                "app-deploy".to_owned(),
                job.inventory.clone(),
                job.id.clone(),
            ]
        };
        let mut env = vec![
            ("CD_JOB_ID".to_owned(), job.id.clone()),
            ("CD_DEPLOYMENT_ID".to_owned(), job.deployment_id.clone()),
            ("CD_INVENTORY".to_owned(), job.inventory.clone()),
            (
                "CD_CALLBACK_URL".to_owned(),
                format!("{}/set-job-status/", self.config.public_url),
            ),
        ];
        if let Some(cd_env) = &self.config.cd_env {
            env.push(("CD_ENV".to_owned(), cd_env.clone()));
        }
        // Good for this job until it times out; the store refuses it once final.
        let lifetime = self.config.lifetimes.callback_token();
        LaunchSpec {
            job_id: job.id.clone(),
            deployment_id: job.deployment_id.clone(),
            inventory: job.inventory.clone(),
            args,
            env,
            callback_token: self
                .tokens
                .issue(TokenKind::Callback, &job.id, lifetime)
                .into(),
        }
    }

    /// Claims, launches and records a job; what to watch, if it started.
    async fn launch(self: &Arc<Self>, job: Job) -> Option<(String, i64, LaunchRecord)> {
        match self
            .store
            .claim_launch(&job.id, &self.config.instance)
            .await
        {
            Ok(true) => {}
            Ok(false) => return None,
            Err(error) => {
                error!(job_id = %job.id, %error, "cannot claim job launch");
                return None;
            }
        }
        // Watched from the claim on, so that no sweep takes the launch under
        // way for one cut short.
        self.lock_watched().insert(job.id.clone());
        let spec = self.spec_for(&job);
        let record = match self.launcher.launch(&spec).await {
            Ok(record) => record,
            Err(error) => {
                self.fail(&job.id, &format!("launch failed: {error}")).await;
                self.lock_watched().remove(&job.id);
                return None;
            }
        };
        let data = record.to_data();
        until_saved(&job.id, "launch record", || {
            self.store.record_launch(&job.id, &data)
        })
        .await;
        info!(job_id = %job.id, inventory = %job.inventory, "job launched");
        let started_at = job.started_at.unwrap_or(job.created_at);
        Some((job.id, started_at, record))
    }

    /// Follows a launched program until it exits or its job times out;
    /// output the launcher follows is appended to the job as it comes.
    async fn watch(
        self: &Arc<Self>,
        job_id: String,
        started_at: i64,
        record: LaunchRecord,
        resumed: bool,
    ) {
        let (sink, output) = tokio::sync::mpsc::unbounded_channel();
        let pump = tokio::spawn(pump_output(
            Arc::clone(&self.store),
            job_id.clone(),
            record.clone(),
            output,
        ));
        let wait = self.launcher.wait(&record, sink, resumed);
        tokio::pin!(wait);
        let deadline = tokio::time::sleep(self.time_left(started_at));
        tokio::pin!(deadline);
        let mut cancel_poll = tokio::time::interval(CANCEL_POLL);
        loop {
            tokio::select! {
                report = &mut wait => {
                    // Every followed line is in the job before its final status.
                    let _ = pump.await;
                    self.end_from_exit(&job_id, report).await;
                    break;
                }
                _ = &mut deadline => {
                    if let Err(error) = self.launcher.stop(&record).await {
                        warn!(job_id, %error, "cannot stop timed-out program");
                    }
                    self.fail(&job_id, &self.timed_out()).await;
                    let _ = tokio::time::timeout(STOP_WAIT, wait).await;
                    pump.abort();
                    break;
                }
                _ = cancel_poll.tick() => {
                    let Some((by, open)) = self.cancel_asked(&job_id).await else {
                        continue;
                    };
                    if let Err(error) = self.launcher.stop(&record).await {
                        warn!(job_id, %error, "cannot stop cancelled program");
                    }
                    // Its last lines are in the job before the cancel note.
                    let _ = tokio::time::timeout(STOP_WAIT, &mut wait).await;
                    let _ = tokio::time::timeout(STOP_WAIT, pump).await;
                    if open {
                        self.end_cancelled(&job_id, &by).await;
                    }
                    break;
                }
            }
        }
        self.launcher.cleanup(&record).await;
        self.lock_watched().remove(&job_id);
    }

    /// Asks for the job to be cancelled by `by` (contract §10). A queued job
    /// ends here without a launch; a launched one is stopped by its watcher,
    /// on whichever instance follows it, which then ends the job.
    pub async fn cancel(self: &Arc<Self>, job_id: &str, by: &str) -> Result<Cancel, StoreError> {
        match self.store.request_cancel(job_id, by).await? {
            CancelRequest::NotFound => Ok(Cancel::NotFound),
            CancelRequest::Final(status) => Ok(Cancel::Final(status)),
            CancelRequest::Requested(status) => {
                info!(job_id, by, %status, "job cancel asked");
                if status == JobStatus::Queued {
                    // Promoted meanwhile, it is launched and then stopped:
                    // its watcher sees the request too.
                    self.end_cancelled(job_id, by).await;
                }
                Ok(Cancel::Cancelling)
            }
        }
    }

    /// Who asked to cancel the watched job, and whether it is still open;
    /// `None` when no one did (or the store cannot say now).
    async fn cancel_asked(&self, job_id: &str) -> Option<(String, bool)> {
        match self.store.job_summary(job_id).await {
            Ok(Some(job)) => job
                .cancel_requested_by
                .map(|by| (by, !job.status.is_final())),
            _ => None,
        }
    }

    /// Ends a cancelled job `error`, its last output line `cancelled by <by>`.
    async fn end_cancelled(self: &Arc<Self>, job_id: &str, by: &str) {
        let update = JobUpdate {
            status: JobStatus::Error,
            output: Some(OutputChange::Append(format!("\ncancelled by {by}\n"))),
            exit_code: None,
            cancelled_by: Some(by.to_owned()),
        };
        let saved = until_saved(job_id, "job cancel", || self.apply(job_id, &update)).await;
        if saved.is_ok() {
            info!(job_id, by, "job cancelled");
        }
    }

    fn lock_watched(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.watched
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn time_left(&self, started_at: i64) -> Duration {
        let deadline = started_at + self.config.lifetimes.job_timeout.as_millis() as i64;
        Duration::from_millis((deadline - now_ms()).max(0) as u64)
    }

    fn timed_out(&self) -> String {
        format!(
            "timed out after {}",
            crate::units::format_duration(self.config.lifetimes.job_timeout)
        )
    }

    async fn end_from_exit(
        self: &Arc<Self>,
        job_id: &str,
        report: Result<ExitReport, LaunchError>,
    ) {
        let report = match report {
            Ok(report) => report,
            Err(error) => return self.fail(job_id, &format!("lost: {error}")).await,
        };
        let (status, summary) = match report.exit {
            Exit::Code(0) => (JobStatus::Success, "program exited with code 0".to_owned()),
            Exit::Code(code) => (JobStatus::Error, format!("program exited with code {code}")),
            Exit::Signal(signal) => (
                JobStatus::Error,
                format!("program killed by signal {signal}"),
            ),
            Exit::Unknown => (
                JobStatus::Error,
                "program ended without a final status (exit code unknown)".to_owned(),
            ),
        };
        let mut note = format!("\n[enac-cd] {summary}");
        if !report.tail.is_empty() {
            note.push_str("; last output lines:\n");
            note.push_str(&report.tail);
        } else {
            note.push('\n');
        }
        let update = JobUpdate {
            status,
            output: Some(OutputChange::Append(note)),
            exit_code: match report.exit {
                Exit::Code(code) => Some(code),
                _ => None,
            },
            cancelled_by: None,
        };
        let saved = until_saved(job_id, "program exit", || self.apply(job_id, &update)).await;
        if saved.is_ok() {
            info!(job_id, %status, summary, "job ended by program exit");
        }
    }

    /// At start-up: finds every open job's program again and follows it,
    /// finishes those whose program is gone, launches what was never launched.
    pub async fn reconcile(self: &Arc<Self>) -> Result<(), StoreError> {
        self.heartbeat().await?;
        self.reconcile_labelled().await?;
        self.sweep().await
    }

    /// Renews this instance's lease: while it holds, no other instance
    /// takes over the jobs it claimed.
    async fn heartbeat(&self) -> Result<(), StoreError> {
        self.store
            .heartbeat(&self.config.instance, millis(LEASE_TTL))
            .await
    }

    /// Renews the lease every few seconds for the life of the service.
    pub fn spawn_heartbeat(self: &Arc<Self>) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(HEARTBEAT_EVERY);
            loop {
                ticker.tick().await;
                if let Err(error) = this.heartbeat().await {
                    warn!(%error, "cannot renew this instance's lease");
                }
            }
        });
    }

    /// Gives up the lease at a graceful stop, so that the jobs this instance
    /// claimed are adopted at once by the next start or another replica.
    pub async fn retire(&self) {
        if let Err(error) = self.store.retire(&self.config.instance).await {
            warn!(%error, "cannot give up this instance's lease");
        }
    }

    /// An open job no watcher here follows: launched if nobody claimed it;
    /// left to its claimant while that instance's lease holds; taken over
    /// (and its program found again) once the lease has lapsed, or when the
    /// claim is this instance's own (a watcher that never started).
    async fn resolve(self: &Arc<Self>, job: Job, live: &HashSet<String>) {
        let me = self.config.instance.as_str();
        match job.launch_claim.as_deref() {
            None if job.launch.is_none() => self.spawn_launch(job),
            None => self.recover(job).await,
            Some(owner) if owner == me => self.recover(job).await,
            Some(owner) if live.contains(owner) => {}
            Some(owner) => match self.store.take_over(&job.id, owner, me).await {
                Ok(true) => {
                    info!(job_id = %job.id, from = owner, "adopting a job whose instance's lease lapsed");
                    self.recover(job).await
                }
                Ok(false) => {}
                Err(error) => warn!(job_id = %job.id, %error, "cannot take over job"),
            },
        }
    }

    /// Finds a claimed job's program again: by its launch record, or by its
    /// label when the launch was cut short before the record was saved. A
    /// claim with no program anywhere was never launched: the job is lost.
    async fn recover(self: &Arc<Self>, job: Job) {
        if let Some(record) = launch_record(&job) {
            // Another host's program cannot be seen from here; the job's
            // timeout still ends it.
            if self.launcher.owns(&record) {
                self.adopt(job, record).await;
            }
            return;
        }
        let labelled = match self.launcher.labelled().await {
            Ok(labelled) => labelled,
            Err(error) => return warn!(job_id = %job.id, %error, "cannot list launched programs"),
        };
        match labelled.into_iter().find(|(job_id, _)| *job_id == job.id) {
            Some((_, record)) => {
                let data = record.to_data();
                until_saved(&job.id, "launch record", || {
                    self.store.record_launch(&job.id, &data)
                })
                .await;
                self.adopt(job, record).await
            }
            None => {
                self.fail(
                    &job.id,
                    "lost: the launch was cut short before its program started",
                )
                .await
            }
        }
    }

    /// Programs found by label: those of open jobs the store has no record
    /// of (a launch cut short) are recorded, so they are followed like the
    /// others; those of this store's final jobs are removed. Containers of
    /// jobs this store does not know belong to another service: untouched.
    async fn reconcile_labelled(&self) -> Result<(), StoreError> {
        let labelled = match self.launcher.labelled().await {
            Ok(labelled) => labelled,
            Err(error) => {
                warn!(%error, "cannot list launched programs");
                return Ok(());
            }
        };
        for (job_id, record) in labelled {
            match self.store.job(&job_id).await? {
                Some(job) if !job.status.is_final() && job.launch.is_none() => {
                    self.store.record_launch(&job_id, &record.to_data()).await?;
                }
                Some(job) if !job.status.is_final() => {}
                Some(_) => {
                    info!(job_id, "removing the program of a finished job");
                    self.launcher.cleanup(&record).await;
                }
                // Not a job of this store: another service's, left alone.
                None => {}
            }
        }
        Ok(())
    }

    async fn adopt(self: &Arc<Self>, job: Job, record: LaunchRecord) {
        if !self.lock_watched().insert(job.id.clone()) {
            return;
        }
        let presence = self.launcher.find(&record).await;
        if !matches!(presence, Ok(Presence::Running)) {
            self.lock_watched().remove(&job.id);
        }
        match presence {
            Ok(Presence::Running) => {
                info!(job_id = %job.id, "following job again");
                let this = Arc::clone(self);
                let started_at = job.started_at.unwrap_or(job.created_at);
                tokio::spawn(async move { this.watch(job.id, started_at, record, true).await });
            }
            Ok(Presence::Exited(report)) => {
                self.end_from_exit(&job.id, Ok(report)).await;
                self.launcher.cleanup(&record).await;
            }
            Ok(Presence::Missing) => {
                self.fail(&job.id, "lost: program not found after restart")
                    .await
            }
            Err(error) => warn!(job_id = %job.id, %error, "cannot find job program"),
        }
    }

    async fn promote(self: &Arc<Self>, inventory: &str) {
        match self.store.promote_queued(inventory).await {
            Ok(Some(job)) => self.spawn_launch(job),
            Ok(None) => {}
            Err(error) => warn!(inventory, %error, "cannot promote queued job"),
        }
    }

    /// One pass over open jobs that no watcher here follows.
    async fn sweep(self: &Arc<Self>) -> Result<(), StoreError> {
        let grace = SWEEP_GRACE.as_millis() as i64;
        let timeout = self.config.lifetimes.job_timeout.as_millis() as i64;
        let live: HashSet<String> = self.store.live_instances().await?.into_iter().collect();
        for job in self.store.open_jobs().await? {
            if self.lock_watched().contains(&job.id) {
                continue;
            }
            match job.status {
                JobStatus::Queued => self.promote(&job.inventory).await,
                _ => {
                    let started_at = job.started_at.unwrap_or(job.created_at);
                    if now_ms() > started_at + timeout + grace {
                        if let Some(record) =
                            launch_record(&job).filter(|record| self.launcher.owns(record))
                        {
                            let _ = self.launcher.stop(&record).await;
                        }
                        self.fail(&job.id, &self.timed_out()).await;
                    } else {
                        self.resolve(job, &live).await;
                    }
                }
            }
        }
        // Listing skips expired jobs anyway; trimming keeps the indexes small.
        if let Err(error) = self.store.trim_history().await {
            warn!(%error, "trimming the job history failed");
        }
        Ok(())
    }

    /// Runs [`Lifecycle::sweep`] every few seconds for the life of the service.
    pub fn spawn_sweeper(self: &Arc<Self>) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(SWEEP_EVERY);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                if let Err(error) = this.sweep().await {
                    warn!(%error, "job sweep failed");
                }
            }
        });
    }
}
