//! Control groups of the environments, behind one trait for both cgroup layouts.
//!
//! Every kiln instance owns one directory per hierarchy, `kiln-<instance id>`, created below the
//! cgroup kiln itself runs in (so the limits an operator put on kiln also bound its
//! environments), and one directory per environment below that, named after the environment's
//! id. Nothing outside `kiln-<instance id>` is ever written, and leftovers of a previous kiln of
//! the same instance are found by listing it.
//!
//! Two implementations of [`Cgroups`]:
//! - [`CgroupV1`] (`v1.rs`) for hosts with v1 controllers: limits are written to the `memory`, `cpu` and
//!   `pids` hierarchies. Freezing and killing use the cgroup2 tree mounted beside them (usually
//!   `/sys/fs/cgroup/unified`) when it offers `cgroup.freeze` and `cgroup.kill`, because the
//!   v2 freezer is synchronous-ish (~20 µs) and handles fatal signals; otherwise the v1 `freezer`
//!   hierarchy and a SIGKILL per process.
//! - [`CgroupV2`] (`v2.rs`) for pure cgroup2 hosts: everything in one directory per environment.
//!
//! The root of every hierarchy is a plain path so tests can point an implementation at a temp
//! directory laid out like cgroupfs and check which files get which values.
//!
//! `detect.rs` reads `/proc/self/mountinfo` and `/proc/self/cgroup` and picks one of them.

use std::fmt;
use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod detect;
mod v1;
mod v2;

pub(crate) use detect::detect;
pub(crate) use v1::CgroupV1;
pub(crate) use v2::CgroupV2;

/// Bytes in a mebibyte: Lambda's `MemorySize` is in MiB.
const MIB: u64 = 1024 * 1024;
/// Memory that buys one full CPU, as on Lambda.
pub(crate) const MB_PER_CPU: u64 = 1769;
/// CFS period used for every environment: the kernel's default. A 20 ms period was measured too
/// (docs/benchmarks.md): it trades the rare long stall of a throttled small environment for
/// frequent short ones, which made warm p90 worse; the burst below is what helps sporadic calls.
pub(crate) const CPU_PERIOD_US: u64 = 100_000;
/// The CFS period a new cgroup gets from the kernel (`default_cfs_period()`, 100 ms).
pub(crate) const KERNEL_CPU_PERIOD_US: u64 = 100_000;
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
    /// Unused quota that may carry over to the next period (`cpu.cfs_burst_us`, v2
    /// `cpu.max.burst`; kernels ≥ 5.14), so a short burst of work after idling is not throttled
    /// mid-invocation. Never above the quota.
    pub cpu_burst_us: u64,
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
        let cpu_quota_us = (CPU_PERIOD_US * mb / MB_PER_CPU).max(floor);
        Limits {
            memory_bytes: mb * MIB,
            cpu_quota_us,
            cpu_burst_us: cpu_quota_us,
            cpu_shares: (1024 * mb / MB_PER_CPU).max(2),
            cpu_weight: (100 * mb / MB_PER_CPU).clamp(1, 10_000),
            pids_max: PIDS_MAX,
        }
    }

    /// These limits with the Init phase's CPU: at least [`INIT_CPUS`] whole CPUs. The burst stays
    /// the function's, so that ending Init changes the quota alone: the kernel checks every
    /// write of a quota or a burst against every CPU cgroup of the host (`__cfs_schedulable`
    /// walks them all, ~12 µs per write with 1,000 environments, cache-warm), and that write sits
    /// between the first `next` and the event.
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
    /// The writes that change the memory and CPU limits of `env` from `old` (what it has) to
    /// `new`, in the order they must happen: only the files whose value changes (`pids.max`
    /// and the CFS period never do).
    fn limit_writes(&self, env: &str, old: &Limits, new: &Limits) -> Vec<LimitWrite>;
    /// Changes the limits of `env` from `old` to `new` ([`Cgroups::limit_writes`]).
    fn set_limits(&self, env: &str, old: &Limits, new: &Limits) -> Result<(), CgroupError> {
        self.limit_writes(env, old, new).iter().try_for_each(LimitWrite::apply)
    }
    /// The same writes with their files opened now, to be applied later without a path lookup
    /// (an open of a cgroup file costs tens of microseconds of kernfs work): what ends an
    /// environment's Init, prepared while its bootstrap starts.
    fn prepare_limits(&self, env: &str, old: &Limits, new: &Limits) -> PreparedLimits {
        PreparedLimits(
            self.limit_writes(env, old, new)
                .into_iter()
                .map(|w| {
                    let file = fs::OpenOptions::new().write(true).open(&w.path).ok();
                    (w, file)
                })
                .collect(),
        )
    }
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
    /// The instance's own directories (`kiln-<instance id>`), one per hierarchy in use.
    fn instance_dirs(&self) -> Vec<PathBuf>;
}

/// Kills every process below `dir`, a cgroup directory of a dead kiln instance whose layout
/// this one need not share, and removes it and its descendants, deepest first.
pub(crate) fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    if !dir.is_dir() {
        return Ok(());
    }
    for sub in subdirs(dir) {
        remove_tree(&dir.join(sub))?;
    }
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        // cgroup2 kills the whole subtree at once; a v1-frozen process must thaw before a
        // SIGKILL lands. Either file may be absent.
        // (Opened without `create`: a file that is not there is not made.)
        for (file, value) in [("cgroup.kill", "1"), ("freezer.state", "THAWED")] {
            if let Ok(mut f) = fs::OpenOptions::new().write(true).open(dir.join(file)) {
                let _ = io::Write::write_all(&mut f, value.as_bytes());
            }
        }
        sigkill_each(&dir.join("cgroup.procs"));
        match rmdir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.is_busy() && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(CgroupError::Remove { path, source }) if source.raw_os_error() == Some(libc::EBUSY) => {
                return Err(CgroupError::Stuck { path });
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a process lives in `dir` or any cgroup below it.
pub(crate) fn populated(dir: &Path) -> bool {
    !pids_of(&dir.join("cgroup.procs")).is_empty() || subdirs(dir).iter().any(|sub| populated(&dir.join(sub)))
}

/// The `kiln-*` directories beside `own` (another instance's, in the same parent), `own` itself
/// excluded.
pub(crate) fn sibling_instances(own: &Path) -> Vec<PathBuf> {
    let (Some(parent), Some(leaf)) = (own.parent(), own.file_name()) else {
        return Vec::new();
    };
    subdirs(parent)
        .into_iter()
        .filter(|name| name.starts_with("kiln-") && std::ffi::OsStr::new(name) != leaf)
        .map(|name| parent.join(name))
        .collect()
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
        // The pid was read from the environment's cgroup.
        crate::linux::sys::host::sigkill(pid);
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

/// The writes that take the CFS quota and burst from `old` to `new`, in an order that never
/// has the burst above the quota (the kernel refuses that): a burst that falls is written
/// before the quota, one that rises after it, and a value that does not change is not written
/// (each write walks every CPU cgroup of the host). `quota` and `burst` make the write of a value.
pub(crate) fn cpu_writes(
    old: &Limits,
    new: &Limits,
    quota: impl Fn(u64) -> LimitWrite,
    burst: impl Fn(u64) -> LimitWrite,
) -> Vec<LimitWrite> {
    let mut w = Vec::new();
    if new.cpu_burst_us < old.cpu_burst_us {
        w.push(burst(new.cpu_burst_us));
    }
    if new.cpu_quota_us != old.cpu_quota_us {
        w.push(quota(new.cpu_quota_us));
    }
    if new.cpu_burst_us > old.cpu_burst_us {
        w.push(burst(new.cpu_burst_us));
    }
    w
}

/// One write of a limit: a file, its new value, and whether the kernel may lack the file.
#[derive(Debug)]
pub(crate) struct LimitWrite {
    pub path: PathBuf,
    pub value: String,
    pub optional: bool,
}

impl LimitWrite {
    pub(crate) fn new(path: PathBuf, value: impl Into<String>) -> LimitWrite {
        LimitWrite { path, value: value.into(), optional: false }
    }

    /// A setting the kernel may not have (e.g. swap accounting off); absence is fine.
    pub(crate) fn optional(path: PathBuf, value: impl Into<String>) -> LimitWrite {
        LimitWrite { path, value: value.into(), optional: true }
    }

    fn apply(&self) -> Result<(), CgroupError> {
        if self.optional {
            write_optional(&self.path, &self.value)
        } else {
            write(&self.path, &self.value)
        }
    }
}

/// Limit writes with their files already open ([`Cgroups::prepare_limits`]).
#[derive(Debug, Default)]
pub(crate) struct PreparedLimits(Vec<(LimitWrite, Option<fs::File>)>);

impl PreparedLimits {
    /// Applies the writes in order; a file that could not be opened is written by its path,
    /// which reports the error (or skips an optional file the kernel lacks).
    pub(crate) fn apply(&self) -> Result<(), CgroupError> {
        use std::os::unix::fs::FileExt;
        for (w, file) in &self.0 {
            match file {
                Some(f) => {
                    f.write_at(w.value.as_bytes(), 0).map_err(|source| CgroupError::Write {
                        path: w.path.clone(),
                        value: w.value.clone(),
                        source,
                    })?;
                }
                None => w.apply()?,
            }
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests;
