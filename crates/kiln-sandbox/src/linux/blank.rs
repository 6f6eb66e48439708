//! Building a blank environment in the parent: its cgroups, the descriptors and buffers init
//! needs (it may not allocate), the `clone` into new namespaces, and the wait for its "ready";
//! also the root entries every blank gets and the detached code trees a claim carries.

use super::backend::{IdLease, Inner};
use super::cgroups::{self, Cgroups, Limits};
use super::child::{self, Plan, RootEntry};
use super::protocol::{self, Message, Msg};
use super::reaper::*;
use super::*;
use crate::SandboxError;
use std::ffi::CString;
use std::fs;
use std::io::{self, ErrorKind};
use std::mem::{size_of, zeroed};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::time::Duration;

/// `/bin`, `/lib`, ... as the host has them: symlinks are recreated, directories bound.
pub(super) fn host_root_entries() -> io::Result<Vec<RootEntry>> {
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

/// Directories the new root always has (made by init before the root entries).
pub(super) const FIXED_ROOT_DIRS: &[&str] = &["usr", "etc", "var", "var/task", "opt", "tmp", "proc", "dev"];

/// The root entries of [`LinuxOptions::read_only_binds`]: the missing parent directories of
/// each target, then the bind. A target may not hide what the root itself provides.
pub(super) fn extra_root_entries(binds: &[(std::path::PathBuf, std::path::PathBuf)]) -> io::Result<Vec<RootEntry>> {
    let mut out = Vec::new();
    let mut made: Vec<std::path::PathBuf> = Vec::new();
    for (source, target) in binds {
        let rel = target.strip_prefix("/").map_err(|_| invalid("a bind target must be an absolute path"))?;
        if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(invalid("a bind target must be a plain absolute path"));
        }
        let first = rel.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned()).unwrap_or_default();
        if ["usr", "etc", "tmp", "proc", "dev", "bin", "sbin", "lib", "lib64"].contains(&first.as_str())
            || rel.starts_with("var/task")
            || FIXED_ROOT_DIRS.iter().any(|d| rel == Path::new(d))
        {
            return Err(invalid("a bind target may not cover a directory the root provides"));
        }
        if !fs::metadata(source)?.is_dir() {
            return Err(invalid("a bind source must be a directory"));
        }
        let mut parent = std::path::PathBuf::new();
        let parts: Vec<_> = rel.components().collect();
        for c in &parts[..parts.len() - 1] {
            parent.push(c);
            if FIXED_ROOT_DIRS.iter().any(|d| parent == Path::new(d)) || made.contains(&parent) {
                continue;
            }
            made.push(parent.clone());
            out.push(RootEntry::Dir { name: cstring(parent.as_os_str().as_bytes())? });
        }
        made.push(rel.to_path_buf());
        out.push(RootEntry::BindReadOnly {
            source: cstring(source.as_os_str().as_bytes())?,
            name: cstring(rel.as_os_str().as_bytes())?,
        });
    }
    Ok(out)
}

/// A descriptor moved to 3 or above, so the child's own 0, 1, 2 never collide with it.
pub(super) fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
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

pub(super) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
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
pub(super) fn recv_msg(sock: &OwnedFd, timeout: Duration) -> io::Result<(Option<Message>, Option<OwnedFd>)> {
    let mut pfd = libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r > 0 {
            break;
        }
        if r == 0 {
            return Err(io::Error::new(ErrorKind::TimedOut, "init did not answer"));
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
    if n as usize != size_of::<Msg>() {
        return Err(io::Error::new(ErrorKind::UnexpectedEof, "init exited"));
    }
    Ok((Message::from_wire(msg), passed))
}

/// Removes a half-built environment's cgroups unless disarmed.
pub(super) struct CgroupGuard<'a> {
    pub(super) cgroups: &'a dyn Cgroups,
    pub(super) id: &'a str,
    pub(super) armed: bool,
}

impl Drop for CgroupGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = cgroups::kill_and_remove(self.cgroups, self.id) {
                tracing::warn!(env = self.id, error = %e, cause = ?std::error::Error::source(&e), "cannot remove cgroups");
            }
        }
    }
}

/// An environment without a function yet: namespaces, cgroups, root (with an empty
/// `/var/task`), loopback and Runtime API listener are made, and its init waits for a claim.
pub(super) struct Blank {
    /// Name of its cgroups: `blank.<n>` for the pool's, the environment id for one built on
    /// the spot.
    pub(super) cgroup: String,
    pub(super) pid: i32,
    pub(super) pidfd: OwnedFd,
    /// kiln's end of the socket pair to init.
    pub(super) sock: OwnedFd,
    pub(super) listener: TcpListener,
    /// Read end of the output pipe (non-blocking).
    pub(super) output: OwnedFd,
    /// What its cgroups are set to now.
    pub(super) limits: Limits,
    /// Size of its `/tmp` now.
    pub(super) tmp_mb: u32,
    pub(super) host_id: IdLease,
}

impl Blank {
    /// Kills the blank, reaps its init and removes its cgroups.
    pub(super) fn discard(self, cg: &dyn Cgroups) {
        pidfd_kill(&self.pidfd);
        waitid_pidfd(&self.pidfd, true);
        if let Err(e) = cgroups::kill_and_remove(cg, &self.cgroup) {
            tracing::warn!(blank = %self.cgroup, error = %e, cause = ?std::error::Error::source(&e), "cannot remove cgroups");
        }
    }
}

/// Discards many blanks, killing them all before waiting for any.
pub(super) fn discard_all(blanks: Vec<Blank>, cg: &dyn Cgroups) {
    for b in &blanks {
        pidfd_kill(&b.pidfd);
    }
    for b in blanks {
        b.discard(cg);
    }
}

/// Builds a blank environment whose cgroups are named `cgroup`, with `limits` and a `/tmp` of
/// `tmp_mb`. Blocking: ~2 ms.
pub(super) fn build_blank(inner: &Inner, cgroup: &str, limits: Limits, tmp_mb: u32) -> Result<Blank, SandboxError> {
    let step = |s, e| SandboxError::step(cgroup, s, e);
    let procs = inner.cgroups.create(cgroup, &limits).map_err(|e| step("create cgroups", e.into()))?;
    let mut guard = CgroupGuard { cgroups: inner.cgroups.as_ref(), id: cgroup, armed: true };
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
    let host_id = inner
        .host_ids
        .lease()
        .ok_or_else(|| step("allocate host uid", io::Error::other("every host uid of this instance is in use")))?;
    let tmp_opts = cstring(format!("size={tmp_mb}m,mode=1777,uid={0},gid={0}", host_id.id).as_bytes())
        .map_err(|e| step("prepare /tmp", e))?;
    // Where the claim lands in init: allocated here, because init may not allocate. Zeroed so
    // that init's view of them is initialised memory.
    let mut claim_buf = vec![0u8; protocol::CLAIM_MAX];
    let mut envp_buf: Vec<*const libc::c_char> = vec![std::ptr::null(); protocol::MAX_ENV_VARS + 1];
    // The stack the bootstrap's process runs on from clone to exec (u128s: 16-byte aligned).
    let mut bootstrap_stack = vec![0u128; BOOTSTRAP_STACK / size_of::<u128>()];

    let procs_raw: Vec<RawFd> = procs_fds.iter().map(AsRawFd::as_raw_fd).collect();
    // Where init moves once the bootstrap runs (out of the freezer), and the freezer's control.
    let init_cgroup_file = match inner.cgroups.init_after_start(cgroup) {
        Some(path) => Some(
            fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map(OwnedFd::from)
                .and_then(above_stdio)
                .map_err(|e| step("open cgroup.procs", e))?,
        ),
        None => None,
    };
    let init_cgroup = init_cgroup_file.as_ref().map_or(-1, AsRawFd::as_raw_fd);
    let thaw = inner.cgroups.thaw_control(cgroup);
    let thaw_file = match &thaw {
        Some((path, _)) => Some(
            fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map(OwnedFd::from)
                .and_then(above_stdio)
                .map_err(|e| step("open freezer", e))?,
        ),
        None => None,
    };
    let thaw_fd = thaw_file.as_ref().map_or(-1, AsRawFd::as_raw_fd);
    let mut keep: Vec<RawFd> = procs_raw.clone();
    keep.extend([init_cgroup, thaw_fd].into_iter().filter(|fd| *fd >= 0));
    keep.push(child_sock.as_raw_fd());
    keep.push(out_w.as_raw_fd());
    keep.sort_unstable();
    keep.dedup();
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
        init_cgroup,
        thaw_fd,
        thaw_value: thaw.as_ref().map_or(&b""[..], |t| t.1),
        sock: child_sock.as_raw_fd(),
        out_w: out_w.as_raw_fd(),
        root: &inner.root_mountpoint,
        root_entries: &inner.root_entries,
        tmp_opts: &tmp_opts,
        claim_buf: claim_buf.as_mut_ptr(),
        claim_cap: claim_buf.len(),
        envp_buf: envp_buf.as_mut_ptr(),
        envp_cap: envp_buf.len(),
        // SAFETY: one past the end of the allocation, which is where a downward stack starts.
        bootstrap_stack: unsafe { bootstrap_stack.as_mut_ptr().add(bootstrap_stack.len()) }.cast(),
        filters: &fprogs,
        uid: host_id.id,
        gid: host_id.id,
        ns_uid: FUNCTION_UID,
        ns_gid: FUNCTION_GID,
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
        libc::syscall(libc::SYS_clone, (flags | libc::SIGCHLD) as libc::c_long, 0, &mut pidfd as *mut libc::c_int, 0, 0)
    };
    if pid == 0 {
        // SAFETY: we are the child of the clone above, with new pid and mount namespaces.
        unsafe { child::run(&plan) }
    }
    if pid < 0 {
        return Err(step("clone namespaces", last_error()));
    }
    // SAFETY: CLONE_PIDFD gave us this descriptor; nobody else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // The child has its own copies; ours can go.
    drop((procs_fds, child_sock, out_w, claim_buf, envp_buf, bootstrap_stack, thaw_file, init_cgroup_file));

    let fail = |e: SandboxError| {
        pidfd_kill(&pidfd);
        waitid_pidfd(&pidfd, true);
        e
    };
    let listener = match recv_msg(&host_sock, SETUP_TIMEOUT) {
        Ok((Some(Message::Ready), Some(fd))) => TcpListener::from(fd),
        Ok((Some(Message::SetupFailed { step, errno }), _)) => return Err(fail(failed_step(cgroup, step, errno))),
        Ok(_) => return Err(fail(step("wait for environment", invalid_data("unexpected message from init")))),
        Err(e) => return Err(fail(step("wait for environment", e))),
    };
    guard.armed = false;
    Ok(Blank {
        cgroup: cgroup.to_owned(),
        pid: pid as i32,
        pidfd,
        sock: host_sock,
        listener,
        output: out_r,
        limits,
        tmp_mb,
        host_id,
    })
}

/// The error init reported in a [`Message::SetupFailed`].
pub(super) fn failed_step(id: &str, step: protocol::Step, errno: i32) -> SandboxError {
    SandboxError::step(id, step.name(), io::Error::from_raw_os_error(errno))
}

/// A host directory as a detached mount tree (every mount below it included), read-only,
/// nosuid, nodev and private throughout: what a claim hands init to attach with `move_mount`
/// (the code at `/var/task`; the same fits any per-function directory, e.g. `/opt`).
pub(super) fn detached_read_only_tree(dir: &CString) -> io::Result<OwnedFd> {
    // SAFETY: open_tree with a valid C path; the result is checked and owned.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            dir.as_ptr(),
            sys::OPEN_TREE_CLONE | sys::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(last_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let attr = sys::MountAttr {
        attr_set: sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
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
            &attr as *const sys::MountAttr,
            size_of::<sys::MountAttr>(),
        )
    };
    if r < 0 {
        return Err(last_error());
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_binds_get_their_parents_and_may_not_cover_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().to_path_buf();
        let binds = vec![
            (src.clone(), "/var/runtime".into()),
            (src.clone(), "/root/.pyenv/versions/3.12.1".into()),
            (src.clone(), "/root/.pyenv/versions/3.13.0".into()),
        ];
        let names: Vec<String> = extra_root_entries(&binds)
            .unwrap()
            .iter()
            .map(|e| match e {
                RootEntry::Dir { name } => format!("dir {}", name.to_str().unwrap()),
                RootEntry::BindReadOnly { name, .. } => format!("bind {}", name.to_str().unwrap()),
                RootEntry::Symlink { name, .. } => format!("link {}", name.to_str().unwrap()),
            })
            .collect();
        assert_eq!(
            names,
            [
                "bind var/runtime",
                "dir root",
                "dir root/.pyenv",
                "dir root/.pyenv/versions",
                "bind root/.pyenv/versions/3.12.1",
                "bind root/.pyenv/versions/3.13.0",
            ]
        );
        for bad in ["/usr/lib", "/var/task", "/var/task/x", "/tmp", "/opt", "relative", "/var/../etc", "/"] {
            assert!(extra_root_entries(&[(src.clone(), bad.into())]).is_err(), "{bad}");
        }
        assert!(extra_root_entries(&[(src.join("missing"), "/var/runtime".into())]).is_err());
    }
}
