//! Building a blank environment in the parent: its cgroups, the descriptors init needs, the
//! request to the zygote that clones init into new namespaces (`zygote.rs`), and the wait for
//! its "ready"; also the root entries every blank gets and the detached code trees a claim
//! carries.

use super::backend::{IdLease, Inner};
use super::cgroups::{self, Cgroups, Limits};
use super::child::RootEntry;
use super::protocol::{self, Message};
use super::sys::host::{above_stdio, pidfd_kill, recv_msg, seqpacket_pair, waitid_pidfd};
use super::zygote::InitRequest;
use super::*;
use crate::SandboxError;
use std::fs;
use std::io::{self};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

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
    // The init itself is cloned by the zygote (see `zygote.rs`), from its memory rather than
    // kiln's; it gets copies of these descriptors and is kiln's child all the same.
    let request = InitRequest {
        sock: child_sock.as_raw_fd(),
        out_w: out_w.as_raw_fd(),
        procs: &procs_raw,
        init_cgroup: init_cgroup_file.as_ref().map_or(-1, AsRawFd::as_raw_fd),
        thaw_fd: thaw_file.as_ref().map_or(-1, AsRawFd::as_raw_fd),
        thaw_value: thaw.as_ref().map_or(&b""[..], |t| t.1),
        host_id: host_id.id,
        tmp_mb,
    };
    let cloned = inner.zygote.clone_init(inner, &request);
    // The init has its own copies; ours can go.
    drop((procs_fds, child_sock, out_w, thaw_file, init_cgroup_file));
    let (pid, pidfd) = cloned.map_err(|e| step("clone namespaces", io::Error::other(e)))?;

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
        pid,
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
