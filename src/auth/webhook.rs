//! Webhook signatures: GitHub's `X-Hub-Signature-256`, GitLab's Standard
//! Webhooks `webhook-signature` and its plain `X-Gitlab-Token`. Every
//! comparison is constant-time (the `hmac` crate's verify, `subtle`).

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::bearer_matches;

type HmacSha256 = Hmac<Sha256>;

/// How far a Standard Webhooks timestamp may be from now.
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 5 * 60;

/// Why a signed delivery was refused (the reason is shown to the sender).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.reason())]
pub enum SignatureError {
    Missing,
    Malformed,
    Mismatch,
    Stale,
}

impl SignatureError {
    pub fn reason(self) -> &'static str {
        match self {
            SignatureError::Missing => "missing signature",
            SignatureError::Malformed => "malformed signature",
            SignatureError::Mismatch => "signature does not match",
            SignatureError::Stale => "timestamp outside the 5-minute window",
        }
    }
}

/// Checks `sha256=<hex>` over the raw body; SHA-1 (`sha1=`) is refused.
pub fn verify_github(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_digest = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let expected = hex::decode(hex_digest).map_err(|_| SignatureError::Malformed)?;
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// Checks a Standard Webhooks delivery: `webhook-signature` is a
/// space-separated list of `v1,<base64>`, any of which may match
/// HMAC-SHA256(key, "{id}.{timestamp}.{body}"); the timestamp must be within
/// five minutes of `now` (Unix seconds).
pub fn verify_standard(
    key: &[u8],
    id: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    signatures: Option<&str>,
    now: i64,
) -> Result<(), SignatureError> {
    let (Some(id), Some(timestamp), Some(signatures)) = (id, timestamp, signatures) else {
        return Err(SignatureError::Missing);
    };
    let sent: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::Malformed)?;
    // Checked: a timestamp near i64::MIN must not wrap into the window.
    let skew = now.checked_sub(sent).map(i64::unsigned_abs);
    if skew.is_none_or(|skew| skew > TIMESTAMP_TOLERANCE_SECS.unsigned_abs()) {
        return Err(SignatureError::Stale);
    }
    let mac = standard_mac(key, id, timestamp.trim(), body).ok_or(SignatureError::Mismatch)?;
    let mut any_v1 = false;
    for signature in signatures.split_whitespace() {
        let Some(encoded) = signature.strip_prefix("v1,") else {
            continue;
        };
        any_v1 = true;
        let Ok(candidate) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            continue;
        };
        if mac.clone().verify_slice(&candidate).is_ok() {
            return Ok(());
        }
    }
    Err(if any_v1 {
        SignatureError::Mismatch
    } else {
        SignatureError::Malformed
    })
}

/// HMAC-SHA256(key, "{id}.{timestamp}.{body}"): what a Standard Webhooks
/// signature covers, on ingress and on the notifications sent. `None` for
/// a key HMAC cannot take (none: HMAC takes any length).
fn standard_mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(key).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// The `webhook-signature` of a Standard Webhooks message: `v1,<base64>`.
pub fn sign_standard(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> Option<String> {
    let digest = standard_mac(key, id, timestamp, body)?
        .finalize()
        .into_bytes();
    let encoded = base64::engine::general_purpose::STANDARD.encode(digest);
    Some(format!("v1,{encoded}"))
}

/// Checks `X-Gitlab-Token` in constant time.
pub fn verify_gitlab_token(expected: &str, header: Option<&str>) -> Result<(), SignatureError> {
    let presented = header.ok_or(SignatureError::Missing)?;
    if bearer_matches(presented, expected) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's published example: secret "It's a Secret to Everybody",
    /// payload "Hello, World!".
    #[test]
    fn github_published_test_vector() {
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            verify_github(
                b"It's a Secret to Everybody",
                b"Hello, World!",
                Some(header)
            ),
            Ok(())
        );
        assert_eq!(
            verify_github(
                b"It's a Secret to Everybody",
                b"Hello, World?",
                Some(header)
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn github_refuses_sha1_missing_and_garbage() {
        let secret = b"secret";
        assert_eq!(
            verify_github(secret, b"x", None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_github(
                secret,
                b"x",
                Some("sha1=0123456789abcdef0123456789abcdef01234567")
            ),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_github(secret, b"x", Some("sha256=zz")),
            Err(SignatureError::Malformed)
        );
    }

    /// A signer written apart from the service's, for the checks to agree with.
    fn reference_signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(key).expect("key");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        format!("v1,{signature}")
    }

    #[test]
    fn a_signature_made_here_is_one_the_ingress_accepts_for_its_key_only() {
        let signature = sign_standard(b"key", "msg_1", "1700000000", b"{}").expect("signed");
        let check = |key: &[u8], body: &[u8]| {
            verify_standard(
                key,
                Some("msg_1"),
                Some("1700000000"),
                body,
                Some(&signature),
                1_700_000_000,
            )
        };
        assert_eq!(check(b"key", b"{}"), Ok(()));
        assert_eq!(check(b"other key", b"{}"), Err(SignatureError::Mismatch));
        assert_eq!(check(b"key", b"{ }"), Err(SignatureError::Mismatch));
    }

    #[test]
    fn standard_webhooks_accept_any_matching_signature_in_the_window() {
        let key = b"a key of some length";
        let now = 1_700_000_000;
        let good = reference_signature(key, "msg_1", now, b"{}");
        let list = format!("v1,AAAA {good}");
        assert_eq!(
            verify_standard(
                key,
                Some("msg_1"),
                Some(&now.to_string()),
                b"{}",
                Some(&list),
                now
            ),
            Ok(())
        );
        assert_eq!(
            verify_standard(
                key,
                Some("msg_2"),
                Some(&now.to_string()),
                b"{}",
                Some(&good),
                now
            ),
            Err(SignatureError::Mismatch)
        );
        let old = now - TIMESTAMP_TOLERANCE_SECS - 1;
        let stale = reference_signature(key, "msg_1", old, b"{}");
        assert_eq!(
            verify_standard(
                key,
                Some("msg_1"),
                Some(&old.to_string()),
                b"{}",
                Some(&stale),
                now
            ),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_standard(key, None, Some(&now.to_string()), b"{}", Some(&good), now),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn standard_webhooks_timestamps_at_the_edges_of_i64_are_stale() {
        let key = b"a key of some length";
        let now = 1_700_000_000;
        for sent in [i64::MIN, i64::MIN + 1, -now, i64::MAX] {
            let signature = reference_signature(key, "msg_1", sent, b"{}");
            assert_eq!(
                verify_standard(
                    key,
                    Some("msg_1"),
                    Some(&sent.to_string()),
                    b"{}",
                    Some(&signature),
                    now
                ),
                Err(SignatureError::Stale),
                "sent={sent}"
            );
        }
    }

    #[test]
    fn gitlab_token_comparison() {
        assert_eq!(verify_gitlab_token("token-123", Some("token-123")), Ok(()));
        assert_eq!(
            verify_gitlab_token("token-123", Some("token-124")),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_gitlab_token("token-123", None),
            Err(SignatureError::Missing)
        );
    }
}
