//! The durable queue of asynchronous invocations, in its own SQLite file (`events.db`).
//!
//! An `Event` invocation is answered 202 only once its row is committed and synced, so the
//! queue lives in a database of its own (WAL, `synchronous=FULL`) that never contends with the
//! control plane's `kiln.db`. Every operation on it goes through one writer thread that owns
//! the connection: the thread takes whatever operations are waiting (up to [`BATCH_MAX`]), runs
//! them in one transaction, commits once (one fsync for the whole batch: group commit) and only
//! then answers each caller. So 32 concurrent callers share an fsync instead of queueing for 32,
//! and no caller hears "kept" for a row whose commit failed: a full disk makes the commit fail
//! and every operation of that batch gets the error.
//!
//! Payloads stay on disk; [`EventQueue::claim`] reads a bounded batch of due events, so the
//! server's memory does not grow with the number of waiting events.
//!
//! States: `queued` (waiting, possibly until `due_ms`), `in flight` (claimed by the dispatcher)
//! and `failed` (kept for inspection and redrive, with the invocation record). At start-up
//! [`EventQueue::recover`] puts in-flight rows back in the queue: delivery is at least once.

use rusqlite::{params, Connection, Transaction};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

/// Operations committed together at most.
pub const BATCH_MAX: usize = 256;

pub const QUEUED: i64 = 0;
pub const IN_FLIGHT: i64 = 1;
pub const FAILED: i64 = 2;

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event queue database error")]
    Sql(#[from] rusqlite::Error),
    #[error("event queue commit failed: {0}")]
    Commit(String),
    #[error("the event queue's writer thread is gone")]
    Closed,
    #[error("cannot start the event queue's writer thread")]
    Thread(#[source] std::io::Error),
}

/// A new event.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub request_id: String,
    pub function: String,
    pub qualifier: Option<String>,
    pub payload: Vec<u8>,
    pub now_ms: i64,
    /// How many destination hops led to this event (0 for an event a caller sent).
    pub depth: u32,
}

/// An event claimed for delivery.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub request_id: String,
    pub function: String,
    pub qualifier: Option<String>,
    pub payload: Vec<u8>,
    pub enqueued_ms: i64,
    pub attempts: u32,
    pub errors: u32,
    pub throttles: u32,
    pub depth: u32,
}

/// What a claim returns: the claimed events, and the (id, why) of rows that could not be read.
pub type ClaimBatch = (Vec<Claimed>, Vec<(i64, String)>);

/// One row as `kiln events` shows it (no payload).
#[derive(Debug, Clone)]
pub struct EventSummary {
    pub id: i64,
    pub request_id: String,
    pub function: String,
    pub qualifier: Option<String>,
    pub state: i64,
    pub enqueued_ms: i64,
    pub due_ms: i64,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub record: Option<String>,
    pub payload_bytes: i64,
}

impl EventSummary {
    /// `queued`, `in-flight` or `failed`.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            QUEUED => "queued",
            IN_FLIGHT => "in-flight",
            _ => "failed",
        }
    }
}

/// Counts of one function's events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCounts {
    pub queued: u64,
    pub in_flight: u64,
    pub failed: u64,
}

/// What happens to an in-flight event after an attempt.
#[derive(Debug, Clone)]
pub enum Settle {
    /// Done: the row goes.
    Delete,
    /// Back in the queue until `due_ms`.
    Retry { due_ms: i64, attempts: u32, errors: u32, throttles: u32, last_error: String },
    /// Into the failed store, with the invocation record.
    Fail { attempts: u32, last_error: String, record: String },
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    function TEXT NOT NULL,
    qualifier TEXT,
    payload BLOB NOT NULL,
    state INTEGER NOT NULL,
    enqueued_ms INTEGER NOT NULL,
    due_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    throttles INTEGER NOT NULL DEFAULT 0,
    depth INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    record TEXT
);
CREATE INDEX IF NOT EXISTS events_due ON events (state, due_ms);
CREATE INDEX IF NOT EXISTS events_function ON events (function, state);";

type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;
/// Runs inside the batch's transaction (`None`: the transaction could not begin) and returns
/// what to do once the batch's commit is known.
type Job = Box<dyn FnOnce(Option<&Transaction<'_>>) -> Reply + Send>;

/// The queue: a handle on the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct EventQueue {
    tx: mpsc::Sender<Job>,
    /// Transactions committed so far (each one fsync), for tests and diagnostics.
    commits: Arc<AtomicU64>,
}

impl EventQueue {
    /// Opens (or creates) the queue database and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self, EventError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Every commit is synced: a 202 means the event is on disk.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let commits = Arc::new(AtomicU64::new(0));
        let counter = commits.clone();
        std::thread::Builder::new()
            .name("kiln-events".into())
            .spawn(move || writer(conn, rx, &counter))
            .map_err(EventError::Thread)?;
        Ok(Self { tx, commits })
    }

    /// How many transactions the writer has committed.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Runs `f` in the next batch's transaction; answers after that batch committed.
    pub async fn run<T, F>(&self, f: F) -> Result<T, EventError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let (done, wait) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |t| {
            let r = match t {
                Some(t) => f(t).map_err(EventError::Sql),
                None => Err(EventError::Commit("cannot begin a transaction".into())),
            };
            Box::new(move |commit: Result<(), String>| {
                let out = match (r, commit) {
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(m)) => Err(EventError::Commit(m)),
                    (Ok(v), Ok(())) => Ok(v),
                };
                let _ = done.send(out);
            })
        });
        self.tx.send(job).map_err(|_| EventError::Closed)?;
        wait.await.map_err(|_| EventError::Closed)?
    }

    /// Stores a new event; returns its id once it is committed and synced.
    pub async fn enqueue(&self, e: NewEvent) -> Result<i64, EventError> {
        self.run(move |t| insert(t, &e)).await
    }

    /// Puts events left in flight by a previous run back in the queue; returns how many.
    pub async fn recover(&self) -> Result<usize, EventError> {
        self.run(|t| t.execute("UPDATE events SET state = ?1 WHERE state = ?2", params![QUEUED, IN_FLIGHT])).await
    }

    /// Claims up to `limit` due events (oldest due first), at most `allow[f]` of function `f`
    /// (`default_allow` of a function not named there). Rows that cannot be read are moved to
    /// the failed store and reported in the second list.
    pub async fn claim(
        &self,
        now_ms: i64,
        limit: usize,
        allow: HashMap<String, usize>,
        default_allow: usize,
    ) -> Result<ClaimBatch, EventError> {
        self.run(move |t| claim(t, now_ms, limit, &allow, default_allow)).await
    }

    /// Settles an in-flight event.
    pub async fn settle(&self, id: i64, s: Settle) -> Result<(), EventError> {
        self.run(move |t| settle(t, id, &s)).await
    }

    /// When the next queued event of a function not in `skip` is due, if any is.
    pub async fn next_due(&self, skip: Vec<String>) -> Result<Option<i64>, EventError> {
        self.run(move |t| {
            let skip = serde_json::to_string(&skip).unwrap_or_else(|_| "[]".into());
            t.query_row(
                "SELECT MIN(due_ms) FROM events WHERE state = ?1 AND function NOT IN (SELECT value FROM json_each(?2))",
                params![QUEUED, skip],
                |r| r.get(0),
            )
        })
        .await
    }

    /// Events of one function (or of all), queued and in flight first, at most `limit`.
    pub async fn list(&self, function: Option<String>, limit: usize) -> Result<Vec<EventSummary>, EventError> {
        self.run(move |t| list(t, function.as_deref(), limit)).await
    }

    /// Counts per function.
    pub async fn counts(&self) -> Result<Vec<(String, EventCounts)>, EventError> {
        self.run(|t| counts(t)).await
    }

    /// Puts failed events of `function` (all, or the one with `id`) back in the queue, as new:
    /// no attempts, age from now. Returns how many.
    pub async fn redrive(&self, function: String, id: Option<i64>, now_ms: i64) -> Result<usize, EventError> {
        self.run(move |t| {
            let sql = "UPDATE events SET state = ?1, due_ms = ?2, enqueued_ms = ?2, attempts = 0, errors = 0,
                       throttles = 0, record = NULL WHERE state = ?3 AND function = ?4 AND (?5 IS NULL OR id = ?5)";
            t.execute(sql, params![QUEUED, now_ms, FAILED, function, id])
        })
        .await
    }

    /// Removes every queued or in-flight event of a deleted function; returns how many.
    pub async fn drop_function(&self, function: String) -> Result<usize, EventError> {
        self.run(move |t| {
            t.execute("DELETE FROM events WHERE function = ?1 AND state != ?2", params![function, FAILED])
        })
        .await
    }
}

fn writer(mut conn: Connection, rx: mpsc::Receiver<Job>, commits: &AtomicU64) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let t = match conn.transaction() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot begin an event queue transaction");
                for j in jobs {
                    j(None)(Err(e.to_string()));
                }
                continue;
            }
        };
        let replies: Vec<Reply> = jobs.into_iter().map(|j| j(Some(&t))).collect();
        commits.fetch_add(1, Ordering::Relaxed);
        let committed = t.commit().map_err(|e| {
            tracing::error!(error = %e, "event queue commit failed");
            e.to_string()
        });
        for r in replies {
            r(committed.clone());
        }
    }
}

fn insert(t: &Connection, e: &NewEvent) -> Result<i64, rusqlite::Error> {
    t.execute(
        "INSERT INTO events (request_id, function, qualifier, payload, state, enqueued_ms, due_ms, depth)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
        params![e.request_id, e.function, e.qualifier, e.payload, QUEUED, e.now_ms, e.depth],
    )?;
    Ok(t.last_insert_rowid())
}

fn claim(
    t: &Connection,
    now_ms: i64,
    limit: usize,
    allow: &HashMap<String, usize>,
    default_allow: usize,
) -> Result<ClaimBatch, rusqlite::Error> {
    let mut out = Vec::new();
    let mut corrupt = Vec::new();
    if limit == 0 {
        return Ok((out, corrupt));
    }
    // Choose by id and function first, so payloads are read only for what is claimed.
    let skip: Vec<&String> = allow.iter().filter(|(_, n)| **n == 0).map(|(f, _)| f).collect();
    let skip_json = serde_json::to_string(&skip).unwrap_or_else(|_| "[]".into());
    let mut chosen = Vec::new();
    {
        let mut stmt = t.prepare_cached(
            "SELECT id, function FROM events WHERE state = ?1 AND due_ms <= ?2
               AND function NOT IN (SELECT value FROM json_each(?3))
             ORDER BY due_ms, id LIMIT ?4",
        )?;
        let mut rows = stmt.query(params![QUEUED, now_ms, skip_json, (limit * 4) as i64])?;
        let mut taken: HashMap<String, usize> = HashMap::new();
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let function: String = match r.get(1) {
                Ok(f) => f,
                Err(e) => {
                    corrupt.push((id, e.to_string()));
                    continue;
                }
            };
            let n = taken.entry(function.clone()).or_default();
            if *n >= allow.get(&function).copied().unwrap_or(default_allow) {
                continue;
            }
            *n += 1;
            chosen.push(id);
            if chosen.len() == limit {
                break;
            }
        }
    }
    {
        let mut stmt = t.prepare_cached(
            "SELECT request_id, function, qualifier, payload, enqueued_ms, attempts, errors, throttles, depth
             FROM events WHERE id = ?1",
        )?;
        for id in chosen {
            let read = stmt.query_row(params![id], |r| {
                Ok(Claimed {
                    id,
                    request_id: r.get(0)?,
                    function: r.get(1)?,
                    qualifier: r.get(2)?,
                    payload: r.get(3)?,
                    enqueued_ms: r.get(4)?,
                    attempts: r.get(5)?,
                    errors: r.get(6)?,
                    throttles: r.get(7)?,
                    depth: r.get(8)?,
                })
            });
            match read {
                Ok(c) => out.push(c),
                Err(e) => corrupt.push((id, e.to_string())),
            }
        }
    }
    for c in &out {
        t.execute("UPDATE events SET state = ?1 WHERE id = ?2", params![IN_FLIGHT, c.id])?;
    }
    for (id, why) in &corrupt {
        t.execute(
            "UPDATE events SET state = ?1, last_error = ?2 WHERE id = ?3",
            params![FAILED, format!("unreadable queue row: {why}"), id],
        )?;
    }
    Ok((out, corrupt))
}

fn settle(t: &Connection, id: i64, s: &Settle) -> Result<(), rusqlite::Error> {
    match s {
        Settle::Delete => {
            t.execute("DELETE FROM events WHERE id = ?1", params![id])?;
        }
        Settle::Retry { due_ms, attempts, errors, throttles, last_error } => {
            t.execute(
                "UPDATE events SET state = ?1, due_ms = ?2, attempts = ?3, errors = ?4, throttles = ?5, last_error = ?6
                 WHERE id = ?7",
                params![QUEUED, due_ms, attempts, errors, throttles, last_error, id],
            )?;
        }
        Settle::Fail { attempts, last_error, record } => {
            t.execute(
                "UPDATE events SET state = ?1, attempts = ?2, last_error = ?3, record = ?4 WHERE id = ?5",
                params![FAILED, attempts, last_error, record, id],
            )?;
        }
    }
    Ok(())
}

fn list(t: &Connection, function: Option<&str>, limit: usize) -> Result<Vec<EventSummary>, rusqlite::Error> {
    let mut stmt = t.prepare_cached(
        // Casts, so that a damaged row can still be listed (it sits in the failed store).
        "SELECT id, CAST(request_id AS TEXT), function, CAST(qualifier AS TEXT), CAST(state AS INTEGER),
                CAST(enqueued_ms AS INTEGER), CAST(due_ms AS INTEGER), CAST(attempts AS INTEGER),
                CAST(last_error AS TEXT), CAST(record AS TEXT), length(payload)
         FROM events WHERE (?1 IS NULL OR function = ?1) ORDER BY state DESC, id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![function, limit as i64], |r| {
        Ok(EventSummary {
            id: r.get(0)?,
            request_id: r.get(1)?,
            function: r.get(2)?,
            qualifier: r.get(3)?,
            state: r.get(4)?,
            enqueued_ms: r.get(5)?,
            due_ms: r.get(6)?,
            attempts: r.get(7)?,
            last_error: r.get(8)?,
            record: r.get(9)?,
            payload_bytes: r.get::<_, Option<i64>>(10)?.unwrap_or(0),
        })
    })?;
    rows.collect()
}

fn counts(t: &Connection) -> Result<Vec<(String, EventCounts)>, rusqlite::Error> {
    let mut stmt =
        t.prepare_cached("SELECT function, state, COUNT(*) FROM events GROUP BY function, state ORDER BY function")?;
    let mut out: Vec<(String, EventCounts)> = Vec::new();
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (function, state, n): (String, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
        if out.last().is_none_or(|(f, _)| *f != function) {
            out.push((function.clone(), EventCounts::default()));
        }
        if let Some((_, c)) = out.last_mut() {
            match state {
                QUEUED => c.queued = n as u64,
                IN_FLIGHT => c.in_flight = n as u64,
                _ => c.failed += n as u64,
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(function: &str, now_ms: i64) -> NewEvent {
        NewEvent {
            request_id: uuid_like(now_ms),
            function: function.into(),
            qualifier: None,
            payload: b"{\"n\":1}".to_vec(),
            now_ms,
            depth: 0,
        }
    }

    fn uuid_like(n: i64) -> String {
        format!("00000000-0000-0000-0000-{n:012}")
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn concurrent_enqueues_share_commits_and_all_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let q = EventQueue::open(&dir.path().join("events.db")).unwrap();
        rt().block_on(async {
            let before = q.commits();
            let mut tasks = Vec::new();
            for i in 0..200 {
                let q = q.clone();
                tasks.push(tokio::spawn(async move { q.enqueue(event("f", i)).await }));
            }
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            let commits = q.commits() - before;
            assert!(commits < 200, "{commits} commits for 200 concurrent enqueues: no group commit");
            let c = q.counts().await.unwrap();
            assert_eq!(c, vec![("f".to_string(), EventCounts { queued: 200, in_flight: 0, failed: 0 })]);
        });
    }

    #[test]
    fn claim_is_bounded_skips_saturated_functions_and_recover_requeues() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let q = EventQueue::open(&path).unwrap();
        rt().block_on(async {
            for i in 0..10 {
                q.enqueue(event("a", i)).await.unwrap();
                q.enqueue(event("b", i)).await.unwrap();
            }
            let allow = HashMap::from([("b".to_string(), 0), ("a".to_string(), 3)]);
            let (got, bad) = q.claim(100, 10, allow, 10).await.unwrap();
            assert!(bad.is_empty());
            assert_eq!(got.len(), 3);
            assert!(got.iter().all(|c| c.function == "a"));
            // Not yet due.
            let (none, _) = q.claim(-1, 10, HashMap::new(), 10).await.unwrap();
            assert!(none.is_empty());
            assert_eq!(q.next_due(vec!["a".into()]).await.unwrap(), Some(0));
            assert_eq!(q.recover().await.unwrap(), 3);
            let (all, _) = q.claim(100, 100, HashMap::new(), 100).await.unwrap();
            assert_eq!(all.len(), 20);
            assert_eq!(q.next_due(vec![]).await.unwrap(), None);
        });
    }

    #[test]
    fn corrupt_row_goes_to_failed_and_others_still_deliver() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let q = EventQueue::open(&path).unwrap();
        rt().block_on(async {
            q.enqueue(event("a", 1)).await.unwrap();
            let bad = q.enqueue(event("a", 2)).await.unwrap();
            q.run(move |t| {
                t.execute("UPDATE events SET request_id = x'00ff' , attempts = 'many' WHERE id = ?1", [bad])
            })
            .await
            .unwrap();
            let (got, corrupt) = q.claim(100, 10, HashMap::new(), 10).await.unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!(corrupt.len(), 1);
            assert_eq!(corrupt[0].0, bad);
            let c = q.counts().await.unwrap();
            assert_eq!(c[0].1, EventCounts { queued: 0, in_flight: 1, failed: 1 });
        });
    }

    #[test]
    fn settle_and_redrive() {
        let dir = tempfile::tempdir().unwrap();
        let q = EventQueue::open(&dir.path().join("events.db")).unwrap();
        rt().block_on(async {
            let id = q.enqueue(event("a", 1)).await.unwrap();
            let (got, _) = q.claim(10, 10, HashMap::new(), 10).await.unwrap();
            assert_eq!(got[0].id, id);
            q.settle(id, Settle::Fail { attempts: 3, last_error: "boom".into(), record: "{}".into() }).await.unwrap();
            let l = q.list(Some("a".into()), 10).await.unwrap();
            assert_eq!((l[0].state, l[0].attempts, l[0].last_error.as_deref()), (FAILED, 3, Some("boom")));
            assert_eq!(q.redrive("a".into(), Some(id + 1), 20).await.unwrap(), 0);
            assert_eq!(q.redrive("a".into(), None, 20).await.unwrap(), 1);
            let (got, _) = q.claim(20, 10, HashMap::new(), 10).await.unwrap();
            assert_eq!((got[0].attempts, got[0].enqueued_ms), (0, 20));
            q.settle(id, Settle::Delete).await.unwrap();
            assert!(q.counts().await.unwrap().is_empty());
        });
    }

    #[test]
    fn a_hundred_thousand_waiting_events_are_claimed_a_bounded_batch_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let q = EventQueue::open(&dir.path().join("events.db")).unwrap();
        rt().block_on(async {
            // One transaction of 100,000 rows, then claims of 64: the claim reads only its batch.
            q.run(|t| {
                for i in 0..100_000 {
                    insert(t, &event("f", i))?;
                }
                Ok(())
            })
            .await
            .unwrap();
            let (got, _) = q.claim(i64::MAX, 64, HashMap::new(), 64).await.unwrap();
            assert_eq!(got.len(), 64);
            assert_eq!(got[0].enqueued_ms, 0);
            let c = q.counts().await.unwrap();
            assert_eq!(c[0].1, EventCounts { queued: 99_936, in_flight: 64, failed: 0 });
        });
    }
}
