//! The Redis store's one subscription per instance: the changes every
//! instance's scripts announce on the store's channel, handed to this
//! instance's readers of [`Store::job_signals`](super::Store::job_signals).

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast;

use super::redis::ConnectionSlot;
use super::{JobChange, JobSignal};
use crate::domain::JobStatus;

/// How long the channel may stay silent before the subscription is probed
/// (a message sent to it through the store's own connection), and how long
/// the probe may take to come back before the subscription is opened again:
/// a half-open connection delivers nothing and reports no error.
const PROBE_AFTER: Duration = Duration::from_secs(10);
/// The pause before subscribing again after a failure.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_secs(1);
/// What a probe publishes (not a change: ignored by every listener).
const PROBE: &str = "probe";

/// Listens on `channel` until the store is dropped, subscribing again after
/// any failure; each (re)subscription tells readers they may have missed
/// changes, so that they read their jobs again.
pub(super) fn listen(
    slot: Weak<ConnectionSlot>,
    channel: String,
    signals: broadcast::Sender<JobSignal>,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        loop {
            let Some(current) = slot.upgrade() else {
                return;
            };
            match subscribed(&current, &channel).await {
                Ok(pubsub) => {
                    drop(current);
                    let _ = signals.send(JobSignal::Missed);
                    relay(pubsub, &slot, &channel, &signals).await;
                    tracing::warn!("redis: the job-change subscription ended; subscribing again");
                }
                Err(error) => {
                    drop(current);
                    tracing::warn!(%error, "redis: cannot subscribe to job changes yet");
                }
            }
            tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
        }
    });
}

async fn subscribed(
    slot: &ConnectionSlot,
    channel: &str,
) -> redis::RedisResult<redis::aio::PubSub> {
    let client = slot.address.client().await?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// Hands on every change heard until the subscription fails or the store
/// is dropped.
async fn relay(
    pubsub: redis::aio::PubSub,
    slot: &Weak<ConnectionSlot>,
    channel: &str,
    signals: &broadcast::Sender<JobSignal>,
) {
    let mut messages = pubsub.into_on_message();
    let mut probing = false;
    loop {
        match tokio::time::timeout(PROBE_AFTER, messages.next()).await {
            Ok(Some(message)) => {
                probing = false;
                if let Some(change) = message
                    .get_payload::<Vec<u8>>()
                    .ok()
                    .and_then(|payload| parse_change(&payload))
                {
                    let _ = signals.send(JobSignal::Changed(change));
                }
            }
            Ok(None) => return,
            Err(_) if probing => return,
            Err(_) => {
                let Some(slot) = slot.upgrade() else { return };
                probing = true;
                let mut connection = slot.connection();
                let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(PROBE)
                    .query_async(&mut connection)
                    .await;
                if sent.is_err() {
                    return;
                }
            }
        }
        if slot.strong_count() == 0 {
            return;
        }
    }
}

/// A change as `common.lua`'s `announce` publishes it:
/// `[job id, status, output end, text added]`.
fn parse_change(payload: &[u8]) -> Option<JobChange> {
    let (job_id, status, end, added): (String, String, u64, String) =
        serde_json::from_slice(payload).ok()?;
    Some(JobChange {
        job_id,
        status: JobStatus::parse(&status)?,
        end,
        added: Arc::from(added),
    })
}
