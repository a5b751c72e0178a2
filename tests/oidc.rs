//! OIDC job tokens end to end (contract §3, §6, §7, §9): a wiremock issuer
//! serving discovery and a JWKS of keys generated here, tokens shaped like
//! the ones GitHub Actions and GitLab CI mint, the service on port 0 and the
//! real `enac-cd` binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::binary::BinaryRun;
use common::oidc::{
    b64, github_claims, gitlab_claims, hmac_key, rsa_material, with, without, FakeIssuer,
    SigningKey,
};
use common::tls::{TestCertificates, TlsProxy};
use common::{eventually, unix_now, Backend, TestApp};
use enac_cd::auth::oidc::Issuer;
use enac_cd::domain::TriggerKind;
use jsonwebtoken::{Algorithm, Header};
use serde_json::{json, Value};
use tokio::process::Command;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// The audience configured for the test issuers; no refusal may show it.
const AUDIENCE: &str = "cd-audience-7c1e-never-shown";
/// What `enac-cd deploy --oidc github` asks for unless told otherwise.
const CLIENT_AUDIENCE: &str = "enac-cd";
const JOB_DEADLINE: Duration = Duration::from_secs(30);
/// Waits that include the issuer's one-minute refetch cooldown.
const COOLDOWN_DEADLINE: Duration = Duration::from_secs(90);

const GITHUB_POLICY: &str = r#"
deployment_id = "app-one"

[[oidc]]
issuer = "github"
[oidc.claims]
repository_id = "123456"
ref = "refs/heads/main"
environment = ["prod", "production"]
"#;

const GITLAB_POLICY: &str = r#"
deployment_id = "app-gitlab"

[[oidc]]
issuer = "gitlab"
[oidc.claims]
project_id = "42"
ref = "main"
ref_protected = "true"
"#;

/// Claim values the policies above expect; no refusal may show them either.
const POLICY_VALUES: [&str; 4] = ["123456", "refs/heads/main", "production", r"deploy\.yml"];

// ---------------------------------------------------------------- service

/// The service with OIDC issuers, policy files and apps.
struct Service {
    app: TestApp,
    /// Configured values no refusal may reveal.
    never_shown: Vec<String>,
    _policy_dir: tempfile::TempDir,
}

fn write_policies(dir: &Path, policies: &[(&str, &str)]) {
    for (file, text) in policies {
        std::fs::write(dir.join(file), text).expect("policy file written");
    }
}

impl Service {
    async fn start(
        issuers: Vec<Issuer>,
        policies: &[(&str, &str)],
        apps: &[(&str, &str)],
    ) -> Service {
        Service::start_trusting(issuers, policies, apps, None).await
    }

    /// Like [`Service::start`], with `CD_CA_FILE` set to `ca_file`.
    async fn start_trusting(
        issuers: Vec<Issuer>,
        policies: &[(&str, &str)],
        apps: &[(&str, &str)],
        ca_file: Option<PathBuf>,
    ) -> Service {
        let policy_dir = tempfile::tempdir().expect("policy dir");
        write_policies(policy_dir.path(), policies);
        let mut never_shown: Vec<String> = POLICY_VALUES.iter().map(|v| v.to_string()).collect();
        for issuer in &issuers {
            never_shown.push(issuer.audience.clone());
            never_shown.push(issuer.iss.clone());
        }
        let dir = policy_dir.path().to_owned();
        let app = TestApp::start(Backend::Embedded, &[], move |settings| {
            settings.issuers = issuers;
            settings.policy_dir = dir;
            settings.ca_file = ca_file;
        })
        .await;
        app.set_apps(apps).await;
        Service {
            app,
            never_shown,
            _policy_dir: policy_dir,
        }
    }

    async fn deploy_with(&self, token: &str, body: &Value) -> (u16, Value) {
        self.app
            .post_with_token("/app-deploy/", Some(token), body)
            .await
    }

    async fn status_with(&self, token: &str, job_id: &str) -> (u16, Value) {
        self.app
            .post_with_token("/job-status/", Some(token), &json!({ "job_id": job_id }))
            .await
    }

    /// Starts a job with `token`; returns the answer (`job_id`, `status_token`).
    async fn deploy_ok(&self, token: &str, body: &Value) -> Value {
        let (status, answer) = self.deploy_with(token, body).await;
        assert_eq!(status, 200, "the token starts a job: {answer}");
        assert!(
            matches!(answer["status"].as_str(), Some("starting" | "queued")),
            "{answer}"
        );
        answer
    }

    /// Polls `/job-status/` with `token` until the job is final; it must succeed.
    async fn wait_success(&self, token: &str, job_id: &str) -> Value {
        let last = eventually(&format!("job {job_id} to end"), JOB_DEADLINE, || async {
            let (status, body) = self.status_with(token, job_id).await;
            assert_eq!(status, 200, "the token reads the job: {body}");
            matches!(body["status"].as_str(), Some("success" | "error")).then_some(body)
        })
        .await;
        assert_eq!(last["status"], "success", "{last}");
        last
    }

    /// `/app-deploy/` with `token` answers 401 naming `check`, reveals no
    /// configured value and starts no job.
    async fn assert_refused(&self, token: &str, body: &Value, check: &str) -> String {
        let before = self.app.jobs_started().await;
        let (status, answer) = self.deploy_with(token, body).await;
        assert_eq!(status, 401, "refused with 401: {answer}");
        assert_eq!(answer["status"], "error", "{answer}");
        let error = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("an error message in {answer}"))
            .to_owned();
        assert!(
            error.contains(check),
            "the refusal names the check `{check}`: {error}"
        );
        for value in &self.never_shown {
            assert!(
                !error.contains(value.as_str()),
                "the refusal reveals the configured value {value:?}: {error}"
            );
        }
        assert!(answer.get("job_id").is_none(), "{answer}");
        assert_eq!(
            self.app.jobs_started().await,
            before,
            "a refused token started a job"
        );
        error
    }
}

/// A GitHub issuer serving one RS256 key, and the service with [`GITHUB_POLICY`].
struct GithubSetup {
    issuer: FakeIssuer,
    key: SigningKey,
    service: Service,
}

impl GithubSetup {
    async fn start() -> GithubSetup {
        let key = SigningKey::rsa(0, "gh-key-a");
        let issuer = FakeIssuer::serving("github", &[&key]).await;
        let service = Service::start(
            vec![issuer.config(AUDIENCE, &["RS256"])],
            &[("app-one.toml", GITHUB_POLICY)],
            &[("app-one", "ok-one")],
        )
        .await;
        GithubSetup {
            issuer,
            key,
            service,
        }
    }

    fn claims(&self) -> Value {
        github_claims(&self.issuer.iss(), AUDIENCE)
    }

    async fn refused(&self, token: &str, check: &str) -> String {
        self.service.assert_refused(token, &json!({}), check).await
    }
}

// ---------------------------------------------------------------- accepted tokens

#[tokio::test]
async fn a_github_token_deploys_the_only_deployment_its_policy_grants() {
    let setup = GithubSetup::start().await;
    let token = setup.key.sign(&setup.claims());

    // No deployment_id: the policies map the token to app-one alone.
    let started = setup.service.deploy_ok(&token, &json!({})).await;
    assert_eq!(started["status"], "starting", "{started}");
    assert_eq!(started["output"], "", "{started}");
    let job_id = started["job_id"].as_str().expect("a job id").to_owned();
    let status_token = started["status_token"]
        .as_str()
        .expect("a status token")
        .to_owned();

    let done = setup.service.wait_success(&token, &job_id).await;
    assert!(
        done["output"].as_str().unwrap_or("").contains("done"),
        "{done}"
    );
    // The OIDC token reads status as often as the client polls.
    for _ in 0..3 {
        let (status, body) = setup.service.status_with(&token, &job_id).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (body["job_id"].as_str(), body["status"].as_str()),
            (Some(job_id.as_str()), Some("success"))
        );
    }
    let (status, body) = setup.service.status_with(&status_token, &job_id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["job_id"], job_id.as_str(), "{body}");

    let job = setup.service.app.job(&job_id).await;
    assert_eq!(job.deployment_id, "app-one");
    assert_eq!(job.inventory, "ok-one");
    assert_eq!(job.trigger.kind, TriggerKind::GithubOidc);
    assert_eq!(job.trigger.kind.as_str(), "github-oidc");
    assert_eq!(job.trigger.repository.as_deref(), Some("epfl-enac/app"));
    assert_eq!(job.trigger.git_ref.as_deref(), Some("refs/heads/main"));
    assert_eq!(
        job.trigger.sha.as_deref(),
        Some("d6cd1e2bd19e03a81132a23b2025920577f84e37")
    );
    assert_eq!(job.trigger.actor.as_deref(), Some("octocat"));
    assert_eq!(setup.service.app.jobs_started().await, 1);
}

#[tokio::test]
async fn a_gitlab_es256_token_deploys_with_a_gitlab_oidc_trigger() {
    let key = SigningKey::es256("gl-key-1");
    let issuer = FakeIssuer::serving("gitlab", &[&key]).await;
    let service = Service::start(
        vec![issuer.config(AUDIENCE, &["ES256"])],
        &[("app-gitlab.toml", GITLAB_POLICY)],
        &[("app-gitlab", "ok-gitlab")],
    )
    .await;
    let token = key.sign(&gitlab_claims(&issuer.iss(), AUDIENCE));

    let started = service.deploy_ok(&token, &json!({})).await;
    let job_id = started["job_id"].as_str().expect("a job id");
    service.wait_success(&token, job_id).await;
    let status_token = started["status_token"].as_str().expect("a status token");
    let (status, body) = service.status_with(status_token, job_id).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("success")),
        "{body}"
    );

    let job = service.app.job(job_id).await;
    assert_eq!(job.deployment_id, "app-gitlab");
    assert_eq!(job.trigger.kind.as_str(), "gitlab-oidc");
    assert_eq!(job.trigger.repository.as_deref(), Some("epfl-enac/app"));
    assert_eq!(job.trigger.git_ref.as_deref(), Some("main"));
    assert_eq!(job.trigger.actor.as_deref(), Some("alice"));
    assert_eq!(
        job.trigger.sha.as_deref(),
        Some("0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c")
    );
}

#[tokio::test]
async fn a_token_refused_for_a_busy_inventory_keeps_its_jti_and_starts_a_job_later() {
    let key = SigningKey::rsa(0, "gh-key-a");
    let issuer = FakeIssuer::serving("github", &[&key]).await;
    let rejecting = GITHUB_POLICY.replace(
        "deployment_id = \"app-one\"\n",
        "deployment_id = \"app-one\"\non_busy = \"reject\"\n",
    );
    let service = Service::start(
        vec![issuer.config(AUDIENCE, &["RS256"])],
        &[("app-one.toml", &rejecting)],
        &[("app-one", "sleep-2-app-one")],
    )
    .await;
    let first = key.sign(&github_claims(&issuer.iss(), AUDIENCE));
    let started = service.deploy_ok(&first, &json!({})).await;
    let running = started["job_id"].as_str().expect("a job id").to_owned();

    let second = key.sign(&github_claims(&issuer.iss(), AUDIENCE));
    let (status, body) = service.deploy_with(&second, &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["error"], "App deployment is already running", "{body}");
    assert_eq!(service.app.jobs_started().await, 1);

    // Refused for the busy inventory, the token was not spent: once the
    // inventory is free it starts its job, and only then is it spent.
    service.wait_success(&first, &running).await;
    let started = service.deploy_ok(&second, &json!({})).await;
    assert_eq!(started["status"], "starting", "{started}");
    assert_eq!(service.app.jobs_started().await, 2);
    service.assert_refused(&second, &json!({}), "jti").await;
}

#[tokio::test]
async fn a_token_starts_one_job_but_reads_its_status_again_and_again() {
    let setup = GithubSetup::start().await;
    let token = setup.key.sign(&setup.claims());
    let started = setup.service.deploy_ok(&token, &json!({})).await;
    let job_id = started["job_id"].as_str().expect("a job id");
    setup.service.wait_success(&token, job_id).await;

    let error = setup.refused(&token, "jti").await;
    assert!(error.contains("already used"), "{error}");
    // Named explicitly, the replay is refused too.
    setup
        .service
        .assert_refused(&token, &json!({"deployment_id": "app-one"}), "jti")
        .await;

    let (status, body) = setup.service.status_with(&token, job_id).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("success")),
        "{body}"
    );
    assert_eq!(setup.service.app.jobs_started().await, 1);
}

#[tokio::test]
async fn a_token_cannot_be_replayed_within_its_expiry_leeway() {
    let key = SigningKey::rsa(0, "leeway-a");
    let issuer = FakeIssuer::serving("github", &[&key]).await;
    let mut config = issuer.config(AUDIENCE, &["RS256"]);
    config.leeway = Duration::from_secs(5);
    let service = Service::start(
        vec![config],
        &[("app-one.toml", GITHUB_POLICY)],
        &[("app-one", "ok-one")],
    )
    .await;
    // Valid for two more seconds, accepted for five more after that.
    let claims = github_claims(&issuer.iss(), AUDIENCE);
    let token = key.sign(&with(claims, "exp", json!(unix_now() + 2)));
    let started = service.deploy_ok(&token, &json!({})).await;
    assert!(started["job_id"].is_string(), "{started}");

    // Until the token is refused as expired, every replay is refused.
    eventually(
        "the token to expire past its leeway",
        JOB_DEADLINE,
        || async {
            let (status, body) = service.deploy_with(&token, &json!({})).await;
            assert_eq!(status, 401, "the token started a second job: {body}");
            let error = body["error"].as_str().unwrap_or("");
            assert!(error.contains("jti") || error.contains("expired"), "{body}");
            error.contains("expired").then_some(())
        },
    )
    .await;
    assert_eq!(service.app.jobs_started().await, 1);
}

#[tokio::test]
async fn a_token_without_jti_cannot_start_a_job() {
    let setup = GithubSetup::start().await;
    let token = setup.key.sign(&without(setup.claims(), "jti"));
    setup.refused(&token, "jti").await;
}

#[tokio::test]
async fn a_deployment_id_the_policy_does_not_grant_is_refused() {
    let key = SigningKey::rsa(0, "gh-key-a");
    let issuer = FakeIssuer::serving("github", &[&key]).await;
    let other = r#"
deployment_id = "app-other"
[[oidc]]
issuer = "github"
[oidc.claims]
repository_id = "999999"
"#;
    let service = Service::start(
        vec![issuer.config(AUDIENCE, &["RS256"])],
        &[("app-one.toml", GITHUB_POLICY), ("app-other.toml", other)],
        &[("app-one", "ok-one"), ("app-other", "ok-other")],
    )
    .await;
    let token = key.sign(&github_claims(&issuer.iss(), AUDIENCE));

    let granted_elsewhere = service
        .assert_refused(&token, &json!({"deployment_id": "app-other"}), "policy")
        .await;
    // An id that exists nowhere gets the same answer: no existence leak.
    let unknown = service
        .assert_refused(&token, &json!({"deployment_id": "no-such-app"}), "policy")
        .await;
    assert_eq!(granted_elsewhere, unknown);

    // Refusals did not spend the token: the deployment it is granted works.
    let started = service
        .deploy_ok(&token, &json!({"deployment_id": "app-one"}))
        .await;
    let job = service
        .app
        .job(started["job_id"].as_str().expect("a job id"))
        .await;
    assert_eq!(job.deployment_id, "app-one");
}

#[tokio::test]
async fn a_token_matching_two_deployments_must_name_one() {
    let key = SigningKey::rsa(0, "gh-key-a");
    let issuer = FakeIssuer::serving("github", &[&key]).await;
    let preview = r#"
deployment_id = "app-one-preview"
[[oidc]]
issuer = "github"
[oidc.claims]
repository_id = "123456"
"#;
    let service = Service::start(
        vec![issuer.config(AUDIENCE, &["RS256"])],
        &[
            ("app-one.toml", GITHUB_POLICY),
            ("app-one-preview.toml", preview),
        ],
        &[("app-one", "ok-one"), ("app-one-preview", "ok-preview")],
    )
    .await;
    let token = key.sign(&github_claims(&issuer.iss(), AUDIENCE));

    let error = service.assert_refused(&token, &json!({}), "policy").await;
    assert!(error.contains("deployment_id"), "asks to name one: {error}");

    let started = service
        .deploy_ok(&token, &json!({"deployment_id": "app-one-preview"}))
        .await;
    let job = service
        .app
        .job(started["job_id"].as_str().expect("a job id"))
        .await;
    assert_eq!(
        (job.deployment_id.as_str(), job.inventory.as_str()),
        ("app-one-preview", "ok-preview")
    );
    assert_eq!(service.app.jobs_started().await, 1);
}

// ---------------------------------------------------------------- refused claims

#[tokio::test]
async fn an_expired_token_is_refused() {
    let setup = GithubSetup::start().await;
    let now = unix_now();
    let claims = with(setup.claims(), "iat", json!(now - 900));
    let claims = with(claims, "nbf", json!(now - 900));
    let token = setup.key.sign(&with(claims, "exp", json!(now - 120)));
    setup.refused(&token, "expired").await;
}

#[tokio::test]
async fn a_token_not_valid_before_a_future_nbf_is_refused() {
    let setup = GithubSetup::start().await;
    let token = setup
        .key
        .sign(&with(setup.claims(), "nbf", json!(unix_now() + 120)));
    setup.refused(&token, "nbf").await;
}

#[tokio::test]
async fn a_token_issued_in_the_future_is_refused() {
    let setup = GithubSetup::start().await;
    let now = unix_now();
    let claims = with(without(setup.claims(), "nbf"), "iat", json!(now + 300));
    let token = setup.key.sign(&with(claims, "exp", json!(now + 600)));
    setup.refused(&token, "iat").await;
}

#[tokio::test]
async fn a_token_living_longer_than_max_lifetime_is_refused() {
    let setup = GithubSetup::start().await;
    // max_lifetime is 10 minutes; this one lives an hour.
    let token = setup
        .key
        .sign(&with(setup.claims(), "exp", json!(unix_now() + 3600)));
    setup.refused(&token, "lifetime").await;
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let setup = GithubSetup::start().await;
    let token = setup.key.sign(&with(
        setup.claims(),
        "aud",
        json!("https://github.com/epfl-enac"),
    ));
    setup.refused(&token, "audience").await;
}

#[tokio::test]
async fn a_token_whose_aud_is_not_our_audience_alone_is_refused() {
    let setup = GithubSetup::start().await;
    for aud in [
        json!([AUDIENCE, "https://github.com/epfl-enac"]),
        json!(["https://github.com/epfl-enac", AUDIENCE]),
        json!([AUDIENCE, AUDIENCE]),
        json!([]),
        json!(7),
    ] {
        let token = setup.key.sign(&with(setup.claims(), "aud", aud));
        setup.refused(&token, "`aud`").await;
    }
    // Our audience alone, as a one-element list, is accepted.
    let token = setup
        .key
        .sign(&with(setup.claims(), "aud", json!([AUDIENCE])));
    setup.service.deploy_ok(&token, &json!({})).await;
    assert_eq!(setup.service.app.jobs_started().await, 1);
}

#[tokio::test]
async fn time_claims_outside_the_years_2000_to_2200_are_refused_naming_the_claim() {
    let setup = GithubSetup::start().await;
    let cases = [
        // `exp - iat` wrapped around and passed max_lifetime.
        ("iat", json!(i64::MIN)),
        ("iat", json!(-1)),
        ("iat", json!(0)),
        ("iat", json!(946_684_799)),
        // The `jti` would be remembered for a wrapped-around lifetime.
        ("exp", json!(9_200_000_000_000_000_i64)),
        ("exp", json!(7_258_118_401_i64)),
        ("exp", json!(u64::MAX)),
        ("nbf", json!(i64::MIN)),
        ("nbf", json!(-600)),
    ];
    for (claim, value) in cases {
        let token = setup.key.sign(&with(setup.claims(), claim, value.clone()));
        let error = setup.refused(&token, &format!("`{claim}`")).await;
        assert!(!error.contains("lifetime"), "{claim} = {value}: {error}");
    }
    // The bounds themselves are valid times; the service still serves.
    let token = setup
        .key
        .sign(&with(setup.claims(), "nbf", json!(946_684_800)));
    setup.service.deploy_ok(&token, &json!({})).await;
    assert_eq!(setup.service.app.jobs_started().await, 1);
}

#[tokio::test]
async fn time_claims_that_are_not_integers_are_refused() {
    let setup = GithubSetup::start().await;
    let now = unix_now();
    let cases = [
        // A string `nbf` used to be ignored, as if absent.
        ("nbf", json!((now + 3600).to_string())),
        ("nbf", json!((now - 600).to_string())),
        ("nbf", json!(now as f64 - 600.5)),
        ("nbf", json!(true)),
        ("nbf", json!(null)),
        ("iat", json!(now.to_string())),
        ("iat", json!(now as f64 + 0.5)),
        ("exp", json!((now + 300).to_string())),
        ("exp", json!(now as f64 + 300.5)),
    ];
    for (claim, value) in cases {
        let token = setup.key.sign(&with(setup.claims(), claim, value));
        setup.refused(&token, &format!("`{claim}`")).await;
    }
    // A list where a number belongs does not even parse as claims.
    let token = setup
        .key
        .sign(&with(setup.claims(), "exp", json!([now + 300])));
    setup.refused(&token, "malformed").await;
}

#[tokio::test]
async fn a_token_of_an_unconfigured_issuer_is_refused() {
    let setup = GithubSetup::start().await;
    // Same key and kid as the configured issuer: the kid is looked up only
    // in the keys of the issuer the token names.
    let token = setup.key.sign(&with(
        setup.claims(),
        "iss",
        json!("https://token.evil.example"),
    ));
    setup.refused(&token, "issuer").await;
    assert_eq!(
        setup.issuer.fetches().await,
        0,
        "no configured issuer was asked"
    );
}

#[tokio::test]
async fn a_token_without_iat_is_refused() {
    let setup = GithubSetup::start().await;
    let token = setup.key.sign(&without(setup.claims(), "iat"));
    setup.refused(&token, "iat").await;
}

#[tokio::test]
async fn a_token_without_exp_is_refused() {
    let setup = GithubSetup::start().await;
    let token = setup.key.sign(&without(setup.claims(), "exp"));
    setup.refused(&token, "exp").await;
}

#[tokio::test]
async fn a_token_without_aud_is_refused() {
    let setup = GithubSetup::start().await;
    let token = setup.key.sign(&without(setup.claims(), "aud"));
    setup.refused(&token, "aud").await;
}

#[tokio::test]
async fn a_token_whose_claims_no_policy_matches_is_refused() {
    let setup = GithubSetup::start().await;
    let claims = with(setup.claims(), "ref", json!("refs/heads/dev"));
    let token = setup.key.sign(&with(
        claims,
        "sub",
        json!("repo:epfl-enac/app:ref:refs/heads/dev"),
    ));
    setup.refused(&token, "policy").await;
}

#[tokio::test]
async fn claims_regex_rules_are_anchored() {
    let key = SigningKey::rsa(0, "gh-key-a");
    let issuer = FakeIssuer::serving("github", &[&key]).await;
    let policy = r#"
deployment_id = "app-one"
[[oidc]]
issuer = "github"
[oidc.claims]
repository_id = "123456"
[oidc.claims_regex]
job_workflow_ref = 'epfl-enac/app/\.github/workflows/deploy\.yml@refs/heads/main'
"#;
    let service = Service::start(
        vec![issuer.config(AUDIENCE, &["RS256"])],
        &[("app-one.toml", policy)],
        &[("app-one", "ok-one")],
    )
    .await;
    let claims = |workflow: &str| {
        with(
            github_claims(&issuer.iss(), AUDIENCE),
            "job_workflow_ref",
            json!(workflow),
        )
    };
    let workflow = "epfl-enac/app/.github/workflows/deploy.yml@refs/heads/main";

    for longer in [format!("{workflow}-evil"), format!("fork/{workflow}")] {
        let token = key.sign(&claims(&longer));
        service.assert_refused(&token, &json!({}), "policy").await;
    }
    service
        .deploy_ok(&key.sign(&claims(workflow)), &json!({}))
        .await;
    assert_eq!(service.app.jobs_started().await, 1);
}

// ---------------------------------------------------------------- refused headers and keys

#[tokio::test]
async fn a_token_without_kid_is_refused() {
    let setup = GithubSetup::start().await;
    let claims = setup.claims();
    let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &setup.key.encoding)
        .expect("token signed");
    setup.refused(&token, "kid").await;
}

#[tokio::test]
async fn a_token_with_a_kid_the_issuer_does_not_publish_is_refused() {
    let setup = GithubSetup::start().await;
    let token = setup.key.with_kid("not-published").sign(&setup.claims());
    setup.refused(&token, "kid").await;
}

#[tokio::test]
async fn a_token_signed_by_another_key_under_a_published_kid_is_refused() {
    let setup = GithubSetup::start().await;
    let impostor = SigningKey::rsa(1, &setup.key.kid);
    let token = impostor.sign(&setup.claims());
    setup.refused(&token, "signature").await;
}

#[tokio::test]
async fn an_unsigned_alg_none_token_is_refused() {
    let setup = GithubSetup::start().await;
    let header = json!({"alg": "none", "typ": "JWT", "kid": setup.key.kid});
    let token = format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(setup.claims().to_string().as_bytes())
    );
    setup.refused(&token, "algorithm").await;
}

#[tokio::test]
async fn an_hs256_token_is_refused_even_with_a_published_kid() {
    let setup = GithubSetup::start().await;
    let claims = setup.claims();
    let token = hmac_key(&setup.key.kid, b"some-shared-secret-0123456789").sign(&claims);
    setup.refused(&token, "algorithm").await;
    // The classic confusion: HMAC keyed with the issuer's public key.
    let public_pem = rsa_material(0).public_pem.as_bytes();
    let token = hmac_key(&setup.key.kid, public_pem).sign(&setup.claims());
    setup.refused(&token, "algorithm").await;
}

#[tokio::test]
async fn a_symmetric_jwk_in_the_jwks_is_never_used() {
    let key = SigningKey::rsa(0, "gh-key-a");
    let secret = b"secret-published-as-an-oct-jwk-0123";
    let issuer = FakeIssuer::serving("github", &[&key]).await;
    issuer.serve_jwks(json!({"keys": [
        key.jwk(),
        {"kty": "oct", "kid": "oct-1", "alg": "HS256", "use": "sig", "k": b64(secret)},
    ]}));
    let service = Service::start(
        vec![issuer.config(AUDIENCE, &["RS256"])],
        &[("app-one.toml", GITHUB_POLICY)],
        &[("app-one", "ok-one")],
    )
    .await;
    let claims = github_claims(&issuer.iss(), AUDIENCE);

    let token = hmac_key("oct-1", secret).sign(&claims);
    service
        .assert_refused(&token, &json!({}), "algorithm")
        .await;
    // Labelled RS256, the oct key is still not a key of this issuer.
    let mislabelled = hmac_key("oct-1", secret).sign_with_header(
        &json!({"alg": "RS256", "typ": "JWT", "kid": "oct-1"}),
        &claims,
    );
    service
        .assert_refused(&mislabelled, &json!({}), "kid")
        .await;
    // The RSA key of the same document works.
    service.deploy_ok(&key.sign(&claims), &json!({})).await;
}

#[tokio::test]
async fn a_token_with_a_jku_header_is_refused() {
    let setup = GithubSetup::start().await;
    let jku = format!("{}/jwks", setup.issuer.iss());
    let token = setup
        .key
        .sign_with_extra_header(json!({ "jku": jku }), &setup.claims());
    setup.refused(&token, "jku").await;
}

#[tokio::test]
async fn a_token_with_an_x5u_header_is_refused() {
    let setup = GithubSetup::start().await;
    let token = setup.key.sign_with_extra_header(
        json!({"x5u": "https://certs.evil.example/chain.pem"}),
        &setup.claims(),
    );
    setup.refused(&token, "x5u").await;
}

#[tokio::test]
async fn a_token_with_an_embedded_jwk_header_is_refused() {
    let setup = GithubSetup::start().await;
    let token = setup
        .key
        .sign_with_extra_header(json!({ "jwk": setup.key.jwk() }), &setup.claims());
    setup.refused(&token, "jwk").await;
}

#[tokio::test]
async fn a_token_with_a_crit_header_is_refused() {
    let setup = GithubSetup::start().await;
    let token = setup.key.sign_with_extra_header(
        json!({"crit": ["exp-policy"], "exp-policy": "lenient"}),
        &setup.claims(),
    );
    setup.refused(&token, "crit").await;
}

#[tokio::test]
async fn an_algorithm_the_issuer_does_not_list_is_refused() {
    let es_key = SigningKey::es256("gl-key-1");
    let rsa_key = SigningKey::rsa(0, "gl-rsa");
    let issuer = FakeIssuer::serving("gitlab", &[&es_key, &rsa_key]).await;
    let service = Service::start(
        vec![issuer.config(AUDIENCE, &["ES256"])],
        &[("app-gitlab.toml", GITLAB_POLICY)],
        &[("app-gitlab", "ok-gitlab")],
    )
    .await;
    let token = rsa_key.sign(&gitlab_claims(&issuer.iss(), AUDIENCE));
    service
        .assert_refused(&token, &json!({}), "algorithm")
        .await;
}

// ---------------------------------------------------------------- the key cache

#[tokio::test]
async fn a_rotated_key_is_fetched_once_the_refetch_cooldown_allows() {
    let key_a = SigningKey::rsa(0, "rot-a");
    let key_b = SigningKey::rsa(1, "rot-b");
    let issuer = FakeIssuer::serving("github", &[&key_a]).await;
    let service = Service::start(
        vec![issuer.config(AUDIENCE, &["RS256"])],
        &[("app-one.toml", GITHUB_POLICY)],
        &[("app-one", "ok-one")],
    )
    .await;
    let claims = || github_claims(&issuer.iss(), AUDIENCE);
    service.deploy_ok(&key_a.sign(&claims()), &json!({})).await;
    assert_eq!(issuer.jwks_hits().await, 1);

    issuer.serve(&[&key_b]);
    let token_b = key_b.sign(&claims());
    // The last fetch was moments ago: at most one refetch a minute.
    service.assert_refused(&token_b, &json!({}), "kid").await;
    assert_eq!(
        issuer.jwks_hits().await,
        1,
        "no refetch within the cooldown"
    );

    let started = eventually("the new kid to be accepted", COOLDOWN_DEADLINE, || async {
        let (status, body) = service.deploy_with(&token_b, &json!({})).await;
        if status == 200 {
            return Some(body);
        }
        assert_eq!(status, 401, "{body}");
        assert!(
            body["error"].as_str().unwrap_or("").contains("kid"),
            "{body}"
        );
        None
    })
    .await;
    assert!(started["job_id"].is_string(), "{started}");
    assert_eq!(
        issuer.jwks_hits().await,
        2,
        "one refetch for the unknown kid"
    );

    // The withdrawn key is no longer trusted.
    service
        .assert_refused(&key_a.sign(&claims()), &json!({}), "kid")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_unknown_kids_fetches_the_jwks_at_most_once() {
    let key = SigningKey::rsa(0, "burst-a");
    let issuer = FakeIssuer::serving("github", &[&key]).await;
    // A slow JWKS: the burst's requests overlap the fetch.
    issuer.slow_jwks(Duration::from_millis(300));
    let service = Service::start(
        vec![issuer.config(AUDIENCE, &["RS256"])],
        &[("app-one.toml", GITHUB_POLICY)],
        &[("app-one", "ok-one")],
    )
    .await;
    let burst = |round: usize| {
        let tokens: Vec<String> = (0..20)
            .map(|index| {
                key.with_kid(&format!("unknown-{round}-{index}"))
                    .sign(&github_claims(&issuer.iss(), AUDIENCE))
            })
            .collect();
        let service = &service;
        async move {
            let empty = json!({});
            let answers = futures::future::join_all(
                tokens
                    .iter()
                    .map(|token| service.deploy_with(token, &empty)),
            )
            .await;
            for (status, body) in answers {
                assert_eq!(status, 401, "{body}");
                assert!(
                    body["error"].as_str().unwrap_or("").contains("kid"),
                    "{body}"
                );
            }
        }
    };

    // Cold cache: the burst shares one fetch.
    burst(0).await;
    assert_eq!(issuer.jwks_hits().await, 1, "concurrent refetches merged");
    service
        .deploy_ok(
            &key.sign(&github_claims(&issuer.iss(), AUDIENCE)),
            &json!({}),
        )
        .await;
    // Warm cache within the cooldown: no fetch at all.
    burst(1).await;
    assert_eq!(
        issuer.jwks_hits().await,
        1,
        "no refetch within the cooldown"
    );
    assert_eq!(service.app.jobs_started().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_for_an_issuer_that_never_answered_share_one_failed_fetch() {
    let key = SigningKey::rsa(0, "silent-a");
    let issuer = FakeIssuer::serving("github", &[&key]).await;
    // The JWKS never comes within the service's fetch timeout (5 s).
    issuer.slow_jwks(Duration::from_secs(30));
    let service = Service::start(
        vec![issuer.config(AUDIENCE, &["RS256"])],
        &[("app-one.toml", GITHUB_POLICY)],
        &[("app-one", "ok-one")],
    )
    .await;
    let tokens: Vec<String> = (0..4)
        .map(|_| key.sign(&github_claims(&issuer.iss(), AUDIENCE)))
        .collect();

    let started = std::time::Instant::now();
    let empty = json!({});
    let answers = futures::future::join_all(
        tokens
            .iter()
            .map(|token| service.deploy_with(token, &empty)),
    )
    .await;
    let took = started.elapsed();

    for (status, body) in answers {
        assert_eq!(status, 401, "{body}");
        assert!(
            body["error"].as_str().unwrap_or("").contains("keys"),
            "{body}"
        );
    }
    assert_eq!(issuer.jwks_hits().await, 1, "one fetch for the burst");
    assert_eq!(issuer.fetches().await, 1, "one discovery for the burst");
    assert!(
        took < Duration::from_secs(9),
        "all answered within about one fetch timeout, not one each: {took:?}"
    );
    assert_eq!(service.app.jobs_started().await, 0);
}

#[tokio::test]
async fn cached_keys_survive_an_issuer_that_fails() {
    let key = SigningKey::rsa(0, "kept-a");
    let issuer = FakeIssuer::serving("github", &[&key]).await;
    let service = Service::start(
        vec![issuer.config(AUDIENCE, &["RS256"])],
        &[("app-one.toml", GITHUB_POLICY)],
        &[("app-one", "ok-one")],
    )
    .await;
    let deploy = |key: &SigningKey| key.sign(&github_claims(&issuer.iss(), AUDIENCE));
    let token = deploy(&key);
    let started = service.deploy_ok(&token, &json!({})).await;
    service
        .wait_success(&token, started["job_id"].as_str().expect("a job id"))
        .await;

    issuer.go_down(500);
    let token = deploy(&key);
    let started = service.deploy_ok(&token, &json!({})).await;
    service
        .wait_success(&token, started["job_id"].as_str().expect("a job id"))
        .await;

    // An unknown kid makes the service refetch once the cooldown allows;
    // that fetch fails, and the refusal still says `kid`, not "keys
    // unavailable": the cached keys were kept.
    let fetches = issuer.fetches().await;
    let unknown = deploy(&key.with_kid("kept-new"));
    eventually("a refetch to be attempted", COOLDOWN_DEADLINE, || async {
        let (status, body) = service.deploy_with(&unknown, &json!({})).await;
        assert_eq!(status, 401, "{body}");
        let error = body["error"].as_str().unwrap_or("");
        assert!(
            error.contains("kid") && !error.contains("unavailable"),
            "{body}"
        );
        (issuer.fetches().await > fetches).then_some(())
    })
    .await;

    let token = deploy(&key);
    service.deploy_ok(&token, &json!({})).await;
    assert_eq!(service.app.jobs_started().await, 3);
}

#[tokio::test]
async fn an_issuer_down_at_start_is_asked_again_once_it_is_back() {
    let key = SigningKey::rsa(0, "late-a");
    let issuer = FakeIssuer::start("github").await;
    let service = Service::start(
        vec![issuer.config(AUDIENCE, &["RS256"])],
        &[("app-one.toml", GITHUB_POLICY)],
        &[("app-one", "ok-one")],
    )
    .await;
    let token = key.sign(&github_claims(&issuer.iss(), AUDIENCE));
    service.assert_refused(&token, &json!({}), "keys").await;
    assert_eq!(issuer.fetches().await, 1);

    issuer.serve(&[&key]);
    let started = eventually(
        "the issuer's keys once it is back",
        JOB_DEADLINE,
        || async {
            let (status, body) = service.deploy_with(&token, &json!({})).await;
            if status == 200 {
                return Some(body);
            }
            assert_eq!(status, 401, "{body}");
            assert!(
                body["error"].as_str().unwrap_or("").contains("keys"),
                "{body}"
            );
            None
        },
    )
    .await;
    // Polled every 50 ms, yet asked only once more: retries are spaced.
    assert_eq!(issuer.fetches().await, 2, "one retry, not one per request");
    service
        .wait_success(&token, started["job_id"].as_str().expect("a job id"))
        .await;
    assert_eq!(service.app.jobs_started().await, 1);
}

// ---------------------------------------------------------------- private CAs

#[tokio::test]
async fn an_issuer_behind_a_private_ca_is_trusted_with_cd_ca_file_only() {
    let certificates = TestCertificates::make();
    let key = SigningKey::rsa(0, "private-ca-a");
    let issuer = FakeIssuer::serving_https("gitlab", &[&key], &certificates).await;
    assert!(issuer.iss().starts_with("https://"), "{}", issuer.iss());
    let start = |ca_file| {
        Service::start_trusting(
            vec![issuer.config(AUDIENCE, &["RS256"])],
            &[("app-gitlab.toml", GITLAB_POLICY)],
            &[("app-gitlab", "ok-gitlab")],
            ca_file,
        )
    };
    let token = || key.sign(&gitlab_claims(&issuer.iss(), AUDIENCE));

    // The system's trust store alone does not know the CA: no request
    // passes the TLS handshake, so there are no keys.
    let untrusting = start(None).await;
    untrusting
        .assert_refused(&token(), &json!({}), "keys")
        .await;
    assert_eq!(issuer.fetches().await, 0, "a request passed the handshake");

    let trusting = start(Some(certificates.ca())).await;
    let token = token();
    let started = trusting.deploy_ok(&token, &json!({})).await;
    let job_id = started["job_id"].as_str().expect("a job id");
    trusting.wait_success(&token, job_id).await;
    // Discovery and the JWKS both came over HTTPS.
    assert_eq!((issuer.fetches().await, issuer.jwks_hits().await), (1, 1));
}

// ---------------------------------------------------------------- the binary

/// The `enac-cd` binary with `args`, `envs`, and none of the CI variables
/// of the environment the tests run in.
async fn enac_cd(args: &[&str], envs: &[(&str, &str)]) -> BinaryRun {
    let mut command = Command::new(env!("CARGO_BIN_EXE_enac-cd"));
    command
        .args(args)
        .env_remove("DEPLOYMENT_SECRET")
        .env_remove("CD_URL")
        .env_remove("CD_POLICY_DIR")
        .env_remove("ACTIONS_ID_TOKEN_REQUEST_URL")
        .env_remove("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the binary ends within a minute")
        .expect("the binary runs");
    BinaryRun::of(output)
}

/// GitHub and GitLab issuers with the client's audience, and both policies.
async fn client_setup() -> (FakeIssuer, SigningKey, FakeIssuer, SigningKey, Service) {
    let github_key = SigningKey::rsa(0, "client-gh");
    let github = FakeIssuer::serving("github", &[&github_key]).await;
    let gitlab_key = SigningKey::es256("client-gl");
    let gitlab = FakeIssuer::serving("gitlab", &[&gitlab_key]).await;
    let service = Service::start(
        vec![
            github.config(CLIENT_AUDIENCE, &["RS256"]),
            gitlab.config(CLIENT_AUDIENCE, &["ES256"]),
        ],
        &[
            ("app-one.toml", GITHUB_POLICY),
            ("app-gitlab.toml", GITLAB_POLICY),
        ],
        &[("app-one", "ok-one"), ("app-gitlab", "ok-gitlab")],
    )
    .await;
    (github, github_key, gitlab, gitlab_key, service)
}

#[tokio::test]
async fn the_client_deploys_with_the_github_actions_token() {
    let (github, key, _gitlab, _, service) = client_setup().await;
    let runtime_token = "actions-runtime-token-4d2a";
    let actions = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/token"))
        .and(query_param("api-version", "2.0"))
        .and(query_param("audience", CLIENT_AUDIENCE))
        .and(move |request: &Request| {
            request
                .headers
                .get("authorization")
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| value.eq_ignore_ascii_case(&format!("bearer {runtime_token}")))
        })
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "count": 1,
            "value": key.sign(&github_claims(&github.iss(), CLIENT_AUDIENCE)),
        })))
        .expect(1)
        .mount(&actions)
        .await;
    let request_url = format!("{}/token?api-version=2.0", actions.uri());

    let run = enac_cd(
        &[
            "deploy",
            "--url",
            &service.app.url(""),
            "--oidc",
            "github",
            "--interval",
            "1",
        ],
        &[
            ("ACTIONS_ID_TOKEN_REQUEST_URL", request_url.as_str()),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", runtime_token),
        ],
    )
    .await;

    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stdout.contains("step 1") && run.stdout.contains("done"),
        "{run}"
    );
    assert!(run.stdout.contains("finished successfully"), "{run}");
    actions.verify().await;
    let job_id = run
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("-> Job "))
        .unwrap_or_else(|| panic!("a job announced: {run}"))
        .trim();
    let job = service.app.job(job_id).await;
    assert_eq!(
        (job.deployment_id.as_str(), job.trigger.kind.as_str()),
        ("app-one", "github-oidc")
    );
}

#[tokio::test]
async fn the_client_deploys_with_a_gitlab_token_from_the_environment() {
    let (_github, _, gitlab, key, service) = client_setup().await;
    let token = key.sign(&gitlab_claims(&gitlab.iss(), CLIENT_AUDIENCE));

    let run = enac_cd(
        &[
            "deploy",
            "--url",
            &service.app.url(""),
            "--oidc-token-env",
            "GL_TOKEN",
            "--interval",
            "1",
        ],
        &[("GL_TOKEN", token.as_str())],
    )
    .await;

    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("done"), "{run}");
    assert_eq!(service.app.jobs_started().await, 1);
}

#[tokio::test]
async fn the_client_exits_1_when_its_token_is_refused() {
    let (github, key, _gitlab, _, service) = client_setup().await;
    let now = unix_now();
    let claims = with(
        github_claims(&github.iss(), CLIENT_AUDIENCE),
        "iat",
        json!(now - 900),
    );
    let claims = with(claims, "nbf", json!(now - 900));
    let expired = key.sign(&with(claims, "exp", json!(now - 120)));

    let run = enac_cd(
        &[
            "deploy",
            "--url",
            &service.app.url(""),
            "--oidc-token-env",
            "GH_TOKEN",
        ],
        &[("GH_TOKEN", expired.as_str())],
    )
    .await;

    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stdout.contains("expired"), "{run}");
    assert!(!run.stdout.contains("-> Job"), "{run}");
    assert_eq!(service.app.jobs_started().await, 0);
}

#[tokio::test]
async fn policy_explain_names_the_deployment_a_token_matches() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).expect("policy dir");
    write_policies(
        &policies,
        &[
            ("app-one.toml", GITHUB_POLICY),
            ("app-gitlab.toml", GITLAB_POLICY),
        ],
    );
    let main = dir.path().join("main.json");
    let dev = dir.path().join("dev.json");
    let claims = github_claims(
        "https://token.actions.githubusercontent.com",
        CLIENT_AUDIENCE,
    );
    std::fs::write(&main, claims.to_string()).expect("claims written");
    std::fs::write(
        &dev,
        with(claims, "ref", json!("refs/heads/dev")).to_string(),
    )
    .expect("claims written");
    let explain = |file: &Path| {
        let args = [
            "policy".to_owned(),
            "explain".to_owned(),
            format!("--dir={}", policies.display()),
            format!("--claims={}", file.display()),
            "--issuer=github".to_owned(),
        ];
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            enac_cd(&args, &[]).await
        }
    };

    let matched = explain(&main).await;
    assert_eq!(matched.code, Some(0), "{matched}");
    assert!(
        matched
            .stdout
            .contains("matching deployment ids: app-one\n"),
        "{matched}"
    );

    let unmatched = explain(&dev).await;
    assert_eq!(unmatched.code, Some(0), "{unmatched}");
    assert!(
        unmatched.stdout.contains("matching deployment ids: none"),
        "{unmatched}"
    );
    assert!(
        unmatched.stdout.contains("`ref` has another value"),
        "{unmatched}"
    );
}

#[tokio::test]
async fn the_client_trusts_the_ca_that_ssl_cert_file_names() {
    let (_github, _, gitlab, key, service) = client_setup().await;
    let certificates = TestCertificates::make();
    let https = TlsProxy::start(&certificates, service.app.addr.port()).await;
    let deploy = |envs: Vec<(&'static str, String)>| {
        let url = https.url();
        async move {
            let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            enac_cd(
                &[
                    "deploy",
                    "--url",
                    &url,
                    "--oidc-token-env",
                    "GL_TOKEN",
                    "--interval",
                    "1",
                ],
                &envs,
            )
            .await
        }
    };
    let token = || key.sign(&gitlab_claims(&gitlab.iss(), CLIENT_AUDIENCE));

    let refused = deploy(vec![("GL_TOKEN", token())]).await;
    assert_eq!(refused.code, Some(1), "{refused}");
    assert!(refused.stdout.contains("certificate"), "{refused}");
    assert_eq!(service.app.jobs_started().await, 0);

    let trusted = deploy(vec![
        ("GL_TOKEN", token()),
        ("SSL_CERT_FILE", certificates.ca().display().to_string()),
    ])
    .await;
    assert_eq!(trusted.code, Some(0), "{trusted}");
    assert!(
        trusted.stdout.contains("finished successfully"),
        "{trusted}"
    );
    assert_eq!(service.app.jobs_started().await, 1);
}
