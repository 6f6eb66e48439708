//! The Linux backend: every environment is a set of fresh namespaces with a read-only root,
//! cgroup limits, an unprivileged identity and a seccomp filter.
//!
//! # Process tree
//!
//! ```text
//! kiln serve ── clone(NEWPID|NEWNS|NEWNET|NEWIPC|NEWUTS) ──▶ init (PID 1 of the environment)
//!                                                            └── raw clone ──▶ bootstrap
//! ```
//!
//! # Order of steps in [`Backend::spawn`]
//!
//! In the parent (a blocking thread of kiln):
//! 1. create the environment's cgroups and write its limits ([`cgroups::Cgroups::create`]),
//!    open their `cgroup.procs` files;
//! 2. prepare every C string, the `argv`/`envp` arrays and the seccomp programs (built once in
//!    [`LinuxBackend::new`]): the child may not allocate;
//! 3. `clone` with the new namespaces and `CLONE_PIDFD`, like `fork` (no new stack), and wait on a
//!    `SOCK_SEQPACKET` pair for the child to say it is ready.
//!
//! In the child, which becomes the environment's init ([`child`], raw system calls only):
//! 4. reset signal handlers, make itself non-dumpable (its memory is a copy of kiln's), close
//!    every inherited descriptor it does not need;
//! 5. join the cgroups by writing `0` to each `cgroup.procs`, then unshare a cgroup namespace;
//! 6. set the hostname; make all mounts private; mount a tmpfs on the scratch mountpoint and build
//!    the new root in it: read-only binds of `/usr`, `/etc` and the code at `/var/task`, the
//!    merged-/usr symlinks, an empty `/opt`, a private `/tmp`, a fresh `/proc` (`hidepid=2`: the
//!    function does not see init), a `/dev` with six device nodes; `pivot_root`, detach the old
//!    root, remount `/` read-only;
//! 7. bring `lo` up and bind the Runtime API listener to 127.0.0.1:9001 in the new network
//!    namespace;
//! 8. fork the bootstrap, which: starts a session, points stdout/stderr at the output pipe,
//!    enters `/var/task`, lowers rlimits, drops the capability bounding set, takes uid/gid 993
//!    with no groups, clears all capabilities, sets `no_new_privs`, installs the seccomp filter
//!    and execs `/var/task/<bootstrap>` with exactly the spec's environment plus
//!    `AWS_LAMBDA_RUNTIME_API`. A `CLOEXEC` pipe tells init whether the exec worked;
//! 9. send the listener to kiln over the socket pair (`SCM_RIGHTS`): that is the "ready";
//! 10. reap every process until the bootstrap ends, send its status, exit. When PID 1 exits the
//!     kernel kills every process left in the pid namespace, daemonised orphans included.
//!
//! Back in the parent, the environment's pidfd joins the backend's reaper thread (one `epoll`
//! for all environments). When init exits, the reaper reaps it, reads the bootstrap's status
//! from the socket pair, asks the memory cgroup whether the OOM killer struck, publishes the
//! [`ExitInfo`] and removes the cgroups.
//!
//! # Ending
//!
//! [`Sandbox::destroy`] kills the cgroup (`cgroup.kill`, or freeze + SIGKILL each on v1) and
//! init, waits until the reaper has reaped init, and removes the cgroups. Nothing else needs
//! cleaning: the mounts live only in the environment's mount namespace and die with it; the one
//! scratch directory (the mountpoint of the new roots) is shared and empty on the host.
//!
//! Cgroups carry the instance id (`kiln-<instance id>/<environment id>`), so a kiln that starts
//! after its predecessor was killed with SIGKILL finds and kills what it left behind, and two kiln
//! instances with different data directories never touch each other's environments.

mod cgroups;
mod child;
mod seccomp;

use crate::{Backend, ExitInfo, Sandbox, SandboxError, SandboxSpec, Spawned};
use cgroups::{Cgroups, Limits};
use child::{Msg, Plan, RootEntry};
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
use std::time::Duration;
use tokio::sync::watch;

/// The uid and gid functions run as (Lambda's `sbx_user1051` is 993).
pub const FUNCTION_UID: u32 = 993;
pub const FUNCTION_GID: u32 = 993;
/// Soft and hard `RLIMIT_NOFILE` of the bootstrap.
pub const NOFILE_LIMIT: u64 = 1024;
/// How long init may take to report ready.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `destroy` waits for the reaper before reaping itself.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);
/// The epoll key of the reaper's stop event; environments count from 0.
const STOP_KEY: u64 = u64::MAX;

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
    filters: Vec<seccompiler::BpfProgram>,
    cap_last: u32,
    envs: Mutex<HashMap<u64, Arc<Env>>>,
    next_key: AtomicU64,
    epoll: OwnedFd,
    stop: OwnedFd,
}

/// One environment as the host sees it.
struct Env {
    id: String,
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
    /// Checks privileges, detects the cgroup layout, removes what a previous kiln with the same
    /// `instance_id` left behind, and starts the reaper thread.
    ///
    /// `instance_id` (`[0-9a-z-]`, at most 32 bytes) names this kiln's cgroups; `state_dir` is a
    /// directory kiln owns where the backend keeps its scratch directory.
    pub fn new(instance_id: &str, state_dir: &Path) -> Result<LinuxBackend, SandboxError> {
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
        // their cgroups.
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
        let root_entries = host_root_entries().map_err(|e| setup("inspect host root", e))?;
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
            filters,
            cap_last,
            envs: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(0),
            epoll,
            stop,
        });
        let reaper_inner = inner.clone();
        let reaper = std::thread::Builder::new()
            .name(format!("kiln-reaper-{instance_id}"))
            .stack_size(256 * 1024)
            .spawn(move || reaper_loop(&reaper_inner))
            .map_err(|e| setup("start reaper thread", e))?;
        tracing::info!(instance = instance_id, cgroups = inner.cgroups.layout(), "linux sandbox backend ready");
        Ok(LinuxBackend { inner, reaper: Some(reaper) })
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

/// What init sent during set-up.
enum Setup {
    Ready(OwnedFd),
    Failed { step: u32, errno: i32 },
}

/// Waits for init's first message: ready (with the listener) or the step that failed.
fn recv_setup(sock: &OwnedFd, timeout: Duration) -> io::Result<Setup> {
    let mut pfd = libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r > 0 {
            break;
        }
        if r == 0 {
            return Err(io::Error::new(ErrorKind::TimedOut, "init did not report ready"));
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
    if n as usize != size_of::<Msg>() {
        return Err(io::Error::new(ErrorKind::UnexpectedEof, "init exited during set-up"));
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
    match (msg.kind, passed) {
        (child::MSG_READY, Some(fd)) => Ok(Setup::Ready(fd)),
        (child::MSG_SETUP_FAILED, _) => Ok(Setup::Failed { step: msg.step, errno: msg.value }),
        _ => Err(io::Error::new(ErrorKind::InvalidData, "unexpected message from init")),
    }
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
fn read_exit_record(sock: &OwnedFd) -> Option<Msg> {
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
        if matches!(msg.kind, child::MSG_EXITED | child::MSG_SIGNALED | child::MSG_EXEC_FAILED) {
            last = Some(msg);
        }
    }
}

/// The bootstrap's end as the engine sees it.
fn exit_info(record: Option<Msg>, init: (i32, i32), oom: bool) -> ExitInfo {
    match record {
        Some(m) if m.kind == child::MSG_EXITED => ExitInfo::Code(m.value),
        Some(m) if m.kind == child::MSG_SIGNALED => {
            ExitInfo::Signal { signal: m.value, oom: oom && m.value == libc::SIGKILL }
        }
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
        let oom = cg.oom_killed(&self.id);
        let peak = cg.peak_memory_bytes(&self.id).unwrap_or(0);
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
        if let Err(e) = cgroups::kill_and_remove(cg, &self.id) {
            tracing::warn!(env = %self.id, error = %e, "cannot remove cgroups");
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
        if let Err(e) = self.inner.cgroups.kill_all(&self.id) {
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
        if let Err(e) = cgroups::kill_and_remove(self.inner.cgroups.as_ref(), &self.id) {
            tracing::warn!(env = %self.id, error = %e, "cannot remove cgroups");
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
        self.env.inner.cgroups.freeze(&self.env.id).map_err(|e| SandboxError::step(&self.env.id, "freeze", e.into()))
    }

    fn thaw(&self) -> Result<(), SandboxError> {
        if lock(&self.env.state).reaped {
            return Ok(());
        }
        self.env.inner.cgroups.thaw(&self.env.id).map_err(|e| SandboxError::step(&self.env.id, "thaw", e.into()))
    }

    fn max_memory_bytes(&self) -> u64 {
        let st = lock(&self.env.state);
        if st.reaped {
            return st.peak_bytes;
        }
        drop(st);
        self.env.inner.cgroups.peak_memory_bytes(&self.env.id).unwrap_or(0)
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

/// Everything `spawn` prepares before cloning, owned so the child's [`Plan`] can borrow it.
struct Prepared {
    hostname: Vec<u8>,
    code_dir: CString,
    tmp_opts: CString,
    exe: CString,
    env: Vec<CString>,
}

fn prepare(spec: &SandboxSpec) -> io::Result<Prepared> {
    if spec.id.is_empty()
        || spec.id.len() > 64
        || !spec.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid("environment id must be 1 to 64 characters of [A-Za-z0-9_-]"));
    }
    if spec.bootstrap.as_os_str().is_empty() || !spec.bootstrap.components().all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(invalid("bootstrap must be a relative path inside the code directory"));
    }
    let code_dir = fs::canonicalize(&spec.code_dir)?;
    let mut hostname = format!("kiln-{}", spec.id).into_bytes();
    hostname.truncate(64);
    let exe = Path::new("/var/task").join(&spec.bootstrap);
    let mut env = Vec::with_capacity(spec.env.len() + 1);
    for (k, v) in &spec.env {
        if k == kiln_model::env::RUNTIME_API {
            continue;
        }
        if k.is_empty() || k.contains('=') {
            return Err(invalid("environment variable names may not be empty or contain '='"));
        }
        env.push(cstring(format!("{k}={v}").as_bytes())?);
    }
    env.push(cstring(format!("{}=127.0.0.1:{}", kiln_model::env::RUNTIME_API, child::RUNTIME_API_PORT).as_bytes())?);
    Ok(Prepared {
        hostname,
        code_dir: cstring(code_dir.as_os_str().as_bytes())?,
        tmp_opts: cstring(
            format!("size={}m,mode=1777,uid={FUNCTION_UID},gid={FUNCTION_GID}", spec.tmp_mb.max(1)).as_bytes(),
        )?,
        exe: cstring(exe.as_os_str().as_bytes())?,
        env,
    })
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
                tracing::warn!(env = self.id, error = %e, "cannot remove cgroups");
            }
        }
    }
}

impl Backend for LinuxBackend {
    fn name(&self) -> &'static str {
        "linux"
    }

    fn spawn(&self, spec: &SandboxSpec) -> Result<Spawned, SandboxError> {
        let inner = &self.inner;
        let step = |s, e| SandboxError::step(&spec.id, s, e);
        let t0 = std::time::Instant::now();
        let prepared = prepare(spec).map_err(|e| step("check spec", e))?;

        let limits = Limits::for_memory_mb(spec.memory_mb);
        let procs = inner.cgroups.create(&spec.id, &limits).map_err(|e| step("create cgroups", e.into()))?;
        let t_cg = t0.elapsed();
        let mut guard = CgroupGuard { cgroups: inner.cgroups.as_ref(), id: &spec.id, armed: true };
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

        let procs_raw: Vec<RawFd> = procs_fds.iter().map(AsRawFd::as_raw_fd).collect();
        let mut keep: Vec<RawFd> = procs_raw.clone();
        keep.push(child_sock.as_raw_fd());
        keep.push(out_w.as_raw_fd());
        keep.sort_unstable();
        keep.dedup();
        let argv = [prepared.exe.as_ptr(), std::ptr::null()];
        let mut envp: Vec<*const libc::c_char> = prepared.env.iter().map(|c| c.as_ptr()).collect();
        envp.push(std::ptr::null());
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
            sock: child_sock.as_raw_fd(),
            out_w: out_w.as_raw_fd(),
            hostname: &prepared.hostname,
            root: &inner.root_mountpoint,
            root_entries: &inner.root_entries,
            code_dir: &prepared.code_dir,
            tmp_opts: &prepared.tmp_opts,
            exe: &prepared.exe,
            argv: &argv,
            envp: &envp,
            filters: &fprogs,
            uid: FUNCTION_UID,
            gid: FUNCTION_GID,
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
            libc::syscall(
                libc::SYS_clone,
                (flags | libc::SIGCHLD) as libc::c_long,
                0,
                &mut pidfd as *mut libc::c_int,
                0,
                0,
            )
        };
        if pid == 0 {
            // SAFETY: we are the child of the clone above, with new pid and mount namespaces.
            unsafe { child::run(&plan) }
        }
        if pid < 0 {
            return Err(step("clone namespaces", last_error()));
        }
        let t_clone = t0.elapsed();
        // SAFETY: CLONE_PIDFD gave us this descriptor; nobody else owns it.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        drop(procs_fds);
        drop(child_sock);
        drop(out_w);

        let fail = |e: SandboxError| {
            pidfd_kill(&pidfd);
            waitid_pidfd(&pidfd, true);
            e
        };
        let listener = match recv_setup(&host_sock, SETUP_TIMEOUT) {
            Ok(Setup::Ready(fd)) => TcpListener::from(fd),
            Ok(Setup::Failed { step: s, errno }) => {
                let name = child::STEP_NAMES.get(s as usize).copied().unwrap_or("set up environment");
                return Err(fail(step(name, io::Error::from_raw_os_error(errno))));
            }
            Err(e) => return Err(fail(step("wait for environment", e))),
        };

        let key = inner.next_key.fetch_add(1, Ordering::Relaxed);
        let (exit_tx, _) = watch::channel(None);
        let env = Arc::new(Env {
            id: spec.id.clone(),
            key,
            pid: pid as i32,
            pidfd,
            sock: host_sock,
            inner: inner.clone(),
            exit_tx,
            state: Mutex::new(EnvState::default()),
            reaped_cv: Condvar::new(),
            reap_lock: Mutex::new(()),
        });
        guard.armed = false;
        lock(&inner.envs).insert(key, env.clone());
        if let Err(e) = epoll_add(&inner.epoll, &env.pidfd, key, true) {
            env.destroy();
            return Err(step("watch environment", e));
        }
        tracing::debug!(
            env = %spec.id,
            pid,
            instance = %inner.instance_id,
            cgroups_us = t_cg.as_micros() as u64,
            clone_us = t_clone.as_micros() as u64,
            ready_us = t0.elapsed().as_micros() as u64,
            "environment started"
        );
        Ok(Spawned { sandbox: Box::new(LinuxSandbox { env }), runtime_listener: listener, output: out_r })
    }

    fn shutdown(&self) {
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
        let rec = |kind, value| Some(Msg { kind, step: 0, value });
        let killed = (libc::CLD_KILLED, libc::SIGKILL);
        assert_eq!(exit_info(rec(child::MSG_EXITED, 3), (1, 0), false), ExitInfo::Code(3));
        assert_eq!(exit_info(rec(child::MSG_SIGNALED, 9), (1, 0), true), ExitInfo::Signal { signal: 9, oom: true });
        assert_eq!(exit_info(rec(child::MSG_SIGNALED, 15), (1, 0), true), ExitInfo::Signal { signal: 15, oom: false });
        assert_eq!(exit_info(rec(child::MSG_EXEC_FAILED, 2), (1, 0), false), ExitInfo::ExecFailed);
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
    fn prepare_rejects_escaping_bootstraps_and_bad_ids() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = SandboxSpec {
            id: "env-1".into(),
            code_dir: dir.path().into(),
            bootstrap: "bootstrap".into(),
            env: vec![("A".into(), "b".into())],
            memory_mb: 128,
            tmp_mb: 512,
        };
        let p = prepare(&spec).unwrap();
        assert_eq!(p.exe.to_str().unwrap(), "/var/task/bootstrap");
        assert_eq!(p.hostname, b"kiln-env-1");
        assert_eq!(p.env.len(), 2);
        assert_eq!(p.env[1].to_str().unwrap(), "AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001");
        assert!(p.tmp_opts.to_str().unwrap().starts_with("size=512m,"));
        spec.bootstrap = "../x".into();
        assert!(prepare(&spec).is_err());
        spec.bootstrap = "/bin/sh".into();
        assert!(prepare(&spec).is_err());
        spec.bootstrap = "bootstrap".into();
        spec.id = "../etc".into();
        assert!(prepare(&spec).is_err());
    }
}
