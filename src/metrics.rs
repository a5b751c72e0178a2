//! Prometheus metrics: jobs by trigger and final status, webhook deliveries by
//! result, auth refusals by reason, request latency.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub trigger: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    pub trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub provider: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
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
            request_duration,
        }
    }

    pub fn refuse(&self, reason: &str) {
        self.auth_refusals
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
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
