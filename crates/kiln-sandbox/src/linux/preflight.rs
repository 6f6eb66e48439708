//! Checks at start-up, so that a host that cannot build environments says so (with a way out)
//! before kiln serves anything: capabilities, seccomp, namespaces, the scratch mountpoint.

use super::sys::host;
use super::*;
use crate::SandboxError;
use std::fs;
use std::io::{self, ErrorKind};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Capabilities kiln needs to build environments: (number, name).
pub(super) const NEEDED_CAPS: &[(u32, &str)] = &[
    (1, "CAP_DAC_OVERRIDE"),
    (5, "CAP_KILL"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
    (8, "CAP_SETPCAP"),
    (12, "CAP_NET_ADMIN"),
    (21, "CAP_SYS_ADMIN"),
    (27, "CAP_MKNOD"),
];

/// Refuses to start without the capabilities environments need.
pub(super) fn check_capabilities() -> Result<(), SandboxError> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    missing_capabilities(eff).map_or(Ok(()), |why| Err(SandboxError::Privileges(why)))
}

/// What to tell the operator when the effective capability set `eff` lacks something.
pub(super) fn missing_capabilities(eff: u64) -> Option<String> {
    let missing: Vec<&str> =
        NEEDED_CAPS.iter().filter(|(n, _)| eff & (1u64 << n) == 0).map(|(_, name)| *name).collect();
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "sandboxes need root privileges but kiln lacks {}; run kiln serve as root, or use \
         --isolation none (no isolation)",
        missing.join(", ")
    ))
}

pub(super) fn check_seccomp() -> Result<(), SandboxError> {
    if !host::seccomp_available() {
        return Err(SandboxError::Privileges(
            "this kernel has no seccomp support; use a kernel built with CONFIG_SECCOMP_FILTER, \
             or use --isolation none"
                .into(),
        ));
    }
    Ok(())
}

/// Creates namespaces once in a child that exits at once, so missing support shows at start-up.
pub(super) fn probe_namespaces() -> Result<(), SandboxError> {
    let flags = libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWCGROUP;
    host::probe_namespaces(flags).map_err(|e| {
        SandboxError::Privileges(format!(
            "cannot create pid, mount, network, ipc, uts and cgroup namespaces ({e}); run kiln \
             as root on a kernel with namespaces enabled, or use --isolation none"
        ))
    })
}

/// Makes sure the scratch mountpoint exists and is an empty directory on the host.
pub(super) fn prepare_scratch(root: &Path) -> io::Result<()> {
    fs::create_dir_all(root)?;
    let busy = fs::read_dir(root)?.next().is_some();
    if busy {
        // Something is mounted there on the host (it never should be): detach it.
        let c = cstring(root.as_os_str().as_bytes())?;
        host::detach_mount(&c);
        if fs::read_dir(root)?.next().is_some() {
            return Err(io::Error::new(ErrorKind::DirectoryNotEmpty, format!("{} must be empty", root.display())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_capabilities_are_named_with_a_way_out() {
        assert_eq!(missing_capabilities(0x1ff_feff_ffff), None);
        let why = missing_capabilities(0).unwrap();
        assert!(why.contains("CAP_SYS_ADMIN") && why.contains("CAP_SETUID"), "{why}");
        assert!(why.contains("run kiln serve as root") && why.contains("--isolation none"));
        let why = missing_capabilities(0x1ff_feff_ffff & !(1 << 21)).unwrap();
        assert!(why.contains("lacks CAP_SYS_ADMIN;"), "{why}");
    }
}
