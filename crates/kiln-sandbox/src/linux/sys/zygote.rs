//! The system calls of the zygote ([`crate::linux::zygote`]) and of kiln's side of its socket.
//!
//! The zygote is a fork of a multi-threaded kiln, so its calls follow the rules of the child's
//! ([`super::Sys`]): raw system calls on memory that exists, no allocation, no locks, no
//! panics. kiln's side ([`recv_reply`], [`thread_nice`]) wraps descriptors it owns.

use super::{errno, ok, SysResult};
use libc::c_int;
use std::io::{self, ErrorKind};
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::null_mut;
use std::time::Duration;

/// Most descriptors one request to the zygote carries.
pub(crate) const MAX_REQUEST_FDS: usize = 16;

/// Control buffer of [`MAX_REQUEST_FDS`] descriptors: one `cmsghdr` (16 bytes) plus the
/// descriptors, in 8-byte words.
type Cbuf = [u64; 2 + MAX_REQUEST_FDS / 2];

/// Sends `bytes` as one datagram with up to [`MAX_REQUEST_FDS`] descriptors (`SCM_RIGHTS`),
/// without `SIGPIPE`. Allocates nothing: kiln and the zygote both use it.
pub(crate) fn send_fds(sock: c_int, bytes: &[u8], fds: &[c_int]) -> SysResult<usize> {
    super::send_with::<{ 2 + MAX_REQUEST_FDS / 2 }>(sock, bytes, fds, MAX_REQUEST_FDS)
}

/// Receives one datagram into `buf` with its descriptors, close-on-exec (`MSG_CMSG_CLOEXEC`),
/// retrying on `EINTR`. Returns the datagram's length and how many descriptors landed at the
/// start of `fds`; `None` at end of file. A datagram or descriptor list that did not fit is
/// `EMSGSIZE`, and what did arrive of it is closed.
pub(crate) fn recv_fds(
    sock: c_int,
    buf: &mut [u8],
    fds: &mut [c_int; MAX_REQUEST_FDS],
) -> SysResult<Option<(usize, usize)>> {
    *fds = [-1; MAX_REQUEST_FDS];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut cbuf: Cbuf = [0; 2 + MAX_REQUEST_FDS / 2];
    loop {
        // SAFETY: msghdr is plain data.
        let mut hdr: libc::msghdr = unsafe { zeroed() };
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = cbuf.as_mut_ptr().cast();
        hdr.msg_controllen = size_of::<Cbuf>() as _;
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
        if n == 0 && got == 0 {
            return Ok(None);
        }
        if hdr.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
            for fd in fds.iter().take(got) {
                // SAFETY: closing descriptors that just arrived and nobody else knows of.
                unsafe { libc::close(*fd) };
            }
            *fds = [-1; MAX_REQUEST_FDS];
            return Err(libc::EMSGSIZE);
        }
        return Ok(Some((n as usize, got)));
    }
}

/// A private anonymous read-write mapping of `len` bytes (zero-filled; pages are allocated
/// when first touched).
pub(crate) fn map_anonymous(len: usize) -> SysResult<*mut u8> {
    // SAFETY: a new anonymous mapping; no existing memory is touched.
    let p = unsafe {
        libc::mmap(null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    if p == libc::MAP_FAILED {
        return Err(errno());
    }
    Ok(p.cast())
}

/// Unmaps what [`map_anonymous`] returned.
///
/// # Safety
/// `ptr` and `len` must be a mapping of [`map_anonymous`] that nothing uses any more.
pub(crate) unsafe fn unmap(ptr: *mut u8, len: usize) {
    // SAFETY: the caller guarantees the mapping is ours and unused.
    unsafe { libc::munmap(ptr.cast(), len) };
}

/// Names the calling thread (`/proc/PID/comm`, what `ps` and `top` show).
pub(crate) fn set_name(name: &std::ffi::CStr) {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes (longer is cut).
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
}

/// `setpriority` of the calling process (the zygote is single-threaded).
pub(crate) fn set_nice(nice: c_int) -> SysResult<()> {
    // SAFETY: setpriority takes integers.
    ok(unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) }).map(drop)
}

/// The nice value of the calling thread (what a blank built by it would have had).
pub(crate) fn thread_nice() -> c_int {
    // SAFETY: plain syscalls without pointers; errno is reset first because -1 is a valid
    // nice value.
    unsafe {
        *libc::__errno_location() = 0;
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let n = libc::getpriority(libc::PRIO_PROCESS, tid);
        if n == -1 && *libc::__errno_location() != 0 {
            0
        } else {
            n
        }
    }
}

/// Waits up to `timeout` for the zygote's answer on `sock`: its bytes (at most `buf.len()`)
/// and the descriptor it carried, if any. End of file (the zygote died) is `UnexpectedEof`.
pub(crate) fn recv_reply(sock: &OwnedFd, buf: &mut [u8], timeout: Duration) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut pfd = libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r > 0 {
            break;
        }
        if r == 0 {
            return Err(io::Error::new(ErrorKind::TimedOut, "the zygote did not answer"));
        }
        if io::Error::last_os_error().kind() != ErrorKind::Interrupted {
            return Err(io::Error::last_os_error());
        }
    }
    let mut fds = [-1; MAX_REQUEST_FDS];
    let (n, got) = match recv_fds(sock.as_raw_fd(), buf, &mut fds) {
        Ok(Some(r)) => r,
        Ok(None) => return Err(io::Error::new(ErrorKind::UnexpectedEof, "the zygote exited")),
        Err(e) => return Err(io::Error::from_raw_os_error(e)),
    };
    let mut owned = fds.iter().take(got).map(|&fd| {
        // SAFETY: recv_fds gave us these fresh descriptors; nobody else owns them.
        unsafe { OwnedFd::from_raw_fd(fd) }
    });
    let first = owned.next();
    // More than one descriptor is not something the zygote sends: drop (close) the rest.
    owned.for_each(drop);
    Ok((n, first))
}
