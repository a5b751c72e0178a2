//! Deployment secrets are kept only as SHA-256 digests and compared in
//! constant time, so neither the store nor a timing probe reveals them.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The SHA-256 digest of a deployment secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretDigest([u8; 32]);

impl SecretDigest {
    pub fn of(secret: &str) -> SecretDigest {
        SecretDigest(Sha256::digest(secret.as_bytes()).into())
    }

    pub fn from_hex(text: &str) -> Option<SecretDigest> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(SecretDigest(bytes))
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// Hashes `secret` and compares digests in constant time.
    pub fn matches(&self, secret: &str) -> bool {
        SecretDigest::of(secret).0.ct_eq(&self.0).into()
    }
}

impl std::fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretDigest(..)")
    }
}

/// Constant-time comparison of a presented bearer token with the expected
/// one; hashing first makes the time independent of both lengths.
pub fn bearer_matches(presented: &str, expected: &str) -> bool {
    SecretDigest::of(expected).matches(presented)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_only_its_secret() {
        let digest = SecretDigest::of("a-long-enough-secret");
        assert!(digest.matches("a-long-enough-secret"));
        assert!(!digest.matches("a-long-enough-secreT"));
        assert!(!digest.matches(""));
    }

    #[test]
    fn digest_round_trips_through_hex_without_the_secret() {
        let digest = SecretDigest::of("a-long-enough-secret");
        let hex = digest.to_hex();
        assert!(!hex.contains("secret"));
        assert_eq!(SecretDigest::from_hex(&hex), Some(digest));
        assert_eq!(SecretDigest::from_hex("zz"), None);
        assert_eq!(format!("{digest:?}"), "SecretDigest(..)");
    }

    #[test]
    fn bearer_comparison() {
        assert!(bearer_matches(
            "admin-token-0123456789",
            "admin-token-0123456789"
        ));
        assert!(!bearer_matches("admin-token", "admin-token-0123456789"));
    }
}
