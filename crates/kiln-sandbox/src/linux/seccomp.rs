//! The seccomp filter every bootstrap runs under.
//!
//! An allow list, based on Docker's default profile (moby `profiles/seccomp/default.json`):
//! every system call an ordinary program uses is allowed, everything else, including every
//! number this list does not know (newer kernels' calls, or numbers that do not exist), fails
//! with `ENOSYS`, which programs treat as "this kernel is too old" and fall back from
//! (libuv's io_uring, glibc's clone3). Calls that do exist but that a function must never make
//! (its sandbox's mounts and namespaces, tracing, kernel configuration) fail with `EPERM`, as
//! before, so that programs see an ordinary permission error rather than dying.
//!
//! Three programs are installed, all built once per backend, in this order:
//! 1. the allow list, hand-written as ranges of numbers (`allow_program`): listed calls pass,
//!    the known dangerous ones ([`DENIED`]) get `EPERM`, everything else `ENOSYS`;
//! 2. the argument rules compiled by `seccompiler`: `socket` and `socketpair` outside AF_UNIX,
//!    AF_INET, AF_INET6 and NETLINK_ROUTE (so AF_VSOCK and uevents are out), `personality`
//!    other than Docker's five values, `clone` with a namespace flag get `EPERM`;
//! 3. a hand-written prelude that kills the process on a foreign architecture (the `int 0x80`
//!    i386 entry), returns `EPERM` for the x32 syscall range (numbers with bit 30 set, which
//!    would otherwise bypass the number checks), and returns `ENOSYS` for `clone3`, whose flags
//!    live in memory a filter cannot read: glibc then falls back to `clone`.
//!
//! The kernel runs every program and keeps the strictest answer; among two errno answers the
//! program installed last wins (the prelude's `EPERM` for x32 numbers over the allow list's
//! `ENOSYS`). The kernel also caches, per system call number, "every program allows it whatever
//! the arguments": allowed calls without argument rules cost nothing per call. Building that
//! cache runs each program once per number when it is attached, on every cold start, which is
//! why the allow list is a short hand-written program rather than `seccompiler`'s (1,500
//! instructions, ~3 ms per attach here).

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

/// System calls the libc crate may not name; those from 424 on have the same number on every
/// architecture.
mod nr {
    pub const CACHESTAT: i64 = 451;
    pub const FCHMODAT2: i64 = 452;
    pub const MAP_SHADOW_STACK: i64 = 453;
    pub const FUTEX_WAKE: i64 = 454;
    pub const FUTEX_WAIT: i64 = 455;
    pub const FUTEX_REQUEUE: i64 = 456;
    pub const MSEAL: i64 = 462;
    pub const SETXATTRAT: i64 = 463;
    pub const GETXATTRAT: i64 = 464;
    pub const LISTXATTRAT: i64 = 465;
    pub const REMOVEXATTRAT: i64 = 466;
    #[cfg(target_arch = "x86_64")]
    pub const IO_PGETEVENTS: i64 = 333;
    #[cfg(target_arch = "aarch64")]
    pub const IO_PGETEVENTS: i64 = 292;
}

/// What a function may call: Docker's default allow list, minus what Docker allows that a
/// function does not need and that is attack surface (io_uring, memfd_secret,
/// name_to_handle_at, ptrace and its relatives, fanotify_mark, sethostname's siblings), plus a
/// few calls newer than that list that glibc and runtimes use (fchmodat2, futex2, cachestat,
/// map_shadow_stack, mseal, the *xattrat family). `socket`, `socketpair`, `personality` and
/// `clone` are allowed here and restricted by the deny list.
const ALLOWED: &[i64] = &[
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_adjtimex,
    libc::SYS_bind,
    libc::SYS_brk,
    libc::SYS_capget,
    libc::SYS_capset,
    libc::SYS_chdir,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_getres,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_clone,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_connect,
    libc::SYS_copy_file_range,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_eventfd2,
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_fadvise64,
    libc::SYS_fallocate,
    libc::SYS_fchdir,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_fcntl,
    libc::SYS_fdatasync,
    libc::SYS_fgetxattr,
    libc::SYS_flistxattr,
    libc::SYS_flock,
    libc::SYS_fremovexattr,
    libc::SYS_fsetxattr,
    libc::SYS_fstat,
    libc::SYS_fstatfs,
    libc::SYS_fsync,
    libc::SYS_ftruncate,
    libc::SYS_futex,
    libc::SYS_futex_waitv,
    libc::SYS_getcpu,
    libc::SYS_getcwd,
    libc::SYS_getdents64,
    libc::SYS_getegid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getgroups,
    libc::SYS_getitimer,
    libc::SYS_getpeername,
    libc::SYS_getpgid,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_getpriority,
    libc::SYS_getrandom,
    libc::SYS_getresgid,
    libc::SYS_getresuid,
    libc::SYS_getrlimit,
    libc::SYS_get_robust_list,
    libc::SYS_getrusage,
    libc::SYS_getsid,
    libc::SYS_getsockname,
    libc::SYS_getsockopt,
    libc::SYS_gettid,
    libc::SYS_gettimeofday,
    libc::SYS_getuid,
    libc::SYS_getxattr,
    libc::SYS_inotify_add_watch,
    libc::SYS_inotify_init1,
    libc::SYS_inotify_rm_watch,
    libc::SYS_io_cancel,
    libc::SYS_ioctl,
    libc::SYS_io_destroy,
    libc::SYS_io_getevents,
    nr::IO_PGETEVENTS,
    libc::SYS_ioprio_get,
    libc::SYS_ioprio_set,
    libc::SYS_io_setup,
    libc::SYS_io_submit,
    libc::SYS_kill,
    libc::SYS_landlock_add_rule,
    libc::SYS_landlock_create_ruleset,
    libc::SYS_landlock_restrict_self,
    libc::SYS_lgetxattr,
    libc::SYS_linkat,
    libc::SYS_listen,
    libc::SYS_listxattr,
    libc::SYS_llistxattr,
    libc::SYS_lremovexattr,
    libc::SYS_lseek,
    libc::SYS_lsetxattr,
    libc::SYS_madvise,
    libc::SYS_membarrier,
    libc::SYS_memfd_create,
    libc::SYS_mincore,
    libc::SYS_mkdirat,
    libc::SYS_mknodat,
    libc::SYS_mlock,
    libc::SYS_mlock2,
    libc::SYS_mlockall,
    libc::SYS_mmap,
    libc::SYS_mprotect,
    libc::SYS_mq_getsetattr,
    libc::SYS_mq_notify,
    libc::SYS_mq_open,
    libc::SYS_mq_timedreceive,
    libc::SYS_mq_timedsend,
    libc::SYS_mq_unlink,
    libc::SYS_mremap,
    libc::SYS_msgctl,
    libc::SYS_msgget,
    libc::SYS_msgrcv,
    libc::SYS_msgsnd,
    libc::SYS_msync,
    libc::SYS_munlock,
    libc::SYS_munlockall,
    libc::SYS_munmap,
    libc::SYS_nanosleep,
    libc::SYS_newfstatat,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_personality,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_send_signal,
    libc::SYS_pipe2,
    libc::SYS_pkey_alloc,
    libc::SYS_pkey_free,
    libc::SYS_pkey_mprotect,
    libc::SYS_ppoll,
    libc::SYS_prctl,
    libc::SYS_pread64,
    libc::SYS_preadv,
    libc::SYS_preadv2,
    libc::SYS_prlimit64,
    libc::SYS_process_mrelease,
    libc::SYS_pselect6,
    libc::SYS_pwrite64,
    libc::SYS_pwritev,
    libc::SYS_pwritev2,
    libc::SYS_read,
    libc::SYS_readahead,
    libc::SYS_readlinkat,
    libc::SYS_readv,
    libc::SYS_recvfrom,
    libc::SYS_recvmmsg,
    libc::SYS_recvmsg,
    libc::SYS_remap_file_pages,
    libc::SYS_removexattr,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_restart_syscall,
    libc::SYS_rseq,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigpending,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigsuspend,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_tgsigqueueinfo,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_getattr,
    libc::SYS_sched_getparam,
    libc::SYS_sched_get_priority_max,
    libc::SYS_sched_get_priority_min,
    libc::SYS_sched_getscheduler,
    libc::SYS_sched_rr_get_interval,
    libc::SYS_sched_setaffinity,
    libc::SYS_sched_setattr,
    libc::SYS_sched_setparam,
    libc::SYS_sched_setscheduler,
    libc::SYS_sched_yield,
    libc::SYS_seccomp,
    libc::SYS_semctl,
    libc::SYS_semget,
    libc::SYS_semop,
    libc::SYS_semtimedop,
    libc::SYS_sendfile,
    libc::SYS_sendmmsg,
    libc::SYS_sendmsg,
    libc::SYS_sendto,
    libc::SYS_setfsgid,
    libc::SYS_setfsuid,
    libc::SYS_setgid,
    libc::SYS_setgroups,
    libc::SYS_setitimer,
    libc::SYS_setpgid,
    libc::SYS_setpriority,
    libc::SYS_setregid,
    libc::SYS_setresgid,
    libc::SYS_setresuid,
    libc::SYS_setreuid,
    libc::SYS_setrlimit,
    libc::SYS_set_robust_list,
    libc::SYS_setsid,
    libc::SYS_setsockopt,
    libc::SYS_set_tid_address,
    libc::SYS_setuid,
    libc::SYS_setxattr,
    libc::SYS_shmat,
    libc::SYS_shmctl,
    libc::SYS_shmdt,
    libc::SYS_shmget,
    libc::SYS_shutdown,
    libc::SYS_sigaltstack,
    libc::SYS_signalfd4,
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_splice,
    libc::SYS_statfs,
    libc::SYS_statx,
    libc::SYS_symlinkat,
    libc::SYS_sync,
    libc::SYS_sync_file_range,
    libc::SYS_syncfs,
    libc::SYS_sysinfo,
    libc::SYS_tee,
    libc::SYS_tgkill,
    libc::SYS_timer_create,
    libc::SYS_timer_delete,
    libc::SYS_timer_getoverrun,
    libc::SYS_timer_gettime,
    libc::SYS_timer_settime,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_gettime,
    libc::SYS_timerfd_settime,
    libc::SYS_times,
    libc::SYS_tkill,
    libc::SYS_truncate,
    libc::SYS_umask,
    libc::SYS_uname,
    libc::SYS_unlinkat,
    libc::SYS_utimensat,
    libc::SYS_vmsplice,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_write,
    libc::SYS_writev,
    nr::CACHESTAT,
    nr::FCHMODAT2,
    nr::MAP_SHADOW_STACK,
    nr::FUTEX_WAKE,
    nr::FUTEX_WAIT,
    nr::FUTEX_REQUEUE,
    nr::MSEAL,
    nr::SETXATTRAT,
    nr::GETXATTRAT,
    nr::LISTXATTRAT,
    nr::REMOVEXATTRAT,
    // The legacy calls x86_64 keeps and aarch64 never had.
    #[cfg(target_arch = "x86_64")]
    libc::SYS_access,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_alarm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_arch_prctl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_chmod,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_chown,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_creat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_dup2,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_epoll_create,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_epoll_wait,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_eventfd,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_fork,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_futimesat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_getdents,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_getpgrp,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_get_thread_area,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_inotify_init,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_lchown,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_link,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_lstat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_mkdir,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_mknod,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_modify_ldt,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_open,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_pause,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_pipe,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_poll,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_readlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_rename,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_rmdir,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_select,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_set_thread_area,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_signalfd,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_stat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_symlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_time,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_unlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_utime,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_utimes,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_vfork,
];

/// Calls that exist but that a function never needs: mounts and namespaces (its sandbox),
/// tracing and reading other processes, kernel code and configuration, keyrings, accounting,
/// raw handles. They fail with `EPERM` (everything else outside [`ALLOWED`] with `ENOSYS`).
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
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
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

/// Socket families a function may open: AF_UNIX, AF_INET, AF_INET6, and AF_NETLINK (only
/// with protocol NETLINK_ROUTE, which glibc and runtimes use to list interfaces).
const SOCKET_FAMILIES: &[u64] =
    &[libc::AF_UNIX as u64, libc::AF_INET as u64, libc::AF_INET6 as u64, libc::AF_NETLINK as u64];

/// `personality` values Docker allows: PER_LINUX, UNAME26, PER_LINUX | ADDR_NO_RANDOMIZE (and
/// with UNAME26), and 0xffffffff, which only queries.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// Builds the programs, in the order they are to be installed.
pub(crate) fn build() -> Result<Vec<BpfProgram>, SeccompError> {
    let arch_name = ARCH.0;
    let target: seccompiler::TargetArch = arch_name.try_into().map_err(|_| SeccompError::Arch(arch_name))?;
    let build = |source| SeccompError::Build { arch: arch_name, source };
    let compile = |filter: SeccompFilter| -> Result<BpfProgram, SeccompError> {
        filter.try_into().map_err(|source| SeccompError::Compile { arch: arch_name, source })
    };
    let cond = |arg: u8, op: SeccompCmpOp, value: u64| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(build)
    };
    let rule = |conds: Vec<SeccompCondition>| SeccompRule::new(conds).map_err(build);

    // 1. The allow list, hand-written (see `allow_program`).
    let allow = allow_program(ALLOWED, DENIED).ok_or(SeccompError::Arch(arch_name))?;

    // 2. The argument rules; a call matches when any of its rules does (all conditions of a
    // rule). The calls denied whatever their arguments are in the allow program.
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    // `clone` with any namespace flag: one rule per flag.
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|flag| {
            let flag = *flag as u64;
            let c =
                SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(flag), flag).map_err(build)?;
            rule(vec![c])
        })
        .collect::<Result<Vec<_>, _>>()?;
    denied.insert(libc::SYS_clone, clone_rules);
    // `socket`: a family outside the list, or netlink with another protocol than NETLINK_ROUTE.
    let other_family = SOCKET_FAMILIES.iter().map(|f| cond(0, SeccompCmpOp::Ne, *f)).collect::<Result<Vec<_>, _>>()?;
    let netlink_not_route = vec![
        cond(0, SeccompCmpOp::Eq, libc::AF_NETLINK as u64)?,
        cond(2, SeccompCmpOp::Ne, libc::NETLINK_ROUTE as u64)?,
    ];
    denied.insert(libc::SYS_socket, vec![rule(other_family)?, rule(netlink_not_route)?]);
    // `socketpair` exists for AF_UNIX only.
    denied.insert(libc::SYS_socketpair, vec![rule(vec![cond(0, SeccompCmpOp::Ne, libc::AF_UNIX as u64)?])?]);
    let other_persona = PERSONALITIES.iter().map(|p| cond(0, SeccompCmpOp::Ne, *p)).collect::<Result<Vec<_>, _>>()?;
    denied.insert(libc::SYS_personality, vec![rule(other_persona)?]);
    let deny = SeccompFilter::new(denied, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), target)
        .map_err(build)?;

    Ok(vec![allow, compile(deny)?, prelude()])
}

/// The allow list as ranges of consecutive numbers, checked one after the other: a number
/// below the next range's start falls in a gap (`ENOSYS`), one within it passes. `denied`
/// numbers are checked first and get `EPERM`. About two
/// instructions per range (some 60 in all) where `seccompiler` emits five per call (1,500):
/// when a filter is attached the kernel runs it once per system call number to build its cache
/// of calls that always pass, and that run cost ~3 ms per cold start with the long program.
/// `None` if the program would need jumps longer than classic BPF's 255.
fn allow_program(allowed: &[i64], denied: &[i64]) -> Option<BpfProgram> {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
    const RET_K: u16 = 0x06;
    let mut nrs: Vec<u32> = allowed.iter().map(|n| *n as u32).collect();
    nrs.sort_unstable();
    nrs.dedup();
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for n in nrs {
        match ranges.last_mut() {
            Some((_, hi)) if *hi + 1 == n => *hi = n,
            _ => ranges.push((n, n)),
        }
    }
    // Layout: 4 instructions of head, 1 per denied number, 2 per range, then `deny` (ENOSYS),
    // `allow` and `eperm`.
    let deny = 4 + denied.len() + 2 * ranges.len();
    let allow = deny + 1;
    let eperm = deny + 2;
    let off = |from: usize, to: usize| u8::try_from(to - from - 1).ok();
    let mut prog = vec![stmt(LD_W_ABS, 4), jump(JEQ_K, ARCH.1, 1, 0), stmt(RET_K, RET_KILL_PROCESS), stmt(LD_W_ABS, 0)];
    for nr in denied {
        let i = prog.len();
        prog.push(jump(JEQ_K, *nr as u32, off(i, eperm)?, 0));
    }
    for (lo, hi) in ranges {
        let i = prog.len();
        prog.push(jump(JGE_K, lo, 0, off(i, deny)?));
        prog.push(jump(JGT_K, hi, 0, off(i + 1, allow)?));
    }
    prog.push(stmt(RET_K, RET_ERRNO | libc::ENOSYS as u32));
    prog.push(stmt(RET_K, RET_ALLOW));
    prog.push(stmt(RET_K, RET_ERRNO | libc::EPERM as u32));
    Some(prog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_build_and_fit_the_kernel_limit() {
        let progs = build().unwrap();
        assert_eq!(progs.len(), 3);
        for p in &progs {
            // BPF_MAXINSNS
            assert!(!p.is_empty() && p.len() <= 4096, "{}", p.len());
        }
        assert_eq!(progs[2].last().unwrap().k, RET_ALLOW);
        assert!(progs[0].len() < 200, "allow list: {} instructions", progs[0].len());
    }

    /// Runs a classic BPF program on (arch, nr) the way the kernel does, for the instructions
    /// `allow_program` emits.
    fn run(prog: &[seccompiler::sock_filter], arch: u32, nr: u32) -> u32 {
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let i = &prog[pc];
            pc += 1;
            match i.code {
                0x20 => acc = if i.k == 4 { arch } else { nr },
                0x06 => return i.k,
                0x15 | 0x35 | 0x25 => {
                    let hit = match i.code {
                        0x15 => acc == i.k,
                        0x35 => acc >= i.k,
                        _ => acc > i.k,
                    };
                    pc += usize::from(if hit { i.jt } else { i.jf });
                }
                c => panic!("unexpected instruction {c:#x}"),
            }
        }
    }

    #[test]
    fn the_allow_program_passes_exactly_the_allowed_numbers() {
        let prog = allow_program(ALLOWED, DENIED).unwrap();
        let allowed: std::collections::HashSet<u32> = ALLOWED.iter().map(|n| *n as u32).collect();
        let denied: std::collections::HashSet<u32> = DENIED.iter().map(|n| *n as u32).collect();
        assert!(allowed.is_disjoint(&denied));
        for nr in (0..600).chain([0x4000_0000 | 39, u32::MAX]) {
            let want = if allowed.contains(&nr) {
                RET_ALLOW
            } else if denied.contains(&nr) {
                RET_ERRNO | libc::EPERM as u32
            } else {
                RET_ERRNO | libc::ENOSYS as u32
            };
            assert_eq!(run(&prog, ARCH.1, nr), want, "syscall {nr}");
        }
        assert_eq!(run(&prog, 3 | 0x4000_0000, libc::SYS_read as u32), RET_KILL_PROCESS);
        assert!(!allowed.contains(&(libc::SYS_mount as u32)) && allowed.contains(&(libc::SYS_read as u32)));
    }
}
