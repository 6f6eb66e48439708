//! The code that runs in the cloned child: the environment's init and, below it, the bootstrap
//! until `execve`.
//!
//! Init lives in two phases. First it builds a *blank* environment (namespaces joined, root
//! pivoted with an empty `/var/task`, loopback up, Runtime API listener bound and handed to
//! kiln) and blocks on its socket. Then kiln *claims* it with one message ([`ClaimHeader`] and
//! its strings) carrying the code directory as a detached, read-only mount (`SCM_RIGHTS`): init
//! attaches it at `/var/task`, resizes `/tmp`, sets the hostname, and starts the bootstrap.
//! Everything the claim needs to land in (receive buffer, `envp` array) is allocated by the
//! parent before the clone.
//!
//! kiln is a multi-threaded process. The child of a `clone` gets a copy of its memory in
//! whatever state the other threads left it: a malloc arena may be locked, a `Mutex` held, a
//! glibc thread list full of threads that do not exist here. So everything below runs on data
//! the parent prepared (a [`Plan`] of C strings, pointer arrays and BPF programs) and calls only
//! raw system calls: no allocation, no locks, no panics (no indexing, no `format!`), no glibc
//! function that broadcasts to threads (`setuid`, `setgroups` go through `syscall`), and no
//! glibc `fork` (its atfork handlers take the malloc locks): the bootstrap is forked with a raw
//! `clone`.
//!
//! Failures are reported to the parent as a [`Msg`] carrying the failed step and `errno`.

use libc::{c_char, c_int, c_long, c_uint, c_void};
use std::ffi::CStr;
use std::mem::{size_of, zeroed};
use std::ptr::{null, null_mut};

/// Every step the child takes (in order, but for the last, added later); the index is what
/// travels in a [`Msg`].
pub(crate) const STEP_NAMES: &[&str] = &[
    "reset signals",
    "close inherited descriptors",
    "open /dev/null",
    "join cgroups",
    "unshare cgroup namespace",
    "make mounts private",
    "mount root tmpfs",
    "enter new root",
    "create root directories",
    "bind host directory",
    "mount /tmp",
    "mount /proc",
    "mount /dev",
    "create device nodes",
    "pivot_root",
    "detach old root",
    "remount root read-only",
    "bring loopback up",
    "bind runtime api listener",
    "send runtime api listener",
    "receive claim",
    "check claim",
    "attach code at /var/task",
    "resize /tmp",
    "set hostname",
    "create exec report pipe",
    "fork bootstrap",
    "report bootstrap started",
    "new session",
    "redirect output",
    "enter /var/task",
    "set rlimits",
    "drop capability bounding set",
    "drop supplementary groups",
    "set gid",
    "set uid",
    "clear capabilities",
    "set no_new_privs",
    "install seccomp filter",
    "exec bootstrap",
    "reset scheduling priority",
    "private /etc/hosts and /etc/hostname",
    "watch kiln and the bootstrap",
    "enter user namespace",
    "attach layers at /opt",
];

/// Indices into [`STEP_NAMES`].
pub(crate) mod step {
    pub const SIGNALS: u32 = 0;
    pub const CLOSE_FDS: u32 = 1;
    pub const DEV_NULL: u32 = 2;
    pub const CGROUPS: u32 = 3;
    pub const CGROUP_NS: u32 = 4;
    pub const PRIVATE: u32 = 5;
    pub const ROOT_TMPFS: u32 = 6;
    pub const ENTER_ROOT: u32 = 7;
    pub const ROOT_DIRS: u32 = 8;
    pub const BIND: u32 = 9;
    pub const TMP: u32 = 10;
    pub const PROC: u32 = 11;
    pub const DEV: u32 = 12;
    pub const DEV_NODES: u32 = 13;
    pub const PIVOT: u32 = 14;
    pub const DETACH: u32 = 15;
    pub const REMOUNT_RO: u32 = 16;
    pub const LOOPBACK: u32 = 17;
    pub const LISTENER: u32 = 18;
    pub const SEND_LISTENER: u32 = 19;
    pub const RECV_CLAIM: u32 = 20;
    pub const CHECK_CLAIM: u32 = 21;
    pub const ATTACH_CODE: u32 = 22;
    pub const RESIZE_TMP: u32 = 23;
    pub const HOSTNAME: u32 = 24;
    pub const REPORT_PIPE: u32 = 25;
    pub const FORK: u32 = 26;
    pub const SEND_STARTED: u32 = 27;
    pub const SETSID: u32 = 28;
    pub const OUTPUT: u32 = 29;
    pub const CHDIR: u32 = 30;
    pub const RLIMIT: u32 = 31;
    pub const CAPBSET: u32 = 32;
    pub const SETGROUPS: u32 = 33;
    pub const SETGID: u32 = 34;
    pub const SETUID: u32 = 35;
    pub const CAPSET: u32 = 36;
    pub const NO_NEW_PRIVS: u32 = 37;
    pub const SECCOMP: u32 = 38;
    pub const EXEC: u32 = 39;
    pub const PRIORITY: u32 = 40;
    pub const ETC_FILES: u32 = 41;
    pub const WATCH: u32 = 42;
    pub const USERNS: u32 = 43;
    pub const ATTACH_OPT: u32 = 44;
}

/// What the init tells the parent over the socket pair.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Msg {
    pub kind: u32,
    pub step: u32,
    pub value: i32,
}

/// The blank environment is ready to be claimed; the runtime API listener travels with this
/// message.
pub(crate) const MSG_READY: u32 = 1;
/// Setting up failed at `step` with errno `value`.
pub(crate) const MSG_SETUP_FAILED: u32 = 2;
/// The bootstrap exited with status `value`.
pub(crate) const MSG_EXITED: u32 = 3;
/// The bootstrap was killed by signal `value`.
pub(crate) const MSG_SIGNALED: u32 = 4;
/// The bootstrap could not be executed (errno `value`).
pub(crate) const MSG_EXEC_FAILED: u32 = 5;
/// After a claim: the bootstrap has been forked (and has exec'd, or failed to; that failure
/// comes later as [`MSG_EXEC_FAILED`]).
pub(crate) const MSG_STARTED: u32 = 6;

/// The one message kiln sends init: which code to attach and what to run. The strings follow
/// the header in this order: hostname (`hostname_len` bytes, no NUL), the bootstrap's absolute
/// path inside the environment (`exe_len` bytes including its NUL), then `env_count`
/// `NAME=value` strings, each NUL-terminated (`env_len` bytes in all). The code directory
/// travels as a detached mount (`SCM_RIGHTS`), followed by the layers directory (attached at
/// `/opt`) when the function has layers.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ClaimHeader {
    /// [`CLAIM_KIND`].
    pub kind: u32,
    /// New size of `/tmp` in MiB; 0 keeps the blank's.
    pub tmp_mb: u32,
    pub hostname_len: u32,
    pub exe_len: u32,
    pub env_count: u32,
    pub env_len: u32,
}

pub(crate) const CLAIM_KIND: u32 = 0x6b69_6c6e;
/// Descriptors a claim carries: the code tree, then optionally the layers tree.
pub(crate) const MAX_FDS: usize = 2;
/// Largest claim message (header included): Lambda allows 4 KB of variables plus kiln's own,
/// so this is generous; a bigger environment is refused before any blank is touched.
pub(crate) const CLAIM_MAX: usize = 64 * 1024;
/// Most variables a claim may carry (the `envp` array init fills has one more slot, for NULL).
pub(crate) const MAX_ENV_VARS: usize = 4096;
/// Longest hostname (`HOST_NAME_MAX`).
pub(crate) const HOSTNAME_MAX: usize = 64;

/// A claim decoded in place: slices of the receive buffer plus the filled `envp` array.
#[derive(Debug)]
pub(crate) struct Claim<'a> {
    pub tmp_mb: u32,
    pub hostname: &'a [u8],
    /// NUL-terminated.
    pub exe: &'a [u8],
}

/// Checks a claim message and points `envp` at its variables (NULL-terminated). No allocation,
/// no panics: it runs in init. Returns `EINVAL` for a malformed message, `E2BIG` for too many
/// variables.
pub(crate) fn decode_claim<'a>(msg: &'a [u8], envp: &mut [*const c_char]) -> Result<Claim<'a>, i32> {
    let h = size_of::<ClaimHeader>();
    let Some(head) = msg.get(..h) else { return Err(libc::EINVAL) };
    // SAFETY: `head` is exactly size_of::<ClaimHeader>() readable bytes; the header is plain
    // integers, valid for any bit pattern; read_unaligned tolerates any alignment.
    let hdr: ClaimHeader = unsafe { std::ptr::read_unaligned(head.as_ptr().cast()) };
    if hdr.kind != CLAIM_KIND || hdr.hostname_len as usize > HOSTNAME_MAX {
        return Err(libc::EINVAL);
    }
    let (hl, el, vl) = (hdr.hostname_len as usize, hdr.exe_len as usize, hdr.env_len as usize);
    if h.checked_add(hl).and_then(|x| x.checked_add(el)).and_then(|x| x.checked_add(vl)) != Some(msg.len()) {
        return Err(libc::EINVAL);
    }
    let rest = msg.get(h..).unwrap_or_default();
    let (hostname, rest) = rest.split_at_checked(hl).ok_or(libc::EINVAL)?;
    let (exe, vars) = rest.split_at_checked(el).ok_or(libc::EINVAL)?;
    // An absolute path with exactly one NUL, at its end.
    if exe.first() != Some(&b'/') || exe.iter().position(|&b| b == 0) != Some(el.wrapping_sub(1)) {
        return Err(libc::EINVAL);
    }
    if vars.last().is_some_and(|&b| b != 0) {
        return Err(libc::EINVAL);
    }
    let mut count = 0usize;
    let mut start = 0usize;
    for (i, &b) in vars.iter().enumerate() {
        if b != 0 {
            continue;
        }
        let slot = envp.get_mut(count).ok_or(libc::E2BIG)?;
        *slot = vars.get(start..).map_or(null(), |v| v.as_ptr().cast());
        count += 1;
        start = i + 1;
    }
    *envp.get_mut(count).ok_or(libc::E2BIG)? = null();
    if count != hdr.env_count as usize || count > MAX_ENV_VARS {
        return Err(libc::EINVAL);
    }
    Ok(Claim { tmp_mb: hdr.tmp_mb, hostname, exe })
}

/// The port of the Runtime API inside every environment.
pub(crate) const RUNTIME_API_PORT: u16 = 9001;

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

/// Everything the child needs, prepared by the parent before `clone`.
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
}

/// What the bootstrap's process needs from the claim to exec.
struct Exec<'a> {
    exe: &'a CStr,
    /// Null-terminated.
    argv: &'a [*const c_char],
    /// Null-terminated.
    envp: *const *const c_char,
}

type Fail = (u32, i32);

fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot; the child has its own copy.
    unsafe { *libc::__errno_location() }
}

fn check(step: u32, r: c_int) -> Result<c_int, Fail> {
    if r < 0 {
        Err((step, errno()))
    } else {
        Ok(r)
    }
}

fn check_long(step: u32, r: c_long) -> Result<c_long, Fail> {
    if r < 0 {
        Err((step, errno()))
    } else {
        Ok(r)
    }
}

/// Sends one message, optionally with a descriptor (SCM_RIGHTS).
///
/// # Safety
/// `sock` must be a connected socket; `fd`, when given, an open descriptor.
pub(crate) unsafe fn send_msg(sock: c_int, msg: &Msg, fd: Option<c_int>) -> isize {
    // SAFETY: a Msg is plain integers, so its bytes are initialised; the slice lives as long as `msg`.
    let bytes = std::slice::from_raw_parts((msg as *const Msg).cast::<u8>(), size_of::<Msg>());
    send_bytes(sock, bytes, fd.as_slice())
}

/// Sends `bytes` as one datagram, with at most [`MAX_FDS`] descriptors (SCM_RIGHTS).
/// Allocates nothing.
///
/// # Safety
/// `sock` must be a connected socket; every descriptor in `fds` open.
pub(crate) unsafe fn send_bytes(sock: c_int, bytes: &[u8], fds: &[c_int]) -> isize {
    if fds.len() > MAX_FDS {
        return -1;
    }
    let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut c_void, iov_len: bytes.len() };
    // Room for one cmsghdr plus two ints, 8-byte aligned.
    let mut cbuf = [0u64; 4];
    let mut hdr: libc::msghdr = zeroed();
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    if !fds.is_empty() {
        let len = std::mem::size_of_val(fds) as u32;
        hdr.msg_control = cbuf.as_mut_ptr().cast();
        hdr.msg_controllen = libc::CMSG_SPACE(len) as _;
        let c = libc::CMSG_FIRSTHDR(&hdr);
        if !c.is_null() {
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(len) as _;
            for (i, fd) in fds.iter().enumerate() {
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<c_int>().add(i), *fd);
            }
        }
    }
    libc::sendmsg(sock, &hdr, libc::MSG_NOSIGNAL)
}

/// The child's entry point: becomes the environment's init. Never returns.
///
/// # Safety
/// Must only be called in the child of a `clone` with new pid and mount namespaces, with a
/// `plan` whose descriptors and pointers were valid in the parent at the time of the clone.
pub(crate) unsafe fn run(plan: &Plan) -> ! {
    match init(plan) {
        Ok(()) => {}
        Err((step, err)) => {
            let msg = Msg { kind: MSG_SETUP_FAILED, step, value: err };
            send_msg(plan.sock, &msg, None);
            libc::_exit(1);
        }
    }
    libc::_exit(0)
}

unsafe fn mount(
    step: u32,
    src: *const c_char,
    target: *const c_char,
    fstype: *const c_char,
    flags: libc::c_ulong,
    data: *const c_char,
) -> Result<(), Fail> {
    check(step, libc::mount(src, target, fstype, flags, data.cast()))?;
    Ok(())
}

/// Binds the host directory `src` at `dst`, with every mount below it, and makes the whole
/// tree read-only, nosuid and nodev: `mount_setattr` with `AT_RECURSIVE` reaches the host's
/// submounts (a tmpfs under `/usr/local`, Docker's binds of `/etc/hosts`, ...), which a
/// `MS_REMOUNT` of the top mount leaves writable. Raw system calls only: usable in init
/// (blank building) for anything that should appear read-only in every environment.
///
/// # Safety
/// Both paths must be NUL-terminated; `dst` an existing directory (or file, for a file
/// `src`), relative to the cwd or absolute, in the environment's mount namespace.
pub(crate) unsafe fn bind_ro(src: *const c_char, dst: *const c_char) -> Result<(), Fail> {
    mount(step::BIND, src, dst, null(), libc::MS_BIND | libc::MS_REC, null())?;
    let attr = super::MountAttr {
        attr_set: super::MOUNT_ATTR_RDONLY | super::MOUNT_ATTR_NOSUID | super::MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    check_long(
        step::BIND,
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            dst,
            libc::AT_RECURSIVE as c_uint,
            &attr as *const super::MountAttr,
            size_of::<super::MountAttr>(),
        ),
    )?;
    Ok(())
}

/// The environment's own `/etc/hosts` and `/etc/hostname`: descriptors of two files on a
/// small tmpfs that only init can reach, bound read-only over the host's. Init writes the
/// hostname into them at the claim. -1 where the host has no such file (nothing to cover).
struct EtcFiles {
    hosts: c_int,
    hostname: c_int,
}

/// What `/etc/hosts` says before the claim adds the environment's hostname.
const HOSTS_HEAD: &[u8] = b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// Builds [`EtcFiles`]; runs in the new root (cwd) while it is still writable, after `etc` is
/// bound.
unsafe fn private_etc_files() -> Result<EtcFiles, Fail> {
    let dir = c".kiln-etc";
    check(step::ETC_FILES, libc::mkdir(dir.as_ptr(), 0o700))?;
    mount(
        step::ETC_FILES,
        c"tmpfs".as_ptr(),
        dir.as_ptr(),
        c"tmpfs".as_ptr(),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        c"size=16k,nr_inodes=8,mode=700".as_ptr(),
    )?;
    let mut out = EtcFiles { hosts: -1, hostname: -1 };
    for (file, target, slot) in [
        (c".kiln-etc/hosts", c"etc/hosts", &mut out.hosts),
        (c".kiln-etc/hostname", c"etc/hostname", &mut out.hostname),
    ] {
        if libc::access(target.as_ptr(), libc::F_OK) != 0 {
            continue;
        }
        let fd = check(
            step::ETC_FILES,
            libc::open(file.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC, 0o644 as c_uint),
        )?;
        *slot = fd;
        mount(step::ETC_FILES, file.as_ptr(), target.as_ptr(), null(), libc::MS_BIND, null())?;
        mount(
            step::ETC_FILES,
            null(),
            target.as_ptr(),
            null(),
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            null(),
        )?;
    }
    if out.hosts >= 0 && libc::write(out.hosts, HOSTS_HEAD.as_ptr().cast(), HOSTS_HEAD.len()) < 0 {
        return Err((step::ETC_FILES, errno()));
    }
    // The binds keep the tmpfs alive; its own mount goes, so only init's descriptors reach it.
    check(step::ETC_FILES, libc::umount2(dir.as_ptr(), libc::MNT_DETACH))?;
    check(step::ETC_FILES, libc::rmdir(dir.as_ptr()))?;
    Ok(out)
}

/// Writes the claimed hostname into the environment's `/etc/hostname` and `/etc/hosts`, and
/// closes init's descriptors of them.
unsafe fn write_etc_files(files: &EtcFiles, hostname: &[u8]) -> Result<(), Fail> {
    let write_all = |fd: c_int, off: usize, parts: &[&[u8]]| -> Result<(), Fail> {
        let mut off = off as libc::off_t;
        for part in parts {
            let n = libc::pwrite(fd, part.as_ptr().cast(), part.len(), off);
            if n != part.len() as isize {
                return Err((step::ETC_FILES, if n < 0 { errno() } else { libc::EIO }));
            }
            off += n as libc::off_t;
        }
        Ok(())
    };
    if files.hostname >= 0 {
        write_all(files.hostname, 0, &[hostname, b"\n"])?;
        libc::close(files.hostname);
    }
    if files.hosts >= 0 {
        write_all(files.hosts, HOSTS_HEAD.len(), &[b"127.0.0.1\t", hostname, b"\n"])?;
        libc::close(files.hosts);
    }
    Ok(())
}

unsafe fn mkdir(path: &CStr, mode: libc::mode_t) -> Result<(), Fail> {
    check(step::ROOT_DIRS, libc::mkdir(path.as_ptr(), mode))?;
    Ok(())
}

unsafe fn close_all_but(keep: &[c_int]) -> Result<(), Fail> {
    let mut next: u32 = 0;
    for &fd in keep {
        let fd = fd as u32;
        if fd > next {
            close_range(next, fd - 1)?;
        }
        next = fd.saturating_add(1);
    }
    close_range(next, u32::MAX)
}

unsafe fn close_range(first: u32, last: u32) -> Result<(), Fail> {
    let r = libc::syscall(libc::SYS_close_range, first, last, 0u32);
    if r < 0 {
        if errno() != libc::ENOSYS {
            return Err((step::CLOSE_FDS, errno()));
        }
        // Kernels before 5.9: close one by one up to a generous bound.
        let mut fd = first;
        while fd <= last && fd < 65_536 {
            libc::close(fd as c_int);
            fd += 1;
        }
    }
    Ok(())
}

/// Init: build the blank, hand the listener to kiln, wait for the claim, start the bootstrap,
/// then reap until it ends.
unsafe fn init(p: &Plan) -> Result<(), Fail> {
    let etc_files = blank(p)?;
    inheritable_limits(p)?;
    loopback_up()?;
    let listener = listen_runtime_api()?;
    let ready = Msg { kind: MSG_READY, step: 0, value: 0 };
    if send_msg(p.sock, &ready, Some(listener)) < 0 {
        return Err((step::SEND_LISTENER, errno()));
    }
    libc::close(listener);
    // The pool builds blanks at a low priority so they do not slow down the cold starts they
    // are for; what runs from the claim on (attaching the code, the bootstrap) is a cold start.
    check(step::PRIORITY, libc::setpriority(libc::PRIO_PROCESS, 0, 0))?;

    // Idle until claimed. An end of file means kiln dropped this blank (shutdown, or kiln
    // died): exit, and the kernel ends the namespaces.
    let Some(n) = recv_claim(p)? else { return Ok(()) };
    // SAFETY: the parent allocated claim_cap bytes and envp_cap slots for us
    // before the clone; recv_claim wrote n ≤ claim_cap bytes.
    let msg = std::slice::from_raw_parts(p.claim_buf.cast_const(), n.0);
    let envp = std::slice::from_raw_parts_mut(p.envp_buf, p.envp_cap);
    let claim = decode_claim(msg, envp).map_err(|e| (step::CHECK_CLAIM, e))?;
    let (code, opt) = (n.1, n.2);
    check_long(
        step::ATTACH_CODE,
        libc::syscall(
            libc::SYS_move_mount,
            code,
            c"".as_ptr(),
            libc::AT_FDCWD,
            c"/var/task".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        ),
    )?;
    libc::close(code);
    // The layers, when the function has any, in the same way at /opt.
    if opt >= 0 {
        check_long(
            step::ATTACH_OPT,
            libc::syscall(
                libc::SYS_move_mount,
                opt,
                c"".as_ptr(),
                libc::AT_FDCWD,
                c"/opt".as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            ),
        )?;
        libc::close(opt);
    }
    if claim.tmp_mb != 0 {
        let mut opts = [0u8; 24];
        tmp_size_opts(&mut opts, claim.tmp_mb);
        mount(
            step::RESIZE_TMP,
            null(),
            c"/tmp".as_ptr(),
            null(),
            libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV,
            opts.as_ptr().cast(),
        )?;
    }
    check(step::HOSTNAME, libc::sethostname(claim.hostname.as_ptr().cast(), claim.hostname.len()))?;
    write_etc_files(&etc_files, claim.hostname)?;
    let exe = CStr::from_bytes_with_nul(claim.exe).map_err(|_| (step::CHECK_CLAIM, libc::EINVAL))?;
    let argv = [exe.as_ptr(), null()];
    let exec = Exec { exe, argv: &argv, envp: p.envp_buf.cast_const() };

    // The bootstrap. SIGCHLD stays blocked in init from here on, to be read from a signalfd
    // beside kiln's socket; the bootstrap unblocks it before exec.
    let mut chld: libc::sigset_t = zeroed();
    libc::sigemptyset(&mut chld);
    libc::sigaddset(&mut chld, libc::SIGCHLD);
    check(step::WATCH, libc::sigprocmask(libc::SIG_BLOCK, &chld, null_mut()))?;
    let mut report = [0 as c_int; 2];
    check(step::REPORT_PIPE, libc::pipe2(report.as_mut_ptr(), libc::O_CLOEXEC))?;
    let [report_r, report_w] = report;
    // Like posix_spawn: the bootstrap's process shares init's memory (CLONE_VM) on a stack of
    // its own, and init sleeps until it has exec'd or exited (CLONE_VFORK). A plain fork would
    // copy init's address space (a copy of kiln's) only for execve to tear it down again, which
    // costs about a millisecond on a large kiln. Credentials, rlimits, seccomp, the session, the
    // descriptor table and the cwd are per process (no CLONE_THREAD, CLONE_FILES or CLONE_FS),
    // so what the bootstrap changes before exec stays its own.
    let mut args = BootstrapArgs { plan: p, exec: &exec, report_r, report_w };
    let pid = libc::clone(
        bootstrap_entry,
        p.bootstrap_stack,
        libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
        (&mut args as *mut BootstrapArgs).cast(),
    );
    let pid = check(step::FORK, pid)? as libc::pid_t;
    libc::close(report_w);
    libc::close(p.out_w);

    // The report pipe closes on a successful exec (CLOEXEC) or carries why it failed.
    let mut report_msg = Msg::default();
    let n = loop {
        let n = libc::read(report_r, (&mut report_msg as *mut Msg).cast(), size_of::<Msg>());
        if n >= 0 || errno() != libc::EINTR {
            break n;
        }
    };
    libc::close(report_r);
    let exec_errno = if n == size_of::<Msg>() as isize {
        if report_msg.step != step::EXEC {
            return Err((report_msg.step, report_msg.value));
        }
        Some(report_msg.value)
    } else {
        None
    };

    let started = Msg { kind: MSG_STARTED, step: 0, value: 0 };
    if send_msg(p.sock, &started, None) < 0 {
        return Err((step::SEND_STARTED, errno()));
    }

    // Out of the freezer cgroup, now that the bootstrap was born in it. Off the cold start's
    // path (kiln already has its "started"); a migration waits for an RCU grace period. If it
    // fails init stays frozen with its function, as it was before this existed.
    if p.init_cgroup >= 0 {
        libc::write(p.init_cgroup, b"0".as_ptr().cast(), 1);
        libc::close(p.init_cgroup);
    }
    let Some(status) = watch(p, pid, &chld)? else {
        // kiln is gone: thaw what it may have frozen, and exit, which ends the namespace.
        if p.thaw_fd >= 0 {
            libc::write(p.thaw_fd, p.thaw_value.as_ptr().cast(), p.thaw_value.len());
        }
        return Ok(());
    };
    let end = match exec_errno {
        Some(e) => Msg { kind: MSG_EXEC_FAILED, step: step::EXEC, value: e },
        None if libc::WIFSIGNALED(status) => Msg { kind: MSG_SIGNALED, step: 0, value: libc::WTERMSIG(status) },
        None => Msg { kind: MSG_EXITED, step: 0, value: libc::WEXITSTATUS(status) },
    };
    send_msg(p.sock, &end, None);
    // Returning exits PID 1, and the kernel kills whatever is left in the namespace.
    Ok(())
}

/// Reaps every process until the bootstrap ends (orphans of the namespace land here too) and
/// returns its wait status; `None` as soon as kiln's end of the socket closes (kiln exited or
/// was killed: nothing will ever destroy this environment otherwise). Init itself is never
/// frozen (it is not in the freezer cgroup), so this holds while the function is frozen.
unsafe fn watch(p: &Plan, pid: libc::pid_t, chld: &libc::sigset_t) -> Result<Option<c_int>, Fail> {
    let sfd = check(step::WATCH, libc::signalfd(-1, chld, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK))?;
    let mut status: c_int = 0;
    loop {
        loop {
            let r = libc::waitpid(-1, &mut status, libc::WNOHANG);
            if r == pid {
                libc::close(sfd);
                return Ok(Some(status));
            }
            if r < 0 && errno() == libc::ECHILD {
                libc::close(sfd);
                return Ok(Some(0));
            }
            if r <= 0 {
                break;
            }
        }
        let mut fds = [
            libc::pollfd { fd: p.sock, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: sfd, events: libc::POLLIN, revents: 0 },
        ];
        if libc::poll(fds.as_mut_ptr(), 2, -1) < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return Err((step::WATCH, errno()));
        }
        let [sock, sig] = fds;
        if sig.revents != 0 {
            let mut info = [0u8; 128];
            while libc::read(sfd, info.as_mut_ptr().cast(), info.len()) > 0 {}
        }
        if sock.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            return Ok(None);
        }
        if sock.revents & libc::POLLIN != 0 {
            // kiln sends nothing after the claim: only its end of file is expected here.
            let mut buf = [0u8; 64];
            let n = libc::recv(p.sock, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT);
            if n == 0 || (n < 0 && !matches!(errno(), libc::EAGAIN | libc::EINTR)) {
                return Ok(None);
            }
        }
    }
}

/// `MOVE_MOUNT_F_EMPTY_PATH` from `<linux/mount.h>`.
const MOVE_MOUNT_F_EMPTY_PATH: c_uint = 0x0000_0004;

/// Writes `size=<mb>m` and a NUL into `out` (24 bytes hold any u32).
fn tmp_size_opts(out: &mut [u8; 24], mb: u32) {
    let mut digits = [0u8; 10];
    let mut n = mb;
    let mut len = 0;
    loop {
        if let Some(d) = digits.get_mut(len) {
            *d = b'0' + (n % 10) as u8;
        }
        len += 1;
        n /= 10;
        if n == 0 || len == digits.len() {
            break;
        }
    }
    let mut i = 0;
    for &b in b"size=" {
        if let Some(o) = out.get_mut(i) {
            *o = b;
        }
        i += 1;
    }
    for &d in digits.iter().take(len).rev() {
        if let Some(o) = out.get_mut(i) {
            *o = d;
        }
        i += 1;
    }
    for b in [b'm', 0] {
        if let Some(o) = out.get_mut(i) {
            *o = b;
        }
        i += 1;
    }
}

/// Waits for kiln's claim: `Some((length, code mount descriptor))`, or `None` when kiln closed
/// its end.
unsafe fn recv_claim(p: &Plan) -> Result<Option<(usize, c_int, c_int)>, Fail> {
    let mut iov = libc::iovec { iov_base: p.claim_buf.cast(), iov_len: p.claim_cap };
    let mut cbuf = [0u64; 4];
    loop {
        let mut hdr: libc::msghdr = zeroed();
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = cbuf.as_mut_ptr().cast();
        hdr.msg_controllen = size_of::<[u64; 4]>() as _;
        let n = libc::recvmsg(p.sock, &mut hdr, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return Err((step::RECV_CLAIM, errno()));
        }
        if n == 0 {
            return Ok(None);
        }
        // The code tree, then the layers tree when there is one; anything more is closed.
        let mut fds = [-1 as c_int; MAX_FDS];
        let mut got = 0usize;
        let mut c = libc::CMSG_FIRSTHDR(&hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize) / size_of::<c_int>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<c_int>().add(i));
                    match fds.get_mut(got) {
                        Some(slot) => {
                            *slot = fd;
                            got += 1;
                        }
                        None => {
                            libc::close(fd);
                        }
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&hdr, c);
        }
        if hdr.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
            return Err((step::RECV_CLAIM, libc::E2BIG));
        }
        if fds[0] < 0 {
            return Err((step::RECV_CLAIM, libc::EBADF));
        }
        return Ok(Some((n as usize, fds[0], fds[1])));
    }
}

/// The blank: identity of init, cgroups, and the new root with an empty `/var/task`.
unsafe fn blank(p: &Plan) -> Result<EtcFiles, Fail> {
    // kiln's signal handlers are copied into the child: reset them, and the mask.
    let mut sa: libc::sigaction = zeroed();
    sa.sa_sigaction = libc::SIG_DFL;
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // Fails for the signals glibc reserves; those keep their default anyway.
            libc::sigaction(sig, &sa, null_mut());
        }
    }
    let mut set: libc::sigset_t = zeroed();
    libc::sigemptyset(&mut set);
    check(step::SIGNALS, libc::sigprocmask(libc::SIG_SETMASK, &set, null_mut()))?;
    libc::umask(0);
    // Init holds a copy of kiln's memory: make it unreadable through /proc and ptrace even
    // for processes of the same uid (defence in depth; the function runs as another uid).
    libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);

    // Copies of kiln's descriptors (client sockets, the database, ...) must not live on here.
    close_all_but(p.keep)?;
    // 0, 1, 2 are now free; fill them so later descriptors never land there.
    let null_fd = check(step::DEV_NULL, libc::open(c"/dev/null".as_ptr(), libc::O_RDWR))?;
    for fd in 0..3 {
        if fd != null_fd {
            check(step::DEV_NULL, libc::dup2(null_fd, fd))?;
        }
    }

    // Join the environment's cgroups before allocating anything there: memory is charged to
    // the cgroup of the process that touches it.
    for &fd in p.cgroup_procs {
        if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
            return Err((step::CGROUPS, errno()));
        }
        libc::close(fd);
    }
    // A cgroup namespace rooted at the environment's cgroups hides the host's hierarchy.
    check(step::CGROUP_NS, libc::unshare(libc::CLONE_NEWCGROUP))?;

    // Mounts: nothing we do may propagate back to the host.
    mount(step::PRIVATE, null(), c"/".as_ptr(), null(), libc::MS_REC | libc::MS_PRIVATE, null())?;
    mount(
        step::ROOT_TMPFS,
        c"tmpfs".as_ptr(),
        p.root.as_ptr(),
        c"tmpfs".as_ptr(),
        libc::MS_NOSUID | libc::MS_NODEV,
        c"size=1m,nr_inodes=512,mode=755".as_ptr(),
    )?;
    check(step::ENTER_ROOT, libc::chdir(p.root.as_ptr()))?;
    // From here on every path is relative to the new root.
    for dir in [c"usr", c"etc", c"var", c"var/task", c"opt", c"tmp", c"proc", c"dev"] {
        mkdir(dir, 0o755)?;
    }
    for e in p.root_entries {
        match e {
            RootEntry::Symlink { name, target } => {
                check(step::ROOT_DIRS, libc::symlink(target.as_ptr(), name.as_ptr()))?;
            }
            RootEntry::BindReadOnly { source, name } => {
                mkdir(name, 0o755)?;
                bind_ro(source.as_ptr(), name.as_ptr())?;
            }
            RootEntry::Dir { name } => mkdir(name, 0o755)?,
        }
    }
    bind_ro(c"/usr".as_ptr(), c"usr".as_ptr())?;
    bind_ro(c"/etc".as_ptr(), c"etc".as_ptr())?;
    let etc_files = private_etc_files()?;
    // `var/task` stays an empty directory until a claim attaches the code there.
    mount(
        step::TMP,
        c"tmpfs".as_ptr(),
        c"tmp".as_ptr(),
        c"tmpfs".as_ptr(),
        libc::MS_NOSUID | libc::MS_NODEV,
        p.tmp_opts.as_ptr(),
    )?;
    // We are PID 1 of the new pid namespace, so this proc shows only the environment; with
    // hidepid=2 the function does not even see init (root), only its own processes.
    mount(
        step::PROC,
        c"proc".as_ptr(),
        c"proc".as_ptr(),
        c"proc".as_ptr(),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        c"hidepid=2".as_ptr(),
    )?;
    mount(
        step::DEV,
        c"tmpfs".as_ptr(),
        c"dev".as_ptr(),
        c"tmpfs".as_ptr(),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        c"size=64k,nr_inodes=64,mode=755".as_ptr(),
    )?;
    for (name, minor_major) in [
        (c"dev/null", (1, 3)),
        (c"dev/zero", (1, 5)),
        (c"dev/full", (1, 7)),
        (c"dev/random", (1, 8)),
        (c"dev/urandom", (1, 9)),
        (c"dev/tty", (5, 0)),
    ] {
        let dev = libc::makedev(minor_major.0, minor_major.1);
        check(step::DEV_NODES, libc::mknod(name.as_ptr(), libc::S_IFCHR | 0o666, dev))?;
    }
    for (name, target) in [
        (c"dev/fd", c"/proc/self/fd"),
        (c"dev/stdin", c"/proc/self/fd/0"),
        (c"dev/stdout", c"/proc/self/fd/1"),
        (c"dev/stderr", c"/proc/self/fd/2"),
    ] {
        check(step::DEV_NODES, libc::symlink(target.as_ptr(), name.as_ptr()))?;
    }
    mount(
        step::DEV,
        null(),
        c"dev".as_ptr(),
        null(),
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC,
        null(),
    )?;

    // pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves
    // only the new root (see pivot_root(2)).
    check_long(step::PIVOT, libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()))?;
    check(step::DETACH, libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
    check(step::DETACH, libc::chdir(c"/".as_ptr()))?;
    mount(
        step::REMOUNT_RO,
        null(),
        c"/".as_ptr(),
        null(),
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        null(),
    )?;

    Ok(etc_files)
}

unsafe fn loopback_up() -> Result<(), Fail> {
    let s = check(step::LOOPBACK, libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0))?;
    let mut req: libc::ifreq = zeroed();
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as c_char;
    }
    let r = libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req);
    if r < 0 {
        let e = errno();
        libc::close(s);
        return Err((step::LOOPBACK, e));
    }
    req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    let r = libc::ioctl(s, libc::SIOCSIFFLAGS, &mut req);
    let e = errno();
    libc::close(s);
    if r < 0 {
        return Err((step::LOOPBACK, e));
    }
    Ok(())
}

unsafe fn listen_runtime_api() -> Result<c_int, Fail> {
    let s = check(
        step::LISTENER,
        libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0),
    )?;
    let mut addr: libc::sockaddr_in = zeroed();
    addr.sin_family = libc::AF_INET as libc::sa_family_t;
    addr.sin_port = RUNTIME_API_PORT.to_be();
    addr.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
    check(
        step::LISTENER,
        libc::bind(s, (&addr as *const libc::sockaddr_in).cast(), size_of::<libc::sockaddr_in>() as libc::socklen_t),
    )?;
    check(step::LISTENER, libc::listen(s, 128))?;
    Ok(s)
}

/// What init hands the bootstrap's process (through `clone`'s argument).
struct BootstrapArgs<'a, 'p> {
    plan: &'a Plan<'p>,
    exec: &'a Exec<'a>,
    report_r: c_int,
    report_w: c_int,
}

/// Entry point of the bootstrap's process (`clone` with `CLONE_VM | CLONE_VFORK`).
extern "C" fn bootstrap_entry(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` points at init's BootstrapArgs, alive because init sleeps until we exec or
    // exit (CLONE_VFORK); we only read it and make raw system calls.
    unsafe {
        let a = &*arg.cast::<BootstrapArgs>();
        // Closing descriptors here affects only our copy of the table (no CLONE_FILES).
        libc::close(a.report_r);
        libc::close(a.plan.sock);
        bootstrap(a.plan, a.exec, a.report_w)
    }
}

/// The bootstrap's process from clone to exec. Never returns.
/// What the bootstrap inherits from init, set once while the blank is built rather than on every
/// cold start: rlimits, an empty capability bounding set and ambient set, no supplementary
/// groups, and no_new_privs. None of it limits init, which keeps its effective capabilities for
/// the claim (mounts, hostname) and never execs.
unsafe fn inheritable_limits(p: &Plan) -> Result<(), Fail> {
    let nofile = libc::rlimit { rlim_cur: p.nofile, rlim_max: p.nofile };
    check(step::RLIMIT, libc::setrlimit(libc::RLIMIT_NOFILE, &nofile))?;
    // A core dump would be written by the host's core_pattern handler: none.
    let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    check(step::RLIMIT, libc::setrlimit(libc::RLIMIT_CORE, &zero))?;
    // Dropping from the bounding set needs CAP_SETPCAP, which init has.
    check(step::CAPBSET, libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0))?;
    for cap in 0..=p.cap_last {
        check(step::CAPBSET, libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0))?;
    }
    check_long(step::SETGROUPS, libc::syscall(libc::SYS_setgroups, 0, null::<libc::gid_t>()))?;
    check(step::NO_NEW_PRIVS, libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
    Ok(())
}

unsafe fn bootstrap(p: &Plan, e: &Exec, report: c_int) -> ! {
    let Err((step, err)) = bootstrap_steps(p, e) else { libc::_exit(127) };
    let msg = Msg { kind: MSG_SETUP_FAILED, step, value: err };
    libc::write(report, (&msg as *const Msg).cast(), size_of::<Msg>());
    libc::_exit(127)
}

unsafe fn bootstrap_steps(p: &Plan, e: &Exec) -> Result<(), Fail> {
    // The signal mask init blocked SIGCHLD in.
    let mut none: libc::sigset_t = zeroed();
    libc::sigemptyset(&mut none);
    check(step::SIGNALS, libc::sigprocmask(libc::SIG_SETMASK, &none, null_mut()))?;
    check(step::SETSID, libc::setsid())?;
    check(step::OUTPUT, libc::dup2(p.out_w, 1))?;
    check(step::OUTPUT, libc::dup2(p.out_w, 2))?;
    check(step::CHDIR, libc::chdir(c"/var/task".as_ptr()))?;
    // The rlimits, the empty bounding set and groups, and no_new_privs come from init
    // (`inheritable_limits`). The uid change clears the permitted and effective sets.
    // Raw syscalls: glibc's wrappers would try to apply these to threads that only exist in
    // the parent.
    check_long(step::SETGID, libc::syscall(libc::SYS_setresgid, p.gid, p.gid, p.gid))?;
    check_long(step::SETUID, libc::syscall(libc::SYS_setresuid, p.uid, p.uid, p.uid))?;
    enter_user_namespace(p)?;
    // The inheritable set survives a uid change; clear everything.
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data = [CapData::default(); 2];
    check_long(step::CAPSET, libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()))?;
    for f in p.filters {
        check(
            step::SECCOMP,
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                f as *const libc::sock_fprog,
                0,
                0,
            ),
        )?;
    }
    libc::execve(e.exe.as_ptr(), e.argv.as_ptr(), e.envp);
    Err((step::EXEC, errno()))
}

/// Makes the bootstrap's host uid and gid appear as `ns_uid`/`ns_gid`: a user namespace of its
/// own (an unprivileged process may map its own ids, and only them), entered after the uid
/// change. The capabilities it gets in that namespace are cleared right after (`capset`) and
/// could act on nothing anyway: every other namespace of the environment belongs to the host's
/// user namespace. Setting groups stays denied in it.
unsafe fn enter_user_namespace(p: &Plan) -> Result<(), Fail> {
    // The uid change made the process non-dumpable, which makes /proc/self root's.
    check(step::USERNS, libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0))?;
    check(step::USERNS, libc::unshare(libc::CLONE_NEWUSER))?;
    let write_file = |path: &CStr, text: &[u8]| -> Result<(), Fail> {
        let fd = check(step::USERNS, libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC))?;
        let n = libc::write(fd, text.as_ptr().cast(), text.len());
        let e = errno();
        libc::close(fd);
        if n != text.len() as isize {
            return Err((step::USERNS, if n < 0 { e } else { libc::EIO }));
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
        check(step::USERNS, libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0))?;
    }
    Ok(())
}

/// Writes `"<inside> <outside> 1\n"` into `out`; returns its length.
fn id_map_line(out: &mut [u8; 40], inside: u32, outside: u32) -> usize {
    let mut len = 0;
    let mut push = |b: u8| {
        if let Some(o) = out.get_mut(len) {
            *o = b;
            len += 1;
        }
    };
    for n in [inside, outside] {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        let mut v = n;
        loop {
            i -= 1;
            if let Some(d) = digits.get_mut(i) {
                *d = b'0' + (v % 10) as u8;
            }
            v /= 10;
            if v == 0 || i == 0 {
                break;
            }
        }
        for &d in digits.get(i..).unwrap_or_default() {
            push(d);
        }
        push(b' ');
    }
    push(b'1');
    push(b'\n');
    len
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_has_a_name() {
        assert_eq!(STEP_NAMES.len() as u32, step::ATTACH_OPT + 1);
        assert_eq!(STEP_NAMES[step::PRIORITY as usize], "reset scheduling priority");
        assert_eq!(STEP_NAMES[step::ATTACH_OPT as usize], "attach layers at /opt");
        assert_eq!(STEP_NAMES[step::EXEC as usize], "exec bootstrap");
        assert_eq!(STEP_NAMES[step::PIVOT as usize], "pivot_root");
        assert_eq!(STEP_NAMES[step::SECCOMP as usize], "install seccomp filter");
        assert_eq!(STEP_NAMES[step::ATTACH_CODE as usize], "attach code at /var/task");
        assert_eq!(STEP_NAMES[step::HOSTNAME as usize], "set hostname");
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
