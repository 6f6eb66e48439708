//! The on-disk format of log streams and its readers.
//!
//! One file per stream, `<root>/<function>/<stream with / [ ] as ->.log`, appended to by the
//! writer thread only. A file is a sequence of records, one per log event:
//!
//! ```text
//! <timestamp ms> <ingestion time ms> <message>\n
//! ```
//!
//! where the message has `\` written as `\\` and a newline as `\n`, so a record never holds a raw
//! newline. This keeps the files greppable, lets a reader start at any record boundary (a byte
//! offset, which is what paging tokens carry) and walk in either direction: forward with a
//! buffered reader, backward by reading fixed-size blocks from the end and splitting at newlines.
//! Reading the last 10,000 events of a stream touches only their bytes. Files written before this
//! format (plain lines) read as events stamped with the file's modification time.
//!
//! A log group's own retention policy is a file `<root>/<function>/.retention` holding the days.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The file of the retention policy in a function's log directory.
const RETENTION_FILE: &str = ".retention";
/// Block size of backward reads.
const BACK_BLOCK: u64 = 64 * 1024;
/// CloudWatch counts 26 bytes of overhead per event in its 1 MB response budget.
pub const EVENT_OVERHEAD: usize = 26;

/// One stream of a function.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// The AWS stream name, `YYYY/MM/DD/[<version>]<environment id>`.
    pub name: String,
    pub path: PathBuf,
    pub bytes: u64,
    /// The file's modification time, ms since the epoch: about the last event's ingestion.
    pub modified_ms: i64,
}

/// One log event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Byte offset of the record in its file; the next record starts at `end`.
    pub offset: u64,
    pub end: u64,
    pub timestamp_ms: i64,
    pub ingestion_ms: i64,
    /// The message, without the newline that ended the line (non-UTF-8 bytes replaced).
    pub message: String,
}

/// Where a page of [`read_events`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The first events of the stream, forward.
    Head,
    /// The last events of the stream.
    Tail,
    /// Events from this record boundary on.
    Forward(u64),
    /// Events ending at or before this record boundary (the page before it).
    Backward(u64),
}

/// A page request of [`read_events`].
#[derive(Debug, Clone)]
pub struct EventQuery {
    pub start: Start,
    /// Only events with `start_time <= timestamp`.
    pub start_time: Option<i64>,
    /// Only events with `timestamp < end_time`.
    pub end_time: Option<i64>,
    /// Events per page at most.
    pub limit: usize,
    /// Bytes of messages (plus [`EVENT_OVERHEAD`] each) per page at most.
    pub max_bytes: usize,
}

/// A page of events in ascending order, with the record boundaries around it.
#[derive(Debug, Clone)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Where the page starts (a backward read continues before it).
    pub first: u64,
    /// Where the page ends (a forward read continues here).
    pub last: u64,
}

/// Whether `name` can be a directory of the store (a function name: no separators, no dots).
pub fn valid_dir_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\0', '\\'])
}

/// The file of a stream.
pub fn stream_path(root: &Path, function: &str, stream: &str) -> PathBuf {
    root.join(function).join(format!("{}.log", stream.replace(['/', '[', ']'], "-").replace("--", "-")))
}

/// The stream name of a file name written by [`stream_path`]:
/// `2026-11-30-$LATEST-<id>.log` is `2026/11/30/[$LATEST]<id>`.
pub fn stream_name(file_name: &str) -> Option<String> {
    let stem = file_name.strip_suffix(".log")?;
    let parts: Vec<&str> = stem.split('-').collect();
    if parts.len() < 5 || parts[..3].iter().any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return Some(stem.to_string());
    }
    let version = parts[3..parts.len() - 1].join("-");
    Some(format!("{}/{}/{}/[{}]{}", parts[0], parts[1], parts[2], version, parts[parts.len() - 1]))
}

/// The streams of a function, in name order.
pub fn list_streams(root: &Path, function: &str) -> Vec<StreamInfo> {
    if !valid_dir_name(function) {
        return Vec::new();
    }
    let mut out: Vec<StreamInfo> = std::fs::read_dir(root.join(function))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let file_name = e.file_name().into_string().ok()?;
            let name = stream_name(&file_name)?;
            let meta = e.metadata().ok()?;
            Some(StreamInfo { name, path: e.path(), bytes: meta.len(), modified_ms: modified_ms(&meta) })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// One stream, if its file exists and `stream` is exactly its name.
pub fn stream_info(root: &Path, function: &str, stream: &str) -> Option<StreamInfo> {
    if !valid_dir_name(function) || stream.is_empty() {
        return None;
    }
    let path = stream_path(root, function, stream);
    let file_name = path.file_name()?.to_str()?;
    // Another spelling of the same file is not the same stream.
    if stream_name(file_name)? != stream {
        return None;
    }
    let meta = std::fs::metadata(&path).ok()?;
    meta.is_file().then(|| StreamInfo {
        name: stream.to_string(),
        bytes: meta.len(),
        modified_ms: modified_ms(&meta),
        path,
    })
}

fn modified_ms(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Appends one record.
///
/// Runs of bytes that need no escape are copied whole: this is the log writer's work for every
/// line of every invocation (START, END, REPORT at least), and a byte-at-a-time push cost it
/// about ten instructions per byte.
pub fn encode(out: &mut Vec<u8>, timestamp_ms: i64, ingestion_ms: i64, message: &[u8]) {
    use std::io::Write;
    out.reserve(message.len() + 42);
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{timestamp_ms} {ingestion_ms} ");
    let mut rest = message;
    while let Some(i) = rest.iter().position(|&b| b == b'\\' || b == b'\n') {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(if rest[i] == b'\\' { b"\\\\" } else { b"\\n" });
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'\n');
}

/// Parses one record (without its newline); `fallback_ms` stamps a line of the older format.
fn decode(line: &[u8], fallback_ms: i64) -> (i64, i64, String) {
    let parsed = (|| {
        let sp1 = line.iter().position(|&b| b == b' ')?;
        let sp2 = sp1 + 1 + line[sp1 + 1..].iter().position(|&b| b == b' ')?;
        let ts = std::str::from_utf8(&line[..sp1]).ok()?.parse::<i64>().ok()?;
        let ingest = std::str::from_utf8(&line[sp1 + 1..sp2]).ok()?.parse::<i64>().ok()?;
        Some((ts, ingest, &line[sp2 + 1..]))
    })();
    match parsed {
        Some((ts, ingest, msg)) => (ts, ingest, unescape(msg)),
        None => (fallback_ms, fallback_ms, String::from_utf8_lossy(line).into_owned()),
    }
}

fn unescape(msg: &[u8]) -> String {
    if !msg.contains(&b'\\') {
        return match std::str::from_utf8(msg) {
            Ok(s) => s.to_owned(),
            Err(_) => String::from_utf8_lossy(msg).into_owned(),
        };
    }
    let mut out = Vec::with_capacity(msg.len());
    let mut i = 0;
    while i < msg.len() {
        match (msg[i], msg.get(i + 1)) {
            (b'\\', Some(b'\\')) => {
                out.push(b'\\');
                i += 2;
            }
            (b'\\', Some(b'n')) => {
                out.push(b'\n');
                i += 2;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The largest index `<= at` that does not cut a UTF-8 character (at least 1, so progress is made).
pub fn char_boundary(text: &[u8], at: usize) -> usize {
    if at >= text.len() {
        return text.len();
    }
    let mut cut = at;
    while cut > 0 && (text[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    if cut == 0 {
        at
    } else {
        cut
    }
}

/// Splits a message longer than CloudWatch's largest event into events.
pub fn split_event(message: &[u8]) -> Vec<&[u8]> {
    let max = crate::logs::MAX_EVENT_BYTES;
    let mut out = Vec::with_capacity(1 + message.len() / max);
    let mut rest = message;
    while rest.len() > max {
        let cut = char_boundary(rest, max);
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    out.push(rest);
    out
}

/// Calls `each` with every complete event from byte `from` on, until it returns `false`.
pub fn scan_forward(stream: &StreamInfo, from: u64, mut each: impl FnMut(Event) -> bool) -> std::io::Result<()> {
    let mut file = File::open(&stream.path)?;
    let fallback = modified_ms(&file.metadata()?);
    file.seek(SeekFrom::Start(from))?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut offset = from;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        // The end, or a record the writer has not finished.
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(());
        }
        let (timestamp_ms, ingestion_ms, message) = decode(&line[..n - 1], fallback);
        let event = Event { offset, end: offset + n as u64, timestamp_ms, ingestion_ms, message };
        offset += n as u64;
        if !each(event) {
            return Ok(());
        }
    }
}

/// Calls `each` with every complete event ending at or before byte `end`, last first, until it
/// returns `false`.
pub fn scan_backward(stream: &StreamInfo, end: u64, mut each: impl FnMut(Event) -> bool) -> std::io::Result<()> {
    let mut file = File::open(&stream.path)?;
    let meta = file.metadata()?;
    let fallback = modified_ms(&meta);
    let mut pos = end.min(meta.len());
    // `carry` holds the bytes from `pos` to the end of the part not yet returned.
    let mut carry: Vec<u8> = Vec::new();
    let mut first = true;
    loop {
        let start = pos.saturating_sub(BACK_BLOCK);
        let mut data = vec![0u8; (pos - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut data)?;
        data.extend_from_slice(&carry);
        if first {
            // A record the writer has not finished is not an event yet.
            let keep = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            if keep == 0 && start > 0 {
                carry = data;
                pos = start;
                continue;
            }
            data.truncate(keep);
            first = false;
        }
        let mut stop = data.len();
        while stop > 0 {
            match data[..stop - 1].iter().rposition(|&b| b == b'\n') {
                Some(i) => {
                    let offset = start + i as u64 + 1;
                    let (timestamp_ms, ingestion_ms, message) = decode(&data[i + 1..stop - 1], fallback);
                    let event = Event { offset, end: start + stop as u64, timestamp_ms, ingestion_ms, message };
                    if !each(event) {
                        return Ok(());
                    }
                    stop = i + 1;
                }
                None if start == 0 => {
                    let (timestamp_ms, ingestion_ms, message) = decode(&data[..stop - 1], fallback);
                    let event = Event { offset: 0, end: stop as u64, timestamp_ms, ingestion_ms, message };
                    each(event);
                    return Ok(());
                }
                None => break,
            }
        }
        if start == 0 {
            return Ok(());
        }
        data.truncate(stop);
        carry = data;
        pos = start;
    }
}

fn in_range(q: &EventQuery, ts: i64) -> bool {
    q.start_time.is_none_or(|s| ts >= s) && q.end_time.is_none_or(|e| ts < e)
}

/// One page of a stream's events; see [`Start`].
pub fn read_events(stream: &StreamInfo, q: &EventQuery) -> std::io::Result<EventPage> {
    let mut events = Vec::new();
    let mut bytes = 0usize;
    let limit = q.limit.max(1);
    let mut take = |e: &Event, events: &Vec<Event>| {
        bytes += e.message.len() + 1 + EVENT_OVERHEAD;
        events.len() < limit && (bytes <= q.max_bytes || events.is_empty())
    };
    match q.start {
        Start::Head | Start::Forward(_) => {
            let from = if let Start::Forward(p) = q.start { p } else { 0 };
            scan_forward(stream, from, |e| {
                // Timestamps of a stream never go back: past the end of the range, stop.
                if q.end_time.is_some_and(|end| e.timestamp_ms >= end) {
                    return false;
                }
                if !in_range(q, e.timestamp_ms) {
                    return true;
                }
                if !take(&e, &events) {
                    return false;
                }
                events.push(e);
                true
            })?;
            let first = events.first().map_or(from, |e| e.offset);
            let last = events.last().map_or(from, |e| e.end);
            Ok(EventPage { events, first, last })
        }
        Start::Tail | Start::Backward(_) => {
            let end = if let Start::Backward(p) = q.start { p } else { u64::MAX };
            scan_backward(stream, end, |e| {
                if q.start_time.is_some_and(|start| e.timestamp_ms < start) {
                    return false;
                }
                if !in_range(q, e.timestamp_ms) {
                    return true;
                }
                if !take(&e, &events) {
                    return false;
                }
                events.push(e);
                true
            })?;
            events.reverse();
            let at = end.min(stream.bytes);
            let first = events.first().map_or(at, |e| e.offset);
            let last = events.last().map_or(at, |e| e.end);
            Ok(EventPage { events, first, last })
        }
    }
}

/// The retention policy of a function's log group, in days.
pub fn read_retention(root: &Path, function: &str) -> Option<u32> {
    if !valid_dir_name(function) {
        return None;
    }
    std::fs::read_to_string(root.join(function).join(RETENTION_FILE)).ok()?.trim().parse().ok()
}

/// Sets or deletes the retention policy of a function's log group.
pub fn write_retention(root: &Path, function: &str, days: Option<u32>) -> std::io::Result<()> {
    if !valid_dir_name(function) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a function name"));
    }
    let dir = root.join(function);
    match days {
        Some(d) => {
            std::fs::create_dir_all(&dir)?;
            let tmp = dir.join(".retention.tmp");
            std::fs::write(&tmp, d.to_string())?;
            std::fs::rename(tmp, dir.join(RETENTION_FILE))
        }
        None => match std::fs::remove_file(dir.join(RETENTION_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(events: &[(i64, &str)]) -> (tempfile::TempDir, StreamInfo) {
        let dir = tempfile::tempdir().unwrap();
        let path = stream_path(dir.path(), "f", "2026/11/30/[$LATEST]abc");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut data = Vec::new();
        for (ts, m) in events {
            encode(&mut data, *ts, *ts + 1, m.as_bytes());
        }
        std::fs::write(&path, &data).unwrap();
        let info = stream_info(dir.path(), "f", "2026/11/30/[$LATEST]abc").unwrap();
        (dir, info)
    }

    fn q(start: Start, limit: usize) -> EventQuery {
        EventQuery { start, start_time: None, end_time: None, limit, max_bytes: 1 << 20 }
    }

    #[test]
    fn stream_names_round_trip_through_file_names() {
        let p = stream_path(Path::new("/r"), "f", "2026/11/30/[$LATEST]0123abcd");
        let file = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(file, "2026-11-30-$LATEST-0123abcd.log");
        assert_eq!(stream_name(file).unwrap(), "2026/11/30/[$LATEST]0123abcd");
        assert_eq!(stream_name("2026-11-30-7-ab.log").unwrap(), "2026/11/30/[7]ab");
        assert!(stream_name(".retention").is_none());
    }

    #[test]
    fn another_spelling_of_a_stream_is_not_found() {
        let (dir, _) = store_with(&[(1, "a")]);
        assert!(stream_info(dir.path(), "f", "2026-11-30-$LATEST-abc").is_none());
        assert!(stream_info(dir.path(), "f", "2026/11/30/[$LATEST]abc").is_some());
        assert!(stream_info(dir.path(), "..", "x").is_none());
    }

    #[test]
    fn encode_escapes_as_the_byte_at_a_time_version_did() {
        fn reference(out: &mut Vec<u8>, ts: i64, ingest: i64, message: &[u8]) {
            out.extend_from_slice(format!("{ts} {ingest} ").as_bytes());
            for &b in message {
                match b {
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    _ => out.push(b),
                }
            }
            out.push(b'\n');
        }
        for message in [
            &b""[..],
            b"plain",
            b"\\",
            b"\n",
            b"a\\nb\\",
            b"\n\nx\n",
            b"REPORT RequestId: x\tDuration: 1.00 ms\t",
            "é\\ü\n".as_bytes(),
            b"\xff\x00\\",
        ] {
            let (mut a, mut b) = (b"prefix".to_vec(), b"prefix".to_vec());
            encode(&mut a, -5, 1_796_086_629_524, message);
            reference(&mut b, -5, 1_796_086_629_524, message);
            assert_eq!(a, b, "{:?}", String::from_utf8_lossy(message));
        }
    }

    #[test]
    fn messages_with_newlines_and_backslashes_round_trip() {
        let (_d, s) = store_with(&[(1, "a\\nb"), (2, "line\nnext"), (3, "é")]);
        let page = read_events(&s, &q(Start::Head, 10)).unwrap();
        let msgs: Vec<&str> = page.events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(msgs, ["a\\nb", "line\nnext", "é"]);
        assert_eq!(page.events[1].timestamp_ms, 2);
        assert_eq!(page.events[1].ingestion_ms, 3);
    }

    #[test]
    fn pages_go_forward_and_backward_through_tokens() {
        let texts: Vec<String> = (0..100).map(|i| format!("event {i}")).collect();
        let evs: Vec<(i64, &str)> = texts.iter().enumerate().map(|(i, t)| (i as i64, t.as_str())).collect();
        let (_d, s) = store_with(&evs);
        let tail = read_events(&s, &q(Start::Tail, 10)).unwrap();
        assert_eq!(tail.events.first().unwrap().message, "event 90");
        assert_eq!(tail.events.last().unwrap().message, "event 99");
        let before = read_events(&s, &q(Start::Backward(tail.first), 10)).unwrap();
        assert_eq!(before.events.first().unwrap().message, "event 80");
        assert_eq!(before.events.last().unwrap().message, "event 89");
        let after = read_events(&s, &q(Start::Forward(before.last), 5)).unwrap();
        assert_eq!(after.events.first().unwrap().message, "event 90");
        let end = read_events(&s, &q(Start::Forward(tail.last), 5)).unwrap();
        assert!(end.events.is_empty());
        assert_eq!(end.last, tail.last);
        let head = read_events(&s, &q(Start::Head, 3)).unwrap();
        assert_eq!(head.events.len(), 3);
        assert_eq!(head.events[0].message, "event 0");
        let none = read_events(&s, &q(Start::Backward(head.first), 3)).unwrap();
        assert!(none.events.is_empty());
    }

    #[test]
    fn backward_reads_cross_blocks_and_skip_an_unfinished_record() {
        let big = "x".repeat(50_000);
        let texts: Vec<String> = (0..20).map(|i| format!("{i}:{big}")).collect();
        let evs: Vec<(i64, &str)> = texts.iter().enumerate().map(|(i, t)| (i as i64, t.as_str())).collect();
        let (_d, s) = store_with(&evs);
        let mut f = std::fs::OpenOptions::new().append(true).open(&s.path).unwrap();
        std::io::Write::write_all(&mut f, b"99 99 unfinished").unwrap();
        let s = StreamInfo { bytes: std::fs::metadata(&s.path).unwrap().len(), ..s };
        let mut seen = Vec::new();
        scan_backward(&s, u64::MAX, |e| {
            seen.push(e.message.split(':').next().unwrap().to_string());
            true
        })
        .unwrap();
        let want: Vec<String> = (0..20).rev().map(|i| i.to_string()).collect();
        assert_eq!(seen, want);
        let mut forward = 0;
        scan_forward(&s, 0, |_| {
            forward += 1;
            true
        })
        .unwrap();
        assert_eq!(forward, 20);
    }

    #[test]
    fn time_ranges_limit_pages() {
        let texts: Vec<String> = (0..50).map(|i| format!("e{i}")).collect();
        let evs: Vec<(i64, &str)> = texts.iter().enumerate().map(|(i, t)| (i as i64 * 10, t.as_str())).collect();
        let (_d, s) = store_with(&evs);
        let mut query = q(Start::Head, 100);
        query.start_time = Some(100);
        query.end_time = Some(200);
        let page = read_events(&s, &query).unwrap();
        assert_eq!(page.events.len(), 10);
        assert_eq!(page.events[0].message, "e10");
        query.start = Start::Tail;
        let page = read_events(&s, &query).unwrap();
        assert_eq!(page.events.len(), 10);
        assert_eq!(page.events[9].message, "e19");
    }

    #[test]
    fn the_byte_budget_bounds_a_page() {
        let big = "y".repeat(100_000);
        let evs: Vec<(i64, &str)> = (0..30).map(|i| (i, big.as_str())).collect();
        let (_d, s) = store_with(&evs);
        let page = read_events(&s, &q(Start::Head, 10_000)).unwrap();
        assert_eq!(page.events.len(), 10);
    }

    #[test]
    fn older_plain_lines_read_as_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = stream_path(dir.path(), "f", "2026/11/30/[$LATEST]old");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "START RequestId: x Version: $LATEST\nhello\n").unwrap();
        let s = stream_info(dir.path(), "f", "2026/11/30/[$LATEST]old").unwrap();
        let page = read_events(&s, &q(Start::Head, 10)).unwrap();
        assert_eq!(page.events[1].message, "hello");
        assert!(page.events[1].timestamp_ms > 0);
    }

    #[test]
    fn long_lines_split_on_char_boundaries() {
        let max = crate::logs::MAX_EVENT_BYTES;
        let text = "é".repeat(max);
        let parts = split_event(text.as_bytes());
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.len() <= max && std::str::from_utf8(p).is_ok()));
        assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), text.len());
    }

    #[test]
    fn retention_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_retention(dir.path(), "f"), None);
        write_retention(dir.path(), "f", Some(7)).unwrap();
        assert_eq!(read_retention(dir.path(), "f"), Some(7));
        assert!(list_streams(dir.path(), "f").is_empty());
        write_retention(dir.path(), "f", None).unwrap();
        assert_eq!(read_retention(dir.path(), "f"), None);
    }
}
