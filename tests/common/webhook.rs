//! Webhook deliveries as GitHub and GitLab send them: the samples of
//! `webhooks/`, the secrets the example policies of `policies/` read, and the
//! signers (GitHub's `X-Hub-Signature-256`, Standard Webhooks, GitLab's token).

use std::path::Path;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::app::TestApp;
use super::send;
use super::wait::unix_now;

pub const GH_SECRET_APP_ONE: &str = "gh-hook-secret-of-app-one-0123";
pub const GH_SECRET_APP_THREE: &str = "gh-hook-secret-of-app-three-0123";
pub const GL_TOKEN_APP_THREE: &str = "gl-hook-token-of-app-three-0123";
/// The Standard Webhooks key of app-two, as raw bytes.
pub const GL_KEY_APP_TWO: &[u8] = b"standard-webhooks key of app-two";
/// [`GL_KEY_APP_TWO`] as its policy reads it: `whsec_` and its base64.
pub const GL_SIGNING_APP_TWO: &str = "whsec_c3RhbmRhcmQtd2ViaG9va3Mga2V5IG9mIGFwcC10d28=";

/// The variables the example policies read their secrets from, with the
/// values the tests sign with.
pub const EXAMPLE_POLICY_SECRETS: [(&str, &str); 4] = [
    ("GH_HOOK_SECRET_APP_ONE", GH_SECRET_APP_ONE),
    ("GL_HOOK_SIGNING_APP_TWO", GL_SIGNING_APP_TWO),
    ("GH_HOOK_SECRET_APP_THREE", GH_SECRET_APP_THREE),
    ("GL_HOOK_TOKEN_APP_THREE", GL_TOKEN_APP_THREE),
];

/// The value of `name` among [`EXAMPLE_POLICY_SECRETS`].
pub fn example_policy_secret(name: &str) -> Option<String> {
    EXAMPLE_POLICY_SECRETS
        .iter()
        .find(|(present, _)| *present == name)
        .map(|(_, value)| value.to_string())
}

/// The sample delivery `webhooks/<file>`: `{"headers": {..}, "body": {..}}`.
pub fn webhook_sample(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("webhooks")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("the sample delivery is readable");
    serde_json::from_str(&text).expect("the sample is JSON")
}

pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// `v1,<base64>` of a Standard Webhooks delivery.
pub fn standard_signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let signed = hmac_sha256(key, &[format!("{id}.{timestamp}.").as_bytes(), body]);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(signed)
    )
}

/// A delivery id never used before.
pub fn fresh_id() -> String {
    ulid::Ulid::new().to_string()
}

/// A delivery ready to post: headers and the exact bytes that were signed.
#[derive(Clone)]
pub struct Delivery {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Delivery {
    /// The sample `webhooks/<file>`, its body changed by `edit` and
    /// serialized once.
    pub fn sample(file: &str, edit: impl FnOnce(&mut Value)) -> Delivery {
        let mut sample = webhook_sample(file);
        let headers = sample["headers"]
            .as_object()
            .expect("the sample has headers")
            .iter()
            .map(|(name, value)| {
                let value = value.as_str().expect("header values are strings");
                (name.clone(), value.to_owned())
            })
            .collect();
        edit(&mut sample["body"]);
        let body = serde_json::to_vec(&sample["body"]).expect("the body serializes");
        Delivery { headers, body }
    }

    pub fn raw(headers: Vec<(String, String)>, body: Vec<u8>) -> Delivery {
        Delivery { headers, body }
    }

    /// Sets `name` (case-insensitive), replacing any value it had.
    pub fn set(mut self, name: &str, value: &str) -> Delivery {
        self = self.without(name);
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn without(mut self, name: &str) -> Delivery {
        self.headers
            .retain(|(present, _)| !present.eq_ignore_ascii_case(name));
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(present, _)| present.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// `X-Hub-Signature-256` over the body with `secret`.
    pub fn github_signed(self, secret: &str) -> Delivery {
        let digest = hex::encode(hmac_sha256(secret.as_bytes(), &[&self.body]));
        self.set("X-Hub-Signature-256", &format!("sha256={digest}"))
    }

    /// A new `X-GitHub-Delivery` id.
    pub fn github_fresh(self) -> Delivery {
        self.set("X-GitHub-Delivery", &fresh_id())
    }

    /// Standard Webhooks headers with app-two's key, a new id and `timestamp`.
    pub fn standard_signed_at(self, timestamp: i64) -> Delivery {
        let id = format!("msg_{}", fresh_id());
        let signature = standard_signature(GL_KEY_APP_TWO, &id, timestamp, &self.body);
        self.set("webhook-id", &id)
            .set("webhook-timestamp", &timestamp.to_string())
            .set("webhook-signature", &signature)
    }

    pub fn standard_signed(self) -> Delivery {
        self.standard_signed_at(unix_now())
    }

    /// Posts the delivery to `url`, headers and bytes as they are.
    pub async fn post(&self, http: &reqwest::Client, url: &str) -> (u16, Value) {
        let mut request = http.post(url).body(self.body.clone());
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        send(request).await
    }

    pub async fn to_github(&self, app: &TestApp) -> (u16, Value) {
        self.post(&app.http, &app.url("/webhooks/github")).await
    }

    pub async fn to_gitlab(&self, app: &TestApp) -> (u16, Value) {
        self.post(&app.http, &app.url("/webhooks/gitlab")).await
    }
}

/// The GitHub push of `webhooks/github-push.json` with `edit`, signed by
/// app-one's secret, with a new delivery id.
pub fn github_push(edit: impl FnOnce(&mut Value)) -> Delivery {
    Delivery::sample("github-push.json", edit)
        .github_fresh()
        .github_signed(GH_SECRET_APP_ONE)
}
