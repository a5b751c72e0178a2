//! An OIDC issuer on wiremock with keys generated here, and tokens shaped
//! like the ones GitHub Actions and GitLab CI mint.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use enac_cd::auth::oidc::{Issuer, IssuerFile};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::tls::{TestCertificates, TlsProxy};
use super::wait::unix_now;

// ---------------------------------------------------------------- keys

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// One RSA key pair. Generating one is slow in debug builds, so a test
/// binary makes at most three and the tests share them under their own kids.
pub struct RsaMaterial {
    pub private_pem: String,
    pub public_pem: String,
    n: String,
    e: String,
}

pub fn rsa_material(slot: usize) -> &'static RsaMaterial {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    use rsa::traits::PublicKeyParts;
    static SLOTS: [OnceLock<RsaMaterial>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    SLOTS[slot].get_or_init(|| {
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("RSA key generated");
        let public = key.to_public_key();
        RsaMaterial {
            private_pem: key
                .to_pkcs1_pem(LineEnding::LF)
                .expect("RSA private key as PEM")
                .to_string(),
            public_pem: public
                .to_public_key_pem(LineEnding::LF)
                .expect("RSA public key as PEM"),
            n: b64(&public.n().to_bytes_be()),
            e: b64(&public.e().to_bytes_be()),
        }
    })
}

/// A private key with its `kid`, and its public half as a JWK.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pub encoding: EncodingKey,
    /// The public key's JWK parameters (`kty`, `n`/`e` or `crv`/`x`/`y`).
    public: Value,
}

impl SigningKey {
    pub fn rsa(slot: usize, kid: &str) -> SigningKey {
        let material = rsa_material(slot);
        SigningKey {
            kid: kid.to_owned(),
            algorithm: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_pem(material.private_pem.as_bytes())
                .expect("RSA PEM accepted by jsonwebtoken"),
            public: json!({"kty": "RSA", "n": material.n, "e": material.e}),
        }
    }

    pub fn es256(kid: &str) -> SigningKey {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let pem = secret
            .to_pkcs8_pem(LineEnding::LF)
            .expect("P-256 key as PKCS#8 PEM");
        SigningKey {
            kid: kid.to_owned(),
            algorithm: Algorithm::ES256,
            encoding: EncodingKey::from_ec_pem(pem.as_bytes())
                .expect("EC PEM accepted by jsonwebtoken"),
            public: serde_json::to_value(secret.public_key().to_jwk()).expect("P-256 JWK"),
        }
    }

    /// The same key published under another `kid`.
    pub fn with_kid(&self, kid: &str) -> SigningKey {
        SigningKey {
            kid: kid.to_owned(),
            ..self.clone()
        }
    }

    /// The JWKS entry an issuer publishes for this key.
    pub fn jwk(&self) -> Value {
        let mut jwk = self.public.clone();
        jwk["kid"] = json!(self.kid);
        jwk["alg"] = json!(format!("{:?}", self.algorithm));
        jwk["use"] = json!("sig");
        jwk
    }

    /// A token as the CI would mint it: `alg`, `kid`, `typ`.
    pub fn sign(&self, claims: &Value) -> String {
        let header = Header {
            kid: Some(self.kid.clone()),
            ..Header::new(self.algorithm)
        };
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("token signed")
    }

    /// A token with a hand-written header, signed with this key.
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), &self.encoding, self.algorithm)
                .expect("token signed");
        format!("{input}.{signature}")
    }

    /// This key's usual header plus `extra` (e.g. a `jku`).
    pub fn sign_with_extra_header(&self, extra: Value, claims: &Value) -> String {
        let mut header =
            json!({"alg": format!("{:?}", self.algorithm), "typ": "JWT", "kid": self.kid});
        for (name, value) in extra.as_object().expect("extra header is an object") {
            header[name] = value.clone();
        }
        self.sign_with_header(&header, claims)
    }
}

/// An HMAC key: what a token signed with it claims is never acceptable.
pub fn hmac_key(kid: &str, secret: &[u8]) -> SigningKey {
    SigningKey {
        kid: kid.to_owned(),
        algorithm: Algorithm::HS256,
        encoding: EncodingKey::from_secret(secret),
        public: Value::Null,
    }
}

// ---------------------------------------------------------------- claims

/// Claims shaped like a GitHub Actions token for a push to main.
pub fn github_claims(iss: &str, aud: &str) -> Value {
    let now = unix_now();
    json!({
        "jti": ulid::Ulid::new().to_string(),
        "sub": "repo:epfl-enac/app:ref:refs/heads/main",
        "aud": aud,
        "ref": "refs/heads/main",
        "sha": "d6cd1e2bd19e03a81132a23b2025920577f84e37",
        "repository": "epfl-enac/app",
        "repository_owner": "epfl-enac",
        "repository_owner_id": "5021",
        "repository_id": "123456",
        "repository_visibility": "private",
        "run_id": "8472619301",
        "run_number": "17",
        "run_attempt": "1",
        "actor": "octocat",
        "actor_id": "583231",
        "workflow": "deploy",
        "event_name": "push",
        "ref_type": "branch",
        "environment": "prod",
        "job_workflow_ref": "epfl-enac/app/.github/workflows/deploy.yml@refs/heads/main",
        "runner_environment": "github-hosted",
        "iss": iss,
        "nbf": now - 600,
        "iat": now,
        "exp": now + 300,
    })
}

/// Claims shaped like a GitLab CI `id_tokens` token for a pipeline on main.
pub fn gitlab_claims(iss: &str, aud: &str) -> Value {
    let now = unix_now();
    json!({
        "jti": ulid::Ulid::new().to_string(),
        "sub": "project_path:epfl-enac/app:ref_type:branch:ref:main",
        "aud": aud,
        "namespace_id": "7",
        "namespace_path": "epfl-enac",
        "project_id": "42",
        "project_path": "epfl-enac/app",
        "user_id": "31",
        "user_login": "alice",
        "user_email": "alice@example.org",
        "pipeline_id": "1001",
        "pipeline_source": "push",
        "job_id": "5005",
        "ref": "main",
        "ref_type": "branch",
        "ref_path": "refs/heads/main",
        "ref_protected": "true",
        "sha": "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c",
        "runner_id": 12,
        "runner_environment": "gitlab-hosted",
        "iss": iss,
        "nbf": now - 5,
        "iat": now,
        "exp": now + 300,
    })
}

pub fn without(mut claims: Value, name: &str) -> Value {
    claims
        .as_object_mut()
        .expect("claims are an object")
        .remove(name);
    claims
}

pub fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

// ---------------------------------------------------------------- issuer

#[derive(Clone)]
enum Serving {
    /// Every request answers this status.
    Down(u16),
    /// Discovery, and this JWKS document.
    Keys(Value),
}

struct IssuerState {
    serving: Mutex<Serving>,
    jwks_delay: Mutex<Duration>,
}

/// Answers discovery or the JWKS from what the issuer serves right now.
struct Document {
    state: Arc<IssuerState>,
    iss: String,
    is_jwks: bool,
}

impl Respond for Document {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let serving = self.state.serving.lock().expect("issuer state").clone();
        match serving {
            Serving::Down(status) => ResponseTemplate::new(status),
            Serving::Keys(jwks) if self.is_jwks => ResponseTemplate::new(200)
                .set_body_json(jwks)
                .set_delay(*self.state.jwks_delay.lock().expect("issuer state")),
            Serving::Keys(_) => ResponseTemplate::new(200).set_body_json(json!({
                "issuer": self.iss,
                "jwks_uri": format!("{}/jwks", self.iss),
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            })),
        }
    }
}

/// An OIDC issuer on 127.0.0.1: `/.well-known/openid-configuration` and
/// `/jwks`, switchable between keys and failures while the test runs.
pub struct FakeIssuer {
    name: &'static str,
    server: MockServer,
    state: Arc<IssuerState>,
    /// `iss`, and the base of its documents' URLs.
    iss: String,
    /// The HTTPS endpoint in front of `server`, if it has one.
    _tls: Option<TlsProxy>,
}

impl FakeIssuer {
    /// Starts down (503) until [`FakeIssuer::serve`].
    pub async fn start(name: &'static str) -> FakeIssuer {
        FakeIssuer::start_behind(name, None).await
    }

    /// Started, serving `keys` over HTTPS only, with a certificate of the
    /// private CA `certificates`: a self-managed GitLab as an operator runs it.
    pub async fn serving_https(
        name: &'static str,
        keys: &[&SigningKey],
        certificates: &TestCertificates,
    ) -> FakeIssuer {
        let issuer = FakeIssuer::start_behind(name, Some(certificates)).await;
        issuer.serve(keys);
        issuer
    }

    async fn start_behind(name: &'static str, tls: Option<&TestCertificates>) -> FakeIssuer {
        let server = MockServer::start().await;
        let tls = match tls {
            Some(certificates) => {
                Some(TlsProxy::start(certificates, server.address().port()).await)
            }
            None => None,
        };
        let iss = tls.as_ref().map_or_else(|| server.uri(), TlsProxy::url);
        let state = Arc::new(IssuerState {
            serving: Mutex::new(Serving::Down(503)),
            jwks_delay: Mutex::new(Duration::ZERO),
        });
        for (route, is_jwks) in [
            ("/.well-known/openid-configuration", false),
            ("/jwks", true),
        ] {
            Mock::given(method("GET"))
                .and(path(route))
                .respond_with(Document {
                    state: Arc::clone(&state),
                    iss: iss.clone(),
                    is_jwks,
                })
                .mount(&server)
                .await;
        }
        FakeIssuer {
            name,
            server,
            state,
            iss,
            _tls: tls,
        }
    }

    /// Started and serving `keys`.
    pub async fn serving(name: &'static str, keys: &[&SigningKey]) -> FakeIssuer {
        let issuer = FakeIssuer::start(name).await;
        issuer.serve(keys);
        issuer
    }

    pub fn iss(&self) -> String {
        self.iss.clone()
    }

    pub fn serve(&self, keys: &[&SigningKey]) {
        let keys: Vec<Value> = keys.iter().map(|key| key.jwk()).collect();
        self.serve_jwks(json!({ "keys": keys }));
    }

    pub fn serve_jwks(&self, jwks: Value) {
        *self.state.serving.lock().expect("issuer state") = Serving::Keys(jwks);
    }

    pub fn go_down(&self, status: u16) {
        *self.state.serving.lock().expect("issuer state") = Serving::Down(status);
    }

    pub fn slow_jwks(&self, delay: Duration) {
        *self.state.jwks_delay.lock().expect("issuer state") = delay;
    }

    pub async fn hits(&self, route: &str) -> usize {
        self.server
            .received_requests()
            .await
            .expect("request recording is on")
            .iter()
            .filter(|request| request.url.path() == route)
            .count()
    }

    /// Key fetches the service attempted: each starts with discovery.
    pub async fn fetches(&self) -> usize {
        self.hits("/.well-known/openid-configuration").await
    }

    pub async fn jwks_hits(&self) -> usize {
        self.hits("/jwks").await
    }

    /// The `[[issuer]]` an operator would write for it (no `jwks_uri`:
    /// discovery), checked as the config file's are.
    pub fn config(&self, audience: &str, algorithms: &[&str]) -> Issuer {
        Issuer::from_file(IssuerFile {
            name: self.name.to_owned(),
            iss: self.iss(),
            jwks_uri: None,
            audience: audience.to_owned(),
            algorithms: Some(algorithms.iter().map(|alg| alg.to_string()).collect()),
            leeway: None,
            max_lifetime: Some("10m".to_owned()),
        })
        .expect("valid issuer config")
    }
}
