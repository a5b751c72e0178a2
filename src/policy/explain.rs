//! `enac-cd policy check` and `enac-cd policy explain`: what the service
//! would do with a delivery or a token's claims, rule by rule.

use std::path::Path;

use serde_json::Value;

use super::{load_dir, PolicySet, Provider};

/// What to explain.
pub enum Subject {
    Webhook {
        provider: Provider,
        event: String,
        payload: Value,
    },
    Claims {
        issuer: Option<String>,
        claims: Value,
    },
}

/// A sample delivery file is either the bare payload or `{"headers", "body"}`.
pub fn payload_of(document: Value) -> Value {
    match document {
        Value::Object(mut map) if map.contains_key("headers") && map.contains_key("body") => {
            map.remove("body").unwrap_or(Value::Null)
        }
        other => other,
    }
}

/// Lines saying, for every rule, whether it matches and if not the first
/// key that failed; the matching deployment ids first.
pub fn explain(set: &PolicySet, subject: &Subject) -> (Vec<String>, Vec<String>) {
    let mut matched = Vec::new();
    let mut lines = Vec::new();
    for policy in &set.policies {
        let file = policy.file.display();
        match subject {
            Subject::Webhook {
                provider,
                event,
                payload,
            } => {
                for (index, rule) in policy.webhooks.iter().enumerate() {
                    if rule.provider != *provider {
                        continue;
                    }
                    let place = format!("{} ({file} webhook[{index}])", policy.deployment_id);
                    match rule.check(event, payload) {
                        Ok(()) => {
                            lines.push(format!("match     {place}"));
                            matched.push(policy.deployment_id.clone());
                        }
                        Err(mismatch) => lines.push(format!("no match  {place}: {mismatch}")),
                    }
                }
            }
            Subject::Claims { issuer, claims } => {
                for (index, rule) in policy.oidc.iter().enumerate() {
                    let place = format!("{} ({file} oidc[{index}])", policy.deployment_id);
                    let issuer = issuer.as_deref().unwrap_or(&rule.issuer);
                    match rule.check(issuer, claims) {
                        Ok(()) => {
                            lines.push(format!("match     {place}"));
                            matched.push(policy.deployment_id.clone());
                        }
                        Err(mismatch) => lines.push(format!("no match  {place}: {mismatch}")),
                    }
                }
            }
        }
    }
    matched.dedup();
    (matched, lines)
}

/// `policy check`: 0 when every file loads, 1 otherwise.
pub fn check(dir: &Path) -> i32 {
    if !dir.is_dir() {
        eprintln!("error: {}: no such directory", dir.display());
        return 1;
    }
    match load_dir(dir) {
        Ok(set) => {
            for policy in &set.policies {
                println!(
                    "ok  {} ({}): {} webhook rule(s), {} oidc rule(s), on_busy {}{}",
                    policy.deployment_id,
                    policy.file.display(),
                    policy.webhooks.len(),
                    policy.oidc.len(),
                    policy.on_busy.as_str(),
                    policy.report.summary()
                );
            }
            println!(
                "{} policy file(s) valid in {}",
                set.policies.len(),
                dir.display()
            );
            0
        }
        Err(error) => {
            eprintln!("error: {error}");
            1
        }
    }
}
