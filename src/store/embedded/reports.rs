//! The report outbox of the embedded store: one entry per job with reports
//! due, written in the transaction that raises the job's event.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{encode, read_job, unavailable, write, Fault, JobTables, SUMMARIES};
use crate::domain::{Job, JobStatus, Report};
use crate::store::StoreError;

const OUTBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox");

#[derive(Serialize, Deserialize)]
struct OutboxEntry {
    /// Unix ms from which the job's reports are due.
    due: i64,
    /// Who holds the claim, until when.
    #[serde(default)]
    claimant: Option<String>,
    #[serde(default)]
    lease_until: i64,
}

/// Made when the store is opened, so that reads find it.
pub(super) fn create_table(txn: &WriteTransaction) -> Result<(), Fault> {
    txn.open_table(OUTBOX).map_err(unavailable)?;
    Ok(())
}

fn parse(raw: &[u8]) -> Result<OutboxEntry, Fault> {
    serde_json::from_slice(raw).map_err(|_| Fault::Store(StoreError::Corrupt("outbox".into())))
}

/// The job's reports are due at `now` at the latest (an earlier due time and
/// a claim are kept): called in the step that raises an event.
pub(super) fn raise(txn: &WriteTransaction, job_id: &str, now: i64) -> Result<(), Fault> {
    let mut outbox = txn.open_table(OUTBOX).map_err(unavailable)?;
    let entry = match outbox.get(job_id).map_err(unavailable)? {
        Some(raw) => {
            let mut entry = parse(raw.value())?;
            entry.due = entry.due.min(now);
            entry
        }
        None => OutboxEntry {
            due: now,
            claimant: None,
            lease_until: 0,
        },
    };
    outbox
        .insert(job_id, encode(&entry)?.as_slice())
        .map_err(unavailable)?;
    Ok(())
}

/// See [`crate::store::Store::claim_reports`].
pub(super) fn claim(
    db: &Database,
    claimant: &str,
    lease_ms: i64,
    max: usize,
    now: i64,
) -> Result<Vec<Job>, Fault> {
    // Looked at every half second: a read, and a write only when due.
    let due = {
        let txn = db.begin_read().map_err(unavailable)?;
        due_ids(&txn.open_table(OUTBOX).map_err(unavailable)?, claimant, now)?
    };
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let mut claimed = Vec::new();
    write(db, |txn| {
        let mut outbox = txn.open_table(OUTBOX).map_err(unavailable)?;
        // Summaries: the jobs without their output, which reports never need.
        let jobs = txn.open_table(SUMMARIES).map_err(unavailable)?;
        // Read again in the write: the same, but now under its lock.
        for id in due_ids(&outbox, claimant, now)? {
            if claimed.len() >= max {
                break;
            }
            let Some(stored) = read_job(&jobs, &id, now)? else {
                outbox.remove(id.as_str()).map_err(unavailable)?;
                continue;
            };
            // Still due: only the lease keeps other claimants off, and the
            // same claimant (restarted) finds it again.
            let entry = OutboxEntry {
                due: now,
                claimant: Some(claimant.to_owned()),
                lease_until: now.saturating_add(lease_ms),
            };
            outbox
                .insert(id.as_str(), encode(&entry)?.as_slice())
                .map_err(unavailable)?;
            claimed.push(stored.job);
        }
        Ok(())
    })?;
    Ok(claimed)
}

/// The outbox entries due at `now` that `claimant` may claim, oldest first.
fn due_ids(
    outbox: &impl ReadableTable<&'static str, &'static [u8]>,
    claimant: &str,
    now: i64,
) -> Result<Vec<String>, Fault> {
    let mut due = Vec::new();
    for item in outbox.iter().map_err(unavailable)? {
        let (id, raw) = item.map_err(unavailable)?;
        let entry = parse(raw.value())?;
        let free = entry.lease_until <= now || entry.claimant.as_deref() == Some(claimant);
        if entry.due <= now && free {
            due.push((entry.due, id.value().to_owned()));
        }
    }
    due.sort();
    Ok(due.into_iter().map(|(_, id)| id).collect())
}

/// See [`crate::store::Store::finish_reports`].
pub(super) fn finish(
    db: &Database,
    job_id: &str,
    claimant: &str,
    seen: JobStatus,
    reports: &[Report],
    next_due: Option<i64>,
    now: i64,
) -> Result<bool, Fault> {
    let mut kept = false;
    write(db, |txn| {
        let mut outbox = txn.open_table(OUTBOX).map_err(unavailable)?;
        let holder = match outbox.get(job_id).map_err(unavailable)? {
            Some(raw) => parse(raw.value())?.claimant,
            None => None,
        };
        if holder.as_deref() != Some(claimant) {
            return Ok(());
        }
        kept = true;
        let mut tables = JobTables::open(txn)?;
        let Some(mut stored) = read_job(&tables.jobs, job_id, now)? else {
            outbox.remove(job_id).map_err(unavailable)?;
            return Ok(());
        };
        stored.job.reports = reports.to_vec();
        tables.save(&mut stored)?;
        let due = if stored.job.status != seen {
            Some(now)
        } else {
            next_due
        };
        match due {
            Some(due) => {
                let entry = OutboxEntry {
                    due,
                    claimant: None,
                    lease_until: 0,
                };
                outbox
                    .insert(job_id, encode(&entry)?.as_slice())
                    .map_err(unavailable)?;
            }
            None => {
                outbox.remove(job_id).map_err(unavailable)?;
            }
        }
        Ok(())
    })?;
    Ok(kept)
}
