//! The Linux backend: every environment is a set of fresh namespaces with a read-only root,
//! cgroup limits, an unprivileged identity and a seccomp filter.
//!
//! # Process tree
//!
//! ```text
//! kiln serve ── clone(NEWPID|NEWNS|NEWNET|NEWIPC|NEWUTS) ──▶ init (PID 1 of the environment)
//!                                     └── clone(CLONE_VM|CLONE_VFORK) ──▶ bootstrap
//! ```
//!
//! # Blanks and claims
//!
//! Everything that does not depend on the spec is built ahead of time: a *blank* environment
//! has its cgroups, namespaces, root (with an empty `/var/task`), loopback and Runtime API
//! listener, and its init waits on its socket. [`Backend::spawn`] *claims* one: it sets the
//! spec's limits on the blank's cgroups (only the values that differ), sends init the code
//! directory as a detached read-only mount plus hostname, bootstrap path and environment, and
//! waits until the bootstrap has exec'd. A pool of blanks (`pool.rs`; size
//! [`LinuxOptions::pool_size`], default [`DEFAULT_POOL_SIZE`]) is refilled by a background thread after each take; when it
//! is empty (or disabled) `spawn` builds a blank on the spot, named after the environment, and
//! claims it at once. A blank serves one environment and is never reused. Blanks of the pool
//! have cgroups named `blank.<n>` (a name no environment id can have), kept after the claim;
//! [`LinuxBackend::cgroup_of`] maps an environment to them, and the debug log line of its start
//! names both.
//!
//! # Building a blank (`build_blank`, in the pool thread or in `spawn`)
//!
//! In the parent:
//! 1. create the blank's cgroups and write its limits ([`cgroups::Cgroups::create`]), open
//!    their `cgroup.procs` files;
//! 2. prepare every C string, the seccomp programs (built once in [`LinuxBackend::new`]), and the
//!    buffers the claim will land in (64 KiB message buffer, `envp` array, the bootstrap's
//!    pre-exec stack): the child may not allocate;
//! 3. `clone` with the new namespaces and `CLONE_PIDFD`, like `fork` (no new stack), and wait on a
//!    `SOCK_SEQPACKET` pair for the child to say it is ready.
//!
//! In the child, which becomes the environment's init ([`child`], raw system calls only):
//! 4. reset signal handlers, make itself non-dumpable (its memory is a copy of kiln's), close
//!    every inherited descriptor it does not need;
//! 5. join the cgroups by writing `0` to each `cgroup.procs`, then unshare a cgroup namespace;
//! 6. make all mounts private; mount a tmpfs on the scratch mountpoint and build the new root in
//!    it: read-only binds of `/usr` and `/etc`, an empty `/var/task`, the merged-/usr symlinks,
//!    an empty `/opt`, a private `/tmp`, a fresh `/proc` (`hidepid=2`: the function does not see
//!    init), a `/dev` with six device nodes; `pivot_root`, detach the old root, remount `/`
//!    read-only;
//! 7. bring `lo` up, bind the Runtime API listener to 127.0.0.1:9001 in the new network
//!    namespace and send it to kiln over the socket pair (`SCM_RIGHTS`): that is the "ready";
//!    then block on the socket. End of file there (kiln dropped the blank, or died) makes init
//!    exit, which ends the namespaces.
//!
//! # Claiming it ([`Backend::spawn`])
//!
//! In the parent: 8. write the limits that differ; `open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)`
//! the code directory (and the layers directory, if any) and `mount_setattr` each detached tree
//! read-only, nosuid, nodev, private; send them with the claim message ([`protocol::ClaimHeader`]: `/tmp` size, hostname, bootstrap,
//! environment).
//!
//! In init: 9. `move_mount` the tree onto `/var/task` (and the layers onto `/opt`); remount `/tmp` with the new size if it
//! differs; set the hostname `kiln-<env id>`;
//! 10. start the bootstrap with `clone(CLONE_VM | CLONE_VFORK)` on its own stack (no copy of
//!     init's address space), which: starts a session, points stdout/stderr at the output pipe,
//!     enters `/var/task`, lowers rlimits, drops the capability bounding set, takes the
//!     environment's own host uid/gid with no groups, enters a user namespace that shows it as
//!     993 (bounding set emptied again there), clears all capabilities, sets `no_new_privs`, installs the seccomp filter
//!     and execs `/var/task/<bootstrap>` with exactly the spec's environment plus
//!     `AWS_LAMBDA_RUNTIME_API`. A `CLOEXEC` pipe tells init whether the exec worked; init
//!     tells kiln "started";
//! 11. move itself out of the freezer cgroup (the bootstrap was born in it; see
//!     [`cgroups::Cgroups::init_after_start`]), then reap every process until the bootstrap
//!     ends, send its status, exit. When PID 1 exits the kernel kills every process left in the
//!     pid namespace, daemonised orphans included. Init also watches its socket to kiln: when
//!     kiln's end closes (kiln died, even by SIGKILL), it thaws the freezer cgroup and exits.
//!
//! Back in the parent, the environment's pidfd joins the backend's reaper thread (one `epoll`
//! for all environments). When init exits, the reaper reaps it, reads the bootstrap's status
//! from the socket pair, asks the memory cgroup whether the OOM killer struck, publishes the
//! [`ExitInfo`] and removes the cgroups.
//!
//! # Ending
//!
//! [`Sandbox::destroy`] kills the cgroup (`cgroup.kill`, or freeze + SIGKILL each on v1) and
//! init, waits until the reaper has reaped init, and removes the cgroups. [`Backend::shutdown`]
//! (and dropping the backend) also destroys the pool's blanks. Nothing else needs
//! cleaning: the mounts live only in the environment's mount namespace and die with it; the one
//! scratch directory (the mountpoint of the new roots) is shared and empty on the host.
//!
//! Cgroups carry the instance id (`kiln-<instance id>/<environment id>` or
//! `kiln-<instance id>/blank.<n>`), so a kiln that starts after its predecessor was killed with
//! SIGKILL finds and kills what it left behind, blanks included, and two kiln instances with
//! different data directories never touch each other's environments.

mod cgroups;
mod child;
mod pool;
mod protocol;
mod seccomp;
mod sys;

pub use crate::PoolStats;

use crate::{Backend, ExitInfo, Sandbox, SandboxError, SandboxSpec, Spawned};
use cgroups::{Cgroups, Limits};
use child::{Plan, RootEntry};
use protocol::{Message, Msg};
use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io::{self, ErrorKind};
use std::mem::{size_of, zeroed};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The uid and gid functions see themselves run as (Lambda's `sbx_user1051` is 993). On the
/// host each environment has a uid and gid of its own ([`HostIds`]), mapped to 993 by a user
/// namespace of the bootstrap's, so that per-user kernel limits (inotify instances and
/// watches, pipe buffer quotas, RLIMIT_NPROC, ...) are not shared between environments.
pub const FUNCTION_UID: u32 = 993;
pub const FUNCTION_GID: u32 = 993;
/// First host uid (and gid) of environments; each kiln instance takes a block of
/// [`HOST_IDS_PER_INSTANCE`] from here on, chosen by a hash of its instance id.
const HOST_ID_BASE: u32 = 0x4000_0000;
const HOST_IDS_PER_INSTANCE: u32 = 65_536;
const HOST_ID_BLOCKS: u32 = 8_192;
/// Soft and hard `RLIMIT_NOFILE` of the bootstrap.
pub const NOFILE_LIMIT: u64 = 1024;
/// Stack of the bootstrap's process between clone and exec (it makes only system calls).
const BOOTSTRAP_STACK: usize = 64 * 1024;
/// How long init may take to report ready.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `destroy` waits for the reaper before reaping itself.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);
/// The epoll key of the reaper's stop event; environments count from 0.
const STOP_KEY: u64 = u64::MAX;

/// Blanks [`LinuxBackend::new`] keeps ready.
pub const DEFAULT_POOL_SIZE: usize = 4;
/// Memory and `/tmp` size of the first blanks, before any claim says what functions use
/// (Lambda's smallest memory size and its default ephemeral storage).
const FIRST_BLANK_MEMORY_MB: u32 = 128;
const FIRST_BLANK_TMP_MB: u32 = 512;

/// Settings of a [`LinuxBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxOptions {
    /// Blank environments kept ready for [`Backend::spawn`]; 0 disables the pool (every spawn
    /// builds its environment on the spot).
    pub pool_size: usize,
    /// Server-wide read-only binds into every environment's root, as (host path, absolute path
    /// in the environment): the managed runtimes' interpreters and kiln's runtime clients at
    /// `/var/runtime`. Built into every blank, so a claim does not pay for them.
    pub read_only_binds: Vec<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Default for LinuxOptions {
    fn default() -> Self {
        LinuxOptions { pool_size: DEFAULT_POOL_SIZE, read_only_binds: Vec::new() }
    }
}

/// Capabilities kiln needs to build environments: (number, name).
const NEEDED_CAPS: &[(u32, &str)] = &[
    (1, "CAP_DAC_OVERRIDE"),
    (5, "CAP_KILL"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
    (8, "CAP_SETPCAP"),
    (12, "CAP_NET_ADMIN"),
    (21, "CAP_SYS_ADMIN"),
    (27, "CAP_MKNOD"),
];

/// Builds environments with Linux namespaces, cgroups and seccomp.
pub struct LinuxBackend {
    inner: Arc<Inner>,
    reaper: Option<JoinHandle<()>>,
    filler: Option<JoinHandle<()>>,
}

/// State shared by the backend, its environments and the reaper thread.
struct Inner {
    instance_id: String,
    /// `<state dir>/sandbox-<instance id>`: holds the root mountpoint.
    scratch: std::path::PathBuf,
    cgroups: Box<dyn Cgroups>,
    /// The empty directory every environment mounts its root tmpfs on (in its own mount
    /// namespace, so one directory serves all).
    root_mountpoint: CString,
    root_entries: Vec<RootEntry>,
    /// [`LinuxOptions::read_only_binds`], for [`Backend::sandbox_path`].
    read_only_binds: Vec<(std::path::PathBuf, std::path::PathBuf)>,
    filters: Vec<seccompiler::BpfProgram>,
    cap_last: u32,
    envs: Mutex<HashMap<u64, Arc<Env>>>,
    next_key: AtomicU64,
    epoll: OwnedFd,
    stop: OwnedFd,
    pool: pool::Pool,
    /// Numbers the blanks' cgroups (`blank.<n>`).
    blank_seq: AtomicU64,
    /// The host uids of this instance's environments.
    host_ids: Arc<HostIds>,
}

/// Allocates host uids (equal gids) to environments from this instance's block: one per live
/// environment or blank, reused once it is gone.
pub(crate) struct HostIds {
    first: u32,
    state: Mutex<(u32, std::collections::BTreeSet<u32>)>,
}

impl HostIds {
    fn for_instance(instance_id: &str) -> HostIds {
        // FNV-1a: stable across runs, so a restarted instance takes the same block.
        let hash = instance_id.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
        HostIds { first: HOST_ID_BASE + (hash % HOST_ID_BLOCKS) * HOST_IDS_PER_INSTANCE, state: Mutex::default() }
    }

    /// A free id of the block, or `None` when all of them are live.
    fn lease(self: &Arc<Self>) -> Option<IdLease> {
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
pub(crate) struct IdLease {
    pub id: u32,
    ids: Arc<HostIds>,
}

impl Drop for IdLease {
    fn drop(&mut self) {
        lock(&self.ids.state).1.remove(&self.id);
    }
}

/// One environment as the host sees it.
struct Env {
    id: String,
    /// Name of its cgroups: its id when built on the spot, `blank.<n>` when it came from the pool.
    cgroup: String,
    key: u64,
    pid: i32,
    pidfd: OwnedFd,
    /// kiln's end of the socket pair to init: carries the bootstrap's exit status.
    sock: OwnedFd,
    inner: Arc<Inner>,
    exit_tx: watch::Sender<Option<ExitInfo>>,
    state: Mutex<EnvState>,
    reaped_cv: Condvar,
    /// Serialises reaping between the reaper thread and a `destroy` that gave up waiting.
    reap_lock: Mutex<()>,
    /// Freeze control and peak-memory counter, opened at first use and kept open.
    hot: std::sync::OnceLock<cgroups::HotFiles>,
    /// Its host uid, free again once the environment is gone.
    _host_id: IdLease,
    /// The function's limits, and whether its cgroups still have the Init phase's CPU instead
    /// ([`Limits::for_init`]).
    limits: Limits,
    in_init: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct EnvState {
    reaped: bool,
    destroyed: bool,
    /// Killed by kiln (destroy), not by itself or the kernel.
    killed: bool,
    /// Peak memory read just before the cgroups went away.
    peak_bytes: u64,
}

struct LinuxSandbox {
    env: Arc<Env>,
}

impl Env {
    fn hot(&self) -> &cgroups::HotFiles {
        self.hot.get_or_init(|| self.inner.cgroups.hot_files(&self.cgroup))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidInput, msg.to_owned())
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| invalid("contains a NUL byte"))
}

fn last_error() -> io::Error {
    io::Error::last_os_error()
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

        // SAFETY: epoll_create1 and eventfd take integer flags; the results are checked and owned.
        let (epoll, stop) = unsafe {
            let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            if ep < 0 {
                return Err(setup("create epoll", last_error()));
            }
            let ep = OwnedFd::from_raw_fd(ep);
            let ev = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
            if ev < 0 {
                return Err(setup("create eventfd", last_error()));
            }
            (ep, OwnedFd::from_raw_fd(ev))
        };
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
                Limits::for_memory_mb(FIRST_BLANK_MEMORY_MB).for_init(),
                FIRST_BLANK_TMP_MB,
            ),
            blank_seq: AtomicU64::new(0),
            host_ids: Arc::new(HostIds::for_instance(instance_id)),
        });
        let reaper_inner = inner.clone();
        let reaper = std::thread::Builder::new()
            .name(format!("kiln-reaper-{instance_id}"))
            .stack_size(256 * 1024)
            .spawn(move || reaper_loop(&reaper_inner))
            .map_err(|e| setup("start reaper thread", e))?;
        let mut backend = LinuxBackend { inner, reaper: Some(reaper), filler: None };
        let filler_inner = backend.inner.clone();
        // Blanks are clones of this thread: its stack is what their init runs on.
        let filler = std::thread::Builder::new()
            .name(format!("kiln-pool-{instance_id}"))
            .stack_size(512 * 1024)
            .spawn(move || pool::filler_loop(&filler_inner))
            .map_err(|e| setup("start pool thread", e))?;
        backend.filler = Some(filler);
        tracing::info!(
            instance = instance_id,
            cgroups = backend.inner.cgroups.layout(),
            pool = opts.pool_size,
            "linux sandbox backend ready"
        );
        Ok(backend)
    }

    /// Changes how many blanks the pool keeps ready (0 disables it); extra blanks are destroyed
    /// at once. No effect after [`Backend::shutdown`].
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

    /// The number of environments alive.
    pub fn live_environments(&self) -> usize {
        lock(&self.inner.envs).len()
    }
}

impl Drop for LinuxBackend {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(f) = self.filler.take() {
            let _ = f.join();
        }
        if let Err(e) = self.inner.cgroups.remove_instance() {
            tracing::warn!(instance = %self.inner.instance_id, error = %e, "cannot remove instance cgroups");
        }
        // The scratch directories are empty on the host; a failure here only leaves them.
        let _ = fs::remove_dir(self.inner.scratch.join("root"));
        let _ = fs::remove_dir(&self.inner.scratch);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to the eventfd we own.
        unsafe {
            libc::write(self.inner.stop.as_raw_fd(), (&one as *const u64).cast(), size_of::<u64>());
        }
        if let Some(r) = self.reaper.take() {
            let _ = r.join();
        }
    }
}

/// Refuses to start without the capabilities environments need.
fn check_capabilities() -> Result<(), SandboxError> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    missing_capabilities(eff).map_or(Ok(()), |why| Err(SandboxError::Privileges(why)))
}

/// What to tell the operator when the effective capability set `eff` lacks something.
fn missing_capabilities(eff: u64) -> Option<String> {
    let missing: Vec<&str> =
        NEEDED_CAPS.iter().filter(|(n, _)| eff & (1u64 << n) == 0).map(|(_, name)| *name).collect();
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "sandboxes need root privileges but kiln lacks {}; run kiln serve as root, or use \
         --isolation none (no isolation)",
        missing.join(", ")
    ))
}

fn check_seccomp() -> Result<(), SandboxError> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) } < 0 {
        return Err(SandboxError::Privileges(
            "this kernel has no seccomp support; use a kernel built with CONFIG_SECCOMP_FILTER, \
             or use --isolation none"
                .into(),
        ));
    }
    Ok(())
}

/// Creates namespaces once in a child that exits at once, so missing support shows at start-up.
fn probe_namespaces() -> Result<(), SandboxError> {
    let flags = libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWCGROUP;
    // SAFETY: a fork-like clone (no new stack); the child only calls _exit, which is
    // async-signal-safe.
    let pid = unsafe { libc::syscall(libc::SYS_clone, (flags | libc::SIGCHLD) as libc::c_long, 0, 0, 0, 0) };
    if pid == 0 {
        // SAFETY: see above; we are the child.
        unsafe { libc::_exit(0) }
    }
    if pid < 0 {
        let e = last_error();
        return Err(SandboxError::Privileges(format!(
            "cannot create pid, mount, network, ipc, uts and cgroup namespaces ({e}); run kiln \
             as root on a kernel with namespaces enabled, or use --isolation none"
        )));
    }
    let mut status = 0;
    // SAFETY: waits for the child we just created.
    unsafe {
        libc::waitpid(pid as libc::pid_t, &mut status, 0);
    }
    Ok(())
}

/// Makes sure the scratch mountpoint exists and is an empty directory on the host.
fn prepare_scratch(root: &Path) -> io::Result<()> {
    fs::create_dir_all(root)?;
    let busy = fs::read_dir(root)?.next().is_some();
    if busy {
        // Something is mounted there on the host (it never should be): detach it.
        let c = cstring(root.as_os_str().as_bytes())?;
        // SAFETY: umount2 with a valid C path.
        unsafe {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
        if fs::read_dir(root)?.next().is_some() {
            return Err(io::Error::new(ErrorKind::DirectoryNotEmpty, format!("{} must be empty", root.display())));
        }
    }
    Ok(())
}

/// `/bin`, `/lib`, ... as the host has them: symlinks are recreated, directories bound.
fn host_root_entries() -> io::Result<Vec<RootEntry>> {
    let mut out = Vec::new();
    for name in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(name);
        let Ok(meta) = fs::symlink_metadata(&host) else {
            continue;
        };
        let cname = cstring(name.as_bytes())?;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&host)?;
            out.push(RootEntry::Symlink { name: cname, target: cstring(target.as_os_str().as_bytes())? });
        } else if meta.is_dir() {
            out.push(RootEntry::BindReadOnly { source: cstring(host.as_os_str().as_bytes())?, name: cname });
        }
    }
    Ok(out)
}

/// Where managed runtimes' launchers show (a read-only bind of [`LinuxOptions::read_only_binds`]).
const RUNTIME_DIR: &str = "/var/runtime";

/// Directories the new root always has (made by init before the root entries).
const FIXED_ROOT_DIRS: &[&str] = &["usr", "etc", "var", "var/task", "opt", "tmp", "proc", "dev"];

/// The root entries of [`LinuxOptions::read_only_binds`]: the missing parent directories of
/// each target, then the bind. A target may not hide what the root itself provides.
fn extra_root_entries(binds: &[(std::path::PathBuf, std::path::PathBuf)]) -> io::Result<Vec<RootEntry>> {
    let mut out = Vec::new();
    let mut made: Vec<std::path::PathBuf> = Vec::new();
    for (source, target) in binds {
        let rel = target.strip_prefix("/").map_err(|_| invalid("a bind target must be an absolute path"))?;
        if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(invalid("a bind target must be a plain absolute path"));
        }
        let first = rel.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned()).unwrap_or_default();
        if ["usr", "etc", "tmp", "proc", "dev", "bin", "sbin", "lib", "lib64"].contains(&first.as_str())
            || rel.starts_with("var/task")
            || FIXED_ROOT_DIRS.iter().any(|d| rel == Path::new(d))
        {
            return Err(invalid("a bind target may not cover a directory the root provides"));
        }
        if !fs::metadata(source)?.is_dir() {
            return Err(invalid("a bind source must be a directory"));
        }
        let mut parent = std::path::PathBuf::new();
        let parts: Vec<_> = rel.components().collect();
        for c in &parts[..parts.len() - 1] {
            parent.push(c);
            if FIXED_ROOT_DIRS.iter().any(|d| parent == Path::new(d)) || made.contains(&parent) {
                continue;
            }
            made.push(parent.clone());
            out.push(RootEntry::Dir { name: cstring(parent.as_os_str().as_bytes())? });
        }
        made.push(rel.to_path_buf());
        out.push(RootEntry::BindReadOnly {
            source: cstring(source.as_os_str().as_bytes())?,
            name: cstring(rel.as_os_str().as_bytes())?,
        });
    }
    Ok(out)
}

fn epoll_add(epoll: &OwnedFd, fd: &OwnedFd, key: u64, oneshot: bool) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN as u32) | if oneshot { libc::EPOLLONESHOT as u32 } else { 0 },
        u64: key,
    };
    // SAFETY: both descriptors are open; ev is a valid epoll_event.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut ev) } < 0 {
        return Err(last_error());
    }
    Ok(())
}

fn epoll_del(epoll: &OwnedFd, fd: &OwnedFd) {
    // SAFETY: both descriptors are open; a null event is allowed for DEL.
    unsafe {
        libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, fd.as_raw_fd(), std::ptr::null_mut());
    }
}

/// Waits for environments' inits to exit and handles their end.
fn reaper_loop(inner: &Arc<Inner>) {
    // SAFETY: epoll_event is plain data.
    let mut events: [libc::epoll_event; 32] = unsafe { zeroed() };
    loop {
        // SAFETY: the buffer holds 32 events and outlives the call.
        let n = unsafe { libc::epoll_wait(inner.epoll.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            if io::Error::last_os_error().kind() == ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(error = %last_error(), "reaper epoll_wait failed");
            return;
        }
        for ev in events.iter().take(n as usize) {
            let key = ev.u64;
            if key == STOP_KEY {
                return;
            }
            let env = lock(&inner.envs).get(&key).cloned();
            if let Some(env) = env {
                if !env.reap(false) {
                    // Spurious wake-up: re-arm the one-shot registration.
                    let mut ev = libc::epoll_event { events: (libc::EPOLLIN | libc::EPOLLONESHOT) as u32, u64: key };
                    // SAFETY: both descriptors are open; ev is valid.
                    unsafe {
                        libc::epoll_ctl(inner.epoll.as_raw_fd(), libc::EPOLL_CTL_MOD, env.pidfd.as_raw_fd(), &mut ev);
                    }
                }
            }
        }
    }
}

/// A descriptor moved to 3 or above, so the child's own 0, 1, 2 never collide with it.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() >= 3 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on an open descriptor; the result is checked and owned.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(last_error());
    }
    // SAFETY: n is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into the array.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    if r < 0 {
        return Err(last_error());
    }
    // SAFETY: both descriptors are fresh and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Waits for one message from init, with the descriptor it carried if any; `None` for a record
/// no init writes.
fn recv_msg(sock: &OwnedFd, timeout: Duration) -> io::Result<(Option<Message>, Option<OwnedFd>)> {
    let mut pfd = libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r > 0 {
            break;
        }
        if r == 0 {
            return Err(io::Error::new(ErrorKind::TimedOut, "init did not answer"));
        }
        if io::Error::last_os_error().kind() != ErrorKind::Interrupted {
            return Err(last_error());
        }
    }
    let mut msg = Msg::default();
    let mut iov = libc::iovec { iov_base: (&mut msg as *mut Msg).cast(), iov_len: size_of::<Msg>() };
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain data.
    let mut hdr: libc::msghdr = unsafe { zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = cbuf.as_mut_ptr().cast();
    hdr.msg_controllen = size_of::<[u64; 8]>() as _;
    // SAFETY: hdr points at live buffers of the sizes it states.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut hdr, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(last_error());
    }
    let mut passed: Option<OwnedFd> = None;
    // SAFETY: walking the control messages the kernel filled in, within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                passed = Some(OwnedFd::from_raw_fd(fd));
            }
            c = libc::CMSG_NXTHDR(&hdr, c);
        }
    }
    if n as usize != size_of::<Msg>() {
        return Err(io::Error::new(ErrorKind::UnexpectedEof, "init exited"));
    }
    Ok((Message::from_wire(msg), passed))
}

fn pidfd_kill(pidfd: &OwnedFd) {
    // SAFETY: pidfd_send_signal on a pidfd we own; no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

/// Reaps the process behind `pidfd`; `None` if it has not exited (with `block` false).
fn waitid_pidfd(pidfd: &OwnedFd, block: bool) -> Option<(i32, i32)> {
    // SAFETY: siginfo_t is plain data; waitid fills it in.
    let mut info: libc::siginfo_t = unsafe { zeroed() };
    let flags = libc::WEXITED | if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: waitid on a pidfd we own, writing into `info`.
        let r = unsafe { libc::waitid(libc::P_PIDFD, pidfd.as_raw_fd() as libc::id_t, &mut info, flags) };
        if r < 0 {
            if io::Error::last_os_error().kind() == ErrorKind::Interrupted {
                continue;
            }
            // ECHILD: someone else reaped it; treat it as gone, killed.
            return Some((libc::CLD_KILLED, libc::SIGKILL));
        }
        break;
    }
    // SAFETY: reading fields of the siginfo waitid filled in.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return None;
    }
    Some((info.si_code, status))
}

/// Reads the last exit record init left in the socket.
fn read_exit_record(sock: &OwnedFd) -> Option<Message> {
    let mut last = None;
    loop {
        let mut msg = Msg::default();
        // SAFETY: receives at most size_of::<Msg>() bytes into `msg`.
        let n = unsafe {
            libc::recv(sock.as_raw_fd(), (&mut msg as *mut Msg).cast(), size_of::<Msg>(), libc::MSG_DONTWAIT)
        };
        if n as usize != size_of::<Msg>() || n <= 0 {
            return last;
        }
        if let Some(m) = Message::from_wire(msg).filter(|m| m.is_exit()) {
            last = Some(m);
        }
    }
}

/// The bootstrap's end as the engine sees it.
fn exit_info(record: Option<Message>, init: (i32, i32), oom: bool) -> ExitInfo {
    match record {
        Some(Message::Exited(code)) => ExitInfo::Code(code),
        Some(Message::Signaled(signal)) => ExitInfo::Signal { signal, oom: oom && signal == libc::SIGKILL },
        Some(_) => ExitInfo::ExecFailed,
        // Init itself died (killed by kiln or by the OOM killer) before it could report.
        None => match init {
            (libc::CLD_EXITED, code) => ExitInfo::Code(code),
            (_, signal) => ExitInfo::Signal { signal, oom: oom && signal == libc::SIGKILL },
        },
    }
}

impl Env {
    /// Handles init's exit; returns false if it has not exited (only when `block` is false).
    fn reap(&self, block: bool) -> bool {
        let _serial = lock(&self.reap_lock);
        if lock(&self.state).reaped {
            return true;
        }
        let Some(init) = waitid_pidfd(&self.pidfd, block) else {
            return false;
        };
        epoll_del(&self.inner.epoll, &self.pidfd);
        let record = read_exit_record(&self.sock);
        let cg = self.inner.cgroups.as_ref();
        let oom = cg.oom_killed(&self.cgroup);
        let peak = cg.peak_memory_bytes(&self.cgroup).unwrap_or(0);
        let info = exit_info(record, init, oom);
        {
            let mut st = lock(&self.state);
            st.reaped = true;
            st.peak_bytes = peak;
        }
        self.reaped_cv.notify_all();
        tracing::debug!(env = %self.id, ?info, "environment ended");
        self.exit_tx.send_replace(Some(info));
        // The pid namespace is gone with its init; release the cgroups now rather than when
        // the engine gets round to destroying the environment.
        if let Err(e) = cgroups::kill_and_remove(cg, &self.cgroup) {
            tracing::warn!(env = %self.id, error = %e, cause = ?std::error::Error::source(&e), "cannot remove cgroups");
        }
        lock(&self.inner.envs).remove(&self.key);
        true
    }

    fn kill(&self) {
        let mut st = lock(&self.state);
        if st.reaped {
            return;
        }
        st.killed = true;
        drop(st);
        if let Err(e) = self.inner.cgroups.kill_all(&self.cgroup) {
            tracing::warn!(env = %self.id, error = %e, "cgroup kill failed");
        }
        pidfd_kill(&self.pidfd);
    }

    fn destroy(&self) {
        {
            let mut st = lock(&self.state);
            if st.destroyed {
                return;
            }
            st.destroyed = true;
        }
        self.kill();
        let st = lock(&self.state);
        let (st, _) =
            self.reaped_cv.wait_timeout_while(st, REAP_TIMEOUT, |s| !s.reaped).unwrap_or_else(PoisonError::into_inner);
        let reaped = st.reaped;
        drop(st);
        if !reaped {
            // The reaper is gone or stuck: init was SIGKILLed, so this returns soon.
            self.reap(true);
        }
        if let Err(e) = cgroups::kill_and_remove(self.inner.cgroups.as_ref(), &self.cgroup) {
            tracing::warn!(env = %self.id, error = %e, cause = ?std::error::Error::source(&e), "cannot remove cgroups");
        }
        lock(&self.inner.envs).remove(&self.key);
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
        self.env.hot().set_frozen(true).map_err(|e| SandboxError::step(&self.env.id, "freeze", e))
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
        env.inner
            .cgroups
            .set_limits(&env.cgroup, &env.limits.for_init(), &env.limits)
            .map_err(|e| SandboxError::step(&env.id, "end init cpu", e.into()))
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
}

impl Drop for LinuxSandbox {
    fn drop(&mut self) {
        self.env.destroy();
    }
}

/// What `spawn` derives from the spec before touching any environment.
struct Prepared {
    /// The code directory as given (`open_tree` resolves it; no canonicalisation needed).
    code_dir: CString,
    /// The layers directory, if any, likewise.
    opt_dir: Option<CString>,
    /// The claim message; its `tmp_mb` field is filled per blank.
    msg: Vec<u8>,
}

/// Checks the spec and encodes the claim init will receive (see [`protocol::encode_claim`]).
fn prepare(spec: &SandboxSpec) -> io::Result<Prepared> {
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

/// Removes a half-built environment's cgroups unless disarmed.
struct CgroupGuard<'a> {
    cgroups: &'a dyn Cgroups,
    id: &'a str,
    armed: bool,
}

impl Drop for CgroupGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = cgroups::kill_and_remove(self.cgroups, self.id) {
                tracing::warn!(env = self.id, error = %e, cause = ?std::error::Error::source(&e), "cannot remove cgroups");
            }
        }
    }
}

/// An environment without a function yet: namespaces, cgroups, root (with an empty
/// `/var/task`), loopback and Runtime API listener are made, and its init waits for a claim.
struct Blank {
    /// Name of its cgroups: `blank.<n>` for the pool's, the environment id for one built on
    /// the spot.
    cgroup: String,
    pid: i32,
    pidfd: OwnedFd,
    /// kiln's end of the socket pair to init.
    sock: OwnedFd,
    listener: TcpListener,
    /// Read end of the output pipe (non-blocking).
    output: OwnedFd,
    /// What its cgroups are set to now.
    limits: Limits,
    /// Size of its `/tmp` now.
    tmp_mb: u32,
    host_id: IdLease,
}

impl Blank {
    /// Kills the blank, reaps its init and removes its cgroups.
    fn discard(self, cg: &dyn Cgroups) {
        pidfd_kill(&self.pidfd);
        waitid_pidfd(&self.pidfd, true);
        if let Err(e) = cgroups::kill_and_remove(cg, &self.cgroup) {
            tracing::warn!(blank = %self.cgroup, error = %e, cause = ?std::error::Error::source(&e), "cannot remove cgroups");
        }
    }
}

/// Discards many blanks, killing them all before waiting for any.
fn discard_all(blanks: Vec<Blank>, cg: &dyn Cgroups) {
    for b in &blanks {
        pidfd_kill(&b.pidfd);
    }
    for b in blanks {
        b.discard(cg);
    }
}

/// Builds a blank environment whose cgroups are named `cgroup`, with `limits` and a `/tmp` of
/// `tmp_mb`. Blocking: ~2 ms.
fn build_blank(inner: &Inner, cgroup: &str, limits: Limits, tmp_mb: u32) -> Result<Blank, SandboxError> {
    let step = |s, e| SandboxError::step(cgroup, s, e);
    let procs = inner.cgroups.create(cgroup, &limits).map_err(|e| step("create cgroups", e.into()))?;
    let mut guard = CgroupGuard { cgroups: inner.cgroups.as_ref(), id: cgroup, armed: true };
    let procs_fds = procs
        .iter()
        .map(|p| fs::OpenOptions::new().write(true).open(p).map(OwnedFd::from).and_then(above_stdio))
        .collect::<io::Result<Vec<OwnedFd>>>()
        .map_err(|e| step("open cgroup.procs", e))?;
    let (host_sock, child_sock) = seqpacket_pair().map_err(|e| step("create socket pair", e))?;
    let child_sock = above_stdio(child_sock).map_err(|e| step("create socket pair", e))?;
    let (out_r, out_w) = std::io::pipe().map_err(|e| step("create output pipe", e))?;
    let out_r = OwnedFd::from(out_r);
    let out_w = above_stdio(OwnedFd::from(out_w)).map_err(|e| step("create output pipe", e))?;
    crate::process::set_nonblocking(&out_r).map_err(|e| step("create output pipe", e))?;
    let host_id = inner
        .host_ids
        .lease()
        .ok_or_else(|| step("allocate host uid", io::Error::other("every host uid of this instance is in use")))?;
    let tmp_opts = cstring(format!("size={tmp_mb}m,mode=1777,uid={0},gid={0}", host_id.id).as_bytes())
        .map_err(|e| step("prepare /tmp", e))?;
    // Where the claim lands in init: allocated here, because init may not allocate. Zeroed so
    // that init's view of them is initialised memory.
    let mut claim_buf = vec![0u8; protocol::CLAIM_MAX];
    let mut envp_buf: Vec<*const libc::c_char> = vec![std::ptr::null(); protocol::MAX_ENV_VARS + 1];
    // The stack the bootstrap's process runs on from clone to exec (u128s: 16-byte aligned).
    let mut bootstrap_stack = vec![0u128; BOOTSTRAP_STACK / size_of::<u128>()];

    let procs_raw: Vec<RawFd> = procs_fds.iter().map(AsRawFd::as_raw_fd).collect();
    // Where init moves once the bootstrap runs (out of the freezer), and the freezer's control.
    let init_cgroup_file = match inner.cgroups.init_after_start(cgroup) {
        Some(path) => Some(
            fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map(OwnedFd::from)
                .and_then(above_stdio)
                .map_err(|e| step("open cgroup.procs", e))?,
        ),
        None => None,
    };
    let init_cgroup = init_cgroup_file.as_ref().map_or(-1, AsRawFd::as_raw_fd);
    let thaw = inner.cgroups.thaw_control(cgroup);
    let thaw_file = match &thaw {
        Some((path, _)) => Some(
            fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map(OwnedFd::from)
                .and_then(above_stdio)
                .map_err(|e| step("open freezer", e))?,
        ),
        None => None,
    };
    let thaw_fd = thaw_file.as_ref().map_or(-1, AsRawFd::as_raw_fd);
    let mut keep: Vec<RawFd> = procs_raw.clone();
    keep.extend([init_cgroup, thaw_fd].into_iter().filter(|fd| *fd >= 0));
    keep.push(child_sock.as_raw_fd());
    keep.push(out_w.as_raw_fd());
    keep.sort_unstable();
    keep.dedup();
    let fprogs: Vec<libc::sock_fprog> = inner
        .filters
        .iter()
        .map(|p| libc::sock_fprog {
            len: p.len() as u16,
            // seccompiler's sock_filter has the kernel's layout (repr(C), same fields).
            filter: p.as_ptr() as *mut libc::sock_filter,
        })
        .collect();
    let plan = Plan {
        keep: &keep,
        cgroup_procs: &procs_raw,
        init_cgroup,
        thaw_fd,
        thaw_value: thaw.as_ref().map_or(&b""[..], |t| t.1),
        sock: child_sock.as_raw_fd(),
        out_w: out_w.as_raw_fd(),
        root: &inner.root_mountpoint,
        root_entries: &inner.root_entries,
        tmp_opts: &tmp_opts,
        claim_buf: claim_buf.as_mut_ptr(),
        claim_cap: claim_buf.len(),
        envp_buf: envp_buf.as_mut_ptr(),
        envp_cap: envp_buf.len(),
        // SAFETY: one past the end of the allocation, which is where a downward stack starts.
        bootstrap_stack: unsafe { bootstrap_stack.as_mut_ptr().add(bootstrap_stack.len()) }.cast(),
        filters: &fprogs,
        uid: host_id.id,
        gid: host_id.id,
        ns_uid: FUNCTION_UID,
        ns_gid: FUNCTION_GID,
        nofile: NOFILE_LIMIT,
        cap_last: inner.cap_last,
    };

    let flags = libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_PIDFD;
    let mut pidfd: libc::c_int = -1;
    // SAFETY: a fork-like clone (no new stack, no CLONE_VM): the child gets a copy of our
    // memory and runs child::run, which only makes async-signal-safe system calls on data
    // prepared above. CLONE_PIDFD stores the pidfd in `pidfd` (the parent_tid argument).
    let pid = unsafe {
        libc::syscall(libc::SYS_clone, (flags | libc::SIGCHLD) as libc::c_long, 0, &mut pidfd as *mut libc::c_int, 0, 0)
    };
    if pid == 0 {
        // SAFETY: we are the child of the clone above, with new pid and mount namespaces.
        unsafe { child::run(&plan) }
    }
    if pid < 0 {
        return Err(step("clone namespaces", last_error()));
    }
    // SAFETY: CLONE_PIDFD gave us this descriptor; nobody else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // The child has its own copies; ours can go.
    drop((procs_fds, child_sock, out_w, claim_buf, envp_buf, bootstrap_stack, thaw_file, init_cgroup_file));

    let fail = |e: SandboxError| {
        pidfd_kill(&pidfd);
        waitid_pidfd(&pidfd, true);
        e
    };
    let listener = match recv_msg(&host_sock, SETUP_TIMEOUT) {
        Ok((Some(Message::Ready), Some(fd))) => TcpListener::from(fd),
        Ok((Some(Message::SetupFailed { step, errno }), _)) => return Err(fail(failed_step(cgroup, step, errno))),
        Ok(_) => return Err(fail(step("wait for environment", invalid_data("unexpected message from init")))),
        Err(e) => return Err(fail(step("wait for environment", e))),
    };
    guard.armed = false;
    Ok(Blank {
        cgroup: cgroup.to_owned(),
        pid: pid as i32,
        pidfd,
        sock: host_sock,
        listener,
        output: out_r,
        limits,
        tmp_mb,
        host_id,
    })
}

fn invalid_data(msg: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, msg.to_owned())
}

/// The error init reported in a [`Message::SetupFailed`].
fn failed_step(id: &str, step: protocol::Step, errno: i32) -> SandboxError {
    SandboxError::step(id, step.name(), io::Error::from_raw_os_error(errno))
}

/// A host directory as a detached mount tree (every mount below it included), read-only,
/// nosuid, nodev and private throughout: what a claim hands init to attach with `move_mount`
/// (the code at `/var/task`; the same fits any per-function directory, e.g. `/opt`).
pub(crate) fn detached_read_only_tree(dir: &CString) -> io::Result<OwnedFd> {
    // SAFETY: open_tree with a valid C path; the result is checked and owned.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            dir.as_ptr(),
            sys::OPEN_TREE_CLONE | sys::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(last_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let attr = sys::MountAttr {
        attr_set: sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr on the descriptor above with an empty path and a live mount_attr
    // of the size we pass.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const sys::MountAttr,
            size_of::<sys::MountAttr>(),
        )
    };
    if r < 0 {
        return Err(last_error());
    }
    Ok(fd)
}

/// Why claiming a blank failed; `retry` when the blank was dead before we asked (another blank
/// may do).
struct ClaimError {
    err: SandboxError,
    retry: bool,
}

/// Gives `blank` the spec's limits, code, `/tmp` size, hostname and environment, and starts the
/// bootstrap in it.
fn claim(
    inner: &Arc<Inner>,
    blank: Blank,
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
        hot: std::sync::OnceLock::new(),
        _host_id: host_id,
        limits: *function_limits,
        in_init: std::sync::atomic::AtomicBool::new(true),
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

        while let Some(blank) = inner.pool.take(limits.for_init(), tmp_mb) {
            let fd = match code.take() {
                Some(fd) => fd,
                None => match open_code() {
                    Ok(fd) => fd,
                    Err(e) => {
                        blank.discard(inner.cgroups.as_ref());
                        return Err(e);
                    }
                },
            };
            let blank_name = blank.cgroup.clone();
            match claim(inner, blank, spec, &mut prepared.msg, fd, &limits, tmp_mb) {
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
        let spawned = claim(inner, blank, spec, &mut prepared.msg, fd, &limits, tmp_mb).map_err(|e| e.err)?;
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_info_prefers_the_bootstraps_own_status() {
        let killed = (libc::CLD_KILLED, libc::SIGKILL);
        assert_eq!(exit_info(Some(Message::Exited(3)), (1, 0), false), ExitInfo::Code(3));
        assert_eq!(exit_info(Some(Message::Signaled(9)), (1, 0), true), ExitInfo::Signal { signal: 9, oom: true });
        assert_eq!(exit_info(Some(Message::Signaled(15)), (1, 0), true), ExitInfo::Signal { signal: 15, oom: false });
        assert_eq!(exit_info(Some(Message::ExecFailed(2)), (1, 0), false), ExitInfo::ExecFailed);
        assert_eq!(exit_info(None, killed, false), ExitInfo::Signal { signal: 9, oom: false });
        assert_eq!(exit_info(None, killed, true), ExitInfo::Signal { signal: 9, oom: true });
    }

    #[test]
    fn missing_capabilities_are_named_with_a_way_out() {
        assert_eq!(missing_capabilities(0x1ff_feff_ffff), None);
        let why = missing_capabilities(0).unwrap();
        assert!(why.contains("CAP_SYS_ADMIN") && why.contains("CAP_SETUID"), "{why}");
        assert!(why.contains("run kiln serve as root") && why.contains("--isolation none"));
        let why = missing_capabilities(0x1ff_feff_ffff & !(1 << 21)).unwrap();
        assert!(why.contains("lacks CAP_SYS_ADMIN;"), "{why}");
    }

    #[test]
    fn read_only_binds_get_their_parents_and_may_not_cover_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().to_path_buf();
        let binds = vec![
            (src.clone(), "/var/runtime".into()),
            (src.clone(), "/root/.pyenv/versions/3.12.1".into()),
            (src.clone(), "/root/.pyenv/versions/3.13.0".into()),
        ];
        let names: Vec<String> = extra_root_entries(&binds)
            .unwrap()
            .iter()
            .map(|e| match e {
                RootEntry::Dir { name } => format!("dir {}", name.to_str().unwrap()),
                RootEntry::BindReadOnly { name, .. } => format!("bind {}", name.to_str().unwrap()),
                RootEntry::Symlink { name, .. } => format!("link {}", name.to_str().unwrap()),
            })
            .collect();
        assert_eq!(
            names,
            [
                "bind var/runtime",
                "dir root",
                "dir root/.pyenv",
                "dir root/.pyenv/versions",
                "bind root/.pyenv/versions/3.12.1",
                "bind root/.pyenv/versions/3.13.0",
            ]
        );
        for bad in ["/usr/lib", "/var/task", "/var/task/x", "/tmp", "/opt", "relative", "/var/../etc", "/"] {
            assert!(extra_root_entries(&[(src.clone(), bad.into())]).is_err(), "{bad}");
        }
        assert!(extra_root_entries(&[(src.join("missing"), "/var/runtime".into())]).is_err());
    }

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
