//! The system calls of kiln's own side of the Linux backend, the parent of every init: safe
//! wrappers over descriptors kiln owns (epoll, pidfds, the socket pair to init, detached mount
//! trees), so that the rest of the backend holds no `unsafe`. The child's calls are in the
//! parent module, behind [`super::Sys`].

use super::{MountAttr, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, OPEN_TREE_CLOEXEC, OPEN_TREE_CLONE};
use crate::linux::protocol::{Message, Msg};
use std::ffi::CStr;
use std::io::{self, ErrorKind};
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

pub(crate) fn epoll_add(epoll: &OwnedFd, fd: &OwnedFd, key: u64, oneshot: bool) -> io::Result<()> {
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

pub(crate) fn epoll_del(epoll: &OwnedFd, fd: &OwnedFd) {
    // SAFETY: both descriptors are open; a null event is allowed for DEL.
    unsafe {
        libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, fd.as_raw_fd(), std::ptr::null_mut());
    }
}

pub(crate) fn pidfd_kill(pidfd: &OwnedFd) {
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
pub(crate) fn waitid_pidfd(pidfd: &OwnedFd, block: bool) -> Option<(i32, i32)> {
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

/// A descriptor moved to 3 or above, so the child's own 0, 1, 2 never collide with it.
pub(crate) fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
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

pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
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
pub(crate) fn recv_msg(sock: &OwnedFd, timeout: Duration) -> io::Result<(Option<Message>, Option<OwnedFd>)> {
    wait_readable(sock, timeout, "init did not answer")?;
    let mut msg = Msg::default();
    // SAFETY: Msg is repr(C) plain integers; any bytes are a valid value.
    let buf = unsafe { std::slice::from_raw_parts_mut((&mut msg as *mut Msg).cast::<u8>(), size_of::<Msg>()) };
    let mut fds = [-1; 1];
    // Room for one cmsghdr and more descriptors than init sends (the extra ones are closed).
    let got = super::recv_with::<8>(sock.as_raw_fd(), buf, &mut fds).map_err(io::Error::from_raw_os_error)?;
    // SAFETY: a descriptor that just arrived, nobody else's.
    let passed = (got.fds == 1).then(|| unsafe { OwnedFd::from_raw_fd(fds[0]) });
    if got.len != size_of::<Msg>() {
        return Err(io::Error::new(ErrorKind::UnexpectedEof, "init exited"));
    }
    Ok((Message::from_wire(msg), passed))
}

/// Waits up to `timeout` until `sock` can be read (a message, or end of file); `TimedOut` with
/// `what` otherwise.
pub(crate) fn wait_readable(sock: &OwnedFd, timeout: Duration, what: &'static str) -> io::Result<()> {
    let mut pfd = libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r > 0 {
            return Ok(());
        }
        if r == 0 {
            return Err(io::Error::new(ErrorKind::TimedOut, what));
        }
        if io::Error::last_os_error().kind() != ErrorKind::Interrupted {
            return Err(last_error());
        }
    }
}

/// A host directory as a detached mount tree (every mount below it included), read-only,
/// nosuid, nodev and private throughout: what a claim hands init to attach with `move_mount`
/// (the code at `/var/task`; the same fits any per-function directory, e.g. `/opt`).
pub(crate) fn detached_read_only_tree(dir: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: open_tree with a valid C path; the result is checked and owned.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            dir.as_ptr(),
            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(last_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
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
            &attr as *const MountAttr,
            size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(last_error());
    }
    Ok(fd)
}

/// A close-on-exec epoll instance.
pub(crate) fn epoll() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes flags only; the result is checked.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(last_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A close-on-exec, non-blocking eventfd.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes integers only; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(last_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter, waking whoever waits on it.
pub(crate) fn notify(eventfd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
    unsafe {
        libc::write(eventfd.as_raw_fd(), (&one as *const u64).cast(), size_of::<u64>());
    }
}

/// Re-arms a one-shot registration of `fd` under `key`.
pub(crate) fn epoll_rearm(epoll: &OwnedFd, fd: &OwnedFd, key: u64) {
    let mut ev = libc::epoll_event { events: (libc::EPOLLIN | libc::EPOLLONESHOT) as u32, u64: key };
    // SAFETY: both descriptors are open; ev is a valid epoll_event.
    unsafe {
        libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_MOD, fd.as_raw_fd(), &mut ev);
    }
}

/// Waits without a timeout for events; returns how many of `events` were filled.
pub(crate) fn epoll_wait(epoll: &OwnedFd, events: &mut [libc::epoll_event]) -> io::Result<usize> {
    let max = i32::try_from(events.len()).unwrap_or(i32::MAX);
    // SAFETY: the buffer holds `max` events and outlives the call.
    let n = unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), max, -1) };
    usize::try_from(n).map_err(|_| last_error())
}

/// An empty epoll event, to fill a buffer for [`epoll_wait`].
pub(crate) fn empty_event() -> libc::epoll_event {
    libc::epoll_event { events: 0, u64: 0 }
}

/// The next record init left in the socket, without waiting; `None` when there is none (or
/// the socket is closed).
pub(crate) fn recv_record_nowait(sock: &OwnedFd) -> Option<Msg> {
    let mut msg = Msg::default();
    // SAFETY: receives at most size_of::<Msg>() bytes into `msg`, plain integers.
    let n =
        unsafe { libc::recv(sock.as_raw_fd(), (&mut msg as *mut Msg).cast(), size_of::<Msg>(), libc::MSG_DONTWAIT) };
    (n > 0 && n as usize == size_of::<Msg>()).then_some(msg)
}

/// `clone` into new namespaces, like `fork` (no new stack, no `CLONE_VM`), with `CLONE_PIDFD`:
/// the child runs `child`, which should not return (if it does, the child exits with 127);
/// the parent gets its pid and pidfd.
///
/// # Safety
/// kiln is multi-threaded: `child` runs in a copy of its memory in whatever state the other
/// threads left it, so it must only make async-signal-safe system calls (no allocation, no
/// locks) on data prepared before the call.
pub(crate) unsafe fn clone_into_namespaces<F: FnOnce()>(flags: libc::c_int, child: F) -> io::Result<(i32, OwnedFd)> {
    let mut pidfd: libc::c_int = -1;
    // SAFETY: a fork-like clone: the child continues on a copy of this stack; CLONE_PIDFD
    // stores the pidfd in `pidfd` (the parent_tid argument), live for the call.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::c_long::from(flags | libc::CLONE_PIDFD | libc::SIGCHLD),
            0,
            &mut pidfd as *mut libc::c_int,
            0,
            0,
        )
    };
    if pid == 0 {
        child();
        // SAFETY: _exit ends the child without running anything of kiln's (no atexit
        // handlers, no destructors), as a clone of a multi-threaded process must.
        unsafe { libc::_exit(127) }
    }
    if pid < 0 {
        return Err(last_error());
    }
    // SAFETY: CLONE_PIDFD gave us this descriptor; nobody else owns it.
    Ok((pid as i32, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

/// Creates the namespaces of `flags` once, in a child that exits at once and is reaped.
pub(crate) fn probe_namespaces(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: a fork-like clone (no new stack); the child only calls _exit, which is
    // async-signal-safe.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::c_long::from(flags | libc::SIGCHLD), 0, 0, 0, 0) };
    if pid == 0 {
        // SAFETY: see above; we are the child.
        unsafe { libc::_exit(0) }
    }
    if pid < 0 {
        return Err(last_error());
    }
    let mut status = 0;
    // SAFETY: waits for the child we just created, writing into a live int.
    unsafe {
        libc::waitpid(pid as libc::pid_t, &mut status, 0);
    }
    Ok(())
}

/// Whether this kernel has seccomp.
pub(crate) fn seccomp_available() -> bool {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) >= 0 }
}

/// Detaches whatever is mounted at `path` (`umount2(MNT_DETACH)`); errors are ignored.
pub(crate) fn detach_mount(path: &CStr) {
    // SAFETY: umount2 with a NUL-terminated path.
    unsafe {
        libc::umount2(path.as_ptr(), libc::MNT_DETACH);
    }
}

/// Sets the nice value of the calling thread only.
pub(crate) fn nice_this_thread(nice: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscalls without pointers; on Linux PRIO_PROCESS with a thread id sets the
    // nice value of that thread only.
    let r = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice)
    };
    if r != 0 {
        return Err(last_error());
    }
    Ok(())
}

/// Sends SIGKILL to `pid`; errors (it is gone already) are ignored.
pub(crate) fn sigkill(pid: i32) {
    // SAFETY: kill(2) with plain integers.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Waits up to `ms` milliseconds for `POLLPRI` on `fd` (how cgroupfs signals a change of
/// `cgroup.events`); on a plain file it returns at once.
pub(crate) fn wait_priority_event(fd: &impl AsRawFd, ms: i32) {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLPRI, revents: 0 };
    // SAFETY: one valid pollfd on a descriptor the caller holds open.
    unsafe {
        libc::poll(&mut pfd, 1, ms);
    }
}
