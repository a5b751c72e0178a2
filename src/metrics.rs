//! Prometheus metrics: jobs by trigger and final status, webhook deliveries by
//! result, auth refusals by reason, report deliveries by target and result,
//! request latency.

use std::sync::Arc;

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::auth::webhook::SignatureError;
use crate::domain::{JobStatus, TriggerKind};

/// A label value from a fixed set: what a request can never make up.
macro_rules! label_value {
    ($($name:ty),*) => {$(
        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
                encoder.write_str(self.as_str())
            }
        }
    )*};
}

label_value!(
    TriggerKind,
    JobStatus,
    Refusal,
    DeliveryResult,
    ReportResult
);

/// Why an authentication was refused.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Refusal {
    SecretMissing,
    SecretInvalid,
    AdminDisabled,
    AdminTokenMissing,
    AdminTokenInvalid,
    CallbackTokenMissing,
    CallbackTokenInvalid,
    CallbackTokenExpired,
    CallbackTokenOtherJob,
    StatusTokenInvalid,
    ApiTokenMissing,
    ApiTokenInvalid,
    ApiReadOnly,
    WebhookSignatureMissing,
    WebhookSignatureMalformed,
    WebhookSignatureMismatch,
    WebhookTimestampStale,
    OidcPolicy,
    OidcJtiReplayed,
    /// A failed check of the token itself, named by `OidcError::check`.
    Oidc(&'static str),
}

impl Refusal {
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::SecretMissing => "secret_missing",
            Refusal::SecretInvalid => "secret_invalid",
            Refusal::AdminDisabled => "admin_disabled",
            Refusal::AdminTokenMissing => "admin_token_missing",
            Refusal::AdminTokenInvalid => "admin_token_invalid",
            Refusal::CallbackTokenMissing => "callback_token_missing",
            Refusal::CallbackTokenInvalid => "callback_token_invalid",
            Refusal::CallbackTokenExpired => "callback_token_expired",
            Refusal::CallbackTokenOtherJob => "callback_token_other_job",
            Refusal::StatusTokenInvalid => "status_token_invalid",
            Refusal::ApiTokenMissing => "api_token_missing",
            Refusal::ApiTokenInvalid => "api_token_invalid",
            Refusal::ApiReadOnly => "api_read_only",
            Refusal::WebhookSignatureMissing => "webhook_signature_missing",
            Refusal::WebhookSignatureMalformed => "webhook_signature_malformed",
            Refusal::WebhookSignatureMismatch => "webhook_signature_mismatch",
            Refusal::WebhookTimestampStale => "webhook_timestamp_stale",
            Refusal::OidcPolicy => "oidc_policy",
            Refusal::OidcJtiReplayed => "oidc_jti_replayed",
            Refusal::Oidc(check) => check,
        }
    }
}

impl From<SignatureError> for Refusal {
    fn from(error: SignatureError) -> Refusal {
        match error {
            SignatureError::Missing => Refusal::WebhookSignatureMissing,
            SignatureError::Malformed => Refusal::WebhookSignatureMalformed,
            SignatureError::Mismatch => Refusal::WebhookSignatureMismatch,
            SignatureError::Stale => Refusal::WebhookTimestampStale,
        }
    }
}

/// What became of a webhook delivery.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum DeliveryResult {
    Pong,
    Duplicate,
    Ignored,
    Accepted,
    TooLarge,
    BadRequest,
    Unauthorized,
}

impl DeliveryResult {
    pub fn as_str(&self) -> &'static str {
        match self {
            DeliveryResult::Pong => "pong",
            DeliveryResult::Duplicate => "duplicate",
            DeliveryResult::Ignored => "ignored",
            DeliveryResult::Accepted => "accepted",
            DeliveryResult::TooLarge => "too_large",
            DeliveryResult::BadRequest => "bad_request",
            DeliveryResult::Unauthorized => "unauthorized",
        }
    }
}

/// How one try to report a job to a target went.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ReportResult {
    Delivered,
    /// Failed; tried again later.
    Failed,
    /// Failed for good (24 h of failures, or the target is gone).
    GaveUp,
}

impl ReportResult {
    pub fn as_str(&self) -> &'static str {
        match self {
            ReportResult::Delivered => "delivered",
            ReportResult::Failed => "failed",
            ReportResult::GaveUp => "gave_up",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReportLabels {
    /// `github`, `gitlab` or `notify`.
    pub target: &'static str,
    pub result: ReportResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// Empty when the finished job could not be read back.
    pub trigger: Option<TriggerKind>,
    pub status: JobStatus,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    pub trigger: TriggerKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub provider: &'static str,
    pub result: DeliveryResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: Refusal,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// A known method or `other`.
    pub method: &'static str,
    /// A route of the router, or `unmatched`.
    pub route: String,
    pub status: u16,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0002, 2.0, 16))
}

/// Cheap to clone: every family is shared.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub jobs_started: Family<TriggerLabels, Counter>,
    pub jobs_finished: Family<JobLabels, Counter>,
    pub webhook_deliveries: Family<DeliveryLabels, Counter>,
    pub auth_refusals: Family<ReasonLabels, Counter>,
    pub report_deliveries: Family<ReportLabels, Counter>,
    pub request_duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("enac_cd");
        let jobs_started = Family::<TriggerLabels, Counter>::default();
        let jobs_finished = Family::<JobLabels, Counter>::default();
        let webhook_deliveries = Family::<DeliveryLabels, Counter>::default();
        let auth_refusals = Family::<ReasonLabels, Counter>::default();
        let report_deliveries = Family::<ReportLabels, Counter>::default();
        let request_duration =
            Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "jobs_started",
            "Jobs created, by trigger",
            jobs_started.clone(),
        );
        registry.register(
            "jobs_finished",
            "Jobs that reached a final status, by trigger and status",
            jobs_finished.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries, by provider and result",
            webhook_deliveries.clone(),
        );
        registry.register(
            "auth_refusals",
            "Refused authentications, by reason",
            auth_refusals.clone(),
        );
        registry.register(
            "report_deliveries",
            "Tries to report a job to GitHub, GitLab or a notify target, by target kind and result",
            report_deliveries.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            request_duration.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            jobs_started,
            jobs_finished,
            webhook_deliveries,
            auth_refusals,
            report_deliveries,
            request_duration,
        }
    }

    pub fn refuse(&self, reason: Refusal) {
        self.auth_refusals
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn delivery(&self, provider: &'static str, result: DeliveryResult) {
        self.webhook_deliveries
            .get_or_create(&DeliveryLabels { provider, result })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
