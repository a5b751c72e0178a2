//! Jobs as GitHub deployments: one deployment per job, then a status per
//! event, authenticated by a policy's token or the operator's GitHub App.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Answer, DeliveryError, OutboundClient};
use crate::domain::{unix_now, unix_of_rfc3339, ReportEvent};
use crate::policy::GithubAuth;

/// An installation token is renewed this long before it expires.
const TOKEN_MARGIN_SECS: i64 = 5 * 60;
/// GitHub refuses longer deployment and status descriptions.
const DESCRIPTION_CAP: usize = 140;

/// The operator's GitHub App, which signs its own JWTs to get installation
/// tokens.
pub struct GithubApp {
    app_id: String,
    key: EncodingKey,
}

impl std::fmt::Debug for GithubApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubApp")
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct AppClaims {
    iat: i64,
    exp: i64,
    iss: String,
}

impl GithubApp {
    /// The App `app_id` with its RSA private key (PKCS#1 or PKCS#8 PEM).
    pub fn from_pem(app_id: &str, pem: &[u8]) -> Result<GithubApp, String> {
        let app_id = app_id.trim();
        if app_id.is_empty() || app_id.contains(char::is_whitespace) {
            return Err("the GitHub App id is empty or has spaces".to_owned());
        }
        let key = EncodingKey::from_rsa_pem(pem)
            .map_err(|_| "the GitHub App key is not an RSA private key in PEM".to_owned())?;
        let app = GithubApp {
            app_id: app_id.to_owned(),
            key,
        };
        // The key is only parsed when signing: sign once so a bad key fails
        // at start, not at the first report.
        app.jwt(unix_now())
            .map_err(|_| "the GitHub App key cannot sign (not a usable RSA key)".to_owned())?;
        Ok(app)
    }

    /// An app JWT; `iat` is backdated a minute against clock drift.
    fn jwt(&self, now: i64) -> Result<String, DeliveryError> {
        let claims = AppClaims {
            iat: now - 60,
            exp: now + 9 * 60,
            iss: self.app_id.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map_err(|_| DeliveryError("signing the GitHub App JWT failed".to_owned()))
    }
}

/// An installation token of a repository, kept until shortly before expiry.
struct CachedToken {
    installation: u64,
    token: SecretString,
    renew_at: i64,
}

/// Reports to one GitHub (github.com or an Enterprise server).
pub struct Github {
    client: Arc<OutboundClient>,
    api: String,
    app: Option<GithubApp>,
    /// By lowercased `owner/name`, so that a repository's jobs share a token.
    tokens: Mutex<HashMap<String, CachedToken>>,
}

impl Github {
    /// `api_url` is `https://api.github.com` or `https://HOST/api/v3`.
    pub fn new(client: Arc<OutboundClient>, api_url: String, app: Option<GithubApp>) -> Github {
        let api = api_url.strip_suffix('/').unwrap_or(&api_url).to_owned();
        Github {
            client,
            api,
            app,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// Reports `event` of a job on `sha` of `repository` (`owner/name`):
    /// creates the job's deployment when `*deployment` is None (keeping its
    /// id there at once, for the retries), then posts the event's status.
    // The outbox calls this with the fields of one stored report.
    #[allow(clippy::too_many_arguments)]
    pub async fn report(
        &self,
        auth: &GithubAuth,
        repository: &str,
        sha: &str,
        environment: &str,
        deployment: &mut Option<u64>,
        event: ReportEvent,
        log_url: &str,
        description: &str,
    ) -> Result<(), DeliveryError> {
        if !is_repository(repository) {
            return Err(DeliveryError(format!(
                "not a GitHub repository (owner/name): {repository:?}"
            )));
        }
        let description: String = description.chars().take(DESCRIPTION_CAP).collect();
        let bearer = match auth {
            GithubAuth::Token(token) => token.clone(),
            GithubAuth::App => self.installation_token(repository).await?,
        };
        let repo_api = format!("{}/repos/{repository}", self.api);
        let id = match *deployment {
            Some(id) => id,
            None => {
                let body = json!({
                    "ref": sha,
                    "environment": environment,
                    "auto_merge": false,
                    "required_contexts": [],
                    "description": description,
                });
                let url = format!("{repo_api}/deployments");
                let answer = self.post(auth, repository, &bearer, &url, &body).await?;
                let id = created_id(&answer, "GitHub deployment")?;
                *deployment = Some(id);
                id
            }
        };
        let body = json!({
            "state": state_of(event),
            "log_url": log_url,
            "description": description,
            "environment": environment,
        });
        let url = format!("{repo_api}/deployments/{id}/statuses");
        let answer = self.post(auth, repository, &bearer, &url, &body).await?;
        if !answer.success() {
            return Err(answer.failure("GitHub deployment status"));
        }
        Ok(())
    }

    /// POSTs `body`; a 401 to an installation token forgets it, so that the
    /// next try fetches a fresh one.
    async fn post(
        &self,
        auth: &GithubAuth,
        repository: &str,
        bearer: &SecretString,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<Answer, DeliveryError> {
        let request = self.request(reqwest::Method::POST, url, bearer).json(body);
        let answer = self.client.send(request).await?;
        if answer.status == StatusCode::UNAUTHORIZED && matches!(auth, GithubAuth::App) {
            self.cache().remove(&repository.to_ascii_lowercase());
        }
        Ok(answer)
    }

    fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        bearer: &SecretString,
    ) -> reqwest::RequestBuilder {
        self.client
            .http()
            .request(method, url)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .bearer_auth(bearer.expose_secret())
    }

    /// The App's token for `repository`: cached, or fetched through the
    /// App's installation on it.
    async fn installation_token(&self, repository: &str) -> Result<SecretString, DeliveryError> {
        let key = repository.to_ascii_lowercase();
        let now = unix_now();
        let known = match self.cache().get(&key) {
            Some(cached) if cached.renew_at > now => return Ok(cached.token.clone()),
            Some(cached) => Some(cached.installation),
            None => None,
        };
        let app = self.app.as_ref().ok_or_else(|| {
            DeliveryError("the policy reports via the GitHub App, but none is set".to_owned())
        })?;
        let jwt = SecretString::from(app.jwt(now)?);
        let installation = match known {
            Some(installation) => installation,
            None => self.installation_of(&jwt, repository).await?,
        };
        let (token, expires_at) = match self.access_token(&jwt, installation).await {
            Ok(granted) => granted,
            Err(error) => {
                // The App may have been uninstalled: look it up anew next time.
                self.cache().remove(&key);
                return Err(error);
            }
        };
        if let Some(expires_at) = expires_at {
            let cached = CachedToken {
                installation,
                token: token.clone(),
                renew_at: expires_at - TOKEN_MARGIN_SECS,
            };
            self.cache().insert(key, cached);
        }
        Ok(token)
    }

    async fn installation_of(
        &self,
        jwt: &SecretString,
        repository: &str,
    ) -> Result<u64, DeliveryError> {
        let url = format!("{}/repos/{repository}/installation", self.api);
        let request = self.request(reqwest::Method::GET, &url, jwt);
        let answer = self.client.send(request).await?;
        created_id(&answer, "GitHub App installation")
    }

    /// A fresh installation token and when it expires (Unix seconds; None
    /// when GitHub's time is unreadable, and then it is not cached).
    async fn access_token(
        &self,
        jwt: &SecretString,
        installation: u64,
    ) -> Result<(SecretString, Option<i64>), DeliveryError> {
        #[derive(Deserialize)]
        struct AccessToken {
            token: String,
            expires_at: String,
        }
        let url = format!(
            "{}/app/installations/{installation}/access_tokens",
            self.api
        );
        let request = self.request(reqwest::Method::POST, &url, jwt);
        let answer = self.client.send(request).await?;
        if !answer.success() {
            return Err(answer.failure("GitHub App token"));
        }
        let granted: AccessToken = serde_json::from_slice(&answer.body)
            .map_err(|_| DeliveryError("GitHub App token: unreadable answer".to_owned()))?;
        let expires_at = unix_of_rfc3339(&granted.expires_at);
        Ok((SecretString::from(granted.token), expires_at))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedToken>> {
        // The map stays consistent whatever panicked while it was held.
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `id` of a 2xx JSON answer, else why not.
fn created_id(answer: &Answer, what: &str) -> Result<u64, DeliveryError> {
    #[derive(Deserialize)]
    struct Created {
        id: u64,
    }
    if !answer.success() {
        return Err(answer.failure(what));
    }
    serde_json::from_slice::<Created>(&answer.body)
        .map(|created| created.id)
        .map_err(|_| DeliveryError(format!("{what}: answer without an id")))
}

fn state_of(event: ReportEvent) -> &'static str {
    match event {
        ReportEvent::Started => "in_progress",
        ReportEvent::Success => "success",
        ReportEvent::Error => "failure",
    }
}

/// `owner/name` of GitHub's characters only, so that it cannot reach
/// another API path.
fn is_repository(repository: &str) -> bool {
    let mut parts = repository.split('/');
    let (Some(owner), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let safe = |part: &str| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    safe(owner) && safe(name)
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use jsonwebtoken::{DecodingKey, Validation};
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    use wiremock::matchers::{bearer_token, body_json, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;
    use crate::domain::rfc3339_of_ms;

    const APP_ID: &str = "12345";
    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
    const LOG_URL: &str = "https://cd.example/ui/jobs/j1";
    const INSTALLATION_TOKEN: &str = "ghs_installation";
    const APP: GithubAuth = GithubAuth::App;
    const STATUSES: &str = "/repos/octo/app/deployments/7/statuses";

    /// PKCS#1 and PKCS#8 private PEM, then the public PEM, of one 2048-bit
    /// key for all tests (generating one takes a while).
    fn keys() -> &'static [String; 3] {
        static KEYS: OnceLock<[String; 3]> = OnceLock::new();
        KEYS.get_or_init(|| {
            let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("key");
            let pkcs1 = private.to_pkcs1_pem(LineEnding::LF).expect("pem");
            let pkcs8 = private.to_pkcs8_pem(LineEnding::LF).expect("pem");
            let public = private.to_public_key().to_public_key_pem(LineEnding::LF);
            [pkcs1.to_string(), pkcs8.to_string(), public.expect("pem")]
        })
    }

    /// Matches requests bearing an app JWT that the app's PUBLIC key
    /// verifies: RS256, `iss` = the app id, backdated, ten minutes long.
    struct AppJwt;

    impl wiremock::Match for AppJwt {
        fn matches(&self, request: &wiremock::Request) -> bool {
            let header = request.headers.get("authorization");
            let Some(jwt) = header
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "))
            else {
                return false;
            };
            let key = DecodingKey::from_rsa_pem(keys()[2].as_bytes()).expect("public key");
            let mut validation = Validation::new(Algorithm::RS256);
            validation.set_issuer(&[APP_ID]);
            jsonwebtoken::decode::<AppClaims>(jwt, &key, &validation).is_ok_and(|data| {
                data.claims.exp - data.claims.iat == 600 && data.claims.iat <= unix_now() - 60
            })
        }
    }

    fn github(api: String, app: bool) -> Github {
        let client = OutboundClient::new(std::time::Duration::from_secs(5), &[]).expect("client");
        let app = app.then(|| GithubApp::from_pem(APP_ID, keys()[0].as_bytes()).expect("app"));
        Github::new(Arc::new(client), api, app)
    }

    fn token(value: &str) -> GithubAuth {
        GithubAuth::Token(SecretString::from(value))
    }

    fn answer(status: u16, body: serde_json::Value) -> ResponseTemplate {
        ResponseTemplate::new(status).set_body_json(body)
    }

    /// The App's installation on octo/app, and its tokens (valid for
    /// `valid_for` seconds): `lookups` and `grants` calls expected.
    async fn mount_app(server: &MockServer, valid_for: i64, lookups: u64, grants: u64) {
        Mock::given(method("GET"))
            .and(path("/repos/octo/app/installation"))
            .and(AppJwt)
            .respond_with(answer(200, json!({"id": 42})))
            .expect(lookups)
            .mount(server)
            .await;
        let expires_at = rfc3339_of_ms((unix_now() + valid_for) * 1000);
        let granted = json!({"token": INSTALLATION_TOKEN, "expires_at": expires_at});
        Mock::given(method("POST"))
            .and(path("/app/installations/42/access_tokens"))
            .and(AppJwt)
            .respond_with(answer(201, granted))
            .expect(grants)
            .mount(server)
            .await;
    }

    /// Deployment 7 of octo/app (`creations` expected), and its statuses.
    async fn mount_deployment(server: &MockServer, bearer: &str, creations: u64, statuses: u64) {
        let deployment = json!({"ref": SHA, "environment": "production", "auto_merge": false,
            "required_contexts": [], "description": "deploying"});
        Mock::given(method("POST"))
            .and(path("/repos/octo/app/deployments"))
            .and(bearer_token(bearer))
            .and(header("accept", "application/vnd.github+json"))
            .and(header("x-github-api-version", "2022-11-28"))
            .and(body_json(deployment))
            .respond_with(answer(201, json!({"id": 7})))
            .expect(creations)
            .mount(server)
            .await;
        Mock::given(method("POST"))
            .and(path(STATUSES))
            .and(bearer_token(bearer))
            .and(header("x-github-api-version", "2022-11-28"))
            .respond_with(answer(201, json!({"id": 1})))
            .expect(statuses)
            .mount(server)
            .await;
    }

    /// Reports `event` on octo/app's production environment.
    async fn report(
        github: &Github,
        auth: &GithubAuth,
        deployment: &mut Option<u64>,
        event: ReportEvent,
    ) -> Result<(), DeliveryError> {
        let (repository, environment) = ("octo/app", "production");
        github
            .report(
                auth,
                repository,
                SHA,
                environment,
                deployment,
                event,
                LOG_URL,
                "deploying",
            )
            .await
    }

    async fn sent(server: &MockServer) -> Vec<(String, Option<serde_json::Value>)> {
        let requests = server.received_requests().await.expect("recorded");
        let sent = requests
            .iter()
            .map(|r| (r.url.path().to_owned(), r.body_json().ok()));
        sent.collect()
    }

    #[tokio::test]
    async fn app_report_creates_the_deployment_then_its_status() {
        let server = MockServer::start().await;
        mount_app(&server, 3600, 1, 1).await;
        mount_deployment(&server, INSTALLATION_TOKEN, 1, 1).await;
        let mut deployment = None;
        let github = github(server.uri(), true);
        report(&github, &APP, &mut deployment, ReportEvent::Started)
            .await
            .expect("reported");
        assert_eq!(deployment, Some(7));
        let sent = sent(&server).await;
        let paths: Vec<&str> = sent.iter().map(|(path, _)| path.as_str()).collect();
        let expected = [
            "/repos/octo/app/installation",
            "/app/installations/42/access_tokens",
            "/repos/octo/app/deployments",
            STATUSES,
        ];
        assert_eq!(paths, expected);
        let status = json!({"state": "in_progress", "log_url": LOG_URL,
            "description": "deploying", "environment": "production"});
        assert_eq!(sent[3].1, Some(status));
    }

    #[tokio::test]
    async fn jobs_of_one_repository_share_one_installation_token() {
        let server = MockServer::start().await;
        mount_app(&server, 3600, 1, 1).await;
        mount_deployment(&server, INSTALLATION_TOKEN, 2, 2).await;
        let github = github(server.uri(), true);
        for _job in 0..2 {
            let mut deployment = None;
            report(&github, &APP, &mut deployment, ReportEvent::Started)
                .await
                .expect("reported");
            assert_eq!(deployment, Some(7));
        }
    }

    #[tokio::test]
    async fn token_near_its_expiry_is_renewed() {
        let server = MockServer::start().await;
        // Four minutes left is inside the five-minute margin: the token is
        // not reused, but the installation id is.
        mount_app(&server, 4 * 60, 1, 2).await;
        mount_deployment(&server, INSTALLATION_TOKEN, 0, 2).await;
        let github = github(server.uri(), true);
        for event in [ReportEvent::Started, ReportEvent::Success] {
            report(&github, &APP, &mut Some(7), event)
                .await
                .expect("reported");
        }
    }

    #[tokio::test]
    async fn refused_installation_token_is_forgotten() {
        let server = MockServer::start().await;
        mount_app(&server, 3600, 2, 2).await;
        mount_deployment(&server, INSTALLATION_TOKEN, 0, 1).await;
        Mock::given(path("/repos/octo/app/deployments/9/statuses"))
            .respond_with(answer(401, json!({"message": "Bad credentials"})))
            .mount(&server)
            .await;
        let github = github(server.uri(), true);
        let error = report(&github, &APP, &mut Some(9), ReportEvent::Success)
            .await
            .expect_err("401");
        let expected = "GitHub deployment status answered 401 Unauthorized: Bad credentials";
        assert_eq!(error.0, expected);
        report(&github, &APP, &mut Some(7), ReportEvent::Success)
            .await
            .expect("a fresh token");
    }

    #[tokio::test]
    async fn policy_token_makes_no_app_calls() {
        let server = MockServer::start().await;
        mount_deployment(&server, "ghp_policy", 1, 1).await;
        let github = github(server.uri(), true);
        report(
            &github,
            &token("ghp_policy"),
            &mut None,
            ReportEvent::Started,
        )
        .await
        .expect("reported");
        let sent = sent(&server).await;
        let paths: Vec<&str> = sent.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(paths, ["/repos/octo/app/deployments", STATUSES]);
    }

    #[tokio::test]
    async fn failed_status_keeps_the_deployment_id() {
        let server = MockServer::start().await;
        mount_deployment(&server, "ghp_policy", 1, 0).await;
        Mock::given(path(STATUSES))
            .respond_with(answer(502, json!({"message": "Server Error"})))
            .with_priority(1)
            .mount(&server)
            .await;
        let mut deployment = None;
        let github = github(server.uri(), false);
        let error = report(
            &github,
            &token("ghp_policy"),
            &mut deployment,
            ReportEvent::Started,
        )
        .await
        .expect_err("502");
        let expected = "GitHub deployment status answered 502 Bad Gateway: Server Error";
        assert_eq!(error.0, expected);
        assert_eq!(deployment, Some(7));
    }

    #[tokio::test]
    async fn known_deployment_gets_only_a_status_on_an_enterprise_server() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(format!("/api/v3{STATUSES}")))
            .respond_with(answer(201, json!({"id": 1})))
            .expect(1)
            .mount(&server)
            .await;
        let github = github(format!("{}/api/v3/", server.uri()), false);
        report(
            &github,
            &token("ghp_policy"),
            &mut Some(7),
            ReportEvent::Error,
        )
        .await
        .expect("reported");
        let sent = sent(&server).await;
        assert_eq!(
            sent[0].1.as_ref().map(|status| &status["state"]),
            Some(&json!("failure"))
        );
    }

    #[tokio::test]
    async fn malformed_repository_is_refused_without_a_request() {
        let server = MockServer::start().await;
        let github = github(server.uri(), true);
        for repository in "octo octo/app/x ../app octo/.. octo/a?b octo/ /app".split(' ') {
            let refused = github
                .report(
                    &APP,
                    repository,
                    SHA,
                    "production",
                    &mut None,
                    ReportEvent::Started,
                    LOG_URL,
                    "",
                )
                .await;
            assert!(refused.is_err(), "{repository}");
        }
        assert!(sent(&server).await.is_empty());
        assert!(is_repository("octo/.github") && is_repository("my-org/my_app.rs"));
    }

    #[test]
    fn app_key_loads_from_pkcs1_or_pkcs8_and_is_never_shown() {
        let [pkcs1, pkcs8, public] = keys();
        for pem in [pkcs1, pkcs8] {
            let app = GithubApp::from_pem(APP_ID, pem.as_bytes()).expect("app");
            assert_eq!(format!("{app:?}"), r#"GithubApp { app_id: "12345", .. }"#);
        }
        assert!(GithubApp::from_pem(APP_ID, b"not a key").is_err());
        assert!(GithubApp::from_pem(APP_ID, public.as_bytes()).is_err());
        assert!(GithubApp::from_pem(" ", pkcs1.as_bytes()).is_err());
    }
}
