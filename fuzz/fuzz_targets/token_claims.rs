//! OIDC tokens: the unverified header/payload read that tells an OIDC token
//! from the service's own, and the claim checks (times, audience, lifetime)
//! on any JSON claims, at the edges of time.
#![no_main]

use enac_cd::auth::oidc::{check_claims, Issuer, IssuerFile, OidcVerifier};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let issuer = Issuer::from_file(IssuerFile {
        name: "fuzz".into(),
        iss: "https://issuer.example".into(),
        jwks_uri: None,
        audience: "enac-cd".into(),
        algorithms: None,
        leeway: None,
        max_lifetime: None,
    })
    .expect("a valid issuer");
    let text = String::from_utf8_lossy(data);
    let verifier = OidcVerifier::new(vec![issuer.clone()]);
    let _ = verifier.claims_known_issuer(&text);
    if let Ok(claims) = serde_json::from_slice::<serde_json::Value>(data) {
        for now in [0, 1_764_000_000, i64::MIN, i64::MAX] {
            let _ = check_claims(&claims, &issuer, now);
        }
    }
});
