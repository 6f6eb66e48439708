//! Asynchronous invocation: the durable queue's dispatcher, the retry and expiry rules,
//! destinations, and the event invoke configs.
//!
//! An `Event` invoke is stored in `events.db` (see `kiln_store::events`) and answered 202 once
//! that write is synced. The dispatcher task claims due events a bounded batch at a time (at
//! most [`IN_FLIGHT_MAX`] in flight, and no more per function than its reserved concurrency),
//! runs each like a synchronous call with the event's own request id, and settles it by the
//! rules Lambda documents:
//!
//! - success → the row goes; an `OnSuccess` destination gets the invocation record;
//! - function error (unhandled error, timeout, crash, failed Init) → retried
//!   `MaximumRetryAttempts` times (default 2), after `retry_base` and then twice that;
//! - throttle or system error (no room to start an environment, function still Pending) →
//!   retried with backoff from 1 s doubling to 5 min, as long as the event is younger than
//!   `MaximumEventAgeInSeconds` (default 6 h);
//! - reserved concurrency 0 → failure at once, no attempt;
//! - a final failure goes to `OnFailure` with the record (`RetriesExhausted` or
//!   `EventAgeExceeded`); without one, or when the destination cannot be reached (a service kiln
//!   does not run, a function that is gone, a chain of records too long), the row stays in the
//!   failed store with its record, for `kiln events` and redrive. Nothing is dropped silently.
//!
//! A destination record for a function is an event of its own, queued durably like any other.
//! A function cannot name itself (Lambda refuses that too), and a chain of records through
//! several functions stops after [`kiln_model::events::DESTINATION_DEPTH_MAX`] hops, so
//! destinations never loop forever inside kiln.

use crate::{now_ms, Engine, EngineError, Page};
use bytes::Bytes;
use kiln_model::events::{self as ev, Destination, EventInvokeConfig};
use kiln_model::{FunctionName, FunctionRef, Qualifier};
use kiln_store::events::{Claimed, EventCounts, EventQueue, EventSummary, NewEvent, Settle};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tracing::Instrument as _;

/// Events in flight at once, over all functions. Bounds the memory payloads take.
pub const IN_FLIGHT_MAX: usize = 64;
/// Throttle and system-error backoff: first wait and ceiling.
const BACKOFF_FIRST_MS: i64 = 1_000;
const BACKOFF_MAX_MS: i64 = 300_000;

/// The async side of the engine.
pub(crate) struct Events {
    pub queue: EventQueue,
    /// Event invoke configs by (function, qualifier); `$LATEST` for the unqualified function.
    configs: RwLock<BTreeMap<(String, String), EventInvokeConfig>>,
    wake: tokio::sync::Notify,
    in_flight: Mutex<HashMap<String, usize>>,
    retry_base: Duration,
    /// Set at shutdown: nothing more is claimed, and attempts cut short by the shutdown are
    /// not settled, so their rows stay in flight and run again after the restart.
    stopping: AtomicBool,
}

impl Events {
    pub fn new(queue: EventQueue, retry_base: Duration) -> Self {
        Self {
            queue,
            configs: RwLock::new(BTreeMap::new()),
            wake: tokio::sync::Notify::new(),
            in_flight: Mutex::new(HashMap::new()),
            retry_base,
            stopping: AtomicBool::new(false),
        }
    }

    /// Called at shutdown, before the environments are destroyed.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn configs(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<(String, String), EventInvokeConfig>> {
        self.configs.read().unwrap_or_else(|e| e.into_inner())
    }

    fn configs_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<(String, String), EventInvokeConfig>> {
        self.configs.write().unwrap_or_else(|e| e.into_inner())
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What an attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The function failed: unhandled error, timeout, crash, failed Init.
    FunctionError,
    /// Throttled, or kiln could not run it now (no room, function not Active).
    Retryable,
}

/// Why an event ended without success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Success,
    RetriesExhausted,
    EventAgeExceeded,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "Success",
            Self::RetriesExhausted => "RetriesExhausted",
            Self::EventAgeExceeded => "EventAgeExceeded",
        }
    }
}

/// What to do next with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Done(Condition),
    RetryAt(i64),
}

/// The retry and expiry rules, with the clock as an argument. `errors` and `throttles` count
/// the earlier attempts of each kind, this one included.
pub fn next_step(
    outcome: Outcome,
    cfg: &EventInvokeConfig,
    retry_base: Duration,
    enqueued_ms: i64,
    errors: u32,
    throttles: u32,
    now_ms: i64,
) -> Next {
    let expires_ms = enqueued_ms.saturating_add(i64::from(cfg.max_age_secs()) * 1000);
    match outcome {
        Outcome::Success => Next::Done(Condition::Success),
        Outcome::FunctionError => {
            if errors > cfg.retries() {
                return Next::Done(Condition::RetriesExhausted);
            }
            let wait = (retry_base.as_millis() as i64).saturating_mul(1 << (errors.saturating_sub(1)).min(20));
            let at = now_ms.saturating_add(wait);
            if at > expires_ms {
                Next::Done(Condition::EventAgeExceeded)
            } else {
                Next::RetryAt(at)
            }
        }
        Outcome::Retryable => {
            let wait = BACKOFF_FIRST_MS.saturating_mul(1 << (throttles.saturating_sub(1)).min(20)).min(BACKOFF_MAX_MS);
            let at = now_ms.saturating_add(wait);
            if at > expires_ms {
                Next::Done(Condition::EventAgeExceeded)
            } else {
                Next::RetryAt(at)
            }
        }
    }
}

/// The invocation record Lambda sends to a destination (version 1.0).
#[allow(clippy::too_many_arguments)]
fn record(
    request_id: &str,
    function_arn: &str,
    condition: Condition,
    invoke_count: u32,
    request_payload: &[u8],
    status: u16,
    executed_version: Option<&str>,
    function_error: bool,
    response: Option<&[u8]>,
) -> serde_json::Value {
    let as_json = |b: &[u8]| {
        if b.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(b).unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(b).into()))
        }
    };
    let mut response_context = serde_json::json!({ "statusCode": status });
    if let Some(v) = executed_version {
        response_context["executedVersion"] = serde_json::json!(v);
    }
    if function_error {
        response_context["functionError"] = serde_json::json!("Unhandled");
    }
    let mut r = serde_json::json!({
        "version": "1.0",
        "timestamp": iso_now(),
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": condition.as_str(),
            "approximateInvokeCount": invoke_count,
        },
        "requestPayload": as_json(request_payload),
        "responseContext": response_context,
    });
    if let Some(p) = response {
        r["responsePayload"] = as_json(p);
    }
    r
}

fn iso_now() -> String {
    let ms = now_ms();
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.format(&f).unwrap_or_default()
}

fn queue_error(e: kiln_store::events::EventError) -> EngineError {
    EngineError::internal("event queue", e)
}

/// What the event invoke config operations take.
#[derive(Debug, Clone, Default)]
pub struct EventConfigInput {
    pub maximum_retry_attempts: Option<i64>,
    pub maximum_event_age_secs: Option<i64>,
    /// `Some` when `DestinationConfig` was given: (OnSuccess, OnFailure).
    pub destinations: Option<(Option<String>, Option<String>)>,
}

/// Queued, in-flight and failed events of one function.
pub type FunctionEventCounts = (String, EventCounts);

impl Engine {
    /// Stores an event durably; returns once it is synced.
    pub(crate) async fn enqueue_event(
        &self,
        function: &str,
        qualifier: Option<String>,
        request_id: String,
        payload: Bytes,
        depth: u32,
    ) -> Result<(), EngineError> {
        let e = NewEvent {
            request_id,
            function: function.to_string(),
            qualifier,
            payload: payload.to_vec(),
            now_ms: now_ms(),
            depth,
        };
        self.inner.events.queue.enqueue(e).await.map_err(queue_error)?;
        self.inner.events.wake.notify_one();
        Ok(())
    }

    /// Starts the dispatcher: first puts back what a previous run left in flight.
    pub(crate) fn spawn_dispatcher(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            if let Some(inner) = weak.upgrade() {
                match inner.events.queue.recover().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(events = n, "events left in flight by the last run are queued again"),
                    Err(e) => tracing::error!(error = %e, "cannot recover in-flight events"),
                }
            }
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let engine = Engine { inner };
                let wait = engine.dispatch_once().await;
                let events = engine.inner.clone();
                drop(engine);
                tokio::select! {
                    () = events.events.wake.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
        });
    }

    /// Claims and starts what may run now; returns how long to sleep if nothing wakes it.
    async fn dispatch_once(&self) -> Duration {
        let events = &self.inner.events;
        if events.stopping() {
            return Duration::from_secs(3600);
        }
        let (capacity, allow) = {
            // Per function: its reserved concurrency (if set and not 0; events of a function
            // with reserved 0 are claimed to be failed at once), less what is in flight.
            let mut allow: HashMap<String, usize> = HashMap::new();
            for (name, f) in self.read_functions().iter() {
                if let Some(r) = f.lock().settings.reserved.filter(|r| *r > 0) {
                    allow.insert(name.clone(), (r as usize).min(IN_FLIGHT_MAX));
                }
            }
            let fl = events.in_flight();
            for (f, n) in fl.iter() {
                let a = allow.entry(f.clone()).or_insert(IN_FLIGHT_MAX);
                *a = a.saturating_sub(*n);
            }
            let total: usize = fl.values().sum();
            (IN_FLIGHT_MAX.saturating_sub(total), allow)
        };
        if capacity == 0 {
            return Duration::from_secs(1);
        }
        let skip: Vec<String> = allow.iter().filter(|(_, n)| **n == 0).map(|(f, _)| f.clone()).collect();
        let now = now_ms();
        let (claimed, corrupt) = match events.queue.claim(now, capacity, allow, IN_FLIGHT_MAX).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the event queue");
                return Duration::from_secs(1);
            }
        };
        for (id, why) in corrupt {
            tracing::error!(event = id, error = %why, "unreadable queue row moved to the failed store");
        }
        let full = claimed.len() == capacity;
        for c in claimed {
            *events.in_flight().entry(c.function.clone()).or_default() += 1;
            let engine = self.clone();
            let span = tracing::info_span!("event", request_id = %c.request_id, function = %c.function, id = c.id);
            tokio::spawn(
                async move {
                    let function = c.function.clone();
                    engine.deliver(c).await;
                    let events = &engine.inner.events;
                    {
                        let mut fl = events.in_flight();
                        if let Some(n) = fl.get_mut(&function) {
                            *n -= 1;
                            if *n == 0 {
                                fl.remove(&function);
                            }
                        }
                    }
                    events.wake.notify_one();
                }
                .instrument(span),
            );
        }
        if full {
            return Duration::ZERO;
        }
        // Functions at their limit wake the dispatcher when an event of theirs ends.
        match events.queue.next_due(skip).await {
            Ok(Some(due)) => Duration::from_millis((due - now_ms()).clamp(0, 1000) as u64),
            _ => Duration::from_secs(1),
        }
    }

    fn event_config(&self, function: &str, qualifier: Option<&str>) -> EventInvokeConfig {
        let key = (function.to_string(), qualifier.unwrap_or(Qualifier::LATEST).to_string());
        self.inner.events.configs().get(&key).cloned().unwrap_or_default()
    }

    /// One attempt of a claimed event, and what follows from it.
    async fn deliver(&self, c: Claimed) {
        let cfg = self.event_config(&c.function, c.qualifier.as_deref());
        let function_arn = self.arn(&c.function, Some(c.qualifier.as_deref().unwrap_or(Qualifier::LATEST)));
        let now = now_ms();
        // Too old already (it waited out a restart, say): no attempt.
        if now - c.enqueued_ms > i64::from(cfg.max_age_secs()) * 1000 {
            let rec = record(
                &c.request_id,
                &function_arn,
                Condition::EventAgeExceeded,
                c.attempts,
                &c.payload,
                200,
                None,
                false,
                None,
            );
            return self
                .finish(&c, &cfg, Condition::EventAgeExceeded, rec, "event older than MaximumEventAgeInSeconds".into())
                .await;
        }
        let reserved_zero =
            self.read_functions().get(&c.function).is_some_and(|f| f.lock().settings.reserved == Some(0));
        if reserved_zero {
            let msg = br#"{"errorMessage":"Rate Exceeded.","errorType":"TooManyRequestsException"}"#;
            let rec = record(
                &c.request_id,
                &function_arn,
                Condition::RetriesExhausted,
                c.attempts,
                &c.payload,
                429,
                None,
                false,
                Some(msg),
            );
            return self.finish(&c, &cfg, Condition::RetriesExhausted, rec, "reserved concurrency is 0".into()).await;
        }
        let target = FunctionName::parse(&c.function).and_then(|name| {
            let qualifier = c.qualifier.as_deref().map(Qualifier::parse).transpose()?;
            Ok(FunctionRef { name, qualifier })
        });
        let target = match target {
            Ok(t) => t,
            Err(e) => {
                let rec = record(
                    &c.request_id,
                    &function_arn,
                    Condition::RetriesExhausted,
                    c.attempts,
                    &c.payload,
                    400,
                    None,
                    false,
                    None,
                );
                return self.finish(&c, &cfg, Condition::RetriesExhausted, rec, format!("bad target: {e}")).await;
            }
        };
        let result = self.run_queued(&target, c.request_id.clone(), Bytes::from(c.payload.clone())).await;
        if self.inner.events.stopping() {
            // The shutdown may have destroyed its environment: the event runs again at start-up.
            return;
        }
        let attempts = c.attempts + 1;
        let (outcome, version, status, response, error_text) = match result {
            Ok((v, p, false)) => (Outcome::Success, Some(v), 200, Some(p), String::new()),
            Ok((v, p, true)) => {
                let text = format!("function error: {}", String::from_utf8_lossy(&p[..p.len().min(200)]));
                (Outcome::FunctionError, Some(v), 200, Some(p), text)
            }
            Err(e @ (EngineError::Throttled { .. } | EngineError::Conflict(_) | EngineError::Internal { .. })) => {
                (Outcome::Retryable, None, 429, None, e.chain().to_string())
            }
            Err(e) => {
                // The function or qualifier is gone: nothing to retry.
                let rec = record(
                    &c.request_id,
                    &function_arn,
                    Condition::RetriesExhausted,
                    attempts,
                    &c.payload,
                    404,
                    None,
                    false,
                    None,
                );
                return self.finish(&c, &cfg, Condition::RetriesExhausted, rec, e.chain().to_string()).await;
            }
        };
        let (errors, throttles) = match outcome {
            Outcome::FunctionError => (c.errors + 1, c.throttles),
            Outcome::Retryable => (c.errors, c.throttles + 1),
            Outcome::Success => (c.errors, c.throttles),
        };
        // A throttled attempt did not run the function.
        let invoked = if outcome == Outcome::Retryable { c.attempts } else { attempts };
        match next_step(outcome, &cfg, self.inner.events.retry_base, c.enqueued_ms, errors, throttles, now_ms()) {
            Next::RetryAt(due_ms) => {
                tracing::info!(attempts = invoked, error = %error_text, "event will be retried");
                let s = Settle::Retry { due_ms, attempts: invoked, errors, throttles, last_error: error_text };
                if let Err(e) = self.inner.events.queue.settle(c.id, s).await {
                    tracing::error!(error = %e, "cannot requeue event; it runs again after a restart");
                }
            }
            Next::Done(condition) => {
                let rec = record(
                    &c.request_id,
                    &function_arn,
                    condition,
                    invoked,
                    &c.payload,
                    status,
                    version.as_deref(),
                    outcome == Outcome::FunctionError,
                    response.as_deref(),
                );
                let why = if condition == Condition::Success { String::new() } else { error_text };
                let c = Claimed { attempts: invoked, ..c };
                self.finish(&c, &cfg, condition, rec, why).await;
            }
        }
    }

    /// Ends an event: its record goes to the destination for `condition`, else (or when that
    /// cannot be reached) into the failed store. A success without destination just ends.
    async fn finish(
        &self,
        c: &Claimed,
        cfg: &EventInvokeConfig,
        condition: Condition,
        rec: serde_json::Value,
        why: String,
    ) {
        let dest = if condition == Condition::Success { &cfg.on_success } else { &cfg.on_failure };
        let settle = match dest {
            None if condition == Condition::Success => Settle::Delete,
            None => {
                tracing::warn!(condition = condition.as_str(), error = %why, "event failed; kept in the failed store");
                Settle::Fail {
                    attempts: c.attempts,
                    last_error: format!("{}: {why}", condition.as_str()),
                    record: rec.to_string(),
                }
            }
            Some(arn) => match self.send_record(arn, c.depth, &rec).await {
                Ok(()) => Settle::Delete,
                Err(unreachable) => {
                    tracing::warn!(destination = %arn, error = %unreachable, "destination unreachable; event kept in the failed store");
                    let mut last = format!("{}: destination {arn} unreachable: {unreachable}", condition.as_str());
                    if !why.is_empty() {
                        last.push_str(&format!(" (after {why})"));
                    }
                    Settle::Fail { attempts: c.attempts, last_error: last, record: rec.to_string() }
                }
            },
        };
        if let Err(e) = self.inner.events.queue.settle(c.id, settle).await {
            tracing::error!(error = %e, "cannot settle event; it runs again after a restart");
        }
    }

    /// Queues a record for a destination function.
    async fn send_record(&self, arn: &str, depth: u32, rec: &serde_json::Value) -> Result<(), String> {
        match ev::parse_destination(arn) {
            Some(Destination::Function { region, account, name, qualifier }) => {
                if !self.is_own(&region, &account) {
                    return Err(format!(
                        "a function of account {account} in {region}: kiln delivers destination records only to functions of the function's own account and region"
                    ));
                }
                if depth + 1 > ev::DESTINATION_DEPTH_MAX {
                    return Err(format!(
                        "a chain of {} destination records looks like a loop; stopped",
                        ev::DESTINATION_DEPTH_MAX
                    ));
                }
                let fname = FunctionName::parse(&name).map_err(|e| e.to_string())?;
                self.function(&fname).map_err(|e| e.chain().to_string())?;
                let request_id = uuid::Uuid::new_v4().to_string();
                self.enqueue_event(&name, qualifier, request_id, Bytes::from(rec.to_string()), depth + 1)
                    .await
                    .map_err(|e| e.chain().to_string())
            }
            Some(Destination::Foreign(_)) => Err("kiln does not run this service".into()),
            None => Err("not a destination ARN".into()),
        }
    }

    // ---- what users see ------------------------------------------------------------------

    /// Events of one function, at most `limit`, failed first.
    pub async fn list_events(&self, name: &FunctionName, limit: usize) -> Result<Vec<EventSummary>, EngineError> {
        self.inner.events.queue.list(Some(name.to_string()), limit).await.map_err(queue_error)
    }

    /// Puts failed events of a function back in the queue; returns how many.
    pub async fn redrive_events(&self, name: &FunctionName, id: Option<i64>) -> Result<usize, EngineError> {
        self.function(name)?;
        let n = self.inner.events.queue.redrive(name.to_string(), id, now_ms()).await.map_err(queue_error)?;
        self.inner.events.wake.notify_one();
        Ok(n)
    }

    /// Queued, in-flight and failed counts per function.
    pub async fn event_counts(&self) -> Result<Vec<FunctionEventCounts>, EngineError> {
        self.inner.events.queue.counts().await.map_err(queue_error)
    }

    /// Forgets a deleted function's queue and configs (its failed events stay for inspection).
    pub(crate) async fn forget_events(&self, name: &str) {
        self.inner.events.configs_mut().retain(|(f, _), _| f != name);
        match self.inner.events.queue.drop_function(name.to_string()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(function = name, events = n, "queued events of a deleted function removed"),
            Err(e) => tracing::error!(function = name, error = %e, "cannot remove a deleted function's events"),
        }
    }

    /// Loads the stored event invoke configs.
    pub(crate) fn load_event_configs(&self) -> Result<(), EngineError> {
        let all = self
            .inner
            .meta
            .all_event_configs::<EventInvokeConfig>()
            .map_err(|e| EngineError::internal("cannot read event invoke configs", e))?;
        let mut map = self.inner.events.configs_mut();
        for (name, (q, c)) in all {
            map.insert((name, q), c);
        }
        Ok(())
    }

    // ---- event invoke config API ---------------------------------------------------------

    /// The qualifier a config is kept under; the function (and qualifier) must exist.
    fn config_key(&self, r: &FunctionRef) -> Result<(String, String), EngineError> {
        let f = self.function(&r.name)?;
        let q = match &r.qualifier {
            None | Some(Qualifier::Latest) => Qualifier::LATEST.to_string(),
            Some(q @ Qualifier::Version(n)) => {
                if !f.lock().versions.contains_key(n) {
                    return Err(self.not_found(r.name.as_str(), Some(&q.to_string())));
                }
                q.to_string()
            }
            Some(Qualifier::Alias(a)) => {
                if !f.lock().aliases.contains_key(a) {
                    return Err(self.not_found(r.name.as_str(), Some(a)));
                }
                a.clone()
            }
        };
        Ok((r.name.to_string(), q))
    }

    fn no_config(&self, name: &str, q: &str) -> EngineError {
        EngineError::no_event_invoke_config(&self.arn(name, Some(q)))
    }

    /// Whether a function ARN's region and account are this engine's.
    fn is_own(&self, region: &str, account: &str) -> bool {
        let own = &self.inner.opts.partition;
        own.region == region && own.account_id == account
    }

    fn check_destination(&self, function: &str, arn: &str) -> Result<(), EngineError> {
        match ev::parse_destination(arn) {
            // Another account's or region's function cannot be looked at from here; Lambda takes
            // such a destination too (whether it may be invoked shows at delivery).
            Some(Destination::Function { region, account, .. }) if !self.is_own(&region, &account) => Ok(()),
            Some(Destination::Function { name, .. }) => {
                if name == function {
                    return Err(EngineError::invalid("You can't specify the function as a destination for itself."));
                }
                let exists = FunctionName::parse(&name).ok().is_some_and(|n| self.function(&n).is_ok());
                if !exists {
                    return Err(EngineError::invalid(format!("The destination ARN {arn} is invalid.")));
                }
                Ok(())
            }
            Some(Destination::Foreign(_)) => Ok(()),
            None => Err(EngineError::invalid(format!("The destination ARN {arn} is invalid."))),
        }
    }

    /// Put (replace) or, with `merge`, Update an event invoke config.
    pub fn put_event_config(
        &self,
        r: &FunctionRef,
        input: EventConfigInput,
        merge: bool,
    ) -> Result<(String, EventInvokeConfig), EngineError> {
        if input.maximum_retry_attempts.is_none()
            && input.maximum_event_age_secs.is_none()
            && input.destinations.is_none()
        {
            return Err(EngineError::invalid(
                "You must specify at least one of error handling or destination setting.",
            ));
        }
        let key = self.config_key(r)?;
        let retries = input.maximum_retry_attempts.map(ev::validate_retries).transpose()?;
        let age = input.maximum_event_age_secs.map(ev::validate_age).transpose()?;
        if let Some((s, f)) = &input.destinations {
            for arn in [s, f].into_iter().flatten() {
                self.check_destination(&key.0, arn)?;
            }
        }
        let mut map = self.inner.events.configs_mut();
        let mut c = if merge {
            map.get(&key).cloned().ok_or_else(|| self.no_config(&key.0, &key.1))?
        } else {
            EventInvokeConfig::default()
        };
        if !merge || retries.is_some() {
            c.maximum_retry_attempts = retries;
        }
        if !merge || age.is_some() {
            c.maximum_event_age_secs = age;
        }
        if let Some((s, f)) = input.destinations {
            c.on_success = s;
            c.on_failure = f;
        }
        c.last_modified_ms = now_ms();
        self.inner
            .meta
            .put_event_config(&key.0, &key.1, &c)
            .map_err(|e| EngineError::internal("cannot store event invoke config", e))?;
        map.insert(key.clone(), c.clone());
        Ok((key.1, c))
    }

    pub fn get_event_config(&self, r: &FunctionRef) -> Result<(String, EventInvokeConfig), EngineError> {
        let key = self.config_key(r)?;
        let c = self.inner.events.configs().get(&key).cloned().ok_or_else(|| self.no_config(&key.0, &key.1))?;
        Ok((key.1, c))
    }

    pub fn delete_event_config(&self, r: &FunctionRef) -> Result<(), EngineError> {
        let key = self.config_key(r)?;
        let mut map = self.inner.events.configs_mut();
        if !map.contains_key(&key) {
            return Err(self.no_config(&key.0, &key.1));
        }
        self.inner
            .meta
            .delete_event_config(&key.0, &key.1)
            .map_err(|e| EngineError::internal("cannot delete event invoke config", e))?;
        map.remove(&key);
        Ok(())
    }

    pub fn list_event_configs(
        &self,
        name: &FunctionName,
        marker: Option<&str>,
        max_items: Option<usize>,
    ) -> Result<Page<(String, EventInvokeConfig)>, EngineError> {
        self.function(name)?;
        let all: Vec<(String, EventInvokeConfig)> = self
            .inner
            .events
            .configs()
            .iter()
            .filter(|((f, _), _)| f == name.as_str())
            .map(|((_, q), c)| (q.clone(), c.clone()))
            .collect();
        Ok(crate::paginate(all, marker, max_items, |(q, _)| q.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(60);

    fn cfg(retries: Option<u32>, age: Option<u32>) -> EventInvokeConfig {
        EventInvokeConfig { maximum_retry_attempts: retries, maximum_event_age_secs: age, ..Default::default() }
    }

    #[test]
    fn function_errors_retry_after_one_then_two_bases_then_give_up() {
        let c = cfg(None, None);
        let t0 = 1_000_000;
        assert_eq!(next_step(Outcome::FunctionError, &c, BASE, t0, 1, 0, t0), Next::RetryAt(t0 + 60_000));
        let t1 = t0 + 60_500;
        assert_eq!(next_step(Outcome::FunctionError, &c, BASE, t0, 2, 0, t1), Next::RetryAt(t1 + 120_000));
        let t2 = t1 + 121_000;
        assert_eq!(next_step(Outcome::FunctionError, &c, BASE, t0, 3, 0, t2), Next::Done(Condition::RetriesExhausted));
    }

    #[test]
    fn retry_attempts_zero_means_one_attempt() {
        let c = cfg(Some(0), None);
        assert_eq!(next_step(Outcome::FunctionError, &c, BASE, 0, 1, 0, 5), Next::Done(Condition::RetriesExhausted));
        assert_eq!(next_step(Outcome::Success, &c, BASE, 0, 0, 0, 5), Next::Done(Condition::Success));
    }

    #[test]
    fn a_retry_past_the_maximum_age_ends_the_event() {
        let c = cfg(Some(2), Some(90));
        // Retry due at 60 s of age: fine. The next (120 s later) would be past 90 s.
        assert_eq!(next_step(Outcome::FunctionError, &c, BASE, 0, 1, 0, 0), Next::RetryAt(60_000));
        assert_eq!(
            next_step(Outcome::FunctionError, &c, BASE, 0, 2, 0, 60_000),
            Next::Done(Condition::EventAgeExceeded)
        );
    }

    #[test]
    fn throttles_back_off_doubling_to_five_minutes_until_the_age_runs_out() {
        let c = cfg(None, None);
        let mut now = 0;
        let mut waits = Vec::new();
        let mut n = 0;
        loop {
            n += 1;
            match next_step(Outcome::Retryable, &c, BASE, 0, 0, n, now) {
                Next::RetryAt(at) => {
                    waits.push(at - now);
                    now = at;
                }
                Next::Done(cond) => {
                    assert_eq!(cond, Condition::EventAgeExceeded);
                    break;
                }
            }
        }
        assert_eq!(&waits[..4], &[1_000, 2_000, 4_000, 8_000]);
        assert!(waits.iter().all(|w| *w <= 300_000));
        assert_eq!(*waits.last().unwrap_or(&0), 300_000);
        // Six hours of trying, give or take the last wait.
        assert!(now <= 21_600_000 && now > 21_600_000 - 300_000, "{now}");
        // Throttles do not use up the function-error retries.
        assert_eq!(next_step(Outcome::FunctionError, &c, BASE, 0, 1, n, now), Next::RetryAt(now + 60_000));
    }

    #[test]
    fn record_has_lambdas_shape() {
        let r = record(
            "rid",
            "arn:x:$LATEST",
            Condition::RetriesExhausted,
            3,
            b"{\"a\":1}",
            200,
            Some("$LATEST"),
            true,
            Some(b"{\"errorMessage\":\"x\"}"),
        );
        assert_eq!(r["version"], "1.0");
        assert_eq!(r["requestContext"]["condition"], "RetriesExhausted");
        assert_eq!(r["requestContext"]["approximateInvokeCount"], 3);
        assert_eq!(r["requestPayload"]["a"], 1);
        assert_eq!(r["responseContext"]["functionError"], "Unhandled");
        assert_eq!(r["responseContext"]["executedVersion"], "$LATEST");
        assert_eq!(r["responsePayload"]["errorMessage"], "x");
        assert!(r["timestamp"].as_str().unwrap_or("").ends_with('Z'));
    }
}
