//! Hosts with v1 controllers: limits in the `memory`, `cpu` and `pids` hierarchies, freezing
//! and killing through the cgroup2 tree beside them when it can, else the v1 `freezer`.

use super::v2::{v2_freeze, v2_kill};
use super::*;
use std::io::{self, ErrorKind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where kiln's cgroups go on a host with v1 controllers.
#[derive(Debug, Clone)]
pub(crate) struct V1Paths {
    /// `.../memory/<kiln's cgroup>/kiln-<instance>` and likewise for the others.
    pub(super) memory: PathBuf,
    pub(super) cpu: PathBuf,
    pub(super) pids: PathBuf,
    /// The v1 freezer, used when `unified` is absent.
    pub(super) freezer: Option<PathBuf>,
    /// A cgroup2 tree beside the v1 controllers with `cgroup.freeze`.
    pub(super) unified: Option<PathBuf>,
}

/// Hosts with v1 controllers (optionally with a cgroup2 tree for freeze and kill).
#[derive(Debug)]
pub(crate) struct CgroupV1 {
    pub(super) paths: V1Paths,
    /// Whether the unified tree has `cgroup.kill` (Linux ≥ 5.14).
    pub(super) unified_kill: bool,
}

impl CgroupV1 {
    pub(crate) fn new(paths: V1Paths) -> Result<CgroupV1, CgroupError> {
        if paths.unified.is_none() && paths.freezer.is_none() {
            return Err(CgroupError::Create {
                path: paths.memory.clone(),
                source: io::Error::new(
                    ErrorKind::NotFound,
                    "neither a freezer hierarchy nor a cgroup2 tree is mounted",
                ),
            });
        }
        Ok(CgroupV1 { paths, unified_kill: false })
    }

    fn dirs(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.paths.memory, &self.paths.cpu, &self.paths.pids]
            .into_iter()
            .chain(self.paths.freezer.iter().filter(|_| self.paths.unified.is_none()))
            .chain(self.paths.unified.iter())
    }

    fn v1_freezer(&self, env: &str) -> Option<PathBuf> {
        match (&self.paths.unified, &self.paths.freezer) {
            (None, Some(f)) => Some(f.join(env)),
            _ => None,
        }
    }
}

impl Cgroups for CgroupV1 {
    fn layout(&self) -> &'static str {
        if self.paths.unified.is_some() {
            "v1+unified"
        } else {
            "v1"
        }
    }

    fn init(&self) -> Result<(), CgroupError> {
        for d in self.dirs() {
            mkdir(d)?;
        }
        // A new memory cgroup starts with its parent's swappiness: set once here, it is every
        // environment's without a write per build.
        write_optional(&self.paths.memory.join("memory.swappiness"), "0")
    }

    fn create(&self, env: &str, limits: &Limits) -> Result<Vec<PathBuf>, CgroupError> {
        let mem = self.paths.memory.join(env);
        mkdir_fresh(self, env, &mem)?;
        let bytes = limits.memory_bytes.to_string();
        write(&mem.join("memory.limit_in_bytes"), &bytes)?;
        // No swap: memory+swap may not exceed memory (absent without swap accounting).
        write_optional(&mem.join("memory.memsw.limit_in_bytes"), &bytes)?;
        // `memory.swappiness` is 0 from the instance's directory (`init`).
        // Absent only on kernels without kmem accounting, which cannot charge sockets at all.
        write_optional(
            &mem.join("memory.kmem.tcp.limit_in_bytes"),
            &v1_tcp_limit_bytes(limits.memory_bytes).to_string(),
        )?;

        let cpu = self.paths.cpu.join(env);
        mkdir(&cpu)?;
        // A new cgroup has the kernel's default period: written only if ours differs.
        if CPU_PERIOD_US != KERNEL_CPU_PERIOD_US {
            write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
        }
        write(&cpu.join("cpu.cfs_quota_us"), &limits.cpu_quota_us.to_string())?;
        // Unused quota may carry over one period (kernels ≥ 5.14): `Limits::cpu_burst_us`.
        write_optional(&cpu.join("cpu.cfs_burst_us"), &limits.cpu_burst_us.to_string())?;
        write(&cpu.join("cpu.shares"), &limits.cpu_shares.to_string())?;

        let pids = self.paths.pids.join(env);
        mkdir(&pids)?;
        write(&pids.join("pids.max"), &limits.pids_max.to_string())?;

        let mut procs = vec![mem.join("cgroup.procs"), cpu.join("cgroup.procs"), pids.join("cgroup.procs")];
        if let Some(u) = &self.paths.unified {
            let d = u.join(env);
            mkdir(&d)?;
            procs.push(d.join("cgroup.procs"));
        } else if let Some(f) = self.v1_freezer(env) {
            mkdir(&f)?;
            procs.push(f.join("cgroup.procs"));
        }
        Ok(procs)
    }

    fn limit_writes(&self, env: &str, old: &Limits, new: &Limits) -> Vec<LimitWrite> {
        let mut w = Vec::new();
        if old.memory_bytes != new.memory_bytes {
            let mem = self.paths.memory.join(env);
            let bytes = new.memory_bytes.to_string();
            let (limit, memsw) = (mem.join("memory.limit_in_bytes"), mem.join("memory.memsw.limit_in_bytes"));
            // memory+swap may never be below memory: raise it first, lower it last.
            if new.memory_bytes > old.memory_bytes {
                w.push(LimitWrite::optional(memsw, bytes.clone()));
                w.push(LimitWrite::new(limit, bytes));
            } else {
                w.push(LimitWrite::new(limit, bytes.clone()));
                w.push(LimitWrite::optional(memsw, bytes));
            }
            // Lowering below the buffers in use is allowed: new allocations then fail until
            // the use drops.
            let tcp = v1_tcp_limit_bytes(new.memory_bytes).to_string();
            w.push(LimitWrite::optional(mem.join("memory.kmem.tcp.limit_in_bytes"), tcp));
        }
        let cpu = self.paths.cpu.join(env);
        w.extend(cpu_writes(
            old,
            new,
            |q| LimitWrite::new(cpu.join("cpu.cfs_quota_us"), q.to_string()),
            |b| LimitWrite::optional(cpu.join("cpu.cfs_burst_us"), b.to_string()),
        ));
        if old.cpu_shares != new.cpu_shares {
            w.push(LimitWrite::new(cpu.join("cpu.shares"), new.cpu_shares.to_string()));
        }
        if old.pids_max != new.pids_max {
            w.push(LimitWrite::new(self.paths.pids.join(env).join("pids.max"), new.pids_max.to_string()));
        }
        w
    }

    fn freeze(&self, env: &str) -> Result<(), CgroupError> {
        if let Some(u) = &self.paths.unified {
            return v2_freeze(&u.join(env));
        }
        let Some(f) = self.v1_freezer(env) else {
            return Ok(());
        };
        let state = f.join("freezer.state");
        write(&state, "FROZEN")?;
        let deadline = Instant::now() + FREEZE_TIMEOUT;
        while read(&state)?.trim() != "FROZEN" {
            if Instant::now() > deadline {
                return Err(CgroupError::FreezeTimeout { path: f });
            }
            // The v1 freezer retries by itself; re-writing kicks tasks that were busy.
            write(&state, "FROZEN")?;
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }

    fn thaw(&self, env: &str) -> Result<(), CgroupError> {
        if let Some(u) = &self.paths.unified {
            return write(&u.join(env).join("cgroup.freeze"), "0");
        }
        match self.v1_freezer(env) {
            Some(f) => write(&f.join("freezer.state"), "THAWED"),
            None => Ok(()),
        }
    }

    fn init_after_start(&self, _env: &str) -> Option<PathBuf> {
        // The instance's own directory of the hierarchy that freezes (no controllers there).
        match (&self.paths.unified, &self.paths.freezer) {
            (Some(u), _) | (None, Some(u)) => Some(u.join("cgroup.procs")),
            (None, None) => None,
        }
    }

    fn thaw_control(&self, env: &str) -> Option<(PathBuf, &'static [u8])> {
        match (&self.paths.unified, self.v1_freezer(env)) {
            (Some(u), _) => Some((u.join(env).join("cgroup.freeze"), &b"0"[..])),
            (None, Some(f)) => Some((f.join("freezer.state"), &b"THAWED"[..])),
            (None, None) => None,
        }
    }

    fn kill_all(&self, env: &str) -> Result<(), CgroupError> {
        if let Some(u) = &self.paths.unified {
            let has_kill = self.unified_kill || u.join(env).join("cgroup.kill").exists();
            let r = v2_kill(&u.join(env), has_kill);
            // Init is not in the unified cgroup (the freezer): kill it through the memory one.
            sigkill_each(&self.paths.memory.join(env).join("cgroup.procs"));
            return r;
        }
        // v1: freeze so nothing forks while we kill, kill each, thaw so the signals land.
        let frozen = self.freeze(env).is_ok();
        sigkill_each(&self.paths.memory.join(env).join("cgroup.procs"));
        if frozen {
            self.thaw(env)?;
        }
        Ok(())
    }

    fn peak_memory_bytes(&self, env: &str) -> Option<u64> {
        read(&self.paths.memory.join(env).join("memory.max_usage_in_bytes")).ok()?.trim().parse().ok()
    }

    fn hot_files(&self, env: &str) -> HotFiles {
        let freeze = match (&self.paths.unified, self.v1_freezer(env)) {
            (Some(u), _) => Some((u.join(env).join("cgroup.freeze"), &b"1"[..], &b"0"[..])),
            (None, Some(f)) => Some((f.join("freezer.state"), &b"FROZEN"[..], &b"THAWED"[..])),
            (None, None) => None,
        };
        HotFiles::open(freeze, &[self.paths.memory.join(env).join("memory.max_usage_in_bytes")])
    }

    fn oom_killed(&self, env: &str) -> bool {
        read(&self.paths.memory.join(env).join("memory.oom_control"))
            .ok()
            .and_then(|t| keyed(&t, "oom_kill"))
            .unwrap_or(0)
            > 0
    }

    fn remove(&self, env: &str) -> Result<(), CgroupError> {
        // Try every hierarchy, report the first failure.
        let mut first = None;
        for d in self.dirs() {
            if let Err(e) = rmdir(&d.join(env)) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn list(&self) -> Vec<String> {
        let mut all: Vec<String> = self.dirs().flat_map(|d| subdirs(d)).collect();
        all.sort();
        all.dedup();
        all
    }

    fn remove_instance(&self) -> Result<(), CgroupError> {
        self.dirs().try_for_each(|d| rmdir(d))
    }

    fn instance_dirs(&self) -> Vec<PathBuf> {
        self.dirs().cloned().collect()
    }
}
