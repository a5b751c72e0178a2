//! Webhook bodies: the unverified-id read of both providers, then the fact
//! extraction, never-deploy rules and dedupe keys on any JSON.
#![no_main]

use std::sync::Arc;

use axum::http::HeaderMap;
use enac_cd::ingress::webhook::{provider_named, verify};
use enac_cd::policy::PolicySet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let name = if selector % 2 == 0 {
        "github"
    } else {
        "gitlab"
    };
    let Some(provider) = provider_named(name) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        provider.event_header(),
        "push".parse().expect("a header value"),
    );
    let _ = verify(Arc::new(PolicySet::default()), provider, &headers, body);
    if let Ok(payload) = serde_json::from_slice::<serde_json::Value>(body) {
        let _ = provider.trigger(&payload);
        for event in [
            "push",
            "workflow_run",
            "Push Hook",
            "Tag Push Hook",
            "Pipeline Hook",
        ] {
            let _ = provider.never_deploys(event, &payload);
            let _ = provider.dedupe_key(event, &payload);
        }
    }
});
