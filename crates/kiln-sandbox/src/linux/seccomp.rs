//! The seccomp filter every bootstrap runs under.
//!
//! A deny list, not an allow list: functions are arbitrary Linux programs (any language
//! runtime, any native library), so an allow list would break real code, while the calls below
//! are ones a function never needs and that widen the kernel's attack surface or would let a
//! process undo its sandbox. Denied calls fail with `EPERM`, so programs see an ordinary
//! permission error rather than dying.
//!
//! Two programs are installed, both built once per backend:
//! 1. a hand-written prelude that kills the process on a foreign architecture (the `int 0x80`
//!    i386 entry), returns `EPERM` for the x32 syscall range (numbers with bit 30 set, which
//!    would otherwise bypass the number checks below), and returns `ENOSYS` for `clone3`,
//!    whose flags live in memory a filter cannot read: glibc then falls back to `clone`;
//! 2. the deny list compiled by `seccompiler`, including `clone` with any namespace flag.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};
use std::collections::BTreeMap;

/// Why the filter could not be built (a bug or an unsupported architecture).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SeccompError {
    #[error("seccomp filter for {arch} cannot be built")]
    Build {
        arch: &'static str,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error("seccomp filter for {arch} cannot be compiled")]
    Compile {
        arch: &'static str,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error("architecture {0} is not supported by the seccomp filter")]
    Arch(&'static str),
}

/// Syscalls a function never needs: mounts and namespaces (its sandbox), tracing and reading
/// other processes, kernel code and configuration, keyrings, accounting, raw handles, and
/// interfaces that are mostly attack surface (bpf, perf, userfaultfd, io_uring).
const DENIED: &[libc::c_long] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_getfd,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_quotactl_fd,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_userfaultfd,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_syslog,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_vhangup,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
];

/// `clone` flags that create namespaces (CLONE_NEWTIME shares its bit with CSIGNAL in
/// `clone` and is covered by `unshare` being denied).
const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWCGROUP,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
];

#[cfg(target_arch = "x86_64")]
const ARCH: (&str, u32) = ("x86_64", 62 | 0x8000_0000 | 0x4000_0000);
#[cfg(target_arch = "aarch64")]
const ARCH: (&str, u32) = ("aarch64", 183 | 0x8000_0000 | 0x4000_0000);

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn stmt(code: u16, k: u32) -> seccompiler::sock_filter {
    seccompiler::sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> seccompiler::sock_filter {
    seccompiler::sock_filter { code, jt, jf, k }
}

/// The prelude: architecture check, x32 range, clone3 → ENOSYS.
fn prelude() -> BpfProgram {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
                             // struct seccomp_data { int nr; __u32 arch; ... }
    const OFF_NR: u32 = 0;
    const OFF_ARCH: u32 = 4;
    vec![
        stmt(LD_W_ABS, OFF_ARCH),
        jump(JEQ_K, ARCH.1, 1, 0),
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(LD_W_ABS, OFF_NR),
        jump(JSET_K, X32_SYSCALL_BIT, 0, 1),
        stmt(RET_K, RET_ERRNO | libc::EPERM as u32),
        jump(JEQ_K, libc::SYS_clone3 as u32, 0, 1),
        stmt(RET_K, RET_ERRNO | libc::ENOSYS as u32),
        stmt(RET_K, RET_ALLOW),
    ]
}

/// Builds the programs, in the order they are to be installed.
pub(crate) fn build() -> Result<Vec<BpfProgram>, SeccompError> {
    let arch_name = ARCH.0;
    let target = arch_name.try_into().map_err(|_| SeccompError::Arch(arch_name))?;
    let build = |source| SeccompError::Build { arch: arch_name, source };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED.iter().map(|nr| (*nr, Vec::new())).collect();
    // `clone` is denied only with a namespace flag: each rule matches one flag, any rule denies.
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|flag| {
            let flag = *flag as u64;
            let cond =
                SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(flag), flag).map_err(build)?;
            SeccompRule::new(vec![cond]).map_err(build)
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), target)
        .map_err(build)?;
    let denylist: BpfProgram = filter.try_into().map_err(|source| SeccompError::Compile { arch: arch_name, source })?;
    Ok(vec![prelude(), denylist])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_build_and_fit_the_kernel_limit() {
        let progs = build().unwrap();
        assert_eq!(progs.len(), 2);
        for p in &progs {
            // BPF_MAXINSNS
            assert!(!p.is_empty() && p.len() <= 4096, "{}", p.len());
        }
        assert_eq!(progs[0].last().unwrap().k, RET_ALLOW);
    }
}
