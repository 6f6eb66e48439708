//! The backend itself: [`LinuxBackend`] (start-up, the pool, shutdown), the environments it
//! hands out ([`LinuxSandbox`], one [`Env`] each), and `spawn`, which checks the spec, encodes
//! its claim and gives it to a blank from the pool or to one built on the spot.

use super::blank::*;
use super::cgroups::{self, Cgroups, Limits};
use super::child::RootEntry;
use super::preflight::*;
use super::protocol::{self, Message};
use super::reaper::*;
use super::sys::host::{self, detached_read_only_tree, epoll_add, recv_msg};
use super::*;
use crate::{Backend, ExitInfo, Sandbox, SandboxError, SandboxSpec, Spawned};
use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io::{self, ErrorKind};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Builds environments with Linux namespaces, cgroups and seccomp.
pub struct LinuxBackend {
    pub(super) inner: Arc<Inner>,
    pub(super) reaper: Option<JoinHandle<()>>,
    pub(super) fillers: Vec<JoinHandle<()>>,
    /// This instance's entry in the registry of live instances ([`super::sweep`]); `None` when
    /// the registry's directory cannot be written.
    pub(super) registration: Option<super::sweep::Registration>,
}

/// State shared by the backend, its environments and the reaper thread.
pub(super) struct Inner {
    pub(super) instance_id: String,
    /// `<state dir>/sandbox-<instance id>`: holds the root mountpoint.
    pub(super) scratch: std::path::PathBuf,
    pub(super) cgroups: Box<dyn Cgroups>,
    /// The empty directory every environment mounts its root tmpfs on (in its own mount
    /// namespace, so one directory serves all).
    pub(super) root_mountpoint: CString,
    pub(super) root_entries: Vec<RootEntry>,
    /// [`LinuxOptions::read_only_binds`], for [`Backend::sandbox_path`].
    pub(super) read_only_binds: Vec<(std::path::PathBuf, std::path::PathBuf)>,
    pub(super) filters: Vec<seccompiler::BpfProgram>,
    pub(super) cap_last: u32,
    pub(super) envs: Mutex<HashMap<u64, Arc<Env>>>,
    pub(super) next_key: AtomicU64,
    pub(super) epoll: OwnedFd,
    pub(super) stop: OwnedFd,
    pub(super) pool: pool::Pool,
    /// Numbers the blanks' cgroups (`blank.<n>`).
    pub(super) blank_seq: AtomicU64,
    /// The host uids of this instance's environments.
    pub(super) host_ids: Arc<HostIds>,
    /// The process blanks' inits are cloned from (`zygote.rs`).
    pub(super) zygote: super::zygote::Zygotes,
}

/// Allocates host uids (equal gids) to environments from this instance's block: one per live
/// environment or blank, reused once it is gone.
pub(super) struct HostIds {
    pub(super) first: u32,
    pub(super) state: Mutex<(u32, std::collections::BTreeSet<u32>)>,
}

impl HostIds {
    pub(super) fn for_instance(instance_id: &str) -> HostIds {
        // FNV-1a: stable across runs, so a restarted instance takes the same block.
        let hash = instance_id.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
        HostIds { first: HOST_ID_BASE + (hash % HOST_ID_BLOCKS) * HOST_IDS_PER_INSTANCE, state: Mutex::default() }
    }

    /// A free id of the block, or `None` when all of them are live.
    pub(super) fn lease(self: &Arc<Self>) -> Option<IdLease> {
        let mut st = lock(&self.state);
        let (cursor, used) = &mut *st;
        for _ in 0..HOST_IDS_PER_INSTANCE {
            let id = self.first + *cursor;
            *cursor = (*cursor + 1) % HOST_IDS_PER_INSTANCE;
            if used.insert(id) {
                return Some(IdLease { id, ids: self.clone() });
            }
        }
        None
    }
}

/// A host uid held by one blank, then by the environment it becomes; released when dropped.
pub(super) struct IdLease {
    pub(super) id: u32,
    pub(super) ids: Arc<HostIds>,
}

impl Drop for IdLease {
    fn drop(&mut self) {
        lock(&self.ids.state).1.remove(&self.id);
    }
}

/// One environment as the host sees it.
pub(super) struct Env {
    pub(super) id: String,
    /// Name of its cgroups: its id when built on the spot, `blank.<n>` when it came from the pool.
    pub(super) cgroup: String,
    pub(super) key: u64,
    pub(super) pid: i32,
    pub(super) pidfd: OwnedFd,
    /// kiln's end of the socket pair to init: carries the bootstrap's exit status.
    pub(super) sock: OwnedFd,
    pub(super) inner: Arc<Inner>,
    pub(super) exit_tx: watch::Sender<Option<ExitInfo>>,
    pub(super) state: Mutex<EnvState>,
    pub(super) reaped_cv: Condvar,
    /// Serialises reaping between the reaper thread and a `destroy` that gave up waiting.
    pub(super) reap_lock: Mutex<()>,
    /// Freeze control and peak-memory counter, opened during the claim and kept open.
    pub(super) hot: std::sync::OnceLock<cgroups::HotFiles>,
    /// Its host uid, free again once the environment is gone.
    pub(super) _host_id: IdLease,
    /// Whether its cgroups still have the Init phase's CPU ([`Limits::for_init`]) instead of
    /// the function's own.
    pub(super) in_init: std::sync::atomic::AtomicBool,
    /// The writes that give it the function's own CPU share at the end of Init, their files
    /// opened during the claim and closed once written.
    pub(super) end_init: Mutex<Option<cgroups::PreparedLimits>>,
    /// The pool's hold on the refill of the blank it came from (0: none): released when its
    /// cold start is over, i.e. when it is first frozen (idle after its first call, or after
    /// a provisioned Init) or destroyed.
    pub(super) refill_hold: AtomicU64,
}

#[derive(Debug, Default)]
pub(super) struct EnvState {
    pub(super) reaped: bool,
    pub(super) destroyed: bool,
    /// Killed by kiln (destroy), not by itself or the kernel.
    pub(super) killed: bool,
    /// Peak memory read just before the cgroups went away.
    pub(super) peak_bytes: u64,
}

pub(super) struct LinuxSandbox {
    pub(super) env: Arc<Env>,
}

impl Env {
    pub(super) fn hot(&self) -> &cgroups::HotFiles {
        self.hot.get_or_init(|| self.inner.cgroups.hot_files(&self.cgroup))
    }

    /// Lets the pool refill the blank this environment came from, if it still waits.
    pub(super) fn release_refill(&self) {
        match self.refill_hold.swap(0, Ordering::AcqRel) {
            0 => {}
            id => self.inner.pool.release(id),
        }
    }
}

impl LinuxBackend {
    /// [`LinuxBackend::with_options`] with the default options (a pool of
    /// [`DEFAULT_POOL_SIZE`] blanks).
    pub fn new(instance_id: &str, state_dir: &Path) -> Result<LinuxBackend, SandboxError> {
        Self::with_options(instance_id, state_dir, LinuxOptions::default())
    }

    /// Checks privileges, detects the cgroup layout, removes what a previous kiln with the same
    /// `instance_id` left behind (environments and blanks alike), and starts the reaper thread
    /// and the thread that fills the pool of blanks.
    ///
    /// `instance_id` (`[0-9a-z-]`, at most 32 bytes) names this kiln's cgroups; `state_dir` is a
    /// directory kiln owns where the backend keeps its scratch directory. The caller guarantees
    /// that no live process uses the same `instance_id` (`kiln serve` holds the lock of the data
    /// dir the id is derived from): everything found under it is taken for a dead one's leftovers.
    pub fn with_options(instance_id: &str, state_dir: &Path, opts: LinuxOptions) -> Result<LinuxBackend, SandboxError> {
        let setup = |step, e| SandboxError::step(instance_id, step, e);
        if instance_id.is_empty()
            || instance_id.len() > 32
            || !instance_id.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-')
        {
            return Err(setup("check instance id", invalid("instance id must be 1 to 32 characters of [0-9a-z-]")));
        }
        check_capabilities()?;
        check_seccomp()?;

        let leaf = format!("kiln-{instance_id}");
        let mountinfo =
            fs::read_to_string("/proc/self/mountinfo").map_err(|e| setup("read /proc/self/mountinfo", e))?;
        let proc_cgroup = fs::read_to_string("/proc/self/cgroup").map_err(|e| setup("read /proc/self/cgroup", e))?;
        let cgroups = cgroups::detect(&mountinfo, &proc_cgroup, &leaf).map_err(|why| {
            SandboxError::Privileges(format!(
                "{why}; kiln needs the memory, cpu and pids cgroup controllers (v1 or v2) and a \
                 freezer: mount them, or use --isolation none"
            ))
        })?;
        // Registered before its cgroups exist, so that a sweep by another instance never takes
        // them for a dead one's (see `sweep_orphans`).
        let mut registration = register(&opts.registry_dir, &leaf)?;
        // What a dead predecessor with this id recorded: its directories may lie under another
        // parent (kiln's own cgroup differs from run to run in some hierarchies).
        let predecessor = registration.as_mut().map(super::sweep::Registration::recorded).unwrap_or_default();
        if let Some(r) = registration.as_mut() {
            if let Err(e) = r.record(&cgroups.instance_dirs()) {
                tracing::warn!(registry = %opts.registry_dir.display(), error = %e, "cannot record this instance's cgroups");
            }
        }
        cgroups.init().map_err(|e| match &e {
            cgroups::CgroupError::Create { source, .. } | cgroups::CgroupError::Write { source, .. }
                if matches!(source.raw_os_error(), Some(libc::EACCES | libc::EPERM | libc::EROFS | libc::EBUSY)) =>
            {
                SandboxError::Privileges(format!(
                    "{e} ({source}); run kiln as root with a writable cgroup filesystem (on \
                     cgroup v2, in a cgroup of its own with delegated controllers), or use \
                     --isolation none"
                ))
            }
            _ => setup("create cgroups", e.into()),
        })?;
        probe_namespaces()?;

        // Leftovers of a predecessor killed with SIGKILL: its environments' processes, then
        // their cgroups. They are a dead instance's only because the caller made sure that no
        // live one shares the id (see above).
        for env in cgroups.list() {
            tracing::warn!(instance = instance_id, env, "removing leftover environment");
            if let Err(e) = cgroups::kill_and_remove(cgroups.as_ref(), &env) {
                tracing::error!(instance = instance_id, env, error = %e, "cannot remove leftover environment");
            }
        }

        let own_dirs = cgroups.instance_dirs();
        for dir in predecessor.iter().filter(|d| !own_dirs.contains(d)) {
            if let Err(e) = cgroups::remove_tree(dir) {
                tracing::error!(instance = instance_id, cgroup = %dir.display(), error = %e, "cannot remove a leftover cgroup");
            }
        }

        // And those of other instances that died and were never started again.
        super::sweep::sweep(&opts.registry_dir, &leaf);
        if registration.is_some() {
            // Only when this instance could register: then every live one could too.
            super::sweep::sweep_orphans(&opts.registry_dir, &own_dirs);
        }

        let scratch = state_dir.join(format!("sandbox-{instance_id}"));
        let root_dir = scratch.join("root");
        prepare_scratch(&root_dir).map_err(|e| setup("prepare scratch directory", e))?;
        let root_mountpoint =
            cstring(root_dir.as_os_str().as_bytes()).map_err(|e| setup("prepare scratch directory", e))?;

        let filters = seccomp::build().map_err(|e| setup("build seccomp filter", io::Error::other(e)))?;
        let mut root_entries = host_root_entries().map_err(|e| setup("inspect host root", e))?;
        root_entries.extend(extra_root_entries(&opts.read_only_binds).map_err(|e| setup("check read-only binds", e))?);
        let cap_last =
            fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40);

        let epoll = host::epoll().map_err(|e| setup("create epoll", e))?;
        let stop = host::eventfd().map_err(|e| setup("create eventfd", e))?;
        epoll_add(&epoll, &stop, STOP_KEY, false).map_err(|e| setup("create epoll", e))?;

        let inner = Arc::new(Inner {
            instance_id: instance_id.to_owned(),
            scratch,
            cgroups,
            root_mountpoint,
            root_entries,
            read_only_binds: opts.read_only_binds.clone(),
            filters,
            cap_last,
            envs: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(0),
            epoll,
            stop,
            pool: pool::Pool::new(
                opts.pool_size,
                opts.pool_max,
                Limits::for_memory_mb(FIRST_BLANK_MEMORY_MB).for_init(),
                FIRST_BLANK_TMP_MB,
            ),
            blank_seq: AtomicU64::new(0),
            host_ids: Arc::new(HostIds::for_instance(instance_id)),
            zygote: super::zygote::Zygotes::new(),
        });
        // Forked now, before the backend's threads exist, so that it copies as little as
        // possible; it has the root entries, filters and mountpoint above.
        inner.zygote.start(&inner).map_err(|e| setup("start zygote", io::Error::other(e)))?;
        let reaper_inner = inner.clone();
        let reaper = std::thread::Builder::new()
            .name(format!("kiln-reaper-{instance_id}"))
            .stack_size(256 * 1024)
            .spawn(move || reaper_loop(&reaper_inner))
            .map_err(|e| setup("start reaper thread", e))?;
        let mut backend = LinuxBackend { inner, reaper: Some(reaper), fillers: Vec::new(), registration };
        for n in 0..pool::MAX_BUILDERS {
            let filler_inner = backend.inner.clone();
            // Blanks are clones of this thread: its stack is what their init runs on.
            let filler = std::thread::Builder::new()
                .name(format!("kiln-pool{n}-{instance_id}"))
                .stack_size(512 * 1024)
                .spawn(move || pool::filler_loop(&filler_inner))
                .map_err(|e| setup("start pool thread", e))?;
            backend.fillers.push(filler);
        }
        tracing::info!(
            instance = instance_id,
            cgroups = backend.inner.cgroups.layout(),
            pool = opts.pool_size,
            pool_max = opts.pool_max,
            "linux sandbox backend ready"
        );
        Ok(backend)
    }

    /// Changes how many blanks the pool keeps ready when demand is low (0 disables it); extra
    /// blanks are destroyed at once. No effect after [`Backend::shutdown`].
    pub fn set_pool_size(&self, n: usize) {
        discard_all(self.inner.pool.set_target(n), self.inner.cgroups.as_ref());
    }

    /// The pool's target, how many blanks are ready, and how spawns were served.
    pub fn pool_stats(&self) -> PoolStats {
        self.inner.pool.stats()
    }

    /// Waits until the pool holds its target number of blanks; false if `timeout` passed first.
    pub fn wait_pool_full(&self, timeout: Duration) -> bool {
        self.inner.pool.wait_full(timeout)
    }

    /// The name of the cgroup directories (below `kiln-<instance id>` in each hierarchy) of the
    /// live environment `id`: `id` itself when it was built on the spot, `blank.<n>` when it was
    /// a blank of the pool.
    pub fn cgroup_of(&self, id: &str) -> Option<String> {
        lock(&self.inner.envs).values().find(|e| e.id == id).map(|e| e.cgroup.clone())
    }

    /// The cgroup layout in use (`v1+unified`, `v1`, `v2`).
    pub fn cgroup_layout(&self) -> &'static str {
        self.inner.cgroups.layout()
    }

    /// Leaves everything as it is, as if kiln had been killed: for tests of what happens to
    /// the leftovers. The registry lock is let go, as the kernel would at the process's death.
    #[doc(hidden)]
    pub fn abandon(mut self) {
        drop(self.registration.take());
        // kiln's death closes the zygote's socket, which ends it.
        self.inner.zygote.stop();
        std::mem::forget(self);
    }

    /// The number of environments alive.
    pub fn live_environments(&self) -> usize {
        lock(&self.inner.envs).len()
    }

    /// The pid of the zygote blanks' inits are cloned from (see the module docs), if one runs.
    #[doc(hidden)]
    pub fn zygote_pid(&self) -> Option<u32> {
        self.inner.zygote.pid().map(|p| p as u32)
    }

    /// How many zygotes this backend has started (more than one after one died).
    #[doc(hidden)]
    pub fn zygotes_started(&self) -> u64 {
        self.inner.zygote.started()
    }
}

/// Registers the instance among the live ones (the caller records its cgroup directories). An unwritable
/// registry only costs the sweep of this instance's leftovers by others, so it is a warning; a
/// registration held by a live process is an error (two backends would share cgroups).
fn register(dir: &Path, leaf: &str) -> Result<Option<super::sweep::Registration>, SandboxError> {
    match super::sweep::Registration::acquire(dir, leaf) {
        Ok(r) => Ok(Some(r)),
        Err(e) if e.kind() == ErrorKind::WouldBlock => Err(SandboxError::step(leaf, "register instance", e)),
        Err(e) => {
            tracing::warn!(
                registry = %dir.display(),
                error = %e,
                "cannot register this instance: its cgroups will not be swept if it dies without cleaning up"
            );
            Ok(None)
        }
    }
}

impl Drop for LinuxBackend {
    fn drop(&mut self) {
        self.shutdown();
        for f in self.fillers.drain(..) {
            let _ = f.join();
        }
        match self.inner.cgroups.remove_instance() {
            // Nothing left for a sweep to find.
            Ok(()) => self.registration.take().into_iter().for_each(super::sweep::Registration::remove),
            Err(e) => tracing::warn!(instance = %self.inner.instance_id, error = %e, "cannot remove instance cgroups"),
        }
        // The scratch directories are empty on the host; a failure here only leaves them.
        let _ = fs::remove_dir(self.inner.scratch.join("root"));
        let _ = fs::remove_dir(&self.inner.scratch);
        host::notify(&self.inner.stop);
        if let Some(r) = self.reaper.take() {
            let _ = r.join();
        }
    }
}

impl Sandbox for LinuxSandbox {
    fn pid(&self) -> u32 {
        self.env.pid as u32
    }

    fn freeze(&self) -> Result<(), SandboxError> {
        if lock(&self.env.state).reaped {
            return Ok(());
        }
        let frozen = self.env.hot().set_frozen(true).map_err(|e| SandboxError::step(&self.env.id, "freeze", e));
        // Idle: its cold start is over (its first call answered, or a provisioned Init ended).
        self.env.release_refill();
        frozen
    }

    fn thaw(&self) -> Result<(), SandboxError> {
        if lock(&self.env.state).reaped {
            return Ok(());
        }
        self.env.hot().set_frozen(false).map_err(|e| SandboxError::step(&self.env.id, "thaw", e))
    }

    fn end_init(&self) -> Result<(), SandboxError> {
        let env = &self.env;
        if !env.in_init.swap(false, Ordering::AcqRel) || lock(&env.state).reaped {
            return Ok(());
        }
        let Some(writes) = lock(&env.end_init).take() else { return Ok(()) };
        writes.apply().map_err(|e| SandboxError::step(&env.id, "end init cpu", e.into()))
    }

    fn max_memory_bytes(&self) -> u64 {
        let st = lock(&self.env.state);
        if st.reaped {
            return st.peak_bytes;
        }
        drop(st);
        self.env.hot().peak_bytes().or_else(|| self.env.inner.cgroups.peak_memory_bytes(&self.env.cgroup)).unwrap_or(0)
    }

    fn exit_watch(&self) -> watch::Receiver<Option<ExitInfo>> {
        self.env.exit_tx.subscribe()
    }

    fn destroy(&self) {
        self.env.destroy();
    }

    fn kill(&self) {
        self.env.kill();
    }
}

impl Drop for LinuxSandbox {
    fn drop(&mut self) {
        self.env.destroy();
    }
}

/// What `spawn` derives from the spec before touching any environment.
pub(super) struct Prepared {
    /// The code directory as given (`open_tree` resolves it; no canonicalisation needed).
    pub(super) code_dir: CString,
    /// The layers directory, if any, likewise.
    pub(super) opt_dir: Option<CString>,
    /// The claim message; its `tmp_mb` field is filled per blank.
    pub(super) msg: Vec<u8>,
}

/// Checks the spec and encodes the claim init will receive (see [`protocol::encode_claim`]).
pub(super) fn prepare(spec: &SandboxSpec) -> io::Result<Prepared> {
    if spec.id.is_empty()
        || spec.id.len() > 64
        || !spec.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid("environment id must be 1 to 64 characters of [A-Za-z0-9_-]"));
    }
    // A relative bootstrap is the function's own, under `/var/task`; an absolute one can only
    // be a managed runtime's launcher under `/var/runtime` (see `Backend::sandbox_path`).
    let (root, rel) = match spec.bootstrap.strip_prefix(RUNTIME_DIR) {
        Ok(rel) => (Path::new(RUNTIME_DIR), rel),
        Err(_) => (Path::new("/var/task"), spec.bootstrap.as_path()),
    };
    if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(invalid("bootstrap must be a relative path inside the code directory"));
    }
    let code_dir = cstring(spec.code_dir.as_os_str().as_bytes())?;
    let opt_dir = spec.opt_dir.as_ref().map(|d| cstring(d.as_os_str().as_bytes())).transpose()?;
    if spec.bootstrap_in_opt && opt_dir.is_none() {
        return Err(invalid("a bootstrap from /opt needs a layers directory"));
    }
    let hostname = format!("kiln-{}", spec.id);
    let exe = if spec.bootstrap_in_opt { Path::new("/opt").join(rel) } else { root.join(rel) };
    let runtime_api = format!("127.0.0.1:{}", protocol::RUNTIME_API_PORT);
    let vars = spec
        .env
        .iter()
        .filter(|(k, _)| k != kiln_model::env::RUNTIME_API)
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain([(kiln_model::env::RUNTIME_API, runtime_api.as_str())]);
    if spec.env.iter().any(|(k, _)| k.is_empty() || k.contains('=')) {
        return Err(invalid("environment variable names may not be empty or contain '='"));
    }
    let msg = protocol::encode_claim(hostname.as_bytes(), exe.as_os_str().as_bytes(), vars).map_err(|e| match e {
        protocol::ClaimError::Nul => invalid("the bootstrap and environment variables may not contain NUL bytes"),
        e @ protocol::ClaimError::TooLarge { .. } => io::Error::new(ErrorKind::InvalidInput, e.to_string()),
    })?;
    Ok(Prepared { code_dir, opt_dir, msg })
}

/// Why claiming a blank failed; `retry` when the blank was dead before we asked (another blank
/// may do).
pub(super) struct ClaimError {
    pub(super) err: SandboxError,
    pub(super) retry: bool,
}

/// Gives `blank` the spec's limits, code, `/tmp` size, hostname and environment, and starts the
/// bootstrap in it. The environment keeps `refill_hold` (see [`Env::refill_hold`]); on an error
/// the caller releases it.
#[allow(clippy::too_many_arguments)]
pub(super) fn claim(
    inner: &Arc<Inner>,
    blank: Blank,
    refill_hold: Option<u64>,
    spec: &SandboxSpec,
    msg: &mut [u8],
    code: (OwnedFd, Option<OwnedFd>),
    function_limits: &Limits,
    tmp_mb: u32,
) -> Result<Spawned, ClaimError> {
    // Init runs with more CPU; `Sandbox::end_init` applies the function's own share.
    let limits = &function_limits.for_init();
    let cg = inner.cgroups.as_ref();
    let step = |s, e| SandboxError::step(&spec.id, s, e);
    let fail = |blank: Blank, err: SandboxError, retry: bool| {
        blank.discard(cg);
        ClaimError { err, retry }
    };
    if blank.limits != *limits {
        if let Err(e) = cg.set_limits(&blank.cgroup, &blank.limits, limits) {
            return Err(fail(blank, step("set cgroup limits", e.into()), false));
        }
    }
    let resize = if blank.tmp_mb == tmp_mb { 0 } else { tmp_mb };
    protocol::set_claim_tmp_mb(msg, resize);
    // The code tree, then the layers tree when there is one.
    let fds = [code.0.as_raw_fd(), code.1.as_ref().map_or(-1, |fd| fd.as_raw_fd())];
    let fds = if code.1.is_some() { &fds[..] } else { &fds[..1] };
    // The socket and every descriptor in `fds` are open (owned by `blank` and `code`).
    if let Err(errno) = sys::send(blank.sock.as_raw_fd(), msg, fds) {
        // EPIPE / ECONNRESET: the blank's init is gone.
        return Err(fail(blank, step("send claim", io::Error::from_raw_os_error(errno)), true));
    }
    drop(code);
    // While init attaches the code and the bootstrap starts, open the cgroup files this
    // environment's first call needs (its Init's end, the peak memory of its REPORT): kernfs
    // opens cost tens of microseconds each, which would otherwise sit on the cold call's path.
    let hot = std::sync::OnceLock::new();
    let _ = hot.set(cg.hot_files(&blank.cgroup));
    let end_init = cg.prepare_limits(&blank.cgroup, limits, function_limits);
    match recv_msg(&blank.sock, SETUP_TIMEOUT) {
        Ok((Some(Message::Started), _)) => {}
        Ok((Some(Message::SetupFailed { step, errno }), _)) => {
            return Err(fail(blank, failed_step(&spec.id, step, errno), false))
        }
        Ok(_) => return Err(fail(blank, step("start bootstrap", invalid_data("unexpected message from init")), false)),
        Err(e) => {
            let retry = e.kind() == ErrorKind::UnexpectedEof;
            return Err(fail(blank, step("start bootstrap", e), retry));
        }
    }

    let Blank { cgroup, pid, pidfd, sock, listener, output, host_id, .. } = blank;
    let key = inner.next_key.fetch_add(1, Ordering::Relaxed);
    let (exit_tx, _) = watch::channel(None);
    let env = Arc::new(Env {
        id: spec.id.clone(),
        cgroup,
        key,
        pid,
        pidfd,
        sock,
        inner: inner.clone(),
        exit_tx,
        state: Mutex::new(EnvState::default()),
        reaped_cv: Condvar::new(),
        reap_lock: Mutex::new(()),
        hot,
        _host_id: host_id,
        in_init: std::sync::atomic::AtomicBool::new(true),
        end_init: Mutex::new(Some(end_init)),
        refill_hold: AtomicU64::new(refill_hold.unwrap_or(0)),
    });
    lock(&inner.envs).insert(key, env.clone());
    if let Err(e) = epoll_add(&inner.epoll, &env.pidfd, key, true) {
        env.destroy();
        return Err(ClaimError { err: step("watch environment", e), retry: false });
    }
    Ok(Spawned { sandbox: Box::new(LinuxSandbox { env }), runtime_listener: listener, output })
}

impl Backend for LinuxBackend {
    fn name(&self) -> &'static str {
        "linux"
    }

    fn pool_stats(&self) -> Option<PoolStats> {
        Some(self.inner.pool.stats())
    }

    fn sandbox_path(&self, host: &Path) -> Option<std::path::PathBuf> {
        if host.starts_with("/usr") {
            return Some(host.to_path_buf());
        }
        self.inner
            .read_only_binds
            .iter()
            .find_map(|(source, target)| host.strip_prefix(source).ok().map(|rest| target.join(rest)))
    }

    fn spawn(&self, spec: &SandboxSpec) -> Result<Spawned, SandboxError> {
        let inner = &self.inner;
        let step = |s, e| SandboxError::step(&spec.id, s, e);
        let t0 = Instant::now();
        let mut prepared = prepare(spec).map_err(|e| step("check spec", e))?;
        let limits = Limits::for_memory_mb(spec.memory_mb);
        let tmp_mb = spec.tmp_mb.max(1);
        let open_code = || {
            let code = detached_read_only_tree(&prepared.code_dir).map_err(|e| step("open code directory", e))?;
            let opt = match &prepared.opt_dir {
                Some(d) => Some(detached_read_only_tree(d).map_err(|e| step("open layers directory", e))?),
                None => None,
            };
            Ok::<_, SandboxError>((code, opt))
        };
        // Opened before taking a blank, so a bad code directory costs no blank.
        let mut code = Some(open_code()?);

        while let Some((blank, hold)) = inner.pool.take(limits.for_init(), tmp_mb) {
            let release = || hold.into_iter().for_each(|id| inner.pool.release(id));
            let fd = match code.take() {
                Some(fd) => fd,
                None => match open_code() {
                    Ok(fd) => fd,
                    Err(e) => {
                        blank.discard(inner.cgroups.as_ref());
                        release();
                        return Err(e);
                    }
                },
            };
            let blank_name = blank.cgroup.clone();
            let claimed = claim(inner, blank, hold, spec, &mut prepared.msg, fd, &limits, tmp_mb);
            if claimed.is_err() {
                release();
            }
            match claimed {
                Ok(spawned) => {
                    inner.pool.count_spawn(true);
                    tracing::debug!(
                        env = %spec.id,
                        blank = %blank_name,
                        pid = spawned.sandbox.pid(),
                        instance = %inner.instance_id,
                        ready_us = t0.elapsed().as_micros() as u64,
                        "environment started from the pool"
                    );
                    return Ok(spawned);
                }
                Err(ClaimError { err, retry: true }) => {
                    tracing::warn!(env = %spec.id, blank = %blank_name, error = %err, "blank was dead; trying another");
                }
                Err(ClaimError { err, .. }) => return Err(err),
            }
        }

        // Pool empty or disabled: build this environment's blank now, named after it.
        let fd = match code.take() {
            Some(fd) => fd,
            None => open_code()?,
        };
        let blank = build_blank(inner, &spec.id, limits.for_init(), tmp_mb)?;
        let t_blank = t0.elapsed();
        let spawned = claim(inner, blank, None, spec, &mut prepared.msg, fd, &limits, tmp_mb).map_err(|e| e.err)?;
        inner.pool.count_spawn(false);
        tracing::debug!(
            env = %spec.id,
            pid = spawned.sandbox.pid(),
            instance = %inner.instance_id,
            blank_us = t_blank.as_micros() as u64,
            ready_us = t0.elapsed().as_micros() as u64,
            "environment started on the spot"
        );
        Ok(spawned)
    }

    /// Destroys the pool's blanks (the pool stays empty from then on) and every environment
    /// still alive.
    fn shutdown(&self) {
        discard_all(self.inner.pool.stop(SETUP_TIMEOUT), self.inner.cgroups.as_ref());
        let envs: Vec<Arc<Env>> = lock(&self.inner.envs).values().cloned().collect();
        // Kill all first so they die in parallel, then wait for each.
        for env in &envs {
            env.kill();
        }
        for env in &envs {
            env.destroy();
        }
        // A spawn after this starts a new one.
        self.inner.zygote.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_rejects_escaping_bootstraps_and_bad_ids() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = SandboxSpec {
            id: "env-1".into(),
            code_dir: dir.path().into(),
            bootstrap: "bootstrap".into(),
            opt_dir: None,
            bootstrap_in_opt: false,
            env: vec![("A".into(), "b".into())],
            memory_mb: 128,
            tmp_mb: 512,
        };
        let mut p = prepare(&spec).unwrap();
        protocol::set_claim_tmp_mb(&mut p.msg, 512);
        let mut envp = vec![std::ptr::null(); protocol::MAX_ENV_VARS + 1];
        let claim = protocol::decode_claim(&p.msg, &mut envp).unwrap();
        assert_eq!(claim.exe, b"/var/task/bootstrap\0");
        assert_eq!(claim.hostname, b"kiln-env-1");
        assert_eq!(claim.tmp_mb, 512);
        let vars: Vec<&str> = envp
            .iter()
            .take_while(|p| !p.is_null())
            // SAFETY: decode_claim points every slot at a NUL-terminated string in p.msg.
            .map(|&p| unsafe { std::ffi::CStr::from_ptr(p) }.to_str().unwrap())
            .collect();
        assert_eq!(vars, ["A=b", "AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001"]);
        assert_eq!(p.code_dir.as_bytes(), dir.path().as_os_str().as_bytes());
        // A spec's own AWS_LAMBDA_RUNTIME_API is replaced, not doubled.
        spec.env.push(("AWS_LAMBDA_RUNTIME_API".into(), "evil:1".into()));
        let p = prepare(&spec).unwrap();
        let claim = protocol::decode_claim(&p.msg, &mut envp).unwrap();
        assert_eq!(claim.tmp_mb, 0);
        assert!(envp[2].is_null());
        // Too large an environment is refused with a clear message.
        spec.env.push(("BIG".into(), "x".repeat(protocol::CLAIM_MAX)));
        let e = prepare(&spec).err().unwrap();
        assert!(e.to_string().contains("environment too large"), "{e}");
        spec.env.pop();
        spec.env.push(("A=B".into(), "x".into()));
        assert!(prepare(&spec).is_err());
        spec.env.pop();
        spec.bootstrap = "../x".into();
        assert!(prepare(&spec).is_err());
        spec.bootstrap = "/bin/sh".into();
        assert!(prepare(&spec).is_err());
        spec.bootstrap = "/var/runtime/../../bin/sh".into();
        assert!(prepare(&spec).is_err());
        spec.bootstrap = "/var/runtime/python3.12".into();
        let p = prepare(&spec).unwrap();
        assert_eq!(protocol::decode_claim(&p.msg, &mut envp).unwrap().exe, b"/var/runtime/python3.12\0");
        spec.bootstrap = "bootstrap".into();
        spec.id = "../etc".into();
        assert!(prepare(&spec).is_err());
    }

    #[test]
    fn decode_claim_refuses_malformed_messages() {
        let dir = tempfile::tempdir().unwrap();
        let spec = SandboxSpec {
            id: "e".into(),
            code_dir: dir.path().into(),
            bootstrap: "bootstrap".into(),
            opt_dir: None,
            bootstrap_in_opt: false,
            env: vec![("A".into(), "1".into()), ("B".into(), "2".into())],
            memory_mb: 128,
            tmp_mb: 512,
        };
        let good = prepare(&spec).unwrap().msg;
        let mut envp = vec![std::ptr::null(); 8];
        assert!(protocol::decode_claim(&good, &mut envp).is_ok());
        // Truncated anywhere, or one byte too many.
        for n in 0..good.len() {
            assert_eq!(protocol::decode_claim(&good[..n], &mut envp).err(), Some(libc::EINVAL), "length {n}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(protocol::decode_claim(&long, &mut envp).is_err());
        // Wrong kind; a variable without its NUL; a relative exe.
        let mut bad = good.clone();
        bad[0] ^= 1;
        assert!(protocol::decode_claim(&bad, &mut envp).is_err());
        let mut bad = good.clone();
        *bad.last_mut().unwrap() = b'x';
        assert!(protocol::decode_claim(&bad, &mut envp).is_err());
        let h = size_of::<protocol::ClaimHeader>() + "kiln-e".len();
        let mut bad = good.clone();
        bad[h] = b'v';
        assert!(protocol::decode_claim(&bad, &mut envp).is_err());
        // More variables than envp slots (3 plus NULL need 4).
        let mut small = vec![std::ptr::null(); 3];
        assert_eq!(protocol::decode_claim(&good, &mut small).err(), Some(libc::E2BIG));
        let mut exact = vec![std::ptr::null(); 4];
        assert!(protocol::decode_claim(&good, &mut exact).is_ok());
    }
}
