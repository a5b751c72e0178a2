//! A job's output as a stream of bytes that followers read live: how a
//! change (append, or a callback that posts the whole output again) moves
//! the stream's offsets, what a follower at an offset is owed, and the
//! change every store announces once it is saved. (The Redis backend
//! applies changes in Lua, the same way: `common.lua`.)

use std::sync::Arc;

use super::OutputChange;
use crate::domain::{Job, JobStatus};

/// Truncation marker put in front of output whose oldest bytes were dropped.
pub const TRUNCATION_MARKER: &str = "[enac-cd: older output truncated]\n";

/// A saved change of a job, as every store announces it: its status and
/// the text its output stream grew by (empty for a status change alone),
/// which ends at offset `end`.
#[derive(Clone, Debug, PartialEq)]
pub struct JobChange {
    pub job_id: String,
    pub status: JobStatus,
    pub end: u64,
    pub added: Arc<str>,
}

impl JobChange {
    /// The offset `added` starts at.
    pub fn start(&self) -> u64 {
        self.end.saturating_sub(self.added.len() as u64)
    }
}

/// What a store's feed of changes carries.
#[derive(Clone, Debug, PartialEq)]
pub enum JobSignal {
    Changed(JobChange),
    /// Changes may have been missed (the feed was (re)connected): whoever
    /// follows a job reads it again.
    Missed,
}

/// An output change applied to a job's output, offsets and text added.
pub(crate) struct AppliedOutput {
    pub output: String,
    pub end: u64,
    pub base: u64,
    pub added: String,
}

/// `(end, base)` of the job's output; a job stored before offsets were
/// kept has its output start at 0.
fn offsets(job: &Job) -> (u64, u64) {
    let len = job.output.len() as u64;
    if job.output_end < len {
        (len, 0)
    } else {
        (job.output_end, job.output_base.min(job.output_end))
    }
}

/// The part of the stored output that is the stream's own bytes: without
/// the truncation marker when truncation put it there.
fn stored_body(job: &Job) -> &str {
    let (end, base) = offsets(job);
    if job.output.len() as u64 == end - base {
        &job.output
    } else {
        job.output
            .strip_prefix(TRUNCATION_MARKER)
            .unwrap_or(&job.output)
    }
}

/// Applies `change` to `job`'s output, keeping at most `max` bytes.
///
/// An append adds its text. A replace that repeats what the program posted
/// before and goes on (how the ansible container reports: the whole output
/// each time) adds only what is new; any other replace is a new start, and
/// followers receive all of it.
pub(crate) fn apply_output(job: &Job, change: &OutputChange, max: usize) -> AppliedOutput {
    let (end, base) = offsets(job);
    match change {
        OutputChange::Append(text) => AppliedOutput {
            output: capped(format!("{}{text}", job.output), max),
            end: end + text.len() as u64,
            base,
            added: text.clone(),
        },
        OutputChange::Replace(text) => {
            let posted = usize::try_from(end - base).unwrap_or(usize::MAX);
            let body = stored_body(job);
            let repeats = posted
                .checked_sub(body.len())
                .and_then(|from| text.as_bytes().get(from..posted))
                .is_some_and(|seen| seen == body.as_bytes());
            match text.get(posted..).filter(|_| repeats) {
                Some(new) => AppliedOutput {
                    output: capped(text.clone(), max),
                    end: base + text.len() as u64,
                    base,
                    added: new.to_owned(),
                },
                None => AppliedOutput {
                    output: capped(text.clone(), max),
                    end: end + text.len() as u64,
                    base: end,
                    added: text.clone(),
                },
            }
        }
    }
}

/// Keeps at most `max` bytes: the newest bytes win behind
/// [`TRUNCATION_MARKER`], cut at a character boundary.
fn capped(output: String, max: usize) -> String {
    if output.len() <= max {
        return output;
    }
    let mut start = output.len() - max.saturating_sub(TRUNCATION_MARKER.len());
    while !output.is_char_boundary(start) {
        start += 1;
    }
    format!("{TRUNCATION_MARKER}{}", &output[start..])
}

/// What a follower at some offset is owed of a stored job's output.
#[derive(Debug, PartialEq, Eq)]
pub struct OutputSince<'a> {
    /// The stream's bytes after the offset; the whole stored output (marker
    /// included) when the offset is older than what is kept.
    pub text: &'a str,
    /// The offset after `text`.
    pub end: u64,
}

/// The job's output after `offset` (an offset this service handed out: an
/// `id` of the live output).
pub fn output_since(job: &Job, offset: u64) -> OutputSince<'_> {
    let (end, _) = offsets(job);
    let body = stored_body(job);
    let body_start = end - body.len() as u64;
    if offset < body_start {
        return OutputSince {
            text: &job.output,
            end,
        };
    }
    let mut from = usize::try_from(offset - body_start)
        .unwrap_or(usize::MAX)
        .min(body.len());
    // An offset inside a character (not one this service gave) starts at the next.
    while !body.is_char_boundary(from) {
        from += 1;
    }
    OutputSince {
        text: &body[from..],
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{NewJob, Trigger, TriggerKind};

    fn job() -> Job {
        NewJob {
            id: "01J0000000000000000000000A".into(),
            deployment_id: "app".into(),
            inventory: "inv".into(),
            trigger: Trigger::of_kind(TriggerKind::Secret),
            created_at: 0,
            reports: Vec::new(),
        }
        .into_job(JobStatus::Running)
    }

    fn apply(job: &mut Job, change: OutputChange, max: usize) -> String {
        let applied = apply_output(job, &change, max);
        job.output = applied.output;
        job.output_end = applied.end;
        job.output_base = applied.base;
        applied.added
    }

    #[test]
    fn appends_grow_the_stream_and_a_follower_gets_what_it_missed() {
        let mut job = job();
        assert_eq!(
            apply(&mut job, OutputChange::Append("one\n".into()), 100),
            "one\n"
        );
        assert_eq!(
            apply(&mut job, OutputChange::Append("two\n".into()), 100),
            "two\n"
        );
        assert_eq!(job.output_end, 8);
        assert_eq!(output_since(&job, 0).text, "one\ntwo\n");
        assert_eq!(
            output_since(&job, 4),
            OutputSince {
                text: "two\n",
                end: 8
            }
        );
        assert_eq!(output_since(&job, 8).text, "");
    }

    #[test]
    fn a_replace_that_goes_on_adds_only_its_new_part() {
        let mut job = job();
        apply(&mut job, OutputChange::Replace("PLAY [all]\n".into()), 100);
        let added = apply(
            &mut job,
            OutputChange::Replace("PLAY [all]\nTASK [x]\n".into()),
            100,
        );
        assert_eq!(added, "TASK [x]\n");
        assert_eq!(job.output_end, 20);
        // Anything else starts over: followers receive it whole, further on.
        let added = apply(&mut job, OutputChange::Replace("other\n".into()), 100);
        assert_eq!(added, "other\n");
        assert_eq!((job.output_end, job.output_base), (26, 20));
        assert_eq!(output_since(&job, 20).text, "other\n");
        let added = apply(&mut job, OutputChange::Replace("other\nmore\n".into()), 100);
        assert_eq!(added, "more\n");
    }

    #[test]
    fn truncation_keeps_offsets_and_repeated_posts_still_add_only_the_new_part() {
        let mut job = job();
        let first = "a".repeat(150);
        apply(&mut job, OutputChange::Replace(first.clone()), 100);
        assert!(job.output.starts_with(TRUNCATION_MARKER));
        assert_eq!(job.output_end, 150);
        let added = apply(&mut job, OutputChange::Replace(format!("{first}bcd")), 100);
        assert_eq!(added, "bcd");
        assert_eq!(job.output_end, 153);
        // A follower far behind gets the marker and what is kept.
        assert_eq!(output_since(&job, 10).text, job.output);
        assert_eq!(output_since(&job, 151).text, "cd");
        apply(&mut job, OutputChange::Append("é".repeat(80)), 100);
        assert_eq!(job.output_end, 153 + 160);
        // An offset inside a character starts at the next one.
        assert_eq!(output_since(&job, 153 + 157).text, "é");
    }

    #[test]
    fn a_job_stored_before_offsets_starts_at_zero() {
        let mut job = job();
        job.output = "old\n".into();
        assert_eq!(
            output_since(&job, 0),
            OutputSince {
                text: "old\n",
                end: 4
            }
        );
        assert_eq!(
            apply(&mut job, OutputChange::Append("new\n".into()), 100),
            "new\n"
        );
        assert_eq!(job.output_end, 8);
    }
}
