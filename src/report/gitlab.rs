//! Jobs as GitLab commit statuses: one status name per deployment, moved
//! through running and then success, failed or canceled.

use std::sync::Arc;

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::{DeliveryError, OutboundClient};

/// GitLab refuses longer status descriptions.
const DESCRIPTION_CAP: usize = 255;

/// A commit status, as GitLab names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GitlabState {
    Running,
    Success,
    Failed,
    Canceled,
}

impl GitlabState {
    pub fn as_str(self) -> &'static str {
        match self {
            GitlabState::Running => "running",
            GitlabState::Success => "success",
            GitlabState::Failed => "failed",
            GitlabState::Canceled => "canceled",
        }
    }
}

/// Reports to one GitLab (gitlab.com or a self-managed instance).
pub struct Gitlab {
    client: Arc<OutboundClient>,
    api: String,
}

impl Gitlab {
    /// `api_url` is `https://gitlab.com/api/v4` or the like.
    pub fn new(client: Arc<OutboundClient>, api_url: String) -> Gitlab {
        let api = api_url.strip_suffix('/').unwrap_or(&api_url).to_owned();
        Gitlab { client, api }
    }

    /// Sets the status `name` of `sha` in `project` (a `group/…/name` path
    /// or a numeric id) to `state`.
    // The outbox calls this with the fields of one stored report.
    #[allow(clippy::too_many_arguments)]
    pub async fn report(
        &self,
        token: &SecretString,
        project: &str,
        sha: &str,
        name: &str,
        state: GitlabState,
        target_url: &str,
        description: &str,
    ) -> Result<(), DeliveryError> {
        if !is_project(project) {
            return Err(DeliveryError(format!(
                "not a GitLab project path: {project:?}"
            )));
        }
        if sha.is_empty() || sha.len() > 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DeliveryError(format!("not a commit sha: {sha:?}")));
        }
        // The path is checked above: '/' is the only character to encode.
        let url = format!(
            "{}/projects/{}/statuses/{sha}",
            self.api,
            project.replace('/', "%2F")
        );
        let description: String = description.chars().take(DESCRIPTION_CAP).collect();
        let body = json!({
            "state": state.as_str(),
            "name": name,
            "target_url": target_url,
            "description": description,
        });
        let request = self
            .client
            .http()
            .post(url)
            .header("private-token", token.expose_secret())
            .json(&body);
        let answer = self.client.send(request).await?;
        // A retry after a lost answer posts the same state again, which
        // GitLab refuses as a transition: the status is already there.
        let already_set = answer.status == StatusCode::BAD_REQUEST
            && answer
                .message()
                .is_some_and(|message| message.starts_with("Cannot transition status"));
        if answer.success() || already_set {
            Ok(())
        } else {
            Err(answer.failure(&format!("GitLab status {:?}", state.as_str())))
        }
    }
}

/// A numeric project id, or a path of GitLab's characters (no `..`), so
/// that it cannot reach another API path.
fn is_project(project: &str) -> bool {
    let safe = |part: &str| {
        !part.is_empty()
            && !part.starts_with('.')
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    project.split('/').all(safe)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wiremock::matchers::{body_json, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
    const TARGET: &str = "https://cd.example/ui/jobs/j1";

    fn gitlab(server: &MockServer) -> Gitlab {
        let client = OutboundClient::new(Duration::from_secs(5), &[]).expect("client");
        Gitlab::new(Arc::new(client), format!("{}/api/v4/", server.uri()))
    }

    async fn report(
        server: &MockServer,
        project: &str,
        sha: &str,
        state: GitlabState,
    ) -> Result<(), DeliveryError> {
        let token = SecretString::from("glpat-secret");
        let name = "enac-cd/web-prod";
        gitlab(server)
            .report(&token, project, sha, name, state, TARGET, "deploying")
            .await
    }

    fn status_path() -> String {
        format!("/api/v4/projects/group%2Fsub%2Fapp/statuses/{SHA}")
    }

    #[tokio::test]
    async fn posts_the_status_to_the_encoded_project_path() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(status_path()))
            .and(header("private-token", "glpat-secret"))
            .and(body_json(json!({
                "state": "running", "name": "enac-cd/web-prod",
                "target_url": TARGET, "description": "deploying",
            })))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": 1})))
            .expect(1)
            .mount(&server)
            .await;
        report(&server, "group/sub/app", SHA, GitlabState::Running)
            .await
            .expect("reported");
        let requests = server.received_requests().await.expect("recorded");
        // The slashes reach GitLab encoded, as one path segment.
        assert!(requests[0]
            .url
            .as_str()
            .contains("/projects/group%2Fsub%2Fapp/"));
    }

    #[tokio::test]
    async fn server_error_names_the_status() {
        let server = MockServer::start().await;
        Mock::given(path(status_path()))
            .respond_with(ResponseTemplate::new(500).set_body_json(json!({"message": "boom"})))
            .mount(&server)
            .await;
        let error = report(&server, "group/sub/app", SHA, GitlabState::Failed)
            .await
            .expect_err("500");
        let expected = r#"GitLab status "failed" answered 500 Internal Server Error: boom"#;
        assert_eq!(error.0, expected);
        assert!(!error.0.contains("glpat"));
    }

    #[tokio::test]
    async fn same_state_posted_twice_counts_as_delivered() {
        let server = MockServer::start().await;
        let refusal = json!({"message": "Cannot transition status via :run from :running"});
        Mock::given(path(status_path()))
            .respond_with(ResponseTemplate::new(400).set_body_json(refusal))
            .mount(&server)
            .await;
        report(&server, "group/sub/app", SHA, GitlabState::Running)
            .await
            .expect("already running");
    }

    #[tokio::test]
    async fn other_bad_request_is_an_error() {
        let server = MockServer::start().await;
        let refusal = json!({"message": {"name": ["is too long"]}});
        Mock::given(path(status_path()))
            .respond_with(ResponseTemplate::new(400).set_body_json(refusal))
            .mount(&server)
            .await;
        let error = report(&server, "group/sub/app", SHA, GitlabState::Success)
            .await
            .expect_err("400");
        assert!(error.0.contains(r#"{"name":["is too long"]}"#), "{error}");
    }

    #[tokio::test]
    async fn bad_project_or_sha_is_refused_without_a_request() {
        let server = MockServer::start().await;
        for project in [
            "",
            "group/../admin",
            "group//app",
            "group/app?x=1",
            "group/a%2Fb",
        ] {
            let refused = report(&server, project, SHA, GitlabState::Running).await;
            assert!(refused.is_err(), "{project}");
        }
        for sha in ["", "main", "0123/../x", &"a".repeat(65)] {
            let refused = report(&server, "group/app", sha, GitlabState::Running).await;
            assert!(refused.is_err(), "{sha}");
        }
        let requests = server.received_requests().await.expect("recorded");
        assert!(requests.is_empty());
    }

    #[test]
    fn states_use_gitlab_names() {
        let names = [
            GitlabState::Running,
            GitlabState::Success,
            GitlabState::Failed,
            GitlabState::Canceled,
        ]
        .map(GitlabState::as_str);
        assert_eq!(names, ["running", "success", "failed", "canceled"]);
    }
}
