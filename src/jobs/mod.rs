//! The job lifecycle shared by every ingress: start (lock, reject, join or
//! queue), launch, status callbacks, exit, timeout, finish, reconciliation.

mod job;
mod lifecycle;
mod status;
pub mod tokens;

pub use job::{now_ms, unix_now, Job, NewJob, Trigger, TriggerKind};
pub use lifecycle::{
    Lifecycle, LifecycleConfig, LifecycleError, StartRequest, Started, UpdateRefused,
};
pub use status::JobStatus;
pub use tokens::{TokenError, TokenKind, TokenSigner};
