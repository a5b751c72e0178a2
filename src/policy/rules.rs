//! Rules and how they match: webhook payloads by JSON pointer, OIDC claims by
//! name, exact or anchored regex. Every check says which key failed first.

use std::collections::BTreeMap;

use regex::Regex;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Github,
    Gitlab,
}

impl Provider {
    /// The payload field naming the repository or project: never renamed,
    /// so a rule binding it cannot be satisfied by another repository.
    pub fn id_pointer(self) -> &'static str {
        match self {
            Provider::Github => "/repository/id",
            Provider::Gitlab => "/project/id",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Gitlab => "gitlab",
        }
    }
}

/// The first key of a rule that did not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub key: String,
    pub reason: &'static str,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` {}", self.key, self.reason)
    }
}

fn mismatch(key: &str, reason: &'static str) -> Mismatch {
    Mismatch {
        key: key.to_owned(),
        reason,
    }
}

/// Accepted values of one key: any of them matches.
#[derive(Clone, Debug, PartialEq)]
pub struct AnyOf(pub Vec<Value>);

impl AnyOf {
    /// Compares JSON values exactly, except that a number and its decimal
    /// string are the same (ids are numbers in payloads, strings in claims).
    fn accepts(&self, actual: &Value) -> bool {
        self.0.iter().any(|wanted| same(wanted, actual))
    }
}

fn same(wanted: &Value, actual: &Value) -> bool {
    match (wanted, actual) {
        (Value::String(text), Value::Number(number))
        | (Value::Number(number), Value::String(text)) => *text == number.to_string(),
        _ => wanted == actual,
    }
}

/// A `[[webhook]]` rule.
#[derive(Debug)]
pub struct WebhookRule {
    pub provider: Provider,
    /// GitHub HMAC secret, or GitLab `X-Gitlab-Token`.
    pub secret: Option<SecretString>,
    /// GitLab Standard Webhooks key (the part after `whsec_`, decoded).
    pub signing_key: Option<Vec<u8>>,
    pub events: Vec<String>,
    pub matches: BTreeMap<String, AnyOf>,
}

impl WebhookRule {
    pub fn binds_id(&self, id: &Value) -> bool {
        self.matches
            .get(self.provider.id_pointer())
            .is_some_and(|wanted| wanted.accepts(id))
    }

    /// Whether a verified delivery of `event` with `payload` matches.
    pub fn check(&self, event: &str, payload: &Value) -> Result<(), Mismatch> {
        if !self.events.iter().any(|allowed| allowed == event) {
            return Err(mismatch("events", "does not list this event"));
        }
        // The immutable id first: another repository is the telling mismatch.
        let id_pointer = self.provider.id_pointer();
        let ordered = self
            .matches
            .iter()
            .filter(|(pointer, _)| *pointer == id_pointer)
            .chain(
                self.matches
                    .iter()
                    .filter(|(pointer, _)| *pointer != id_pointer),
            );
        for (pointer, wanted) in ordered {
            match payload.pointer(pointer) {
                None => return Err(mismatch(pointer, "is missing from the payload")),
                Some(actual) if !wanted.accepts(actual) => {
                    return Err(mismatch(pointer, "has another value"))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// An `[[oidc]]` rule.
#[derive(Debug)]
pub struct OidcRule {
    pub issuer: String,
    pub claims: BTreeMap<String, AnyOf>,
    /// Anchored: `^(?:…)$`.
    pub claims_regex: BTreeMap<String, Vec<Regex>>,
}

impl OidcRule {
    /// Whether the (verified) claims of a token from `issuer` match.
    pub fn check(&self, issuer: &str, claims: &Value) -> Result<(), Mismatch> {
        if self.issuer != issuer {
            return Err(mismatch("issuer", "names another issuer"));
        }
        for (name, wanted) in &self.claims {
            match claims.get(name) {
                None => return Err(mismatch(name, "is missing from the token")),
                Some(actual) if !wanted.accepts(actual) => {
                    return Err(mismatch(name, "has another value"))
                }
                Some(_) => {}
            }
        }
        for (name, patterns) in &self.claims_regex {
            let Some(actual) = claims.get(name).and_then(Value::as_str) else {
                return Err(mismatch(name, "is missing from the token"));
            };
            if !patterns.iter().any(|pattern| pattern.is_match(actual)) {
                return Err(mismatch(name, "does not match the pattern"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn github_rule() -> WebhookRule {
        WebhookRule {
            provider: Provider::Github,
            secret: Some(SecretString::from("s")),
            signing_key: None,
            events: vec!["push".into()],
            matches: BTreeMap::from([
                ("/repository/id".to_owned(), AnyOf(vec![json!(123456)])),
                (
                    "/ref".to_owned(),
                    AnyOf(vec![json!("refs/heads/main"), json!("refs/heads/prod")]),
                ),
                ("/deleted".to_owned(), AnyOf(vec![json!(false)])),
            ]),
        }
    }

    #[test]
    fn a_webhook_rule_matches_all_its_keys_with_any_of_lists() {
        let rule = github_rule();
        let payload =
            json!({"repository": {"id": 123456}, "ref": "refs/heads/prod", "deleted": false});
        assert_eq!(rule.check("push", &payload), Ok(()));
        assert!(rule.binds_id(&json!(123456)));
        assert!(rule.binds_id(&json!("123456")));
        assert!(!rule.binds_id(&json!(654321)));
    }

    #[test]
    fn the_first_failing_key_is_named() {
        let rule = github_rule();
        let payload =
            json!({"repository": {"id": 123456}, "ref": "refs/heads/dev", "deleted": false});
        assert_eq!(rule.check("push", &payload).expect_err("dev").key, "/ref");
        assert_eq!(
            rule.check("release", &payload).expect_err("event").key,
            "events"
        );
        let missing = json!({"repository": {"id": 123456}, "ref": "refs/heads/main"});
        let error = rule.check("push", &missing).expect_err("missing");
        assert_eq!(
            (error.key.as_str(), error.reason),
            ("/deleted", "is missing from the payload")
        );
    }

    #[test]
    fn oidc_claims_match_exactly_or_by_anchored_regex() {
        let rule = OidcRule {
            issuer: "github".into(),
            claims: BTreeMap::from([("repository_id".to_owned(), AnyOf(vec![json!("42")]))]),
            claims_regex: BTreeMap::from([(
                "ref".to_owned(),
                vec![Regex::new("^(?:refs/heads/main)$").expect("regex")],
            )]),
        };
        let claims = json!({"repository_id": "42", "ref": "refs/heads/main"});
        assert_eq!(rule.check("github", &claims), Ok(()));
        let longer = json!({"repository_id": "42", "ref": "refs/heads/main-old"});
        assert_eq!(
            rule.check("github", &longer).expect_err("anchored").key,
            "ref"
        );
        assert_eq!(
            rule.check("gitlab", &claims).expect_err("issuer").key,
            "issuer"
        );
        let missing = json!({"ref": "refs/heads/main"});
        assert_eq!(
            rule.check("github", &missing).expect_err("missing").key,
            "repository_id"
        );
    }
}
