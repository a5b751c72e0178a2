//! The job lifecycle shared by every ingress: start (lock, reject, join or
//! queue), launch, status callbacks, exit, timeout, finish, reconciliation;
//! and the per-job tokens it hands out.

pub mod feed;
mod lifecycle;
pub mod tokens;

pub use feed::{FollowEvent, JobFeed};
pub use lifecycle::{
    Cancel, Lifecycle, LifecycleConfig, LifecycleError, StartRequest, Started, UpdateRefused,
};
pub use tokens::{TokenError, TokenKind, TokenSigner};
