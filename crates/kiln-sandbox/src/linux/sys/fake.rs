//! A [`Sys`] that makes no system call: it records each one as a line of text and answers as
//! a kernel would on the happy path, so init's steps can run in a unit test, as any user.

use super::{Errno, Rlimit, SigMask, Sys, SysResult};
use crate::linux::protocol::MAX_FDS;
use libc::{c_char, c_int, c_void, pid_t};
use std::ffi::CStr;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

/// Descriptor numbers the fake hands out start here.
const FIRST_FD: c_int = 100;
/// The pid the bootstrap's process gets.
pub(crate) const BOOTSTRAP_PID: pid_t = 2;

/// Records every call, in order; see [`RecordingSys::calls`]. A process started with
/// [`Sys::clone_parked`] runs on a thread of its own, so that its steps before [`Sys::park`]
/// are recorded where they happen (at the clone) and the rest where [`Sys::unpark`] lets it go.
#[derive(Debug, Default)]
pub(crate) struct RecordingSys {
    calls: Mutex<Vec<String>>,
    next_fd: AtomicI32,
    /// What the claim socket delivers once (then end of file), with this descriptor.
    claim: Mutex<Option<(Vec<u8>, c_int)>>,
    parked: Mutex<Parking>,
    parked_cv: Condvar,
}

/// Where the process of [`Sys::clone_parked`] is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Parking {
    #[default]
    None,
    Running,
    Parked,
    Released,
    /// Let go without a claim (the fake is dropped): `park` answers end of file.
    Cancelled,
    Done,
}

impl RecordingSys {
    /// A fake whose socket delivers `claim` with the code tree as descriptor `code_fd`.
    pub(crate) fn with_claim(claim: Vec<u8>, code_fd: c_int) -> Self {
        let sys = RecordingSys::default();
        *sys.claim.lock().unwrap_or_else(PoisonError::into_inner) = Some((claim, code_fd));
        sys
    }

    /// The calls so far, e.g. `mount tmpfs -> tmp`, `setresgid 1000`, `execve /var/task/x`.
    pub(crate) fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn log(&self, call: String) {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).push(call);
    }

    fn fd(&self) -> c_int {
        self.next_fd.fetch_max(FIRST_FD, Ordering::Relaxed);
        self.next_fd.fetch_add(1, Ordering::Relaxed)
    }

    /// Sets the parked process's state and waits until `until` holds.
    fn parked_step(&self, set: Option<Parking>, until: impl Fn(Parking) -> bool) -> Parking {
        let mut st = self.parked.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(set) = set {
            *st = set;
            self.parked_cv.notify_all();
        }
        while !until(*st) {
            st = self.parked_cv.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        *st
    }
}

impl Drop for RecordingSys {
    fn drop(&mut self) {
        // A process still parked (init failed before the claim) must not outlive the fake.
        let st = *self.parked.lock().unwrap_or_else(PoisonError::into_inner);
        if st == Parking::Parked {
            self.parked_step(Some(Parking::Cancelled), |s| s == Parking::Done);
        }
    }
}

fn s(c: &CStr) -> String {
    c.to_string_lossy().into_owned()
}

impl Sys for RecordingSys {
    fn reset_signal_handlers(&self) {
        self.log("reset_signal_handlers".into());
    }
    fn set_sigmask(&self, mask: SigMask) -> SysResult<()> {
        self.log(format!("sigmask {mask:?}"));
        Ok(())
    }
    fn umask(&self, mode: libc::mode_t) {
        self.log(format!("umask {mode:o}"));
    }
    fn set_dumpable(&self, dumpable: bool) -> SysResult<()> {
        self.log(format!("dumpable {dumpable}"));
        Ok(())
    }
    fn close_range(&self, first: u32, last: u32) -> SysResult<()> {
        self.log(format!("close_range {first} {last}"));
        Ok(())
    }
    fn open(&self, path: &CStr, _flags: c_int, _mode: libc::mode_t) -> SysResult<c_int> {
        self.log(format!("open {}", s(path)));
        Ok(self.fd())
    }
    fn dup2(&self, from: c_int, to: c_int) -> SysResult<()> {
        self.log(format!("dup2 {from} {to}"));
        Ok(())
    }
    fn write(&self, fd: c_int, bytes: &[u8]) -> SysResult<usize> {
        self.log(format!("write {fd}"));
        Ok(bytes.len())
    }
    fn pwrite(&self, fd: c_int, bytes: &[u8], _offset: libc::off_t) -> SysResult<usize> {
        self.log(format!("pwrite {fd}"));
        Ok(bytes.len())
    }
    fn read(&self, fd: c_int, _buf: &mut [u8]) -> SysResult<usize> {
        // End of file: the exec report pipe closed (exec worked), the signalfd is drained.
        self.log(format!("read {fd}"));
        Ok(0)
    }
    fn close(&self, fd: c_int) {
        self.log(format!("close {fd}"));
    }
    fn unshare(&self, flags: c_int) -> SysResult<()> {
        self.log(format!("unshare {flags:#x}"));
        Ok(())
    }
    fn mount(
        &self,
        source: Option<&CStr>,
        target: &CStr,
        _fstype: Option<&CStr>,
        flags: libc::c_ulong,
        _data: Option<&CStr>,
    ) -> SysResult<()> {
        let ro = if flags & libc::MS_REMOUNT != 0 && flags & libc::MS_RDONLY != 0 { " (remount ro)" } else { "" };
        self.log(format!("mount {} -> {}{ro}", source.map_or_else(|| "-".into(), s), s(target)));
        Ok(())
    }
    fn make_tree_read_only(&self, path: &CStr) -> SysResult<()> {
        self.log(format!("make_tree_read_only {}", s(path)));
        Ok(())
    }
    fn move_mount(&self, tree: c_int, target: &CStr) -> SysResult<()> {
        self.log(format!("move_mount {tree} {}", s(target)));
        Ok(())
    }
    fn detach_mount(&self, target: &CStr) -> SysResult<()> {
        self.log(format!("detach_mount {}", s(target)));
        Ok(())
    }
    fn chdir(&self, path: &CStr) -> SysResult<()> {
        self.log(format!("chdir {}", s(path)));
        Ok(())
    }
    fn mkdir(&self, path: &CStr, _mode: libc::mode_t) -> SysResult<()> {
        self.log(format!("mkdir {}", s(path)));
        Ok(())
    }
    fn rmdir(&self, path: &CStr) -> SysResult<()> {
        self.log(format!("rmdir {}", s(path)));
        Ok(())
    }
    fn unlink(&self, path: &CStr) -> SysResult<()> {
        self.log(format!("unlink {}", s(path)));
        Ok(())
    }
    fn symlink(&self, target: &CStr, link: &CStr) -> SysResult<()> {
        self.log(format!("symlink {} {}", s(link), s(target)));
        Ok(())
    }
    fn mknod_char(&self, path: &CStr, _mode: libc::mode_t, major: u32, minor: u32) -> SysResult<()> {
        self.log(format!("mknod {} {major}:{minor}", s(path)));
        Ok(())
    }
    fn exists(&self, path: &CStr) -> bool {
        self.log(format!("exists {}", s(path)));
        true
    }
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> SysResult<()> {
        self.log(format!("pivot_root {} {}", s(new_root), s(put_old)));
        Ok(())
    }
    fn sethostname(&self, name: &[u8]) -> SysResult<()> {
        self.log(format!("sethostname {}", String::from_utf8_lossy(name)));
        Ok(())
    }
    fn set_priority(&self, nice: c_int) -> SysResult<()> {
        self.log(format!("set_priority {nice}"));
        Ok(())
    }
    fn set_rlimit(&self, which: Rlimit, value: u64) -> SysResult<()> {
        self.log(format!("set_rlimit {which:?} {value}"));
        Ok(())
    }
    fn clear_ambient_caps(&self) -> SysResult<()> {
        self.log("clear_ambient_caps".into());
        Ok(())
    }
    fn drop_bounding_cap(&self, cap: u32) -> SysResult<()> {
        self.log(format!("drop_bounding_cap {cap}"));
        Ok(())
    }
    fn clear_groups(&self) -> SysResult<()> {
        self.log("clear_groups".into());
        Ok(())
    }
    fn setresgid(&self, gid: u32) -> SysResult<()> {
        self.log(format!("setresgid {gid}"));
        Ok(())
    }
    fn setresuid(&self, uid: u32) -> SysResult<()> {
        self.log(format!("setresuid {uid}"));
        Ok(())
    }
    fn clear_capabilities(&self) -> SysResult<()> {
        self.log("clear_capabilities".into());
        Ok(())
    }
    fn set_no_new_privs(&self) -> SysResult<()> {
        self.log("no_new_privs".into());
        Ok(())
    }
    fn install_seccomp(&self, prog: &libc::sock_fprog) -> SysResult<()> {
        self.log(format!("seccomp {}", prog.len));
        Ok(())
    }
    fn setsid(&self) -> SysResult<()> {
        self.log("setsid".into());
        Ok(())
    }
    fn execve(&self, exe: &CStr, _argv: &[*const c_char], _envp: *const *const c_char) -> Errno {
        self.log(format!("execve {}", s(exe)));
        // A real execve does not come back; the fake says the file was missing.
        libc::ENOENT
    }
    fn loopback_up(&self) -> SysResult<()> {
        self.log("loopback_up".into());
        Ok(())
    }
    fn listen_loopback(&self, port: u16) -> SysResult<c_int> {
        self.log(format!("listen_loopback {port}"));
        Ok(self.fd())
    }
    fn send(&self, sock: c_int, bytes: &[u8], fds: &[c_int]) -> SysResult<()> {
        let msg = crate::linux::protocol::Msg::from_bytes(bytes).and_then(crate::linux::protocol::Message::from_wire);
        self.log(format!("send {sock} {msg:?} {fds:?}"));
        Ok(())
    }
    fn recv_with_fds(&self, sock: c_int, buf: &mut [u8], fds: &mut [c_int; MAX_FDS]) -> SysResult<Option<usize>> {
        self.log(format!("recv {sock}"));
        *fds = [-1; MAX_FDS];
        let Some((claim, code)) = self.claim.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            return Ok(None);
        };
        buf.get_mut(..claim.len()).ok_or(libc::E2BIG)?.copy_from_slice(&claim);
        fds[0] = code;
        Ok(Some(claim.len()))
    }
    fn recv_nowait(&self, sock: c_int, _buf: &mut [u8]) -> SysResult<usize> {
        self.log(format!("recv_nowait {sock}"));
        Ok(0)
    }
    fn pipe(&self) -> SysResult<(c_int, c_int)> {
        self.log("pipe".into());
        Ok((self.fd(), self.fd()))
    }
    unsafe fn clone_parked(
        &self,
        entry: extern "C" fn(*mut c_void) -> c_int,
        _stack: *mut c_void,
        arg: *mut c_void,
    ) -> SysResult<pid_t> {
        self.log("clone_parked".into());
        self.parked_step(Some(Parking::Running), |_| true);
        // The new process on a thread: it records its steps until it parks, and the clone
        // returns then (or once it is done, if it never parks).
        let (me, arg) = (self as *const RecordingSys as usize, arg as usize);
        std::thread::spawn(move || {
            // SAFETY: the fake outlives this thread (its Drop waits for Done), and `arg` is
            // alive until the process is let go (`unpark` waits for Done too).
            let sys = unsafe { &*(me as *const RecordingSys) };
            let status = entry(arg as *mut c_void);
            sys.log(format!("bootstrap returned {status}"));
            sys.parked_step(Some(Parking::Done), |_| true);
        });
        self.parked_step(None, |s| matches!(s, Parking::Parked | Parking::Done));
        Ok(BOOTSTRAP_PID)
    }
    fn park(&self, fd: c_int) -> SysResult<bool> {
        self.log(format!("park {fd}"));
        let st = self.parked_step(Some(Parking::Parked), |s| matches!(s, Parking::Released | Parking::Cancelled));
        Ok(st == Parking::Released)
    }
    fn unpark(&self, fd: c_int) -> SysResult<()> {
        self.log(format!("unpark {fd}"));
        // Wait until the process is done: it borrows init's frame on a thread here, and the
        // recorded order stays one order.
        self.parked_step(Some(Parking::Released), |s| s == Parking::Done);
        Ok(())
    }
    fn set_priority_of(&self, pid: pid_t, nice: c_int) -> SysResult<()> {
        self.log(format!("setpriority {pid} {nice}"));
        Ok(())
    }
    fn signalfd_child(&self) -> SysResult<c_int> {
        self.log("signalfd".into());
        Ok(self.fd())
    }
    fn wait_any(&self) -> SysResult<Option<(pid_t, c_int)>> {
        // The bootstrap exited with status 0.
        self.log("wait_any".into());
        Ok(Some((BOOTSTRAP_PID, 0)))
    }
    fn poll(&self, _fds: &mut [libc::pollfd]) -> SysResult<()> {
        self.log("poll".into());
        Ok(())
    }
    fn exit(&self, code: c_int) -> ! {
        panic!("the fake cannot exit (code {code})")
    }
}
