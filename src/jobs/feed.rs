//! Live output: followers of a job get its stored output, then every chunk
//! appended, status change and end. The store announces each saved change
//! once per instance (the Redis store through one subscription, the
//! embedded store in-process); here the announcements are handed to the
//! followers of each job, so a thousand followers cost no store read.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::Stream;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::domain::{Job, JobStatus};
use crate::store::{output_since, JobChange, JobSignal, Store};

/// Changes one job's followers may fall behind by before they read the job
/// again instead.
const FOLLOWER_BACKLOG: usize = 256;
/// The pause before reading a job again when the store failed to answer.
const REREAD_PAUSE: Duration = Duration::from_secs(1);

/// What a follower of a job's output is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FollowEvent {
    /// Output, ending at byte offset `end` of the job's output stream.
    Output { text: String, end: u64 },
    /// The job's status, first as it is, then at each change.
    Status(JobStatus),
    /// The job is final; nothing follows.
    End(JobStatus),
}

/// The followers of every job this instance serves.
pub struct JobFeed {
    store: Arc<dyn Store>,
    followed: Mutex<HashMap<String, broadcast::Sender<JobSignal>>>,
    /// Cancelled when the service stops: followers' streams close (without
    /// an `end`), so that they reconnect elsewhere instead of holding the drain.
    closing: CancellationToken,
}

impl JobFeed {
    /// Starts handing the store's announcements to the followers of each job.
    pub fn start(store: Arc<dyn Store>) -> Arc<JobFeed> {
        let mut signals = store.job_signals();
        let feed = Arc::new(JobFeed {
            store,
            followed: Mutex::new(HashMap::new()),
            closing: CancellationToken::new(),
        });
        let weak = Arc::downgrade(&feed);
        tokio::spawn(async move {
            loop {
                let signal = match signals.recv().await {
                    Ok(signal) => signal,
                    Err(RecvError::Lagged(_)) => JobSignal::Missed,
                    Err(RecvError::Closed) => return,
                };
                let Some(feed) = weak.upgrade() else { return };
                feed.dispatch(signal);
            }
        });
        feed
    }

    /// Closes every follower's stream (the service is stopping).
    pub fn close(&self) {
        self.closing.cancel();
    }

    fn followed(&self) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<JobSignal>>> {
        self.followed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn dispatch(&self, signal: JobSignal) {
        let senders: Vec<broadcast::Sender<JobSignal>> = {
            let followed = self.followed();
            match &signal {
                JobSignal::Changed(change) => {
                    followed.get(&change.job_id).cloned().into_iter().collect()
                }
                JobSignal::Missed => followed.values().cloned().collect(),
            }
        };
        for sender in senders {
            let _ = sender.send(signal.clone());
        }
    }

    fn subscribe(self: &Arc<Self>, job_id: &str) -> Subscription {
        let receiver = self
            .followed()
            .entry(job_id.to_owned())
            .or_insert_with(|| broadcast::channel(FOLLOWER_BACKLOG).0)
            .subscribe();
        Subscription {
            feed: Arc::clone(self),
            job_id: job_id.to_owned(),
            receiver: Some(receiver),
        }
    }

    /// Follows a job's output from byte offset `from` (0: all of it).
    /// `read` reads the job, or refuses the caller: it runs once the
    /// follower listens, so no change falls between the read and the
    /// first announcement.
    pub async fn follow<E>(
        self: &Arc<Self>,
        job_id: &str,
        from: u64,
        read: impl Future<Output = Result<Job, E>>,
    ) -> Result<Following, E> {
        let subscription = self.subscribe(job_id);
        let job = read.await?;
        let mut follower = Follower {
            store: Arc::clone(&self.store),
            closing: self.closing.clone(),
            subscription,
            sent: from,
            status: None,
            pending: VecDeque::new(),
            done: false,
        };
        follower.catch_up(&job);
        Ok(Box::pin(futures::stream::unfold(
            follower,
            |mut follower| async move {
                let event = follower.next().await?;
                Some((event, follower))
            },
        )))
    }
}

/// The events of one follower, until the job ends, is gone, or the service stops.
pub type Following = std::pin::Pin<Box<dyn Stream<Item = FollowEvent> + Send>>;

/// A follower's receiver of one job's changes; the last one to go takes the
/// job out of the followed jobs.
struct Subscription {
    feed: Arc<JobFeed>,
    job_id: String,
    receiver: Option<broadcast::Receiver<JobSignal>>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut followed = self.feed.followed();
        self.receiver.take();
        if followed
            .get(&self.job_id)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            followed.remove(&self.job_id);
        }
    }
}

struct Follower {
    store: Arc<dyn Store>,
    closing: CancellationToken,
    subscription: Subscription,
    /// The offset of the output sent so far.
    sent: u64,
    status: Option<JobStatus>,
    pending: VecDeque<FollowEvent>,
    done: bool,
}

/// Whether `next` comes after `current` (announcements from several
/// writers may arrive out of order; a final status is never left).
fn moves_on(current: Option<JobStatus>, next: JobStatus) -> bool {
    match current {
        None => true,
        Some(current) => !current.is_final() && next > current,
    }
}

impl Follower {
    async fn next(&mut self) -> Option<FollowEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            let receiver = self.subscription.receiver.as_mut()?;
            let heard = tokio::select! {
                heard = receiver.recv() => heard,
                _ = self.closing.cancelled() => return None,
            };
            match heard {
                Ok(JobSignal::Changed(change)) => {
                    if !self.hear(&change) {
                        self.read_again().await?;
                    }
                }
                Ok(JobSignal::Missed) | Err(RecvError::Lagged(_)) => self.read_again().await?,
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// Queues what the stored job holds beyond what was sent.
    fn catch_up(&mut self, job: &Job) {
        let since = output_since(job, self.sent);
        if !since.text.is_empty() {
            self.pending.push_back(FollowEvent::Output {
                text: since.text.to_owned(),
                end: since.end,
            });
        }
        self.sent = self.sent.max(since.end);
        self.status_is(job.status);
    }

    /// Queues what a change adds; false when it cannot be told from the
    /// change alone (some output before it was missed): the job is read.
    fn hear(&mut self, change: &JobChange) -> bool {
        if change.end > self.sent {
            let Some(start) = self.sent.checked_sub(change.start()) else {
                return false;
            };
            let from = usize::try_from(start).unwrap_or(usize::MAX);
            let Some(text) = change.added.get(from..) else {
                return false;
            };
            self.pending.push_back(FollowEvent::Output {
                text: text.to_owned(),
                end: change.end,
            });
            self.sent = change.end;
        }
        self.status_is(change.status);
        true
    }

    fn status_is(&mut self, status: JobStatus) {
        if !moves_on(self.status, status) {
            return;
        }
        self.status = Some(status);
        self.pending.push_back(FollowEvent::Status(status));
        if status.is_final() {
            self.pending.push_back(FollowEvent::End(status));
            self.done = true;
        }
    }

    /// Reads the job again after changes were missed; `None` when it is gone
    /// (expired) or the service is stopping.
    async fn read_again(&mut self) -> Option<()> {
        loop {
            match self.store.job(&self.subscription.job_id).await {
                Ok(Some(job)) => {
                    self.catch_up(&job);
                    return Some(());
                }
                Ok(None) => return None,
                Err(error) => {
                    tracing::warn!(%error, job_id = %self.subscription.job_id, "live output: cannot read the job; retrying");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(REREAD_PAUSE) => {}
                _ = self.closing.cancelled() => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_only_move_forward_and_a_final_one_stays() {
        assert!(moves_on(None, JobStatus::Queued));
        assert!(moves_on(Some(JobStatus::Queued), JobStatus::Starting));
        assert!(moves_on(Some(JobStatus::Starting), JobStatus::Error));
        assert!(!moves_on(Some(JobStatus::Running), JobStatus::Starting));
        assert!(!moves_on(Some(JobStatus::Running), JobStatus::Running));
        assert!(!moves_on(Some(JobStatus::Success), JobStatus::Error));
    }
}
