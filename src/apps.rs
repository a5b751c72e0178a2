//! The app list (`/set-available-apps/`, `CD_APPS_FILE`): validated whole,
//! every bad entry named, secrets turned into digests on the way in.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use crate::auth::SecretDigest;
use crate::store::AppRecord;

/// The app if `secret` is its secret. Unknown ids and wrong secrets cost the
/// same hash and compare, so neither timing nor answer tells whether an id
/// exists; an app without a secret is deployable through policies only.
pub fn authenticate(app: Option<AppRecord>, secret: &str) -> Option<AppRecord> {
    let digest = app
        .as_ref()
        .and_then(|app| app.secret)
        .unwrap_or_else(|| SecretDigest::of("\0no secret can match this\0"));
    let matches = digest.matches(secret);
    app.filter(|app| matches && app.secret.is_some())
}

/// Shortest deployment secret accepted by default (`CD_MIN_SECRET_LENGTH`).
pub const MIN_SECRET_LEN: usize = 16;
const MAX_ID_LEN: usize = 128;

/// One invalid entry of an app list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AppProblem {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    pub error: String,
}

impl std::fmt::Display for AppProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.deployment_id {
            Some(id) => write!(f, "entry {} ({id}): {}", self.index, self.error),
            None => write!(f, "entry {}: {}", self.index, self.error),
        }
    }
}

/// Inventories become program arguments, lock keys, labels and file names:
/// only a plain name is accepted.
fn is_plain_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn check_entry(entry: &Value, min_secret_len: usize) -> Result<AppRecord, String> {
    let object = entry.as_object().ok_or("must be an object")?;
    let text = |key: &str| -> Result<String, String> {
        match object.get(key) {
            Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                Err(format!("`{key}` is missing or empty"))
            }
            Some(_) => Err(format!("`{key}` must be a string")),
        }
    };
    let deployment_id = text("deployment_id")?;
    if deployment_id.len() > MAX_ID_LEN || deployment_id.chars().any(char::is_control) {
        return Err("`deployment_id` must be at most 128 printable characters".into());
    }
    let inventory = text("inventory")?;
    if inventory.len() > MAX_ID_LEN || !is_plain_name(&inventory) {
        return Err("`inventory` must be a name of letters, digits, '.', '_' and '-'".into());
    }
    let secret = match object.get("deployment_secret") {
        None | Some(Value::Null) => None,
        Some(Value::String(secret)) if secret.chars().count() >= min_secret_len => {
            Some(SecretDigest::of(secret))
        }
        Some(Value::String(_)) => {
            return Err(format!(
                "`deployment_secret` must be at least {min_secret_len} characters \
                 (CD_MIN_SECRET_LENGTH)"
            ))
        }
        Some(_) => return Err("`deployment_secret` must be a string or null".into()),
    };
    Ok(AppRecord {
        deployment_id,
        inventory,
        secret,
    })
}

/// Validates a whole app list; any problem refuses all of it.
pub fn parse_apps(list: &Value, min_secret_len: usize) -> Result<Vec<AppRecord>, Vec<AppProblem>> {
    let Some(entries) = list.as_array() else {
        return Err(vec![AppProblem {
            index: 0,
            deployment_id: None,
            error: "the app list must be a JSON array".into(),
        }]);
    };
    let mut apps = Vec::with_capacity(entries.len());
    let mut problems = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let named = entry
            .get("deployment_id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map(str::to_owned);
        match check_entry(entry, min_secret_len) {
            Ok(app) => {
                if let Some(first) = seen.insert(app.deployment_id.clone(), index) {
                    problems.push(AppProblem {
                        index,
                        deployment_id: named,
                        error: format!("duplicate `deployment_id` (first at entry {first})"),
                    });
                } else {
                    apps.push(app);
                }
            }
            Err(error) => problems.push(AppProblem {
                index,
                deployment_id: named,
                error,
            }),
        }
    }
    if problems.is_empty() {
        Ok(apps)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_apps_default(list: &Value) -> Result<Vec<AppRecord>, Vec<AppProblem>> {
        parse_apps(list, MIN_SECRET_LEN)
    }

    #[test]
    fn a_shorter_minimum_accepts_the_seeds_sample_secrets() {
        let list =
            json!([{"deployment_id": "app", "inventory": "inv", "deployment_secret": "secret123"}]);
        let problems = parse_apps_default(&list).expect_err("9 characters under 16");
        assert!(
            problems[0].error.contains("CD_MIN_SECRET_LENGTH"),
            "{}",
            problems[0]
        );
        assert!(parse_apps(&list, 8).is_ok());
    }

    #[test]
    fn a_valid_list_keeps_only_digests() {
        let apps = parse_apps_default(&json!([
            {"deployment_id": "app-one", "inventory": "inv_one", "deployment_secret": "0123456789abcdef"},
            {"deployment_id": "app-two", "inventory": "inv_one", "deployment_secret": null},
            {"deployment_id": "app-three", "inventory": "inv.three"}
        ]))
        .expect("valid list");
        assert_eq!(apps.len(), 3);
        assert!(apps[0]
            .secret
            .is_some_and(|digest| digest.matches("0123456789abcdef")));
        assert!(apps[1].secret.is_none());
    }

    #[test]
    fn every_bad_entry_is_named() {
        let problems = parse_apps_default(&json!([
            {"deployment_id": "", "inventory": "inv"},
            {"deployment_id": "a", "inventory": ""},
            {"deployment_id": "b", "inventory": "inv", "deployment_secret": "short"},
            {"deployment_id": "c", "inventory": "inv"},
            {"deployment_id": "c", "inventory": "inv"},
            {"deployment_id": "d", "inventory": "../etc"},
            "not an object"
        ]))
        .expect_err("invalid list accepted");
        let indices: Vec<usize> = problems.iter().map(|p| p.index).collect();
        assert_eq!(indices, vec![0, 1, 2, 4, 5, 6]);
        assert!(problems[3].error.contains("duplicate"));
        assert!(problems[2].to_string().contains("entry 2 (b)"));
    }

    #[test]
    fn not_a_list_is_refused() {
        assert!(parse_apps_default(&json!({"deployment_id": "a"})).is_err());
    }
}
