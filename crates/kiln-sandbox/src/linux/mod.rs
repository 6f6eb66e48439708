//! The Linux backend: every environment is a set of fresh namespaces with a read-only root,
//! cgroup limits, an unprivileged identity and a seccomp filter.
//!
//! # Process tree
//!
//! ```text
//! kiln serve ── fork (once, at start) ──▶ zygote
//!     ▲                                     └── clone(CLONE_PARENT|NEWPID)
//!     └──────────── parent of ──────────────▶ init (PID 1 of the environment; unshares
//!                                               NEWCGROUP|NEWNS|NEWNET|NEWIPC|NEWUTS)
//!                                               └── clone(CLONE_VM), parked ──▶ bootstrap
//! ```
//!
//! Inits are cloned by the zygote (`zygote.rs`), a small fork of kiln that only serves clone
//! requests, so that an init shares the zygote's few pages, which nobody writes, instead of
//! kiln's heap; `CLONE_PARENT` keeps every init kiln's own child.
//!
//! # Blanks and claims
//!
//! Everything that does not depend on the spec is built ahead of time: a *blank* environment
//! has its cgroups, namespaces, root (with an empty `/var/task`), loopback and Runtime API
//! listener, and its init waits on its socket. [`crate::Backend::spawn`] *claims* one: it sets the
//! spec's limits on the blank's cgroups (only the values that differ), sends init the code
//! directory as a detached read-only mount plus hostname, bootstrap path and environment, and
//! waits until the bootstrap has exec'd. A pool of blanks (`pool.rs`; size
//! [`LinuxOptions::pool_size`], default [`DEFAULT_POOL_SIZE`], grown up to [`LinuxOptions::pool_max`] by recent
//! demand) is refilled by background threads after each take; when it
//! is empty (or disabled) `spawn` builds a blank on the spot, named after the environment, and
//! claims it at once. A blank serves one environment and is never reused. Blanks of the pool
//! have cgroups named `blank.<n>` (a name no environment id can have), kept after the claim;
//! [`LinuxBackend::cgroup_of`] maps an environment to them, and the debug log line of its start
//! names both.
//!
//! # Building a blank (`build_blank`, in the pool thread or in `spawn`)
//!
//! In kiln:
//! 1. create the blank's cgroups and write its limits ([`cgroups::Cgroups::create`]), open
//!    their `cgroup.procs` files (and the freezer's control), make the `SOCK_SEQPACKET` pair to
//!    init and the output pipe, lease a host uid;
//! 2. send the zygote one request with those descriptors (`SCM_RIGHTS`), then wait on the
//!    socket pair for init to say it is ready.
//!
//! In the zygote (forked when the backend starts, after the root entries, the seccomp programs
//! and the root mountpoint exist, into an empty network namespace of its own whose
//! `tcp_child_ehash_entries` gives every environment's network namespace a TCP hash table of
//! its own; raw system calls only):
//! 3. lay out the plan (C strings, the seccomp programs, the `keep` list), map the buffers the
//!    claim will land in (64 KiB message buffer, `envp` array, the bootstrap's pre-exec stack):
//!    init may not allocate; `clone` with a new pid namespace, `CLONE_PARENT` and `CLONE_PIDFD`,
//!    like `fork` (no new stack); unmap the buffers, answer with init's pid and pidfd, close
//!    its copies.
//!
//! In the child, which becomes the environment's init ([`child`], raw system calls only):
//! 4. reset signal handlers, make itself non-dumpable (its memory is a copy of the zygote's,
//!    itself a copy of kiln's), close every inherited descriptor it does not need;
//! 5. take the requester's nice value; join the cgroups by writing `0` to each `cgroup.procs`,
//!    then unshare the cgroup, mount, network, IPC and UTS namespaces (made by init rather than
//!    by the zygote's clone, so that many builds at once make them in parallel);
//! 6. make all mounts private; mount a tmpfs on the scratch mountpoint and build the new root in
//!    it: read-only binds of `/usr` and `/etc`, an empty `/var/task`, the merged-/usr symlinks,
//!    an empty `/opt`, a private `/tmp`, a fresh `/proc` (`hidepid=2`: the function does not see
//!    init), a `/dev` with six device nodes and the private `/etc/hosts`, `/etc/hostname` and
//!    `/etc/passwd` (the host's with the function's user, `sbx_user1051`, after it) (all on
//!    the root's tmpfs: four superblocks per environment, root, `/tmp`, `/proc` and
//!    the IPC namespace's mqueue, because the removal of every memory cgroup walks the lists of
//!    every superblock on the host); `pivot_root`, detach the old root, remount `/` read-only;
//! 7. bring `lo` up, bind the Runtime API listener to 127.0.0.1:9001 in the new network
//!    namespace;
//! 8. start the bootstrap's process with `clone(CLONE_VM)` on its own stack (no copy of init's
//!    address space) and park it: it starts a session, points stdout/stderr at the output pipe,
//!    takes the environment's own host uid/gid with no groups (rlimits, the empty capability
//!    bounding set and `no_new_privs` it inherits from init), enters a user namespace that shows
//!    it as 993 (bounding set emptied again there), clears all capabilities, installs the
//!    seccomp filter, then blocks on a pipe until the claim;
//! 9. send the listener to kiln over the socket pair (`SCM_RIGHTS`): that is the "ready"; move
//!    itself out of the freezer cgroup (the bootstrap was born in it; see
//!    [`cgroups::Cgroups::init_after_start`]); then block on the socket. End of file there (kiln
//!    dropped the blank, or died) makes init exit, which ends the namespaces, the parked process
//!    with them.
//!
//! # Claiming it ([`crate::Backend::spawn`])
//!
//! In the parent: 10. write the limits that differ; `open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)`
//! the code directory (and the layers directory, if any) and `mount_setattr` each detached tree
//! read-only, nosuid, nodev, private; send them with the claim message ([`protocol::ClaimHeader`]: `/tmp` size, hostname, bootstrap,
//! environment).
//!
//! In init: 11. `move_mount` the tree onto `/var/task` (and the layers onto `/opt`); remount `/tmp` with the new size if it
//! differs; set the hostname `kiln-<env id>`;
//! 12. let the parked bootstrap go (one byte on its pipe), which enters `/var/task` and execs
//!     `/var/task/<bootstrap>` with exactly the spec's environment plus
//!     `AWS_LAMBDA_RUNTIME_API` (both allowed by its filter). A `CLOEXEC` pipe tells init whether
//!     the exec worked; init tells kiln "started";
//! 13. reap every process until the bootstrap
//!     ends, send its status, exit. When PID 1 exits the kernel kills every process left in the
//!     pid namespace, daemonised orphans included. Init also watches its socket to kiln: when
//!     kiln's end closes (kiln died, even by SIGKILL), it thaws the freezer cgroup and exits.
//!
//! Back in the parent, the environment's pidfd joins the backend's reaper thread (one `epoll`
//! for all environments). When init exits, the reaper reaps it, reads the bootstrap's status
//! from the socket pair, asks the memory cgroup whether the OOM killer struck, publishes the
//! [`crate::ExitInfo`] and removes the cgroups.
//!
//! # Ending
//!
//! [`crate::Sandbox::destroy`] kills the cgroup (`cgroup.kill`, or freeze + SIGKILL each on v1) and
//! init, waits until the reaper has reaped init, and removes the cgroups. [`crate::Backend::shutdown`]
//! (and dropping the backend) also destroys the pool's blanks. Nothing else needs
//! cleaning: the mounts live only in the environment's mount namespace and die with it; the one
//! scratch directory (the mountpoint of the new roots) is shared and empty on the host.
//!
//! Cgroups carry the instance id (`kiln-<instance id>/<environment id>` or
//! `kiln-<instance id>/blank.<n>`), so a kiln that starts after its predecessor was killed with
//! SIGKILL finds and kills what it left behind, blanks included, and two kiln instances with
//! different data directories never touch each other's environments.
//!
//! # Files
//!
//! - `backend.rs`: [`LinuxBackend`], its environments, `spawn` and the claim of a blank;
//! - `blank.rs`: building a blank in kiln (steps 1–2) and the code trees a claim carries;
//! - `zygote.rs`: the zygote (step 3), its requests, its death and restart;
//! - `pool.rs`: the pool of blanks and the thread that fills it;
//! - `reaper.rs`: the reaper thread, the end of an environment, `destroy`;
//! - `preflight.rs`: start-up checks (capabilities, seccomp, namespaces, scratch directory);
//! - `protocol.rs`: the messages between kiln and init, and the steps they name;
//! - `child.rs`: init and the bootstrap's process until `execve` (steps 4–11), over `sys`;
//! - `sys/`: the system calls of the child behind the `Sys` trait, a recording fake, kiln's
//!   own side's calls (`host.rs`) and the zygote's (`zygote.rs`): no other file calls libc;
//! - `cgroups/`: the cgroup managers (v1, v2) and the detection of the layout;
//! - `seccomp.rs`: the filter;
//! - `sweep.rs`: the registry of live instances, and the removal of dead ones' cgroups.

mod backend;
mod blank;
mod cgroups;
mod child;
mod pool;
mod preflight;
mod protocol;
mod reaper;
mod seccomp;
mod sweep;
mod sys;
mod zygote;

pub use crate::PoolStats;
pub use backend::LinuxBackend;

use std::ffi::CString;
use std::io::{self, ErrorKind};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
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

/// Blanks [`LinuxBackend::new`] keeps ready when demand is low.
pub const DEFAULT_POOL_SIZE: usize = 4;
/// The most blanks the pool grows to after a burst of demand (see `pool.rs`).
pub const DEFAULT_POOL_MAX: usize = 256;
/// Memory and `/tmp` size of the first blanks, before any claim says what functions use
/// (Lambda's smallest memory size and its default ephemeral storage).
const FIRST_BLANK_MEMORY_MB: u32 = 128;
const FIRST_BLANK_TMP_MB: u32 = 512;

/// Settings of a [`LinuxBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxOptions {
    /// Blank environments kept ready for [`crate::Backend::spawn`]; 0 disables the pool (every spawn
    /// builds its environment on the spot).
    pub pool_size: usize,
    /// The most blanks the pool keeps after a burst of cold starts: it holds as many as the
    /// busiest tenth of a second of the last 30 s took, between `pool_size` and this.
    pub pool_max: usize,
    /// Server-wide read-only binds into every environment's root, as (host path, absolute path
    /// in the environment): the managed runtimes' interpreters and kiln's runtime clients at
    /// `/var/runtime`. Built into every blank, so a claim does not pay for them.
    pub read_only_binds: Vec<(std::path::PathBuf, std::path::PathBuf)>,
    /// Where live instances register, so that whichever starts next removes the cgroups of one
    /// that died without cleaning up (`/run/kiln/sandbox`; one per host, shared by all kilns).
    /// An instance with a registry of its own takes every live instance registered elsewhere for
    /// an unregistered one, and removes its cgroups whenever no process is in them.
    pub registry_dir: std::path::PathBuf,
}

impl Default for LinuxOptions {
    fn default() -> Self {
        LinuxOptions {
            pool_size: DEFAULT_POOL_SIZE,
            pool_max: DEFAULT_POOL_MAX,
            read_only_binds: Vec::new(),
            registry_dir: sweep::REGISTRY_DIR.into(),
        }
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

/// Where managed runtimes' launchers show (a read-only bind of [`LinuxOptions::read_only_binds`]).
const RUNTIME_DIR: &str = "/var/runtime";

fn invalid_data(msg: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, msg.to_owned())
}
