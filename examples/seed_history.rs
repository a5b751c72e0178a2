//! Fills a store with a long job history for `scripts/bench-history.sh`, a
//! by-hand benchmark of `GET /api/v1/jobs` (not a test):
//!
//!   cargo run --release --example seed_history -- --data-dir DIR [--jobs N]
//!   cargo run --release --example seed_history -- --redis-url URL [--prefix P] [--jobs N]
//!
//! Every job goes through the store calls the service makes: `start_job`,
//! then `update_job` to `success` or `error`, so the history indexes are the
//! ones a long-running service builds. Ids come from one ULID generator, in
//! creation order, as in the service. Jobs are kept for `--job-ttl` (30 days)
//! from when they end: each backend writes a job's expiry with the job, so
//! the service reading them later does not forget them sooner, whatever its
//! own `CD_JOB_TTL`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{ArgGroup, Parser};
use enac_cd::domain::{now_ms, JobStatus, Lifetimes, NewJob, OnBusy, Trigger, TriggerKind};
use enac_cd::store::{
    EmbeddedStore, JobLimits, JobQuery, JobUpdate, OutputChange, RedisStore, StartOutcome, Store,
    StoreError, UpdateOutcome,
};
use secrecy::SecretString;

/// The file the service opens in `CD_DATA_DIR`.
const STORE_FILE: &str = "enac-cd.redb";
/// How long a dropped embedded store may take to let go of its file.
const RELEASE_DEADLINE: Duration = Duration::from_secs(10);
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// The service's defaults (`CD_JOB_TIMEOUT`, `CD_MAX_OUTPUT`).
const JOB_TIMEOUT: Duration = Duration::from_secs(3600);
const MAX_OUTPUT: usize = 1 << 20;

#[derive(Parser)]
#[command(about = "Writes a job history into an enac-cd store, for the history benchmark")]
#[command(group(ArgGroup::new("store").required(true).args(["redis_url", "data_dir"])))]
struct Cli {
    /// A Redis store: `redis://host:port/db`.
    #[arg(long)]
    redis_url: Option<String>,
    /// Prefix of every Redis key (the service's `CD_REDIS_PREFIX`).
    #[arg(long, default_value = "enac-cd:")]
    prefix: String,
    /// An embedded store: the service's `CD_DATA_DIR`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Jobs to write.
    #[arg(long, default_value_t = 100_000)]
    jobs: usize,
    /// Deployments the jobs are spread over (`bench-app-00`…), one inventory each.
    #[arg(long, default_value_t = 50)]
    deployments: usize,
    /// Jobs written at once; each writer owns its deployments, so no start
    /// ever finds its inventory busy.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// How long finished jobs are kept.
    #[arg(long, default_value = "30d", value_parser = enac_cd::units::parse_duration)]
    job_ttl: Duration,
}

/// What every writer shares.
struct Seeding {
    store: Arc<dyn Store>,
    job_ids: Mutex<ulid::Generator>,
    written: Arc<AtomicUsize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.deployments == 0 || cli.concurrency == 0 {
        bail!("--deployments and --concurrency must be at least 1");
    }
    let lifetimes = Lifetimes {
        job_timeout: JOB_TIMEOUT,
        job_ttl: cli.job_ttl,
    };
    let limits = JobLimits::new(lifetimes, MAX_OUTPUT);
    let store = open(&cli, limits).await?;
    let seeding = Arc::new(Seeding {
        store,
        job_ids: Mutex::new(ulid::Generator::new()),
        written: Arc::new(AtomicUsize::new(0)),
    });

    let started = Instant::now();
    let progress = tokio::spawn(report_progress(
        Arc::clone(&seeding.written),
        cli.jobs,
        started,
    ));
    // Writers beyond the deployments would have none of their own.
    let writers = cli.concurrency.min(cli.deployments);
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..writers {
        let owned: Vec<usize> = (writer..cli.deployments).step_by(writers).collect();
        let count = cli.jobs / writers + usize::from(writer < cli.jobs % writers);
        tasks.spawn(write_jobs(Arc::clone(&seeding), owned, count));
    }
    while let Some(finished) = tasks.join_next().await {
        finished.context("a writer panicked")??;
    }
    progress.abort();
    let elapsed = started.elapsed();
    let written = seeding.written.load(Ordering::Relaxed);
    println!(
        "seeded {written} jobs over {} deployments in {:.1} s ({:.0} jobs/s)",
        cli.deployments,
        elapsed.as_secs_f64(),
        written as f64 / elapsed.as_secs_f64().max(1e-3)
    );

    let Seeding { store, .. } =
        Arc::into_inner(seeding).context("a writer outlived the seeding")?;
    check_newest(store.as_ref()).await?;
    if let Some(dir) = &cli.data_dir {
        drop(store);
        wait_for_release(&dir.join(STORE_FILE), limits).await?;
    }
    Ok(())
}

async fn open(cli: &Cli, limits: JobLimits) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(url) = &cli.redis_url {
        let store = RedisStore::connect(&SecretString::from(url.clone()), &cli.prefix, limits)
            .await
            .context("connecting to Redis")?;
        return Ok(Arc::new(store));
    }
    let dir = cli
        .data_dir
        .as_ref()
        .context("neither --redis-url nor --data-dir")?;
    let store = EmbeddedStore::open(&dir.join(STORE_FILE), limits)
        .with_context(|| format!("opening the store in {}", dir.display()))?;
    Ok(Arc::new(store))
}

/// Writes `count` jobs, one after the other, in turn over the `owned`
/// deployments: nobody else starts a job on their inventories.
async fn write_jobs(seeding: Arc<Seeding>, owned: Vec<usize>, count: usize) -> anyhow::Result<()> {
    for n in 0..count {
        let deployment = owned[n % owned.len()];
        let id = seeding
            .job_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .generate()
            .context("more than 2^80 job ids in one millisecond")?;
        let job = NewJob {
            id: id.to_string(),
            deployment_id: format!("bench-app-{deployment:02}"),
            inventory: format!("bench-inv-{deployment:02}"),
            trigger: trigger_of(n, deployment),
            created_at: now_ms(),
            reports: Vec::new(),
        };
        match seeding.store.start_job(&job, OnBusy::Reject).await? {
            StartOutcome::Started(_) => {}
            other => bail!("job {} did not start: {other:?}", job.id),
        }
        // About one job in eight fails, so that `status=error` is a sparse filter.
        let failed = n % 8 == 3;
        let update = JobUpdate {
            status: if failed {
                JobStatus::Error
            } else {
                JobStatus::Success
            },
            output: Some(OutputChange::Replace(output_of(&job, failed))),
            exit_code: Some(if failed { 2 } else { 0 }),
            cancelled_by: None,
        };
        match seeding.store.update_job(&job.id, &update).await? {
            UpdateOutcome::Applied { .. } => {}
            other => bail!("job {} did not end: {other:?}", job.id),
        }
        seeding.written.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Secret, webhook and OIDC triggers in turn, with the facts each brings,
/// so that a listed job is as large as a real one.
fn trigger_of(n: usize, deployment: usize) -> Trigger {
    let repository = Some(format!("epfl-enac/bench-app-{deployment:02}"));
    let git_ref = Some("refs/heads/main".to_owned());
    let sha = Some(format!("{:040x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    match n % 3 {
        0 => Trigger::of_kind(TriggerKind::Secret),
        1 => Trigger {
            repository,
            git_ref,
            sha,
            actor: Some("bench-user".to_owned()),
            event: Some("push".to_owned()),
            delivery_id: Some(format!("{n:08x}-0000-4000-8000-000000000000")),
            policy: Some(format!("bench-app-{deployment:02}.toml")),
            ..Trigger::of_kind(TriggerKind::GithubWebhook)
        },
        _ => Trigger {
            repository,
            git_ref,
            sha,
            actor: Some("bench-user".to_owned()),
            issuer: Some("github".to_owned()),
            subject: Some(format!(
                "repo:epfl-enac/bench-app-{deployment:02}:ref:refs/heads/main"
            )),
            policy: Some(format!("bench-app-{deployment:02}.toml")),
            ..Trigger::of_kind(TriggerKind::GithubOidc)
        },
    }
}

/// A short ansible-like output: the list never reads it, but it is stored.
fn output_of(job: &NewJob, failed: bool) -> String {
    let mut output = format!("PLAY [{}] ****\n", job.inventory);
    for task in 1..=4 {
        output.push_str(&format!(
            "TASK [deploy : step {task}] ****\nok: [{}]\n",
            job.inventory
        ));
    }
    output.push_str(if failed {
        "fatal: the bench said so\n"
    } else {
        "PLAY RECAP ok=4 changed=1 failed=0\n"
    });
    output
}

async fn report_progress(counter: Arc<AtomicUsize>, total: usize, started: Instant) {
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let written = counter.load(Ordering::Relaxed);
        println!(
            "  {written}/{total} jobs after {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
}

/// Reads the newest job back through the history, as the service will.
async fn check_newest(store: &dyn Store) -> anyhow::Result<()> {
    let query = JobQuery {
        limit: 1,
        ..JobQuery::default()
    };
    let page = store
        .list_jobs(&query)
        .await
        .context("listing the history")?;
    let newest = page
        .jobs
        .first()
        .context("the history is empty after seeding")?;
    println!("newest job: {} ({})", newest.id, newest.deployment_id);
    Ok(())
}

/// Waits until the dropped store's file can be opened again, so that the
/// service started next finds it free; the probe is dropped at once.
async fn wait_for_release(path: &Path, limits: JobLimits) -> anyhow::Result<()> {
    let deadline = Instant::now() + RELEASE_DEADLINE;
    loop {
        match EmbeddedStore::open(path, limits) {
            Ok(probe) => {
                drop(probe);
                println!("store file released: {}", path.display());
                return Ok(());
            }
            Err(StoreError::Locked(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => return Err(error).context("reopening the seeded store file"),
        }
    }
}
