//! Stand-ins for the services jobs are reported to (contract §12): GitHub's
//! REST API as a GitHub App meets it (the app JWT checked with the App's
//! public key), GitLab's commit statuses, and a notification receiver.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use super::oidc::rsa_material;

pub const APP_ID: &str = "4242";
pub const INSTALLATION_TOKEN: &str = "ghs_installation-token-of-the-test";
pub const GITLAB_TOKEN: &str = "glpat-test-token-0123";

/// Accepts only an RS256 JWT issued by the App and signed by its key.
struct AppJwt;

impl wiremock::Match for AppJwt {
    fn matches(&self, request: &Request) -> bool {
        let Some(token) = bearer(request) else {
            return false;
        };
        let Ok(key) =
            jsonwebtoken::DecodingKey::from_rsa_pem(rsa_material(0).public_pem.as_bytes())
        else {
            return false;
        };
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_required_spec_claims(&["exp", "iat", "iss"]);
        validation.set_issuer(&[APP_ID]);
        jsonwebtoken::decode::<Value>(&token, &key, &validation).is_ok()
    }
}

/// The bearer token of a request.
pub fn bearer(request: &Request) -> Option<String> {
    header(request, "authorization")?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

pub fn header(request: &Request, name: &str) -> Option<String> {
    request
        .headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

pub fn body(request: &Request) -> Value {
    serde_json::from_slice(&request.body).unwrap_or(Value::Null)
}

/// GitHub's REST API, with the App installed on every repository.
pub struct FakeGithub {
    pub server: MockServer,
    key_file: tempfile::NamedTempFile,
}

impl FakeGithub {
    /// Answers like GitHub; deployments take `delay` to be created.
    pub async fn start(delay: Duration) -> FakeGithub {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path_regex(r"^/repos/[^/]+/[^/]+/installation$"))
            .and(AppJwt)
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": 77})))
            .mount(&server)
            .await;
        let expires = chrono_free_rfc3339(3600);
        Mock::given(method("POST"))
            .and(path("/app/installations/77/access_tokens"))
            .and(AppJwt)
            .respond_with(
                ResponseTemplate::new(201)
                    .set_body_json(json!({"token": INSTALLATION_TOKEN, "expires_at": expires})),
            )
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path_regex(r"^/repos/[^/]+/[^/]+/deployments$"))
            .respond_with(
                ResponseTemplate::new(201)
                    .set_delay(delay)
                    .set_body_json(json!({"id": 9001})),
            )
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path_regex(r"^/repos/[^/]+/[^/]+/deployments/\d+/statuses$"))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": 1})))
            .mount(&server)
            .await;
        let key_file = tempfile::NamedTempFile::new().expect("a key file");
        std::fs::write(key_file.path(), &rsa_material(0).private_pem).expect("key written");
        FakeGithub { server, key_file }
    }

    /// The service's flags naming this API and the App.
    pub fn flags(&self) -> Vec<String> {
        vec![
            format!("--github-api-url={}", self.server.uri()),
            format!("--github-app-id={APP_ID}"),
            format!("--github-private-key-file={}", self.key_path().display()),
        ]
    }

    pub fn key_path(&self) -> PathBuf {
        self.key_file.path().to_owned()
    }

    /// The requests whose path ends with `suffix`, in the order received.
    pub async fn requests_to(&self, suffix: &str) -> Vec<Request> {
        requests_to(&self.server, suffix).await
    }
}

pub async fn requests_to(server: &MockServer, suffix: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|request| request.url.path().ends_with(suffix))
        .collect()
}

/// RFC 3339 UTC, `seconds` from now.
fn chrono_free_rfc3339(seconds: i64) -> String {
    enac_cd::domain::rfc3339_of_ms(enac_cd::domain::now_ms() + seconds * 1000)
}
