//! Live output: followers of a job get its stored output, then every chunk
//! appended, status change and end. The store announces each saved change
//! once per instance (the Redis store through one subscription, the
//! embedded store in-process); here the announcements are handed to the
//! followers of each job, so a thousand followers cost no store read. The
//! reads there are (a follower joining, or catching up after missed
//! changes) are shared by the followers of the job asking at once, and the
//! output read is sent in pieces, so that a crowd joining a job with a long
//! output holds one copy of it, not one each.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, Stream};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::domain::{Job, JobStatus};
use crate::store::{output_since, JobChange, JobSignal, Store, StoreError};

/// Changes one job's followers may fall behind by before they read the job
/// again instead.
const FOLLOWER_BACKLOG: usize = 256;
/// The pause before reading a job again when the store failed to answer.
const REREAD_PAUSE: Duration = Duration::from_secs(1);
/// How long a read of a job may serve followers joining later, if no
/// change of the job was announced meanwhile.
const READ_REUSE: Duration = Duration::from_secs(10);
/// The most output one event carries when stored output is sent (at least
/// the truncation marker). hyper asks a stream for more until a connection
/// holds 16 unwritten events: small pieces bound what a crowd of slow
/// readers joining a long output holds to about 32 KiB each.
const PIECE: usize = 2 * 1024;

/// A read of a job, shared by whoever asks for the job while it runs.
type SharedRead = Shared<BoxFuture<'static, Result<Option<Arc<Job>>, Arc<StoreError>>>>;

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
    /// The last read of each followed job, shared until a change of the job
    /// is announced (or [`READ_REUSE`] passed): every saved change of status
    /// or output is announced, so until then the read is the job as it is.
    reads: Mutex<HashMap<String, (Instant, SharedRead)>>,
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
            reads: Mutex::new(HashMap::new()),
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

    fn reads(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, SharedRead)>> {
        self.reads.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn dispatch(&self, signal: JobSignal) {
        // A read made before this change no longer serves anyone joining.
        match &signal {
            JobSignal::Changed(change) => {
                self.reads().remove(&change.job_id);
            }
            JobSignal::Missed => self.reads().clear(),
        }
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

    /// The job as the store holds it now. Followers asking for one job
    /// while no change of it was announced share one read, and one copy of
    /// its output; a failed read is not kept.
    async fn read(self: &Arc<Self>, job_id: &str) -> Result<Option<Arc<Job>>, Arc<StoreError>> {
        let read = {
            let mut reads = self.reads();
            match reads.get(job_id) {
                Some((at, read)) if at.elapsed() < READ_REUSE => read.clone(),
                _ => {
                    let (feed, id) = (Arc::clone(self), job_id.to_owned());
                    let read = async move {
                        let read = feed.store.job(&id).await;
                        if read.is_err() {
                            feed.reads().remove(&id);
                        }
                        read.map(|job| job.map(Arc::new)).map_err(Arc::new)
                    }
                    .boxed()
                    .shared();
                    reads.insert(job_id.to_owned(), (Instant::now(), read.clone()));
                    read
                }
            }
        };
        read.await
    }

    /// Starts following a job's output from byte offset `from` (0: all of
    /// it): listens first, then reads the job, so that no change falls
    /// between the read and the first announcement. `None` for no such job.
    pub async fn join(
        self: &Arc<Self>,
        job_id: &str,
        from: u64,
    ) -> Result<Option<Joined>, Arc<StoreError>> {
        let subscription = self.subscribe(job_id);
        let Some(job) = self.read(job_id).await? else {
            return Ok(None);
        };
        let mut follower = Follower {
            feed: Arc::clone(self),
            subscription,
            sent: from,
            status: None,
            backlog: None,
            pending: VecDeque::new(),
            done: false,
        };
        follower.catch_up(Arc::clone(&job));
        Ok(Some(Joined { job, follower }))
    }
}

/// A follower that joined: the job as it was read, to decide whether the
/// caller may follow it, then its events.
pub struct Joined {
    job: Arc<Job>,
    follower: Follower,
}

impl Joined {
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// The events, until the job ends, is gone, or the service stops.
    pub fn events(self) -> Following {
        Box::pin(futures::stream::unfold(
            self.follower,
            |mut follower| async move {
                let event = follower.next().await?;
                Some((event, follower))
            },
        ))
    }
}

/// The events of one follower.
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
            drop(followed);
            // Nobody follows the job: its kept read goes too.
            self.feed.reads().remove(&self.job_id);
        }
    }
}

struct Follower {
    feed: Arc<JobFeed>,
    subscription: Subscription,
    /// The offset of the output sent so far.
    sent: u64,
    status: Option<JobStatus>,
    /// A read job whose output past `sent` is still to be sent, piece by piece.
    backlog: Option<Arc<Job>>,
    /// What comes after the backlog.
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
            if let Some(piece) = self.next_piece() {
                return Some(piece);
            }
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            let receiver = self.subscription.receiver.as_mut()?;
            let heard = tokio::select! {
                heard = receiver.recv() => heard,
                _ = self.feed.closing.cancelled() => return None,
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

    /// Queues what the stored job holds beyond what was sent: its output
    /// (sent piece by piece), then its status.
    fn catch_up(&mut self, job: Arc<Job>) {
        self.status_is(job.status);
        self.backlog = Some(job);
    }

    /// The next piece of the backlog's output, at most [`PIECE`] bytes cut
    /// at a character, with the offset after it.
    fn next_piece(&mut self) -> Option<FollowEvent> {
        let job = self.backlog.as_ref()?;
        let since = output_since(job, self.sent);
        if since.text.is_empty() || since.end <= self.sent {
            self.backlog = None;
            return None;
        }
        let mut cut = since.text.len().min(PIECE);
        while !since.text.is_char_boundary(cut) {
            cut += 1;
        }
        let end = since.end - (since.text.len() - cut) as u64;
        let text = since.text[..cut].to_owned();
        self.sent = end;
        Some(FollowEvent::Output { text, end })
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
            match self.feed.read(&self.subscription.job_id).await {
                Ok(Some(job)) => {
                    self.catch_up(job);
                    return Some(());
                }
                Ok(None) => return None,
                Err(error) => {
                    tracing::warn!(%error, job_id = %self.subscription.job_id, "live output: cannot read the job; retrying");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(REREAD_PAUSE) => {}
                _ = self.feed.closing.cancelled() => return None,
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
