//! Who is asking: deployment secrets and bearer tokens compared in constant time.

pub mod oidc;
pub mod secret;
pub mod webhook;

pub use secret::{bearer_matches, SecretDigest};
