//! Pure cgroup2 hosts, and the cgroup2 freeze and kill that v1 hosts use too when they mount
//! a cgroup2 tree beside their controllers.

use super::*;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Freezes a cgroup2 directory and waits until `cgroup.events` says `frozen 1`.
pub(super) fn v2_freeze(dir: &Path) -> Result<(), CgroupError> {
    write(&dir.join("cgroup.freeze"), "1")?;
    let events = dir.join("cgroup.events");
    let file = fs::File::open(&events).map_err(|source| CgroupError::Read { path: events.clone(), source })?;
    let deadline = Instant::now() + FREEZE_TIMEOUT;
    loop {
        let text = read(&events)?;
        if keyed(&text, "frozen") == Some(1) {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CgroupError::FreezeTimeout { path: dir.to_owned() });
        }
        // cgroup.events signals changes as POLLPRI; on a plain file (tests) poll returns at once.
        let ms = left.as_millis().min(10) as i32;
        crate::linux::sys::host::wait_priority_event(&file, ms);
    }
}

/// Kills every process of a cgroup2 directory: `cgroup.kill` when the kernel has it, else
/// freeze, SIGKILL each, thaw.
pub(super) fn v2_kill(dir: &Path, has_kill: bool) -> Result<(), CgroupError> {
    // The cgroup may go at any moment (the reaper and `destroy` both end an environment): a file
    // that is not there (ENOENT) or belongs to a cgroup being removed (ENODEV) means there is
    // nothing left to kill.
    let write_unless_gone = |file: &str, value: &str| match write(&dir.join(file), value) {
        Err(CgroupError::Write { source, .. })
            if source.kind() == ErrorKind::NotFound || source.raw_os_error() == Some(libc::ENODEV) =>
        {
            Ok(())
        }
        r => r,
    };
    if has_kill {
        return write_unless_gone("cgroup.kill", "1");
    }
    let _ = v2_freeze(dir);
    sigkill_each(&dir.join("cgroup.procs"));
    sigkill_each(&dir.join(FUNCTION_CGROUP).join("cgroup.procs"));
    write_unless_gone("cgroup.freeze", "0")
}

/// Pure cgroup2 hosts: one directory per environment below `kiln-<instance>`.
#[derive(Debug)]
pub(crate) struct CgroupV2 {
    /// `<cgroup2 mount>/<kiln's cgroup>/kiln-<instance>`.
    pub(super) base: PathBuf,
    pub(super) has_kill: bool,
}

impl CgroupV2 {
    /// `base` is `<cgroup2 mount>/<kiln's cgroup>/kiln-<instance>`.
    pub(crate) fn new(base: PathBuf) -> CgroupV2 {
        CgroupV2 { base, has_kill: false }
    }

    /// Enables the controllers kiln needs for the children of `dir`.
    fn delegate(dir: &Path) -> Result<(), CgroupError> {
        write(&dir.join("cgroup.subtree_control"), "+memory +cpu +pids")
    }
}

impl Cgroups for CgroupV2 {
    fn layout(&self) -> &'static str {
        "v2"
    }

    fn init(&self) -> Result<(), CgroupError> {
        // The parent (kiln's own cgroup) must delegate the controllers to `base`; a cgroup
        // with processes cannot (no internal processes rule), in which case the operator must
        // run kiln in a cgroup of its own (e.g. a systemd service with Delegate=yes).
        if let Some(parent) = self.base.parent() {
            let controllers = read(&parent.join("cgroup.subtree_control")).unwrap_or_default();
            let missing = ["memory", "cpu", "pids"].iter().any(|c| !controllers.split_whitespace().any(|x| x == *c));
            if missing {
                Self::delegate(parent)?;
            }
        }
        mkdir(&self.base)?;
        Self::delegate(&self.base)
    }

    fn create(&self, env: &str, limits: &Limits) -> Result<Vec<PathBuf>, CgroupError> {
        let d = self.base.join(env);
        mkdir_fresh(self, env, &d)?;
        write(&d.join("memory.max"), &limits.memory_bytes.to_string())?;
        write_optional(&d.join("memory.swap.max"), "0")?;
        write(&d.join("cpu.max"), &format!("{} {}", limits.cpu_quota_us, CPU_PERIOD_US))?;
        write_optional(&d.join("cpu.max.burst"), &limits.cpu_burst_us.to_string())?;
        write(&d.join("cpu.weight"), &limits.cpu_weight.to_string())?;
        write(&d.join("pids.max"), &limits.pids_max.to_string())?;
        // The bootstrap's own cgroup, without controllers (its use is charged to `d`): the one
        // that freezes. Init is born there and moves up to `d` once the bootstrap runs.
        let f = d.join(FUNCTION_CGROUP);
        mkdir(&f)?;
        Ok(vec![f.join("cgroup.procs")])
    }

    fn limit_writes(&self, env: &str, old: &Limits, new: &Limits) -> Vec<LimitWrite> {
        let d = self.base.join(env);
        let mut w = Vec::new();
        if old.memory_bytes != new.memory_bytes {
            w.push(LimitWrite::new(d.join("memory.max"), new.memory_bytes.to_string()));
        }
        w.extend(cpu_writes(
            old,
            new,
            |q| LimitWrite::new(d.join("cpu.max"), format!("{q} {CPU_PERIOD_US}")),
            |b| LimitWrite::optional(d.join("cpu.max.burst"), b.to_string()),
        ));
        if old.cpu_weight != new.cpu_weight {
            w.push(LimitWrite::new(d.join("cpu.weight"), new.cpu_weight.to_string()));
        }
        if old.pids_max != new.pids_max {
            w.push(LimitWrite::new(d.join("pids.max"), new.pids_max.to_string()));
        }
        w
    }

    fn freeze(&self, env: &str) -> Result<(), CgroupError> {
        v2_freeze(&self.base.join(env).join(FUNCTION_CGROUP))
    }

    fn thaw(&self, env: &str) -> Result<(), CgroupError> {
        write(&self.base.join(env).join(FUNCTION_CGROUP).join("cgroup.freeze"), "0")
    }

    fn thaw_control(&self, env: &str) -> Option<(PathBuf, &'static [u8])> {
        Some((self.base.join(env).join(FUNCTION_CGROUP).join("cgroup.freeze"), &b"0"[..]))
    }

    fn init_after_start(&self, env: &str) -> Option<PathBuf> {
        Some(self.base.join(env).join("cgroup.procs"))
    }

    fn kill_all(&self, env: &str) -> Result<(), CgroupError> {
        let d = self.base.join(env);
        let has_kill = self.has_kill || d.join("cgroup.kill").exists();
        v2_kill(&d, has_kill)
    }

    fn peak_memory_bytes(&self, env: &str) -> Option<u64> {
        let d = self.base.join(env);
        // memory.peak needs Linux ≥ 5.19; memory.current is the best older kernels offer.
        read(&d.join("memory.peak")).or_else(|_| read(&d.join("memory.current"))).ok()?.trim().parse().ok()
    }

    fn hot_files(&self, env: &str) -> HotFiles {
        let d = self.base.join(env);
        HotFiles::open(
            Some((d.join(FUNCTION_CGROUP).join("cgroup.freeze"), &b"1"[..], &b"0"[..])),
            &[d.join("memory.peak"), d.join("memory.current")],
        )
    }

    fn oom_killed(&self, env: &str) -> bool {
        read(&self.base.join(env).join("memory.events")).ok().and_then(|t| keyed(&t, "oom_kill")).unwrap_or(0) > 0
    }

    fn remove(&self, env: &str) -> Result<(), CgroupError> {
        rmdir(&self.base.join(env).join(FUNCTION_CGROUP))?;
        rmdir(&self.base.join(env))
    }

    fn list(&self) -> Vec<String> {
        subdirs(&self.base)
    }

    fn remove_instance(&self) -> Result<(), CgroupError> {
        rmdir(&self.base)
    }

    fn instance_dirs(&self) -> Vec<PathBuf> {
        vec![self.base.clone()]
    }
}
