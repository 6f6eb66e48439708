//! The code that runs in the cloned child: the environment's init and, below it, the bootstrap
//! until `execve`.
//!
//! Init lives in two phases. First it builds a *blank* environment (namespaces joined, root
//! pivoted with an empty `/var/task`, loopback up, Runtime API listener bound and handed to
//! kiln) and blocks on its socket. Then kiln *claims* it with one message (see
//! [`super::protocol`]) carrying the code directory as a detached, read-only mount
//! (`SCM_RIGHTS`): init attaches it at `/var/task`, resizes `/tmp`, sets the hostname, and
//! lets the bootstrap's process go: it was started with the blank and parked, already under its
//! identity and filter, so it only enters `/var/task` and execs. Everything the claim needs to
//! land in (receive buffer, `envp` array) is mapped by the zygote before the clone.
//!
//! kiln is a multi-threaded process, and init is cloned from the zygote (`zygote.rs`), a fork
//! of kiln: init gets a copy of kiln's memory (through the zygote's) in whatever state kiln's
//! other threads left it at the fork: a malloc arena may be locked, a `Mutex` held, a glibc
//! thread list full of threads that do not exist here. So everything below runs on data the
//! zygote prepared (a [`Plan`] of C strings, pointer arrays and BPF programs) and calls only
//! raw system calls, through [`Sys`] (generic, so nothing is boxed): no allocation, no locks,
//! no panics (no indexing, no `format!`), no glibc function that broadcasts to threads, and no
//! glibc `fork` (its atfork handlers take the malloc locks): the bootstrap is forked with a raw
//! `clone`.
//!
//! The order of the hardening steps matters and is checked by the tests below with
//! `sys::fake::RecordingSys`: `setresgid` before `setresuid` (without the uid, the
//! gid can no longer change), `no_new_privs` before the seccomp filter (an unprivileged
//! process may only install one with it), the filter last before the bootstrap parks (it
//! refuses much of what setting up needs; after it come only the wait for the claim, `chdir`
//! and `execve`, which it allows any function), and `pivot_root` before the read-only remount of `/` (the remount
//! is of the new root, once it is the root).
//!
//! Failures are reported to the parent as a [`Message::SetupFailed`] carrying the failed
//! [`Step`] and `errno`.

use super::protocol::{decode_claim, Message, Msg, Step, MAX_FDS, RUNTIME_API_PORT};
use super::sys::{Errno, Rlimit, SigMask, Sys, SysResult};
use libc::{c_char, c_int, c_void};
use std::ffi::CStr;
use std::mem::size_of;
use std::ptr::null;

/// Something the new root shows from the host besides `/usr` and `/etc`: on a merged-/usr host
/// `/bin`, `/lib`, ... are symlinks into `/usr` and are recreated as such; elsewhere they are
/// bound read-only.
#[derive(Debug)]
pub(crate) enum RootEntry {
    Symlink {
        /// Relative to the new root, e.g. `bin`.
        name: std::ffi::CString,
        target: std::ffi::CString,
    },
    BindReadOnly {
        source: std::ffi::CString,
        /// Relative to the new root.
        name: std::ffi::CString,
    },
    /// An empty directory (0755), the parent of a later bind; relative to the new root.
    Dir { name: std::ffi::CString },
}

/// Everything the child needs, prepared by the zygote before `clone`.
pub(crate) struct Plan<'a> {
    /// Descriptors the init keeps; sorted, all ≥ 3. Everything else is closed.
    pub keep: &'a [c_int],
    /// `cgroup.procs` files init writes "0" to, opened by the parent.
    pub cgroup_procs: &'a [c_int],
    /// The `cgroup.procs` init moves to once the bootstrap has started, out of the freezer
    /// cgroup it was born in (-1: none).
    pub init_cgroup: c_int,
    /// The freezer's control file (-1: none) and the value that thaws: init writes it before
    /// ending its environment when kiln has died.
    pub thaw_fd: c_int,
    pub thaw_value: &'a [u8],
    /// The init's end of the socket pair to the parent.
    pub sock: c_int,
    /// Write end of the output pipe: the bootstrap's stdout and stderr.
    pub out_w: c_int,
    /// Empty directory the new root is mounted on.
    pub root: &'a CStr,
    pub root_entries: &'a [RootEntry],
    /// tmpfs options of the blank's `/tmp` (size, owner); a claim may resize it.
    pub tmp_opts: &'a CStr,
    /// Where the claim message lands: `claim_cap` writable bytes, allocated before the clone.
    pub claim_buf: *mut u8,
    pub claim_cap: usize,
    /// The `envp` array init fills from the claim: `envp_cap` pointer slots.
    pub envp_buf: *mut *const c_char,
    pub envp_cap: usize,
    /// Top of the stack the bootstrap's process runs on until `execve` (16-byte aligned).
    pub bootstrap_stack: *mut c_void,
    pub filters: &'a [libc::sock_fprog],
    /// The environment's own host uid and gid.
    pub uid: u32,
    pub gid: u32,
    /// What the function sees them as, through its user namespace.
    pub ns_uid: u32,
    pub ns_gid: u32,
    pub nofile: u64,
    /// Highest capability number of this kernel.
    pub cap_last: u32,
    /// Nice value init runs at until its blank is ready (the pool builds at a low one).
    pub nice: c_int,
}

/// The namespaces init unshares itself, with its cgroup namespace, once in its cgroups; the
/// zygote's clone makes only the pid namespace (see `zygote.rs`).
pub(crate) const UNSHARED: c_int = libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;

/// The step that failed and its errno.
type Fail = (Step, Errno);

/// Names the step a system call belongs to.
trait At<T> {
    fn at(self, step: Step) -> Result<T, Fail>;
}

impl<T> At<T> for SysResult<T> {
    fn at(self, step: Step) -> Result<T, Fail> {
        self.map_err(|e| (step, e))
    }
}

/// Sends one message to kiln, optionally with a descriptor (`SCM_RIGHTS`).
fn send_msg<S: Sys>(sys: &S, sock: c_int, msg: Message, fd: Option<c_int>) -> SysResult<()> {
    sys.send(sock, msg.to_wire().as_bytes(), fd.as_slice())
}

/// The child's entry point: becomes the environment's init. Never returns.
///
/// # Safety
/// Must only be called in the child of a `clone` with a new pid namespace, with a
/// `plan` whose descriptors and pointers were valid in the zygote at the time of the clone:
/// it closes every other descriptor, moves to a new root, and writes through the plan's
/// buffers.
pub(crate) unsafe fn run(plan: &Plan) -> ! {
    let sys = super::sys::LinuxSys;
    match init(&sys, plan) {
        Ok(()) => sys.exit(0),
        Err((step, errno)) => {
            // Nothing more to do if kiln cannot hear it: it sees the end of file.
            let _ = send_msg(&sys, plan.sock, Message::SetupFailed { step, errno }, None);
            sys.exit(1)
        }
    }
}

/// Binds the host directory `src` at `dst`, with every mount below it, and makes the whole
/// tree read-only, nosuid and nodev: `mount_setattr` with `AT_RECURSIVE` reaches the host's
/// submounts (a tmpfs under `/usr/local`, Docker's binds of `/etc/hosts`, ...), which a
/// `MS_REMOUNT` of the top mount leaves writable. `dst` is an existing directory (or file,
/// for a file `src`), relative to the cwd or absolute, in the environment's mount namespace.
fn bind_ro<S: Sys>(sys: &S, src: &CStr, dst: &CStr) -> Result<(), Fail> {
    sys.mount(Some(src), dst, None, libc::MS_BIND | libc::MS_REC, None).at(Step::Bind)?;
    sys.make_tree_read_only(dst).at(Step::Bind)
}

/// The environment's own `/etc/hosts` and `/etc/hostname`: descriptors of two files of the
/// root's tmpfs that only init can reach, bound read-only over the host's. Init writes the
/// hostname into them at the claim. -1 where the host has no such file (nothing to cover).
struct EtcFiles {
    hosts: c_int,
    hostname: c_int,
}

/// What `/etc/hosts` says before the claim adds the environment's hostname.
const HOSTS_HEAD: &[u8] = b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// Builds [`EtcFiles`]; runs in the new root (cwd) while it is still writable, after `etc` is
/// bound.
///
/// The files are on the root's tmpfs, not on one of their own: every superblock costs each
/// memory cgroup's removal a walk step (the kernel reparents every memory-cgroup-aware list of
/// every superblock of the host), so an environment makes as few as it can. They are opened
/// through a bind mount of their directory, detached afterwards, so that init's writable
/// descriptors do not hold the root's mount, which is made read-only after the pivot; and they
/// are unlinked, so that only the binds over `etc` and init's descriptors reach them.
fn private_etc_files<S: Sys>(sys: &S) -> Result<EtcFiles, Fail> {
    let dir = c".kiln-etc";
    let step = Step::EtcFiles;
    sys.mkdir(dir, 0o700).at(step)?;
    sys.mount(Some(dir), dir, None, libc::MS_BIND, None).at(step)?;
    let mut out = EtcFiles { hosts: -1, hostname: -1 };
    for (file, target, slot) in [
        (c".kiln-etc/hosts", c"etc/hosts", &mut out.hosts),
        (c".kiln-etc/hostname", c"etc/hostname", &mut out.hostname),
    ] {
        if !sys.exists(target) {
            continue;
        }
        *slot = sys.open(file, libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC, 0o644).at(step)?;
        bind_read_only(sys, file, target)?;
    }
    if out.hosts >= 0 {
        sys.write(out.hosts, HOSTS_HEAD).at(step)?;
    }
    if sys.exists(c"etc/passwd") {
        private_passwd(sys)?;
    }
    // The binds over `etc` and init's descriptors keep the files; their directory goes.
    sys.detach_mount(dir).at(step)?;
    sys.rmdir(dir).at(step)?;
    Ok(out)
}

/// The line of the function's user in the environment's `/etc/passwd`: Lambda's user for uid
/// 993 ([`super::FUNCTION_UID`], [`super::FUNCTION_GID`]).
const FUNCTION_USER_LINE: &[u8] = b"sbx_user1051:x:993:993::/home/sbx_user1051:/sbin/nologin\n";
/// A host `/etc/passwd` longer than this is shown as it is (the root's tmpfs is 1 MB).
const PASSWD_COPY_MAX: usize = 256 * 1024;

/// The environment's `/etc/passwd`: the host's, with the function's user after it, so that
/// looking up the function's own uid (Python's `site` does at every start, for the user's
/// site-packages) is answered by the `files` source. Without the line, the lookup missed and
/// glibc went on to the next NSS source (`systemd` on Debian): loading `libnss_systemd` and
/// `libcap` along `LD_LIBRARY_PATH` and probing userdb directories, ~95 system calls and
/// 0.3–0.9 ms of every Python cold start. An entry the host already has for uid 993 comes
/// first and wins, as before. Written once per blank, read-only like the rest of `etc`.
fn private_passwd<S: Sys>(sys: &S) -> Result<(), Fail> {
    let step = Step::EtcFiles;
    let (file, target) = (c".kiln-etc/passwd", c"etc/passwd");
    let src = sys.open(target, libc::O_RDONLY | libc::O_CLOEXEC, 0).at(step)?;
    let dst = match sys.open(file, libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC, 0o644) {
        Ok(fd) => fd,
        Err(e) => {
            sys.close(src);
            return Err((step, e));
        }
    };
    let copied = copy_passwd(sys, src, dst);
    sys.close(src);
    sys.close(dst);
    if !copied? {
        // Too large to copy: the host's file stays, as it is.
        return sys.unlink(file).at(step);
    }
    bind_read_only(sys, file, target)
}

/// Binds `file` over `target` read-only and unlinks it: only the bind reaches it then.
fn bind_read_only<S: Sys>(sys: &S, file: &CStr, target: &CStr) -> Result<(), Fail> {
    let step = Step::EtcFiles;
    sys.mount(Some(file), target, None, libc::MS_BIND, None).at(step)?;
    sys.mount(
        None,
        target,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )
    .at(step)?;
    sys.unlink(file).at(step)
}

/// Copies `src` to `dst` and appends [`FUNCTION_USER_LINE`]; false (nothing appended) when
/// `src` is longer than [`PASSWD_COPY_MAX`].
fn copy_passwd<S: Sys>(sys: &S, src: c_int, dst: c_int) -> Result<bool, Fail> {
    let step = Step::EtcFiles;
    let write_all = |bytes: &[u8]| -> Result<(), Fail> {
        let mut rest = bytes;
        while !rest.is_empty() {
            match sys.write(dst, rest).at(step)? {
                0 => return Err((step, libc::EIO)),
                n => rest = &rest[n.min(rest.len())..],
            }
        }
        Ok(())
    };
    let mut buf = [0u8; 4096];
    let (mut total, mut last) = (0usize, b'\n');
    loop {
        let n = sys.read(src, &mut buf).at(step)?.min(buf.len());
        if n == 0 {
            break;
        }
        total += n;
        if total > PASSWD_COPY_MAX {
            return Ok(false);
        }
        write_all(&buf[..n])?;
        last = buf[n - 1];
    }
    if last != b'\n' {
        write_all(b"\n")?;
    }
    write_all(FUNCTION_USER_LINE)?;
    Ok(true)
}

/// Writes the claimed hostname into the environment's `/etc/hostname` and `/etc/hosts`, and
/// closes init's descriptors of them.
fn write_etc_files<S: Sys>(sys: &S, files: &EtcFiles, hostname: &[u8]) -> Result<(), Fail> {
    let write_all = |fd: c_int, off: usize, parts: &[&[u8]]| -> Result<(), Fail> {
        let mut off = off as libc::off_t;
        for part in parts {
            let n = sys.pwrite(fd, part, off).at(Step::EtcFiles)?;
            if n != part.len() {
                return Err((Step::EtcFiles, libc::EIO));
            }
            off += n as libc::off_t;
        }
        Ok(())
    };
    if files.hostname >= 0 {
        write_all(files.hostname, 0, &[hostname, b"\n"])?;
        sys.close(files.hostname);
    }
    if files.hosts >= 0 {
        write_all(files.hosts, HOSTS_HEAD.len(), &[b"127.0.0.1\t", hostname, b"\n"])?;
        sys.close(files.hosts);
    }
    Ok(())
}

fn close_all_but<S: Sys>(sys: &S, keep: &[c_int]) -> Result<(), Fail> {
    let mut next: u32 = 0;
    for &fd in keep {
        let fd = fd as u32;
        if fd > next {
            sys.close_range(next, fd - 1).at(Step::CloseFds)?;
        }
        next = fd.saturating_add(1);
    }
    sys.close_range(next, u32::MAX).at(Step::CloseFds)
}

/// Init: build the blank, start the bootstrap's process and park it, hand the listener to kiln,
/// wait for the claim, let the bootstrap go, then reap until it ends.
fn init<S: Sys>(sys: &S, p: &Plan) -> Result<(), Fail> {
    let etc_files = blank(sys, p)?;
    inheritable_limits(sys, p)?;
    sys.loopback_up().at(Step::Loopback)?;
    let listener = sys.listen_loopback(RUNTIME_API_PORT).at(Step::Listener)?;

    // The bootstrap's process, started now and parked until the claim: everything it does
    // before `execve` that does not depend on the claim (identity, user namespace,
    // capabilities, seccomp: ~0.3 ms, most of it attaching the filters) is off the cold
    // start's path, which then only attaches the code and lets it exec. SIGCHLD stays blocked
    // in init from here on, to be read from a signalfd beside kiln's socket; the bootstrap
    // unblocks it. Like posix_spawn, the process shares init's memory (CLONE_VM) on a stack of
    // its own: a plain fork would copy init's address space (a copy of kiln's) only for execve
    // to tear it down again. Unlike posix_spawn it has no CLONE_VFORK (init must go on to
    // announce the blank and wait for its claim), so both run side by side in one address
    // space, each on its own stack; the process only makes system calls, reads `args` and the
    // [`ExecSlot`] (alive in this frame until it has exec'd), and shares errno with init, which
    // matters only for an error read while the other fails too. Credentials, rlimits, seccomp,
    // the session, the descriptor table and the cwd are per process (no CLONE_THREAD,
    // CLONE_FILES or CLONE_FS), so what it changes stays its own.
    sys.set_sigmask(SigMask::BlockChild).at(Step::Watch)?;
    let (report_r, report_w) = sys.pipe().at(Step::ReportPipe)?;
    let (go_r, go_w) = sys.pipe().at(Step::ReportPipe)?;
    let slot = ExecSlot::default();
    let mut args = BootstrapArgs { sys, plan: p, slot: &slot, report_r, report_w, go_r, go_w };
    // SAFETY: the zygote mapped the bootstrap's stack (16-byte aligned, its top in the
    // plan) and nothing else runs on it; `args` and `slot` live in this frame, which init
    // leaves only by exiting (ending the namespace, the process with it) or after the process
    // has exec'd or exited (the report pipe's end of file).
    let pid = unsafe {
        sys.clone_parked(bootstrap_entry::<S>, p.bootstrap_stack, (&mut args as *mut BootstrapArgs<S>).cast())
    }
    .at(Step::Fork)?;
    sys.close(report_w);
    sys.close(p.out_w);
    // `go_r` stays open here until the bootstrap is let go, so that writing to `go_w` never
    // raises SIGPIPE in init, even if the process died meanwhile.

    send_msg(sys, p.sock, Message::Ready, Some(listener)).at(Step::SendListener)?;
    sys.close(listener);
    // Out of the freezer cgroup, now that the bootstrap was born in it: while the blank waits,
    // so that no cgroup migration (it waits for an RCU grace period) runs during a cold start.
    // If it fails init stays frozen with its function, as it was before this existed.
    if p.init_cgroup >= 0 {
        let _ = sys.write(p.init_cgroup, b"0");
        sys.close(p.init_cgroup);
    }
    // The pool builds blanks at a low priority so they do not slow down the cold starts they
    // are for; what runs from the claim on (attaching the code, the bootstrap) is a cold start.
    sys.set_priority(0).at(Step::Priority)?;

    // Idle until claimed. An end of file means kiln dropped this blank (shutdown, or kiln
    // died): exit, and the kernel ends the namespaces (the parked process with them).
    // SAFETY: the zygote mapped claim_cap bytes at claim_buf and envp_cap slots at
    // envp_buf before the clone; this process has its own copy of them, used by nobody else
    // until the bootstrap is let go, which then only reads them.
    let (buf, envp) = unsafe {
        (
            std::slice::from_raw_parts_mut(p.claim_buf, p.claim_cap),
            std::slice::from_raw_parts_mut(p.envp_buf, p.envp_cap),
        )
    };
    let mut fds = [-1; MAX_FDS];
    let Some(n) = sys.recv_with_fds(p.sock, buf, &mut fds).at(Step::RecvClaim)? else { return Ok(()) };
    // The code tree, then the layers tree when there is one.
    let [code, opt] = fds;
    if code < 0 {
        return Err((Step::RecvClaim, libc::EBADF));
    }
    let msg = buf.get(..n).unwrap_or_default();
    let claim = decode_claim(msg, envp).map_err(|e| (Step::CheckClaim, e))?;
    sys.move_mount(code, c"/var/task").at(Step::AttachCode)?;
    sys.close(code);
    // The layers, when the function has any, in the same way at /opt.
    if opt >= 0 {
        sys.move_mount(opt, c"/opt").at(Step::AttachOpt)?;
        sys.close(opt);
    }
    if claim.tmp_mb != 0 {
        let mut opts = [0u8; 24];
        tmp_size_opts(&mut opts, claim.tmp_mb);
        let opts = CStr::from_bytes_until_nul(&opts).map_err(|_| (Step::ResizeTmp, libc::EINVAL))?;
        sys.mount(None, c"/tmp", None, libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV, Some(opts))
            .at(Step::ResizeTmp)?;
    }
    sys.sethostname(claim.hostname).at(Step::Hostname)?;
    write_etc_files(sys, &etc_files, claim.hostname)?;
    let exe = CStr::from_bytes_with_nul(claim.exe).map_err(|_| (Step::CheckClaim, libc::EINVAL))?;
    let argv = [exe.as_ptr(), null()];
    slot.exe.set(exe.as_ptr());
    slot.argv.set(argv.as_ptr());
    slot.envp.set(p.envp_buf.cast_const());

    // It was born with the blank's low priority; it runs for the cold start now.
    // A failure leaves it at the blank's priority, which is no reason to fail the call.
    let _ = sys.set_priority_of(pid, 0);
    // "Started" before the process is let go, and not once its `execve` is known to have
    // worked: kiln goes on with the environment while the bootstrap execs, and init, with
    // nothing left to do but wait, sleeps as soon as it has let the process go, on the CPU it
    // woke it on (and is not woken by the exec, the report pipe's end of file, on the CPU the
    // bootstrap is starting on). Whether the exec worked is read from the report pipe once the
    // process has ended (it is then at its end of file, or holds why the exec failed) and
    // sent as the bootstrap's fate, as it always was. Init's frame, which the process reads
    // until it has exec'd, stays alive below `watch`.
    let sfd = sys.signalfd_child().at(Step::Watch)?;
    send_msg(sys, p.sock, Message::Started, None).at(Step::SendStarted)?;
    sys.unpark(go_w).at(Step::Unpark)?;
    sys.close(go_w);
    sys.close(go_r);

    let Some(status) = watch(sys, p, pid, sfd)? else {
        // kiln is gone: thaw what it may have frozen, and exit, which ends the namespace.
        if p.thaw_fd >= 0 {
            let _ = sys.write(p.thaw_fd, p.thaw_value);
        }
        return Ok(());
    };
    // The report pipe closed on a successful exec (CLOEXEC) or carries why it failed; every
    // writer is gone now, so this read does not block.
    let mut report = [0u8; size_of::<Msg>()];
    let n = sys.read(report_r, &mut report);
    sys.close(report_r);
    let exec_errno = match n.ok().and_then(|n| report.get(..n)).and_then(Msg::from_bytes).map(Message::from_wire) {
        Some(Some(Message::SetupFailed { step: Step::Exec, errno })) => Some(errno),
        Some(Some(Message::SetupFailed { step, errno })) => return Err((step, errno)),
        Some(_) => return Err((Step::Fork, libc::EPROTO)),
        None => None,
    };
    let end = match exec_errno {
        Some(e) => Message::ExecFailed(e),
        None if libc::WIFSIGNALED(status) => Message::Signaled(libc::WTERMSIG(status)),
        None => Message::Exited(libc::WEXITSTATUS(status)),
    };
    // Nothing more to do if kiln cannot hear it: the reaper sees init's own status.
    let _ = send_msg(sys, p.sock, end, None);
    // Returning exits PID 1, and the kernel kills whatever is left in the namespace.
    Ok(())
}

/// Reaps every process until the bootstrap ends (orphans of the namespace land here too) and
/// returns its wait status; `None` as soon as kiln's end of the socket closes (kiln exited or
/// was killed: nothing will ever destroy this environment otherwise). Init itself is never
/// frozen (it is not in the freezer cgroup), so this holds while the function is frozen.
/// `sfd` is the `SIGCHLD` signalfd ([`Sys::signalfd_child`]).
fn watch<S: Sys>(sys: &S, p: &Plan, pid: libc::pid_t, sfd: c_int) -> Result<Option<c_int>, Fail> {
    loop {
        loop {
            match sys.wait_any() {
                Ok(Some((r, status))) if r == pid => {
                    sys.close(sfd);
                    return Ok(Some(status));
                }
                Err(libc::ECHILD) => {
                    sys.close(sfd);
                    return Ok(Some(0));
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let mut fds = [
            libc::pollfd { fd: p.sock, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: sfd, events: libc::POLLIN, revents: 0 },
        ];
        match sys.poll(&mut fds) {
            Ok(()) => {}
            Err(libc::EINTR) => continue,
            Err(e) => return Err((Step::Watch, e)),
        }
        let [sock, sig] = fds;
        if sig.revents != 0 {
            let mut info = [0u8; 128];
            while sys.read(sfd, &mut info).is_ok_and(|n| n > 0) {}
        }
        if sock.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            return Ok(None);
        }
        if sock.revents & libc::POLLIN != 0 {
            // kiln sends nothing after the claim: only its end of file is expected here.
            let mut buf = [0u8; 64];
            match sys.recv_nowait(p.sock, &mut buf) {
                Ok(0) => return Ok(None),
                Err(libc::EAGAIN | libc::EINTR) | Ok(_) => {}
                Err(_) => return Ok(None),
            }
        }
    }
}

/// Text written into a fixed buffer without allocating, for code that runs between a clone and
/// an `execve` (init, the zygote). What does not fit is dropped; callers size buffers for the
/// largest values.
pub(crate) struct FixedText<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl<'a> FixedText<'a> {
    pub(crate) fn new(out: &'a mut [u8]) -> Self {
        Self { out, len: 0 }
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            if let Some(o) = self.out.get_mut(self.len) {
                *o = b;
                self.len += 1;
            }
        }
        self
    }

    /// `n` in decimal.
    pub(crate) fn decimal(&mut self, n: u32) -> &mut Self {
        let mut digits = [0u8; 10];
        let mut at = digits.len();
        let mut v = n;
        loop {
            at -= 1;
            if let Some(d) = digits.get_mut(at) {
                *d = b'0' + (v % 10) as u8;
            }
            v /= 10;
            if v == 0 || at == 0 {
                break;
            }
        }
        self.bytes(digits.get(at..).unwrap_or_default())
    }

    /// The bytes written so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// Writes `size=<mb>m` and a NUL into `out` (24 bytes hold any u32).
fn tmp_size_opts(out: &mut [u8; 24], mb: u32) {
    FixedText::new(out).bytes(b"size=").decimal(mb).bytes(b"m\0");
}

/// The blank: identity of init, cgroups, and the new root with an empty `/var/task`.
fn blank<S: Sys>(sys: &S, p: &Plan) -> Result<EtcFiles, Fail> {
    // The requester's priority, first (the zygote's own stays as it is).
    let _ = sys.set_priority(p.nice);
    // kiln's signal handlers are copied into the child: reset them, and the mask.
    sys.reset_signal_handlers();
    sys.set_sigmask(SigMask::Empty).at(Step::Signals)?;
    sys.umask(0);
    // Init holds a copy of kiln's memory: make it unreadable through /proc and ptrace even
    // for processes of the same uid (defence in depth; the function runs as another uid).
    let _ = sys.set_dumpable(false);

    // Copies of kiln's descriptors (client sockets, the database, ...) must not live on here.
    close_all_but(sys, p.keep)?;
    // 0, 1, 2 are now free; fill them so later descriptors never land there.
    let null_fd = sys.open(c"/dev/null", libc::O_RDWR, 0).at(Step::DevNull)?;
    for fd in 0..3 {
        if fd != null_fd {
            sys.dup2(null_fd, fd).at(Step::DevNull)?;
        }
    }

    // Join the environment's cgroups before allocating anything there: memory is charged to
    // the cgroup of the process that touches it.
    for &fd in p.cgroup_procs {
        if sys.write(fd, b"0").at(Step::Cgroups)? != 1 {
            return Err((Step::Cgroups, libc::EIO));
        }
        sys.close(fd);
    }
    // A cgroup namespace rooted at the environment's cgroups hides the host's hierarchy; the
    // other namespaces are made here too, so their kernel memory is the environment's.
    sys.unshare(libc::CLONE_NEWCGROUP | UNSHARED).at(Step::CgroupNs)?;

    // Mounts: nothing we do may propagate back to the host.
    sys.mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None).at(Step::Private)?;
    sys.mount(
        Some(c"tmpfs"),
        p.root,
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(c"size=1m,nr_inodes=512,mode=755"),
    )
    .at(Step::RootTmpfs)?;
    sys.chdir(p.root).at(Step::EnterRoot)?;
    // From here on every path is relative to the new root.
    for dir in [c"usr", c"etc", c"var", c"var/task", c"opt", c"tmp", c"proc", c"dev"] {
        sys.mkdir(dir, 0o755).at(Step::RootDirs)?;
    }
    for e in p.root_entries {
        match e {
            RootEntry::Symlink { name, target } => sys.symlink(target, name).at(Step::RootDirs)?,
            RootEntry::BindReadOnly { source, name } => {
                sys.mkdir(name, 0o755).at(Step::RootDirs)?;
                bind_ro(sys, source, name)?;
            }
            RootEntry::Dir { name } => sys.mkdir(name, 0o755).at(Step::RootDirs)?,
        }
    }
    bind_ro(sys, c"/usr", c"usr")?;
    bind_ro(sys, c"/etc", c"etc")?;
    let etc_files = private_etc_files(sys)?;
    // `var/task` stays an empty directory until a claim attaches the code there.
    sys.mount(Some(c"tmpfs"), c"tmp", Some(c"tmpfs"), libc::MS_NOSUID | libc::MS_NODEV, Some(p.tmp_opts))
        .at(Step::Tmp)?;
    // We are PID 1 of the new pid namespace, so this proc shows only the environment; with
    // hidepid=2 the function does not even see init (root), only its own processes.
    sys.mount(
        Some(c"proc"),
        c"proc",
        Some(c"proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some(c"hidepid=2"),
    )
    .at(Step::Proc)?;
    // `/dev` is a directory of the root's tmpfs (one superblock less per environment, see
    // [`private_etc_files`]), bound onto itself below so that its mount, unlike the root's,
    // lets the device nodes be opened.
    for (name, (major, minor)) in [
        (c"dev/null", (1, 3)),
        (c"dev/zero", (1, 5)),
        (c"dev/full", (1, 7)),
        (c"dev/random", (1, 8)),
        (c"dev/urandom", (1, 9)),
        (c"dev/tty", (5, 0)),
    ] {
        sys.mknod_char(name, 0o666, major, minor).at(Step::DevNodes)?;
    }
    for (name, target) in [
        (c"dev/fd", c"/proc/self/fd"),
        (c"dev/stdin", c"/proc/self/fd/0"),
        (c"dev/stdout", c"/proc/self/fd/1"),
        (c"dev/stderr", c"/proc/self/fd/2"),
    ] {
        sys.symlink(target, name).at(Step::DevNodes)?;
    }
    sys.mount(Some(c"dev"), c"dev", None, libc::MS_BIND, None).at(Step::Dev)?;
    sys.mount(
        None,
        c"dev",
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC,
        None,
    )
    .at(Step::Dev)?;

    // pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves
    // only the new root (see pivot_root(2)). The read-only remount comes after: it is of the
    // new root, once it is `/`.
    sys.pivot_root(c".", c".").at(Step::Pivot)?;
    sys.detach_mount(c".").at(Step::Detach)?;
    sys.chdir(c"/").at(Step::Detach)?;
    sys.mount(
        None,
        c"/",
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        None,
    )
    .at(Step::RemountRo)?;

    Ok(etc_files)
}

/// What init hands the bootstrap's process (through `clone`'s argument).
struct BootstrapArgs<'a, 'p, S> {
    sys: &'a S,
    plan: &'a Plan<'p>,
    slot: &'a ExecSlot,
    report_r: c_int,
    report_w: c_int,
    go_r: c_int,
    go_w: c_int,
}

/// What to exec, filled in by init from the claim before it lets the parked bootstrap go (the
/// two share their memory); the pointers reach into init's frame and claim buffer.
struct ExecSlot {
    exe: std::cell::Cell<*const c_char>,
    /// Null-terminated.
    argv: std::cell::Cell<*const *const c_char>,
    /// Null-terminated.
    envp: std::cell::Cell<*const *const c_char>,
}

impl Default for ExecSlot {
    fn default() -> Self {
        ExecSlot {
            exe: std::cell::Cell::new(null()),
            argv: std::cell::Cell::new(null()),
            envp: std::cell::Cell::new(null()),
        }
    }
}

/// Entry point of the bootstrap's process (`clone` with `CLONE_VM`, started parked). Returns
/// (which exits the process with that status) only when it could not exec, or when init let
/// go of it without a claim.
extern "C" fn bootstrap_entry<S: Sys>(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` points at init's BootstrapArgs, alive until this process has exec'd or
    // exited (see `init`); we only read it.
    let a = unsafe { &*arg.cast::<BootstrapArgs<S>>() };
    let sys = a.sys;
    // Closing descriptors here affects only our copy of the table (no CLONE_FILES).
    sys.close(a.report_r);
    sys.close(a.go_w);
    sys.close(a.plan.sock);
    let result = match prepare_bootstrap(sys, a.plan) {
        Ok(()) => match sys.park(a.go_r) {
            Ok(true) => exec_bootstrap(sys, a.slot),
            // Init let go without a claim: the blank is being dropped.
            Ok(false) => return 0,
            Err(e) => Err((Step::Unpark, e)),
        },
        Err(fail) => Err(fail),
    };
    let Err((step, errno)) = result else { return 127 };
    let _ = sys.write(a.report_w, Message::SetupFailed { step, errno }.to_wire().as_bytes());
    127
}

/// What the bootstrap inherits from init, set once while the blank is built rather than on every
/// cold start: rlimits, an empty capability bounding set and ambient set, no supplementary
/// groups, and no_new_privs. None of it limits init, which keeps its effective capabilities for
/// the claim (mounts, hostname) and never execs.
fn inheritable_limits<S: Sys>(sys: &S, p: &Plan) -> Result<(), Fail> {
    sys.set_rlimit(Rlimit::Nofile, p.nofile).at(Step::Rlimit)?;
    // A core dump would be written by the host's core_pattern handler: none.
    sys.set_rlimit(Rlimit::Core, 0).at(Step::Rlimit)?;
    // Dropping from the bounding set needs CAP_SETPCAP, which init has.
    sys.clear_ambient_caps().at(Step::Capbset)?;
    for cap in 0..=p.cap_last {
        sys.drop_bounding_cap(cap).at(Step::Capbset)?;
    }
    sys.clear_groups().at(Step::Setgroups)?;
    // Before the seccomp filter the bootstrap installs: without CAP_SYS_ADMIN the kernel
    // accepts a filter only from a process with no_new_privs.
    sys.set_no_new_privs().at(Step::NoNewPrivs)?;
    Ok(())
}

/// The bootstrap's process from clone to its parking, while the blank is built: everything
/// that does not depend on the claim, seccomp last. What follows under the filter (waiting for
/// the claim, `chdir`, `execve`) is what the filter allows any function to do.
fn prepare_bootstrap<S: Sys>(sys: &S, p: &Plan) -> Result<(), Fail> {
    // The signal mask init blocked SIGCHLD in.
    sys.set_sigmask(SigMask::Empty).at(Step::Signals)?;
    sys.setsid().at(Step::Setsid)?;
    sys.dup2(p.out_w, 1).at(Step::Output)?;
    sys.dup2(p.out_w, 2).at(Step::Output)?;
    // The rlimits, the empty bounding set and groups, and no_new_privs come from init
    // (`inheritable_limits`). The gid first: once the uid has changed, the gid cannot. The uid
    // change clears the permitted and effective sets.
    sys.setresgid(p.gid).at(Step::Setgid)?;
    sys.setresuid(p.uid).at(Step::Setuid)?;
    enter_user_namespace(sys, p)?;
    // The inheritable set survives a uid change; clear everything.
    sys.clear_capabilities().at(Step::Capset)?;
    // Non-dumpable again while parked: the process shares init's memory (a copy of kiln's)
    // under the function's uid until it execs, which sets it dumpable as for any exec.
    sys.set_dumpable(false).at(Step::Userns)?;
    // Last: the filter refuses much of what the steps above need.
    for f in p.filters {
        sys.install_seccomp(f).at(Step::Seccomp)?;
    }
    Ok(())
}

/// The bootstrap's process once let go: into the code init attached, and exec; returns only
/// with what failed.
fn exec_bootstrap<S: Sys>(sys: &S, slot: &ExecSlot) -> Result<(), Fail> {
    // After the claim: /var/task is the code only once init has attached it.
    sys.chdir(c"/var/task").at(Step::Chdir)?;
    let exe = slot.exe.get();
    if exe.is_null() {
        return Err((Step::CheckClaim, libc::EINVAL));
    }
    // SAFETY: init set `exe` from the claim (a NUL-terminated string in its claim buffer)
    // before letting us go, and keeps it alive until we exec or exit.
    let exe = unsafe { CStr::from_ptr(exe) };
    // SAFETY: likewise `argv`, a null-terminated array of two pointers in init's frame.
    let argv = unsafe { std::slice::from_raw_parts(slot.argv.get(), 2) };
    Err((Step::Exec, sys.execve(exe, argv, slot.envp.get())))
}

/// Makes the bootstrap's host uid and gid appear as `ns_uid`/`ns_gid`: a user namespace of its
/// own (an unprivileged process may map its own ids, and only them), entered after the uid
/// change. The capabilities it gets in that namespace are cleared right after (`capset`) and
/// could act on nothing anyway: every other namespace of the environment belongs to the host's
/// user namespace. Setting groups stays denied in it.
fn enter_user_namespace<S: Sys>(sys: &S, p: &Plan) -> Result<(), Fail> {
    let step = Step::Userns;
    // The uid change made the process non-dumpable, which makes /proc/self root's.
    sys.set_dumpable(true).at(step)?;
    sys.unshare(libc::CLONE_NEWUSER).at(step)?;
    let write_file = |path: &CStr, text: &[u8]| -> Result<(), Fail> {
        let fd = sys.open(path, libc::O_WRONLY | libc::O_CLOEXEC, 0).at(step)?;
        let n = sys.write(fd, text);
        sys.close(fd);
        if n.at(step)? != text.len() {
            return Err((step, libc::EIO));
        }
        Ok(())
    };
    let mut line = [0u8; 40];
    write_file(c"/proc/self/setgroups", b"deny")?;
    let n = id_map_line(&mut line, p.ns_uid, p.uid);
    write_file(c"/proc/self/uid_map", line.get(..n).unwrap_or_default())?;
    let n = id_map_line(&mut line, p.ns_gid, p.gid);
    write_file(c"/proc/self/gid_map", line.get(..n).unwrap_or_default())?;
    // A new user namespace starts with a full bounding set: empty it again (the capabilities
    // it gave us include CAP_SETPCAP there).
    for cap in 0..=p.cap_last {
        sys.drop_bounding_cap(cap).at(step)?;
    }
    Ok(())
}

/// Writes `"<inside> <outside> 1\n"` into `out`; returns its length.
fn id_map_line(out: &mut [u8; 40], inside: u32, outside: u32) -> usize {
    FixedText::new(out).decimal(inside).bytes(b" ").decimal(outside).bytes(b" 1\n").len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_user_line_is_the_function_uid_and_gid() {
        let line = std::str::from_utf8(FUNCTION_USER_LINE).unwrap();
        let fields: Vec<&str> = line.trim_end().split(':').collect();
        assert_eq!(fields.len(), 7, "{line}");
        assert_eq!(fields[2], super::super::FUNCTION_UID.to_string());
        assert_eq!(fields[3], super::super::FUNCTION_GID.to_string());
        assert!(line.ends_with('\n'));
    }

    #[test]
    fn id_map_lines_are_single_ranges() {
        let mut out = [0u8; 40];
        let n = id_map_line(&mut out, 993, 1_073_807_360);
        assert_eq!(&out[..n], b"993 1073807360 1\n");
        let n = id_map_line(&mut out, 0, u32::MAX);
        assert_eq!(&out[..n], b"0 4294967295 1\n");
    }

    #[test]
    fn tmp_size_opts_are_nul_terminated_text() {
        for (mb, text) in [(0, "size=0m"), (7, "size=7m"), (512, "size=512m"), (u32::MAX, "size=4294967295m")] {
            let mut out = [0xffu8; 24];
            tmp_size_opts(&mut out, mb);
            let s = CStr::from_bytes_until_nul(&out).unwrap();
            assert_eq!(s.to_str().unwrap(), text);
        }
    }
}

/// Init's steps run with [`RecordingSys`]: the order of the calls, not their effect.
#[cfg(test)]
mod order {
    use super::*;
    use crate::linux::protocol::{encode_claim, set_claim_tmp_mb, CLAIM_MAX, MAX_ENV_VARS};
    use crate::linux::sys::fake::RecordingSys;
    use std::ffi::CString;

    const UID: u32 = 1_073_807_360;
    const CODE_FD: c_int = 42;

    /// Runs the whole of init (blank, claim, bootstrap, reaping) over the fake and returns its
    /// calls, the bootstrap's included where they happen (the fake runs it on a thread of its
    /// own: its steps until it parks at the clone, the rest when init lets it go).
    fn run_init() -> Vec<String> {
        let mut claim = encode_claim(b"kiln-env", b"/var/task/bootstrap", [("A", "b")].into_iter()).unwrap();
        set_claim_tmp_mb(&mut claim, 256);
        let sys = RecordingSys::with_claim(claim, CODE_FD);
        let root = CString::new("/scratch/root").unwrap();
        let tmp_opts = CString::new("size=512m").unwrap();
        let entries = [
            RootEntry::Symlink { name: CString::new("bin").unwrap(), target: CString::new("usr/bin").unwrap() },
            RootEntry::BindReadOnly {
                source: CString::new("/srv/runtime").unwrap(),
                name: CString::new("var/runtime").unwrap(),
            },
        ];
        let mut claim_buf = vec![0u8; CLAIM_MAX];
        let mut envp_buf: Vec<*const c_char> = vec![null(); MAX_ENV_VARS + 1];
        let filters = [
            libc::sock_fprog { len: 7, filter: std::ptr::null_mut() },
            libc::sock_fprog { len: 9, filter: std::ptr::null_mut() },
        ];
        let plan = Plan {
            keep: &[5, 6, 9],
            cgroup_procs: &[5, 6],
            init_cgroup: 9,
            thaw_fd: -1,
            thaw_value: b"",
            sock: 7,
            out_w: 8,
            root: &root,
            root_entries: &entries,
            tmp_opts: &tmp_opts,
            claim_buf: claim_buf.as_mut_ptr(),
            claim_cap: claim_buf.len(),
            envp_buf: envp_buf.as_mut_ptr(),
            envp_cap: envp_buf.len(),
            bootstrap_stack: std::ptr::null_mut(),
            filters: &filters,
            uid: UID,
            gid: UID,
            ns_uid: 993,
            ns_gid: 993,
            nofile: 1024,
            cap_last: 40,
            nice: 10,
        };
        init(&sys, &plan).unwrap();
        sys.calls()
    }

    fn pos(calls: &[String], prefix: &str) -> usize {
        calls.iter().position(|c| c.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix:?} in {calls:#?}"))
    }

    fn last_pos(calls: &[String], prefix: &str) -> usize {
        calls.iter().rposition(|c| c.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix:?} in {calls:#?}"))
    }

    #[test]
    fn gid_changes_before_uid() {
        let calls = run_init();
        assert!(pos(&calls, "setresgid ") < pos(&calls, "setresuid "), "{calls:#?}");
        assert!(calls.contains(&format!("setresgid {UID}")) && calls.contains(&format!("setresuid {UID}")));
        // Groups are dropped (by init, inherited) before either.
        assert!(pos(&calls, "clear_groups") < pos(&calls, "setresgid "));
    }

    #[test]
    fn no_new_privs_comes_before_the_seccomp_filters() {
        let calls = run_init();
        assert!(pos(&calls, "no_new_privs") < pos(&calls, "seccomp "), "{calls:#?}");
        assert_eq!(calls.iter().filter(|c| c.starts_with("seccomp ")).count(), 2);
    }

    #[test]
    fn seccomp_is_the_last_step_before_the_bootstrap_parks() {
        let calls = run_init();
        // The bootstrap's process is prepared while the blank is built and parks right after
        // its filters; once let go it only enters /var/task and execs, both of which the
        // filter allows any function.
        let park = pos(&calls, "park ");
        assert_eq!(calls[park - 1], "seccomp 9", "{calls:#?}");
        assert_eq!(calls[park - 2], "seccomp 7", "{calls:#?}");
        let exec = pos(&calls, "execve /var/task/bootstrap");
        assert_eq!(calls[exec - 1], "chdir /var/task", "{calls:#?}");
        assert!(pos(&calls, "unpark ") < exec - 1, "{calls:#?}");
        // Every other step of the bootstrap comes before the filters: identity, user
        // namespace, capabilities.
        let first_filter = pos(&calls, "seccomp ");
        for step in ["setresuid ", "unshare 0x10000000", "clear_capabilities", "dup2 8 2", "sigmask Empty"] {
            assert!(last_pos(&calls, step) < first_filter, "{step} after the filter: {calls:#?}");
        }
        // Parked non-dumpable: it shares init's memory under the function's uid.
        assert_eq!(calls[first_filter - 1], "dumpable false", "{calls:#?}");
    }

    #[test]
    fn the_root_is_pivoted_before_it_is_made_read_only() {
        let calls = run_init();
        let pivot = pos(&calls, "pivot_root . .");
        let remount = pos(&calls, "mount - -> / (remount ro)");
        assert!(pivot < remount, "{calls:#?}");
        assert_eq!(calls[pivot + 1], "detach_mount .");
        // Everything of the new root is built before the pivot, in the new root.
        assert!(pos(&calls, "chdir /scratch/root") < pos(&calls, "mkdir usr"));
        assert!(last_pos(&calls, "mknod ") < pivot);
        assert!(pos(&calls, "make_tree_read_only var/runtime") < pivot);
    }

    #[test]
    fn the_private_passwd_is_written_then_bound_read_only_over_the_hosts() {
        let calls = run_init();
        let etc = pos(&calls, "mount /etc -> etc");
        let read = pos(&calls, "open etc/passwd");
        let write = pos(&calls, "open .kiln-etc/passwd");
        let bind = pos(&calls, "mount .kiln-etc/passwd -> etc/passwd");
        assert!(etc < read && read < write && write < bind, "{calls:#?}");
        assert_eq!(calls[bind + 1], "mount - -> etc/passwd (remount ro)");
        assert_eq!(calls[bind + 2], "unlink .kiln-etc/passwd");
        assert!(bind < pos(&calls, "detach_mount .kiln-etc"), "{calls:#?}");
    }

    #[test]
    fn the_claim_is_attached_after_the_blank_is_announced() {
        let calls = run_init();
        let ready = pos(&calls, "send 7 Some(Ready) [");
        assert!(pos(&calls, "no_new_privs") < ready, "inherited limits are part of the blank");
        // The bootstrap's process is part of the blank too, parked before it is announced, and
        // init leaves the freezer cgroup it was born in while the blank waits.
        assert!(pos(&calls, "park ") < ready, "{calls:#?}");
        assert!(pos(&calls, "clone_parked") < pos(&calls, "write 9"));
        assert!(pos(&calls, "write 9") < pos(&calls, "recv 7"));
        assert!(ready < pos(&calls, "move_mount 42 /var/task"));
        // The claim lets it go only once the code, /tmp and the hostname are in place.
        let unpark = pos(&calls, "unpark ");
        assert!(pos(&calls, "move_mount 42 /var/task") < unpark);
        assert!(pos(&calls, "mount - -> /tmp") < unpark);
        assert!(pos(&calls, "sethostname kiln-env") < unpark);
        assert!(pos(&calls, "setpriority 2 0") < unpark);
        // "Started" just before it is let go (its exec is not waited for); its end last,
        // after the exec report is read.
        let started = pos(&calls, "send 7 Some(Started)");
        assert!(pos(&calls, "setpriority 2 0") < started);
        assert!(pos(&calls, "signalfd") < started);
        assert!(started < unpark);
        assert!(unpark < pos(&calls, "wait_any"));
        assert!(pos(&calls, "wait_any") < last_pos(&calls, "read "), "{calls:#?}");
        assert!(last_pos(&calls, "read ") < pos(&calls, "send 7 Some(Exited(0))"));
    }

    #[test]
    fn init_takes_its_priority_first_and_makes_its_namespaces_inside_its_cgroups() {
        let calls = run_init();
        assert_eq!(calls[0], "set_priority 10", "{calls:#?}");
        // Every namespace but the pid one (the clone's) in one call, once init has joined
        // the cgroups (fds 5 and 6), so the kernel memory they take is the environment's,
        // and before anything is mounted.
        let unshare = pos(&calls, &format!("unshare {:#x}", libc::CLONE_NEWCGROUP | UNSHARED));
        assert!(last_pos(&calls, "write 6") < unshare, "{calls:#?}");
        assert!(unshare < pos(&calls, "mount "), "{calls:#?}");
        const { assert!(UNSHARED & libc::CLONE_NEWNET != 0 && UNSHARED & libc::CLONE_NEWNS != 0) };
        const { assert!(UNSHARED & libc::CLONE_NEWIPC != 0 && UNSHARED & libc::CLONE_NEWUTS != 0) };
    }

    #[test]
    fn inherited_descriptors_are_closed_around_the_kept_ones() {
        let calls = run_init();
        let closes: Vec<&String> = calls.iter().filter(|c| c.starts_with("close_range")).collect();
        assert_eq!(closes, ["close_range 0 4", "close_range 7 8", "close_range 10 4294967295"]);
    }
}
