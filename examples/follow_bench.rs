//! Load test of a job's live output (issue 13), run by hand through
//! `scripts/bench-follow.sh`: `--followers` clients follow one running job on
//! `GET /api/v1/jobs/{job}/output`, then `--chunks` numbered chunks are
//! appended through `POST /set-job-status/` (with a callback token minted
//! here from `--signing-key`), then a final `success`. For every chunk and
//! follower it measures the delay from just before the chunk's POST to the
//! moment that follower parsed it, and checks every follower got every chunk
//! and the `end` event.
//!
//! Followers speak raw HTTP/1.1 over a `TcpStream` (a thousand of them need
//! no client pool), decode the chunked body and parse the event stream as
//! they read it. Tokens come from the environment (`FOLLOW_BENCH_TOKEN`,
//! `FOLLOW_BENCH_SIGNING_KEY`) so that they stay out of the process list.
//!
//!   cargo run --release --example follow_bench -- --url http://127.0.0.1:8000 \
//!       --job 01J… --followers 1000 --chunks 50 --interval-ms 100

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use enac_cd::jobs::{TokenKind, TokenSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long every follower has to connect and receive the job's first events.
const CONNECT_WAIT: Duration = Duration::from_secs(60);
/// How long after the final report every follower has to receive `end`.
const END_WAIT: Duration = Duration::from_secs(30);
/// Lifetime of the callback token minted here.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Parser)]
#[command(about = "Followers of one job's live output, and how fast appended chunks reach them")]
struct Args {
    /// Base URL of the service the chunks are posted to (`http://host:port`).
    #[arg(long)]
    url: String,
    /// Base URL the followers connect to (another replica); default `--url`.
    #[arg(long)]
    follow_url: Option<String>,
    /// Admin or viewer token the followers read with.
    #[arg(long, env = "FOLLOW_BENCH_TOKEN", hide_env_values = true)]
    token: String,
    /// The running job to follow and append to.
    #[arg(long)]
    job: String,
    /// The service's `CD_SIGNING_KEY`, to mint the job's callback token.
    #[arg(long, env = "FOLLOW_BENCH_SIGNING_KEY", hide_env_values = true)]
    signing_key: String,
    #[arg(long, default_value_t = 1000)]
    followers: usize,
    #[arg(long, default_value_t = 50)]
    chunks: usize,
    /// Pause between two chunks.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// Size of each chunk (one line, its sequence number first).
    #[arg(long, default_value_t = 120)]
    chunk_bytes: usize,
    /// Output appended before the followers connect, which each of them
    /// then receives first (the default `CD_MAX_OUTPUT` is 1 MiB).
    #[arg(long, default_value_t = 0)]
    prefill_bytes: usize,
}

/// `host:port` of an `http://` base URL.
fn authority(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("{url}: only http:// URLs are supported"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        bail!("{url}: no host");
    }
    Ok(authority.to_owned())
}

/// One event of a `text/event-stream`.
#[derive(Debug, Default)]
struct SseEvent {
    kind: String,
    data: String,
    id: Option<String>,
}

/// Parses an event stream as its bytes arrive (the WHATWG rules this
/// service needs: `event`, `data`, `id`, comments; lines end with `\n`).
#[derive(Default)]
struct SseParser {
    pending: Vec<u8>,
    current: SseEvent,
    has_data: bool,
    comments: usize,
}

impl SseParser {
    /// Feeds bytes of the body; returns the events they complete.
    fn feed(&mut self, bytes: &[u8]) -> anyhow::Result<Vec<SseEvent>> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(length) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + length;
            let raw = self.pending[start..end]
                .strip_suffix(b"\r")
                .unwrap_or(&self.pending[start..end]);
            let line = std::str::from_utf8(raw)
                .context("event stream is not UTF-8")?
                .to_owned();
            start = end + 1;
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
        }
        self.pending.drain(..start);
        Ok(events)
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.current);
            let had_data = std::mem::take(&mut self.has_data);
            return had_data.then_some(event);
        }
        if line.starts_with(':') {
            self.comments += 1;
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.current.kind = value.to_owned(),
            "id" => self.current.id = Some(value.to_owned()),
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
}

/// Decodes a `Transfer-Encoding: chunked` body as its bytes arrive.
#[derive(Default)]
struct ChunkedBody {
    raw: Vec<u8>,
    /// Bytes of the current chunk still to come; `None` between chunks.
    left: Option<usize>,
    done: bool,
}

impl ChunkedBody {
    /// Feeds bytes off the socket; returns the body bytes they complete.
    fn feed(&mut self, bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.raw.extend_from_slice(bytes);
        let mut body = Vec::new();
        let mut at = 0;
        while !self.done {
            match self.left {
                None => {
                    let Some(length) = self.raw[at..].windows(2).position(|w| w == b"\r\n") else {
                        break;
                    };
                    let line = std::str::from_utf8(&self.raw[at..at + length])?;
                    let size = line.split(';').next().unwrap_or_default().trim();
                    let size = usize::from_str_radix(size, 16)
                        .with_context(|| format!("bad chunk size line {line:?}"))?;
                    at += length + 2;
                    if size == 0 {
                        self.done = true;
                    } else {
                        self.left = Some(size);
                    }
                }
                Some(0) => {
                    if self.raw.len() - at < 2 {
                        break;
                    }
                    if &self.raw[at..at + 2] != b"\r\n" {
                        bail!("a chunk does not end with CRLF");
                    }
                    at += 2;
                    self.left = None;
                }
                Some(left) => {
                    let taken = left.min(self.raw.len() - at);
                    if taken == 0 {
                        break;
                    }
                    body.extend_from_slice(&self.raw[at..at + taken]);
                    at += taken;
                    self.left = Some(left - taken);
                }
            }
        }
        self.raw.drain(..at);
        Ok(body)
    }
}

/// What one follower saw.
struct FollowerLog {
    /// When each chunk (by sequence number) was parsed.
    received: Vec<Option<Instant>>,
    /// Chunks received more than once.
    repeated: usize,
    /// Output events whose `id` did not move forward.
    offset_errors: usize,
    /// The `end` event's status, and when it was parsed.
    end: Option<(String, Instant)>,
    comments: usize,
    error: Option<String>,
}

impl FollowerLog {
    fn new(chunks: usize) -> FollowerLog {
        FollowerLog {
            received: vec![None; chunks],
            repeated: 0,
            offset_errors: 0,
            end: None,
            comments: 0,
            error: None,
        }
    }
}

/// Chunk `seq`: one line of `bytes` bytes, `chunk <seq> …`.
fn chunk_text(seq: usize, bytes: usize) -> String {
    let mut text = format!("chunk {seq:06} TASK [deploy : step {seq}] ");
    while text.len() + 1 < bytes {
        text.push('*');
    }
    text.push('\n');
    text
}

/// Lines of filler (none of them a chunk's) adding up to `bytes`.
fn prefill_text(bytes: usize) -> String {
    let mut text = String::with_capacity(bytes);
    let mut line = 0;
    while text.len() < bytes {
        let mut next = format!("prefill {line:06} ok: [host-{line}] ");
        while next.len() + 1 < 120 {
            next.push('-');
        }
        next.truncate(bytes - text.len() - 1);
        next.push('\n');
        text.push_str(&next);
        line += 1;
    }
    text
}

fn chunk_seq(line: &str) -> Option<usize> {
    line.strip_prefix("chunk ")?.get(..6)?.parse().ok()
}

/// What a follower needs to connect.
#[derive(Clone)]
struct Target {
    authority: String,
    path: String,
    token: String,
    chunks: usize,
}

/// Opens the stream and checks the answer's head; returns the socket and
/// the body bytes already read past the head.
async fn open_stream(target: &Target) -> anyhow::Result<(TcpStream, ChunkedBody, Vec<u8>)> {
    let mut stream = TcpStream::connect(&target.authority)
        .await
        .with_context(|| format!("connect {}", target.authority))?;
    stream.set_nodelay(true)?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\n\r\n",
        target.path, target.authority, target.token
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            bail!("connection closed before the answer's head");
        }
        head.extend_from_slice(&buffer[..read]);
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if head.len() > 64 * 1024 {
            bail!("answer head over 64 KiB");
        }
    };
    let text = String::from_utf8_lossy(&head[..head_end]).to_ascii_lowercase();
    let status = text.lines().next().unwrap_or_default().to_owned();
    if !status.starts_with("http/1.1 200") {
        let body = String::from_utf8_lossy(&head[head_end..]);
        bail!("answer {status:?}: {body}");
    }
    if !text.contains("content-type: text/event-stream") {
        bail!("answer is not text/event-stream");
    }
    if !text.contains("transfer-encoding: chunked") {
        bail!("answer is not chunked (this client reads only chunked streams)");
    }
    let mut body = ChunkedBody::default();
    let first = body.feed(&head[head_end..])?;
    Ok((stream, body, first))
}

/// Follows the job until `end`, the stream closes, or `stop`; tells `ready`
/// once the job's first status arrived (or why it could not).
async fn follow(
    target: Target,
    ready: mpsc::UnboundedSender<Result<(), String>>,
    stop: CancellationToken,
) -> FollowerLog {
    let mut log = FollowerLog::new(target.chunks);
    let mut ready = Some(ready);
    if let Err(error) = read_events(&target, &mut log, &stop, &mut ready).await {
        log.error = Some(format!("{error:#}"));
    }
    if let Some(ready) = ready {
        let why = log
            .error
            .clone()
            .unwrap_or_else(|| "no status event".into());
        let _ = ready.send(Err(why));
    }
    log
}

async fn read_events(
    target: &Target,
    log: &mut FollowerLog,
    stop: &CancellationToken,
    ready: &mut Option<mpsc::UnboundedSender<Result<(), String>>>,
) -> anyhow::Result<()> {
    let (mut stream, mut body, first) = tokio::select! {
        opened = open_stream(target) => opened?,
        _ = stop.cancelled() => bail!("stopped before the stream opened"),
    };
    let mut parser = SseParser::default();
    let mut last_offset: Option<u64> = None;
    let mut pending = first;
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let events = parser.feed(&pending)?;
        let now = Instant::now();
        log.comments = parser.comments;
        for event in events {
            match event.kind.as_str() {
                "output" => {
                    let offset = event.id.as_deref().and_then(|id| id.parse::<u64>().ok());
                    if offset.is_none() || offset <= last_offset {
                        log.offset_errors += 1;
                    }
                    last_offset = offset.max(last_offset);
                    for seq in event.data.lines().filter_map(chunk_seq) {
                        match log.received.get_mut(seq) {
                            Some(slot @ None) => *slot = Some(now),
                            Some(Some(_)) => log.repeated += 1,
                            None => {}
                        }
                    }
                }
                "status" => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Ok(()));
                    }
                }
                "end" => {
                    log.end = Some((event.data, now));
                    return Ok(());
                }
                other => bail!("unexpected event {other:?}"),
            }
        }
        if body.done {
            bail!("the stream ended without an end event");
        }
        let read = tokio::select! {
            read = stream.read(&mut buffer) => read?,
            _ = stop.cancelled() => bail!("stopped while waiting for events"),
        };
        if read == 0 {
            bail!("the connection closed without an end event");
        }
        pending = body.feed(&buffer[..read])?;
    }
}

/// The job's program, as far as the service can tell: callback reports
/// with the job's callback token.
struct Reporter {
    client: reqwest::Client,
    url: String,
    token: String,
    job: String,
}

impl Reporter {
    /// Appends `output` with `status`; returns how long the answer took.
    async fn append(&self, status: &str, output: &str) -> anyhow::Result<Duration> {
        let sent = Instant::now();
        let answer = self
            .client
            .post(format!("{}/set-job-status/", self.url))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({
                "job_id": self.job, "status": status, "output": output, "append": true,
            }))
            .send()
            .await
            .context("POST /set-job-status/")?;
        let code = answer.status();
        let body = answer.text().await.unwrap_or_default();
        if !code.is_success() || !body.contains("\"saved\"") {
            bail!("POST /set-job-status/ ({status}) answered {code}: {body}");
        }
        Ok(sent.elapsed())
    }
}

/// The nearest-rank percentile of sorted delays, in milliseconds.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

/// Starts the followers; returns once every one has the job's first
/// events, or fails naming why some have not.
async fn connect_followers(
    args: &Args,
    target: &Target,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<JoinHandle<FollowerLog>>> {
    let started = Instant::now();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let followers: Vec<_> = (0..args.followers)
        .map(|_| tokio::spawn(follow(target.clone(), ready_tx.clone(), stop.clone())))
        .collect();
    drop(ready_tx);
    let mut connected = 0;
    let mut refused = Vec::new();
    let deadline = tokio::time::Instant::now() + CONNECT_WAIT;
    while connected + refused.len() < args.followers {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some(Ok(()))) => connected += 1,
            Ok(Some(Err(why))) => refused.push(why),
            Ok(None) | Err(_) => break,
        }
    }
    println!(
        "followers connected: {connected}/{} in {:.2} s",
        args.followers,
        started.elapsed().as_secs_f64()
    );
    if connected < args.followers {
        let waiting = args.followers - connected - refused.len();
        if let Some(why) = refused.first() {
            eprintln!("first refusal of {}: {why}", refused.len());
        }
        bail!(
            "{} followers failed and {waiting} got no first event within {} s",
            refused.len(),
            CONNECT_WAIT.as_secs()
        );
    }
    Ok(followers)
}

/// When each chunk and the final report were posted, and how long each
/// chunk's POST took.
struct Posted {
    sent_at: Vec<Instant>,
    final_sent: Instant,
    post_times: Vec<Duration>,
}

/// Appends the numbered chunks every `--interval-ms`, then ends the job.
async fn post_chunks(args: &Args, reporter: &Reporter) -> anyhow::Result<Posted> {
    let mut sent_at = Vec::with_capacity(args.chunks);
    let mut post_times = Vec::with_capacity(args.chunks);
    let mut ticks = tokio::time::interval(Duration::from_millis(args.interval_ms.max(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for seq in 0..args.chunks {
        ticks.tick().await;
        let text = chunk_text(seq, args.chunk_bytes);
        sent_at.push(Instant::now());
        let took = reporter
            .append("running", &text)
            .await
            .with_context(|| format!("posting chunk {seq}"))?;
        post_times.push(took);
    }
    ticks.tick().await;
    let final_sent = Instant::now();
    reporter
        .append("success", "done\n")
        .await
        .context("posting the final success")?;
    Ok(Posted {
        sent_at,
        final_sent,
        post_times,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.followers == 0 || args.chunks == 0 {
        bail!("--followers and --chunks must be at least 1");
    }
    let post_url = args.url.trim_end_matches('/').to_owned();
    authority(&post_url)?;
    let follow_url = args.follow_url.as_deref().unwrap_or(&post_url);
    let target = Target {
        authority: authority(follow_url)?,
        path: format!("/api/v1/jobs/{}/output", args.job),
        token: args.token.clone(),
        chunks: args.chunks,
    };
    let reporter = Reporter {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        token: TokenSigner::new(args.signing_key.as_bytes()).issue(
            TokenKind::Callback,
            &args.job,
            TOKEN_LIFETIME,
        ),
        url: post_url.clone(),
        job: args.job.clone(),
    };
    if args.prefill_bytes > 0 {
        let text = prefill_text(args.prefill_bytes);
        reporter
            .append("running", &text)
            .await
            .context("appending the prefill")?;
        println!("prefilled: {} bytes of output", text.len());
    }

    println!("followers on {follow_url}, chunks posted to {post_url}");
    let stop = CancellationToken::new();
    // Dropping the guard (any early return) stops every follower.
    let _stop_on_return = stop.clone().drop_guard();
    let followers = connect_followers(&args, &target, &stop).await?;
    // A marker line for scripts sampling the service while all follow.
    println!("ALL_FOLLOWING");
    let posted = post_chunks(&args, &reporter).await?;

    let watchdog = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(END_WAIT).await;
            stop.cancel();
        })
    };
    let mut logs = Vec::with_capacity(args.followers);
    for follower in followers {
        logs.push(follower.await.context("a follower task panicked")?);
    }
    watchdog.abort();
    summarize(&args, &logs, posted)
}

/// Prints the figures; an error when any delivery or `end` is missing.
fn summarize(args: &Args, logs: &[FollowerLog], posted: Posted) -> anyhow::Result<()> {
    let Posted {
        sent_at,
        final_sent,
        mut post_times,
    } = posted;
    let mut delays = Vec::with_capacity(logs.len() * sent_at.len());
    let mut end_delays = Vec::with_capacity(logs.len());
    let (mut ended, mut repeated, mut offset_errors, mut comments) = (0, 0, 0, 0);
    for log in logs {
        for (received, sent) in log.received.iter().zip(&sent_at) {
            if let Some(received) = received {
                delays.push(received.saturating_duration_since(*sent));
            }
        }
        if let Some((status, at)) = &log.end {
            if status == "success" {
                ended += 1;
            }
            end_delays.push(at.saturating_duration_since(final_sent));
        }
        repeated += log.repeated;
        offset_errors += log.offset_errors;
        comments += log.comments;
    }
    delays.sort_unstable();
    end_delays.sort_unstable();
    post_times.sort_unstable();
    let expected = logs.len() * sent_at.len();
    let missing = expected - delays.len();
    println!(
        "chunks: {} of {} bytes every {} ms",
        sent_at.len(),
        args.chunk_bytes,
        args.interval_ms
    );
    println!(
        "deliveries: {}/{expected} ({missing} missing, {repeated} repeated)",
        delays.len()
    );
    println!(
        "delay ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        percentile(&delays, 50.0),
        percentile(&delays, 90.0),
        percentile(&delays, 99.0),
        percentile(&delays, 100.0)
    );
    println!(
        "end events: {ended}/{} success; end delay ms p99 {:.2} max {:.2}",
        logs.len(),
        percentile(&end_delays, 99.0),
        percentile(&end_delays, 100.0)
    );
    println!(
        "POST /set-job-status/ ms: p50 {:.2}  p99 {:.2}  max {:.2}",
        percentile(&post_times, 50.0),
        percentile(&post_times, 99.0),
        percentile(&post_times, 100.0)
    );
    println!("offset errors: {offset_errors}; keep-alive comments: {comments}");
    println!(
        "RESULT followers={} chunks={} delivered={} expected={expected} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2} ended={ended}",
        logs.len(),
        sent_at.len(),
        delays.len(),
        percentile(&delays, 50.0),
        percentile(&delays, 90.0),
        percentile(&delays, 99.0),
        percentile(&delays, 100.0)
    );
    let errors: Vec<&str> = logs.iter().filter_map(|log| log.error.as_deref()).collect();
    if let Some(first) = errors.first() {
        eprintln!("{} followers failed; the first: {first}", errors.len());
    }
    if missing > 0 || ended < logs.len() || offset_errors > 0 {
        bail!("{missing} deliveries missing, {} followers without a success end, {offset_errors} offset errors", logs.len() - ended);
    }
    Ok(())
}
