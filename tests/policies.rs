//! Policy files through the real binary: `enac-cd policy check` refuses a
//! bad set naming the file and the key, `enac-cd policy explain` says which
//! deployments a delivery or a token's claims match, and `SIGHUP` reloads a
//! running service, keeping the old set when the new one is bad.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::binary::BinaryRun;
use common::service_process::jobs_started_at;
use common::webhook::{github_push, webhook_sample, EXAMPLE_POLICY_SECRETS, GH_SECRET_APP_ONE};
use common::*;
use serde_json::{json, Value};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const DEADLINE: Duration = Duration::from_secs(20);

fn example_secrets() -> Vec<(&'static str, &'static str)> {
    EXAMPLE_POLICY_SECRETS.to_vec()
}

/// Runs `enac-cd ARGS` from the repository root with only `env` among the
/// policy variables (none inherited from whoever runs the tests).
fn enac_cd(args: &[&str], env: &[(&str, &str)]) -> BinaryRun {
    let mut command = Command::new(env!("CARGO_BIN_EXE_enac-cd"));
    command
        .current_dir(ROOT)
        .args(args)
        .env_remove("CD_POLICY_DIR");
    for (name, _) in EXAMPLE_POLICY_SECRETS {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    BinaryRun::of(command.output().expect("the enac-cd binary runs"))
}

// ---- policy check ----

#[test]
fn policy_check_of_the_examples_lists_every_deployment() {
    let run = enac_cd(&["policy", "check", "policies"], &example_secrets());
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    for (id, file, on_busy) in [
        ("app-one", "policies/app-one.toml", "queue"),
        ("app-two", "policies/app-two.toml", "reject"),
        ("app-three", "policies/app-three.toml", "join"),
    ] {
        let line = run
            .stdout
            .lines()
            .find(|line| line.starts_with(&format!("ok  {id} ({file})")))
            .unwrap_or_else(|| panic!("{id} is not listed in:\n{}", run.stdout));
        assert!(line.ends_with(&format!("on_busy {on_busy}")), "{line}");
    }
    assert!(
        run.stdout.contains("3 policy file(s) valid in policies"),
        "{}",
        run.stdout
    );
}

#[test]
fn policy_check_without_the_secrets_fails_naming_the_file_and_secret_env() {
    let run = enac_cd(&["policy", "check", "policies"], &[]);
    assert_ne!(run.code, Some(0), "{}", run.stdout);
    assert!(
        run.stderr.contains("policies/app-one.toml")
            && run.stderr.contains("`webhook[0].secret_env`")
            && run.stderr.contains("GH_HOOK_SECRET_APP_ONE"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("valid"), "{}", run.stdout);
}

/// A valid policy, so each refusal below is that of one bad file in a set.
const GOOD: &str = r#"
deployment_id = "app-good"
[[webhook]]
provider = "github"
secret_env = "GH_SECRET_GOOD"
events = ["push"]
[webhook.match]
"/repository/id" = 1
"/ref" = "refs/heads/main"
"#;

/// Writes `files` next to a good one, runs `policy check` on them and
/// returns its error output, checked to name `file` and `key`.
fn refused(files: &[(&str, &str)], env: &[(&str, &str)], file: &str, key: &str) -> String {
    let dir = tempfile::tempdir().expect("a policy dir");
    std::fs::write(dir.path().join("a-good.toml"), GOOD).expect("good policy written");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("policy written");
    }
    let mut env = env.to_vec();
    env.push(("GH_SECRET_GOOD", "a-good-secret-0123"));
    let dir_arg = dir.path().display().to_string();
    let run = enac_cd(&["policy", "check", &dir_arg], &env);
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    let path = dir.path().join(file).display().to_string();
    assert!(
        run.stderr.contains(&path) && run.stderr.contains(key),
        "the refusal should name {path} and {key}: {}",
        run.stderr
    );
    assert!(!run.stdout.contains("valid"), "{}", run.stdout);
    run.stderr
}

#[test]
fn an_unknown_key_is_refused() {
    refused(
        &[(
            "typo.toml",
            r#"
deploymentid = "app-typo"
[[webhook]]
provider = "github"
secret_env = "GH_SECRET_GOOD"
events = ["push"]
[webhook.match]
"/repository/id" = 2
"#,
        )],
        &[],
        "typo.toml",
        "deploymentid",
    );
    refused(
        &[(
            "inline-secret.toml",
            r#"
deployment_id = "app-inline"
[[webhook]]
provider = "github"
secret = "a secret written in the file"
events = ["push"]
[webhook.match]
"/repository/id" = 2
"#,
        )],
        &[],
        "inline-secret.toml",
        "`secret`",
    );
}

#[test]
fn a_github_rule_without_the_repository_id_is_refused() {
    refused(
        &[(
            "unbound.toml",
            r#"
deployment_id = "app-unbound"
[[webhook]]
provider = "github"
secret_env = "GH_SECRET_GOOD"
events = ["push"]
[webhook.match]
"/repository/full_name" = "epfl-enac/app-unbound"
"#,
        )],
        &[],
        "unbound.toml",
        "`webhook[0].match` must bind the immutable id \"/repository/id\"",
    );
}

#[test]
fn a_gitlab_rule_without_the_project_id_is_refused() {
    refused(
        &[(
            "unbound.toml",
            r#"
deployment_id = "app-unbound"
[[webhook]]
provider = "gitlab"
token_env = "GL_TOKEN_UNBOUND"
events = ["Push Hook"]
[webhook.match]
"/project/path_with_namespace" = "enac/app-unbound"
"/ref" = "refs/heads/main"
"#,
        )],
        &[("GL_TOKEN_UNBOUND", "a-gitlab-token-0123")],
        "unbound.toml",
        "`webhook[0].match` must bind the immutable id \"/project/id\"",
    );
}

#[test]
fn an_oidc_rule_without_repository_id_or_project_id_is_refused() {
    refused(
        &[(
            "unbound.toml",
            r#"
deployment_id = "app-unbound"
[[oidc]]
issuer = "github"
[oidc.claims]
repository = "epfl-enac/app-unbound"
ref = "refs/heads/main"
"#,
        )],
        &[],
        "unbound.toml",
        "`oidc[0].claims` must bind the immutable id",
    );
}

/// app-report: a good rule, then `report` (its `[report]`/`[[notify]]`).
fn with_report(report: &str) -> String {
    format!(
        r#"
deployment_id = "app-report"
[[webhook]]
provider = "github"
secret_env = "GH_SECRET_GOOD"
events = ["push"]
[webhook.match]
"/repository/id" = 5
{report}"#
    )
}

#[test]
fn bad_report_and_notify_keys_are_refused_naming_the_key() {
    let cases = [
        ("[report]\ngithub = true\nrepo = \"x\"\n", "repo"),
        (
            "[report]\ngithub = true\ngithub_token_env = \"GH_SECRET_GOOD\"\n",
            "`report.github` and `report.github_token_env`",
        ),
        (
            "[report]\ngitlab_token_env = \"GL_TOKEN_UNSET\"\n",
            "`report.gitlab_token_env`: environment variable GL_TOKEN_UNSET is unset or empty",
        ),
        (
            "[[notify]]\nurl = \"http://hooks.example.org/x\"\nformat = \"slack\"\n",
            "`notify[0].url` must be an https:// URL",
        ),
        (
            "[[notify]]\nurl = \"https://hooks.example.org/x\"\nformat = \"standard-webhooks\"\n",
            "`notify[0].secret_env` is required",
        ),
        (
            "[[notify]]\nurl = \"https://hooks.example.org/x\"\nformat = \"slack\"\nevents = [\"done\"]\n",
            "`notify[0].events`: \"done\"",
        ),
        (
            "[[notify]]\nurl = \"https://hooks.example.org/x\"\nformat = \"teams\"\n",
            "`notify[0].format`",
        ),
    ];
    for (report, key) in cases {
        refused(
            &[("report.toml", &with_report(report))],
            &[],
            "report.toml",
            key,
        );
    }
}

#[test]
fn a_policy_reporting_everywhere_is_valid() {
    let dir = tempfile::tempdir().expect("a policy dir");
    let report = "[report]\ngithub = true\ngitlab_token_env = \"GL_TOKEN\"\nenvironment = \"prod\"\n\
                  [[notify]]\nurl = \"https://hooks.example.org/x\"\nformat = \"standard-webhooks\"\n\
                  secret_env = \"NOTIFY_SECRET\"\n[[notify]]\nurl = \"http://127.0.0.1:9/chat\"\n\
                  format = \"slack\"\nevents = [\"error\"]\n";
    std::fs::write(dir.path().join("report.toml"), with_report(report)).expect("written");
    let dir_arg = dir.path().display().to_string();
    let env = [
        ("GH_SECRET_GOOD", "a-good-secret-0123"),
        ("GL_TOKEN", "glpat-0123456789"),
        (
            "NOTIFY_SECRET",
            "whsec_bm90aWZ5IGtleSBvZiB0aGUgcmVjZWl2ZXI=",
        ),
    ];
    let run = enac_cd(&["policy", "check", &dir_arg], &env);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(
            "reports to github (App), gitlab, notify:hooks.example.org, notify:127.0.0.1"
        ),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("glpat"), "no secret: {}", run.stdout);
}

#[test]
fn an_empty_secret_variable_is_refused() {
    let text = r#"
deployment_id = "app-empty"
[[webhook]]
provider = "github"
secret_env = "GH_SECRET_EMPTY"
events = ["push"]
[webhook.match]
"/repository/id" = 3
"#;
    for value in ["", "   "] {
        refused(
            &[("empty.toml", text)],
            &[("GH_SECRET_EMPTY", value)],
            "empty.toml",
            "`webhook[0].secret_env`: environment variable GH_SECRET_EMPTY is unset or empty",
        );
    }
    refused(
        &[("empty.toml", text)],
        &[],
        "empty.toml",
        "environment variable GH_SECRET_EMPTY is unset or empty",
    );
}

#[test]
fn two_files_with_the_same_deployment_id_are_refused() {
    let twin = GOOD.replace("\"/repository/id\" = 1", "\"/repository/id\" = 4");
    let stderr = refused(
        &[("b-twin.toml", &twin)],
        &[],
        "b-twin.toml",
        "`deployment_id` \"app-good\" is already used by",
    );
    assert!(stderr.contains("a-good.toml"), "{stderr}");
}

#[test]
fn a_bad_claims_regex_is_refused() {
    refused(
        &[(
            "regex.toml",
            r#"
deployment_id = "app-regex"
[[oidc]]
issuer = "github"
[oidc.claims]
repository_id = "5"
[oidc.claims_regex]
job_workflow_ref = 'epfl-enac/app-regex/(unclosed'
"#,
        )],
        &[],
        "regex.toml",
        "`oidc[0].claims_regex.job_workflow_ref` is not a valid regex",
    );
}

#[test]
fn a_match_key_that_is_not_a_json_pointer_is_refused() {
    refused(
        &[(
            "pointer.toml",
            r#"
deployment_id = "app-pointer"
[[webhook]]
provider = "github"
secret_env = "GH_SECRET_GOOD"
events = ["push"]
[webhook.match]
"/repository/id" = 6
"ref" = "refs/heads/main"
"#,
        )],
        &[],
        "pointer.toml",
        "`webhook[0].match.ref` is not a JSON pointer",
    );
}

// ---- policy explain ----

fn assert_line(stdout: &str, line: &str) {
    assert!(
        stdout.lines().any(|present| present == line),
        "missing line `{line}` in:\n{stdout}"
    );
}

#[test]
fn explain_a_github_push_names_app_one_and_the_first_failed_key_of_other_rules() {
    let run = enac_cd(
        &[
            "policy",
            "explain",
            "--dir",
            "policies",
            "--github-event",
            "push",
            "--payload",
            "webhooks/github-push.json",
        ],
        &example_secrets(),
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout.lines().next(),
        Some("matching deployment ids: app-one")
    );
    assert_line(
        &run.stdout,
        "match     app-one (policies/app-one.toml webhook[0])",
    );
    assert_line(
        &run.stdout,
        "no match  app-one (policies/app-one.toml webhook[1]): `events` does not list this event",
    );
    assert_line(
        &run.stdout,
        "no match  app-three (policies/app-three.toml webhook[0]): `/repository/id` has another value",
    );
    // GitLab rules say nothing about a GitHub delivery.
    assert!(!run.stdout.contains("app-two"), "{}", run.stdout);
}

#[test]
fn explain_a_push_to_another_branch_matches_nothing_and_names_the_ref() {
    let dir = tempfile::tempdir().expect("a payload dir");
    let payload = dir.path().join("push-dev.json");
    let mut sample = webhook_sample("github-push.json");
    sample["body"]["ref"] = json!("refs/heads/dev");
    std::fs::write(&payload, sample.to_string()).expect("payload written");
    let payload = payload.display().to_string();
    let run = enac_cd(
        &[
            "policy",
            "explain",
            "--github-event",
            "push",
            "--payload",
            &payload,
        ],
        &example_secrets(),
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout.lines().next(),
        Some("matching deployment ids: none")
    );
    assert_line(
        &run.stdout,
        "no match  app-one (./policies/app-one.toml webhook[0]): `/ref` has another value",
    );
}

#[test]
fn explain_a_gitlab_pipeline_names_app_two() {
    let run = enac_cd(
        &[
            "policy",
            "explain",
            "--dir",
            "policies",
            "--gitlab-event",
            "Pipeline Hook",
            "--payload",
            "webhooks/gitlab-pipeline.json",
        ],
        &example_secrets(),
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout.lines().next(),
        Some("matching deployment ids: app-two")
    );
    assert_line(
        &run.stdout,
        "match     app-two (policies/app-two.toml webhook[0])",
    );
    assert_line(
        &run.stdout,
        "no match  app-three (policies/app-three.toml webhook[1]): `events` does not list this event",
    );
}

#[test]
fn explain_claims_lists_the_matching_oidc_rules() {
    let dir = tempfile::tempdir().expect("a policy dir");
    std::fs::write(
        dir.path().join("oidc-app.toml"),
        r#"
deployment_id = "oidc-app"
[[oidc]]
issuer = "github"
[oidc.claims]
repository_id = "123456"
ref = "refs/heads/main"
environment = ["prod", "production"]
[oidc.claims_regex]
job_workflow_ref = 'epfl-enac/app-one/\.github/workflows/deploy\.yml@refs/heads/main'
"#,
    )
    .expect("policy written");
    std::fs::write(
        dir.path().join("other-app.toml"),
        r#"
deployment_id = "other-app"
[[oidc]]
issuer = "github"
[oidc.claims]
repository_id = "999"
"#,
    )
    .expect("policy written");
    let claims = dir.path().join("claims.json");
    std::fs::write(
        &claims,
        json!({
            "iss": "https://token.actions.githubusercontent.com",
            "repository": "epfl-enac/app-one",
            "repository_id": "123456",
            "ref": "refs/heads/main",
            "environment": "production",
            "job_workflow_ref": "epfl-enac/app-one/.github/workflows/deploy.yml@refs/heads/main"
        })
        .to_string(),
    )
    .expect("claims written");
    let policy_dir = dir.path().display().to_string();
    let claims = claims.display().to_string();
    let oidc_file = dir.path().join("oidc-app.toml").display().to_string();
    let other_file = dir.path().join("other-app.toml").display().to_string();

    let run = enac_cd(
        &[
            "policy",
            "explain",
            "--dir",
            &policy_dir,
            "--claims",
            &claims,
        ],
        &[],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout.lines().next(),
        Some("matching deployment ids: oidc-app")
    );
    assert_line(
        &run.stdout,
        &format!("match     oidc-app ({oidc_file} oidc[0])"),
    );
    assert_line(
        &run.stdout,
        &format!("no match  other-app ({other_file} oidc[0]): `repository_id` has another value"),
    );

    let run = enac_cd(
        &[
            "policy",
            "explain",
            "--dir",
            &policy_dir,
            "--claims",
            &claims,
            "--issuer",
            "gitlab",
        ],
        &[],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout.lines().next(),
        Some("matching deployment ids: none")
    );
    assert_line(
        &run.stdout,
        &format!("no match  oidc-app ({oidc_file} oidc[0]): `issuer` names another issuer"),
    );
}

// ---- SIGHUP ----

/// `enac-cd serve` as its own process with its log in `log`, stopped (by
/// PID) when dropped.
fn serve_logged(envs: &[(&str, String)], addr: SocketAddr, log: &Path) -> ServiceProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_enac-cd"));
    command
        .arg("serve")
        .env_remove("CD_REDIS_URL")
        .env_remove("CD_CONFIG")
        .env("RUST_LOG", "info")
        .env("CD_LISTEN", addr.to_string())
        .envs(envs.iter().map(|(name, value)| (name, value)));
    for (name, _) in EXAMPLE_POLICY_SECRETS {
        command.env_remove(name);
    }
    command.env("GH_HOOK_SECRET_APP_ONE", GH_SECRET_APP_ONE);
    ServiceProcess::spawn_logged(command, addr, log)
}

/// A push to main of app-one's repository, signed with its secret, with a
/// new delivery id and a body no other delivery had.
async fn deliver_push(http: &reqwest::Client, addr: SocketAddr, nth: u64) -> (u16, Value) {
    github_push(|body| body["after"] = json!(format!("{nth:040x}")))
        .post(http, &format!("http://{addr}/webhooks/github"))
        .await
}

#[tokio::test]
async fn sighup_reloads_policies_and_a_bad_set_keeps_the_previous_one() {
    let data = tempfile::tempdir().expect("a data dir");
    let policies = tempfile::tempdir().expect("a policy dir");
    let apps = write_apps_file(data.path(), &[("app-one", "ok-sighup")]);
    let log = data.path().join("service.log");
    let addr = free_addr();
    let service = serve_logged(
        &[
            ("CD_LAUNCHER", "process".to_owned()),
            ("CD_PROCESS_COMMAND", fake_ansible().display().to_string()),
            ("CD_DATA_DIR", data.path().display().to_string()),
            ("CD_POLICY_DIR", policies.path().display().to_string()),
            ("CD_APPS_FILE", apps.display().to_string()),
            ("CD_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            ("CD_PUBLIC_URL", format!("http://{addr}")),
            ("CD_ENV", "test".to_owned()),
        ],
        addr,
        &log,
    );
    let http = reqwest::Client::new();
    let mut nth = 0;

    // No policy binds the repository: no secret to verify with.
    let (status, body) = deliver_push(&http, addr, nth).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body,
        json!({"status": "error", "error": "signature does not match"})
    );
    assert_eq!(jobs_started_at(&http, addr).await, 0);

    std::fs::copy(
        Path::new(ROOT).join("policies/app-one.toml"),
        policies.path().join("app-one.toml"),
    )
    .expect("policy copied");
    service.signal(libc::SIGHUP);
    let body = eventually("the reloaded policy to accept a push", DEADLINE, || {
        nth += 1;
        let (http, nth) = (&http, nth);
        async move {
            let (status, body) = deliver_push(http, addr, nth).await;
            match status {
                202 => Some(body),
                401 => None,
                other => panic!("unexpected {other}: {body}"),
            }
        }
    })
    .await;
    assert_eq!(body["jobs"][0]["deployment_id"], "app-one", "{body}");
    assert_eq!(jobs_started_at(&http, addr).await, 1);

    std::fs::write(
        policies.path().join("broken.toml"),
        "deploymentid = \"app-broken\"\n",
    )
    .expect("broken policy written");
    service.signal(libc::SIGHUP);
    let refusal = eventually("the refused reload to be logged", DEADLINE, || {
        let log = &log;
        async move {
            let text = std::fs::read_to_string(log).expect("the log is readable");
            text.lines()
                .find(|line| line.contains("policy reload refused"))
                .map(str::to_owned)
        }
    })
    .await;
    assert!(
        refusal.contains("broken.toml") && refusal.contains("deploymentid"),
        "{refusal}"
    );
    let (status, body) = deliver_push(&http, addr, nth + 1).await;
    assert_eq!(status, 202, "the previous policies still hold: {body}");
    assert_eq!(body["jobs"][0]["deployment_id"], "app-one", "{body}");
    assert_eq!(jobs_started_at(&http, addr).await, 2);

    let text = std::fs::read_to_string(&log).expect("the log is readable");
    assert!(
        !text.contains(GH_SECRET_APP_ONE),
        "the log shows a secret:\n{text}"
    );
    drop(service);
}
