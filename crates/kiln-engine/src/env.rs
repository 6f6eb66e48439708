//! One execution environment: a sandbox, its Runtime API and its log capture, and the two things
//! that happen to it — Init and invocations.

use crate::error::EngineError;
use crate::logs::{end_and_report, Capture, LogSink};
use crate::runtimes::{Launch, Runtimes};
use crate::teardown::Teardown;
use bytes::Bytes;
use kiln_model::error_type::{request_message, response_too_large_message, timed_out_detail};
use kiln_model::{env as vars, ErrorType, FunctionConfig, FunctionErrorType, Partition};
use kiln_runtime_api::{Freezer, InitOutcome, Invocation, Outcome, RuntimeApi};
use kiln_sandbox::{Backend, ExitInfo, Sandbox, SandboxSpec};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Why an environment came to be, as `AWS_LAMBDA_INITIALIZATION_TYPE` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitType {
    OnDemand,
    Provisioned,
}

impl InitType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnDemand => "on-demand",
            Self::Provisioned => "provisioned-concurrency",
        }
    }
}

/// A live environment.
pub struct Environment {
    pub id: String,
    pub config: Arc<FunctionConfig>,
    /// Pool generation it belongs to; an update bumps the pool's and retires older ones.
    pub generation: u64,
    pub init_type: InitType,
    pub created: Instant,
    pub invocations: AtomicU64,
    /// When it last finished an invocation (or Init); keep-alive and eviction look at it.
    pub last_used: std::sync::Mutex<Instant>,
    sandbox: Arc<dyn Sandbox>,
    /// Its share of the memory budget. Retiring it hands the share to the teardown thread, which
    /// gives it back once the sandbox is destroyed; otherwise it goes with the environment.
    lease: std::sync::Mutex<Option<crate::memory::MemoryLease>>,
    api: RuntimeApi,
    exit: watch::Receiver<Option<ExitInfo>>,
    capture: Arc<Capture>,
    /// Set while the sandbox is frozen, for the metrics' `frozen` state.
    frozen: Arc<AtomicBool>,
    /// Where its sandbox is destroyed once it is retired (`teardown.rs`).
    teardown: Teardown,
    /// Set once it is retired or destroyed: the sandbox is handed on once.
    gone: AtomicBool,
    /// An invocation's END and REPORT still to write, its answer gone out first: whoever comes
    /// first writes them, the task spawned after the answer or the next invocation before its
    /// START (see [`Environment::write_end`]).
    end: std::sync::Mutex<Option<PendingEnd>>,
}

/// The end of an invocation whose answer went out first: written by [`Environment::write_end`].
struct PendingEnd {
    /// Keeps a log read waiting for these lines (see [`crate::logs::LogSink::flush`]).
    _logged: crate::logs::EndToCome,
    request_id: Arc<str>,
    duration_ms: f64,
    init_ms: Option<f64>,
}

/// What Init produced.
pub enum InitResult {
    Ready {
        env: Arc<Environment>,
        init_ms: f64,
    },
    /// Init failed: the error payload for the first invocation; the environment is gone.
    Failed {
        error_type: FunctionErrorType,
        payload: Bytes,
    },
}

impl InitResult {
    /// Init failed for a reason the platform names.
    fn failed(error_type: ErrorType, message: &str) -> Self {
        Self::Failed { error_type: error_type.into(), payload: error_payload(error_type.as_str(), message) }
    }
}

enum InitWait {
    /// `None`: the bootstrap ended (or the API closed) before Init was over.
    Done(Option<InitOutcome>),
    TimedOut,
}

/// What one invocation produced.
pub struct RunResult {
    pub payload: Bytes,
    pub function_error: bool,
    /// Whether the environment can serve again.
    pub healthy: bool,
    /// The environment died before its runtime fetched the event: the event may run elsewhere.
    pub undelivered: bool,
    pub log_tail: Option<Vec<u8>>,
    pub timed_out: bool,
    pub duration_ms: f64,
    /// The invocation's END and REPORT are left to write after the caller has its answer: the
    /// caller of [`Environment::invoke`] calls [`Environment::write_end`] once it has answered.
    pub(crate) end_later: bool,
}

struct SandboxFreezer(Arc<dyn Sandbox>, Arc<AtomicBool>);

impl Freezer for SandboxFreezer {
    fn freeze(&self) {
        match self.0.freeze() {
            Ok(()) => self.1.store(true, Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "freeze failed"),
        }
    }
    fn thaw(&self) {
        self.1.store(false, Ordering::Relaxed);
        if let Err(e) = self.0.thaw() {
            tracing::warn!(error = %e, "thaw failed");
        }
    }
}

/// Everything a cold start needs to know.
pub struct ColdStart<'a> {
    pub backend: &'a Arc<dyn Backend>,
    pub partition: &'a Partition,
    /// Managed runtimes: what starts a `python3.X` or `nodejsN.x` function.
    pub runtimes: &'a Runtimes,
    pub logs: &'a LogSink,
    /// Where the environment's sandbox goes when it is retired.
    pub teardown: &'a Teardown,
    pub config: Arc<FunctionConfig>,
    pub code_dir: PathBuf,
    /// The merged layers (`/opt`), if the function has any.
    pub opt_dir: Option<PathBuf>,
    pub generation: u64,
    pub init_type: InitType,
    /// How long Init may take before it is reported as timed out.
    pub init_timeout: Duration,
    pub lease: Option<crate::memory::MemoryLease>,
}

/// How long an environment whose runtime is waiting for its next event stays thawed. Calls that
/// come back to back (a busy function) skip the freeze and the thaw; an idle environment is
/// frozen after this, so background work of the function stops as on Lambda.
pub const FREEZE_GRACE: Duration = Duration::from_millis(10);

/// How long a runtime that answered its last event but never came back to `next` (it was frozen
/// after [`FREEZE_GRACE`]) gets, once thawed by a new event, to fetch it. Past this the
/// environment is destroyed and the event goes to another environment: a runtime that does not
/// ask for work again is broken or hostile, and must not hold an event until its timeout.
pub const NEXT_PICKUP_BOUND: Duration = Duration::from_secs(3);

pub const BOOTSTRAP_PATHS: &str = "[/var/task/bootstrap /opt/bootstrap]";

impl ColdStart<'_> {
    /// Builds an environment and runs its Init.
    pub async fn run(self, request_id: &str) -> Result<InitResult, EngineError> {
        let cfg = self.config.clone();
        let unavailable = |message: &str| Ok(InitResult::failed(ErrorType::RuntimeUnavailable, message));
        let (bootstrap, notice, in_opt) = match self.runtimes.launch(cfg.runtime) {
            Launch::Custom => {
                // As on Lambda: the function's own bootstrap, else one from its layers.
                let bootstrap = self.code_dir.join("bootstrap");
                let in_task = is_executable_file(&bootstrap);
                let in_opt =
                    !in_task && self.opt_dir.as_ref().is_some_and(|d| is_executable_file(&d.join("bootstrap")));
                if !in_task && !in_opt {
                    // Lambda's two wordings: no bootstrap at all, or one it may not execute.
                    let message = if std::fs::metadata(&bootstrap).is_ok_and(|m| m.is_file()) {
                        request_message(request_id, "fork/exec /var/task/bootstrap: permission denied")
                    } else {
                        request_message(request_id, format_args!("Couldn't find valid bootstrap(s): {BOOTSTRAP_PATHS}"))
                    };
                    return Ok(InitResult::failed(ErrorType::RuntimeInvalidEntrypoint, &message));
                }
                (PathBuf::from("bootstrap"), None, in_opt)
            }
            Launch::Unavailable { message } => return unavailable(&message),
            Launch::Client { launcher, notice } => match self.backend.sandbox_path(&launcher) {
                Some(p) => (p, notice, false),
                None => {
                    return unavailable(&format!(
                        "kiln cannot run the {} runtime: its runtime client is not visible inside the {} sandbox",
                        cfg.runtime.as_str(),
                        self.backend.name()
                    ))
                }
            },
        };
        crate::fds::check_cold_start()?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let today = time::OffsetDateTime::now_utc().date();
        let stream: Arc<str> =
            format!("{:04}/{:02}/{:02}/[{}]{}", today.year(), today.month() as u8, today.day(), cfg.version, id).into();
        let function: Arc<str> = cfg.name.as_str().into();
        let spec = SandboxSpec {
            id: id.clone(),
            code_dir: self.code_dir.clone(),
            bootstrap,
            opt_dir: self.opt_dir.clone(),
            bootstrap_in_opt: in_opt,
            env: environment(&cfg, self.partition, &stream, self.init_type),
            memory_mb: cfg.memory_mb,
            tmp_mb: cfg.ephemeral_storage_mb,
        };
        let started = Instant::now();
        let backend = self.backend.clone();
        // On a multi-threaded runtime the claim runs on this very thread (`block_in_place` hands
        // the worker's other tasks to another thread in the background): `spawn_blocking` would
        // put two thread wake-ups (there and back) on every cold start's path, each of which
        // costs tens of microseconds or more when it lands on an idle vCPU.
        let spawned =
            if tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
                tokio::task::block_in_place(move || backend.spawn(&spec))
            } else {
                tokio::task::spawn_blocking(move || backend.spawn(&spec))
                    .await
                    .map_err(|e| EngineError::internal("sandbox task failed", e))?
            }
            .map_err(|e| EngineError::internal("cannot create execution environment", e))?;
        let sandbox: Arc<dyn Sandbox> = Arc::from(spawned.sandbox);
        let frozen = Arc::new(AtomicBool::new(false));
        let api = RuntimeApi::new(
            Box::new(SandboxFreezer(sandbox.clone(), frozen.clone())),
            self.init_type == InitType::Provisioned,
            FREEZE_GRACE,
        );
        let exit = sandbox.exit_watch();
        // On a failure from here on the sandbox ends on the teardown thread, not in a `Drop` on
        // this worker (destroying blocks for milliseconds).
        let capture = Capture::start(spawned.output, self.logs.clone(), function, stream)
            .map_err(|e| EngineError::internal("cannot capture function output", e))
            .and_then(|capture| {
                api.serve(spawned.runtime_listener)
                    .map_err(|e| EngineError::internal("cannot serve the runtime api", e))?;
                Ok(capture)
            });
        let capture = match capture {
            Ok(capture) => capture,
            Err(e) => {
                api.close();
                self.teardown.destroy(sandbox).await;
                return Err(e);
            }
        };
        let env = Arc::new(Environment {
            id,
            config: cfg.clone(),
            generation: self.generation,
            init_type: self.init_type,
            created: started,
            invocations: AtomicU64::new(0),
            last_used: std::sync::Mutex::new(started),
            sandbox,
            lease: std::sync::Mutex::new(self.lease),
            api,
            exit,
            capture,
            frozen,
            teardown: self.teardown.clone(),
            gone: AtomicBool::new(false),
            end: std::sync::Mutex::new(None),
        });
        env.capture.platform(format!(
            "INIT_START Runtime Version: {}.v1\tRuntime Version ARN: arn:aws:lambda:{}::runtime:kiln",
            crate::runtimes::version_label(cfg.runtime),
            self.partition.region
        ));
        if let Some(notice) = notice {
            env.capture.platform(notice);
        }
        tracing::debug!(env = %env.id, function = %cfg.name, "environment created");

        let outcome = match env.wait_init(self.init_timeout).await {
            InitWait::Done(o) => o,
            InitWait::TimedOut => {
                let init_ms = ms(started.elapsed());
                env.capture
                    .platform(format!("INIT_REPORT Init Duration: {init_ms:.2} ms\tPhase: init\tStatus: timeout"));
                // The burst of CPU is for the Init phase only (at most `init_timeout` of it).
                if let Err(e) = env.sandbox.end_init() {
                    tracing::warn!(env = %env.id, error = %e, "cannot end the init CPU burst");
                }
                // Lambda goes on with the Init inside the invocation ("suppressed init"), under
                // the function's own timeout.
                match env.wait_init(Duration::from_secs(cfg.timeout_secs.into())).await {
                    InitWait::Done(o) => o,
                    InitWait::TimedOut => {
                        env.destroy_now().await;
                        return Ok(InitResult::failed(
                            ErrorType::SandboxTimedout,
                            &request_message(request_id, timed_out_detail(cfg.timeout_secs)),
                        ));
                    }
                }
            }
        };
        let init_ms = ms(started.elapsed());
        match outcome {
            Some(InitOutcome::Ready) => {
                // Init had a burst of CPU; invocations get the function's own share.
                if let Err(e) = env.sandbox.end_init() {
                    tracing::warn!(env = %env.id, error = %e, "cannot end the init CPU burst");
                }
                Ok(InitResult::Ready { env, init_ms })
            }
            Some(InitOutcome::Error { error_type, body }) => {
                let error_type = error_type
                    .map_or(FunctionErrorType::Platform(ErrorType::RuntimeUnknown), FunctionErrorType::Reported);
                env.capture.drain();
                env.capture.platform(format!(
                    "INIT_REPORT Init Duration: {init_ms:.2} ms\tPhase: init\tStatus: error\tError Type: {error_type}"
                ));
                env.destroy_now().await;
                let payload = if body.is_empty() { error_payload(error_type.as_str(), "") } else { body };
                Ok(InitResult::Failed { error_type, payload })
            }
            // The bootstrap ended (or the API closed) before its first `next`.
            _ => {
                let info = env.wait_exit().await;
                env.capture.drain();
                let (error_type, message) = exit_error(request_id, info);
                env.capture.platform(format!(
                    "INIT_REPORT Init Duration: {init_ms:.2} ms\tPhase: init\tStatus: error\tError Type: {error_type}"
                ));
                env.destroy_now().await;
                Ok(InitResult::failed(error_type, &message))
            }
        }
    }
}

impl Environment {
    /// Runs one invocation. `init_ms` is set on the first invocation of a cold environment.
    /// With a `sink`, the answer goes there as the runtime writes it (see `stream.rs`) and the
    /// result's payload is only an error's.
    pub(crate) async fn invoke(
        &self,
        invocation: Invocation,
        init_ms: Option<f64>,
        keep_tail: bool,
        sink: Option<&crate::stream::Sink>,
    ) -> RunResult {
        // The previous invocation's END and REPORT come before this one's START.
        self.write_end();
        let request_id = invocation.request_id.clone();
        let cfg = &self.config;
        self.invocations.fetch_add(1, Ordering::Relaxed);
        self.capture.begin(keep_tail);
        self.capture.platform(format!("START RequestId: {request_id} Version: {}", cfg.version));
        let timeout = Duration::from_secs(cfg.timeout_secs.into());
        let started = Instant::now();
        // A runtime that answered before but never asked for `next` again has a short bound to
        // fetch this event once thawed.
        let watch_pickup = self.api.awaiting_next();
        let rx = self.api.dispatch(invocation);
        enum Ended {
            Answer(Outcome),
            Exit(ExitInfo),
            Timeout,
            NoPickup,
            Streamed(crate::stream::Followed),
        }
        let no_pickup = async {
            if !watch_pickup {
                return std::future::pending().await;
            }
            tokio::time::sleep(NEXT_PICKUP_BOUND).await;
            if !self.api.undelivered(&request_id) {
                std::future::pending::<()>().await;
            }
        };
        let ended = tokio::select! {
            biased;
            r = rx => match r {
                Ok(o) => Ended::Answer(o),
                Err(_) => Ended::Exit(self.wait_exit().await),
            },
            info = self.exited() => Ended::Exit(info),
            () = tokio::time::sleep(timeout) => Ended::Timeout,
            () = no_pickup => Ended::NoPickup,
        };
        let deadline = tokio::time::Instant::from_std(started + timeout);
        let ended = match ended {
            Ended::Answer(Outcome::Stream(stream)) => match self.follow_stream(stream, sink, deadline).await {
                crate::stream::Followed::Exit(info) => Ended::Exit(info),
                crate::stream::Followed::Timeout => Ended::Timeout,
                other => Ended::Streamed(other),
            },
            Ended::Answer(Outcome::Response(body)) if sink.is_some() => match sink {
                Some(sink) => match self.forward_buffered(body, sink, deadline).await {
                    Some(crate::stream::Followed::Timeout) => Ended::Timeout,
                    Some(other) => Ended::Streamed(other),
                    None => Ended::Answer(Outcome::Response(Bytes::new())),
                },
                None => Ended::Answer(Outcome::Response(Bytes::new())),
            },
            other => other,
        };
        self.capture.answered();
        let duration_ms = ms(started.elapsed());
        let undelivered =
            matches!(ended, Ended::NoPickup) || (matches!(ended, Ended::Exit(_)) && self.api.undelivered(&request_id));
        let timed_out = matches!(ended, Ended::Timeout);
        let (payload, function_error, healthy, status) = match ended {
            Ended::Answer(Outcome::Response(body)) => (body, false, true, None),
            Ended::Answer(Outcome::Error { error_type, body }) => {
                let payload = if body.is_empty() {
                    error_payload(error_type.as_deref().unwrap_or(ErrorType::Unhandled.as_str()), "")
                } else {
                    body
                };
                (payload, true, true, None)
            }
            // The runtime got a 413 it rarely survives (the Rust client exits): start afresh.
            Ended::Answer(Outcome::ResponseTooLarge) => failed(
                ErrorType::FunctionResponseSizeTooLarge,
                &response_too_large_message(kiln_model::limits::RESPONSE_MAX_BYTES as u64),
            ),
            Ended::Answer(Outcome::InvalidResponseMode) => failed(
                ErrorType::RuntimeInvalidResponseModeHeader,
                &request_message(&request_id, "Invalid function response mode"),
            ),
            Ended::Streamed(followed) => crate::stream::settle(followed, &request_id),
            // Streams are followed above; one left here has no reader, like a cut-off body.
            Ended::Answer(Outcome::Stream(_)) => crate::stream::settle(
                crate::stream::Followed::Ended { end: kiln_runtime_api::StreamEnd::Truncated, collected: Bytes::new() },
                &request_id,
            ),
            Ended::Exit(info) => {
                let (error_type, message) = exit_error(&request_id, info);
                failed(error_type, &message)
            }
            Ended::NoPickup => {
                tracing::info!(env = %self.id, "runtime never came back for its next event; environment destroyed");
                let message = format!(
                    "the runtime did not ask for its next event within {} seconds",
                    NEXT_PICKUP_BOUND.as_secs()
                );
                (
                    error_payload(ErrorType::SandboxTimedout.as_str(), &request_message(&request_id, message)),
                    true,
                    false,
                    Some(Status::Timeout),
                )
            }
            Ended::Timeout => {
                let message = timed_out_detail(cfg.timeout_secs);
                let now = time::OffsetDateTime::now_utc();
                self.capture.drain();
                self.capture.platform(format!("{} {request_id} {message}", rfc3339(now)));
                (
                    error_payload(ErrorType::SandboxTimedout.as_str(), &request_message(&request_id, message)),
                    true,
                    false,
                    Some(Status::Timeout),
                )
            }
        };
        if !healthy {
            // Kill first, so that what the function printed is all in the pipe (on the teardown
            // thread: this worker serves other calls meanwhile).
            self.destroy_now().await;
        }
        // A plain answer goes to its caller before its END and REPORT are written (they hold
        // the function's last output, the peak memory and the REPORT's formatting: tens of
        // microseconds the caller need not wait for). A log tail, a stream or an environment
        // that failed keeps the order: what the caller gets depends on them.
        if healthy && status.is_none() && !keep_tail && sink.is_none() {
            let end = PendingEnd { _logged: self.capture.expect_end(), request_id, duration_ms, init_ms };
            *self.end.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(end);
            return RunResult {
                payload,
                function_error,
                healthy,
                undelivered,
                log_tail: None,
                timed_out,
                duration_ms,
                end_later: true,
            };
        }
        self.capture.drain();
        let max_mb = self.sandbox.max_memory_bytes().div_ceil(1024 * 1024);
        self.capture.platform(end_and_report(
            &request_id,
            duration_ms,
            cfg.memory_mb,
            max_mb,
            init_ms,
            status.map(Status::report),
        ));
        if let (false, Some(Status::Error(t))) = (healthy, status) {
            if t != ErrorType::FunctionResponseSizeTooLarge {
                self.capture.platform(request_message(&request_id, exit_text(&payload)));
                self.capture.platform(t.as_str().to_owned());
            }
        }
        let log_tail = self.capture.finish();
        RunResult { payload, function_error, healthy, undelivered, log_tail, timed_out, duration_ms, end_later: false }
    }

    /// Writes the END and REPORT of an invocation whose answer went out first (see
    /// [`RunResult::end_later`]), if no one has yet. The lock is held while they are written, so
    /// a next invocation that comes meanwhile starts after them.
    pub(crate) fn write_end(&self) {
        let mut slot = self.end.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(end) = slot.take() else {
            return;
        };
        self.capture.drain();
        let max_mb = self.sandbox.max_memory_bytes().div_ceil(1024 * 1024);
        self.capture.platform(end_and_report(
            &end.request_id,
            end.duration_ms,
            self.config.memory_mb,
            max_mb,
            end.init_ms,
            None,
        ));
        self.capture.finish();
    }

    /// Resolves when the bootstrap has ended.
    pub(crate) async fn exited(&self) -> ExitInfo {
        let mut exit = self.exit.clone();
        let info = exit.wait_for(Option::is_some).await.ok().and_then(|v| *v);
        info.unwrap_or(ExitInfo::Code(-1))
    }

    async fn wait_exit(&self) -> ExitInfo {
        // Once the API gave up, the process is on its way out; do not wait for ever.
        tokio::time::timeout(Duration::from_secs(2), self.exited()).await.unwrap_or(ExitInfo::Code(-1))
    }

    /// Waits for Init to end, for the bootstrap to die, or for `limit`.
    async fn wait_init(&self, limit: Duration) -> InitWait {
        tokio::select! {
            biased;
            o = self.api.wait_init() => InitWait::Done(o),
            _ = self.exited() => InitWait::Done(None),
            () = tokio::time::sleep(limit) => InitWait::TimedOut,
        }
    }

    pub fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    pub fn idle_for(&self) -> Duration {
        self.last_used.lock().unwrap_or_else(|e| e.into_inner()).elapsed()
    }

    /// Whether the sandbox is frozen (an idle environment past the freeze grace).
    pub fn frozen(&self) -> bool {
        self.frozen.load(Ordering::Relaxed)
    }

    /// Whether the bootstrap is still running.
    pub fn alive(&self) -> bool {
        self.exit.borrow().is_none()
    }

    pub fn max_memory_bytes(&self) -> u64 {
        self.sandbox.max_memory_bytes()
    }

    /// The host's process id of the sandbox's top process.
    pub fn pid(&self) -> u32 {
        self.sandbox.pid()
    }

    /// Kills the environment and stops its Runtime API, on this thread: it blocks until the
    /// sandbox is gone. Shutdown only; async code retires ([`Environment::retire`]) or awaits
    /// [`Environment::destroy_now`].
    pub fn destroy(&self) {
        // An answered invocation's END and REPORT are written before the server stops.
        self.write_end();
        self.gone.store(true, Ordering::Release);
        self.api.close();
        self.sandbox.destroy();
    }

    /// Stops its Runtime API and hands the sandbox to the teardown thread, which destroys it;
    /// returns at once. Idempotent; dropping the environment does it too.
    pub fn retire(&self) {
        if self.gone.swap(true, Ordering::AcqRel) {
            return;
        }
        self.api.close();
        let lease = self.lease.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        self.teardown.retire(self.sandbox.clone(), lease);
    }

    /// Like [`Environment::destroy`], without blocking the thread: resolves once the sandbox is
    /// gone (destroyed on the teardown thread).
    pub(crate) async fn destroy_now(&self) {
        self.close_for_destroy();
        self.teardown.destroy(self.sandbox.clone()).await;
    }

    /// Marks it gone and closes its Runtime API, before its sandbox is destroyed.
    fn close_for_destroy(&self) {
        self.gone.store(true, Ordering::Release);
        self.api.close();
    }

    /// [`Environment::destroy_now`] for many at once: they are killed side by side and the
    /// call resolves once all are gone.
    pub(crate) async fn destroy_all_now(envs: &[Arc<Environment>]) {
        let Some(first) = envs.first() else {
            return;
        };
        for e in envs {
            e.close_for_destroy();
        }
        first.teardown.destroy_all(envs.iter().map(|e| e.sandbox.clone())).await;
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        // The task that was to write them may have been dropped with its runtime.
        self.write_end();
        self.retire();
    }
}

#[cfg(test)]
impl Environment {
    /// An environment with no runtime behind it (its Runtime API is never served), for tests of
    /// the pool's bookkeeping. It is alive until `sandbox` reports an exit.
    pub(crate) fn detached(
        config: Arc<FunctionConfig>,
        generation: u64,
        init_type: InitType,
        sandbox: Arc<dyn Sandbox>,
        logs: &LogSink,
    ) -> std::io::Result<Arc<Self>> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (reader, _writer) = std::io::pipe()?;
        let capture = Capture::start(reader.into(), logs.clone(), config.name.as_str().into(), id.as_str().into())?;
        let frozen = Arc::new(AtomicBool::new(false));
        let api = RuntimeApi::new(Box::new(SandboxFreezer(sandbox.clone(), frozen.clone())), false, FREEZE_GRACE);
        Ok(Arc::new(Self {
            id,
            config,
            generation,
            init_type,
            created: Instant::now(),
            invocations: AtomicU64::new(0),
            last_used: std::sync::Mutex::new(Instant::now()),
            exit: sandbox.exit_watch(),
            sandbox,
            lease: std::sync::Mutex::new(None),
            api,
            capture,
            frozen,
            teardown: Teardown::inline(),
            gone: AtomicBool::new(false),
            end: std::sync::Mutex::new(None),
        }))
    }
}

/// How an invocation that did not succeed ends its REPORT line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Timeout,
    Error(ErrorType),
}

impl Status {
    /// `Status: …` and `Error Type: …` of the REPORT line.
    fn report(self) -> (&'static str, Option<&'static str>) {
        match self {
            Self::Timeout => ("timeout", None),
            Self::Error(t) => ("error", Some(t.as_str())),
        }
    }
}

/// What an invocation the platform failed settles to: the error object, a function error, an
/// environment not to reuse, and the REPORT status.
pub(crate) fn failed(error_type: ErrorType, message: &str) -> crate::stream::Settled {
    (error_payload(error_type.as_str(), message), true, false, Some(Status::Error(error_type)))
}

fn exit_text(payload: &Bytes) -> String {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("errorMessage").and_then(|m| m.as_str()).map(str::to_owned))
        .and_then(|m| m.split_once(" Error: ").map(|(_, rest)| rest.to_owned()))
        .unwrap_or_default()
}

/// The error type and message for a bootstrap that ended.
fn exit_error(request_id: &str, info: ExitInfo) -> (ErrorType, String) {
    match info {
        ExitInfo::Code(0) => {
            (ErrorType::RuntimeExitError, request_message(request_id, "Runtime exited without providing a reason"))
        }
        ExitInfo::Code(n) => (
            ErrorType::RuntimeExitError,
            request_message(request_id, format_args!("Runtime exited with error: exit status {n}")),
        ),
        ExitInfo::Signal { signal, oom } => (
            if oom { ErrorType::RuntimeOutOfMemory } else { ErrorType::RuntimeExitError },
            request_message(request_id, format_args!("Runtime exited with error: signal: {}", signal_name(signal))),
        ),
        ExitInfo::ExecFailed => (
            ErrorType::RuntimeInvalidEntrypoint,
            request_message(request_id, "fork/exec /var/task/bootstrap: the bootstrap could not be executed"),
        ),
    }
}

/// Signal names as Go's `os.ProcessState` prints them, which is what Lambda shows.
fn signal_name(signal: i32) -> String {
    match signal {
        1 => "hangup".into(),
        2 => "interrupt".into(),
        3 => "quit".into(),
        4 => "illegal instruction".into(),
        5 => "trace/breakpoint trap".into(),
        6 => "aborted".into(),
        7 => "bus error".into(),
        8 => "floating point exception".into(),
        9 => "killed".into(),
        11 => "segmentation fault".into(),
        13 => "broken pipe".into(),
        15 => "terminated".into(),
        n => format!("signal {n}"),
    }
}

/// `{"errorType": …, "errorMessage": …}` as Lambda builds it.
pub fn error_payload(error_type: &str, message: &str) -> Bytes {
    Bytes::from(kiln_model::error_type::error_payload(error_type, message))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.format(&f).unwrap_or_default()
}

fn is_executable_file(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The bootstrap's environment: Lambda's variables, then the user's (reserved keys win).
fn environment(
    cfg: &FunctionConfig,
    partition: &Partition,
    stream: &str,
    init_type: InitType,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::with_capacity(32);
    let mut set = |k: &str, v: String| env.push((k.to_string(), v));
    set(vars::PATH, vars::DEFAULT_PATH_VALUE.into());
    set(vars::LD_LIBRARY_PATH, vars::DEFAULT_LD_LIBRARY_PATH.into());
    set(vars::LANG, "en_US.UTF-8".into());
    set(vars::XRAY_CONTEXT_MISSING, "LOG_ERROR".into());
    // Node's NODE_PATH is set by kiln's Node client, which computes it from the Node version.
    if matches!(cfg.runtime.language(), kiln_model::config::Language::Python { .. }) {
        set(vars::PYTHONPATH, vars::RUNTIME_DIR_PATH.into());
    }
    if let Some(user) = &cfg.environment {
        for (k, v) in user {
            set(k, v.clone());
        }
    }
    set(vars::HANDLER, cfg.handler.clone().unwrap_or_default());
    if !cfg.runtime.is_custom() {
        set(vars::EXECUTION_ENV, format!("AWS_Lambda_{}", cfg.runtime.as_str()));
    }
    if cfg.log_format == "JSON" {
        set(vars::LOG_FORMAT, "JSON".into());
        set(vars::LOG_LEVEL, cfg.application_log_level.clone().unwrap_or_else(|| "INFO".into()));
    }
    set(vars::TASK_ROOT, vars::TASK_ROOT_PATH.into());
    set(vars::RUNTIME_DIR, vars::RUNTIME_DIR_PATH.into());
    set(vars::REGION, partition.region.clone());
    set(vars::DEFAULT_REGION, partition.region.clone());
    set(vars::FUNCTION_NAME, cfg.name.to_string());
    set(vars::FUNCTION_MEMORY_SIZE, cfg.memory_mb.to_string());
    set(vars::FUNCTION_VERSION, cfg.version.to_string());
    set(vars::INITIALIZATION_TYPE, init_type.as_str().into());
    set(vars::LOG_GROUP_NAME, cfg.log_group.clone());
    set(vars::LOG_STREAM_NAME, stream.to_string());
    set(vars::ACCESS_KEY_ID, "kiln".into());
    set(vars::SECRET_ACCESS_KEY, "kiln".into());
    set(vars::SESSION_TOKEN, "kiln".into());
    set(vars::TZ, ":UTC".into());
    set("PWD", vars::TASK_ROOT_PATH.into());
    set("SHLVL", "0".into());
    // A user variable may replace a default (PATH, LANG, …); keep only the last of each key.
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<(String, String)> = env.into_iter().rev().filter(|(k, _)| seen.insert(k.clone())).collect();
    out.reverse();
    out
}
