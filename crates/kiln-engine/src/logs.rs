//! Function logs: capture of the bootstrap's output, the platform's lines, the on-disk store,
//! its bounds, and followers.
//!
//! Every environment has one log stream (`YYYY/MM/DD/[<version>]<env id>`), kept as a file
//! `<data>/logs/<function>/<stream with / [ ] as ->.log` in the format of [`crate::log_store`]:
//! one event per line, with its timestamp and ingestion time in milliseconds. Lines reach the file
//! through a single writer thread, so no invocation waits for a disk; the writer is the only one
//! that writes, closes or deletes files, and readers ([`LogSink::events`] and friends) read the
//! files directly, a chunk at a time. Followers (`kiln logs --follow`) subscribe to a broadcast of
//! the same lines.
//!
//! [`Capture`] owns the read end of the bootstrap's stdout/stderr pipe. A reader task moves what
//! arrives into the stream; at the end of an invocation the engine calls [`Capture::drain`] so
//! that everything the function wrote before it answered lands before the `END` line. Reading and
//! appending happen under one lock, which keeps the order of lines.
//!
//! Bounds, so that a function cannot fill kiln's memory or disk with output:
//! - each stream keeps at most [`LogOptions::stream_max_bytes`], each function at most
//!   [`LogOptions::function_max_bytes`] (its oldest closed streams go first); what does not fit is
//!   dropped after one marker line;
//! - the writer's queue is bounded in bytes: above [`QUEUE_SOFT_BYTES`] readers stop reading
//!   pipes (the function blocks in `write`, as on a slow terminal), above [`QUEUE_HARD_BYTES`] a
//!   line is dropped and a marker says how much;
//! - outside an invocation (after the answer) an environment may write [`IDLE_OUTPUT_BYTES`];
//!   then its pipe is not read until its next invocation;
//! - a line longer than [`MAX_EVENT_BYTES`] is split into events of that size, as CloudWatch
//!   Logs does with Lambda output;
//! - a stream's file is closed when its environment ends, so descriptors never pile up;
//! - retention (`--log-retention`, `PutRetentionPolicy`) deletes streams whose last event is
//!   older than the retention.

use crate::log_store::{self, Event, EventPage, EventQuery, StreamInfo};
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::unix::pipe;
use tokio::sync::{broadcast, mpsc, oneshot, Notify};

/// CloudWatch Logs' largest event: 256 KB including 26 bytes of overhead. A longer line is
/// split into events of this many bytes.
pub const MAX_EVENT_BYTES: usize = 256 * 1024 - 26;
/// Above this many bytes waiting for the writer, pipes are not read (the functions block).
pub const QUEUE_SOFT_BYTES: usize = 8 * 1024 * 1024;
/// Above this many bytes waiting for the writer, a function's line is dropped with a marker.
pub const QUEUE_HARD_BYTES: usize = 32 * 1024 * 1024;
/// What an environment may write outside an invocation before its pipe stops being read.
pub const IDLE_OUTPUT_BYTES: usize = 1024 * 1024;
/// At most this much is read from a pipe at the end of an invocation, so a function that keeps
/// writing cannot hold the invocation's end for ever.
const DRAIN_MAX_BYTES: usize = 1024 * 1024;
/// At most this much is read from a pipe per wake-up of the reader task, under the lock.
const READ_PER_WAKE_BYTES: usize = 256 * 1024;
/// Platform lines (START, END, REPORT) may go this far past the stream cap, so that a truncated
/// stream still shows how its invocations ended.
const PLATFORM_SLACK_BYTES: u64 = 1024 * 1024;
/// Open stream files kept by the writer at most; the least recently written is closed first.
const MAX_OPEN_FILES: usize = 256;
/// How often the writer applies retention.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// The bounds and retention of the log store.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Bytes one stream (one environment) keeps at most.
    pub stream_max_bytes: u64,
    /// Bytes all streams of one function keep at most; the oldest closed streams are deleted to
    /// make room.
    pub function_max_bytes: u64,
    /// Streams whose last event is older than this are deleted; `None` keeps everything (as
    /// CloudWatch's default). A log group's own retention policy wins.
    pub retention: Option<Duration>,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self { stream_max_bytes: 64 * 1024 * 1024, function_max_bytes: 512 * 1024 * 1024, retention: None }
    }
}

/// One line (or several) for a function's log, already terminated by `\n`.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub function: Arc<str>,
    pub stream: Arc<str>,
    /// When kiln read it, ms since the epoch.
    pub timestamp_ms: i64,
    pub text: Bytes,
    /// A platform line (START, END, REPORT, markers): never dropped for a full queue.
    pub platform: bool,
}

/// Where log lines go: the file writer and the live followers. Also the read side of the store.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::UnboundedSender<ToWriter>,
    live: broadcast::Sender<LogLine>,
    root: PathBuf,
    shared: Arc<Shared>,
}

/// What the writer and the senders share.
struct Shared {
    /// Bytes sent to the writer and not yet written.
    backlog: AtomicUsize,
    /// Woken after each batch the writer wrote.
    drained: Notify,
    /// Invocations whose END and REPORT are still to be sent (see [`LogSink::expect_end`]).
    ends: AtomicUsize,
    /// Woken when `ends` falls to zero.
    ended: Notify,
    opts: LogOptions,
}

/// An invocation's END and REPORT that are still to come: a [`LogSink::flush`] meanwhile waits
/// for them (briefly), so that a log read after a call's answer sees that call's REPORT.
pub struct EndToCome(Arc<Shared>);

impl Drop for EndToCome {
    fn drop(&mut self) {
        if self.0.ends.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.ended.notify_waiters();
        }
    }
}

/// How long a flush waits for ends to come (they take microseconds; a busy server with calls
/// always in flight would otherwise keep a log read waiting).
const END_WAIT: Duration = Duration::from_millis(50);

enum ToWriter {
    Line(LogLine),
    /// Answered once every line sent before it is in its file.
    Flush(oneshot::Sender<()>),
    /// The environment of this stream ended: its file is closed.
    Close(Arc<str>, Arc<str>),
    /// Deletes every stream of a function (its log group). `true`: the function is gone, so
    /// lines of its ending environments are dropped too; `false`: live environments go on
    /// logging into new files (DeleteLogGroup).
    Remove(Arc<str>, bool, oneshot::Sender<()>),
    /// Applies retention now.
    Sweep(Option<oneshot::Sender<()>>),
}

/// How long the writer lets lines gather before writing a batch. Senders never wake it while it
/// sleeps, so a busy server pays one wake-up and one `write` per file per interval, not per line.
const WRITE_INTERVAL: Duration = Duration::from_millis(10);

/// Bytes one read of a function's output pipe takes at most.
const READ_BUF_BYTES: usize = 16 * 1024;

thread_local! {
    /// The buffer [`Capture::read_available`] reads into, one per thread instead of one per read
    /// or per environment (a thousand idle environments would hold 16 MiB of them).
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub(crate) fn now_ms() -> i64 {
    crate::now_ms()
}

impl LogSink {
    /// Starts the writer thread (and, inside a tokio runtime, the retention timer).
    pub fn start(root: &Path, opts: LogOptions) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let (tx, rx) = mpsc::unbounded_channel::<ToWriter>();
        let (live, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            backlog: AtomicUsize::new(0),
            drained: Notify::new(),
            ends: AtomicUsize::new(0),
            ended: Notify::new(),
            opts,
        });
        let writer = Writer::new(root.to_path_buf(), shared.clone());
        std::thread::Builder::new().name("kiln-logs".into()).spawn(move || writer.run(rx))?;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak = tx.downgrade();
            rt.spawn(async move {
                let mut tick = tokio::time::interval(SWEEP_INTERVAL);
                loop {
                    tick.tick().await;
                    let Some(tx) = weak.upgrade() else { return };
                    if tx.send(ToWriter::Sweep(None)).is_err() {
                        return;
                    }
                }
            });
        }
        Ok(Self { tx, live, root: root.to_path_buf(), shared })
    }

    /// Resolves once every line written before the call is in its file, the END and REPORT of
    /// invocations already answered included (waited for up to [`END_WAIT`]).
    pub async fn flush(&self) {
        let _ = tokio::time::timeout(END_WAIT, self.ends_written()).await;
        if self.backlog() == 0 {
            return;
        }
        let (done, wait) = oneshot::channel();
        if self.tx.send(ToWriter::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Counts an invocation's END and REPORT as to come until the returned guard drops.
    pub fn expect_end(&self) -> EndToCome {
        self.shared.ends.fetch_add(1, Ordering::AcqRel);
        EndToCome(self.shared.clone())
    }

    async fn ends_written(&self) {
        loop {
            let done = self.shared.ended.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.shared.ends.load(Ordering::Acquire) == 0 {
                return;
            }
            done.await;
        }
    }

    /// Sends a line to the writer (and the followers). `false`: the writer's queue is full and
    /// the line was dropped (platform lines are never dropped).
    pub fn write(&self, function: &Arc<str>, stream: &Arc<str>, text: Bytes) -> bool {
        self.send(LogLine {
            function: function.clone(),
            stream: stream.clone(),
            timestamp_ms: now_ms(),
            text,
            platform: true,
        })
    }

    fn send(&self, line: LogLine) -> bool {
        let len = line.text.len();
        if !line.platform && self.shared.backlog.load(Ordering::Relaxed) + len > QUEUE_HARD_BYTES {
            return false;
        }
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(line.clone());
        }
        self.shared.backlog.fetch_add(len, Ordering::Relaxed);
        if self.tx.send(ToWriter::Line(line)).is_err() {
            self.shared.backlog.fetch_sub(len, Ordering::Relaxed);
        }
        true
    }

    /// Bytes waiting for the writer.
    pub fn backlog(&self) -> usize {
        self.shared.backlog.load(Ordering::Relaxed)
    }

    fn close(&self, function: &Arc<str>, stream: &Arc<str>) {
        let _ = self.tx.send(ToWriter::Close(function.clone(), stream.clone()));
    }

    /// Live lines of every function, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LogLine> {
        self.live.subscribe()
    }

    /// The bounds and retention in force.
    pub fn options(&self) -> &LogOptions {
        &self.shared.opts
    }

    /// The streams of `function`, by name (cheap: no file is read).
    pub fn streams(&self, function: &str) -> Vec<StreamInfo> {
        log_store::list_streams(&self.root, function)
    }

    /// Whether `function` has a log directory (its log group exists).
    pub fn has_group(&self, function: &str) -> bool {
        log_store::valid_dir_name(function) && self.root.join(function).is_dir()
    }

    /// One stream of `function`, if it exists.
    pub fn stream(&self, function: &str, stream: &str) -> Option<StreamInfo> {
        log_store::stream_info(&self.root, function, stream)
    }

    /// Events of one stream, a page at a time (see [`EventQuery`]); reads only what the page
    /// needs, a chunk at a time.
    pub fn events(&self, stream: &StreamInfo, query: &EventQuery) -> std::io::Result<EventPage> {
        log_store::read_events(stream, query)
    }

    /// Calls `each` with every event of `stream` from byte `from` on, in order, until it returns
    /// `false`; reads a chunk at a time.
    pub fn scan(&self, stream: &StreamInfo, from: u64, each: impl FnMut(Event) -> bool) -> std::io::Result<()> {
        log_store::scan_forward(stream, from, each)
    }

    /// The streams of `function` ordered by their first event (oldest first).
    pub fn streams_by_age(&self, function: &str) -> Vec<StreamInfo> {
        let mut streams: Vec<(i64, StreamInfo)> = self
            .streams(function)
            .into_iter()
            .map(|s| {
                let mut first = s.modified_ms;
                let _ = log_store::scan_forward(&s, 0, |e| {
                    first = e.timestamp_ms;
                    false
                });
                (first, s)
            })
            .collect();
        streams.sort_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
        streams.into_iter().map(|(_, s)| s).collect()
    }

    /// Writes the stored text of `function`'s log (one line per event, oldest stream first) to
    /// `out` in chunks of about 64 KB, blocking; stops when `out` returns `false`. Returns whether
    /// everything was written.
    pub fn copy_text(&self, function: &str, mut out: impl FnMut(Bytes) -> bool) -> bool {
        const CHUNK: usize = 64 * 1024;
        let mut buf = Vec::with_capacity(CHUNK + 1024);
        let mut open = true;
        for s in self.streams_by_age(function) {
            let _ = log_store::scan_forward(&s, 0, |e| {
                buf.extend_from_slice(e.message.as_bytes());
                buf.push(b'\n');
                if buf.len() >= CHUNK {
                    open = out(Bytes::from(std::mem::replace(&mut buf, Vec::with_capacity(CHUNK + 1024))));
                }
                open
            });
            if !open {
                return false;
            }
        }
        buf.is_empty() || out(Bytes::from(buf))
    }

    /// Deletes every stream of a deleted `function`, and drops what its ending environments
    /// still write; resolves once done.
    pub async fn remove(&self, function: &str) {
        self.remove_group(function, true).await;
    }

    /// Deletes every stream of `function` (DeleteLogGroup); its live environments go on logging
    /// into new files, as Lambda recreates a deleted log group.
    pub async fn delete_group(&self, function: &str) {
        self.remove_group(function, false).await;
    }

    async fn remove_group(&self, function: &str, function_gone: bool) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(ToWriter::Remove(function.into(), function_gone, done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// The retention policy of `function`'s log group, in days (`None`: none of its own).
    pub fn retention_days(&self, function: &str) -> Option<u32> {
        log_store::read_retention(&self.root, function)
    }

    /// Sets (or with `None` deletes) the retention policy of `function`'s log group and applies
    /// retention at once.
    pub async fn set_retention_days(&self, function: &str, days: Option<u32>) -> std::io::Result<()> {
        log_store::write_retention(&self.root, function, days)?;
        self.sweep().await;
        Ok(())
    }

    /// Applies retention now; resolves once done.
    pub async fn sweep(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(ToWriter::Sweep(Some(done))).is_ok() {
            let _ = wait.await;
        }
    }
}

/// A stream file the writer has open.
struct OpenStream {
    file: std::io::BufWriter<File>,
    path: PathBuf,
    /// Bytes in the file.
    bytes: u64,
    /// The cap was reached and its marker written.
    truncated: bool,
    last_write: Instant,
}

/// The writer thread's state: the only owner of the files.
struct Writer {
    root: PathBuf,
    shared: Arc<Shared>,
    open: HashMap<(Arc<str>, Arc<str>), OpenStream>,
    /// Bytes on disk per function, counted on first use.
    function_bytes: HashMap<Arc<str>, u64>,
    /// Streams of deleted log groups whose environments are still ending: their lines are dropped.
    dead: HashSet<(Arc<str>, Arc<str>)>,
    last_sweep: Instant,
}

impl Writer {
    fn new(root: PathBuf, shared: Arc<Shared>) -> Self {
        Self {
            root,
            shared,
            open: HashMap::new(),
            function_bytes: HashMap::new(),
            dead: HashSet::new(),
            last_sweep: Instant::now(),
        }
    }

    /// Appends each line to its stream's file, a batch at a time.
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<ToWriter>) {
        let mut flushed = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            // Lines gather for an interval after the first one arrives, before any is written:
            // one wake-up and one write per file per interval, and a cold start's first line
            // (INIT_START) does not create its stream's file at once, a file system call of
            // 0.1-1 ms here, on a CPU the cold start is using. Other messages are served at once.
            if matches!(first, ToWriter::Line(_)) {
                std::thread::sleep(WRITE_INTERVAL);
            }
            let mut next = Some(first);
            let mut batch = 0usize;
            while let Some(msg) = next.take().or_else(|| rx.try_recv().ok()) {
                match msg {
                    ToWriter::Line(line) => {
                        self.append(&line);
                        batch += line.text.len();
                        if batch > 4 * 1024 * 1024 {
                            self.flush_all();
                            self.shared.backlog.fetch_sub(batch, Ordering::Relaxed);
                            self.shared.drained.notify_waiters();
                            batch = 0;
                        }
                    }
                    ToWriter::Flush(done) => flushed.push(done),
                    ToWriter::Close(function, stream) => {
                        let key = (function, stream);
                        if let Some(mut s) = self.open.remove(&key) {
                            let _ = s.file.flush();
                        }
                        self.dead.remove(&key);
                    }
                    ToWriter::Remove(function, function_gone, done) => {
                        self.remove(&function, function_gone);
                        let _ = done.send(());
                    }
                    ToWriter::Sweep(done) => {
                        self.flush_all();
                        self.sweep();
                        if let Some(done) = done {
                            let _ = done.send(());
                        }
                    }
                }
            }
            self.flush_all();
            // Only now are the lines in their files: a backlog of zero means nothing to flush.
            self.shared.backlog.fetch_sub(batch, Ordering::Relaxed);
            self.shared.drained.notify_waiters();
            for done in flushed.drain(..) {
                let _ = done.send(());
            }
            if self.last_sweep.elapsed() > SWEEP_INTERVAL * 2 {
                // The timer task is gone (no runtime): sweep from here.
                self.sweep();
            }
        }
    }

    fn flush_all(&mut self) {
        for s in self.open.values_mut() {
            let _ = s.file.flush();
        }
    }

    fn append(&mut self, line: &LogLine) {
        let key = (line.function.clone(), line.stream.clone());
        if self.dead.contains(&key) || !log_store::valid_dir_name(&line.function) {
            return;
        }
        if !self.open.contains_key(&key) && !self.open_stream(&key) {
            return;
        }
        let opts = self.shared.opts.clone();
        let ingest = now_ms();
        let mut records = Vec::with_capacity(line.text.len() + 64);
        for event in line.text.split_inclusive(|&b| b == b'\n') {
            let event = event.strip_suffix(b"\n").unwrap_or(event);
            for piece in log_store::split_event(event) {
                log_store::encode(&mut records, line.timestamp_ms, ingest, piece);
            }
        }
        let need = records.len() as u64;
        let Some(s) = self.open.get(&key) else { return };
        let limit = opts.stream_max_bytes + if line.platform { PLATFORM_SLACK_BYTES } else { 0 };
        if s.bytes + need > limit {
            if !s.truncated {
                let marker = format!(
                    "[kiln] this log stream reached its limit of {} bytes: further output of this environment is dropped",
                    opts.stream_max_bytes
                );
                self.write_records(&key, &line.function, marker_record(line.timestamp_ms, ingest, &marker));
                if let Some(s) = self.open.get_mut(&key) {
                    s.truncated = true;
                }
            }
            return;
        }
        if !self.make_room(&line.function, need, &opts) {
            if let Some(s) = self.open.get(&key) {
                if !s.truncated {
                    let marker = format!(
                        "[kiln] the function's logs reached their limit of {} bytes: further output of this environment is dropped",
                        opts.function_max_bytes
                    );
                    self.write_records(&key, &line.function, marker_record(line.timestamp_ms, ingest, &marker));
                    if let Some(s) = self.open.get_mut(&key) {
                        s.truncated = true;
                    }
                }
            }
            return;
        }
        self.write_records(&key, &line.function, records);
    }

    fn write_records(&mut self, key: &(Arc<str>, Arc<str>), function: &Arc<str>, records: Vec<u8>) {
        let Some(s) = self.open.get_mut(key) else { return };
        if let Err(e) = s.file.write_all(&records) {
            tracing::warn!(path = %s.path.display(), error = %e, "cannot write log file");
            return;
        }
        s.bytes += records.len() as u64;
        s.last_write = Instant::now();
        *self.function_bytes.entry(function.clone()).or_insert(0) += records.len() as u64;
    }

    /// Opens (or creates) the file of a stream; closes the least recently written file when too
    /// many are open.
    fn open_stream(&mut self, key: &(Arc<str>, Arc<str>)) -> bool {
        if self.open.len() >= MAX_OPEN_FILES {
            if let Some(oldest) = self.open.iter().min_by_key(|(_, s)| s.last_write).map(|(k, _)| k.clone()) {
                if let Some(mut s) = self.open.remove(&oldest) {
                    let _ = s.file.flush();
                }
            }
        }
        let path = log_store::stream_path(&self.root, &key.0, &key.1);
        if let Some(p) = path.parent() {
            let _ = std::fs::create_dir_all(p);
        }
        self.function_total(&key.0);
        match std::fs::OpenOptions::new().create(true).append(true).open(&path) {
            Ok(f) => {
                let bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
                let truncated = bytes >= self.shared.opts.stream_max_bytes;
                self.open.insert(
                    key.clone(),
                    OpenStream {
                        file: std::io::BufWriter::with_capacity(64 * 1024, f),
                        path,
                        bytes,
                        truncated,
                        last_write: Instant::now(),
                    },
                );
                true
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open log file");
                false
            }
        }
    }

    /// Bytes on disk of a function's streams, counted once.
    fn function_total(&mut self, function: &Arc<str>) -> u64 {
        if let Some(n) = self.function_bytes.get(function) {
            return *n;
        }
        let n: u64 = log_store::list_streams(&self.root, function).iter().map(|s| s.bytes).sum();
        self.function_bytes.insert(function.clone(), n);
        n
    }

    /// Deletes the oldest closed streams of `function` until `need` more bytes fit under its cap.
    fn make_room(&mut self, function: &Arc<str>, need: u64, opts: &LogOptions) -> bool {
        let total = self.function_total(function);
        if total + need <= opts.function_max_bytes {
            return true;
        }
        let open: HashSet<PathBuf> =
            self.open.iter().filter(|(k, _)| k.0 == *function).map(|(_, s)| s.path.clone()).collect();
        let mut streams = log_store::list_streams(&self.root, function);
        streams.sort_by_key(|s| s.modified_ms);
        let mut total = total;
        for s in streams {
            if total + need <= opts.function_max_bytes {
                break;
            }
            if open.contains(&s.path) {
                continue;
            }
            if std::fs::remove_file(&s.path).is_ok() {
                total = total.saturating_sub(s.bytes);
            }
        }
        self.function_bytes.insert(function.clone(), total);
        total + need <= opts.function_max_bytes
    }

    fn remove(&mut self, function: &Arc<str>, function_gone: bool) {
        let keys: Vec<_> = self.open.keys().filter(|k| k.0 == *function).cloned().collect();
        for k in keys {
            self.open.remove(&k);
            if function_gone {
                self.dead.insert(k);
            }
        }
        self.function_bytes.remove(function);
        if log_store::valid_dir_name(function) {
            let dir = self.root.join(&**function);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %dir.display(), error = %e, "cannot delete logs");
                }
            }
        }
    }

    /// Deletes streams older than their group's retention (never an open one).
    fn sweep(&mut self) {
        self.last_sweep = Instant::now();
        let now = now_ms();
        let Ok(dirs) = std::fs::read_dir(&self.root) else { return };
        for dir in dirs.flatten() {
            let Some(function) = dir.file_name().to_str().map(str::to_owned) else { continue };
            let keep_ms = match log_store::read_retention(&self.root, &function) {
                Some(days) => i64::from(days) * 86_400_000,
                None => match self.shared.opts.retention {
                    Some(d) => d.as_millis() as i64,
                    None => continue,
                },
            };
            let open: HashSet<PathBuf> =
                self.open.iter().filter(|(k, _)| *k.0 == *function).map(|(_, s)| s.path.clone()).collect();
            let mut removed = false;
            for s in log_store::list_streams(&self.root, &function) {
                if s.modified_ms < now - keep_ms && !open.contains(&s.path) && std::fs::remove_file(&s.path).is_ok() {
                    removed = true;
                }
            }
            if removed {
                self.function_bytes.remove(function.as_str());
            }
        }
    }
}

fn marker_record(ts: i64, ingest: i64, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 40);
    log_store::encode(&mut out, ts, ingest, text.as_bytes());
    out
}

struct CaptureState {
    /// The current invocation's log text, kept for `LogType: Tail`.
    tail: Option<Vec<u8>>,
    /// An unterminated last line of output.
    partial: Vec<u8>,
    eof: bool,
    /// From Init's start until the first invocation's answer, and from each invocation's start
    /// until its answer.
    in_invocation: bool,
    /// Bytes read since the last invocation's answer.
    idle_bytes: usize,
    /// The pipe is not read until the next invocation (too much output outside one).
    paused: bool,
    /// Bytes of function output dropped for a full writer queue, not yet reported.
    dropped: usize,
    /// The last timestamp given, so a stream's timestamps never go back.
    last_ms: i64,
}

/// The bootstrap's output of one environment.
pub struct Capture {
    fd: pipe::Receiver,
    state: Mutex<CaptureState>,
    /// Woken when a paused pipe may be read again.
    resume: Arc<Notify>,
    sink: LogSink,
    function: Arc<str>,
    stream: Arc<str>,
}

impl Capture {
    /// Takes the pipe and starts the reader task.
    pub fn start(fd: OwnedFd, sink: LogSink, function: Arc<str>, stream: Arc<str>) -> std::io::Result<Arc<Self>> {
        let cap = Arc::new(Self {
            fd: pipe::Receiver::from_owned_fd(fd)?,
            state: Mutex::new(CaptureState {
                tail: None,
                partial: Vec::new(),
                eof: false,
                in_invocation: true,
                idle_bytes: 0,
                paused: false,
                dropped: 0,
                last_ms: 0,
            }),
            resume: Arc::new(Notify::new()),
            sink,
            function,
            stream,
        });
        let reader = Arc::downgrade(&cap);
        tokio::spawn(async move {
            loop {
                let Some(cap) = reader.upgrade() else { return };
                // A full writer queue: leave the output in the pipe, so the function waits.
                if cap.sink.backlog() > QUEUE_SOFT_BYTES {
                    let shared = cap.sink.shared.clone();
                    drop(cap);
                    let _ = tokio::time::timeout(Duration::from_millis(50), shared.drained.notified()).await;
                    continue;
                }
                if cap.lock().paused {
                    let resume = cap.resume.clone();
                    let resumed = resume.notified();
                    tokio::pin!(resumed);
                    resumed.as_mut().enable();
                    if !cap.lock().paused {
                        continue;
                    }
                    drop(cap);
                    // Re-checks now and then that the environment still exists.
                    let _ = tokio::time::timeout(Duration::from_secs(1), resumed).await;
                    continue;
                }
                if cap.fd.readable().await.is_err() {
                    return;
                }
                {
                    let mut st = cap.lock();
                    cap.read_available(&mut st, READ_PER_WAKE_BYTES);
                    if st.eof {
                        cap.flush_partial(&mut st);
                        return;
                    }
                }
                drop(cap);
                tokio::task::yield_now().await;
            }
        });
        Ok(cap)
    }

    fn lock(&self) -> MutexGuard<'_, CaptureState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads what the pipe holds, at most `max` bytes, unless the pipe is paused.
    ///
    /// Every invocation ends with one of these (see [`Capture::drain`]), and mostly the pipe is
    /// empty and tokio answers from its readiness flag without a system call. The bytes go through
    /// the thread's [`READ_BUF`], read into its spare capacity: no buffer is zeroed or allocated
    /// per call (a zeroed 16 KiB array on the stack was a third of the L1 cache written per warm
    /// call, for nothing).
    fn read_available(&self, st: &mut CaptureState, max: usize) {
        let done = READ_BUF.try_with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => {
                self.read_into(st, max, &mut buf);
                true
            }
            Err(_) => false,
        });
        if done != Ok(true) {
            // Not reached today (nothing under `read_into` reads a pipe again, and threads that
            // are ending do not read); a buffer of its own then.
            self.read_into(st, max, &mut Vec::new());
        }
    }

    fn read_into(&self, st: &mut CaptureState, max: usize, buf: &mut Vec<u8>) {
        let mut read = 0;
        while read < max && !st.paused {
            buf.clear();
            if buf.capacity() < READ_BUF_BYTES {
                buf.reserve_exact(READ_BUF_BYTES);
            }
            match self.fd.try_read_buf(buf) {
                Ok(0) => {
                    st.eof = true;
                    return;
                }
                Ok(n) => {
                    read += n;
                    if !st.in_invocation {
                        st.idle_bytes += n;
                    }
                    self.take_output(st, &buf[..n]);
                    if !st.in_invocation && st.idle_bytes > IDLE_OUTPUT_BYTES {
                        st.paused = true;
                        self.flush_partial(st);
                        self.platform_locked(
                            st,
                            format!(
                                "[kiln] more than {IDLE_OUTPUT_BYTES} bytes of output outside an invocation: the rest waits until the next invocation"
                            ),
                        );
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // WouldBlock: all that was there is read; the reader task waits for more.
                Err(_) => return,
            }
        }
    }

    /// Complete lines go out; the rest waits for its newline.
    fn take_output(&self, st: &mut CaptureState, data: &[u8]) {
        st.partial.extend_from_slice(data);
        if let Some(pos) = st.partial.iter().rposition(|&b| b == b'\n') {
            let rest = st.partial.split_off(pos + 1);
            let lines = std::mem::replace(&mut st.partial, rest);
            self.emit(st, lines, false);
        }
        // A runaway line without newline is cut into events rather than buffered without end.
        while st.partial.len() > MAX_EVENT_BYTES {
            let cut = log_store::char_boundary(&st.partial, MAX_EVENT_BYTES);
            let rest = st.partial.split_off(cut);
            let mut line = std::mem::replace(&mut st.partial, rest);
            line.push(b'\n');
            self.emit(st, line, false);
        }
    }

    fn flush_partial(&self, st: &mut CaptureState) {
        if !st.partial.is_empty() {
            let mut line = std::mem::take(&mut st.partial);
            line.push(b'\n');
            self.emit(st, line, false);
        }
    }

    fn emit(&self, st: &mut CaptureState, text: Vec<u8>, platform: bool) {
        let ts = now_ms().max(st.last_ms);
        st.last_ms = ts;
        if st.dropped > 0 && self.sink.backlog() < QUEUE_SOFT_BYTES {
            let marker = format!("[kiln] {} bytes of output dropped: the log writer was behind\n", st.dropped);
            st.dropped = 0;
            self.send(ts, Bytes::from(marker), true);
        }
        if let Some(tail) = &mut st.tail {
            push_tail(tail, &text);
        }
        let len = text.len();
        if !self.send(ts, Bytes::from(text), platform) {
            st.dropped += len;
        }
    }

    fn send(&self, timestamp_ms: i64, text: Bytes, platform: bool) -> bool {
        self.sink.send(LogLine {
            function: self.function.clone(),
            stream: self.stream.clone(),
            timestamp_ms,
            text,
            platform,
        })
    }

    fn platform_locked(&self, st: &mut CaptureState, line: String) {
        let mut text = line.into_bytes();
        text.push(b'\n');
        self.emit(st, text, true);
    }

    /// Writes a platform line (START, END, REPORT, …).
    pub fn platform(&self, line: String) {
        let mut st = self.lock();
        self.platform_locked(&mut st, line);
    }

    /// Starts collecting the tail of one invocation; a paused pipe is read again.
    pub fn begin(&self, keep_tail: bool) {
        let mut st = self.lock();
        st.tail = keep_tail.then(Vec::new);
        st.in_invocation = true;
        st.idle_bytes = 0;
        if st.paused {
            st.paused = false;
            self.resume.notify_one();
        }
    }

    /// See [`LogSink::expect_end`].
    pub fn expect_end(&self) -> EndToCome {
        self.sink.expect_end()
    }

    /// Moves whatever output is already in the pipe into the log (a bounded amount, so a function
    /// that keeps writing cannot hold this for ever).
    pub fn drain(&self) {
        let mut st = self.lock();
        if !st.eof {
            self.read_available(&mut st, DRAIN_MAX_BYTES);
        }
        self.flush_partial(&mut st);
    }

    /// The invocation has its answer (or ended otherwise): from here until the next invocation
    /// the environment's output, what is still in the pipe included, is bounded by
    /// [`IDLE_OUTPUT_BYTES`], so a function that keeps printing after its answer cannot add more
    /// while the invocation's end is written.
    pub fn answered(&self) {
        let mut st = self.lock();
        if st.in_invocation {
            st.in_invocation = false;
            st.idle_bytes = 0;
        }
    }

    /// Ends an invocation ([`Capture::answered`] if it was not yet), returning its log tail if it
    /// was asked for.
    pub fn finish(&self) -> Option<Vec<u8>> {
        let mut st = self.lock();
        if st.in_invocation {
            st.in_invocation = false;
            st.idle_bytes = 0;
        }
        st.tail.take()
    }
}

impl Drop for Capture {
    /// The environment is gone: its stream's file is closed (a later read opens it again).
    fn drop(&mut self) {
        self.sink.close(&self.function, &self.stream);
    }
}

/// Keeps at most the last [`kiln_model::limits::LOG_TAIL_BYTES`] bytes (cut at a char boundary
/// when the result is read).
fn push_tail(tail: &mut Vec<u8>, text: &[u8]) {
    const KEEP: usize = kiln_model::limits::LOG_TAIL_BYTES;
    tail.extend_from_slice(text);
    if tail.len() > KEEP * 2 {
        let cut = tail.len() - KEEP;
        tail.drain(..cut);
    }
}

/// The last 4 KB of a log text, starting on a UTF-8 boundary.
pub fn tail_of(text: &[u8]) -> &[u8] {
    const KEEP: usize = kiln_model::limits::LOG_TAIL_BYTES;
    if text.len() <= KEEP {
        return text;
    }
    let mut start = text.len() - KEEP;
    while start < text.len() && (text[start] & 0xC0) == 0x80 {
        start += 1;
    }
    &text[start..]
}

/// The `END` line and the `REPORT` line after it (fields as real Lambda orders them), built in
/// one string: every invocation writes them as one platform record.
pub fn end_and_report(
    request_id: &str,
    duration_ms: f64,
    memory_mb: u32,
    max_memory_mb: u64,
    init_ms: Option<f64>,
    status: Option<(&str, Option<&str>)>,
) -> String {
    use std::fmt::Write as _;
    let billed = (duration_ms + init_ms.unwrap_or(0.0)).ceil().max(1.0) as u64;
    let mut lines = String::with_capacity(192 + 2 * request_id.len());
    // Writing into a String cannot fail.
    let _ = write!(
        lines,
        "END RequestId: {request_id}\nREPORT RequestId: {request_id}\tDuration: {duration_ms:.2} ms\tBilled Duration: {billed} ms\tMemory Size: {memory_mb} MB\tMax Memory Used: {max_memory_mb} MB\t"
    );
    if let Some(init) = init_ms {
        let _ = write!(lines, "Init Duration: {init:.2} ms\t");
    }
    if let Some((status, error_type)) = status {
        lines.push_str("Status: ");
        lines.push_str(status);
        if let Some(t) = error_type {
            lines.push_str("\tError Type: ");
            lines.push_str(t);
        }
    }
    lines
}

impl crate::Engine {
    /// Every function's log group (`LoggingConfig.LogGroup`, by default `/aws/lambda/<name>`) with
    /// the functions that write to it, by group name.
    pub fn log_groups(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let mut groups: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
        for (name, f) in self.read_functions().iter() {
            let group = f.lock().visible.log_group.clone();
            groups.entry(group).or_default().push(name.clone());
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_line_matches_lambda() {
        let l = end_and_report("id", 1.271, 128, 36, Some(107.95), None);
        let l = l.strip_prefix("END RequestId: id\n").unwrap();
        assert_eq!(
            l,
            "REPORT RequestId: id\tDuration: 1.27 ms\tBilled Duration: 110 ms\tMemory Size: 128 MB\tMax Memory Used: 36 MB\tInit Duration: 107.95 ms\t"
        );
        let l = end_and_report("id", 3000.0, 1024, 64, None, Some(("timeout", None)));
        assert!(l.ends_with("Max Memory Used: 64 MB\tStatus: timeout"));
    }

    #[test]
    fn tail_is_the_last_4k_on_a_char_boundary() {
        let mut text = "é".repeat(3000).into_bytes();
        text.extend_from_slice(b"end");
        let t = tail_of(&text);
        assert!(t.len() <= 4096);
        assert!(std::str::from_utf8(t).is_ok());
        assert!(t.ends_with(b"end"));
    }

    fn sink(dir: &Path, stream_max: u64, function_max: u64) -> LogSink {
        let opts = LogOptions { stream_max_bytes: stream_max, function_max_bytes: function_max, retention: None };
        LogSink::start(dir, opts).unwrap()
    }

    fn line(sink: &LogSink, f: &str, s: &str, text: String) {
        sink.send(LogLine {
            function: f.into(),
            stream: s.into(),
            timestamp_ms: 1,
            text: Bytes::from(text),
            platform: false,
        });
    }

    #[tokio::test]
    async fn a_flush_waits_for_an_end_still_to_come() {
        let dir = tempfile::tempdir().unwrap();
        let sink = sink(dir.path(), 1 << 30, 1 << 30);
        let end = sink.expect_end();
        let writer = sink.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            line(&writer, "f", "2026/11/30/[$LATEST]a", "END RequestId: r\n".into());
            drop(end);
        });
        sink.flush().await;
        let s = sink.stream("f", "2026/11/30/[$LATEST]a").expect("the END line's stream is written");
        let mut msgs = Vec::new();
        sink.scan(&s, 0, |e| {
            msgs.push(e.message);
            true
        })
        .unwrap();
        assert_eq!(msgs, ["END RequestId: r"]);
    }

    #[tokio::test]
    async fn a_stream_keeps_at_most_its_cap_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let sink = sink(dir.path(), 10_000, 1 << 30);
        for i in 0..100 {
            line(&sink, "f", "2026/11/30/[$LATEST]a", format!("{i:04} {}\n", "x".repeat(1000)));
        }
        sink.flush().await;
        let s = sink.stream("f", "2026/11/30/[$LATEST]a").unwrap();
        assert!(s.bytes <= 10_000 + 200, "{}", s.bytes);
        let mut msgs = Vec::new();
        sink.scan(&s, 0, |e| {
            msgs.push(e.message);
            true
        })
        .unwrap();
        assert!(msgs.last().unwrap().contains("reached its limit of 10000 bytes"));
        assert_eq!(msgs.iter().filter(|m| m.contains("reached its limit")).count(), 1);
    }

    #[tokio::test]
    async fn a_function_over_its_cap_loses_its_oldest_closed_streams() {
        let dir = tempfile::tempdir().unwrap();
        let sink = sink(dir.path(), 1 << 30, 50_000);
        let (f, a, b): (Arc<str>, Arc<str>, Arc<str>) =
            ("f".into(), "2026/11/30/[$LATEST]a".into(), "2026/11/30/[$LATEST]b".into());
        for _ in 0..30 {
            line(&sink, "f", &a, format!("{}\n", "a".repeat(1000)));
        }
        sink.flush().await;
        sink.close(&f, &a);
        for _ in 0..30 {
            line(&sink, "f", &b, format!("{}\n", "b".repeat(1000)));
        }
        sink.flush().await;
        assert!(sink.stream("f", &a).is_none(), "the oldest stream was kept");
        let total: u64 = sink.streams("f").iter().map(|s| s.bytes).sum();
        assert!(total <= 50_000, "{total}");
    }

    #[tokio::test]
    async fn closed_streams_release_their_files_and_remove_deletes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let sink = sink(dir.path(), 1 << 30, 1 << 30);
        let f: Arc<str> = "f".into();
        for i in 0..50 {
            let s: Arc<str> = format!("2026/11/30/[$LATEST]{i}").into();
            line(&sink, "f", &s, "hello\n".into());
            sink.close(&f, &s);
        }
        // A sweep goes through the writer's queue after the closes.
        sink.sweep().await;
        assert_eq!(sink.streams("f").len(), 50);
        let open = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter(|e| std::fs::read_link(e.path()).is_ok_and(|p| p.starts_with(dir.path())));
        assert_eq!(open.count(), 0);
        let live: Arc<str> = "2026/11/30/[$LATEST]live".into();
        line(&sink, "f", &live, "before\n".into());
        sink.flush().await;
        sink.remove("f").await;
        assert!(!dir.path().join("f").exists());
        // A line of an environment of the deleted function that was still ending is dropped.
        line(&sink, "f", &live, "after\n".into());
        sink.flush().await;
        assert!(!dir.path().join("f").exists());
    }

    #[tokio::test]
    async fn a_drain_reads_more_than_one_buffer_of_output_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let sink = sink(dir.path(), 1 << 30, 1 << 30);
        let (reader, mut writer) = std::io::pipe().unwrap();
        let capture = Capture::start(reader.into(), sink.clone(), "f".into(), "s".into()).unwrap();
        capture.begin(true);
        // 40 KiB of numbered lines (a pipe holds 64 KiB), more than one read of READ_BUF_BYTES,
        // and a last line without its newline, which the drain flushes.
        let mut text = String::new();
        for i in 0..400 {
            text.push_str(&format!("{i:05} {}\n", "x".repeat(96)));
        }
        text.push_str("end");
        assert!(text.len() > 2 * READ_BUF_BYTES);
        writer.write_all(text.as_bytes()).unwrap();
        let query = EventQuery {
            start: log_store::Start::Head,
            start_time: None,
            end_time: None,
            limit: 10_000,
            max_bytes: 1 << 20,
        };
        let count = || sink.stream("f", "s").map_or(0, |s| sink.events(&s, &query).unwrap().events.len());
        // The reader task takes the complete lines once the pipe reports them readable.
        for _ in 0..1000 {
            sink.flush().await;
            if count() >= 400 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The drain ends the invocation's output: the unfinished last line goes out too.
        capture.drain();
        capture.finish();
        sink.flush().await;
        let page = sink.events(&sink.stream("f", "s").unwrap(), &query).unwrap();
        let messages: Vec<&str> = page.events.iter().map(|e| e.message.as_str()).collect();
        let expected: Vec<&str> = text.split('\n').collect();
        assert_eq!(messages, expected, "every line once, in order");
    }

    #[tokio::test]
    async fn retention_deletes_old_closed_streams() {
        let dir = tempfile::tempdir().unwrap();
        let sink = sink(dir.path(), 1 << 30, 1 << 30);
        let f: Arc<str> = "f".into();
        let (old, new): (Arc<str>, Arc<str>) = ("2026/11/30/[$LATEST]old".into(), "2026/11/30/[$LATEST]new".into());
        line(&sink, "f", &old, "old\n".into());
        line(&sink, "f", &new, "new\n".into());
        sink.flush().await;
        sink.close(&f, &old);
        sink.close(&f, &new);
        let path = sink.stream("f", &old).unwrap().path;
        let ten_days_ago = std::time::SystemTime::now() - Duration::from_secs(10 * 86_400);
        File::options().write(true).open(&path).unwrap().set_modified(ten_days_ago).unwrap();
        sink.set_retention_days("f", Some(7)).await.unwrap();
        assert!(sink.stream("f", &old).is_none());
        assert!(sink.stream("f", &new).is_some());
        assert_eq!(sink.retention_days("f"), Some(7));
    }
}
