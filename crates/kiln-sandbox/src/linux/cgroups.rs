//! Control groups of the environments, behind one trait for both cgroup layouts.
//!
//! Every kiln instance owns one directory per hierarchy, `kiln-<instance id>`, created below the
//! cgroup kiln itself runs in (so the limits an operator put on kiln also bound its
//! environments), and one directory per environment below that, named after the environment's
//! id. Nothing outside `kiln-<instance id>` is ever written, and leftovers of a previous kiln of
//! the same instance are found by listing it.
//!
//! Two implementations of [`Cgroups`]:
//! - [`CgroupV1`] for hosts with v1 controllers: limits are written to the `memory`, `cpu` and
//!   `pids` hierarchies. Freezing and killing use the cgroup2 tree mounted beside them (usually
//!   `/sys/fs/cgroup/unified`) when it offers `cgroup.freeze` and `cgroup.kill`, because the
//!   v2 freezer is synchronous-ish (~20 µs) and handles fatal signals; otherwise the v1 `freezer`
//!   hierarchy and a SIGKILL per process.
//! - [`CgroupV2`] for pure cgroup2 hosts: everything in one directory per environment.
//!
//! The root of every hierarchy is a plain path so tests can point an implementation at a temp
//! directory laid out like cgroupfs and check which files get which values.

use std::fmt;
use std::fs;
use std::io::{self, ErrorKind};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes in a mebibyte: Lambda's `MemorySize` is in MiB.
const MIB: u64 = 1024 * 1024;
/// Memory that buys one full CPU, as on Lambda.
pub(crate) const MB_PER_CPU: u64 = 1769;
/// CFS period used for every environment: the kernel's default. A 20 ms period was measured too
/// (docs/benchmarks.md): it trades the rare long stall of a throttled small environment for
/// frequent short ones, which made warm p90 worse; the burst below is what helps sporadic calls.
pub(crate) const CPU_PERIOD_US: u64 = 100_000;
/// The smallest CPU share an environment gets, in percent of one CPU. Below this an
/// interpreter's start-up alone takes seconds.
pub(crate) const CPU_FLOOR_PERCENT: u64 = 10;
/// CPUs an environment may use during its Init phase, whatever its memory: Lambda gives Init a
/// burst of CPU (up to 10 s of it) so that a 128 MB function does not start an interpreter at
/// 7 % of a CPU. The environment's own share applies from its first `next` on
/// ([`Limits::for_init`], `Sandbox::end_init`).
pub(crate) const INIT_CPUS: u64 = 2;
/// Processes and threads one environment may have.
pub(crate) const PIDS_MAX: u32 = 1024;
/// On cgroup v2, the child cgroup of an environment's that holds its bootstrap and freezes.
pub(crate) const FUNCTION_CGROUP: &str = "function";

/// How long to wait for the processes of a killed cgroup to disappear.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for a freeze to take hold.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);

/// TCP socket buffers an environment may hold on cgroup v1, where they are not part of
/// `memory.limit_in_bytes` (v1 charges them to a counter of their own, and only once a limit is
/// set): half its memory, so buffers and memory together stay within 1.5 times the memory
/// size. On v2 socket memory is part of `memory.max` already.
pub(crate) fn v1_tcp_limit_bytes(memory_bytes: u64) -> u64 {
    memory_bytes / 2
}

/// What one environment may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub memory_bytes: u64,
    /// CFS quota per [`CPU_PERIOD_US`].
    pub cpu_quota_us: u64,
    /// v1 `cpu.shares` (1024 = one CPU's worth).
    pub cpu_shares: u64,
    /// v2 `cpu.weight` (100 = default).
    pub cpu_weight: u64,
    pub pids_max: u32,
}

impl Limits {
    /// Limits of an environment with `memory_mb` of memory: CPU proportional to memory,
    /// 1,769 MB buying one CPU, with a floor.
    pub(crate) fn for_memory_mb(memory_mb: u32) -> Limits {
        let mb = u64::from(memory_mb.max(1));
        let floor = CPU_PERIOD_US * CPU_FLOOR_PERCENT / 100;
        Limits {
            memory_bytes: mb * MIB,
            cpu_quota_us: (CPU_PERIOD_US * mb / MB_PER_CPU).max(floor),
            cpu_shares: (1024 * mb / MB_PER_CPU).max(2),
            cpu_weight: (100 * mb / MB_PER_CPU).clamp(1, 10_000),
            pids_max: PIDS_MAX,
        }
    }

    /// These limits with the Init phase's CPU: at least [`INIT_CPUS`] whole CPUs.
    pub(crate) fn for_init(self) -> Limits {
        Limits { cpu_quota_us: self.cpu_quota_us.max(INIT_CPUS * CPU_PERIOD_US), ..self }
    }
}

/// Why a cgroup operation failed; the path says which file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CgroupError {
    #[error("cannot create cgroup {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {value:?} to {path}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove cgroup {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("processes of cgroup {path} still run after being killed")]
    Stuck { path: PathBuf },
    #[error("cgroup {path} did not freeze in time")]
    FreezeTimeout { path: PathBuf },
}

impl From<CgroupError> for io::Error {
    fn from(e: CgroupError) -> io::Error {
        io::Error::other(e)
    }
}

/// The cgroups of the environments of one kiln instance.
pub(crate) trait Cgroups: Send + Sync + fmt::Debug {
    /// `v1+unified`, `v1` or `v2`, for logs.
    fn layout(&self) -> &'static str;
    /// Creates the instance's parent directories (idempotent).
    fn init(&self) -> Result<(), CgroupError>;
    /// Creates the cgroups of environment `env` with `limits`; returns the `cgroup.procs` files
    /// a process must be written to to join all of them (init joins them all when its blank is
    /// built, so the bootstrap is born in them: no migration on a cold start).
    fn create(&self, env: &str, limits: &Limits) -> Result<Vec<PathBuf>, CgroupError>;
    /// Where init moves once its bootstrap has started: a cgroup out of what
    /// [`Cgroups::freeze`] stops, so that it can still thaw and end its environment when kiln
    /// dies while the function is frozen.
    fn init_after_start(&self, env: &str) -> Option<PathBuf>;
    /// The file that freezes `env` and the value that thaws it (what init writes before it
    /// ends a frozen environment).
    fn thaw_control(&self, env: &str) -> Option<(PathBuf, &'static [u8])>;
    /// Changes the memory and CPU limits of `env` from `old` (what it has) to `new`, writing
    /// only the files whose value changes (`pids.max` and the CFS period never do).
    fn set_limits(&self, env: &str, old: &Limits, new: &Limits) -> Result<(), CgroupError>;
    /// Stops every process of `env` and returns once they are stopped.
    fn freeze(&self, env: &str) -> Result<(), CgroupError>;
    fn thaw(&self, env: &str) -> Result<(), CgroupError>;
    /// Sends SIGKILL to every process of `env` (frozen or not). Does not wait.
    fn kill_all(&self, env: &str) -> Result<(), CgroupError>;
    /// The peak memory use of `env` in bytes, when the kernel tracks it.
    fn peak_memory_bytes(&self, env: &str) -> Option<u64>;
    /// Whether the OOM killer killed a process of `env`.
    fn oom_killed(&self, env: &str) -> bool;
    /// The files every invocation touches, opened once (see [`HotFiles`]).
    fn hot_files(&self, env: &str) -> HotFiles;
    /// Removes the cgroups of `env`; they must be empty. Missing ones are fine.
    fn remove(&self, env: &str) -> Result<(), CgroupError>;
    /// The environments that have cgroups of this instance.
    fn list(&self) -> Vec<String>;
    /// Removes the instance's own directories (they must be empty).
    fn remove_instance(&self) -> Result<(), CgroupError>;
}

/// Kills `env`, waits for it to empty and removes it: the one way every environment ends.
pub(crate) fn kill_and_remove(cg: &dyn Cgroups, env: &str) -> Result<(), CgroupError> {
    cg.kill_all(env)?;
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut pause = Duration::from_micros(50);
    loop {
        match cg.remove(env) {
            Ok(()) => return Ok(()),
            // EBUSY while the last processes are still exiting (or are unreaped zombies).
            Err(e) if e.is_busy() && Instant::now() < deadline => {
                // Kill again: on the v1 path a process may have forked since.
                let _ = cg.kill_all(env);
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(CgroupError::Remove { path, .. }) => return Err(CgroupError::Stuck { path }),
            Err(e) => return Err(e),
        }
    }
}

impl CgroupError {
    fn is_busy(&self) -> bool {
        matches!(self, CgroupError::Remove { source, .. } if source.raw_os_error() == Some(libc::EBUSY))
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    })
}

/// Writes a setting the kernel may not have (e.g. swap accounting off); absence is fine.
fn write_optional(path: &Path, value: &str) -> Result<(), CgroupError> {
    match fs::write(path, value) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        r => r.map_err(|source| CgroupError::Write { path: path.to_owned(), value: value.to_owned(), source }),
    }
}

fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read { path: path.to_owned(), source })
}

/// Creates a cgroup directory; an existing one is reused.
fn mkdir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Err(e) if e.kind() != ErrorKind::AlreadyExists => Err(CgroupError::Create { path: path.to_owned(), source: e }),
        _ => Ok(()),
    }
}

/// Creates a fresh cgroup directory: a leftover of the same name is killed and removed first.
fn mkdir_fresh(cg: &dyn Cgroups, env: &str, path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            kill_and_remove(cg, env)?;
            fs::create_dir(path).map_err(|source| CgroupError::Create { path: path.to_owned(), source })
        }
        Err(source) => Err(CgroupError::Create { path: path.to_owned(), source }),
    }
}

fn rmdir(path: &Path) -> Result<(), CgroupError> {
    match fs::remove_dir(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(CgroupError::Remove { path: path.to_owned(), source: e }),
        _ => Ok(()),
    }
}

/// The value of `key` in a flat keyed file (`memory.events`, `memory.oom_control`, ...).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn pids_of(procs: &Path) -> Vec<i32> {
    fs::read_to_string(procs).map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect()).unwrap_or_default()
}

fn sigkill_each(procs: &Path) {
    for pid in pids_of(procs) {
        // SAFETY: kill(2) with plain integers; the pid was read from the environment's cgroup.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

fn subdirs(dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// The files an environment's every invocation touches, kept open: opening a cgroup file costs
/// tens of microseconds, more than the write itself. Freezing through them does not wait for the
/// freeze to complete (the kernel finishes it within microseconds, and a thaw cancels it);
/// [`Cgroups::freeze`] is the waiting variant, for killing.
#[derive(Debug, Default)]
pub(crate) struct HotFiles {
    /// The freeze control and the values that freeze and thaw.
    pub freeze: Option<(fs::File, &'static [u8], &'static [u8])>,
    /// The peak memory counter.
    pub peak: Option<fs::File>,
}

impl HotFiles {
    fn open(freeze: Option<(PathBuf, &'static [u8], &'static [u8])>, peak: &[PathBuf]) -> HotFiles {
        HotFiles {
            freeze: freeze
                .and_then(|(p, on, off)| fs::OpenOptions::new().write(true).open(p).ok().map(|f| (f, on, off))),
            peak: peak.iter().find_map(|p| fs::File::open(p).ok()),
        }
    }

    /// Starts freezing (`frozen`) or thaws.
    pub fn set_frozen(&self, frozen: bool) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        match &self.freeze {
            Some((f, on, off)) => f.write_at(if frozen { on } else { off }, 0).map(|_| ()),
            None => Ok(()),
        }
    }

    /// The peak memory in bytes, if the kernel tracks it.
    pub fn peak_bytes(&self) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        let f = self.peak.as_ref()?;
        let mut buf = [0u8; 32];
        let n = f.read_at(&mut buf, 0).ok()?;
        std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
    }
}

/// Freezes a cgroup2 directory and waits until `cgroup.events` says `frozen 1`.
fn v2_freeze(dir: &Path) -> Result<(), CgroupError> {
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
        let mut pfd = libc::pollfd { fd: file.as_raw_fd(), events: libc::POLLPRI, revents: 0 };
        let ms = left.as_millis().min(10) as i32;
        // SAFETY: one valid pollfd on a descriptor we hold open.
        unsafe {
            libc::poll(&mut pfd, 1, ms);
        }
    }
}

/// Kills every process of a cgroup2 directory: `cgroup.kill` when the kernel has it, else
/// freeze, SIGKILL each, thaw.
fn v2_kill(dir: &Path, has_kill: bool) -> Result<(), CgroupError> {
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

/// Where kiln's cgroups go on a host with v1 controllers.
#[derive(Debug, Clone)]
pub(crate) struct V1Paths {
    /// `.../memory/<kiln's cgroup>/kiln-<instance>` and likewise for the others.
    pub memory: PathBuf,
    pub cpu: PathBuf,
    pub pids: PathBuf,
    /// The v1 freezer, used when `unified` is absent.
    pub freezer: Option<PathBuf>,
    /// A cgroup2 tree beside the v1 controllers with `cgroup.freeze`.
    pub unified: Option<PathBuf>,
}

/// Hosts with v1 controllers (optionally with a cgroup2 tree for freeze and kill).
#[derive(Debug)]
pub(crate) struct CgroupV1 {
    paths: V1Paths,
    /// Whether the unified tree has `cgroup.kill` (Linux ≥ 5.14).
    unified_kill: bool,
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
        Ok(())
    }

    fn create(&self, env: &str, limits: &Limits) -> Result<Vec<PathBuf>, CgroupError> {
        let mem = self.paths.memory.join(env);
        mkdir_fresh(self, env, &mem)?;
        let bytes = limits.memory_bytes.to_string();
        write(&mem.join("memory.limit_in_bytes"), &bytes)?;
        // No swap: memory+swap may not exceed memory (absent without swap accounting).
        write_optional(&mem.join("memory.memsw.limit_in_bytes"), &bytes)?;
        write_optional(&mem.join("memory.swappiness"), "0")?;
        // Absent only on kernels without kmem accounting, which cannot charge sockets at all.
        write_optional(
            &mem.join("memory.kmem.tcp.limit_in_bytes"),
            &v1_tcp_limit_bytes(limits.memory_bytes).to_string(),
        )?;

        let cpu = self.paths.cpu.join(env);
        mkdir(&cpu)?;
        write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
        write(&cpu.join("cpu.cfs_quota_us"), &limits.cpu_quota_us.to_string())?;
        // Unused quota may carry over one period (kernels ≥ 5.14), so a short burst of work
        // after idling is not throttled mid-invocation.
        write_optional(&cpu.join("cpu.cfs_burst_us"), &limits.cpu_quota_us.to_string())?;
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

    fn set_limits(&self, env: &str, old: &Limits, new: &Limits) -> Result<(), CgroupError> {
        if old.memory_bytes != new.memory_bytes {
            let mem = self.paths.memory.join(env);
            let bytes = new.memory_bytes.to_string();
            let (limit, memsw) = (mem.join("memory.limit_in_bytes"), mem.join("memory.memsw.limit_in_bytes"));
            // memory+swap may never be below memory: raise it first, lower it last.
            if new.memory_bytes > old.memory_bytes {
                write_optional(&memsw, &bytes)?;
                write(&limit, &bytes)?;
            } else {
                write(&limit, &bytes)?;
                write_optional(&memsw, &bytes)?;
            }
            // Lowering below the buffers in use is allowed: new allocations then fail until
            // the use drops.
            let tcp = v1_tcp_limit_bytes(new.memory_bytes).to_string();
            write_optional(&mem.join("memory.kmem.tcp.limit_in_bytes"), &tcp)?;
        }
        let cpu = self.paths.cpu.join(env);
        if old.cpu_quota_us != new.cpu_quota_us {
            // The burst may never exceed the quota: drop it, change the quota, raise it again.
            write_optional(&cpu.join("cpu.cfs_burst_us"), "0")?;
            write(&cpu.join("cpu.cfs_quota_us"), &new.cpu_quota_us.to_string())?;
            write_optional(&cpu.join("cpu.cfs_burst_us"), &new.cpu_quota_us.to_string())?;
        }
        if old.cpu_shares != new.cpu_shares {
            write(&cpu.join("cpu.shares"), &new.cpu_shares.to_string())?;
        }
        if old.pids_max != new.pids_max {
            write(&self.paths.pids.join(env).join("pids.max"), &new.pids_max.to_string())?;
        }
        Ok(())
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
}

/// Pure cgroup2 hosts: one directory per environment below `kiln-<instance>`.
#[derive(Debug)]
pub(crate) struct CgroupV2 {
    /// `<cgroup2 mount>/<kiln's cgroup>/kiln-<instance>`.
    base: PathBuf,
    has_kill: bool,
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
        write_optional(&d.join("cpu.max.burst"), &limits.cpu_quota_us.to_string())?;
        write(&d.join("cpu.weight"), &limits.cpu_weight.to_string())?;
        write(&d.join("pids.max"), &limits.pids_max.to_string())?;
        // The bootstrap's own cgroup, without controllers (its use is charged to `d`): the one
        // that freezes. Init is born there and moves up to `d` once the bootstrap runs.
        let f = d.join(FUNCTION_CGROUP);
        mkdir(&f)?;
        Ok(vec![f.join("cgroup.procs")])
    }

    fn set_limits(&self, env: &str, old: &Limits, new: &Limits) -> Result<(), CgroupError> {
        let d = self.base.join(env);
        if old.memory_bytes != new.memory_bytes {
            write(&d.join("memory.max"), &new.memory_bytes.to_string())?;
        }
        if old.cpu_quota_us != new.cpu_quota_us {
            write_optional(&d.join("cpu.max.burst"), "0")?;
            write(&d.join("cpu.max"), &format!("{} {}", new.cpu_quota_us, CPU_PERIOD_US))?;
            write_optional(&d.join("cpu.max.burst"), &new.cpu_quota_us.to_string())?;
        }
        if old.cpu_weight != new.cpu_weight {
            write(&d.join("cpu.weight"), &new.cpu_weight.to_string())?;
        }
        if old.pids_max != new.pids_max {
            write(&d.join("pids.max"), &new.pids_max.to_string())?;
        }
        Ok(())
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
}

/// One line of `/proc/self/mountinfo` that mounts a cgroup filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupMount {
    /// The directory of the mount's root inside the hierarchy (`/` unless in a container).
    root: String,
    mount_point: PathBuf,
    /// `None` for cgroup2; the v1 controllers (and `name=`) otherwise.
    controllers: Option<Vec<String>>,
}

fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let _source = r.next()?;
            let opts = r.next().unwrap_or("");
            let root = unescape(fields.get(3)?);
            let mount_point = PathBuf::from(unescape(fields.get(4)?));
            match fstype {
                "cgroup2" => Some(CgroupMount { root, mount_point, controllers: None }),
                "cgroup" => Some(CgroupMount {
                    root,
                    mount_point,
                    controllers: Some(opts.split(',').map(str::to_owned).collect()),
                }),
                _ => None,
            }
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// `/proc/self/cgroup`: hierarchy controllers (empty for v2) → kiln's cgroup path.
fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            let ctrls = if ctrls.is_empty() { Vec::new() } else { ctrls.split(',').map(str::to_owned).collect() };
            Some((ctrls, path.to_owned()))
        })
        .collect()
}

/// The directory of kiln's own cgroup in `mount`, joined with `leaf`.
fn own_dir(mount: &CgroupMount, own: &str, leaf: &str) -> PathBuf {
    let rel = own.strip_prefix(mount.root.as_str()).unwrap_or(own);
    let rel = rel.trim_start_matches('/');
    let mut p = mount.mount_point.clone();
    if !rel.is_empty() {
        p.push(rel);
    }
    p.push(leaf);
    p
}

/// Finds the cgroup layout of this host from mountinfo and kiln's own cgroups, and returns the
/// matching implementation for instance directory `leaf` (`kiln-<instance>`).
pub(crate) fn detect(mountinfo: &str, proc_cgroup: &str, leaf: &str) -> Result<Box<dyn Cgroups>, String> {
    let mounts = parse_mountinfo(mountinfo);
    let own = parse_proc_cgroup(proc_cgroup);
    let own_v2 = own.iter().find(|(c, _)| c.is_empty()).map(|(_, p)| p.clone());
    let own_v1 = |ctrl: &str| own.iter().find(|(c, _)| c.iter().any(|x| x == ctrl)).map(|(_, p)| p.clone());
    let v1_mount =
        |ctrl: &str| mounts.iter().find(|m| m.controllers.as_ref().is_some_and(|c| c.iter().any(|x| x == ctrl)));
    let v2_mount = mounts.iter().find(|m| m.controllers.is_none());

    if v1_mount("memory").is_some() {
        let dir = |ctrl: &str| -> Result<PathBuf, String> {
            let m = v1_mount(ctrl).ok_or_else(|| format!("the cgroup v1 {ctrl} controller is not mounted"))?;
            Ok(own_dir(m, &own_v1(ctrl).unwrap_or_else(|| "/".into()), leaf))
        };
        let unified = match (v2_mount, &own_v2) {
            (Some(m), Some(p)) => Some(own_dir(m, p, leaf)),
            (Some(m), None) => Some(own_dir(m, "/", leaf)),
            _ => None,
        };
        let freezer = v1_mount("freezer").map(|m| own_dir(m, &own_v1("freezer").unwrap_or_else(|| "/".into()), leaf));
        let paths = V1Paths { memory: dir("memory")?, cpu: dir("cpu")?, pids: dir("pids")?, freezer, unified };
        let mut cg = CgroupV1::new(paths).map_err(|e| e.to_string())?;
        // The cgroup2 tree is only usable if kiln's own directory in it exists (it has no
        // controllers here, only core files; `cgroup.freeze` appears in the directories below).
        if let Some(u) = cg.paths.unified.clone() {
            if !u.parent().is_some_and(|p| p.join("cgroup.procs").exists()) {
                cg.paths.unified = None;
            }
        }
        cg.unified_kill = kernel_has_cgroup_kill();
        if cg.paths.unified.is_none() && cg.paths.freezer.is_none() {
            return Err("neither a cgroup v1 freezer nor a cgroup2 tree is mounted".into());
        }
        return Ok(Box::new(cg));
    }
    if let Some(m) = v2_mount {
        let own = own_v2.unwrap_or_else(|| "/".into());
        let mut cg = CgroupV2::new(own_dir(m, &own, leaf));
        cg.has_kill = kernel_has_cgroup_kill();
        return Ok(Box::new(cg));
    }
    Err("no cgroup filesystem is mounted".into())
}

/// `cgroup.kill` exists in every non-root cgroup2 directory since Linux 5.14; the root has
/// none, so look at the kernel version.
fn kernel_has_cgroup_kill() -> bool {
    let Ok(release) = fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut it = release.trim().split(['.', '-']).map(|x| x.parse::<u32>().unwrap_or(0));
    let major = it.next().unwrap_or(0);
    let minor = it.next().unwrap_or(0);
    (major, minor) >= (5, 14)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_v2() -> (tempfile::TempDir, CgroupV2) {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
        let cg = CgroupV2::new(root.path().join("kiln-abcd1234"));
        (root, cg)
    }

    fn text(p: PathBuf) -> String {
        fs::read_to_string(p).unwrap()
    }

    #[test]
    fn limits_give_one_cpu_per_1769_mb_with_a_floor() {
        let one = Limits::for_memory_mb(1769);
        assert_eq!(one.cpu_quota_us, CPU_PERIOD_US);
        assert_eq!(one.cpu_shares, 1024);
        assert_eq!(one.cpu_weight, 100);
        let two = Limits::for_memory_mb(3538);
        assert_eq!(two.cpu_quota_us, 2 * CPU_PERIOD_US);
        let small = Limits::for_memory_mb(128);
        assert_eq!(small.cpu_quota_us, CPU_PERIOD_US / 10);
        assert_eq!(small.memory_bytes, 128 * 1024 * 1024);
        assert_eq!(small.pids_max, 1024);
        assert_eq!(Limits::for_memory_mb(10240).cpu_quota_us, CPU_PERIOD_US * 10240 / MB_PER_CPU);
    }

    #[test]
    fn init_gets_two_cpus_or_more_and_keeps_everything_else() {
        let small = Limits::for_memory_mb(128);
        let boosted = small.for_init();
        assert_eq!(boosted.cpu_quota_us, 2 * CPU_PERIOD_US);
        assert_eq!(Limits { cpu_quota_us: small.cpu_quota_us, ..boosted }, small);
        let big = Limits::for_memory_mb(10240);
        assert_eq!(big.for_init(), big, "a function with more than two CPUs keeps its own");
    }

    #[test]
    fn v1_charges_tcp_buffers_to_half_the_memory_and_v2_needs_no_extra_file() {
        let root = tempfile::tempdir().unwrap();
        let dir = |n: &str| root.path().join(n).join("kiln-abcd1234");
        let cg = CgroupV1::new(V1Paths {
            memory: dir("memory"),
            cpu: dir("cpu"),
            pids: dir("pids"),
            freezer: Some(dir("freezer")),
            unified: None,
        })
        .unwrap();
        for d in ["memory", "cpu", "pids", "freezer"] {
            fs::create_dir_all(root.path().join(d)).unwrap();
        }
        cg.init().unwrap();
        let small = Limits::for_memory_mb(128);
        cg.create("e", &small).unwrap();
        let tcp = dir("memory").join("e/memory.kmem.tcp.limit_in_bytes");
        assert_eq!(text(tcp.clone()), (64u64 << 20).to_string());
        cg.set_limits("e", &small, &Limits::for_memory_mb(1024)).unwrap();
        assert_eq!(text(tcp.clone()), (512u64 << 20).to_string());
        // v2: socket buffers count in memory.max; nothing else is written.
        let (root2, cg2) = fake_v2();
        cg2.init().unwrap();
        cg2.create("e", &small).unwrap();
        let d = root2.path().join("kiln-abcd1234/e");
        assert_eq!(text(d.join("memory.max")), (128u64 << 20).to_string());
        let names: Vec<String> =
            fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(!names.iter().any(|n| n.contains("tcp") || n.contains("kmem")), "{names:?}");
    }

    #[test]
    fn v2_init_delegates_controllers_to_the_instance_dir() {
        let (root, cg) = fake_v2();
        cg.init().unwrap();
        assert_eq!(text(root.path().join("cgroup.subtree_control")), "+memory +cpu +pids");
        assert_eq!(text(root.path().join("kiln-abcd1234/cgroup.subtree_control")), "+memory +cpu +pids");
    }

    #[test]
    fn v2_create_writes_limits_of_the_environment() {
        let (root, cg) = fake_v2();
        cg.init().unwrap();
        let procs = cg.create("env-1", &Limits::for_memory_mb(512)).unwrap();
        let d = root.path().join("kiln-abcd1234/env-1");
        // Init is born in the child that freezes, and leaves it once the bootstrap runs.
        assert_eq!(procs, vec![d.join("function/cgroup.procs")]);
        assert_eq!(cg.init_after_start("env-1"), Some(d.join("cgroup.procs")));
        assert_eq!(cg.thaw_control("env-1"), Some((d.join("function/cgroup.freeze"), &b"0"[..])));
        assert_eq!(text(d.join("memory.max")), (512u64 << 20).to_string());
        assert_eq!(text(d.join("memory.swap.max")), "0");
        assert_eq!(text(d.join("cpu.max")), format!("{} {CPU_PERIOD_US}", CPU_PERIOD_US * 512 / MB_PER_CPU));
        assert_eq!(text(d.join("cpu.weight")), "28");
        assert_eq!(text(d.join("pids.max")), "1024");
        assert_eq!(cg.list(), vec!["env-1".to_string()]);
    }

    #[test]
    fn set_limits_writes_only_what_changes() {
        let (root, cg) = fake_v2();
        cg.init().unwrap();
        let small = Limits::for_memory_mb(128);
        cg.create("e", &small).unwrap();
        let d = root.path().join("kiln-abcd1234/e");
        fs::write(d.join("pids.max"), "untouched").unwrap();
        let big = Limits::for_memory_mb(3538);
        cg.set_limits("e", &small, &big).unwrap();
        assert_eq!(text(d.join("memory.max")), (3538u64 << 20).to_string());
        assert_eq!(text(d.join("cpu.max")), format!("{} {CPU_PERIOD_US}", 2 * CPU_PERIOD_US));
        assert_eq!(text(d.join("cpu.weight")), "200");
        assert_eq!(text(d.join("pids.max")), "untouched");
        fs::write(d.join("memory.max"), "untouched").unwrap();
        cg.set_limits("e", &big, &big).unwrap();
        assert_eq!(text(d.join("memory.max")), "untouched");
    }

    #[test]
    fn v2_freeze_thaw_kill_and_accounting_use_core_files() {
        let (root, cg) = fake_v2();
        cg.init().unwrap();
        cg.create("e", &Limits::for_memory_mb(128)).unwrap();
        let d = root.path().join("kiln-abcd1234/e");
        let f = d.join("function");
        fs::write(f.join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
        cg.freeze("e").unwrap();
        assert_eq!(text(f.join("cgroup.freeze")), "1");
        assert!(!d.join("cgroup.freeze").exists(), "init's cgroup never freezes");
        cg.thaw("e").unwrap();
        assert_eq!(text(f.join("cgroup.freeze")), "0");

        fs::write(d.join("cgroup.kill"), "").unwrap();
        cg.kill_all("e").unwrap();
        assert_eq!(text(d.join("cgroup.kill")), "1");

        fs::write(d.join("memory.peak"), "123456\n").unwrap();
        assert_eq!(cg.peak_memory_bytes("e"), Some(123_456));
        fs::write(d.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n").unwrap();
        assert!(!cg.oom_killed("e"));
        fs::write(d.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
        assert!(cg.oom_killed("e"));
    }

    #[test]
    fn v2_freeze_times_out_when_the_kernel_never_confirms() {
        let (root, cg) = fake_v2();
        cg.init().unwrap();
        cg.create("e", &Limits::for_memory_mb(128)).unwrap();
        let d = root.path().join("kiln-abcd1234/e/function");
        fs::write(d.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        assert!(matches!(cg.freeze("e"), Err(CgroupError::FreezeTimeout { .. })));
    }

    #[test]
    fn v2_remove_is_idempotent() {
        let (root, cg) = fake_v2();
        cg.init().unwrap();
        let d = root.path().join("kiln-abcd1234/e");
        fs::create_dir_all(d.join("function")).unwrap();
        cg.remove("e").unwrap();
        assert!(!d.exists());
        cg.remove("e").unwrap();
    }

    #[test]
    fn killing_a_cgroup_that_is_gone_is_not_an_error() {
        let root = tempfile::tempdir().unwrap();
        let gone = root.path().join("removed-meanwhile");
        v2_kill(&gone, true).unwrap();
        v2_kill(&gone, false).unwrap();
        // Any other failure still counts.
        let file = root.path().join("a-file");
        fs::write(&file, "").unwrap();
        assert!(v2_kill(&file, true).is_err());
    }

    #[test]
    fn v1_create_writes_each_controller() {
        let root = tempfile::tempdir().unwrap();
        let p = |c: &str| root.path().join(c).join("kiln-abcd1234");
        let paths = V1Paths {
            memory: p("memory"),
            cpu: p("cpu"),
            pids: p("pids"),
            freezer: Some(p("freezer")),
            unified: Some(p("unified")),
        };
        for c in ["memory", "cpu", "pids", "freezer", "unified"] {
            fs::create_dir(root.path().join(c)).unwrap();
        }
        let cg = CgroupV1::new(paths).unwrap();
        cg.init().unwrap();
        let procs = cg.create("e", &Limits::for_memory_mb(1769)).unwrap();
        assert_eq!(procs.len(), 4);
        let bytes = (1769u64 << 20).to_string();
        assert_eq!(text(p("memory").join("e/memory.limit_in_bytes")), bytes);
        assert_eq!(text(p("cpu").join("e/cpu.cfs_quota_us")), CPU_PERIOD_US.to_string());
        assert_eq!(text(p("cpu").join("e/cpu.cfs_period_us")), CPU_PERIOD_US.to_string());
        assert_eq!(text(p("cpu").join("e/cpu.shares")), "1024");
        assert_eq!(text(p("pids").join("e/pids.max")), "1024");
        // The unified tree does the freezing, so the v1 freezer is not used.
        assert!(!p("freezer").join("e").exists());
        fs::write(p("memory").join("e/memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n").unwrap();
        assert!(cg.oom_killed("e"));
        fs::write(p("memory").join("e/memory.max_usage_in_bytes"), "4096\n").unwrap();
        assert_eq!(cg.peak_memory_bytes("e"), Some(4096));
        assert_eq!(cg.list(), vec!["e".to_string()]);

        cg.set_limits("e", &Limits::for_memory_mb(1769), &Limits::for_memory_mb(128)).unwrap();
        assert_eq!(text(p("memory").join("e/memory.limit_in_bytes")), (128u64 << 20).to_string());
        assert_eq!(text(p("cpu").join("e/cpu.cfs_quota_us")), (CPU_PERIOD_US / 10).to_string());
        assert_eq!(text(p("cpu").join("e/cpu.cfs_burst_us")), (CPU_PERIOD_US / 10).to_string());
        assert_eq!(text(p("cpu").join("e/cpu.shares")), "74");
    }

    const MOUNTINFO_HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup rw,relatime shared:9 - tmpfs tmpfs rw,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,relatime shared:10 - cgroup2 cgroup2 rw
33 31 0:28 / /sys/fs/cgroup/memory rw,relatime shared:11 - cgroup cgroup rw,memory
34 31 0:29 / /sys/fs/cgroup/cpu rw,relatime shared:12 - cgroup cgroup rw,cpu
35 31 0:30 / /sys/fs/cgroup/pids rw,relatime shared:13 - cgroup cgroup rw,pids
36 31 0:31 / /sys/fs/cgroup/freezer rw,relatime shared:14 - cgroup cgroup rw,freezer
";

    #[test]
    fn detect_finds_v1_with_unified_below_kilns_own_cgroups() {
        let own = "4:memory:/svc/a\n3:cpu:/\n2:pids:/\n1:freezer:/\n0::/\n";
        let cg = detect(MOUNTINFO_HYBRID, own, "kiln-1").unwrap();
        assert!(cg.layout().starts_with("v1"));
        let dbg = format!("{cg:?}");
        assert!(dbg.contains("/sys/fs/cgroup/memory/svc/a/kiln-1"), "{dbg}");
        assert!(dbg.contains("/sys/fs/cgroup/cpu/kiln-1"), "{dbg}");
    }

    #[test]
    fn detect_finds_pure_v2() {
        let mi = "31 25 0:26 / /sys/fs/cgroup rw,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        let cg = detect(mi, "0::/system.slice/kiln.service\n", "kiln-1").unwrap();
        assert_eq!(cg.layout(), "v2");
        let dbg = format!("{cg:?}");
        assert!(dbg.contains("/sys/fs/cgroup/system.slice/kiln.service/kiln-1"), "{dbg}");
    }

    #[test]
    fn detect_fails_without_cgroups() {
        assert!(detect("", "", "kiln-1").is_err());
    }
}
