//! The way of one invocation, from choosing an environment to putting it back.

use crate::admission::Permit;
use crate::env::{ColdStart, Environment, InitResult, InitType};
use crate::function::{Function, Ready};
use crate::metrics::{InvocationResult, Rejection, Ring, StartKind, VersionMetrics};
use crate::pool::Checkout;
use crate::{logs, now_ms, Engine, EngineError, InvokeKind, InvokeRequest, InvokeResponse, ThrottleReason};
use bytes::Bytes;
use kiln_model::{FunctionConfig, FunctionErrorType, Qualifier, Version};
use kiln_runtime_api::Invocation;
use std::sync::Arc;
use std::time::Duration;

/// One invocation, ready to run.
pub(crate) struct Job {
    engine: Engine,
    function: Arc<Function>,
    /// The pool (version) it runs in.
    version: Version,
    config: Arc<FunctionConfig>,
    request_id: String,
    invoked_arn: Arc<str>,
    payload: Bytes,
    client_context: Option<String>,
    tail: bool,
    metrics: Arc<VersionMetrics>,
    ring: Arc<Ring>,
    /// Set for a streamed invocation: where the answer goes as it is written.
    sink: Option<crate::stream::Sink>,
}

type Answer = (Bytes, bool, Option<Vec<u8>>);
type JobResult = Result<Answer, EngineError>;

enum Attempt {
    Done(Answer),
    /// The environment died before the runtime took the event.
    Undelivered(Answer),
}

/// Where the environment of a job comes from.
enum Source {
    Warm(Arc<Environment>, Option<Permit>),
    Cold(Ready, u64, Permit),
}

/// What `resolve` finds: the function, the version a call runs, its configuration, its metrics
/// handle and the function's per-second ring.
pub(crate) type Resolved = (Arc<Function>, Version, Arc<FunctionConfig>, Arc<VersionMetrics>, Arc<Ring>);

impl Engine {
    /// Finds the function and the version a call runs (an alias picks one by its weights).
    pub(crate) fn resolve(&self, r: &kiln_model::FunctionRef) -> Result<Resolved, EngineError> {
        let f = self.function(&r.name)?;
        let name = r.name.as_str();
        let qualifier = r.qualifier.as_ref().map(|q| q.to_string());
        let (version, config, metrics, ring) = {
            let mut st = f.lock();
            let version = match &r.qualifier {
                None | Some(Qualifier::Latest) => Version::Latest,
                Some(Qualifier::Version(n)) => {
                    if !st.versions.contains_key(n) {
                        return Err(self.not_found(name, qualifier.as_deref()));
                    }
                    Version::Number(*n)
                }
                Some(Qualifier::Alias(a)) => {
                    let alias = st.aliases.get(a).ok_or_else(|| self.not_found(name, Some(a)))?;
                    let target = match &alias.additional_version {
                        Some((extra, weight)) if random_unit() < *weight => extra,
                        _ => &alias.function_version,
                    };
                    // Checked when the alias was written; a stored target that is no version
                    // finds nothing.
                    target.parse::<Version>().map_err(|_| self.not_found(name, Some(a)))?
                }
            };
            let config = st.pools.get(&version).map(|pool| pool.ready().config.clone());
            match config {
                Some(config) => {
                    let metrics = st.metrics.version(&version.to_string());
                    (version, config, metrics, st.metrics.ring.clone())
                }
                None => {
                    let state = match st.visible.state {
                        kiln_model::FunctionState::Failed => "Failed",
                        _ => "Pending",
                    };
                    return Err(EngineError::function_state(state));
                }
            }
        };
        Ok((f, version, config, metrics, ring))
    }

    /// One attempt of a queued event: runs it like a synchronous call, with the event's own
    /// request id. Returns the version that ran and the answer.
    pub(crate) async fn run_queued(
        &self,
        r: &kiln_model::FunctionRef,
        request_id: String,
        payload: Bytes,
    ) -> Result<(String, Bytes, bool), EngineError> {
        let (job, version) = self.job_with_id(r, request_id, payload)?;
        let (payload, function_error, _) = job.run().await?;
        Ok((version, payload, function_error))
    }

    /// A synchronous job whose request id the caller chose (the event already carries it),
    /// and the version it runs.
    pub(crate) fn job_with_id(
        &self,
        r: &kiln_model::FunctionRef,
        request_id: String,
        payload: Bytes,
    ) -> Result<(Job, String), EngineError> {
        let (f, version, config, metrics, ring) = self.resolve(r)?;
        let ran = version.to_string();
        let job = Job {
            engine: self.clone(),
            function: f,
            version,
            config,
            request_id,
            invoked_arn: self
                .inner
                .opts
                .partition
                .function_arn(r.name.as_str(), r.qualifier.as_ref().map(|q| q.to_string()).as_deref())
                .into(),
            payload: if payload.is_empty() { Bytes::from_static(b"{}") } else { payload },
            client_context: None,
            tail: false,
            metrics,
            ring,
            sink: None,
        };
        Ok((job, ran))
    }

    /// Invoke: runs the function (or queues it, or only checks it) and returns its answer.
    pub async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, EngineError> {
        let name = req.function.name.as_str();
        let qualifier = req.function.qualifier.as_ref().map(|q| q.to_string());
        let (f, version, config, metrics, ring) = self.resolve(&req.function)?;
        let limit = match req.kind {
            InvokeKind::Event => kiln_model::limits::ASYNC_PAYLOAD_MAX_BYTES,
            _ => kiln_model::limits::SYNC_PAYLOAD_MAX_BYTES,
        };
        if req.payload.len() > limit {
            return Err(match req.kind {
                InvokeKind::Event => EngineError::event_payload_too_large(req.payload.len(), limit),
                _ => EngineError::request_too_large(limit, "InvokeFunction"),
            });
        }
        let request_id = crate::ids::request_id();
        if req.kind == InvokeKind::DryRun {
            return Ok(InvokeResponse::empty(request_id, version.to_string()));
        }
        if req.kind == InvokeKind::Event {
            // The 202 goes out only once the event is committed and synced in the queue; the
            // dispatcher (`asyncq`) runs it from there, resolving an alias again at delivery.
            drop((f, config));
            let payload = if req.payload.is_empty() { Bytes::from_static(b"{}") } else { req.payload };
            self.enqueue_event(name, qualifier, request_id.clone(), payload, 0).await?;
            return Ok(InvokeResponse::empty(request_id, version.to_string()));
        }
        let job = Job {
            engine: self.clone(),
            function: f,
            version,
            config,
            request_id: request_id.clone(),
            invoked_arn: self.inner.opts.partition.function_arn(name, qualifier.as_deref()).into(),
            payload: if req.payload.is_empty() { Bytes::from_static(b"{}") } else { req.payload },
            client_context: req.client_context,
            tail: req.tail_logs && req.kind == InvokeKind::RequestResponse,
            metrics,
            ring,
            sink: None,
        };
        // The invocation runs in this task, without a hop to another: if the caller goes away,
        // it moves to a task of its own, and the environment still finishes its work and goes
        // back to the pool.
        let (payload, function_error, log_tail) = crate::detach::finish_on_drop(job.run())
            .await
            .map_err(|e| EngineError::internal("invocation task failed", e))??;
        Ok(InvokeResponse { request_id, executed_version: version.to_string(), payload, function_error, log_tail })
    }
}

impl Engine {
    /// A synchronous call's job, checked as [`Engine::invoke`] checks it, with its request id and
    /// the version it runs.
    pub(crate) fn sync_job(&self, req: InvokeRequest) -> Result<(Job, String, String), EngineError> {
        let name = req.function.name.as_str();
        let qualifier = req.function.qualifier.as_ref().map(|q| q.to_string());
        let (f, version, config, metrics, ring) = self.resolve(&req.function)?;
        let limit = kiln_model::limits::SYNC_PAYLOAD_MAX_BYTES;
        if req.payload.len() > limit {
            return Err(EngineError::request_too_large(limit, "InvokeFunction"));
        }
        let request_id = crate::ids::request_id();
        let job = Job {
            engine: self.clone(),
            function: f,
            version,
            config,
            request_id: request_id.clone(),
            invoked_arn: self.inner.opts.partition.function_arn(name, qualifier.as_deref()).into(),
            payload: if req.payload.is_empty() { Bytes::from_static(b"{}") } else { req.payload },
            client_context: req.client_context,
            tail: req.tail_logs,
            metrics,
            ring,
            sink: None,
        };
        Ok((job, request_id, version.to_string()))
    }
}

fn random_unit() -> f64 {
    crate::ids::random_unit()
}

fn throttled(reason: ThrottleReason) -> EngineError {
    EngineError::rate_exceeded(reason)
}

impl Job {
    pub(crate) fn with_sink(mut self, sink: crate::stream::Sink) -> Self {
        self.sink = Some(sink);
        self
    }

    pub(crate) async fn run(self) -> JobResult {
        Arc::new(self).attempt().await
    }

    /// Chooses the environment: a free provisioned one, else (within admission) the most
    /// recently used idle one, else a cold start.
    fn choose(&self) -> Result<Source, EngineError> {
        let mut st = self.function.lock();
        let Some(pool) = st.pools.get_mut(&self.version) else {
            return Err(self.engine.not_found(self.config.name.as_str(), Some(&self.version.to_string())));
        };
        let checkout = pool.checkout(|| {
            self.engine.inner.admission.acquire(self.config.name.as_str()).map_err(|r| {
                self.engine.inner.metrics.reject(Rejection::Concurrency);
                throttled(r)
            })
        })?;
        if !matches!(checkout, Checkout::Provisioned(_)) && pool.pc_target() > 0 {
            self.metrics.spillover();
        }
        Ok(match checkout {
            Checkout::Provisioned(e) => {
                st.stats.provisioned_starts += 1;
                self.metrics.start(StartKind::Provisioned);
                Source::Warm(e, None)
            }
            Checkout::Warm(e, permit) => {
                st.stats.warm_starts += 1;
                self.metrics.start(StartKind::Warm);
                Source::Warm(e, Some(permit))
            }
            Checkout::Cold(ready, generation, permit) => Source::Cold(ready, generation, permit),
        })
    }

    async fn attempt(self: Arc<Self>) -> JobResult {
        // An idle environment can die before its runtime fetches the event (a background
        // thread crashed it, say); the event then goes to another environment, once.
        let result = match self.clone().attempt_once().await {
            Ok(Attempt::Done(r)) => Ok(r),
            Ok(Attempt::Undelivered(r)) => match self.clone().attempt_once().await {
                Ok(Attempt::Done(r2)) => Ok(r2),
                Ok(Attempt::Undelivered(_)) => {
                    self.record(InvocationResult::FunctionError, None, 0.0, 0.0);
                    Ok(r)
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            let r = match e {
                EngineError::Throttled { .. } => InvocationResult::Throttle,
                _ => InvocationResult::Internal,
            };
            self.record(r, None, 0.0, 0.0);
        }
        result
    }

    /// Counts one finished invocation in the version's metrics and the function's ring; the
    /// ring's latency of a cold call includes its Init, which is what its caller waited for.
    fn record(&self, result: InvocationResult, start: Option<StartKind>, duration_ms: f64, init_ms: f64) {
        self.metrics.result(result);
        if start.is_some() {
            self.metrics.duration.observe_ms(duration_ms);
        }
        let sec = (now_ms() / 1000).max(0) as u64;
        self.ring.record(sec, start, duration_ms + init_ms, result != InvocationResult::Success);
    }

    async fn attempt_once(self: Arc<Self>) -> Result<Attempt, EngineError> {
        let (env, init_ms, _permit) = match self.choose()? {
            Source::Warm(env, permit) => (env, None, permit),
            Source::Cold(ready, generation, permit) => {
                let started = self.cold_start(ready, generation).await;
                let mut st = self.function.lock();
                if let Some(pool) = st.pools.get_mut(&self.version) {
                    let env = match &started {
                        Ok(InitResult::Ready { env, .. }) => Some(env),
                        _ => None,
                    };
                    pool.cold_done(env);
                }
                match started {
                    Ok(InitResult::Ready { env, init_ms }) => {
                        st.stats.cold_starts += 1;
                        st.stats.init_ms_total += init_ms;
                        st.stats.init_ms_last = init_ms;
                        st.stats.init_ms_max = st.stats.init_ms_max.max(init_ms);
                        self.metrics.start(StartKind::Cold);
                        self.metrics.init.observe_ms(init_ms);
                        (env, Some(init_ms), Some(permit))
                    }
                    Ok(InitResult::Failed { error_type, payload }) => {
                        tracing::info!(function = %self.config.name, request_id = %self.request_id, %error_type, "init failed");
                        let tail = self.tail.then(|| init_failure_log(&self.request_id, &self.config, &error_type));
                        let timed_out = error_type.is_timeout();
                        self.record(
                            if timed_out { InvocationResult::Timeout } else { InvocationResult::FunctionError },
                            None,
                            0.0,
                            0.0,
                        );
                        return Ok(Attempt::Done((payload, true, tail)));
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let deadline_ms = (now_ms() as u64).saturating_add(u64::from(self.config.timeout_secs) * 1000);
        let invocation = Invocation {
            request_id: self.request_id.as_str().into(),
            payload: self.payload.clone(),
            deadline_ms,
            invoked_function_arn: self.invoked_arn.clone(),
            trace_id: trace_id(),
            client_context: self.client_context.clone(),
            cognito_identity: None,
        };
        let result = env.invoke(invocation, init_ms, self.tail, self.sink.as_ref()).await;
        env.touch();
        let undelivered = result.undelivered && init_ms.is_none();
        if !undelivered {
            let start = match (init_ms, env.init_type) {
                (Some(_), _) => StartKind::Cold,
                (None, InitType::Provisioned) => StartKind::Provisioned,
                (None, InitType::OnDemand) => StartKind::Warm,
            };
            let outcome = match (result.timed_out, result.function_error) {
                (true, _) => InvocationResult::Timeout,
                (false, true) => InvocationResult::FunctionError,
                (false, false) => InvocationResult::Success,
            };
            self.record(outcome, Some(start), result.duration_ms, init_ms.unwrap_or(0.0));
        }
        let replace_provisioned = {
            let mut st = self.function.lock();
            let deleted = st.deleted;
            match st.pools.get_mut(&self.version) {
                Some(pool) => pool.checkin(&env, result.healthy, deleted),
                None => false,
            }
        };
        if replace_provisioned {
            self.engine.reconcile(&self.function);
        }
        if result.end_later {
            // A task of this worker, run once this one yields: after the caller's answer is
            // written. The environment is back in the pool already; should its next invocation
            // come first, that one writes them before its START.
            let env = env.clone();
            tokio::spawn(async move { env.write_end() });
        }
        let out = (result.payload, result.function_error, result.log_tail.map(|t| logs::tail_of(&t).to_vec()));
        Ok(if undelivered { Attempt::Undelivered(out) } else { Attempt::Done(out) })
    }

    async fn cold_start(&self, ready: Ready, generation: u64) -> Result<InitResult, EngineError> {
        let lease = self.engine.claim_memory(u64::from(ready.config.memory_mb))?;
        ColdStart {
            backend: &self.engine.inner.backend,
            partition: &self.engine.inner.opts.partition,
            runtimes: &self.engine.inner.opts.runtimes,
            logs: &self.engine.inner.logs,
            teardown: &self.engine.inner.teardown,
            config: ready.config,
            code_dir: ready.code_dir,
            opt_dir: ready.opt_dir,
            generation,
            init_type: InitType::OnDemand,
            init_timeout: self.engine.inner.opts.init_timeout,
            lease: Some(lease),
        }
        .run(&self.request_id)
        .await
    }
}

impl Engine {
    /// Claims memory for a new environment, evicting the least recently used idle on-demand
    /// environments (of any function) while that helps; 429 when nothing can make room.
    pub(crate) fn claim_memory(&self, mb: u64) -> Result<crate::memory::MemoryLease, EngineError> {
        loop {
            if let Some(lease) = self.inner.memory.try_claim(mb) {
                return Ok(lease);
            }
            // Retired environments hold their share until their sandbox is destroyed: wait for
            // those before evicting a warm one. This blocks, as an eviction does, only when the
            // budget is full.
            if self.inner.teardown.busy() {
                self.inner.teardown.flush();
                continue;
            }
            let victim = {
                let fns: Vec<Arc<Function>> = self.read_functions().values().cloned().collect();
                // (function, version, environment id, idle for)
                let mut best: Option<(Arc<Function>, Version, String, Duration)> = None;
                for f in fns {
                    let st = f.lock();
                    for (v, pool) in &st.pools {
                        if let Some((e, idle)) = pool.least_recently_used() {
                            if best.as_ref().is_none_or(|b| idle > b.3) {
                                best = Some((f.clone(), *v, e.id.clone(), idle));
                            }
                        }
                    }
                }
                best.map(|(f, v, id, _)| {
                    let mut st = f.lock();
                    // Gone from idle since it was chosen (an invocation took it): look again.
                    st.pools.get_mut(&v).and_then(|pool| pool.evict(&id))
                })
            };
            match victim {
                // Gone from idle meanwhile: the loop looks again.
                Some(None) => {}
                Some(Some(e)) => {
                    tracing::debug!(env = %e.id, "evicted for the memory budget");
                    // Destroyed here, so that its memory is free before the budget says so (the
                    // lease goes with the last reference, this one).
                    e.destroy();
                    drop(e);
                }
                None => {
                    self.inner.metrics.reject(Rejection::MemoryBudget);
                    return Err(EngineError::rate_exceeded_because(
                        ThrottleReason::ConcurrentInvocationLimitExceeded,
                        format_args!(
                            "kiln's memory budget ({} MB) is taken by busy environments; no room for {mb} MB more.",
                            self.inner.memory.budget_mb()
                        ),
                    ));
                }
            }
        }
    }
}

/// The log of an invocation whose environment never finished Init.
fn init_failure_log(request_id: &str, cfg: &FunctionConfig, error_type: &FunctionErrorType) -> Vec<u8> {
    format!(
        "START RequestId: {request_id} Version: {}\n{}\n",
        cfg.version,
        logs::end_and_report(request_id, 0.0, cfg.memory_mb, 0, None, Some(("error", Some(error_type.as_str()))))
    )
    .into_bytes()
}

/// A fresh X-Ray trace header (`Root=1-<8 hex epoch>-<24 hex>;Parent=<16 hex>;Sampled=0`).
fn trace_id() -> String {
    let secs = (now_ms() / 1000) as u64;
    let (root, root_low, parent) =
        (crate::ids::random_u64(), crate::ids::random_u64() as u32, crate::ids::random_u64());
    crate::ids::trace_header(secs, root, root_low, parent)
}
