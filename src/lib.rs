//! enac-cd: a continuous-deployment broker. CI runners ask it to deploy an
//! app; it authenticates them, keeps one job per inventory, launches the
//! ansible program and serves the job's status and output.

pub mod access;
pub mod apps;
pub mod auth;
pub mod client;
pub mod config;
pub mod domain;
pub mod http;
pub mod ingress;
pub mod jobs;
pub mod launch;
pub mod metrics;
pub mod outbound;
pub mod policy;
pub mod private_files;
pub mod report;
pub mod store;
pub mod telemetry;
pub mod units;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rand::RngCore;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::access::JobAccess;
use crate::auth::oidc::OidcVerifier;
use crate::config::{LauncherKind, PrivateCas, Settings};
pub use crate::http::AppState;
use crate::ingress::Ingress;
use crate::jobs::{JobFeed, Lifecycle, LifecycleConfig, TokenSigner};
use crate::launch::docker::DockerConfig;
use crate::launch::{DockerLauncher, Launcher, ProcessLauncher};
use crate::metrics::Metrics;
use crate::policy::Policies;
use crate::store::redis::RedisConnectOptions;
use crate::store::{AppRecord, EmbeddedStore, JobLimits, RedisStore, Store};

/// How long `serve` waits for its store at start.
const STORE_WAIT: Duration = Duration::from_secs(5);

/// The router of the whole service.
pub fn app(state: AppState) -> Router {
    http::router(state)
}

/// Why `serve` could not start; the message names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Settings(#[from] config::SettingsError),
    #[error("{setting}: {reason}")]
    Unreachable {
        setting: &'static str,
        reason: String,
    },
}

async fn open_store(
    settings: &Settings,
    private_cas: Option<&PrivateCas>,
) -> Result<Arc<dyn Store>, StartError> {
    let limits = JobLimits::new(settings.lifetimes(), settings.max_output);
    let Some(url) = &settings.redis_url else {
        let path = settings.data_dir.join("enac-cd.redb");
        return match EmbeddedStore::open(&path, limits) {
            Ok(store) => Ok(Arc::new(store)),
            Err(error) => Err(StartError::Unreachable {
                setting: "CD_DATA_DIR",
                reason: error.to_string(),
            }),
        };
    };
    let options = RedisConnectOptions {
        password: settings.redis_password.clone(),
        tls_roots: private_cas.map(PrivateCas::with_system_roots_pem),
    };
    // Redis may come up just after us (compose): retry for a few seconds.
    let deadline = tokio::time::Instant::now() + STORE_WAIT;
    loop {
        let attempt = RedisStore::connect_with(url, &options, &settings.redis_prefix, limits);
        let error = match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(store)) => return Ok(Arc::new(store)),
            Ok(Err(error)) => error.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        if tokio::time::Instant::now() + Duration::from_millis(500) >= deadline {
            return Err(StartError::Unreachable {
                setting: "CD_REDIS_URL",
                reason: format!("cannot reach Redis ({error})"),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The setting naming the store, for start-up errors.
fn store_setting(settings: &Settings) -> &'static str {
    if settings.redis_url.is_some() {
        "CD_REDIS_URL"
    } else {
        "CD_DATA_DIR"
    }
}

async fn signing_key(settings: &Settings, store: &dyn Store) -> Result<Vec<u8>, StartError> {
    if let Some(key) = &settings.signing_key {
        return Ok(key.expose_secret().as_bytes().to_vec());
    }
    let mut proposed = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut proposed);
    let kept = store
        .signing_key(&hex::encode(proposed))
        .await
        .map_err(|error| StartError::Unreachable {
            setting: store_setting(settings),
            reason: error.to_string(),
        })?;
    Ok(kept.into_bytes())
}

fn launcher(settings: &Settings) -> Result<Arc<dyn Launcher>, StartError> {
    match (settings.launcher, &settings.process_command) {
        (LauncherKind::Process, Some(program)) => Ok(Arc::new(ProcessLauncher::new(
            program.clone(),
            &settings.data_dir,
        ))),
        (LauncherKind::Process, None) => Err(config::SettingsError {
            setting: "CD_PROCESS_COMMAND",
            reason: "required when CD_LAUNCHER=process".into(),
        }
        .into()),
        (LauncherKind::Docker, _) => {
            let config = DockerConfig {
                host: settings.docker_host.clone(),
                image: settings.docker_image.clone(),
                pull: settings.docker_pull,
                network: settings.docker_network.clone(),
                binds: settings.docker_binds.clone(),
                registry_user: settings.registry_user.clone(),
                registry_password: settings.registry_password.clone(),
                // A wait lasts as long as its job.
                request_timeout: settings.lifetimes().lock(),
            };
            let launcher =
                DockerLauncher::connect(config).map_err(|error| config::SettingsError {
                    setting: "CD_DOCKER_HOST",
                    reason: error.to_string(),
                })?;
            Ok(Arc::new(launcher))
        }
    }
}

/// Reads and validates `CD_APPS_FILE` (before any store is touched).
fn read_apps_file(settings: &Settings) -> Result<Option<Vec<AppRecord>>, StartError> {
    let Some(path) = &settings.apps_file else {
        return Ok(None);
    };
    let bad = |reason: String| config::SettingsError {
        setting: "CD_APPS_FILE",
        reason,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|error| bad(format!("cannot read `{}`: {error}", path.display())))?;
    let list: serde_json::Value = serde_json::from_str(&text)
        .map_err(|error| bad(format!("`{}` is not JSON: {error}", path.display())))?;
    let apps = apps::parse_apps(&list, settings.min_secret_length).map_err(|problems| {
        let listed: Vec<String> = problems.iter().map(ToString::to_string).collect();
        bad(format!("`{}`: {}", path.display(), listed.join("; ")))
    })?;
    Ok(Some(apps))
}

/// This instance's name in the store (launch claims, leases): its host and
/// port, the same across a restart, different for replicas on one host.
fn instance_name(settings: &Settings) -> String {
    let host = crate::launch::process::host_name();
    match settings.listen.port() {
        // A port chosen by the system says nothing across restarts.
        0 => format!("{host}:{}", ulid::Ulid::new()),
        port => format!("{host}:{port}"),
    }
}

/// The report deliverer (contract §12), with the GitHub App's key read.
fn reporter(
    settings: &Settings,
    instance: String,
    private_cas: Option<&PrivateCas>,
    store: Arc<dyn Store>,
    policies: Policies,
    metrics: Metrics,
) -> Result<Arc<report::Reporter>, StartError> {
    let bad = |setting: &'static str, reason: String| config::SettingsError { setting, reason };
    let app = match (&settings.github_app_id, &settings.github_private_key_file) {
        (Some(app_id), Some(path)) => {
            let pem = std::fs::read(path).map_err(|error| {
                bad(
                    "CD_GITHUB_PRIVATE_KEY_FILE",
                    format!("cannot read `{}`: {error}", path.display()),
                )
            })?;
            let app = report::GithubApp::from_pem(app_id, &pem)
                .map_err(|reason| bad("CD_GITHUB_PRIVATE_KEY_FILE", reason))?;
            Some(app)
        }
        _ => None,
    };
    let roots = private_cas.map_or(&[][..], PrivateCas::certificates);
    let client = report::OutboundClient::new(settings.report_timeout, roots)
        .map(Arc::new)
        .map_err(|reason| {
            bad(
                "CD_REPORT_TIMEOUT",
                format!("no HTTP client for reports: {reason}"),
            )
        })?;
    let github = report::Github::new(Arc::clone(&client), settings.github_api_url.clone(), app);
    let gitlab = report::Gitlab::new(Arc::clone(&client), settings.gitlab_api_url.clone());
    Ok(report::Reporter::new(
        store,
        policies,
        (client, github, gitlab),
        metrics,
        report::ReporterConfig {
            public_url: settings.public_url(),
            instance,
            retry: settings.report_retry,
        },
    ))
}

/// Builds the state from validated settings: store, signing key, launcher,
/// lifecycle, apps file. Reconciles open jobs and starts the sweeper.
pub async fn build_state(settings: &Settings) -> Result<AppState, StartError> {
    settings.validate()?;
    let apps = read_apps_file(settings)?;
    let issuer_names = settings
        .issuers
        .iter()
        .map(|issuer| issuer.name.clone())
        .collect();
    let policies = policy::load_dir(&settings.policy_dir)
        .and_then(|set| Policies::new(set, issuer_names, settings.github_app_id.is_some()))
        .map_err(|error| config::SettingsError {
            setting: "CD_POLICY_DIR",
            reason: error.to_string(),
        })?;
    let private_cas = settings
        .ca_file
        .as_deref()
        .map(PrivateCas::load)
        .transpose()?;
    let oidc = OidcVerifier::trusting(
        settings.issuers.clone(),
        private_cas.as_ref().map_or(&[], PrivateCas::certificates),
    )
    .map_err(|error| config::SettingsError {
        // Without CD_CA_FILE, only the system's trust store can be at fault.
        setting: if private_cas.is_some() {
            "CD_CA_FILE"
        } else {
            "SSL_CERT_FILE"
        },
        reason: format!("no HTTPS client for the OIDC issuers: {error}"),
    })?;
    let launcher = launcher(settings)?;
    let store = open_store(settings, private_cas.as_ref()).await?;
    let key = signing_key(settings, store.as_ref()).await?;
    if let Some(apps) = apps {
        store
            .replace_apps(&apps)
            .await
            .map_err(|error| StartError::Unreachable {
                setting: store_setting(settings),
                reason: error.to_string(),
            })?;
        tracing::info!(count = apps.len(), "apps loaded from CD_APPS_FILE");
    }
    let metrics = Metrics::new();
    // The name of this instance's launch claims, leases and report claims.
    let instance = instance_name(settings);
    let lifecycle = Lifecycle::new(
        Arc::clone(&store),
        Arc::clone(&launcher),
        TokenSigner::new(&key),
        LifecycleConfig {
            public_url: settings.public_url(),
            cd_env: settings.cd_env.clone(),
            self_inventory: settings.self_inventory.clone(),
            lifetimes: settings.lifetimes(),
            instance: instance.clone(),
        },
        metrics.clone(),
    );
    if let Err(error) = lifecycle.reconcile().await {
        tracing::error!(%error, "reconciliation failed; the sweeper will retry");
    }
    lifecycle.spawn_heartbeat();
    lifecycle.spawn_sweeper();
    let oidc = Arc::new(oidc);
    let access = Arc::new(JobAccess::new(
        Arc::clone(&store),
        lifecycle.tokens().clone(),
        Arc::clone(&oidc),
        policies.clone(),
        settings.admin_token.clone().map(Arc::new),
        settings.viewer_token.clone().map(Arc::new),
        metrics.clone(),
    ));
    let ingress = Arc::new(Ingress::new(
        Arc::clone(&store),
        Arc::clone(&lifecycle),
        oidc,
        policies.clone(),
        metrics.clone(),
        settings.on_busy,
    ));
    let background = http::Background::default();
    reporter(
        settings,
        instance,
        private_cas.as_ref(),
        Arc::clone(&store),
        policies.clone(),
        metrics.clone(),
    )?
    .spawn(&background);
    Ok(AppState {
        background,
        feed: JobFeed::start(Arc::clone(&store)),
        store,
        launcher,
        lifecycle,
        ingress,
        access,
        policies,
        metrics,
        max_output: settings.max_output,
        secure_cookies: settings.public_url().starts_with("https://"),
        min_secret_length: settings.min_secret_length,
        connections: http::server::ConnectionLimits {
            header_timeout: settings.header_timeout,
            body_timeout: settings.body_timeout,
            max_connections: settings.max_connections,
            drain_timeout: settings.drain_timeout,
        },
    })
}

/// Serves until `shutdown` resolves, then drains in-flight requests.
/// Running jobs are left to the next start's reconciliation.
pub async fn serve_until(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let lifecycle = Arc::clone(&state.lifecycle);
    let background = state.background.clone();
    let limits = state.connections;
    let feed = Arc::clone(&state.feed);
    // Followers of live output would hold the drain to its end: their
    // streams close at once, and they resume on another replica.
    let shutdown = async move {
        shutdown.await;
        feed.close();
    };
    http::server::serve(listener, app(state), limits, shutdown).await?;
    // Deliveries under way give their claims back for the next instance.
    background.stop(Duration::from_secs(5)).await;
    // A job claimed for launch must not be left half-launched.
    lifecycle.finish_launches(Duration::from_secs(30)).await;
    // Its jobs are then adopted at once by the next start or a replica.
    lifecycle.retire().await;
    Ok(())
}

/// Serves until SIGTERM or Ctrl-C.
pub async fn serve(listener: TcpListener, state: AppState) -> std::io::Result<()> {
    serve_until(listener, state, shutdown_signal()).await
}

/// `SIGHUP` reloads the policy files; a bad set keeps the old one.
fn reload_policies_on_sighup(policies: Policies, dir: std::path::PathBuf) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: policies reload only at start");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match policies.reload(&dir) {
                Ok(count) => tracing::info!(count, "policies reloaded"),
                Err(error) => {
                    tracing::error!(%error, "policy reload refused; the previous policies stay")
                }
            }
        }
    });
}

/// Resolves at the first SIGTERM or Ctrl-C. SIGTERM is listened for from
/// the call on, not from the first poll: a stop asked while the service
/// still builds its state (the port already accepts) is not lost, and
/// ends it gracefully once it serves.
fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let terminate = signal(SignalKind::terminate());
    async move {
        let terminate = async {
            match terminate {
                Ok(mut stream) => {
                    stream.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = terminate => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down: draining requests; running jobs continue");
    }
}

/// `enac-cd serve`: build, bind, serve.
pub async fn run(mut settings: Settings) -> Result<(), StartError> {
    settings.read_secret_files()?;
    settings.validate()?;
    // Bound first: a taken port is refused before anything is logged.
    let listener =
        TcpListener::bind(settings.listen)
            .await
            .map_err(|error| config::SettingsError {
                setting: "CD_LISTEN",
                reason: format!("cannot listen on {}: {error}", settings.listen),
            })?;
    let stop = shutdown_signal();
    let state = build_state(&settings).await?;
    reload_policies_on_sighup(state.policies.clone(), settings.policy_dir.clone());
    tracing::info!(listen = %settings.listen, "enac-cd serving");
    // Said once serving, so that a refused start stays one line on stderr.
    if !settings.policy_dir.is_dir() {
        tracing::warn!(dir = %settings.policy_dir.display(),
                       "CD_POLICY_DIR does not exist: no webhook or OIDC policy is loaded");
    }
    // An image without ca-certificates trusts nothing: say why key fetches
    // will fail (a Redis over TLS would have stopped the start already).
    if !settings.issuers.is_empty()
        && settings.ca_file.is_none()
        && rustls_native_certs::load_native_certs().certs.is_empty()
    {
        tracing::warn!("the system trust store is empty (no ca-certificates, or SSL_CERT_FILE/SSL_CERT_DIR name none): HTTPS to the OIDC issuers will fail");
    }
    serve_until(listener, state, stop)
        .await
        .map_err(|error| StartError::Unreachable {
            setting: "CD_LISTEN",
            reason: error.to_string(),
        })
}
