//! The system calls of the zygote ([`crate::linux::zygote`]) and of kiln's side of its socket.
//!
//! The zygote is a fork of a multi-threaded kiln, so its calls follow the rules of the child's
//! ([`super::Sys`]): raw system calls on memory that exists, no allocation, no locks, no
//! panics. kiln's side ([`recv_reply`], [`thread_nice`]) wraps descriptors it owns.

use super::{errno, SysResult};
use libc::c_int;
use std::io::{self, ErrorKind};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::null_mut;
use std::time::Duration;

/// Most descriptors one request to the zygote carries.
pub(crate) const MAX_REQUEST_FDS: usize = 16;

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
    let got = super::recv_with::<{ 2 + MAX_REQUEST_FDS / 2 }>(sock, buf, fds)?;
    if got.len == 0 && got.fds == 0 {
        return Ok(None);
    }
    if got.truncated {
        for fd in fds.iter().take(got.fds) {
            // SAFETY: closing descriptors that just arrived and nobody else knows of.
            unsafe { libc::close(*fd) };
        }
        *fds = [-1; MAX_REQUEST_FDS];
        return Err(libc::EMSGSIZE);
    }
    Ok(Some((got.len, got.fds)))
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
    super::host::wait_readable(sock, timeout, "the zygote did not answer")?;
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
