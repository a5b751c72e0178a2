//! Per-job tokens signed by the service (HS256): the callback token lets one
//! job's program report its status; the status token lets one caller read one
//! job. Neither is ever logged.

use std::time::Duration;

use crate::domain::unix_now;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Callback,
    Status,
}

impl TokenKind {
    fn audience(self) -> &'static str {
        match self {
            TokenKind::Callback => "enac-cd:callback",
            TokenKind::Status => "enac-cd:status",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Claims {
    /// The job id.
    sub: String,
    aud: String,
    iat: u64,
    exp: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token")]
    Invalid,
}

#[derive(Clone)]
pub struct TokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl TokenSigner {
    pub fn new(key: &[u8]) -> TokenSigner {
        TokenSigner {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
        }
    }

    /// A token of `kind` for `job_id`, valid for `lifetime`.
    pub fn issue(&self, kind: TokenKind, job_id: &str, lifetime: Duration) -> String {
        let now = unix_now().max(0) as u64;
        let claims = Claims {
            sub: job_id.to_owned(),
            aud: kind.audience().to_owned(),
            iat: now,
            exp: now + lifetime.as_secs(),
        };
        // HS256 over a serializable struct cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_default()
    }

    /// The job id a valid token of `kind` was issued for.
    pub fn verify(&self, kind: TokenKind, token: &str) -> Result<String, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_audience(&[kind.audience()]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims.sub)
            .map_err(|error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_token_names_its_job() {
        let signer = TokenSigner::new(b"0123456789abcdef0123456789abcdef");
        let token = signer.issue(TokenKind::Callback, "01JOB", HOUR);
        assert_eq!(
            signer.verify(TokenKind::Callback, &token),
            Ok("01JOB".into())
        );
    }

    #[test]
    fn a_status_token_is_no_callback_token() {
        let signer = TokenSigner::new(b"0123456789abcdef0123456789abcdef");
        let token = signer.issue(TokenKind::Status, "01JOB", HOUR);
        assert_eq!(
            signer.verify(TokenKind::Callback, &token),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn another_key_or_a_changed_token_is_refused() {
        let signer = TokenSigner::new(b"0123456789abcdef0123456789abcdef");
        let other = TokenSigner::new(b"fedcba9876543210fedcba9876543210");
        let token = other.issue(TokenKind::Callback, "01JOB", HOUR);
        assert_eq!(
            signer.verify(TokenKind::Callback, &token),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            signer.verify(TokenKind::Callback, "not-a-token"),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn an_expired_token_is_refused() {
        let signer = TokenSigner::new(b"0123456789abcdef0123456789abcdef");
        let claims = Claims {
            sub: "01JOB".into(),
            aud: TokenKind::Callback.audience().into(),
            iat: unix_now() as u64 - 100,
            exp: unix_now() as u64 - 10,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &signer.encoding)
            .expect("encode");
        assert_eq!(
            signer.verify(TokenKind::Callback, &token),
            Err(TokenError::Expired)
        );
    }
}
