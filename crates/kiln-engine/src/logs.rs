//! Function logs: capture of the bootstrap's output, the platform's lines, files and followers.
//!
//! Every environment has one log stream (`YYYY/MM/DD/[<version>]<env id>`), kept as a file
//! `<data>/logs/<function>/<stream with / as ->.log`. Lines reach the file through a single
//! writer task, so no invocation waits for a disk. Followers (`kiln logs --follow`) subscribe to
//! a broadcast of the same lines.
//!
//! [`Capture`] owns the read end of the bootstrap's stdout/stderr pipe. A reader task moves what
//! arrives into the stream; at the end of an invocation the engine calls [`Capture::drain`] so
//! that everything the function wrote before it answered lands before the `END` line. Reading and
//! appending happen under one lock, which keeps the order of lines.

use bytes::Bytes;
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::unix::pipe;
use tokio::sync::{broadcast, mpsc, oneshot};

/// One line (or several) for a function's log, already terminated by `\n`.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub function: Arc<str>,
    pub stream: Arc<str>,
    pub text: Bytes,
}

/// Where log lines go: the file writer and the live followers.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::UnboundedSender<ToWriter>,
    live: broadcast::Sender<LogLine>,
    root: PathBuf,
}

enum ToWriter {
    Line(LogLine),
    /// Answered once every line sent before it is in its file.
    Flush(oneshot::Sender<()>),
}

/// How long the writer lets lines gather after writing a batch. Senders never wake it while it
/// sleeps, so a busy server pays one wake-up and one `write` per file per interval, not per line.
const WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

impl LogSink {
    /// Starts the writer thread.
    pub fn start(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let (tx, rx) = mpsc::unbounded_channel::<ToWriter>();
        let (live, _) = broadcast::channel(1024);
        let dir = root.to_path_buf();
        std::thread::Builder::new().name("kiln-logs".into()).spawn(move || write_files(&dir, rx))?;
        Ok(Self { tx, live, root: root.to_path_buf() })
    }

    /// Resolves once every line written before the call is in its file.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(ToWriter::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    pub fn write(&self, function: &Arc<str>, stream: &Arc<str>, text: Bytes) {
        let line = LogLine { function: function.clone(), stream: stream.clone(), text };
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(line.clone());
        }
        let _ = self.tx.send(ToWriter::Line(line));
    }

    /// Live lines of every function, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LogLine> {
        self.live.subscribe()
    }

    /// The stored log files of `function`, oldest first.
    pub fn files(&self, function: &str) -> Vec<PathBuf> {
        let dir = self.root.join(function);
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let created = e.metadata().ok()?.modified().ok()?;
                Some((created, e.path()))
            })
            .collect();
        files.sort();
        files.into_iter().map(|(_, p)| p).collect()
    }

    /// Removes every log of `function`.
    pub fn remove(&self, function: &str) {
        let _ = std::fs::remove_dir_all(self.root.join(function));
    }
}

/// The writer thread: appends each line to its stream's file, a batch at a time.
fn write_files(dir: &Path, mut rx: mpsc::UnboundedReceiver<ToWriter>) {
    let mut files: HashMap<(Arc<str>, Arc<str>), std::io::BufWriter<File>> = HashMap::new();
    let mut flushed = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take().or_else(|| rx.try_recv().ok()) {
            let line = match msg {
                ToWriter::Line(line) => line,
                ToWriter::Flush(done) => {
                    flushed.push(done);
                    continue;
                }
            };
            let key = (line.function.clone(), line.stream.clone());
            if !files.contains_key(&key) {
                if files.len() > 256 {
                    files.clear();
                }
                let path = stream_path(dir, &line.function, &line.stream);
                if let Some(p) = path.parent() {
                    let _ = std::fs::create_dir_all(p);
                }
                match std::fs::OpenOptions::new().create(true).append(true).open(&path) {
                    Ok(f) => {
                        files.insert(key.clone(), std::io::BufWriter::new(f));
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot open log file");
                        continue;
                    }
                }
            }
            if let Some(f) = files.get_mut(&key) {
                let _ = f.write_all(&line.text);
            }
        }
        for f in files.values_mut() {
            let _ = f.flush();
        }
        let waited = !flushed.is_empty();
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
        if !waited {
            std::thread::sleep(WRITE_INTERVAL);
        }
    }
}

fn stream_path(root: &Path, function: &str, stream: &str) -> PathBuf {
    root.join(function).join(format!("{}.log", stream.replace(['/', '[', ']'], "-").replace("--", "-")))
}

struct CaptureState {
    /// The current invocation's log text, kept for `LogType: Tail`.
    tail: Option<Vec<u8>>,
    /// An unterminated last line of output.
    partial: Vec<u8>,
    eof: bool,
}

/// The bootstrap's output of one environment.
pub struct Capture {
    fd: pipe::Receiver,
    state: Mutex<CaptureState>,
    sink: LogSink,
    function: Arc<str>,
    stream: Arc<str>,
}

impl Capture {
    /// Takes the pipe and starts the reader task.
    pub fn start(fd: OwnedFd, sink: LogSink, function: Arc<str>, stream: Arc<str>) -> std::io::Result<Arc<Self>> {
        let cap = Arc::new(Self {
            fd: pipe::Receiver::from_owned_fd(fd)?,
            state: Mutex::new(CaptureState { tail: None, partial: Vec::new(), eof: false }),
            sink,
            function,
            stream,
        });
        let reader = Arc::downgrade(&cap);
        tokio::spawn(async move {
            loop {
                let Some(cap) = reader.upgrade() else { return };
                if cap.fd.readable().await.is_err() {
                    return;
                }
                let mut st = cap.lock();
                cap.read_available(&mut st);
                if st.eof {
                    cap.flush_partial(&mut st);
                    return;
                }
            }
        });
        Ok(cap)
    }

    fn lock(&self) -> MutexGuard<'_, CaptureState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read_available(&self, st: &mut CaptureState) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.fd.try_read(&mut buf) {
                Ok(0) => {
                    st.eof = true;
                    return;
                }
                Ok(n) => self.take_output(st, &buf[..n]),
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
            self.emit(st, lines);
        }
        // A runaway line without newline is cut rather than buffered without end.
        if st.partial.len() > 256 * 1024 {
            let mut line = std::mem::take(&mut st.partial);
            line.push(b'\n');
            self.emit(st, line);
        }
    }

    fn flush_partial(&self, st: &mut CaptureState) {
        if !st.partial.is_empty() {
            let mut line = std::mem::take(&mut st.partial);
            line.push(b'\n');
            self.emit(st, line);
        }
    }

    fn emit(&self, st: &mut CaptureState, text: Vec<u8>) {
        if let Some(tail) = &mut st.tail {
            push_tail(tail, &text);
        }
        self.sink.write(&self.function, &self.stream, Bytes::from(text));
    }

    /// Writes a platform line (START, END, REPORT, …).
    pub fn platform(&self, line: String) {
        let mut st = self.lock();
        let mut text = line.into_bytes();
        text.push(b'\n');
        self.emit(&mut st, text);
    }

    /// Starts collecting the tail of one invocation.
    pub fn begin(&self, keep_tail: bool) {
        self.lock().tail = keep_tail.then(Vec::new);
    }

    /// Moves whatever output is already in the pipe into the log.
    pub fn drain(&self) {
        let mut st = self.lock();
        if !st.eof {
            self.read_available(&mut st);
        }
        self.flush_partial(&mut st);
    }

    /// Ends an invocation, returning its log tail if it was asked for.
    pub fn finish(&self) -> Option<Vec<u8>> {
        self.lock().tail.take()
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

/// The `REPORT` line, fields as real Lambda orders them.
pub fn report_line(
    request_id: &str,
    duration_ms: f64,
    memory_mb: u32,
    max_memory_mb: u64,
    init_ms: Option<f64>,
    status: Option<(&str, Option<&str>)>,
) -> String {
    let billed = (duration_ms + init_ms.unwrap_or(0.0)).ceil().max(1.0) as u64;
    let mut line = format!(
        "REPORT RequestId: {request_id}\tDuration: {duration_ms:.2} ms\tBilled Duration: {billed} ms\tMemory Size: {memory_mb} MB\tMax Memory Used: {max_memory_mb} MB\t"
    );
    if let Some(init) = init_ms {
        line.push_str(&format!("Init Duration: {init:.2} ms\t"));
    }
    if let Some((status, error_type)) = status {
        line.push_str(&format!("Status: {status}"));
        if let Some(t) = error_type {
            line.push_str(&format!("\tError Type: {t}"));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_line_matches_lambda() {
        let l = report_line("id", 1.271, 128, 36, Some(107.95), None);
        assert_eq!(
            l,
            "REPORT RequestId: id\tDuration: 1.27 ms\tBilled Duration: 110 ms\tMemory Size: 128 MB\tMax Memory Used: 36 MB\tInit Duration: 107.95 ms\t"
        );
        let l = report_line("id", 3000.0, 1024, 64, None, Some(("timeout", None)));
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
}
