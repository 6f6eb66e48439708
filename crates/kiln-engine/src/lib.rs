//! kiln's core: the functions, their execution environments, and the way of an invocation.
//!
//! The engine speaks domain types only; the REST API crate turns HTTP into calls here and the
//! errors back into AWS shapes.
//!
//! State: every function has a [`Function`] entry in memory holding two configurations — the
//! *visible* one (what Get returns, possibly still `Pending` or with an update `InProgress`) and
//! the *active* one (what invocations run). Control operations write through to SQLite; the
//! invoke path reads memory only. A pool of idle environments belongs to each function; an
//! update bumps the pool's generation so that older environments are retired instead of reused.
//!
//! The way of one synchronous invocation ([`Engine::invoke`]): look up the function → take the
//! most recently used idle environment, or build one (cold start: sandbox, bootstrap, Init until
//! its first `next`) → hand the event to its Runtime API → wait for the answer, the bootstrap's
//! death or the timeout → put a healthy environment back, destroy a broken one. The invocation
//! runs in a task of its own, so a client that hangs up does not lose an environment.
#![forbid(unsafe_code)]

mod env;
mod error;
pub mod logs;

pub use env::InitType;
pub use error::{EngineError, ThrottleReason};

use bytes::Bytes;
use env::{error_payload, ColdStart, Environment, InitResult};
use kiln_model::config::{self as cfgv, UpdateStatus};
use kiln_model::{
    limits, FunctionConfig, FunctionName, FunctionRef, FunctionState, Partition, Qualifier, Runtime,
};
use kiln_runtime_api::Invocation;
use kiln_sandbox::Backend;
use kiln_store::meta::MetaStore;
use kiln_store::{CodeHash, CodeStore};
use logs::LogSink;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub data_dir: PathBuf,
    pub partition: Partition,
    /// Init longer than this is reported as timed out (Lambda: 10 s for on-demand).
    pub init_timeout: Duration,
}

/// CreateFunction, validated by the engine.
#[derive(Debug, Clone, Default)]
pub struct CreateFunction {
    pub name: String,
    pub runtime: Option<String>,
    pub role: String,
    pub handler: Option<String>,
    pub description: Option<String>,
    pub timeout_secs: Option<i64>,
    pub memory_mb: Option<i64>,
    pub environment: Option<BTreeMap<String, String>>,
    pub ephemeral_storage_mb: Option<i64>,
    pub architectures: Option<Vec<String>>,
    pub tracing_mode: Option<String>,
    pub log_format: Option<String>,
    pub log_group: Option<String>,
    pub zip: Vec<u8>,
    pub passthrough: BTreeMap<String, serde_json::Value>,
}

/// UpdateFunctionConfiguration: only the given fields change.
#[derive(Debug, Clone, Default)]
pub struct UpdateConfig {
    pub runtime: Option<String>,
    pub role: Option<String>,
    pub handler: Option<String>,
    pub description: Option<String>,
    pub timeout_secs: Option<i64>,
    pub memory_mb: Option<i64>,
    pub environment: Option<BTreeMap<String, String>>,
    pub ephemeral_storage_mb: Option<i64>,
    pub tracing_mode: Option<String>,
    pub log_format: Option<String>,
    pub log_group: Option<String>,
    pub revision_id: Option<String>,
    pub passthrough: BTreeMap<String, serde_json::Value>,
}

/// UpdateFunctionCode.
#[derive(Debug, Clone, Default)]
pub struct UpdateCode {
    pub zip: Vec<u8>,
    pub architectures: Option<Vec<String>>,
    pub revision_id: Option<String>,
    pub dry_run: bool,
}

/// How the caller wants an invocation run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvokeKind {
    RequestResponse,
    Event,
    DryRun,
}

/// One Invoke call.
#[derive(Debug, Clone)]
pub struct InvokeRequest {
    pub function: FunctionRef,
    pub kind: InvokeKind,
    pub payload: Bytes,
    pub tail_logs: bool,
    /// Already base64-decoded.
    pub client_context: Option<String>,
}

/// What an Invoke call returns.
#[derive(Debug, Clone)]
pub struct InvokeResponse {
    pub request_id: String,
    pub executed_version: String,
    pub payload: Bytes,
    pub function_error: bool,
    /// The last 4 KB of the invocation's log, when asked for.
    pub log_tail: Option<Vec<u8>>,
}

/// A page of ListFunctions.
#[derive(Debug, Clone)]
pub struct FunctionPage {
    pub functions: Vec<Arc<FunctionConfig>>,
    pub next_marker: Option<String>,
}

/// A summary of one live environment, for `kiln status`.
#[derive(Debug, Clone)]
pub struct EnvironmentInfo {
    pub id: String,
    pub version: String,
    pub busy: bool,
    pub init_type: InitType,
    pub age: Duration,
    pub invocations: u64,
    pub max_memory_bytes: u64,
}

struct FnState {
    visible: Arc<FunctionConfig>,
    active: Option<Arc<FunctionConfig>>,
    code_dir: Option<PathBuf>,
    /// Idle environments, the most recently used last.
    idle: Vec<Arc<Environment>>,
    busy: HashMap<String, Arc<Environment>>,
    generation: u64,
    deleted: bool,
}

struct Function {
    state: Mutex<FnState>,
}

impl Function {
    fn lock(&self) -> MutexGuard<'_, FnState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Inner {
    opts: EngineOptions,
    meta: MetaStore,
    code: CodeStore,
    backend: Arc<dyn Backend>,
    logs: LogSink,
    functions: RwLock<BTreeMap<String, Arc<Function>>>,
}

/// The engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn revision() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Engine {
    /// Opens the data dir, loads every function and starts what must be finished (unpacking
    /// interrupted by a crash). Must be called inside a tokio runtime.
    pub fn open(opts: EngineOptions, backend: Arc<dyn Backend>) -> Result<Self, EngineError> {
        let internal =
            |what: &str, e: &dyn std::fmt::Display| EngineError::Internal(format!("{what}: {e}"));
        std::fs::create_dir_all(&opts.data_dir)
            .map_err(|e| internal("cannot create data dir", &e))?;
        let meta = MetaStore::open(&opts.data_dir.join("kiln.db"))
            .map_err(|e| internal("cannot open database", &e))?;
        let code = CodeStore::open(&opts.data_dir.join("code"))
            .map_err(|e| internal("cannot open code store", &e))?;
        let logs = LogSink::start(&opts.data_dir.join("logs"))
            .map_err(|e| internal("cannot start log writer", &e))?;
        let engine = Self {
            inner: Arc::new(Inner {
                opts,
                meta,
                code,
                backend,
                logs,
                functions: RwLock::new(BTreeMap::new()),
            }),
        };
        let stored = engine
            .inner
            .meta
            .all()
            .map_err(|e| internal("cannot read database", &e))?;
        let mut to_activate = Vec::new();
        {
            let mut fns = engine.write_functions();
            for cfg in stored
                .into_iter()
                .filter(|c| c.version == Qualifier::LATEST)
            {
                let cfg = Arc::new(cfg);
                let tree = CodeHash::from_base64(&cfg.code_sha256)
                    .map(|h| engine.inner.code.tree_path(&h));
                let ready = cfg.state == FunctionState::Active
                    && cfg.last_update_status != Some(UpdateStatus::InProgress)
                    && tree.as_ref().is_some_and(|t| t.is_dir());
                let f = Arc::new(Function {
                    state: Mutex::new(FnState {
                        visible: cfg.clone(),
                        active: ready.then(|| cfg.clone()),
                        code_dir: if ready { tree } else { None },
                        idle: Vec::new(),
                        busy: HashMap::new(),
                        generation: 0,
                        deleted: false,
                    }),
                });
                if !ready && cfg.state != FunctionState::Failed {
                    to_activate.push((f.clone(), cfg.revision_id.clone()));
                }
                fns.insert(cfg.name.to_string(), f);
            }
        }
        for (f, rev) in to_activate {
            engine.spawn_activation(f, rev);
        }
        Ok(engine)
    }

    pub fn partition(&self) -> &Partition {
        &self.inner.opts.partition
    }

    pub fn logs(&self) -> &LogSink {
        &self.inner.logs
    }

    fn read_functions(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Function>>> {
        self.inner
            .functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn write_functions(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Function>>> {
        self.inner
            .functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn not_found(&self, name: &str, qualifier: Option<&str>) -> EngineError {
        EngineError::NotFound(format!(
            "Function not found: {}",
            self.inner.opts.partition.function_arn(name, qualifier)
        ))
    }

    fn function(&self, name: &FunctionName) -> Result<Arc<Function>, EngineError> {
        self.read_functions()
            .get(name.as_str())
            .cloned()
            .ok_or_else(|| self.not_found(name.as_str(), None))
    }

    /// Only `$LATEST` exists until versions are published.
    fn check_qualifier(&self, r: &FunctionRef) -> Result<(), EngineError> {
        match &r.qualifier {
            None | Some(Qualifier::Latest) => Ok(()),
            Some(q) => Err(self.not_found(r.name.as_str(), Some(&q.to_string()))),
        }
    }

    fn persist(&self, cfg: &FunctionConfig) -> Result<(), EngineError> {
        self.inner
            .meta
            .put(cfg)
            .map_err(|e| EngineError::Internal(format!("cannot store function: {e}")))
    }

    // ---- control plane -------------------------------------------------------------------

    pub async fn create_function(
        &self,
        req: CreateFunction,
    ) -> Result<Arc<FunctionConfig>, EngineError> {
        let name = FunctionName::parse(&req.name)?;
        let runtime = match req.runtime.as_deref() {
            Some(r) => Runtime::parse(r)?,
            None => {
                return Err(EngineError::invalid(
                    "Runtime and Handler are mandatory parameters for functions created with deployment packages.",
                ))
            }
        };
        cfgv::validate_role(&req.role)?;
        let memory_mb =
            cfgv::validate_memory(req.memory_mb.unwrap_or(limits::MEMORY_DEFAULT_MB.into()))?;
        let timeout_secs = cfgv::validate_timeout(
            req.timeout_secs
                .unwrap_or(limits::TIMEOUT_DEFAULT_SECS.into()),
        )?;
        let ephemeral = cfgv::validate_ephemeral(
            req.ephemeral_storage_mb
                .unwrap_or(limits::EPHEMERAL_DEFAULT_MB.into()),
        )?;
        if let Some(h) = &req.handler {
            cfgv::validate_handler(h)?;
        }
        if let Some(d) = &req.description {
            cfgv::validate_description(d)?;
        }
        if let Some(vars) = &req.environment {
            cfgv::validate_environment(vars)?;
        }
        let architectures = validate_architectures(req.architectures)?;
        if self.read_functions().contains_key(name.as_str()) {
            return Err(EngineError::Conflict(format!(
                "Function already exist: {name}"
            )));
        }
        let hash = self.store_zip(req.zip.clone()).await?;
        let cfg = Arc::new(FunctionConfig {
            log_group: req
                .log_group
                .unwrap_or_else(|| format!("/aws/lambda/{name}")),
            name: name.clone(),
            version: Qualifier::LATEST.into(),
            runtime,
            role: req.role,
            handler: req.handler,
            description: req.description.unwrap_or_default(),
            timeout_secs,
            memory_mb,
            ephemeral_storage_mb: ephemeral,
            environment: req.environment,
            architectures,
            code_sha256: hash.base64.clone(),
            code_size: req.zip.len() as u64,
            last_modified_ms: now_ms(),
            revision_id: revision(),
            tracing_mode: req.tracing_mode.unwrap_or_else(|| "PassThrough".into()),
            log_format: req.log_format.unwrap_or_else(|| "Text".into()),
            state: FunctionState::Pending,
            state_reason: Some("The function is being created.".into()),
            last_update_status: None,
            last_update_reason: None,
            passthrough: req.passthrough,
        });
        let f = Arc::new(Function {
            state: Mutex::new(FnState {
                visible: cfg.clone(),
                active: None,
                code_dir: None,
                idle: Vec::new(),
                busy: HashMap::new(),
                generation: 0,
                deleted: false,
            }),
        });
        {
            let mut fns = self.write_functions();
            if fns.contains_key(name.as_str()) {
                return Err(EngineError::Conflict(format!(
                    "Function already exist: {name}"
                )));
            }
            self.persist(&cfg)?;
            fns.insert(name.to_string(), f.clone());
        }
        self.spawn_activation(f, cfg.revision_id.clone());
        Ok(cfg)
    }

    /// Checks and stores a zip; returns its hash.
    async fn store_zip(&self, zip: Vec<u8>) -> Result<CodeHash, EngineError> {
        if zip.len() as u64 > limits::ZIP_MAX_BYTES {
            return Err(EngineError::TooLarge(format!(
                "Request must be smaller than {} bytes for the CreateFunction operation",
                limits::CREATE_BODY_MAX_BYTES
            )));
        }
        let code = self.inner.code.clone();
        tokio::task::spawn_blocking(move || {
            kiln_store::unzip::inspect(&zip).map_err(|e| EngineError::invalid(e.to_string()))?;
            code.put_zip(&zip)
                .map_err(|e| EngineError::Internal(format!("cannot store code: {e}")))
        })
        .await
        .map_err(|e| EngineError::Internal(format!("code task failed: {e}")))?
    }

    /// Unpacks the visible configuration's code and makes it the active one: `Pending` becomes
    /// `Active`, an update `InProgress` becomes `Successful`. Does nothing if the function
    /// changed again meanwhile (the newer change has its own activation).
    fn spawn_activation(&self, f: Arc<Function>, revision_id: String) {
        let engine = self.clone();
        tokio::spawn(async move {
            let cfg = f.lock().visible.clone();
            let code = engine.inner.code.clone();
            let unpacked = match CodeHash::from_base64(&cfg.code_sha256) {
                Some(hash) => tokio::task::spawn_blocking(move || {
                    code.unpack(&hash).map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string())),
                None => Err("stored code hash is malformed".to_string()),
            };
            let retired = {
                let mut st = f.lock();
                if st.deleted || st.visible.revision_id != revision_id {
                    return;
                }
                let mut next = (*st.visible).clone();
                match &unpacked {
                    Ok(tree) => {
                        next.state = FunctionState::Active;
                        next.state_reason = None;
                        if next.last_update_status.is_some() {
                            next.last_update_status = Some(UpdateStatus::Successful);
                            next.last_update_reason = None;
                        }
                        st.code_dir = Some(tree.clone());
                    }
                    Err(e) => {
                        tracing::warn!(function = %next.name, error = %e, "unpacking code failed");
                        if next.state == FunctionState::Pending {
                            next.state = FunctionState::Failed;
                            next.state_reason =
                                Some(format!("Could not unpack the deployment package: {e}"));
                        } else {
                            next.last_update_status = Some(UpdateStatus::Failed);
                            next.last_update_reason =
                                Some(format!("Could not unpack the deployment package: {e}"));
                        }
                    }
                }
                let next = Arc::new(next);
                if let Err(e) = engine.persist(&next) {
                    tracing::error!(error = %e, "cannot store function state");
                }
                st.visible = next.clone();
                if unpacked.is_ok() {
                    st.active = Some(next);
                    st.generation += 1;
                    std::mem::take(&mut st.idle)
                } else {
                    Vec::new()
                }
            };
            drop(retired);
        });
    }

    /// Applies a configuration change to `$LATEST`.
    pub async fn update_config(
        &self,
        name: &FunctionRef,
        req: UpdateConfig,
    ) -> Result<Arc<FunctionConfig>, EngineError> {
        self.check_qualifier(name)?;
        let f = self.function(&name.name)?;
        // Validate before taking the lock.
        let runtime = req.runtime.as_deref().map(Runtime::parse).transpose()?;
        if let Some(r) = &req.role {
            cfgv::validate_role(r)?;
        }
        let memory = req.memory_mb.map(cfgv::validate_memory).transpose()?;
        let timeout = req.timeout_secs.map(cfgv::validate_timeout).transpose()?;
        let ephemeral = req
            .ephemeral_storage_mb
            .map(cfgv::validate_ephemeral)
            .transpose()?;
        if let Some(h) = &req.handler {
            cfgv::validate_handler(h)?;
        }
        if let Some(d) = &req.description {
            cfgv::validate_description(d)?;
        }
        if let Some(v) = &req.environment {
            cfgv::validate_environment(v)?;
        }
        let (next, retired) = {
            let mut st = f.lock();
            self.check_updatable(&st, req.revision_id.as_deref())?;
            let mut c = (*st.visible).clone();
            if let Some(r) = runtime {
                c.runtime = r;
            }
            if let Some(r) = req.role {
                c.role = r;
            }
            if let Some(h) = req.handler {
                c.handler = Some(h);
            }
            if let Some(d) = req.description {
                c.description = d;
            }
            if let Some(m) = memory {
                c.memory_mb = m;
            }
            if let Some(t) = timeout {
                c.timeout_secs = t;
            }
            if let Some(e) = ephemeral {
                c.ephemeral_storage_mb = e;
            }
            if let Some(v) = req.environment {
                c.environment = Some(v);
            }
            if let Some(t) = req.tracing_mode {
                c.tracing_mode = t;
            }
            if let Some(l) = req.log_format {
                c.log_format = l;
            }
            if let Some(l) = req.log_group {
                c.log_group = l;
            }
            c.passthrough.extend(req.passthrough);
            c.last_modified_ms = now_ms();
            c.revision_id = revision();
            c.last_update_status = Some(UpdateStatus::Successful);
            c.last_update_reason = None;
            let c = Arc::new(c);
            self.persist(&c)?;
            // No code to unpack: the change takes effect at once. Environments built from the
            // old configuration are retired.
            st.visible = c.clone();
            if st.code_dir.is_some() {
                st.active = Some(c.clone());
            }
            st.generation += 1;
            (c, std::mem::take(&mut st.idle))
        };
        drop(retired);
        Ok(next)
    }

    fn check_updatable(&self, st: &FnState, revision_id: Option<&str>) -> Result<(), EngineError> {
        let v = &st.visible;
        if v.state == FunctionState::Pending
            || v.last_update_status == Some(UpdateStatus::InProgress)
        {
            return Err(EngineError::Conflict(format!(
                "The operation cannot be performed at this time. An update is in progress for resource: {}",
                self.inner.opts.partition.function_arn(v.name.as_str(), None)
            )));
        }
        if let Some(rev) = revision_id {
            if rev != v.revision_id {
                return Err(EngineError::PreconditionFailed(
                    "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id".into(),
                ));
            }
        }
        Ok(())
    }

    /// Replaces the code of `$LATEST`. Invocations keep the old code until the new one is unpacked.
    pub async fn update_code(
        &self,
        name: &FunctionRef,
        req: UpdateCode,
    ) -> Result<Arc<FunctionConfig>, EngineError> {
        self.check_qualifier(name)?;
        let f = self.function(&name.name)?;
        {
            let st = f.lock();
            self.check_updatable(&st, req.revision_id.as_deref())?;
        }
        let architectures = req
            .architectures
            .map(|a| validate_architectures(Some(a)))
            .transpose()?;
        let size = req.zip.len() as u64;
        let hash = self.store_zip(req.zip).await?;
        let next = {
            let mut st = f.lock();
            if st.deleted {
                return Err(self.not_found(name.name.as_str(), None));
            }
            self.check_updatable(&st, req.revision_id.as_deref())?;
            let mut c = (*st.visible).clone();
            c.code_sha256 = hash.base64.clone();
            c.code_size = size;
            if let Some(a) = architectures {
                c.architectures = a;
            }
            c.last_modified_ms = now_ms();
            c.revision_id = revision();
            c.last_update_status = Some(UpdateStatus::InProgress);
            c.last_update_reason = Some("The function is being created.".into());
            let c = Arc::new(c);
            if req.dry_run {
                return Ok(c);
            }
            self.persist(&c)?;
            st.visible = c.clone();
            c
        };
        self.spawn_activation(f, next.revision_id.clone());
        Ok(next)
    }

    pub fn get_function(&self, r: &FunctionRef) -> Result<Arc<FunctionConfig>, EngineError> {
        self.check_qualifier(r)?;
        let f = self.function(&r.name)?;
        let cfg = f.lock().visible.clone();
        Ok(cfg)
    }

    /// The zip of `$LATEST`.
    pub async fn function_zip(&self, r: &FunctionRef) -> Result<Vec<u8>, EngineError> {
        let cfg = self.get_function(r)?;
        let hash = CodeHash::from_base64(&cfg.code_sha256)
            .ok_or_else(|| EngineError::Internal("stored code hash is malformed".into()))?;
        let code = self.inner.code.clone();
        tokio::task::spawn_blocking(move || code.read_zip(&hash))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?
            .map_err(|e| EngineError::Internal(format!("cannot read code: {e}")))
    }

    /// ListFunctions: names after `marker`, at most `max_items` (and never more than 50).
    pub fn list_functions(&self, marker: Option<&str>, max_items: Option<usize>) -> FunctionPage {
        let limit = max_items
            .unwrap_or(limits::LIST_PAGE_MAX)
            .clamp(1, limits::LIST_PAGE_MAX);
        let fns = self.read_functions();
        let mut iter: Box<dyn Iterator<Item = (&String, &Arc<Function>)>> = match marker {
            Some(m) => Box::new(
                fns.range::<str, _>((std::ops::Bound::Excluded(m), std::ops::Bound::Unbounded)),
            ),
            None => Box::new(fns.iter()),
        };
        let functions: Vec<Arc<FunctionConfig>> = iter
            .by_ref()
            .take(limit)
            .map(|(_, f)| f.lock().visible.clone())
            .collect();
        let next_marker = if iter.next().is_some() {
            functions.last().map(|c| c.name.to_string())
        } else {
            None
        };
        FunctionPage {
            functions,
            next_marker,
        }
    }

    pub async fn delete_function(&self, r: &FunctionRef) -> Result<(), EngineError> {
        match &r.qualifier {
            None => {}
            Some(Qualifier::Latest) => {
                return Err(EngineError::invalid(
                    "$LATEST version cannot be deleted without deleting the function.",
                ))
            }
            Some(q) => return Err(self.not_found(r.name.as_str(), Some(&q.to_string()))),
        }
        let f = self
            .write_functions()
            .remove(r.name.as_str())
            .ok_or_else(|| self.not_found(r.name.as_str(), None))?;
        let (cfg, envs) = {
            let mut st = f.lock();
            st.deleted = true;
            let mut envs = std::mem::take(&mut st.idle);
            envs.extend(st.busy.drain().map(|(_, e)| e));
            (st.visible.clone(), envs)
        };
        for e in &envs {
            e.destroy();
        }
        drop(envs);
        self.inner
            .meta
            .delete_function(r.name.as_str())
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        // The code goes too, unless another function uses the same zip.
        if !self
            .inner
            .meta
            .code_in_use(&cfg.code_sha256)
            .unwrap_or(true)
        {
            if let Some(h) = CodeHash::from_base64(&cfg.code_sha256) {
                let code = self.inner.code.clone();
                let _ = tokio::task::spawn_blocking(move || code.remove(&h)).await;
            }
        }
        Ok(())
    }

    /// Live environments of a function.
    pub fn environments(&self, r: &FunctionRef) -> Result<Vec<EnvironmentInfo>, EngineError> {
        let f = self.function(&r.name)?;
        let st = f.lock();
        let info = |e: &Arc<Environment>, busy: bool| EnvironmentInfo {
            id: e.id.clone(),
            version: e.config.version.clone(),
            busy,
            init_type: e.init_type,
            age: e.created.elapsed(),
            invocations: e.invocations.load(std::sync::atomic::Ordering::Relaxed),
            max_memory_bytes: e.max_memory_bytes(),
        };
        let mut out: Vec<EnvironmentInfo> = st.idle.iter().map(|e| info(e, false)).collect();
        out.extend(st.busy.values().map(|e| info(e, true)));
        Ok(out)
    }

    /// Destroys every environment. Called at shutdown.
    pub fn shutdown(&self) {
        let fns: Vec<Arc<Function>> = self.read_functions().values().cloned().collect();
        for f in fns {
            let envs: Vec<Arc<Environment>> = {
                let mut st = f.lock();
                let mut v = std::mem::take(&mut st.idle);
                v.extend(st.busy.drain().map(|(_, e)| e));
                v
            };
            for e in envs {
                e.destroy();
            }
        }
        self.inner.backend.shutdown();
    }

    // ---- invoke ------------------------------------------------------------------------------

    /// Invoke: runs the function (or queues it, or only checks it) and returns its answer.
    pub async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, EngineError> {
        self.check_qualifier(&req.function)?;
        let f = self.function(&req.function.name)?;
        let (cfg, code_dir) = {
            let st = f.lock();
            match (&st.active, &st.code_dir) {
                (Some(a), Some(d)) => (a.clone(), d.clone()),
                _ => {
                    let state = match st.visible.state {
                        FunctionState::Pending => "Pending",
                        FunctionState::Failed => "Failed",
                        FunctionState::Active => "Pending",
                    };
                    return Err(EngineError::Conflict(format!(
                        "The operation cannot be performed at this time. The function is currently in the following state: {state}"
                    )));
                }
            }
        };
        let limit = match req.kind {
            InvokeKind::Event => limits::ASYNC_PAYLOAD_MAX_BYTES,
            _ => limits::SYNC_PAYLOAD_MAX_BYTES,
        };
        if req.payload.len() > limit {
            return Err(EngineError::TooLarge(match req.kind {
                InvokeKind::Event => format!(
                    "{} byte payload is too large for the Event invocation type (limit {limit} bytes)",
                    req.payload.len()
                ),
                _ => format!("Request must be smaller than {limit} bytes for the InvokeFunction operation"),
            }));
        }
        let request_id = uuid::Uuid::new_v4().to_string();
        let executed_version = cfg.version.clone();
        if req.kind == InvokeKind::DryRun {
            return Ok(InvokeResponse {
                request_id,
                executed_version,
                payload: Bytes::new(),
                function_error: false,
                log_tail: None,
            });
        }
        let invoked_arn = self.inner.opts.partition.function_arn(
            req.function.name.as_str(),
            req.function
                .qualifier
                .as_ref()
                .map(|q| q.to_string())
                .as_deref(),
        );
        let job = Job {
            engine: self.clone(),
            function: f,
            cfg,
            code_dir,
            request_id: request_id.clone(),
            invoked_arn: invoked_arn.into(),
            payload: if req.payload.is_empty() {
                Bytes::from_static(b"{}")
            } else {
                req.payload
            },
            client_context: req.client_context,
            tail: req.tail_logs && req.kind == InvokeKind::RequestResponse,
        };
        // The invocation runs in its own task: if the caller goes away, the environment still
        // finishes its work and goes back to the pool.
        let task = tokio::spawn(job.run());
        if req.kind == InvokeKind::Event {
            return Ok(InvokeResponse {
                request_id,
                executed_version,
                payload: Bytes::new(),
                function_error: false,
                log_tail: None,
            });
        }
        let (payload, function_error, log_tail) = task
            .await
            .map_err(|e| EngineError::Internal(format!("invocation task failed: {e}")))??;
        Ok(InvokeResponse {
            request_id,
            executed_version,
            payload,
            function_error,
            log_tail,
        })
    }
}

/// One invocation, from choosing an environment to putting it back.
struct Job {
    engine: Engine,
    function: Arc<Function>,
    cfg: Arc<FunctionConfig>,
    code_dir: PathBuf,
    request_id: String,
    invoked_arn: Arc<str>,
    payload: Bytes,
    client_context: Option<String>,
    tail: bool,
}

type JobResult = Result<(Bytes, bool, Option<Vec<u8>>), EngineError>;

impl Job {
    async fn run(self) -> JobResult {
        let warm = {
            let mut st = self.function.lock();
            let generation = st.generation;
            let mut found = None;
            while let Some(e) = st.idle.pop() {
                if e.alive() && e.generation == generation {
                    found = Some(e);
                    break;
                }
            }
            if let Some(e) = &found {
                st.busy.insert(e.id.clone(), e.clone());
            }
            (found, generation)
        };
        let (env, init_ms) = match warm {
            (Some(env), _) => (env, None),
            (None, generation) => {
                let cold = ColdStart {
                    backend: &self.engine.inner.backend,
                    partition: &self.engine.inner.opts.partition,
                    logs: &self.engine.inner.logs,
                    config: self.cfg.clone(),
                    code_dir: self.code_dir.clone(),
                    generation,
                    init_type: InitType::OnDemand,
                    init_timeout: self.engine.inner.opts.init_timeout,
                };
                match cold.run(&self.request_id).await? {
                    InitResult::Ready { env, init_ms } => {
                        self.function
                            .lock()
                            .busy
                            .insert(env.id.clone(), env.clone());
                        (env, Some(init_ms))
                    }
                    InitResult::Failed {
                        error_type,
                        payload,
                    } => {
                        tracing::info!(function = %self.cfg.name, request_id = %self.request_id, %error_type, "init failed");
                        return Ok((
                            payload,
                            true,
                            self.tail.then(|| {
                                init_failure_log(&self.request_id, &self.cfg, &error_type)
                            }),
                        ));
                    }
                }
            }
        };
        let deadline_ms = (now_ms() as u64).saturating_add(u64::from(self.cfg.timeout_secs) * 1000);
        let invocation = Invocation {
            request_id: self.request_id.as_str().into(),
            payload: self.payload.clone(),
            deadline_ms,
            invoked_function_arn: self.invoked_arn.clone(),
            trace_id: trace_id(),
            client_context: self.client_context.clone(),
            cognito_identity: None,
        };
        let result = env.invoke(invocation, init_ms, self.tail).await;
        {
            let mut st = self.function.lock();
            st.busy.remove(&env.id);
            if result.healthy && !st.deleted && env.generation == st.generation {
                st.idle.push(env.clone());
            }
        }
        if !result.healthy {
            env.destroy();
        }
        Ok((
            result.payload,
            result.function_error,
            result.log_tail.map(|t| logs::tail_of(&t).to_vec()),
        ))
    }
}

/// The log of an invocation whose environment never finished Init.
fn init_failure_log(request_id: &str, cfg: &FunctionConfig, error_type: &str) -> Vec<u8> {
    format!(
        "START RequestId: {request_id} Version: {}\nEND RequestId: {request_id}\n{}\n",
        cfg.version,
        logs::report_line(
            request_id,
            0.0,
            cfg.memory_mb,
            0,
            None,
            Some(("error", Some(error_type)))
        )
    )
    .into_bytes()
}

/// A fresh X-Ray trace header (`Root=1-<8 hex epoch>-<24 hex>;Parent=<16 hex>;Sampled=0`).
fn trace_id() -> String {
    let secs = now_ms() / 1000;
    let r = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "Root=1-{secs:08x}-{};Parent={};Sampled=0",
        &r[..24],
        &r[16..32]
    )
}

fn validate_architectures(a: Option<Vec<String>>) -> Result<Vec<String>, EngineError> {
    match a {
        None => Ok(vec!["x86_64".into()]),
        Some(v) if v.len() == 1 && (v[0] == "x86_64" || v[0] == "arm64") => Ok(v),
        Some(v) => Err(EngineError::Model(kiln_model::ModelError::constraint(
            format!("{v:?}"),
            "architectures",
            "Member must have length less than or equal to 1, Member must satisfy constraint: [Member must satisfy enum value set: [x86_64, arm64]]",
        ))),
    }
}

/// The payload of a failed invocation, for callers that build one without an environment.
pub fn platform_error(error_type: &str, message: &str) -> Bytes {
    error_payload(error_type, message)
}
