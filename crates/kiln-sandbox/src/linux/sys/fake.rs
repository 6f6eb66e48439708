//! A [`Sys`] that makes no system call: it records each one as a line of text and answers as
//! a kernel would on the happy path, so init's steps can run in a unit test, as any user.

use super::{Errno, Rlimit, SigMask, Sys, SysResult};
use crate::linux::protocol::MAX_FDS;
use libc::{c_char, c_int, c_void, pid_t};
use std::cell::{Cell, RefCell};
use std::ffi::CStr;

/// Descriptor numbers the fake hands out start here.
const FIRST_FD: c_int = 100;
/// The pid the bootstrap's process gets.
pub(crate) const BOOTSTRAP_PID: pid_t = 2;

/// Records every call, in order; see [`RecordingSys::calls`].
#[derive(Debug, Default)]
pub(crate) struct RecordingSys {
    calls: RefCell<Vec<String>>,
    next_fd: Cell<c_int>,
    /// What the claim socket delivers once (then end of file), with this descriptor.
    claim: RefCell<Option<(Vec<u8>, c_int)>>,
}

impl RecordingSys {
    /// A fake whose socket delivers `claim` with the code tree as descriptor `code_fd`.
    pub(crate) fn with_claim(claim: Vec<u8>, code_fd: c_int) -> Self {
        RecordingSys { claim: RefCell::new(Some((claim, code_fd))), ..Default::default() }
    }

    /// The calls so far, e.g. `mount tmpfs -> tmp`, `setresgid 1000`, `execve /var/task/x`.
    pub(crate) fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    fn log(&self, call: String) {
        self.calls.borrow_mut().push(call);
    }

    fn fd(&self) -> c_int {
        let fd = self.next_fd.get().max(FIRST_FD);
        self.next_fd.set(fd + 1);
        fd
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
        let Some((claim, code)) = self.claim.borrow_mut().take() else { return Ok(None) };
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
    unsafe fn clone_vfork(
        &self,
        entry: extern "C" fn(*mut c_void) -> c_int,
        _stack: *mut c_void,
        arg: *mut c_void,
    ) -> SysResult<pid_t> {
        // As with CLONE_VFORK, the caller waits until the new process is done: run it here,
        // on this stack.
        self.log("clone_vfork".into());
        let status = entry(arg);
        self.log(format!("bootstrap returned {status}"));
        Ok(BOOTSTRAP_PID)
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
