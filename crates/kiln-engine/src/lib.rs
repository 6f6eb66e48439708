//! kiln's core: the functions, their execution environments, and the way of an invocation.
//!
//! The engine speaks domain types only; the REST API crate turns HTTP into calls here and the
//! errors back into AWS shapes.
//!
//! State: every function has a [`function::Function`] in memory holding the *visible* `$LATEST`
//! (what Get returns, possibly still `Pending` or with an update `InProgress`), its published
//! versions, aliases, concurrency settings, and one pool of environments per runnable version.
//! Control operations write through to SQLite; the invoke path reads memory only. An update of
//! `$LATEST` bumps its pool's generation so that older environments are retired, not reused.
//!
//! The way of one synchronous invocation ([`Engine::invoke`], then `invoke::Job::run`): resolve
//! name and qualifier (an alias picks a version by its weights) → a free provisioned
//! environment, else admission (reserved and account concurrency; 429 at once when over) and the
//! most recently used idle environment, else a cold start (memory budget, sandbox, bootstrap,
//! Init until its first `next`) → hand the event to its Runtime API → wait for the answer, the
//! bootstrap's death or the timeout → put a healthy environment back, destroy a broken one. The
//! invocation runs in its caller's task and moves to a task of its own if the caller hangs up
//! (`detach.rs`), so a client that hangs up does not lose an environment.
#![forbid(unsafe_code)]

mod admission;
mod asyncq;
mod control;
mod detach;
mod env;
mod error;
#[cfg(test)]
mod fake;
pub mod fds;
mod function;
pub mod ids;
mod invoke;
mod layers;
#[cfg(test)]
mod lifecycle_tests;
pub mod log_filter;
pub mod log_store;
pub mod logs;
mod memory;
pub mod metrics;
mod pool;
mod provisioned;
pub mod runtimes;
pub mod stream;
mod teardown;
mod urls;

pub use asyncq::{EventConfigInput, IN_FLIGHT_MAX as EVENTS_IN_FLIGHT_MAX};
pub use control::{CodeSigningInput, RuntimeManagement};
pub use env::InitType;
pub use error::{EngineError, ThrottleReason};
pub use function::StartStats;
pub use kiln_store::events::{EventCounts, EventSummary};
pub use layers::PublishLayer;
pub use urls::{UrlInput, UrlTarget};

use admission::Admission;
use bytes::Bytes;
use function::{FnState, Function, Ready};
use kiln_model::config::{self as cfgv, AliasConfig, ProvisionedSetting, UpdateStatus};
use kiln_model::{
    limits, FunctionConfig, FunctionName, FunctionRef, FunctionState, Partition, Qualifier, Runtime, Version,
};
use kiln_sandbox::Backend;
use kiln_store::meta::MetaStore;
use kiln_store::{CodeHash, CodeStore};
use logs::LogSink;
use memory::MemoryBudget;
use pool::Pool;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub data_dir: PathBuf,
    pub partition: Partition,
    /// Init longer than this is reported as timed out (Lambda: 10 s for on-demand).
    pub init_timeout: Duration,
    /// Account-wide concurrency (`ConcurrentExecutions`).
    pub concurrency_limit: u32,
    /// An idle on-demand environment lives this long.
    pub keep_alive: Duration,
    /// Sum of `MemorySize` of live environments, in MB.
    pub memory_budget_mb: u64,
    /// Wait before the first retry of an event whose function failed; the second waits twice it.
    pub async_retry_base: Duration,
    /// Managed runtimes (interpreters found at start-up, runtime clients on disk).
    pub runtimes: Arc<runtimes::Runtimes>,
    /// Bounds and retention of function logs.
    pub logs: logs::LogOptions,
}

/// CreateFunction, validated by the engine.
#[derive(Debug, Clone, Default)]
pub struct CreateFunction {
    pub name: String,
    pub architectures: Option<Vec<String>>,
    pub zip: Vec<u8>,
    pub publish: bool,
    /// The configuration; what is not given takes Lambda's default.
    pub config: ConfigChange,
}

/// The configuration members CreateFunction and UpdateFunctionConfiguration share; `None` means
/// "not given".
#[derive(Debug, Clone, Default)]
pub struct ConfigChange {
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
    pub application_log_level: Option<String>,
    pub system_log_level: Option<String>,
    pub log_group: Option<String>,
    /// Layer version ARNs; replaces the whole list.
    pub layers: Option<Vec<String>>,
    pub passthrough: BTreeMap<String, serde_json::Value>,
}

/// UpdateFunctionConfiguration: only the given members change.
#[derive(Debug, Clone, Default)]
pub struct UpdateConfig {
    pub config: ConfigChange,
    pub revision_id: Option<String>,
}

/// UpdateFunctionCode.
#[derive(Debug, Clone, Default)]
pub struct UpdateCode {
    pub zip: Vec<u8>,
    pub architectures: Option<Vec<String>>,
    pub revision_id: Option<String>,
    pub dry_run: bool,
    pub publish: bool,
}

/// CreateAlias / UpdateAlias.
#[derive(Debug, Clone, Default)]
pub struct AliasInput {
    pub name: String,
    pub function_version: Option<String>,
    pub description: Option<String>,
    /// `Some(None)`: routing cleared (`AdditionalVersionWeights: {}`).
    pub routing: Option<Option<(String, f64)>>,
    pub revision_id: Option<String>,
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

impl InvokeResponse {
    /// The answer to a call that was only checked (`DryRun`) or queued (`Event`).
    pub fn empty(request_id: String, executed_version: String) -> Self {
        Self { request_id, executed_version, payload: Bytes::new(), function_error: false, log_tail: None }
    }
}

/// A page of a listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_marker: Option<String>,
}

/// The provisioned concurrency of one qualifier, as Lambda reports it.
#[derive(Debug, Clone)]
pub struct ProvisionedStatus {
    pub qualifier: String,
    pub requested: u32,
    pub allocated: u32,
    pub available: u32,
    /// `IN_PROGRESS`, `READY` or `FAILED`.
    pub status: &'static str,
    pub status_reason: Option<String>,
    pub last_modified_ms: i64,
}

/// One live or starting environment, for `kiln status`.
#[derive(Debug, Clone)]
pub struct EnvironmentInfo {
    pub id: String,
    pub version: String,
    /// `initialising`, `idle`, `busy` or `provisioned` (idle and provisioned).
    pub state: &'static str,
    pub init_type: InitType,
    pub age: Duration,
    pub invocations: u64,
    pub max_memory_bytes: u64,
    pub memory_mb: u32,
    /// The host's process id of the environment's top process (the sandbox's init, whose exit
    /// means every process of the environment is gone); `None` while it is initialising.
    pub pid: Option<u32>,
}

/// What `kiln status` shows of one function.
#[derive(Debug, Clone)]
pub struct FunctionStatus {
    pub name: String,
    pub environments: Vec<EnvironmentInfo>,
    pub stats: StartStats,
}

/// Account settings and usage.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    pub concurrency_limit: u32,
    pub unreserved: u32,
    pub total_code_size: u64,
    pub function_count: usize,
}

pub(crate) struct Inner {
    pub opts: EngineOptions,
    pub meta: MetaStore,
    pub code: CodeStore,
    pub backend: Arc<dyn Backend>,
    pub logs: LogSink,
    pub admission: Admission,
    pub memory: MemoryBudget,
    pub functions: RwLock<BTreeMap<String, Arc<Function>>>,
    pub events: asyncq::Events,
    pub metrics: metrics::ServerMetrics,
    /// Serialises changes of layer policies (read, modify, write).
    pub layer_lock: std::sync::Mutex<()>,
    /// Function URLs by function and qualifier and by url id (urls.rs).
    pub urls: RwLock<urls::UrlMap>,
    /// Where retired environments are destroyed, off the async threads (teardown.rs).
    pub teardown: teardown::Teardown,
}

/// The engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn revision() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn internal(what: &str, e: impl Into<error::Cause>) -> EngineError {
    EngineError::internal(what, e)
}

impl Engine {
    /// Opens the data dir, loads every function and starts what must be finished (unpacking
    /// interrupted by a crash, provisioned environments). Must be called inside a tokio runtime.
    pub fn open(opts: EngineOptions, backend: Arc<dyn Backend>) -> Result<Self, EngineError> {
        std::fs::create_dir_all(&opts.data_dir).map_err(|e| internal("cannot create data dir", e))?;
        let meta = MetaStore::open(&opts.data_dir.join("kiln.db")).map_err(|e| internal("cannot open database", e))?;
        let code = CodeStore::open(&opts.data_dir.join("code")).map_err(|e| internal("cannot open code store", e))?;
        let queue = kiln_store::events::EventQueue::open(&opts.data_dir.join("events.db"))
            .map_err(|e| internal("cannot open the event queue", e))?;
        let events = asyncq::Events::new(queue, opts.async_retry_base);
        let logs = LogSink::start(&opts.data_dir.join("logs"), opts.logs.clone())
            .map_err(|e| internal("cannot start log writer", e))?;
        let engine = Self {
            inner: Arc::new(Inner {
                admission: Admission::new(opts.concurrency_limit),
                memory: MemoryBudget::new(opts.memory_budget_mb),
                opts,
                meta,
                code,
                backend,
                logs,
                functions: RwLock::new(BTreeMap::new()),
                events,
                metrics: metrics::ServerMetrics::default(),
                layer_lock: std::sync::Mutex::new(()),
                urls: RwLock::new(urls::UrlMap::default()),
                teardown: teardown::Teardown::new(),
            }),
        };
        engine.load()?;
        engine.load_event_configs()?;
        engine.load_urls()?;
        engine.collect_opt_trees();
        engine.spawn_reaper();
        engine.spawn_dispatcher();
        Ok(engine)
    }

    fn load(&self) -> Result<(), EngineError> {
        let inner = &self.inner;
        let mut states: BTreeMap<String, FnState> = BTreeMap::new();
        let mut versions: Vec<FunctionConfig> = Vec::new();
        for cfg in inner.meta.all().map_err(|e| internal("cannot read database", e))? {
            if cfg.version.is_latest() {
                states.insert(cfg.name.to_string(), FnState::new(Arc::new(cfg)));
            } else {
                versions.push(cfg);
            }
        }
        for v in versions {
            let (Some(st), Version::Number(n)) = (states.get_mut(v.name.as_str()), v.version) else { continue };
            let v = Arc::new(v);
            if let Some(ready) = self.ready_if_present(&v) {
                st.pools.insert(Version::Number(n), Pool::new(ready));
            }
            st.versions.insert(n, v);
        }
        for (name, alias) in inner.meta.all_aliases().map_err(|e| internal("cannot read aliases", e))? {
            if let Some(st) = states.get_mut(&name) {
                st.aliases.insert(alias.name.clone(), alias);
            }
        }
        for (name, settings) in inner.meta.all_settings().map_err(|e| internal("cannot read settings", e))? {
            if let Some(st) = states.get_mut(&name) {
                inner.admission.set_reserved(&name, settings.reserved);
                st.settings = settings;
                inner.admission.set_provisioned(&name, st.pc_total());
            }
        }
        let mut to_activate = Vec::new();
        let mut all = Vec::new();
        {
            let mut fns = self.write_functions();
            for (name, mut st) in states {
                let latest = st.visible.clone();
                let ready = latest.state == FunctionState::Active
                    && latest.last_update_status != Some(UpdateStatus::InProgress);
                match (ready, self.ready_if_present(&latest)) {
                    (true, Some(r)) => {
                        st.pools.insert(Version::Latest, Pool::new(r));
                    }
                    _ if latest.state != FunctionState::Failed => {
                        to_activate.push((name.clone(), latest.revision_id.clone()));
                    }
                    _ => {}
                }
                // Versions whose tree went missing get it back.
                for (&n, v) in &st.versions {
                    if let std::collections::hash_map::Entry::Vacant(slot) = st.pools.entry(Version::Number(n)) {
                        let dir = CodeHash::from_base64(&v.code_sha256).and_then(|h| inner.code.unpack(&h).ok());
                        let opt = v
                            .layers
                            .iter()
                            .map(|l| CodeHash::from_base64(&l.code_sha256))
                            .collect::<Option<Vec<_>>>()
                            .and_then(|h| inner.code.opt_tree(&h).ok());
                        if let (Some(dir), Some(opt_dir)) = (dir, opt) {
                            slot.insert(Pool::new(Ready { config: v.clone(), code_dir: dir, opt_dir }));
                        }
                    }
                }
                st.retarget();
                let f = Arc::new(Function::new(st));
                all.push(f.clone());
                fns.insert(name, f);
            }
        }
        for (name, rev) in to_activate {
            if let Some(f) = self.read_functions().get(&name).cloned() {
                self.spawn_activation(f, rev);
            }
        }
        for f in all {
            self.reconcile(&f);
        }
        Ok(())
    }

    fn tree_if_present(&self, cfg: &FunctionConfig) -> Option<PathBuf> {
        let tree = self.inner.code.tree_path(&CodeHash::from_base64(&cfg.code_sha256)?);
        tree.is_dir().then_some(tree)
    }

    /// The runnable form of `cfg` if its code tree and its merged layers are both on disk.
    fn ready_if_present(&self, cfg: &Arc<FunctionConfig>) -> Option<Ready> {
        let code_dir = self.tree_if_present(cfg)?;
        let opt_dir = self.opt_dir_if_present(&cfg.layers)?;
        Some(Ready { config: cfg.clone(), code_dir, opt_dir })
    }

    /// Destroys idle on-demand environments that outlived the keep-alive.
    fn spawn_reaper(&self) {
        let weak = Arc::downgrade(&self.inner);
        let keep_alive = self.inner.opts.keep_alive;
        let tick = (keep_alive / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            loop {
                interval.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let engine = Engine { inner };
                let fns: Vec<Arc<Function>> = engine.read_functions().values().cloned().collect();
                let mut expired = Vec::new();
                for f in fns {
                    let mut st = f.lock();
                    for pool in st.pools.values_mut() {
                        expired.extend(pool.expire_idle(keep_alive));
                    }
                }
                for e in &expired {
                    tracing::debug!(env = %e.id, "keep-alive expired");
                    e.retire();
                }
            }
        });
    }

    pub fn partition(&self) -> &Partition {
        &self.inner.opts.partition
    }

    pub fn logs(&self) -> &LogSink {
        &self.inner.logs
    }

    /// The managed runtimes this server found.
    pub fn runtimes(&self) -> &runtimes::Runtimes {
        &self.inner.opts.runtimes
    }

    pub(crate) fn read_functions(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Function>>> {
        self.inner.functions.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_functions(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Function>>> {
        self.inner.functions.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn not_found(&self, name: &str, qualifier: Option<&str>) -> EngineError {
        EngineError::function_not_found(&self.inner.opts.partition.function_arn(name, qualifier))
    }

    pub(crate) fn function(&self, name: &FunctionName) -> Result<Arc<Function>, EngineError> {
        self.read_functions().get(name.as_str()).cloned().ok_or_else(|| self.not_found(name.as_str(), None))
    }

    fn persist(&self, cfg: &FunctionConfig) -> Result<(), EngineError> {
        self.inner.meta.put(cfg).map_err(|e| internal("cannot store function", e))
    }

    fn persist_settings(&self, name: &str, st: &FnState) -> Result<(), EngineError> {
        self.inner.meta.put_settings(name, &st.settings).map_err(|e| internal("cannot store settings", e))
    }

    fn arn(&self, name: &str, qualifier: Option<&str>) -> String {
        self.inner.opts.partition.function_arn(name, qualifier)
    }

    // ---- functions -----------------------------------------------------------------------

    pub async fn create_function(&self, create: CreateFunction) -> Result<Arc<FunctionConfig>, EngineError> {
        let name = FunctionName::parse(&create.name)?;
        let req = create.config;
        let role = req.role.unwrap_or_default();
        let runtime = match req.runtime.as_deref() {
            Some(r) => Runtime::parse(r)?,
            None => {
                return Err(EngineError::invalid(
                    "Runtime and Handler are mandatory parameters for functions created with deployment packages.",
                ))
            }
        };
        cfgv::validate_role(&role)?;
        let memory_mb = cfgv::validate_memory(req.memory_mb.unwrap_or(limits::MEMORY_DEFAULT_MB.into()))?;
        let timeout_secs = cfgv::validate_timeout(req.timeout_secs.unwrap_or(limits::TIMEOUT_DEFAULT_SECS.into()))?;
        let ephemeral =
            cfgv::validate_ephemeral(req.ephemeral_storage_mb.unwrap_or(limits::EPHEMERAL_DEFAULT_MB.into()))?;
        validate_texts(req.handler.as_deref(), req.description.as_deref(), req.environment.as_ref())?;
        cfgv::validate_logging(
            req.log_format.as_deref(),
            req.application_log_level.as_deref(),
            req.system_log_level.as_deref(),
        )?;
        if !runtime.is_custom() && req.handler.is_none() {
            return Err(EngineError::invalid(
                "Runtime and Handler are mandatory parameters for functions created with deployment packages.",
            ));
        }
        let architectures = validate_architectures(create.architectures)?;
        let layers = match &req.layers {
            Some(arns) => self.resolve_layers(arns)?,
            None => Vec::new(),
        };
        if self.read_functions().contains_key(name.as_str()) {
            return Err(EngineError::function_exists(name.as_str()));
        }
        let code_size = create.zip.len() as u64;
        let (hash, unzipped_size) = self.store_zip_sized(create.zip, "CreateFunction").await?;
        layers::check_total_size(unzipped_size, &layers)?;
        let cfg = Arc::new(FunctionConfig {
            log_group: req.log_group.unwrap_or_else(|| format!("/aws/lambda/{name}")),
            name: name.clone(),
            version: Version::Latest,
            runtime,
            role,
            handler: req.handler,
            description: req.description.unwrap_or_default(),
            timeout_secs,
            memory_mb,
            ephemeral_storage_mb: ephemeral,
            environment: req.environment,
            architectures,
            code_sha256: hash.base64.clone(),
            code_size,
            last_modified_ms: now_ms(),
            revision_id: revision(),
            tracing_mode: req.tracing_mode.unwrap_or_else(|| "PassThrough".into()),
            log_format: req.log_format.unwrap_or_else(|| "Text".into()),
            application_log_level: req.application_log_level,
            system_log_level: req.system_log_level,
            state: FunctionState::Pending,
            state_reason: Some("The function is being created.".into()),
            last_update_status: None,
            last_update_reason: None,
            passthrough: req.passthrough,
            last_published: 0,
            changed_since_publish: true,
            layers,
            unzipped_size,
        });
        let mut st = FnState::new(cfg.clone());
        st.publish_when_ready = create.publish;
        let f = Arc::new(Function::new(st));
        {
            let mut fns = self.write_functions();
            if fns.contains_key(name.as_str()) {
                return Err(EngineError::function_exists(name.as_str()));
            }
            self.persist(&cfg)?;
            fns.insert(name.to_string(), f.clone());
        }
        self.spawn_activation(f, cfg.revision_id.clone());
        Ok(cfg)
    }

    /// Checks and stores a zip; returns its hash and the sum of its files' declared sizes.
    async fn store_zip_sized(&self, zip: Vec<u8>, operation: &str) -> Result<(CodeHash, u64), EngineError> {
        if zip.len() as u64 > limits::ZIP_MAX_BYTES {
            return Err(EngineError::request_too_large(limits::CREATE_BODY_MAX_BYTES, operation));
        }
        let code = self.inner.code.clone();
        tokio::task::spawn_blocking(move || {
            let summary = kiln_store::unzip::inspect(&zip).map_err(|e| EngineError::invalid(e.to_string()))?;
            let hash = code.put_zip(&zip).map_err(|e| internal("cannot store code", e))?;
            Ok((hash, summary.declared_bytes))
        })
        .await
        .map_err(|e| internal("code task failed", e))?
    }

    /// Unpacks the visible `$LATEST` code and makes it the runnable one: `Pending` becomes
    /// `Active`, an update `InProgress` becomes `Successful`. Does nothing if the function changed
    /// again meanwhile (the newer change has its own activation).
    fn spawn_activation(&self, f: Arc<Function>, revision_id: String) {
        let engine = self.clone();
        tokio::spawn(async move {
            let cfg = f.lock().visible.clone();
            let code = engine.inner.code.clone();
            let unpacked = match CodeHash::from_base64(&cfg.code_sha256) {
                Some(hash) => tokio::task::spawn_blocking(move || code.unpack(&hash).map_err(|e| e.to_string()))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string())),
                None => Err("stored code hash is malformed".to_string()),
            };
            // The function's layers, merged into the tree environments see at /opt.
            let unpacked = match unpacked {
                Ok(dir) => engine.opt_dir(&cfg.layers).await.map(|opt| (dir, opt)).map_err(|e| e.chain().to_string()),
                Err(e) => Err(e),
            };
            let (retired, publish) = {
                let mut st = f.lock();
                if st.deleted || st.visible.revision_id != revision_id {
                    return;
                }
                let mut next = (*st.visible).clone();
                match &unpacked {
                    Ok(_) => {
                        next.state = FunctionState::Active;
                        next.state_reason = None;
                        if next.last_update_status.is_some() {
                            next.last_update_status = Some(UpdateStatus::Successful);
                            next.last_update_reason = None;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(function = %next.name, error = %e, "unpacking code failed");
                        let reason = Some(format!("Could not unpack the deployment package: {e}"));
                        if next.state == FunctionState::Pending {
                            next.state = FunctionState::Failed;
                            next.state_reason = reason;
                        } else {
                            next.last_update_status = Some(UpdateStatus::Failed);
                            next.last_update_reason = reason;
                        }
                    }
                }
                let next = Arc::new(next);
                if let Err(e) = engine.persist(&next) {
                    tracing::error!(error = %e.chain(), "cannot store function state");
                }
                st.visible = next.clone();
                let retired = match &unpacked {
                    Ok((dir, opt)) => engine
                        .replace_latest(&mut st, Ready { config: next, code_dir: dir.clone(), opt_dir: opt.clone() }),
                    Err(_) => Vec::new(),
                };
                (retired, unpacked.is_ok() && std::mem::take(&mut st.publish_when_ready))
            };
            drop(retired);
            if publish {
                let name = cfg.name.clone();
                if let Err(e) = engine.publish_version(&FunctionRef { name, qualifier: None }, None, None, None) {
                    tracing::warn!(error = %e.chain(), "publishing after create failed");
                }
            }
        });
    }

    /// Makes `ready` the runnable `$LATEST`; returns the environments to retire.
    fn replace_latest(&self, st: &mut FnState, ready: Ready) -> Vec<Arc<Environment>> {
        match st.pools.get_mut(&Version::Latest) {
            Some(pool) => pool.retire(ready),
            None => {
                st.pools.insert(Version::Latest, Pool::new(ready));
                Vec::new()
            }
        }
    }

    fn only_latest(&self, r: &FunctionRef) -> Result<(), EngineError> {
        match &r.qualifier {
            None | Some(Qualifier::Latest) => Ok(()),
            Some(q) => Err(EngineError::invalid(format!(
                "Only $LATEST can be changed; {q} is immutable. Use the unqualified function name."
            ))),
        }
    }

    /// Applies a configuration change to `$LATEST`.
    pub async fn update_config(
        &self,
        r: &FunctionRef,
        update: UpdateConfig,
    ) -> Result<Arc<FunctionConfig>, EngineError> {
        self.only_latest(r)?;
        let req = update.config;
        let f = self.function(&r.name)?;
        let runtime = req.runtime.as_deref().map(Runtime::parse).transpose()?;
        if let Some(role) = &req.role {
            cfgv::validate_role(role)?;
        }
        let memory = req.memory_mb.map(cfgv::validate_memory).transpose()?;
        let timeout = req.timeout_secs.map(cfgv::validate_timeout).transpose()?;
        let ephemeral = req.ephemeral_storage_mb.map(cfgv::validate_ephemeral).transpose()?;
        validate_texts(req.handler.as_deref(), req.description.as_deref(), req.environment.as_ref())?;
        cfgv::validate_logging(
            req.log_format.as_deref(),
            req.application_log_level.as_deref(),
            req.system_log_level.as_deref(),
        )?;
        // New layers: checked, sized with the code, and merged before anything changes.
        let layers = match &req.layers {
            Some(arns) => {
                let layers = self.resolve_layers(arns)?;
                layers::check_total_size(f.lock().visible.unzipped_size, &layers)?;
                let opt = self.opt_dir(&layers).await?;
                Some((layers, opt))
            }
            None => None,
        };
        let (next, retired) = {
            let mut st = f.lock();
            self.check_updatable(&st, update.revision_id.as_deref())?;
            let mut c = (*st.visible).clone();
            if let Some(v) = runtime {
                c.runtime = v;
            }
            if let Some(v) = req.role {
                c.role = v;
            }
            if let Some(v) = req.handler {
                c.handler = Some(v);
            }
            if let Some(v) = req.description {
                c.description = v;
            }
            if let Some(v) = memory {
                c.memory_mb = v;
            }
            if let Some(v) = timeout {
                c.timeout_secs = v;
            }
            if let Some(v) = ephemeral {
                c.ephemeral_storage_mb = v;
            }
            if let Some(v) = req.environment {
                c.environment = Some(v);
            }
            if let Some(v) = req.tracing_mode {
                c.tracing_mode = v;
            }
            if let Some(v) = req.log_format {
                c.log_format = v;
            }
            if let Some(v) = req.application_log_level {
                c.application_log_level = Some(v);
            }
            if let Some(v) = req.system_log_level {
                c.system_log_level = Some(v);
            }
            if let Some(v) = req.log_group {
                c.log_group = v;
            }
            c.passthrough.extend(req.passthrough);
            if let Some((l, _)) = &layers {
                c.layers = l.clone();
                c.passthrough.remove("Layers");
            }
            c.last_modified_ms = now_ms();
            c.revision_id = revision();
            c.changed_since_publish = true;
            // Nothing to unpack: the change takes effect at once, and environments built from
            // the old configuration are retired.
            c.last_update_status = Some(UpdateStatus::Successful);
            c.last_update_reason = None;
            let c = Arc::new(c);
            self.persist(&c)?;
            st.visible = c.clone();
            let retired = match st.pools.get(&Version::Latest).map(|p| p.ready().clone()) {
                Some(old) => {
                    let opt_dir = match layers {
                        Some((_, opt)) => opt,
                        None => old.opt_dir,
                    };
                    self.replace_latest(&mut st, Ready { config: c.clone(), code_dir: old.code_dir, opt_dir })
                }
                None => Vec::new(),
            };
            (c, retired)
        };
        drop(retired);
        Ok(next)
    }

    fn check_updatable(&self, st: &FnState, revision_id: Option<&str>) -> Result<(), EngineError> {
        let v = &st.visible;
        if v.state == FunctionState::Pending || v.last_update_status == Some(UpdateStatus::InProgress) {
            return Err(EngineError::update_in_progress(&self.arn(v.name.as_str(), None)));
        }
        if revision_id.is_some_and(|rev| rev != v.revision_id) {
            return Err(EngineError::revision_mismatch());
        }
        Ok(())
    }

    /// Replaces the code of `$LATEST`. Invocations keep the old code until the new one is unpacked.
    pub async fn update_code(&self, r: &FunctionRef, req: UpdateCode) -> Result<Arc<FunctionConfig>, EngineError> {
        self.only_latest(r)?;
        let f = self.function(&r.name)?;
        self.check_updatable(&f.lock(), req.revision_id.as_deref())?;
        let architectures = req.architectures.map(|a| validate_architectures(Some(a))).transpose()?;
        let size = req.zip.len() as u64;
        let (hash, unzipped_size) = self.store_zip_sized(req.zip, "UpdateFunctionCode").await?;
        layers::check_total_size(unzipped_size, &f.lock().visible.layers)?;
        let next = {
            let mut st = f.lock();
            if st.deleted {
                return Err(self.not_found(r.name.as_str(), None));
            }
            self.check_updatable(&st, req.revision_id.as_deref())?;
            let mut c = (*st.visible).clone();
            c.code_sha256 = hash.base64.clone();
            c.code_size = size;
            c.unzipped_size = unzipped_size;
            if let Some(a) = architectures {
                c.architectures = a;
            }
            c.last_modified_ms = now_ms();
            c.revision_id = revision();
            c.changed_since_publish = true;
            c.last_update_status = Some(UpdateStatus::InProgress);
            c.last_update_reason = Some("The function is being created.".into());
            let c = Arc::new(c);
            if req.dry_run {
                return Ok(c);
            }
            self.persist(&c)?;
            st.visible = c.clone();
            st.publish_when_ready = req.publish;
            c
        };
        self.spawn_activation(f, next.revision_id.clone());
        Ok(next)
    }

    /// The configuration a qualifier names: `$LATEST` as visible, a version, or an alias's version.
    pub fn get_function(&self, r: &FunctionRef) -> Result<Arc<FunctionConfig>, EngineError> {
        let f = self.function(&r.name)?;
        let st = f.lock();
        match &r.qualifier {
            None | Some(Qualifier::Latest) => Ok(st.visible.clone()),
            Some(Qualifier::Version(n)) => {
                st.versions.get(n).cloned().ok_or_else(|| self.not_found(r.name.as_str(), Some(&n.to_string())))
            }
            Some(Qualifier::Alias(a)) => {
                let v = st.aliases.get(a).ok_or_else(|| self.not_found(r.name.as_str(), Some(a)))?;
                match v.function_version.parse::<Version>() {
                    Ok(Version::Number(n)) => {
                        st.versions.get(&n).cloned().ok_or_else(|| self.not_found(r.name.as_str(), Some(a)))
                    }
                    Ok(Version::Latest) | Err(_) => Ok(st.visible.clone()),
                }
            }
        }
    }

    /// The reserved concurrency of a function, if set.
    pub fn reserved_concurrency(&self, name: &FunctionName) -> Result<Option<u32>, EngineError> {
        Ok(self.function(name)?.lock().settings.reserved)
    }

    /// The zip of a function version.
    pub async fn function_zip(&self, r: &FunctionRef) -> Result<Vec<u8>, EngineError> {
        let cfg = self.get_function(r)?;
        let hash = CodeHash::from_base64(&cfg.code_sha256).ok_or_else(|| internal("stored code hash", "malformed"))?;
        let code = self.inner.code.clone();
        tokio::task::spawn_blocking(move || code.read_zip(&hash))
            .await
            .map_err(|e| internal("code task failed", e))?
            .map_err(|e| internal("cannot read code", e))
    }

    /// ListFunctions: `$LATEST` of each function (and every version with `all_versions`),
    /// after `marker`, at most `max_items` and never more than 50.
    pub fn list_functions(
        &self,
        marker: Option<&str>,
        max_items: Option<usize>,
        all_versions: bool,
    ) -> Page<Arc<FunctionConfig>> {
        let mut all: Vec<Arc<FunctionConfig>> = Vec::new();
        for f in self.read_functions().values() {
            let st = f.lock();
            all.push(st.visible.clone());
            if all_versions {
                all.extend(st.versions.values().cloned());
            }
        }
        paginate(all, marker, max_items, |c| format!("{}:{}", c.name, c.version))
    }

    pub async fn delete_function(&self, r: &FunctionRef) -> Result<(), EngineError> {
        match &r.qualifier {
            None => {}
            Some(Qualifier::Latest) => {
                return Err(EngineError::invalid("$LATEST version cannot be deleted without deleting the function."))
            }
            Some(Qualifier::Version(n)) => return self.delete_version(r, *n).await,
            Some(Qualifier::Alias(a)) => return Err(self.not_found(r.name.as_str(), Some(a))),
        }
        let f = self.write_functions().remove(r.name.as_str()).ok_or_else(|| self.not_found(r.name.as_str(), None))?;
        let (hashes, envs) = {
            let mut st = f.lock();
            st.deleted = true;
            let mut hashes = vec![st.visible.code_sha256.clone()];
            hashes.extend(st.versions.values().map(|v| v.code_sha256.clone()));
            // Layers deleted while this function used them lose their last user here.
            let configs = std::iter::once(&st.visible).chain(st.versions.values());
            hashes.extend(configs.flat_map(|c| c.layers.iter().map(|l| l.code_sha256.clone())));
            let envs: Vec<_> = st.pools.values_mut().flat_map(Pool::drain).collect();
            (hashes, envs)
        };
        // Gone when DeleteFunction answers, destroyed off this thread.
        Environment::destroy_all_now(&envs).await;
        drop(envs);
        self.inner.admission.remove(r.name.as_str());
        self.inner.meta.delete_function(r.name.as_str()).map_err(|e| internal("cannot delete function", e))?;
        self.forget_events(r.name.as_str()).await;
        self.forget_urls(r.name.as_str());
        // Its logs go with it, so a deleted function leaves nothing on disk.
        self.inner.logs.remove(r.name.as_str()).await;
        self.collect_code(hashes).await;
        self.collect_opt_trees();
        Ok(())
    }

    async fn delete_version(&self, r: &FunctionRef, n: u64) -> Result<(), EngineError> {
        let f = self.function(&r.name)?;
        let version = n.to_string();
        let envs = {
            let mut st = f.lock();
            if !st.versions.contains_key(&n) {
                return Err(self.not_found(r.name.as_str(), Some(&version)));
            }
            let users: Vec<&str> = st
                .aliases
                .values()
                .filter(|a| {
                    a.function_version == version || a.additional_version.as_ref().is_some_and(|(v, _)| *v == version)
                })
                .map(|a| a.name.as_str())
                .collect();
            if !users.is_empty() {
                return Err(EngineError::version_in_use(&users));
            }
            self.inner
                .meta
                .delete_version(r.name.as_str(), &version)
                .map_err(|e| internal("cannot delete version", e))?;
            st.versions.remove(&n);
            if st.settings.provisioned.remove(&version).is_some() {
                self.inner.admission.set_provisioned(r.name.as_str(), st.pc_total());
                self.persist_settings(r.name.as_str(), &st)?;
            }
            self.forget_qualifier_settings(r.name.as_str(), &version);
            st.pools.remove(&Version::Number(n)).map(|mut p| p.drain()).unwrap_or_default()
        };
        Environment::destroy_all_now(&envs).await;
        Ok(())
    }

    /// Removes code no stored version uses any more.
    async fn collect_code(&self, hashes: Vec<String>) {
        for h in hashes {
            if self.inner.meta.code_in_use(&h).unwrap_or(true) {
                continue;
            }
            if let Some(hash) = CodeHash::from_base64(&h) {
                let code = self.inner.code.clone();
                let _ = tokio::task::spawn_blocking(move || code.remove(&hash)).await;
            }
        }
    }

    // ---- versions and aliases ------------------------------------------------------------

    /// PublishVersion: a new immutable version from `$LATEST`, or the last one if nothing changed.
    pub fn publish_version(
        &self,
        r: &FunctionRef,
        code_sha256: Option<&str>,
        description: Option<String>,
        revision_id: Option<&str>,
    ) -> Result<Arc<FunctionConfig>, EngineError> {
        self.only_latest(r)?;
        if let Some(d) = &description {
            cfgv::validate_description(d)?;
        }
        let f = self.function(&r.name)?;
        let mut st = f.lock();
        self.check_updatable(&st, revision_id)?;
        let latest = st.visible.clone();
        if code_sha256.is_some_and(|h| h != latest.code_sha256) {
            return Err(EngineError::code_sha256_mismatch(code_sha256.unwrap_or_default(), &latest.code_sha256));
        }
        let ready = st
            .pools
            .get(&Version::Latest)
            .map(|p| p.ready().clone())
            .ok_or_else(|| EngineError::function_state("Pending"))?;
        // As Lambda does: a version after any code or configuration update since the last one,
        // even an update that changed nothing; otherwise the last version, whatever the
        // description asked for.
        if let Some((_, last)) = st.versions.iter().next_back() {
            if !latest.changed_since_publish {
                return Ok(last.clone());
            }
        }
        let n = latest.last_published + 1;
        let mut v = (*latest).clone();
        v.version = Version::Number(n);
        v.revision_id = revision();
        v.last_modified_ms = now_ms();
        v.last_update_status = Some(UpdateStatus::Successful);
        v.last_update_reason = None;
        v.last_published = 0;
        v.changed_since_publish = false;
        if let Some(d) = description {
            v.description = d;
        }
        let v = Arc::new(v);
        self.persist(&v)?;
        let mut l = (*latest).clone();
        l.last_published = n;
        l.changed_since_publish = false;
        let l = Arc::new(l);
        self.persist(&l)?;
        st.visible = l;
        st.versions.insert(n, v.clone());
        st.pools.insert(
            Version::Number(n),
            Pool::new(Ready { config: v.clone(), code_dir: ready.code_dir, opt_dir: ready.opt_dir }),
        );
        Ok(v)
    }

    /// ListVersionsByFunction: `$LATEST` then every version.
    pub fn list_versions(
        &self,
        name: &FunctionName,
        marker: Option<&str>,
        max_items: Option<usize>,
    ) -> Result<Page<Arc<FunctionConfig>>, EngineError> {
        let f = self.function(name)?;
        let all: Vec<Arc<FunctionConfig>> = {
            let st = f.lock();
            std::iter::once(st.visible.clone()).chain(st.versions.values().cloned()).collect()
        };
        Ok(paginate(all, marker, max_items, |c| c.version.to_string()))
    }

    fn check_alias_target(
        &self,
        st: &FnState,
        name: &str,
        version: &str,
        routing: Option<&(String, f64)>,
    ) -> Result<(), EngineError> {
        let exists = |v: &str| v.parse::<Version>().is_ok_and(|v| st.has_version(v));
        if !exists(version) {
            return Err(self.not_found(name, Some(version)));
        }
        if let Some((extra, weight)) = routing {
            if !(0.0..=1.0).contains(weight) {
                return Err(EngineError::Model(kiln_model::ModelError::constraint(
                    weight,
                    "routingConfig.additionalVersionWeights",
                    "Member must have value less than or equal to 1.0",
                )));
            }
            if version == Qualifier::LATEST || extra == Qualifier::LATEST {
                return Err(EngineError::invalid(
                    "$LATEST is not supported for an alias pointing to more than 1 version",
                ));
            }
            if extra == version {
                return Err(EngineError::invalid(
                    "Invalid function version in AdditionalVersionWeights: it must differ from the alias' FunctionVersion",
                ));
            }
            if !exists(extra) {
                return Err(self.not_found(name, Some(extra)));
            }
        }
        Ok(())
    }

    pub fn create_alias(&self, name: &FunctionName, input: AliasInput) -> Result<AliasConfig, EngineError> {
        cfgv::validate_alias_name(&input.name)?;
        if let Some(d) = &input.description {
            cfgv::validate_description(d)?;
        }
        let version = input.function_version.clone().ok_or_else(|| {
            EngineError::Model(kiln_model::ModelError::constraint("null", "functionVersion", "Member must not be null"))
        })?;
        let f = self.function(name)?;
        let mut st = f.lock();
        if st.aliases.contains_key(&input.name) {
            return Err(EngineError::alias_exists(&self.arn(name.as_str(), Some(&input.name))));
        }
        let routing = input.routing.flatten();
        self.check_alias_target(&st, name.as_str(), &version, routing.as_ref())?;
        let alias = AliasConfig {
            name: input.name.clone(),
            function_version: version,
            description: input.description.unwrap_or_default(),
            additional_version: routing,
            revision_id: revision(),
        };
        self.inner.meta.put_alias(name.as_str(), &alias).map_err(|e| internal("cannot store alias", e))?;
        st.aliases.insert(alias.name.clone(), alias.clone());
        Ok(alias)
    }

    pub fn get_alias(&self, name: &FunctionName, alias: &str) -> Result<AliasConfig, EngineError> {
        let f = self.function(name)?;
        let st = f.lock();
        st.aliases.get(alias).cloned().ok_or_else(|| self.alias_not_found(name.as_str(), alias))
    }

    fn alias_not_found(&self, name: &str, alias: &str) -> EngineError {
        EngineError::alias_not_found(&self.arn(name, Some(alias)))
    }

    pub fn update_alias(&self, name: &FunctionName, input: AliasInput) -> Result<AliasConfig, EngineError> {
        if let Some(d) = &input.description {
            cfgv::validate_description(d)?;
        }
        let f = self.function(name)?;
        let alias = {
            let mut st = f.lock();
            let mut alias =
                st.aliases.get(&input.name).cloned().ok_or_else(|| self.alias_not_found(name.as_str(), &input.name))?;
            if input.revision_id.as_deref().is_some_and(|r| r != alias.revision_id) {
                return Err(EngineError::revision_mismatch());
            }
            if let Some(v) = input.function_version {
                alias.function_version = v;
            }
            if let Some(d) = input.description {
                alias.description = d;
            }
            if let Some(r) = input.routing {
                alias.additional_version = r;
            }
            self.check_alias_target(&st, name.as_str(), &alias.function_version, alias.additional_version.as_ref())?;
            alias.revision_id = revision();
            self.inner.meta.put_alias(name.as_str(), &alias).map_err(|e| internal("cannot store alias", e))?;
            st.aliases.insert(alias.name.clone(), alias.clone());
            st.retarget();
            alias
        };
        // Provisioned concurrency follows the alias to its new version.
        self.reconcile(&f);
        Ok(alias)
    }

    pub fn delete_alias(&self, name: &FunctionName, alias: &str) -> Result<(), EngineError> {
        let f = self.function(name)?;
        {
            let mut st = f.lock();
            if st.aliases.remove(alias).is_none() {
                return Ok(());
            }
            self.inner.meta.delete_alias(name.as_str(), alias).map_err(|e| internal("cannot delete alias", e))?;
            self.forget_qualifier_settings(name.as_str(), alias);
            self.forget_alias_url(name.as_str(), alias)?;
            if st.settings.provisioned.remove(alias).is_some() {
                self.inner.admission.set_provisioned(name.as_str(), st.pc_total());
                self.persist_settings(name.as_str(), &st)?;
            }
            st.retarget();
        }
        self.reconcile(&f);
        Ok(())
    }

    pub fn list_aliases(
        &self,
        name: &FunctionName,
        version: Option<&str>,
        marker: Option<&str>,
        max_items: Option<usize>,
    ) -> Result<Page<AliasConfig>, EngineError> {
        let f = self.function(name)?;
        let all: Vec<AliasConfig> =
            f.lock().aliases.values().filter(|a| version.is_none_or(|v| a.function_version == v)).cloned().collect();
        Ok(paginate(all, marker, max_items, |a| a.name.clone()))
    }

    // ---- concurrency ---------------------------------------------------------------------

    /// The account's concurrency limit.
    pub fn concurrency_limit(&self) -> u32 {
        self.inner.admission.limit()
    }

    /// Changes the account's concurrency limit while kiln runs (the keys file's
    /// `concurrency_limit`, re-read on SIGHUP): invocations in flight keep their slots, new ones
    /// are admitted against the new limit.
    pub fn set_concurrency_limit(&self, limit: u32) {
        self.inner.admission.set_limit(limit);
    }

    pub fn put_reserved_concurrency(&self, name: &FunctionName, reserved: i64) -> Result<u32, EngineError> {
        let limit = self.inner.admission.limit();
        if reserved < 0 {
            return Err(EngineError::Model(kiln_model::ModelError::constraint(
                reserved,
                "reservedConcurrentExecutions",
                "Member must have value greater than or equal to 0",
            )));
        }
        let reserved = u32::try_from(reserved).unwrap_or(u32::MAX).min(limit.saturating_add(1));
        let f = self.function(name)?;
        let mut st = f.lock();
        self.inner.admission.check_reserved(name.as_str(), reserved).map_err(EngineError::invalid)?;
        st.settings.reserved = Some(reserved);
        self.persist_settings(name.as_str(), &st)?;
        self.inner.admission.set_reserved(name.as_str(), Some(reserved));
        Ok(reserved)
    }

    pub fn delete_reserved_concurrency(&self, name: &FunctionName) -> Result<(), EngineError> {
        let f = self.function(name)?;
        let mut st = f.lock();
        st.settings.reserved = None;
        self.persist_settings(name.as_str(), &st)?;
        self.inner.admission.set_reserved(name.as_str(), None);
        Ok(())
    }

    /// PutProvisionedConcurrencyConfig: keep `requested` environments of `qualifier` ready.
    pub fn put_provisioned(&self, r: &FunctionRef, requested: i64) -> Result<ProvisionedStatus, EngineError> {
        let qualifier = self.pc_qualifier(r)?;
        if requested < 1 {
            return Err(EngineError::Model(kiln_model::ModelError::constraint(
                requested,
                "provisionedConcurrentExecutions",
                "Member must have value greater than or equal to 1",
            )));
        }
        let requested = u32::try_from(requested).unwrap_or(u32::MAX);
        let f = self.function(&r.name)?;
        {
            let mut st = f.lock();
            let version = st.version_of(&qualifier).ok_or_else(|| self.not_found(r.name.as_str(), Some(&qualifier)))?;
            // One provisioned config per version, directly or through one alias.
            for other in st.settings.provisioned.keys() {
                if *other != qualifier && st.version_of(other) == Some(version) {
                    return Err(EngineError::provisioned_elsewhere(&qualifier, &version.to_string(), other));
                }
            }
            let total = st.pc_total() - st.settings.provisioned.get(&qualifier).map_or(0, |p| p.requested) + requested;
            self.inner.admission.check_provisioned(r.name.as_str(), total).map_err(EngineError::invalid)?;
            st.settings
                .provisioned
                .insert(qualifier.clone(), ProvisionedSetting { requested, last_modified_ms: now_ms() });
            st.pc_failures.remove(&qualifier);
            self.persist_settings(r.name.as_str(), &st)?;
            self.inner.admission.set_provisioned(r.name.as_str(), total);
            st.retarget();
        }
        self.reconcile(&f);
        self.get_provisioned(r)
    }

    fn pc_qualifier(&self, r: &FunctionRef) -> Result<String, EngineError> {
        match &r.qualifier {
            None | Some(Qualifier::Latest) => Err(EngineError::invalid(
                "Provisioned Concurrency Configs cannot be applied to unpublished function versions.",
            )),
            Some(q) => Ok(q.to_string()),
        }
    }

    pub fn get_provisioned(&self, r: &FunctionRef) -> Result<ProvisionedStatus, EngineError> {
        let qualifier = self.pc_qualifier(r)?;
        let f = self.function(&r.name)?;
        let st = f.lock();
        provisioned::status(&st, &qualifier).ok_or_else(EngineError::provisioned_not_found)
    }

    pub fn list_provisioned(&self, name: &FunctionName) -> Result<Vec<ProvisionedStatus>, EngineError> {
        let f = self.function(name)?;
        let st = f.lock();
        Ok(st.settings.provisioned.keys().filter_map(|q| provisioned::status(&st, q)).collect())
    }

    pub fn delete_provisioned(&self, r: &FunctionRef) -> Result<(), EngineError> {
        let qualifier = self.pc_qualifier(r)?;
        let f = self.function(&r.name)?;
        {
            let mut st = f.lock();
            if st.settings.provisioned.remove(&qualifier).is_none() {
                return Err(EngineError::provisioned_not_found());
            }
            st.pc_failures.remove(&qualifier);
            self.persist_settings(r.name.as_str(), &st)?;
            self.inner.admission.set_provisioned(r.name.as_str(), st.pc_total());
            st.retarget();
        }
        self.reconcile(&f);
        Ok(())
    }

    pub fn account_settings(&self) -> AccountSettings {
        let mut total_code_size = 0;
        let mut function_count = 0;
        for f in self.read_functions().values() {
            let st = f.lock();
            function_count += 1;
            total_code_size += st.visible.code_size + st.versions.values().map(|v| v.code_size).sum::<u64>();
        }
        AccountSettings {
            concurrency_limit: self.inner.admission.limit(),
            unreserved: self.inner.admission.unreserved(),
            total_code_size,
            function_count,
        }
    }

    // ---- status and shutdown ---------------------------------------------------------------

    /// Live environments and start statistics of one function, or of all.
    /// The sandbox backend's pool of ready-made sandboxes, if it keeps one.
    pub fn sandbox_pool(&self) -> Option<kiln_sandbox::PoolStats> {
        self.inner.backend.pool_stats()
    }

    pub fn status(&self, name: Option<&FunctionName>) -> Result<Vec<FunctionStatus>, EngineError> {
        let fns: Vec<(String, Arc<Function>)> = match name {
            Some(n) => vec![(n.to_string(), self.function(n)?)],
            None => self.read_functions().iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        let mut out = Vec::new();
        for (name, f) in fns {
            let st = f.lock();
            let mut environments = Vec::new();
            let mut versions: Vec<(String, &Version)> = st.pools.keys().map(|v| (v.to_string(), v)).collect();
            // `$LATEST`, then the numbers in order: 1, 2, 10.
            versions.sort_by_key(|(_, key)| **key);
            for (v, key) in versions {
                let pool = &st.pools[key];
                let info = |e: &Arc<Environment>, state: &'static str| EnvironmentInfo {
                    id: e.id.clone(),
                    version: v.clone(),
                    state,
                    init_type: e.init_type,
                    age: e.created.elapsed(),
                    invocations: e.invocations.load(std::sync::atomic::Ordering::Relaxed),
                    max_memory_bytes: e.max_memory_bytes(),
                    memory_mb: e.config.memory_mb,
                    pid: Some(e.pid()),
                };
                environments.extend(pool.environments().map(|(e, state)| info(e, state.as_str())));
                let (on_demand, provisioned) = pool.starting();
                for (n, init_type) in [(on_demand, InitType::OnDemand), (provisioned, InitType::Provisioned)] {
                    for _ in 0..n {
                        environments.push(EnvironmentInfo {
                            id: String::new(),
                            version: v.clone(),
                            state: "initialising",
                            init_type,
                            age: Duration::ZERO,
                            invocations: 0,
                            max_memory_bytes: 0,
                            memory_mb: pool.ready().config.memory_mb,
                            pid: None,
                        });
                    }
                }
            }
            out.push(FunctionStatus { name, environments, stats: st.stats.clone() });
        }
        Ok(out)
    }

    /// Destroys every environment. Called at shutdown.
    pub fn shutdown(&self) {
        self.inner.events.stop();
        // What was retired before is destroyed first: the backend's shutdown below must find
        // nothing half-done.
        self.inner.teardown.flush();
        let fns: Vec<Arc<Function>> = self.read_functions().values().cloned().collect();
        for f in fns {
            let envs: Vec<Arc<Environment>> = {
                let mut st = f.lock();
                st.deleted = true;
                st.pools.values_mut().flat_map(Pool::drain).collect()
            };
            for e in envs {
                e.destroy();
            }
        }
        self.inner.backend.shutdown();
    }
}

use env::Environment;

/// Sorts nothing (items come sorted), skips through `marker`, cuts at `max_items` (≤ 50).
fn paginate<T>(all: Vec<T>, marker: Option<&str>, max_items: Option<usize>, key: impl Fn(&T) -> String) -> Page<T> {
    let limit = max_items.unwrap_or(limits::LIST_PAGE_MAX).clamp(1, limits::LIST_PAGE_MAX);
    let start = match marker {
        Some(m) => all.iter().position(|x| key(x) == m).map_or(all.len(), |i| i + 1),
        None => 0,
    };
    let rest = all.len().saturating_sub(start);
    let items: Vec<T> = all.into_iter().skip(start).take(limit).collect();
    let next_marker = if rest > items.len() { items.last().map(&key) } else { None };
    Page { items, next_marker }
}

/// Checks the optional free-form members that CreateFunction and UpdateFunctionConfiguration share.
fn validate_texts(
    handler: Option<&str>,
    description: Option<&str>,
    environment: Option<&BTreeMap<String, String>>,
) -> Result<(), EngineError> {
    handler.map(cfgv::validate_handler).transpose()?;
    description.map(cfgv::validate_description).transpose()?;
    environment.map(cfgv::validate_environment).transpose()?;
    Ok(())
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
