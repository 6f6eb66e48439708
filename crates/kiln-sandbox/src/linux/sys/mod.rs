//! The system calls of an environment's init and of the bootstrap's process, behind one trait.
//!
//! [`Sys`] is what [`super::child`] sees of the kernel: small safe wrappers, one per thing init
//! does, each returning the `errno` it failed with. [`LinuxSys`] makes the real calls (the only
//! place the child calls libc, every `unsafe` block with the reason it is sound);
//! `fake::RecordingSys` records them, so the order of the hardening steps is checked by unit
//! tests that run as any user. [`host`] holds the calls of kiln's own side of the backend.
//!
//! The child is a `clone` of a multi-threaded kiln and may neither allocate nor take a lock,
//! so the code over the trait is generic (`S: Sys`, no `dyn`, nothing boxed) and `LinuxSys`
//! is a unit struct whose methods are raw system calls: no glibc function that broadcasts to
//! threads (`setuid`, `setgroups` go through `syscall`), no allocation, no panics.

#[cfg(test)]
pub(crate) mod fake;
pub(crate) mod host;
pub(crate) mod zygote;

use super::protocol::MAX_FDS;
use libc::{c_char, c_int, c_uint, c_void, pid_t};
use std::ffi::CStr;
use std::mem::{size_of, zeroed};
use std::ptr::{null, null_mut};

/// An `errno` value.
pub(crate) type Errno = c_int;
pub(crate) type SysResult<T> = Result<T, Errno>;

/// Signal masks init and the bootstrap's process set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SigMask {
    /// Nothing blocked.
    Empty,
    /// `SIGCHLD` blocked, on top of the current mask.
    BlockChild,
}

/// Resource limits the bootstrap inherits from init.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rlimit {
    Nofile,
    Core,
}

/// Every system call init and the bootstrap's process make.
///
/// Paths are NUL-terminated; relative ones resolve against the cwd, as in the kernel. Methods
/// on descriptors take raw numbers: init's descriptors are plain integers the parent prepared,
/// and a wrong one fails with `EBADF`, it is not undefined behaviour.
pub(crate) trait Sys {
    /// Resets every signal handler kiln installed to its default (the ones glibc reserves fail
    /// and keep their default anyway).
    fn reset_signal_handlers(&self);
    fn set_sigmask(&self, mask: SigMask) -> SysResult<()>;
    fn umask(&self, mode: libc::mode_t);
    /// `PR_SET_DUMPABLE`.
    fn set_dumpable(&self, dumpable: bool) -> SysResult<()>;
    /// Closes descriptors `first..=last` (one by one up to 65,536 on kernels without
    /// `close_range`).
    fn close_range(&self, first: u32, last: u32) -> SysResult<()>;
    fn open(&self, path: &CStr, flags: c_int, mode: libc::mode_t) -> SysResult<c_int>;
    fn dup2(&self, from: c_int, to: c_int) -> SysResult<()>;
    fn write(&self, fd: c_int, bytes: &[u8]) -> SysResult<usize>;
    fn pwrite(&self, fd: c_int, bytes: &[u8], offset: libc::off_t) -> SysResult<usize>;
    /// Reads once, retrying on `EINTR`.
    fn read(&self, fd: c_int, buf: &mut [u8]) -> SysResult<usize>;
    fn close(&self, fd: c_int);
    fn unshare(&self, flags: c_int) -> SysResult<()>;
    fn mount(
        &self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        data: Option<&CStr>,
    ) -> SysResult<()>;
    /// `mount_setattr(AT_RECURSIVE)`: the mount at `path` and every one below it read-only,
    /// nosuid and nodev.
    fn make_tree_read_only(&self, path: &CStr) -> SysResult<()>;
    /// `move_mount` of the detached tree `tree` onto `target`.
    fn move_mount(&self, tree: c_int, target: &CStr) -> SysResult<()>;
    /// `umount2(MNT_DETACH)`.
    fn detach_mount(&self, target: &CStr) -> SysResult<()>;
    fn chdir(&self, path: &CStr) -> SysResult<()>;
    fn mkdir(&self, path: &CStr, mode: libc::mode_t) -> SysResult<()>;
    fn rmdir(&self, path: &CStr) -> SysResult<()>;
    fn unlink(&self, path: &CStr) -> SysResult<()>;
    fn symlink(&self, target: &CStr, link: &CStr) -> SysResult<()>;
    /// A character device node.
    fn mknod_char(&self, path: &CStr, mode: libc::mode_t, major: u32, minor: u32) -> SysResult<()>;
    /// Whether `path` exists (`access(F_OK)`).
    fn exists(&self, path: &CStr) -> bool;
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> SysResult<()>;
    fn sethostname(&self, name: &[u8]) -> SysResult<()>;
    /// The scheduling priority (nice value) of this process.
    fn set_priority(&self, nice: c_int) -> SysResult<()>;
    /// Soft and hard limit both.
    fn set_rlimit(&self, which: Rlimit, value: u64) -> SysResult<()>;
    fn clear_ambient_caps(&self) -> SysResult<()>;
    fn drop_bounding_cap(&self, cap: u32) -> SysResult<()>;
    /// `setgroups(0, NULL)`.
    fn clear_groups(&self) -> SysResult<()>;
    fn setresgid(&self, gid: u32) -> SysResult<()>;
    fn setresuid(&self, uid: u32) -> SysResult<()>;
    /// Empties the effective, permitted and inheritable capability sets (`capset`).
    fn clear_capabilities(&self) -> SysResult<()>;
    fn set_no_new_privs(&self) -> SysResult<()>;
    /// Installs a seccomp filter (the kernel copies the program and checks its pointers).
    fn install_seccomp(&self, prog: &libc::sock_fprog) -> SysResult<()>;
    fn setsid(&self) -> SysResult<()>;
    /// `execve`; returns only on failure, with its errno. `argv` and `envp` are NULL-terminated
    /// arrays of C strings; the kernel checks every pointer it follows (`EFAULT`).
    fn execve(&self, exe: &CStr, argv: &[*const c_char], envp: *const *const c_char) -> Errno;
    /// Sets `IFF_UP` on `lo`.
    fn loopback_up(&self) -> SysResult<()>;
    /// A non-blocking, close-on-exec TCP listener on 127.0.0.1:`port`.
    fn listen_loopback(&self, port: u16) -> SysResult<c_int>;
    /// Sends `bytes` as one datagram with at most [`MAX_FDS`] descriptors (`SCM_RIGHTS`).
    fn send(&self, sock: c_int, bytes: &[u8], fds: &[c_int]) -> SysResult<()>;
    /// Receives one datagram into `buf`, retrying on `EINTR`, and up to [`MAX_FDS`]
    /// descriptors into `fds` (-1 for none; more are closed). `None` at end of file; `E2BIG`
    /// when the datagram or its descriptors did not fit.
    fn recv_with_fds(&self, sock: c_int, buf: &mut [u8], fds: &mut [c_int; MAX_FDS]) -> SysResult<Option<usize>>;
    /// Receives without blocking (`MSG_DONTWAIT`).
    fn recv_nowait(&self, sock: c_int, buf: &mut [u8]) -> SysResult<usize>;
    /// A close-on-exec pipe: (read end, write end).
    fn pipe(&self) -> SysResult<(c_int, c_int)>;
    /// Runs `entry(arg)` in a new process that shares this one's memory until it execs or
    /// exits (`CLONE_VM`): unlike `posix_spawn` (`CLONE_VFORK`), this process goes on at once,
    /// and both run side by side. The new process exits with what `entry` returns.
    ///
    /// # Safety
    /// `stack` must be the top of a 16-byte aligned region only the new process uses as its
    /// stack, and `entry` must be sound to run on it with `arg` while this process runs too:
    /// everything `arg` reaches must stay alive until the new process has exec'd or exited.
    unsafe fn clone_parked(
        &self,
        entry: extern "C" fn(*mut c_void) -> c_int,
        stack: *mut c_void,
        arg: *mut c_void,
    ) -> SysResult<pid_t>;
    /// Blocks until one byte arrives on `fd` (true), or its end of file (false).
    fn park(&self, fd: c_int) -> SysResult<bool>;
    /// Wakes the process [`Sys::park`]ed on the other end of the pipe `fd` writes to.
    fn unpark(&self, fd: c_int) -> SysResult<()>;
    /// `setpriority(PRIO_PROCESS, pid, nice)`.
    fn set_priority_of(&self, pid: pid_t, nice: c_int) -> SysResult<()>;
    /// A close-on-exec, non-blocking signalfd for `SIGCHLD` (which must be blocked).
    fn signalfd_child(&self) -> SysResult<c_int>;
    /// `waitpid(-1, WNOHANG)`: `Some((pid, status))` for a reaped child, `None` when none has
    /// exited.
    fn wait_any(&self) -> SysResult<Option<(pid_t, c_int)>>;
    /// Waits (no timeout) until one of `fds` is ready; `revents` are filled in.
    fn poll(&self, fds: &mut [libc::pollfd]) -> SysResult<()>;
    /// `_exit`.
    fn exit(&self, code: c_int) -> !;
}

/// The real system calls.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LinuxSys;

fn errno() -> Errno {
    // SAFETY: __errno_location returns this thread's errno slot, valid for reading; a cloned
    // child has its own copy.
    unsafe { *libc::__errno_location() }
}

fn ok(r: c_int) -> SysResult<c_int> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

fn ok_long(r: libc::c_long) -> SysResult<libc::c_long> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

fn ok_size(r: isize) -> SysResult<usize> {
    usize::try_from(r).map_err(|_| errno())
}

fn ptr_or_null(s: Option<&CStr>) -> *const c_char {
    s.map_or(null(), CStr::as_ptr)
}

/// `MOVE_MOUNT_F_EMPTY_PATH` from `<linux/mount.h>`.
const MOVE_MOUNT_F_EMPTY_PATH: c_uint = 0x0000_0004;
// From <linux/mount.h>; defined here because the libc crate exports them only for some targets.
pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x4;
pub(crate) const OPEN_TREE_CLONE: c_uint = 0x1;
pub(crate) const OPEN_TREE_CLOEXEC: c_uint = libc::O_CLOEXEC as c_uint;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct mount_attr` (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
pub(crate) struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

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

fn sigchld_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset and sigaddset initialise the live set.
    unsafe {
        let mut set: libc::sigset_t = zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        set
    }
}

impl Sys for LinuxSys {
    fn reset_signal_handlers(&self) {
        // SAFETY: sigaction is plain data; SIG_DFL with an empty mask is a valid disposition.
        let mut sa: libc::sigaction = unsafe { zeroed() };
        sa.sa_sigaction = libc::SIG_DFL;
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                // SAFETY: `sa` is a live, initialised sigaction; the old action is not asked for.
                unsafe { libc::sigaction(sig, &sa, null_mut()) };
            }
        }
    }

    fn set_sigmask(&self, mask: SigMask) -> SysResult<()> {
        let (how, set) = match mask {
            // SAFETY: sigset_t is plain data; sigemptyset initialises it.
            SigMask::Empty => (libc::SIG_SETMASK, unsafe {
                let mut set: libc::sigset_t = zeroed();
                libc::sigemptyset(&mut set);
                set
            }),
            SigMask::BlockChild => (libc::SIG_BLOCK, sigchld_set()),
        };
        // SAFETY: `set` is an initialised sigset; the old mask is not asked for.
        ok(unsafe { libc::sigprocmask(how, &set, null_mut()) }).map(drop)
    }

    fn umask(&self, mode: libc::mode_t) {
        // SAFETY: umask takes an integer and cannot fail.
        unsafe { libc::umask(mode) };
    }

    fn set_dumpable(&self, dumpable: bool) -> SysResult<()> {
        // SAFETY: prctl with integer arguments only.
        ok(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, libc::c_ulong::from(dumpable), 0, 0, 0) }).map(drop)
    }

    fn close_range(&self, first: u32, last: u32) -> SysResult<()> {
        // SAFETY: close_range with integer arguments; closing descriptors is what init wants.
        let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
        if r < 0 {
            let e = errno();
            if e != libc::ENOSYS {
                return Err(e);
            }
            // Kernels before 5.9: close one by one up to a generous bound.
            let mut fd = first;
            while fd <= last && fd < 65_536 {
                self.close(fd as c_int);
                fd += 1;
            }
        }
        Ok(())
    }

    fn open(&self, path: &CStr, flags: c_int, mode: libc::mode_t) -> SysResult<c_int> {
        // SAFETY: `path` is NUL-terminated; the mode is read only with O_CREAT.
        ok(unsafe { libc::open(path.as_ptr(), flags, mode as c_uint) })
    }

    fn dup2(&self, from: c_int, to: c_int) -> SysResult<()> {
        // SAFETY: dup2 takes integers.
        ok(unsafe { libc::dup2(from, to) }).map(drop)
    }

    fn write(&self, fd: c_int, bytes: &[u8]) -> SysResult<usize> {
        // SAFETY: `bytes` is readable for its length.
        ok_size(unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) })
    }

    fn pwrite(&self, fd: c_int, bytes: &[u8], offset: libc::off_t) -> SysResult<usize> {
        // SAFETY: `bytes` is readable for its length.
        ok_size(unsafe { libc::pwrite(fd, bytes.as_ptr().cast(), bytes.len(), offset) })
    }

    fn read(&self, fd: c_int, buf: &mut [u8]) -> SysResult<usize> {
        loop {
            // SAFETY: `buf` is writable for its length.
            match ok_size(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) }) {
                Err(libc::EINTR) => {}
                r => return r,
            }
        }
    }

    fn close(&self, fd: c_int) {
        // SAFETY: closing a descriptor number; init owns every descriptor it closes.
        unsafe { libc::close(fd) };
    }

    fn unshare(&self, flags: c_int) -> SysResult<()> {
        // SAFETY: unshare takes flags only.
        ok(unsafe { libc::unshare(flags) }).map(drop)
    }

    fn mount(
        &self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        data: Option<&CStr>,
    ) -> SysResult<()> {
        // SAFETY: every pointer is NUL-terminated or null, as mount(2) allows for source,
        // fstype and data.
        ok(unsafe {
            libc::mount(ptr_or_null(source), target.as_ptr(), ptr_or_null(fstype), flags, ptr_or_null(data).cast())
        })
        .map(drop)
    }

    fn make_tree_read_only(&self, path: &CStr) -> SysResult<()> {
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        // SAFETY: `path` is NUL-terminated; `attr` is a live mount_attr of the size passed.
        ok_long(unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                path.as_ptr(),
                libc::AT_RECURSIVE as c_uint,
                &attr as *const MountAttr,
                size_of::<MountAttr>(),
            )
        })
        .map(drop)
    }

    fn move_mount(&self, tree: c_int, target: &CStr) -> SysResult<()> {
        // SAFETY: both paths are NUL-terminated; the tree is named by its descriptor alone.
        ok_long(unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree,
                c"".as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        })
        .map(drop)
    }

    fn detach_mount(&self, target: &CStr) -> SysResult<()> {
        // SAFETY: `target` is NUL-terminated.
        ok(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) }).map(drop)
    }

    fn chdir(&self, path: &CStr) -> SysResult<()> {
        // SAFETY: `path` is NUL-terminated.
        ok(unsafe { libc::chdir(path.as_ptr()) }).map(drop)
    }

    fn mkdir(&self, path: &CStr, mode: libc::mode_t) -> SysResult<()> {
        // SAFETY: `path` is NUL-terminated.
        ok(unsafe { libc::mkdir(path.as_ptr(), mode) }).map(drop)
    }

    fn rmdir(&self, path: &CStr) -> SysResult<()> {
        // SAFETY: `path` is NUL-terminated.
        ok(unsafe { libc::rmdir(path.as_ptr()) }).map(drop)
    }

    fn unlink(&self, path: &CStr) -> SysResult<()> {
        // SAFETY: `path` is NUL-terminated.
        ok(unsafe { libc::unlink(path.as_ptr()) }).map(drop)
    }

    fn symlink(&self, target: &CStr, link: &CStr) -> SysResult<()> {
        // SAFETY: both paths are NUL-terminated.
        ok(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) }).map(drop)
    }

    fn mknod_char(&self, path: &CStr, mode: libc::mode_t, major: u32, minor: u32) -> SysResult<()> {
        let dev = libc::makedev(major, minor);
        // SAFETY: `path` is NUL-terminated.
        ok(unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | mode, dev) }).map(drop)
    }

    fn exists(&self, path: &CStr) -> bool {
        // SAFETY: `path` is NUL-terminated.
        unsafe { libc::access(path.as_ptr(), libc::F_OK) == 0 }
    }

    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> SysResult<()> {
        // SAFETY: both paths are NUL-terminated.
        ok_long(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) }).map(drop)
    }

    fn sethostname(&self, name: &[u8]) -> SysResult<()> {
        // SAFETY: `name` is readable for its length (no NUL needed).
        ok(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
    }

    fn set_priority(&self, nice: c_int) -> SysResult<()> {
        // SAFETY: setpriority takes integers.
        ok(unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) }).map(drop)
    }

    fn set_rlimit(&self, which: Rlimit, value: u64) -> SysResult<()> {
        let resource = match which {
            Rlimit::Nofile => libc::RLIMIT_NOFILE,
            Rlimit::Core => libc::RLIMIT_CORE,
        };
        let limit = libc::rlimit { rlim_cur: value, rlim_max: value };
        // SAFETY: `limit` is a live rlimit.
        ok(unsafe { libc::setrlimit(resource, &limit) }).map(drop)
    }

    fn clear_ambient_caps(&self) -> SysResult<()> {
        // SAFETY: prctl with integer arguments only.
        ok(unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) }).map(drop)
    }

    fn drop_bounding_cap(&self, cap: u32) -> SysResult<()> {
        // SAFETY: prctl with integer arguments only.
        ok(unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) }).map(drop)
    }

    fn clear_groups(&self) -> SysResult<()> {
        // SAFETY: setgroups with an empty list reads nothing. Raw syscall: glibc's wrapper
        // would try to apply it to threads that exist only in the parent.
        ok_long(unsafe { libc::syscall(libc::SYS_setgroups, 0, null::<libc::gid_t>()) }).map(drop)
    }

    fn setresgid(&self, gid: u32) -> SysResult<()> {
        // SAFETY: integers only; raw syscall, see clear_groups.
        ok_long(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) }).map(drop)
    }

    fn setresuid(&self, uid: u32) -> SysResult<()> {
        // SAFETY: integers only; raw syscall, see clear_groups.
        ok_long(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) }).map(drop)
    }

    fn clear_capabilities(&self) -> SysResult<()> {
        let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
        let data = [CapData::default(); 2];
        // SAFETY: version 3 takes a header and two data records, both live here.
        ok_long(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) }).map(drop)
    }

    fn set_no_new_privs(&self) -> SysResult<()> {
        // SAFETY: prctl with integer arguments only.
        ok(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }).map(drop)
    }

    fn install_seccomp(&self, prog: &libc::sock_fprog) -> SysResult<()> {
        // SAFETY: `prog` is a live sock_fprog; the kernel copies the filter it points to and
        // fails with EFAULT rather than follow a bad pointer.
        ok(unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::c_ulong::from(libc::SECCOMP_MODE_FILTER),
                prog as *const libc::sock_fprog,
                0,
                0,
            )
        })
        .map(drop)
    }

    fn setsid(&self) -> SysResult<()> {
        // SAFETY: no arguments.
        ok(unsafe { libc::setsid() }).map(drop)
    }

    fn execve(&self, exe: &CStr, argv: &[*const c_char], envp: *const *const c_char) -> Errno {
        // SAFETY: `exe` is NUL-terminated; the kernel reads argv and envp up to their NULLs
        // and fails with EFAULT on a bad pointer. It returns only on failure.
        unsafe { libc::execve(exe.as_ptr(), argv.as_ptr(), envp) };
        errno()
    }

    fn loopback_up(&self) -> SysResult<()> {
        // SAFETY: socket takes integers.
        let s = ok(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: ifreq is plain data.
        let mut req: libc::ifreq = unsafe { zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as c_char;
        }
        // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of a live ifreq.
        if let Err(e) = ok(unsafe { libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) }) {
            self.close(s);
            return Err(e);
        }
        // SAFETY: SIOCGIFFLAGS filled in ifru_flags, the union's field for this request.
        unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        // SAFETY: SIOCSIFFLAGS reads a live ifreq.
        let r = ok(unsafe { libc::ioctl(s, libc::SIOCSIFFLAGS, &mut req) });
        self.close(s);
        r.map(drop)
    }

    fn listen_loopback(&self, port: u16) -> SysResult<c_int> {
        // SAFETY: socket takes integers.
        let s = ok(unsafe {
            libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0)
        })?;
        // SAFETY: sockaddr_in is plain data.
        let mut addr: libc::sockaddr_in = unsafe { zeroed() };
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_port = port.to_be();
        addr.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
        let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `addr` is a live sockaddr_in of the length passed.
        ok(unsafe { libc::bind(s, (&addr as *const libc::sockaddr_in).cast(), len) })?;
        // SAFETY: listen takes integers.
        ok(unsafe { libc::listen(s, 128) })?;
        Ok(s)
    }

    fn send(&self, sock: c_int, bytes: &[u8], fds: &[c_int]) -> SysResult<()> {
        send(sock, bytes, fds).map(drop)
    }

    fn recv_with_fds(&self, sock: c_int, buf: &mut [u8], fds: &mut [c_int; MAX_FDS]) -> SysResult<Option<usize>> {
        *fds = [-1; MAX_FDS];
        // Room for one cmsghdr plus a few ints, 8-byte aligned.
        let got = recv_with::<4>(sock, buf, fds)?;
        if got.len == 0 || got.truncated {
            for fd in fds.iter_mut().take(got.fds) {
                self.close(*fd);
                *fd = -1;
            }
            return if got.len == 0 { Ok(None) } else { Err(libc::E2BIG) };
        }
        Ok(Some(got.len))
    }

    fn recv_nowait(&self, sock: c_int, buf: &mut [u8]) -> SysResult<usize> {
        // SAFETY: `buf` is writable for its length.
        ok_size(unsafe { libc::recv(sock, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) })
    }

    fn pipe(&self) -> SysResult<(c_int, c_int)> {
        let mut fds = [0 as c_int; 2];
        // SAFETY: pipe2 writes two descriptors into the array.
        ok(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
        let [r, w] = fds;
        Ok((r, w))
    }

    unsafe fn clone_parked(
        &self,
        entry: extern "C" fn(*mut c_void) -> c_int,
        stack: *mut c_void,
        arg: *mut c_void,
    ) -> SysResult<pid_t> {
        // SAFETY: the caller guarantees the stack, and that `entry(arg)` is sound on it while
        // this process runs on.
        ok(unsafe { libc::clone(entry, stack, libc::CLONE_VM | libc::SIGCHLD, arg) })
    }

    fn park(&self, fd: c_int) -> SysResult<bool> {
        let mut byte = [0u8; 1];
        self.read(fd, &mut byte).map(|n| n == 1)
    }

    fn unpark(&self, fd: c_int) -> SysResult<()> {
        match self.write(fd, b"g")? {
            1 => Ok(()),
            _ => Err(libc::EIO),
        }
    }

    fn set_priority_of(&self, pid: pid_t, nice: c_int) -> SysResult<()> {
        // SAFETY: setpriority takes integers.
        ok(unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, nice) }).map(drop)
    }

    fn signalfd_child(&self) -> SysResult<c_int> {
        let set = sigchld_set();
        // SAFETY: `set` is an initialised sigset; -1 asks for a new descriptor.
        ok(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })
    }

    fn wait_any(&self) -> SysResult<Option<(pid_t, c_int)>> {
        let mut status: c_int = 0;
        // SAFETY: `status` is a live int waitpid writes to.
        let r = ok(unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) })?;
        Ok((r > 0).then_some((r, status)))
    }

    fn poll(&self, fds: &mut [libc::pollfd]) -> SysResult<()> {
        // SAFETY: `fds` is a live array of pollfds of the length passed.
        ok(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) }).map(drop)
    }

    fn exit(&self, code: c_int) -> ! {
        // SAFETY: _exit ends the process without running anything of this one's (no atexit
        // handlers, no stdio flush): what a cloned child must do.
        unsafe { libc::_exit(code) }
    }
}

/// What [`recv_with`] received.
pub(crate) struct Received {
    /// The datagram's length (0: end of file, or an empty datagram).
    pub len: usize,
    /// How many descriptors landed at the start of the caller's slice.
    pub fds: usize,
    /// The datagram or its descriptors did not fit (`MSG_TRUNC`, `MSG_CTRUNC`).
    pub truncated: bool,
}

/// Receives one datagram into `buf` and its descriptors, close-on-exec, into `fds` (more than
/// fit are closed), through a control buffer of `WORDS` 8-byte words on the stack; retries on
/// `EINTR`. Allocates nothing: init, the zygote and kiln all use it. What to make of end of
/// file or truncation is the caller's (the descriptors that did land are still in `fds`).
pub(crate) fn recv_with<const WORDS: usize>(sock: c_int, buf: &mut [u8], fds: &mut [c_int]) -> SysResult<Received> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut cbuf = [0u64; WORDS];
    loop {
        // SAFETY: msghdr is plain data.
        let mut hdr: libc::msghdr = unsafe { zeroed() };
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = cbuf.as_mut_ptr().cast();
        hdr.msg_controllen = std::mem::size_of_val(&cbuf) as _;
        // SAFETY: `hdr` points at `iov` (over `buf`) and `cbuf`, live and of the sizes it states.
        let n = unsafe { libc::recvmsg(sock, &mut hdr, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            match errno() {
                libc::EINTR => continue,
                e => return Err(e),
            }
        }
        let mut got = 0usize;
        // SAFETY: walks the control messages the kernel filled in, within msg_controllen;
        // CMSG_NXTHDR returns null past the end. Every descriptor read is a fresh one of ours.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&hdr);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let count =
                        ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize) / size_of::<c_int>();
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
        }
        let truncated = hdr.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0;
        return Ok(Received { len: n as usize, fds: got, truncated });
    }
}

/// Sends `bytes` as one datagram with at most [`MAX_FDS`] descriptors (`SCM_RIGHTS`), without
/// `SIGPIPE`. Allocates nothing: init and kiln both use it.
pub(crate) fn send(sock: c_int, bytes: &[u8], fds: &[c_int]) -> SysResult<usize> {
    // One cmsghdr (16 bytes) plus two ints, 8-byte aligned.
    send_with::<4>(sock, bytes, fds, MAX_FDS)
}

/// [`send`] with up to `max` descriptors, in a control buffer of `WORDS` 8-byte words on the
/// stack (`EINVAL` if they do not fit in it).
pub(crate) fn send_with<const WORDS: usize>(sock: c_int, bytes: &[u8], fds: &[c_int], max: usize) -> SysResult<usize> {
    if fds.len() > max {
        return Err(libc::EINVAL);
    }
    let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut c_void, iov_len: bytes.len() };
    let mut cbuf = [0u64; WORDS];
    // SAFETY: msghdr is plain data.
    let mut hdr: libc::msghdr = unsafe { zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    if !fds.is_empty() {
        let len = u32::try_from(std::mem::size_of_val(fds)).map_err(|_| libc::EINVAL)?;
        // SAFETY: CMSG_SPACE is arithmetic.
        let space = unsafe { libc::CMSG_SPACE(len) } as usize;
        if space > std::mem::size_of_val(&cbuf) {
            return Err(libc::EINVAL);
        }
        hdr.msg_control = cbuf.as_mut_ptr().cast();
        hdr.msg_controllen = space as _;
        // SAFETY: msg_control points at `cbuf`, which holds at least CMSG_SPACE(len) bytes
        // (checked above), so the header and its data lie inside it.
        unsafe {
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
    }
    // SAFETY: `hdr` points at live buffers of the sizes it states.
    ok_size(unsafe { libc::sendmsg(sock, &hdr, libc::MSG_NOSIGNAL) })
}
