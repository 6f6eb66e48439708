//! The zygote: the small process every blank's init is cloned from.
//!
//! # Why
//!
//! An init cloned straight from kiln shares kiln's whole address space copy-on-write. kiln
//! keeps writing its heap, so each init is soon left owning a private copy of every page kiln
//! touched since its clone (about 800 KiB per idle environment), and every build and teardown
//! copies and frees page tables for all of kiln's mappings. The zygote is forked from kiln once,
//! when the backend starts, and then only waits on its socket: nobody writes its pages, so the
//! inits cloned from it share them and own almost nothing.
//!
//! # Process tree
//!
//! ```text
//! kiln serve ── fork ──▶ zygote (one per backend; single-threaded, raw system calls only)
//!      ▲                   └── clone(CLONE_PARENT|NEWPID) ────────────────────────────┐
//!      └───────────────────────── parent of ◀─ init (PID 1 of an environment) ◀──────┘
//! ```
//!
//! `CLONE_PARENT` makes each init kiln's child, not the zygote's: kiln reaps it (pidfd,
//! `waitid(P_PIDFD)`), gets its `SIGCHLD` (the exit signal of a `CLONE_PARENT` child is the
//! caller's own, and the zygote's is `SIGCHLD`), and the reaper works as it did. The zygote has
//! no children of its own.
//!
//! # One request
//!
//! kiln still does everything stateful of a build ([`super::blank::build_blank`]): cgroups,
//! the `cgroup.procs` and freezer descriptors, the socket pair and output pipe, the host uid.
//! It then sends the zygote one [`Request`] over a `SOCK_SEQPACKET` socket, with those
//! descriptors and the zygote's end of a fresh reply socket pair (`SCM_RIGHTS`). The zygote
//! receives them close-on-exec (`MSG_CMSG_CLOEXEC`, so none reaches the function through its
//! `execve`), builds the [`Plan`] in its own memory (the root entries, seccomp programs and root
//! mountpoint are in it since the fork), maps the buffers the claim lands in (unmapped again
//! in the zygote after the clone; the init has its own copy), clones the init, sends back its
//! pid with its pidfd on the reply socket and closes its copies of everything. The init closes
//! every descriptor outside the plan's `keep` list, the zygote's socket included.
//!
//! Requests from several threads at once are fine: each `sendmsg` of a datagram is atomic and
//! every answer comes back on the request's own reply socket, so no lock is held while the
//! zygote works; the zygote serves them one after the other (beyond the socket's queue,
//! `net.unix.max_dgram_qlen`, senders wait in `sendmsg` until it reads).
//!
//! # Death
//!
//! The zygote exits when its socket reaches end of file, i.e. when kiln's end is closed: kiln
//! dropped the backend, or kiln died (even by `SIGKILL`; the kernel closes its descriptors).
//! That is `PR_SET_PDEATHSIG` without its trap (the signal fires when the *thread* that forked
//! the child exits, and kiln forks from whichever thread builds). If the zygote dies while kiln
//! lives, the next request sees it (`EPIPE` on the send: the zygote is reaped, a new one is
//! forked and the request is sent again; end of file on the reply: that build fails with
//! [`ZygoteError::Died`] and the next one starts a new zygote). One case is not covered: a
//! zygote killed between its clone and its answer leaves an init kiln never heard of. That
//! init finds its socket to kiln closed (the failed build dropped kiln's end) and exits, its
//! cgroups are removed by the failed build, and it stays a zombie child of kiln until kiln
//! exits: a window of microseconds, open only to whoever kills the zygote.
//!
//! # Rules of the zygote's code
//!
//! The zygote is a fork of a multi-threaded kiln: like init ([`super::child`]), it runs only raw
//! system calls on memory that existed at the fork (no allocation, no locks, no panics), and it
//! never returns into kiln's code.

use super::backend::Inner;
use super::child::{self, Plan, RootEntry};
use super::sys::host::{self, above_stdio, pidfd_kill, seqpacket_pair, waitid_pidfd};
use super::sys::zygote::{self as zsys, MAX_REQUEST_FDS};
use super::sys::{LinuxSys, SigMask, Sys};
use super::*;
use crate::linux::protocol;
use libc::{c_char, c_int, c_void};
use std::ffi::CStr;
use std::io::{self, ErrorKind};
use std::mem::size_of;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How long kiln waits for the zygote's answer (it only clones: milliseconds at worst).
const REPLY_TIMEOUT: Duration = SETUP_TIMEOUT;

/// Marks a [`Request`] of this build of kiln.
const REQUEST_MAGIC: u32 = 0x6b7a_0001;

/// Longest value that thaws a freezer (`THAWED`, `0`).
const THAW_MAX: usize = 16;

/// Descriptors of a request before the `cgroup.procs` ones: reply socket, init's socket,
/// output pipe.
const FIXED_FDS: usize = 3;

/// What can go wrong when asking the zygote for an init.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ZygoteError {
    #[error("cannot start the zygote")]
    Start(#[source] io::Error),
    #[error("cannot send the request to the zygote")]
    Send(#[source] io::Error),
    #[error("the zygote died while it served the request (a new one starts with the next build)")]
    Died(#[source] io::Error),
    #[error("the zygote did not answer")]
    Reply(#[source] io::Error),
    #[error("the zygote could not clone the init")]
    Clone(#[source] io::Error),
    #[error("too many descriptors for one request to the zygote")]
    TooManyFds,
}

/// The request as it travels: plain integers, followed by its descriptors (in this order:
/// reply socket, init's socket, output pipe, `procs` `cgroup.procs` files, then the init's
/// later `cgroup.procs` if `init_cgroup` and the freezer's control if `thaw`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Request {
    magic: u32,
    /// The environment's host uid and gid.
    uid: u32,
    gid: u32,
    /// Size of its `/tmp`.
    tmp_mb: u32,
    /// Nice value the init starts with (the requesting thread's).
    nice: i32,
    procs: u32,
    init_cgroup: u32,
    thaw: u32,
    thaw_len: u32,
    thaw_value: [u8; THAW_MAX],
}

/// The zygote's answer: the init's pid (its pidfd travels with it), or the errno of the
/// failed clone.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct Reply {
    pid: i32,
    errno: i32,
}

/// What one init needs from kiln's side of a build: descriptors kiln keeps owning (the
/// zygote gets copies) and a few values.
pub(super) struct InitRequest<'a> {
    /// The init's end of the socket pair to kiln.
    pub(super) sock: RawFd,
    /// Write end of the output pipe.
    pub(super) out_w: RawFd,
    /// The `cgroup.procs` files init joins.
    pub(super) procs: &'a [RawFd],
    /// The `cgroup.procs` init moves to once the bootstrap runs (-1: none).
    pub(super) init_cgroup: RawFd,
    /// The freezer's control (-1: none) and the value that thaws it.
    pub(super) thaw_fd: RawFd,
    pub(super) thaw_value: &'a [u8],
    /// The environment's host uid (= gid).
    pub(super) host_id: u32,
    pub(super) tmp_mb: u32,
}

/// A running zygote, as kiln holds it. Dropping it kills and reaps the zygote.
struct Zygote {
    pid: i32,
    pidfd: OwnedFd,
    /// kiln's end of the request socket.
    sock: OwnedFd,
}

impl Drop for Zygote {
    fn drop(&mut self) {
        pidfd_kill(&self.pidfd);
        waitid_pidfd(&self.pidfd, true);
    }
}

/// Why one attempt failed.
enum Failure {
    /// The zygote was gone before it read the request: nothing happened.
    Gone(io::Error),
    /// It died after reading it.
    Died(io::Error),
    Other(ZygoteError),
}

/// The backend's zygote: started with the backend, started again after it died.
pub(super) struct Zygotes {
    current: Mutex<Option<Arc<Zygote>>>,
    /// How many zygotes were started (the first one included).
    started: AtomicU64,
}

impl Zygotes {
    pub(super) fn new() -> Zygotes {
        Zygotes { current: Mutex::new(None), started: AtomicU64::new(0) }
    }

    /// Starts the zygote unless one runs.
    pub(super) fn start(&self, inner: &Inner) -> Result<(), ZygoteError> {
        self.current(inner).map(drop)
    }

    /// Kills and reaps the zygote, if one runs; the next build starts a new one.
    pub(super) fn stop(&self) {
        let z = lock(&self.current).take();
        drop(z);
    }

    /// The pid of the running zygote.
    pub(super) fn pid(&self) -> Option<i32> {
        lock(&self.current).as_ref().map(|z| z.pid)
    }

    /// How many zygotes this backend started.
    pub(super) fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    fn current(&self, inner: &Inner) -> Result<Arc<Zygote>, ZygoteError> {
        let mut cur = lock(&self.current);
        if let Some(z) = cur.as_ref() {
            return Ok(z.clone());
        }
        let z = Arc::new(fork_zygote(inner).map_err(ZygoteError::Start)?);
        self.started.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(instance = %inner.instance_id, pid = z.pid, "sandbox zygote started");
        *cur = Some(z.clone());
        Ok(z)
    }

    /// Forgets `dead` if it is still the current zygote (another thread may have replaced it
    /// already); it is reaped once the last request that holds it lets go.
    fn forget(&self, inner: &Inner, dead: &Arc<Zygote>, why: &io::Error) {
        let mut cur = lock(&self.current);
        if cur.as_ref().is_some_and(|z| Arc::ptr_eq(z, dead)) {
            tracing::warn!(instance = %inner.instance_id, pid = dead.pid, error = %why, "sandbox zygote died; starting another");
            *cur = None;
        }
    }

    /// Clones a new init through the zygote: its pid and pidfd. The init is kiln's child.
    pub(super) fn clone_init(&self, inner: &Inner, req: &InitRequest<'_>) -> Result<(i32, OwnedFd), ZygoteError> {
        let mut retried = false;
        loop {
            let z = self.current(inner)?;
            match request(&z, req) {
                Ok(done) => return Ok(done),
                Err(Failure::Gone(e)) if !retried => {
                    // Nothing was done: the same request to a new zygote.
                    self.forget(inner, &z, &e);
                    retried = true;
                }
                Err(Failure::Gone(e)) => {
                    self.forget(inner, &z, &e);
                    return Err(ZygoteError::Send(e));
                }
                Err(Failure::Died(e)) => {
                    self.forget(inner, &z, &e);
                    return Err(ZygoteError::Died(e));
                }
                Err(Failure::Other(e)) => return Err(e),
            }
        }
    }
}

/// One request to `z` and its answer.
fn request(z: &Zygote, req: &InitRequest<'_>) -> Result<(i32, OwnedFd), Failure> {
    let (reply, theirs) = seqpacket_pair().map_err(|e| Failure::Other(ZygoteError::Send(e)))?;
    let mut fds = [-1; MAX_REQUEST_FDS];
    let extra = [req.init_cgroup, req.thaw_fd].into_iter().filter(|fd| *fd >= 0);
    let all = [theirs.as_raw_fd(), req.sock, req.out_w].into_iter().chain(req.procs.iter().copied()).chain(extra);
    let mut n = 0;
    for fd in all {
        let slot = fds.get_mut(n).ok_or(Failure::Other(ZygoteError::TooManyFds))?;
        *slot = fd;
        n += 1;
    }
    let mut wire = Request {
        magic: REQUEST_MAGIC,
        uid: req.host_id,
        gid: req.host_id,
        tmp_mb: req.tmp_mb,
        nice: zsys::thread_nice(),
        procs: req.procs.len() as u32,
        init_cgroup: u32::from(req.init_cgroup >= 0),
        thaw: u32::from(req.thaw_fd >= 0),
        thaw_len: 0,
        thaw_value: [0; THAW_MAX],
    };
    let thaw = wire.thaw_value.get_mut(..req.thaw_value.len()).ok_or_else(|| {
        Failure::Other(ZygoteError::Send(io::Error::new(ErrorKind::InvalidInput, "freezer value too long")))
    })?;
    thaw.copy_from_slice(req.thaw_value);
    wire.thaw_len = req.thaw_value.len() as u32;
    // SAFETY: Request is repr(C) plain integers; its bytes are what travels.
    let bytes = unsafe { std::slice::from_raw_parts((&wire as *const Request).cast::<u8>(), size_of::<Request>()) };
    let sent = zsys::send_fds(z.sock.as_raw_fd(), bytes, fds.get(..n).unwrap_or_default());
    // Our copy of the zygote's end must go now, or a dead zygote would not show as end of file.
    drop(theirs);
    if let Err(errno) = sent {
        let e = io::Error::from_raw_os_error(errno);
        return Err(match errno {
            libc::EPIPE | libc::ECONNRESET | libc::ECONNREFUSED | libc::ENOTCONN => Failure::Gone(e),
            _ => Failure::Other(ZygoteError::Send(e)),
        });
    }
    let mut answer = Reply::default();
    // SAFETY: Reply is repr(C) plain integers; any bytes are a valid value.
    let buf = unsafe { std::slice::from_raw_parts_mut((&mut answer as *mut Reply).cast::<u8>(), size_of::<Reply>()) };
    match zsys::recv_reply(&reply, buf, REPLY_TIMEOUT) {
        Ok((len, Some(pidfd))) if len == size_of::<Reply>() && answer.pid > 0 => Ok((answer.pid, pidfd)),
        Ok((len, _)) if len == size_of::<Reply>() && answer.errno != 0 => {
            Err(Failure::Other(ZygoteError::Clone(io::Error::from_raw_os_error(answer.errno))))
        }
        Ok(_) => Err(Failure::Other(ZygoteError::Reply(io::Error::new(ErrorKind::InvalidData, "malformed answer")))),
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(Failure::Died(e)),
        Err(e) => Err(Failure::Other(ZygoteError::Reply(e))),
    }
}

/// What the zygote keeps from kiln: pointers into memory that existed at the fork and that
/// nothing writes afterwards (the backend's immutable parts).
struct Static<'a> {
    /// The zygote's end of the request socket.
    sock: c_int,
    root: &'a CStr,
    root_entries: &'a [RootEntry],
    filters: &'a [libc::sock_fprog],
    cap_last: u32,
}

/// Forks the zygote from the calling thread.
fn fork_zygote(inner: &Inner) -> io::Result<Zygote> {
    let (ours, theirs) = seqpacket_pair()?;
    let theirs = above_stdio(theirs)?;
    let fprogs: Vec<libc::sock_fprog> = inner
        .filters
        .iter()
        .map(|p| libc::sock_fprog {
            len: p.len() as u16,
            // seccompiler's sock_filter has the kernel's layout (repr(C), same fields).
            filter: p.as_ptr() as *mut libc::sock_filter,
        })
        .collect();
    let st = Static {
        sock: theirs.as_raw_fd(),
        root: &inner.root_mountpoint,
        root_entries: &inner.root_entries,
        filters: &fprogs,
        cap_last: inner.cap_last,
    };
    let run = || {
        // SAFETY: we are the forked child; `st` and what it points at were valid in the parent
        // at the fork and are never freed in this process.
        unsafe { zygote_main(&st) }
    };
    // SAFETY: a fork with a pidfd into a network namespace of its own (see
    // [`CHILD_EHASH_ENTRIES`]); the child runs only zygote_main, which makes raw system calls
    // on data prepared above and never returns.
    let (pid, pidfd) = unsafe { host::clone_into_namespaces(libc::CLONE_NEWNET, run) }?;
    drop(theirs);
    Ok(Zygote { pid, pidfd, sock: ours })
}

/// `net.ipv4.tcp_child_ehash_entries` of the zygote's own (empty) network namespace: every
/// environment's network namespace, made by an init cloned from the zygote, then gets a TCP
/// established-socket hash table of this many buckets instead of sharing the host's. Without
/// it, each environment's sockets (the Runtime API connection's two ends) sit in the host's
/// table, and every network namespace's end walks that whole table (`inet_twsk_purge`, in the
/// kernel's `cleanup_net` worker): with 1,000 idle environments, that cleanup took 0.7–0.8 ms
/// of CPU per retired environment, 0.3 with a table of its own, next to the cold start that
/// follows the retire. The host's own setting is untouched;
/// on a kernel without the setting (before 6.1) the write fails and nothing changes.
const CHILD_EHASH_ENTRIES: &[u8] = b"128";

/// Where [`CHILD_EHASH_ENTRIES`] is written: `/proc/sys/net` shows the network namespace of
/// whoever opens it, here the zygote's.
const CHILD_EHASH_SYSCTL: &CStr = c"/proc/sys/net/ipv4/tcp_child_ehash_entries";

/// The zygote's name (`comm`), which its inits and the blanks' parked bootstraps inherit.
pub(crate) const ZYGOTE_NAME: &std::ffi::CStr = c"kiln-zygote";

/// The zygote's life: serve requests until kiln's end of the socket closes.
///
/// # Safety
/// Only in the child of [`fork_zygote`]'s fork, with `st` valid.
unsafe fn zygote_main(st: &Static) -> ! {
    let sys = LinuxSys;
    // kiln's signal handlers and mask are copied: back to the defaults (inits do the same).
    sys.reset_signal_handlers();
    let _ = sys.set_sigmask(SigMask::Empty);
    // The zygote holds a copy of kiln's memory: unreadable through /proc and ptrace.
    let _ = sys.set_dumpable(false);
    // Told apart from kiln in `ps`; inits, and a blank's parked bootstrap until its exec, show
    // the same name.
    zsys::set_name(ZYGOTE_NAME);
    // Every descriptor of kiln's but the request socket; then 0, 1 and 2 on /dev/null, so that
    // received descriptors are all ≥ 3, as the init's plan requires.
    let keep = st.sock as u32;
    if (keep > 0 && sys.close_range(0, keep - 1).is_err()) || sys.close_range(keep + 1, u32::MAX).is_err() {
        sys.exit(1)
    }
    let Ok(null) = sys.open(c"/dev/null", libc::O_RDWR, 0) else { sys.exit(1) };
    for fd in 0..3 {
        if fd != null && sys.dup2(null, fd).is_err() {
            sys.exit(1)
        }
    }
    if null >= 3 {
        sys.close(null);
    }
    if let Ok(fd) = sys.open(CHILD_EHASH_SYSCTL, libc::O_WRONLY | libc::O_CLOEXEC, 0) {
        let _ = sys.write(fd, CHILD_EHASH_ENTRIES);
        sys.close(fd);
    }
    loop {
        let mut req = Request::default();
        // SAFETY: Request is repr(C) plain integers; any bytes are a valid value.
        let buf =
            unsafe { std::slice::from_raw_parts_mut((&mut req as *mut Request).cast::<u8>(), size_of::<Request>()) };
        let mut fds = [-1; MAX_REQUEST_FDS];
        match zsys::recv_fds(st.sock, buf, &mut fds) {
            // kiln closed its end, or died.
            Ok(None) => sys.exit(0),
            Ok(Some((len, got))) => {
                let fds = fds.get(..got).unwrap_or_default();
                serve(st, &req, len, fds);
                for &fd in fds {
                    sys.close(fd);
                }
            }
            Err(libc::EMSGSIZE) => {}
            Err(_) => sys.exit(1),
        }
    }
}

/// Clones one init for `req` and answers on its reply socket (the first descriptor).
fn serve(st: &Static, req: &Request, len: usize, fds: &[c_int]) {
    let Some(&reply) = fds.first() else { return };
    let answer = |r: Reply, pidfd: Option<c_int>| {
        // SAFETY: Reply is repr(C) plain integers.
        let bytes = unsafe { std::slice::from_raw_parts((&r as *const Reply).cast::<u8>(), size_of::<Reply>()) };
        // kiln may have given up waiting; nothing to do then.
        let _ = zsys::send_fds(reply, bytes, pidfd.as_slice());
    };
    match clone_init(st, req, len, fds) {
        Ok((pid, pidfd)) => {
            answer(Reply { pid, errno: 0 }, Some(pidfd.as_raw_fd()));
            // pidfd is closed here, as the zygote's copy.
        }
        Err(errno) => answer(Reply { pid: 0, errno }, None),
    }
}

/// The clone itself: checks the request, lays out the plan, maps the init's buffers.
fn clone_init(st: &Static, req: &Request, len: usize, fds: &[c_int]) -> Result<(i32, OwnedFd), c_int> {
    let procs = req.procs as usize;
    let wanted = FIXED_FDS + procs + req.init_cgroup as usize + req.thaw as usize;
    if len != size_of::<Request>() || req.magic != REQUEST_MAGIC || fds.len() != wanted {
        return Err(libc::EINVAL);
    }
    let (&sock, &out_w) = (fds.get(1).ok_or(libc::EINVAL)?, fds.get(2).ok_or(libc::EINVAL)?);
    let cgroup_procs = fds.get(FIXED_FDS..FIXED_FDS + procs).ok_or(libc::EINVAL)?;
    let mut rest = fds.get(FIXED_FDS + procs..).unwrap_or_default().iter().copied();
    let init_cgroup = if req.init_cgroup != 0 { rest.next().ok_or(libc::EINVAL)? } else { -1 };
    let thaw_fd = if req.thaw != 0 { rest.next().ok_or(libc::EINVAL)? } else { -1 };
    let thaw_value = req.thaw_value.get(..req.thaw_len as usize).ok_or(libc::EINVAL)?;

    // Everything but the reply socket stays open in the init; sorted, as the plan wants.
    let mut keep = [0; MAX_REQUEST_FDS];
    let kept = fds.get(1..).unwrap_or_default();
    for (slot, fd) in keep.iter_mut().zip(kept) {
        *slot = *fd;
    }
    let keep = keep.get_mut(..kept.len()).ok_or(libc::EINVAL)?;
    keep.sort_unstable();

    let mut tmp = [0u8; 96];
    tmp_opts(&mut tmp, req.tmp_mb, req.uid, req.gid);
    let tmp_opts = CStr::from_bytes_until_nul(&tmp).map_err(|_| libc::EINVAL)?;

    let layout = InitBuffers::LAYOUT;
    let base = zsys::map_anonymous(layout.len)?;
    let plan = Plan {
        keep,
        cgroup_procs,
        init_cgroup,
        thaw_fd,
        thaw_value,
        sock,
        out_w,
        root: st.root,
        root_entries: st.root_entries,
        tmp_opts,
        claim_buf: base.wrapping_add(layout.claim),
        claim_cap: protocol::CLAIM_MAX,
        envp_buf: base.wrapping_add(layout.envp).cast::<*const c_char>(),
        envp_cap: protocol::MAX_ENV_VARS + 1,
        // The top of the stack region, where a downward stack starts (page-aligned).
        bootstrap_stack: base.wrapping_add(layout.stack_top).cast::<c_void>(),
        filters: st.filters,
        uid: req.uid,
        gid: req.gid,
        ns_uid: FUNCTION_UID,
        ns_gid: FUNCTION_GID,
        nofile: NOFILE_LIMIT,
        cap_last: st.cap_last,
        // The init takes the requester's priority itself (the pool builds at a low one): the
        // zygote keeps its own, or a low-priority build would hold up every request queued
        // behind it.
        nice: req.nice,
    };
    // Only the pid namespace is made here (a process enters a new one only at its birth); the
    // init unshares its mount, network, IPC and UTS namespaces itself ([`child::UNSHARED`]),
    // so that the costly part of a build (a network namespace is most of a clone's time) runs
    // in the inits, in parallel and at their priority, and not in the zygote, which serves
    // every build one after the other.
    let flags = libc::CLONE_PARENT | libc::CLONE_NEWPID;
    let init = || {
        // SAFETY: we run in the child of the clone below, with a new pid namespace,
        // and every descriptor and pointer of the plan was valid in the zygote at the clone.
        unsafe { child::run(&plan) }
    };
    // SAFETY: the child runs only `init`: child::run makes async-signal-safe system calls on
    // the plan and never returns.
    let cloned = unsafe { host::clone_into_namespaces(flags, init) };
    // SAFETY: the mapping is ours; the init has its own copy, and nothing here uses it again.
    unsafe { zsys::unmap(base, layout.len) };
    cloned.map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

/// Where the buffers of an init's claim sit in the one mapping the zygote makes per init.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InitBuffers {
    /// Offset of the claim's receive buffer ([`protocol::CLAIM_MAX`] bytes).
    claim: usize,
    /// Offset of the `envp` array ([`protocol::MAX_ENV_VARS`] + 1 pointers).
    envp: usize,
    /// Offset of the top of the bootstrap's pre-exec stack ([`BOOTSTRAP_STACK`] below it).
    stack_top: usize,
    /// The whole mapping.
    len: usize,
}

impl InitBuffers {
    const PAGE: usize = 4096;
    const LAYOUT: InitBuffers = {
        // The stack first, so that running off its bottom faults instead of writing over the
        // claim; then the claim, then envp, each page-aligned.
        let stack_top = BOOTSTRAP_STACK.next_multiple_of(Self::PAGE);
        let claim = stack_top;
        let envp = (claim + protocol::CLAIM_MAX).next_multiple_of(Self::PAGE);
        let len = (envp + (protocol::MAX_ENV_VARS + 1) * size_of::<*const c_char>()).next_multiple_of(Self::PAGE);
        InitBuffers { claim, envp, stack_top, len }
    };
}

/// Writes `size=<tmp>m,mode=1777,uid=<uid>,gid=<gid>` and a NUL into `out` (96 bytes hold any
/// u32s).
fn tmp_opts(out: &mut [u8; 96], tmp_mb: u32, uid: u32, gid: u32) {
    child::FixedText::new(out)
        .bytes(b"size=")
        .decimal(tmp_mb)
        .bytes(b"m,mode=1777,uid=")
        .decimal(uid)
        .bytes(b",gid=")
        .decimal(gid)
        .bytes(b"\0");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmp_opts_match_what_kiln_formatted() {
        for (mb, id) in [(0, 0), (512, 1_073_807_360), (u32::MAX, u32::MAX)] {
            let mut out = [0xffu8; 96];
            tmp_opts(&mut out, mb, id, id);
            let s = CStr::from_bytes_until_nul(&out).unwrap();
            assert_eq!(s.to_str().unwrap(), format!("size={mb}m,mode=1777,uid={id},gid={id}"));
        }
    }

    #[test]
    fn requests_carry_their_descriptors_and_too_many_are_refused() {
        use std::os::fd::{AsRawFd, FromRawFd};
        let (a, b) = super::super::sys::host::seqpacket_pair().unwrap();
        let fds = [0, 1, 2];
        // Sixteen descriptors fit the request's control buffer; one more is refused.
        let many = [a.as_raw_fd(); MAX_REQUEST_FDS + 1];
        assert_eq!(zsys::send_fds(a.as_raw_fd(), b"req", &many), Err(libc::EINVAL));
        assert_eq!(zsys::send_fds(a.as_raw_fd(), b"req", &many[..MAX_REQUEST_FDS]), Ok(3));
        // A buffer too small for what is asked is refused, not overrun.
        assert_eq!(super::super::sys::send_with::<2>(a.as_raw_fd(), b"x", &fds, 3), Err(libc::EINVAL));
        let mut buf = [0u8; 8];
        let mut got = [-1; MAX_REQUEST_FDS];
        let (len, n) = zsys::recv_fds(b.as_raw_fd(), &mut buf, &mut got).unwrap().unwrap();
        assert_eq!((len, n), (3, MAX_REQUEST_FDS));
        for fd in got {
            // SAFETY: each is a descriptor the kernel just gave this process.
            drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        }
    }

    #[test]
    fn init_buffers_do_not_overlap_and_are_aligned() {
        let l = InitBuffers::LAYOUT;
        assert!(l.stack_top >= BOOTSTRAP_STACK && l.stack_top.is_multiple_of(16));
        assert!(l.claim >= l.stack_top);
        assert!(l.envp >= l.claim + protocol::CLAIM_MAX && l.envp.is_multiple_of(size_of::<*const c_char>()));
        assert!(l.len >= l.envp + (protocol::MAX_ENV_VARS + 1) * size_of::<*const c_char>());
        assert_eq!(l.len % InitBuffers::PAGE, 0);
    }

    // Reply, socket, pipe, up to five v1 hierarchies, init's cgroup, freezer: one request.
    const _: () = assert!(FIXED_FDS + 5 + 2 <= MAX_REQUEST_FDS);
}
