//! Execution environments: where a function's `bootstrap` runs.
//!
//! The engine describes what it wants in a [`SandboxSpec`] and asks a [`Backend`] to build it.
//! What comes back is a [`Spawned`]: a handle to control the environment ([`Sandbox`]), the
//! listening socket on which the engine must serve the Runtime API for it, and the read end of
//! the pipe that carries the bootstrap's stdout and stderr.
//!
//! Two backends implement the interface:
//! - [`process::ProcessBackend`]: the bootstrap is a plain child process with a Runtime API port
//!   on the host's loopback. No isolation; for development on machines without privileges.
//! - [`linux::LinuxBackend`] (see its module): a real sandbox with its own namespaces, a
//!   read-only root, cgroup limits and a seccomp filter.
//!
//! This crate knows nothing of Lambda semantics beyond the spec: it does not speak HTTP, and it
//! does not decide when an environment lives or dies.
#![allow(unsafe_code)]

pub mod fdlimit;
#[cfg(target_os = "linux")]
pub mod linux;
pub mod process;

use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use tokio::sync::watch;

/// What the engine wants an environment to be.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// Unique id of the environment (`[a-z0-9-]`, at most 40 bytes); names cgroups and the hostname.
    pub id: String,
    /// Host directory holding the unpacked code: shown read-only at `/var/task`.
    pub code_dir: PathBuf,
    /// The bootstrap's path relative to the code directory (`bootstrap`), relative to the layers
    /// directory when `bootstrap_in_opt`, or an absolute path as the environment sees it
    /// ([`Backend::sandbox_path`]) for a managed runtime's launcher.
    pub bootstrap: PathBuf,
    /// Host directory holding the function's merged layers: shown read-only at `/opt`. `None`:
    /// `/opt` stays an empty directory.
    pub opt_dir: Option<PathBuf>,
    /// The bootstrap comes from the layers (`/opt/bootstrap`), as on Lambda when the function's
    /// own code has none.
    pub bootstrap_in_opt: bool,
    /// Environment variables of the bootstrap, except `AWS_LAMBDA_RUNTIME_API`, which the
    /// backend sets because only it knows where the Runtime API listens.
    pub env: Vec<(String, String)>,
    /// Memory limit of the whole environment.
    pub memory_mb: u32,
    /// Size of the private `/tmp`.
    pub tmp_mb: u32,
}

/// How the bootstrap ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitInfo {
    /// It exited with this status code.
    Code(i32),
    /// It was killed by this signal; `oom` when the kernel's OOM killer sent it.
    Signal { signal: i32, oom: bool },
    /// It could not be executed at all (missing, not executable, bad format).
    ExecFailed,
}

/// A freshly started environment.
pub struct Spawned {
    pub sandbox: Box<dyn Sandbox>,
    /// Where the engine must serve this environment's Runtime API (non-blocking).
    pub runtime_listener: TcpListener,
    /// Read end of the pipe carrying the bootstrap's stdout and stderr (non-blocking).
    pub output: OwnedFd,
}

/// A running environment. Dropping it destroys it.
pub trait Sandbox: Send + Sync {
    /// Process id of the environment's top process, as the host sees it.
    fn pid(&self) -> u32;
    /// Stops every process of the environment from running until [`Sandbox::thaw`].
    fn freeze(&self) -> Result<(), SandboxError>;
    fn thaw(&self) -> Result<(), SandboxError>;
    /// The Init phase is over (the runtime asked for its first event): from now on the
    /// environment runs with its function's own CPU share. Until then it may use more, as Init
    /// does on Lambda. Idempotent; backends without CPU limits do nothing.
    fn end_init(&self) -> Result<(), SandboxError> {
        Ok(())
    }
    /// Peak memory use of the environment so far, in bytes.
    fn max_memory_bytes(&self) -> u64;
    /// Becomes `Some` once the bootstrap has ended (the environment is then dead).
    fn exit_watch(&self) -> watch::Receiver<Option<ExitInfo>>;
    /// Kills every process of the environment and releases what it held. Idempotent.
    fn destroy(&self);
    /// Sends every process of the environment SIGKILL and returns without waiting; `destroy`
    /// must still follow. Lets whoever ends many environments have the kernel tear them down
    /// side by side rather than one after another. Backends that cannot do it do nothing.
    fn kill(&self) {}
}

/// Something that can build environments.
pub trait Backend: Send + Sync + 'static {
    /// A short name for logs (`process`, `linux`).
    fn name(&self) -> &'static str;
    /// Creates an environment and starts its bootstrap. Blocking; call it off the async threads.
    fn spawn(&self, spec: &SandboxSpec) -> Result<Spawned, SandboxError>;
    /// Destroys every environment still alive. Called at shutdown.
    fn shutdown(&self) {}
    /// The pool of ready-made sandboxes, for backends that keep one.
    fn pool_stats(&self) -> Option<PoolStats> {
        None
    }
    /// Where a host file shows inside this backend's environments, if it does at all. The
    /// process backend runs on the host itself, so a path stays what it is.
    fn sandbox_path(&self, host: &std::path::Path) -> Option<PathBuf> {
        Some(host.to_path_buf())
    }
}

/// Counters of a backend's pool of blank sandboxes, for status pages, benchmarks and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Blanks the pool tries to keep ready.
    pub target: usize,
    /// Blanks ready now.
    pub ready: usize,
    /// Spawns served by a blank from the pool.
    pub pooled_spawns: u64,
    /// Spawns that built their environment on the spot (pool empty or disabled).
    pub fresh_spawns: u64,
    /// Blank builds by the filler that failed.
    pub failed_builds: u64,
    /// Refills of taken blanks held back until the cold starts that took them are over.
    pub held_refills: usize,
}

/// Why an environment could not be built or controlled.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{step} failed for environment {id}")]
    Step {
        id: String,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Privileges(String),
}

impl SandboxError {
    pub fn step(id: &str, step: &'static str, source: std::io::Error) -> Self {
        Self::Step { id: id.to_string(), step, source }
    }
}
