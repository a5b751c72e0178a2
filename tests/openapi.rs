//! `GET /openapi.json` (contract §10): an OpenAPI 3.1 document, without
//! auth, of every route the router serves, and of no route it does not.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

/// The operations of a document: `(METHOD, path)`.
fn operations(paths: &serde_json::Map<String, Value>) -> BTreeSet<(String, String)> {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .into_iter()
                .filter(|method| item.get(*method).is_some())
                .map(|method| (method.to_ascii_uppercase(), path.clone()))
        })
        .collect()
}

async fn served_document(app: &TestApp) -> Value {
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let text = response.text().await.expect("body read");
    serde_json::from_str(&text).expect("the document is JSON")
}

fn paths_of(document: &Value) -> &serde_json::Map<String, Value> {
    document["paths"].as_object().expect("paths is an object")
}

/// Every `$ref` string anywhere in `value`.
fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(target)) => found.push(target),
                    _ => refs(inner, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
        _ => {}
    }
}

#[tokio::test]
async fn openapi_json_is_an_openapi_3_1_document_served_without_auth() {
    let app = TestApp::spawn_embedded(&[]).await;
    let document = served_document(&app).await;

    let version = document["openapi"].as_str().expect("openapi is a string");
    assert!(version.starts_with("3.1"), "{version}");
    assert_eq!(document["info"]["title"], "enac-cd");
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
    for scheme in ["admin_token", "callback_token", "job_token"] {
        let defined = &document["components"]["securitySchemes"][scheme];
        assert_eq!(defined["type"], "http", "{scheme}: {defined}");
        assert_eq!(defined["scheme"], "bearer", "{scheme}: {defined}");
    }
    // Every schema an operation names is in the document itself.
    let mut found = Vec::new();
    refs(&document, &mut found);
    assert!(!found.is_empty());
    for target in found {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{target} points outside the document"));
        assert!(
            document.pointer(pointer).is_some(),
            "{target} is not in the document"
        );
    }
    // Path parameters are the template's, and only those.
    let paths = paths_of(&document);
    for (method, path) in operations(paths) {
        let operation = &paths[&path][method.to_ascii_lowercase()];
        let declared: BTreeSet<&str> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|parameter| parameter["in"] == "path")
            .filter_map(|parameter| parameter["name"].as_str())
            .collect();
        let templated: BTreeSet<&str> = path
            .split('{')
            .skip(1)
            .filter_map(|part| part.split_once('}').map(|(name, _)| name))
            .collect();
        assert_eq!(declared, templated, "{method} {path}");
        assert!(
            operation["responses"]
                .as_object()
                .is_some_and(|r| !r.is_empty()),
            "{method} {path} documents no response"
        );
    }
    // Served as built: twice the same bytes.
    let again = served_document(&app).await;
    assert_eq!(document, again);
}

#[tokio::test]
async fn every_route_of_the_router_is_in_the_document() {
    let app = TestApp::spawn_embedded(&[]).await;
    let document = served_document(&app).await;
    let documented = operations(paths_of(&document));

    // The routes the router is built from, as the code collects them.
    let routed = serde_json::to_value(enac_cd::http::openapi()).expect("serializes");
    let routed = operations(paths_of(&routed));
    assert!(routed.len() >= 12, "{routed:?}");
    let missing: Vec<_> = routed.difference(&documented).collect();
    assert!(missing.is_empty(), "routes without docs: {missing:?}");

    // And the contract's endpoints (§3, §5, §7, §8, §10) are among them.
    for (method, path) in [
        ("GET", "/"),
        ("POST", "/app-deploy/"),
        ("POST", "/job-status/"),
        ("POST", "/set-available-apps/"),
        ("GET", "/get-available-apps/"),
        ("GET", "/load/"),
        ("POST", "/set-job-status/"),
        ("POST", "/webhooks/{provider}"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
    ] {
        assert!(
            documented.contains(&(method.to_owned(), path.to_owned())),
            "{method} {path} is not documented"
        );
    }
}

/// `path` with each `{param}` replaced by the parameter's example, else the
/// first value its schema allows.
fn concrete(path: &str, operation: &Value) -> String {
    let mut concrete = path.to_owned();
    for parameter in operation["parameters"].as_array().into_iter().flatten() {
        if parameter["in"] != "path" {
            continue;
        }
        let name = parameter["name"].as_str().expect("parameter name");
        let value = parameter["example"]
            .as_str()
            .or_else(|| parameter["schema"]["enum"][0].as_str())
            .unwrap_or_else(|| panic!("{path}: no example for `{name}`"));
        concrete = concrete.replace(&format!("{{{name}}}"), value);
    }
    concrete
}

#[tokio::test]
async fn every_documented_operation_is_served_and_answers_a_documented_status() {
    let app = TestApp::spawn_embedded(&[]).await;
    let document = served_document(&app).await;
    let paths = paths_of(&document);
    // A redirect (the status page's 303 to its login) is an answer to check.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    for (method, path) in operations(paths) {
        let operation = &paths[&path][method.to_ascii_lowercase()];
        let url = app.url(&concrete(&path, operation));
        let verb = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        // No token and no body: a refusal (400, 401, 415…) proves the route
        // exists as well as an answer does.
        let response = http.request(verb, &url).send().await.expect("request sent");
        let (status, body) = read(response).await;
        assert_ne!(status, 405, "{method} {path}: method not routed: {body}");
        let unmatched = status == 404 && body["error"] == "not found";
        assert!(!unmatched, "{method} {path} is documented but not routed");
        assert!(
            operation["responses"][status.to_string()].is_object(),
            "{method} {path} answered {status}, which it does not document: {body}"
        );
    }
}
