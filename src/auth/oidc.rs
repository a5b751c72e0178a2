//! OIDC job tokens (GitHub Actions, GitLab CI `id_tokens`): verified against
//! the operator's `[[issuer]]` list only, with asymmetric algorithms, a key
//! looked up by `kid` in that issuer's JWKS, and every claim check named in
//! the refusal (never the expected value).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use crate::domain::{unix_now, Trigger, TriggerKind};
use crate::units::parse_duration;

/// Unknown `kid`: at most one JWKS refetch a minute per issuer.
const REFETCH_EVERY: Duration = Duration::from_secs(60);
/// While an issuer has never answered (down at start), its keys are asked
/// for more often: there is nothing cached to fall back on.
const FIRST_FETCH_RETRY: Duration = Duration::from_secs(5);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A JWKS or discovery document larger than this is refused.
const FETCH_LIMIT: usize = 256 * 1024;
/// Time claims must fall in the years 2000–2200 (Unix seconds): anything
/// else is a forged or broken token, and the bound keeps every later sum,
/// difference and conversion to milliseconds far from overflow.
const EARLIEST_TIME: i64 = 946_684_800;
const LATEST_TIME: i64 = 7_258_118_400;
/// `leeway` absorbs clock skew; more than this is a configuration mistake.
const MAX_LEEWAY: Duration = Duration::from_secs(3600);

/// An `[[issuer]]` of the config file, as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerFile {
    pub name: String,
    pub iss: String,
    pub jwks_uri: Option<String>,
    pub audience: String,
    pub algorithms: Option<Vec<String>>,
    pub leeway: Option<String>,
    pub max_lifetime: Option<String>,
}

/// A validated issuer.
#[derive(Clone, Debug)]
pub struct Issuer {
    pub name: String,
    pub iss: String,
    pub jwks_uri: Option<String>,
    pub audience: String,
    pub algorithms: Vec<Algorithm>,
    pub leeway: Duration,
    pub max_lifetime: Duration,
}

fn is_asymmetric(algorithm: Algorithm) -> bool {
    !matches!(
        algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    )
}

impl Issuer {
    /// Checks one `[[issuer]]`; the error names the key.
    pub fn from_file(raw: IssuerFile) -> Result<Issuer, String> {
        let name = raw.name.trim().to_owned();
        if name.is_empty() {
            return Err("`name` is empty".into());
        }
        let at = |key: &str| format!("issuer `{name}`: `{key}`");
        if !crate::outbound::is_allowed_url(&raw.iss) {
            return Err(format!(
                "{} must be https:// (http:// only on loopback)",
                at("iss")
            ));
        }
        if let Some(uri) = &raw.jwks_uri {
            if !crate::outbound::is_allowed_url(uri) {
                return Err(format!(
                    "{} must be https:// (http:// only on loopback)",
                    at("jwks_uri")
                ));
            }
        }
        if raw.audience.trim().is_empty() {
            return Err(format!("{} is required", at("audience")));
        }
        let names = raw.algorithms.unwrap_or_else(|| vec!["RS256".to_owned()]);
        let mut algorithms = Vec::new();
        for text in &names {
            let algorithm: Algorithm = text
                .parse()
                .map_err(|_| format!("{} has an unknown algorithm `{text}`", at("algorithms")))?;
            if !is_asymmetric(algorithm) {
                return Err(format!(
                    "{}: `{text}` is symmetric; only asymmetric algorithms are accepted",
                    at("algorithms")
                ));
            }
            algorithms.push(algorithm);
        }
        if algorithms.is_empty() {
            return Err(format!("{} is empty", at("algorithms")));
        }
        let duration = |key: &str, value: Option<String>, default: Duration| match value {
            None => Ok(default),
            Some(text) => parse_duration(&text).map_err(|error| format!("{}: {error}", at(key))),
        };
        let leeway = duration("leeway", raw.leeway, Duration::from_secs(30))?;
        if leeway > MAX_LEEWAY {
            return Err(format!(
                "{} is at most 1h (it absorbs clock skew)",
                at("leeway")
            ));
        }
        Ok(Issuer {
            leeway,
            max_lifetime: duration("max_lifetime", raw.max_lifetime, Duration::from_secs(3600))?,
            name,
            iss: raw.iss,
            jwks_uri: raw.jwks_uri,
            audience: raw.audience,
            algorithms,
        })
    }
}

/// Why a token was refused; [`OidcError::check`] names the failed check.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    #[error("malformed token")]
    Malformed,
    #[error("header `{0}` is not accepted")]
    ForbiddenHeader(&'static str),
    #[error("algorithm not accepted")]
    Algorithm,
    #[error("no `kid` in the header")]
    MissingKid,
    #[error("issuer not configured")]
    Issuer,
    #[error("unknown `kid`")]
    UnknownKid,
    #[error("issuer keys unavailable")]
    Keys,
    #[error("bad signature")]
    Signature,
    #[error("expired")]
    Expired,
    #[error("not yet valid (`nbf`)")]
    NotYetValid,
    #[error("audience (`aud`) does not match")]
    Audience,
    #[error("claim `{0}` is missing")]
    MissingClaim(String),
    #[error("claim `{0}` is not an integer within the years 2000-2200")]
    TimeClaim(&'static str),
    #[error("lifetime (`exp` - `iat`) too long")]
    Lifetime,
    #[error("issued in the future (`iat`)")]
    IssuedInFuture,
}

impl OidcError {
    /// The metric label of the refusal: from a fixed set, whatever the token.
    pub fn check(&self) -> &'static str {
        match self {
            OidcError::Malformed => "oidc_malformed",
            OidcError::ForbiddenHeader("crit") => "oidc_header_crit",
            OidcError::ForbiddenHeader("jku") => "oidc_header_jku",
            OidcError::ForbiddenHeader("x5u") => "oidc_header_x5u",
            OidcError::ForbiddenHeader(_) => "oidc_header_jwk",
            OidcError::Algorithm => "oidc_algorithm",
            OidcError::MissingKid | OidcError::UnknownKid => "oidc_kid",
            OidcError::Issuer => "oidc_issuer",
            OidcError::Keys => "oidc_jwks",
            OidcError::Signature => "oidc_signature",
            OidcError::Expired => "oidc_exp",
            OidcError::NotYetValid => "oidc_nbf",
            OidcError::Audience => "oidc_aud",
            OidcError::MissingClaim(name) => match name.as_str() {
                "iss" => "oidc_claim_iss",
                "aud" => "oidc_claim_aud",
                "exp" => "oidc_claim_exp",
                "iat" => "oidc_claim_iat",
                "jti" => "oidc_claim_jti",
                _ => "oidc_claim",
            },
            OidcError::TimeClaim("exp") => "oidc_claim_exp",
            OidcError::TimeClaim("iat") => "oidc_claim_iat",
            OidcError::TimeClaim(_) => "oidc_claim_nbf",
            OidcError::Lifetime => "oidc_lifetime",
            OidcError::IssuedInFuture => "oidc_iat",
        }
    }
}

/// A token whose signature and claims hold.
#[derive(Clone, Debug)]
pub struct VerifiedToken {
    /// The configured issuer's name.
    pub issuer: String,
    pub claims: Value,
    /// Unix seconds until which the token is accepted (`exp` + leeway).
    pub accepted_until: i64,
    pub jti: Option<String>,
}

impl VerifiedToken {
    pub fn subject(&self) -> &str {
        self.claims.get("sub").and_then(Value::as_str).unwrap_or("")
    }

    /// GitHub tokens carry `repository_id`, GitLab ones `project_id`.
    pub fn trigger(&self) -> Trigger {
        let claim = |names: &[&str]| {
            names.iter().find_map(|name| match self.claims.get(*name)? {
                Value::String(text) => Some(text.clone()),
                Value::Number(number) => Some(number.to_string()),
                _ => None,
            })
        };
        let kind = if self.claims.get("repository_id").is_some() {
            TriggerKind::GithubOidc
        } else {
            TriggerKind::GitlabOidc
        };
        Trigger {
            kind,
            repository: claim(&["repository", "project_path"]),
            git_ref: claim(&["ref"]),
            sha: claim(&["sha"]),
            actor: claim(&["actor", "user_login"]),
            event: claim(&["event_name", "pipeline_source"]),
            delivery_id: self.jti.clone(),
            issuer: Some(self.issuer.clone()),
            subject: claim(&["sub"]),
            policy: None,
        }
    }
}

/// A time claim: absent, or an integer (a JSON number without fraction)
/// within [`EARLIEST_TIME`]..=[`LATEST_TIME`].
fn time_claim(claims: &Value, name: &'static str) -> Result<Option<i64>, OidcError> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_i64()
            .filter(|time| (EARLIEST_TIME..=LATEST_TIME).contains(time))
            .map(Some)
            .ok_or(OidcError::TimeClaim(name)),
    }
}

/// The claims of a token whose signature holds, checked at `now` (Unix
/// seconds); returns until when the token is accepted (`exp` + leeway).
pub fn check_claims(claims: &Value, issuer: &Issuer, now: i64) -> Result<i64, OidcError> {
    let required = |name: &'static str| {
        time_claim(claims, name)?.ok_or_else(|| OidcError::MissingClaim(name.to_owned()))
    };
    let (exp, iat, nbf) = (
        required("exp")?,
        required("iat")?,
        time_claim(claims, "nbf")?,
    );
    // Our audience alone: a token also meant for others could be replayed
    // to them, or by them to us.
    match claims.get("aud") {
        None => return Err(OidcError::MissingClaim("aud".into())),
        Some(Value::String(aud)) if *aud == issuer.audience => {}
        Some(Value::Array(list)) if matches!(list.as_slice(), [Value::String(aud)] if *aud == issuer.audience) =>
            {}
        Some(_) => return Err(OidcError::Audience),
    }
    let leeway = i64::try_from(issuer.leeway.as_secs()).map_err(|_| OidcError::Expired)?;
    let accepted_until = exp.checked_add(leeway).ok_or(OidcError::Expired)?;
    if accepted_until < now {
        return Err(OidcError::Expired);
    }
    let latest_start = now.checked_add(leeway).ok_or(OidcError::NotYetValid)?;
    if nbf.is_some_and(|nbf| nbf > latest_start) {
        return Err(OidcError::NotYetValid);
    }
    let max_lifetime = i64::try_from(issuer.max_lifetime.as_secs()).unwrap_or(i64::MAX);
    if exp
        .checked_sub(iat)
        .is_none_or(|lifetime| lifetime > max_lifetime)
    {
        return Err(OidcError::Lifetime);
    }
    if iat > latest_start {
        return Err(OidcError::IssuedInFuture);
    }
    Ok(accepted_until)
}

struct IssuerKeys {
    issuer: Issuer,
    keys: RwLock<Arc<HashMap<String, DecodingKey>>>,
    /// When the last fetch ended; the lock also merges concurrent refetches.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    /// Fetches ended so far: a request that waited for the lock while one
    /// ran takes that fetch's answer instead of starting its own.
    fetches: AtomicU64,
}

/// Verifies tokens of the configured issuers; keys are fetched lazily.
pub struct OidcVerifier {
    issuers: Vec<IssuerKeys>,
    http: reqwest::Client,
}

fn segment(token: &str, index: usize) -> Result<Value, OidcError> {
    let part = token.split('.').nth(index).ok_or(OidcError::Malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| OidcError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| OidcError::Malformed)
}

/// The client of key fetches: never redirected (a redirect could lead off
/// the issuer), trusting the system's roots and `extra_roots`.
fn http_client(extra_roots: &[reqwest::Certificate]) -> reqwest::Result<reqwest::Client> {
    extra_roots
        .iter()
        .fold(reqwest::Client::builder(), |builder, root| {
            builder.add_root_certificate(root.clone())
        })
        .timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

impl OidcVerifier {
    pub fn new(issuers: Vec<Issuer>) -> OidcVerifier {
        let http = http_client(&[]).unwrap_or_default();
        OidcVerifier::with_http(issuers, http)
    }

    /// A verifier whose key fetches also trust `extra_roots` (`CD_CA_FILE`)
    /// besides the system's trust store.
    pub fn trusting(
        issuers: Vec<Issuer>,
        extra_roots: &[reqwest::Certificate],
    ) -> Result<OidcVerifier, reqwest::Error> {
        Ok(OidcVerifier::with_http(issuers, http_client(extra_roots)?))
    }

    fn with_http(issuers: Vec<Issuer>, http: reqwest::Client) -> OidcVerifier {
        OidcVerifier {
            issuers: issuers
                .into_iter()
                .map(|issuer| IssuerKeys {
                    issuer,
                    keys: RwLock::new(Arc::new(HashMap::new())),
                    last_fetch: tokio::sync::Mutex::new(None),
                    fetches: AtomicU64::new(0),
                })
                .collect(),
            http,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// Whether `token` claims to come from a configured issuer (unverified:
    /// only to tell an OIDC token from the service's own tokens).
    pub fn claims_known_issuer(&self, token: &str) -> bool {
        segment(token, 1)
            .ok()
            .and_then(|payload| {
                payload
                    .get("iss")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .is_some_and(|iss| self.issuers.iter().any(|keys| keys.issuer.iss == iss))
    }

    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, OidcError> {
        if token.split('.').count() != 3 {
            return Err(OidcError::Malformed);
        }
        let header = segment(token, 0)?;
        let header = header.as_object().ok_or(OidcError::Malformed)?;
        // Keys and key locations come from the operator's config, never the token.
        for name in ["crit", "jku", "x5u", "jwk"] {
            if header.contains_key(name) {
                return Err(OidcError::ForbiddenHeader(name));
            }
        }
        let algorithm: Algorithm = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(|alg| alg.parse().ok())
            .ok_or(OidcError::Algorithm)?;
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .ok_or(OidcError::MissingKid)?;
        let payload = segment(token, 1)?;
        let iss = payload
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| OidcError::MissingClaim("iss".into()))?;
        let keys = self
            .issuers
            .iter()
            .find(|keys| keys.issuer.iss == iss)
            .ok_or(OidcError::Issuer)?;
        let issuer = &keys.issuer;
        if !issuer.algorithms.contains(&algorithm) {
            return Err(OidcError::Algorithm);
        }
        let key = self.key(keys, kid).await?;

        // jsonwebtoken checks the signature, the algorithm and `iss`; the
        // audience and time claims are checked below, where their types,
        // ranges and arithmetic are ours to decide.
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::new();
        validation.set_issuer(&[&issuer.iss]);
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|error| {
                use jsonwebtoken::errors::ErrorKind;
                match error.into_kind() {
                    ErrorKind::InvalidIssuer => OidcError::Issuer,
                    ErrorKind::InvalidSignature => OidcError::Signature,
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => {
                        OidcError::Algorithm
                    }
                    _ => OidcError::Malformed,
                }
            })?
            .claims;
        let accepted_until = check_claims(&claims, issuer, unix_now())?;
        Ok(VerifiedToken {
            issuer: issuer.name.clone(),
            jti: claims.get("jti").and_then(Value::as_str).map(str::to_owned),
            claims,
            accepted_until,
        })
    }

    /// The issuer's key `kid`; an unknown one triggers one refetch, at most
    /// once a minute, merged with any refetch already under way.
    async fn key(&self, keys: &IssuerKeys, kid: &str) -> Result<DecodingKey, OidcError> {
        if let Some(key) = self.cached(keys, kid) {
            return Ok(key);
        }
        let generation = keys.fetches.load(Ordering::Acquire);
        let mut last_fetch = keys.last_fetch.lock().await;
        if let Some(key) = self.cached(keys, kid) {
            return Ok(key);
        }
        // A fetch ended while this request waited: its answer, success or
        // failure, is this request's too (one fetch per burst, not one each).
        if keys.fetches.load(Ordering::Acquire) != generation {
            return Err(self.missing(keys));
        }
        let cooldown = if self.has_keys(keys) {
            REFETCH_EVERY
        } else {
            FIRST_FETCH_RETRY
        };
        if last_fetch.is_some_and(|at| at.elapsed() < cooldown) {
            return Err(self.missing(keys));
        }
        // One deadline for discovery and JWKS together, so a burst waits at
        // most one timeout.
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, self.fetch(&keys.issuer))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {FETCH_TIMEOUT:?}")));
        match fetched {
            Ok(fetched) if !fetched.is_empty() => {
                *keys
                    .keys
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(fetched);
                tracing::info!(issuer = %keys.issuer.name, "issuer keys fetched");
            }
            // Old keys are kept: a failed or empty fetch never empties the set.
            Ok(_) => {
                tracing::warn!(issuer = %keys.issuer.name, "issuer JWKS has no usable key; keeping the old keys")
            }
            Err(error) => {
                tracing::warn!(issuer = %keys.issuer.name, %error, "cannot fetch issuer keys; keeping the old keys")
            }
        }
        // Spaced from the end: a slow failing issuer is not asked again at once.
        *last_fetch = Some(Instant::now());
        keys.fetches.fetch_add(1, Ordering::Release);
        self.cached(keys, kid).ok_or_else(|| self.missing(keys))
    }

    fn cached(&self, keys: &IssuerKeys, kid: &str) -> Option<DecodingKey> {
        keys.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(kid)
            .cloned()
    }

    fn has_keys(&self, keys: &IssuerKeys) -> bool {
        !keys
            .keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_empty()
    }

    fn missing(&self, keys: &IssuerKeys) -> OidcError {
        if self.has_keys(keys) {
            OidcError::UnknownKid
        } else {
            OidcError::Keys
        }
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let mut response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|error| error.to_string())?;
        if !response.status().is_success() {
            return Err(format!("{url}: HTTP {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|error| error.to_string())? {
            body.extend_from_slice(&chunk);
            if body.len() > FETCH_LIMIT {
                return Err(format!("{url}: larger than {FETCH_LIMIT} bytes"));
            }
        }
        serde_json::from_slice(&body).map_err(|error| format!("{url}: {error}"))
    }

    async fn fetch(&self, issuer: &Issuer) -> Result<HashMap<String, DecodingKey>, String> {
        let jwks_uri = match &issuer.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.iss.trim_end_matches('/')
                );
                let document = self.get_json(&url).await?;
                let uri = document
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{url}: no jwks_uri"))?
                    .to_owned();
                if !crate::outbound::is_allowed_url(&uri) {
                    return Err(format!("{url}: jwks_uri is not https://"));
                }
                uri
            }
        };
        let document = self.get_json(&jwks_uri).await?;
        let listed = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("{jwks_uri}: no keys"))?;
        let mut keys = HashMap::new();
        for raw in listed {
            // Keys this service cannot use (symmetric, unknown types) are skipped.
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
                continue;
            };
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                continue;
            }
            let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(&jwk))
            else {
                continue;
            };
            keys.insert(kid, key);
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer_file(iss: &str) -> IssuerFile {
        IssuerFile {
            name: "github".into(),
            iss: iss.into(),
            jwks_uri: None,
            audience: "enac-cd".into(),
            algorithms: None,
            leeway: None,
            max_lifetime: None,
        }
    }

    #[test]
    fn issuers_must_be_https_except_on_loopback() {
        assert!(
            Issuer::from_file(issuer_file("https://token.actions.githubusercontent.com")).is_ok()
        );
        assert!(Issuer::from_file(issuer_file("http://127.0.0.1:8080")).is_ok());
        assert!(Issuer::from_file(issuer_file("http://localhost:8080/x")).is_ok());
        let error =
            Issuer::from_file(issuer_file("http://issuer.example.org")).expect_err("plain http");
        assert!(error.contains("`iss`"), "{error}");
        assert!(Issuer::from_file(issuer_file("http://127.0.0.1.example.org")).is_err());
    }

    #[test]
    fn symmetric_algorithms_are_refused() {
        let mut file = issuer_file("https://gitlab.example.org");
        file.algorithms = Some(vec!["HS256".into()]);
        assert!(Issuer::from_file(file)
            .expect_err("HS256")
            .contains("symmetric"));
        let mut file = issuer_file("https://gitlab.example.org");
        file.algorithms = Some(vec!["ES256".into(), "RS256".into()]);
        let issuer = Issuer::from_file(file).expect("asymmetric");
        assert_eq!(issuer.algorithms, vec![Algorithm::ES256, Algorithm::RS256]);
        assert_eq!(issuer.leeway, Duration::from_secs(30));
        assert_eq!(issuer.max_lifetime, Duration::from_secs(3600));
    }

    #[test]
    fn time_claims_are_bounded_and_their_arithmetic_never_wraps() {
        let mut file = issuer_file("https://gitlab.example.org");
        file.leeway = Some("2h".into());
        assert!(Issuer::from_file(file)
            .expect_err("leeway")
            .contains("leeway"));
        let issuer = Issuer::from_file(issuer_file("https://gitlab.example.org")).expect("issuer");
        let now = 1_700_000_000;
        let claims =
            |exp: Value, iat: Value| serde_json::json!({"aud": "enac-cd", "exp": exp, "iat": iat});
        assert_eq!(
            check_claims(&claims(now.into(), now.into()), &issuer, now),
            Ok(now + 30)
        );
        for (exp, iat, name) in [
            (Value::from(now), Value::from(i64::MIN), "iat"),
            (Value::from(i64::MAX), Value::from(now), "exp"),
            (Value::from(LATEST_TIME + 1), Value::from(now), "exp"),
            (Value::from(now), Value::from(EARLIEST_TIME - 1), "iat"),
        ] {
            assert_eq!(
                check_claims(&claims(exp, iat), &issuer, now),
                Err(OidcError::TimeClaim(name))
            );
        }
    }

    #[test]
    fn the_audience_is_required() {
        let mut file = issuer_file("https://gitlab.example.org");
        file.audience = " ".into();
        assert!(Issuer::from_file(file)
            .expect_err("no audience")
            .contains("audience"));
    }
}
