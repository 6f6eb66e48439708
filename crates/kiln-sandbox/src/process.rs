//! The process backend: the bootstrap runs as a plain child process of kiln.
//!
//! It gives no isolation at all and cannot freeze; it exists so that kiln runs where it has no
//! privileges (`kiln serve --isolation none`), and as the baseline the benchmarks compare with.

use crate::{Backend, ExitInfo, Sandbox, SandboxError, SandboxSpec, Spawned};
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Mutex;
use tokio::sync::watch;

/// Starts bootstraps as child processes with a Runtime API port on 127.0.0.1.
#[derive(Debug, Default)]
pub struct ProcessBackend;

struct ProcessSandbox {
    pid: u32,
    /// `/proc/<pid>/status`, opened once: REPORT reads its VmHWM after every invocation.
    status: Option<std::fs::File>,
    exit: watch::Receiver<Option<ExitInfo>>,
    kill: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Backend for ProcessBackend {
    fn name(&self) -> &'static str {
        "process"
    }

    fn spawn(&self, spec: &SandboxSpec) -> Result<Spawned, SandboxError> {
        let step = |step, e| SandboxError::step(&spec.id, step, e);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| step("bind runtime api", e))?;
        listener.set_nonblocking(true).map_err(|e| step("bind runtime api", e))?;
        let port = listener.local_addr().map_err(|e| step("bind runtime api", e))?.port();
        let (reader, writer) = std::io::pipe().map_err(|e| step("create output pipe", e))?;
        let writer2 = writer.try_clone().map_err(|e| step("create output pipe", e))?;
        let reader = OwnedFd::from(reader);
        set_nonblocking(&reader).map_err(|e| step("create output pipe", e))?;

        let exe = match (&spec.opt_dir, spec.bootstrap_in_opt) {
            (Some(opt), true) => opt.join(&spec.bootstrap),
            _ => spec.code_dir.join(&spec.bootstrap),
        };
        let mut cmd = tokio::process::Command::new(exe);
        cmd.current_dir(&spec.code_dir)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k.clone(), host_paths(k, v, spec.opt_dir.as_deref()))))
            .env(kiln_model::env::RUNTIME_API, format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(writer2)
            .process_group(0)
            .kill_on_drop(true);
        let (tx, rx) = watch::channel(None);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e)
                if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied)
                    || e.raw_os_error() == Some(libc::ENOEXEC) =>
            {
                let _ = tx.send(Some(ExitInfo::ExecFailed));
                return Ok(Spawned {
                    sandbox: Box::new(ProcessSandbox { pid: 0, status: None, exit: rx, kill: Mutex::new(None) }),
                    runtime_listener: listener,
                    output: reader,
                });
            }
            Err(e) => return Err(step("spawn bootstrap", e)),
        };
        let pid = child.id().unwrap_or(0);
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let status = tokio::select! {
                s = child.wait() => s,
                _ = kill_rx => {
                    kill_group(pid);
                    child.wait().await
                }
            };
            kill_group(pid);
            let info = match status {
                Ok(s) => match (s.code(), s.signal()) {
                    (Some(code), _) => ExitInfo::Code(code),
                    (None, Some(signal)) => ExitInfo::Signal { signal, oom: false },
                    (None, None) => ExitInfo::Code(-1),
                },
                Err(_) => ExitInfo::Code(-1),
            };
            let _ = tx.send(Some(info));
        });
        Ok(Spawned {
            sandbox: Box::new(ProcessSandbox {
                pid,
                status: std::fs::File::open(format!("/proc/{pid}/status")).ok(),
                exit: rx,
                kill: Mutex::new(Some(kill_tx)),
            }),
            runtime_listener: listener,
            output: reader,
        })
    }
}

/// Without a mount namespace there is no `/opt`: in the search-path variables, entries under
/// `/opt` are pointed at the host directory of the function's layers instead (and dropped when
/// it has none), so that `/opt/bin` and `/opt/lib` (and the runtimes' `/opt/python`,
/// `/opt/nodejs/node_modules`) still find what the layers hold.
fn host_paths(key: &str, value: &str, opt_dir: Option<&std::path::Path>) -> String {
    const SEARCH_PATHS: &[&str] = &["PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "NODE_PATH"];
    if !SEARCH_PATHS.contains(&key) {
        return value.to_string();
    }
    value
        .split(':')
        .filter_map(|entry| match entry.strip_prefix("/opt") {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => opt_dir.map(|d| format!("{}{rest}", d.display())),
            _ => Some(entry.to_string()),
        })
        .collect::<Vec<_>>()
        .join(":")
}

/// The `VmHWM:` line of a `/proc/PID/status`, in bytes. Read once per call for the REPORT line,
/// so it stops at that line and copies nothing (a UTF-8 check and split of the whole file were
/// a tenth of `kiln serve --isolation none`'s instructions per warm call).
fn vm_hwm_bytes(status: &[u8]) -> Option<u64> {
    let line = status.split(|&b| b == b'\n').find_map(|l| l.strip_prefix(b"VmHWM:"))?;
    let kb = std::str::from_utf8(line).ok()?.trim().strip_suffix("kB")?.trim();
    kb.parse::<u64>().ok().map(|kb| kb * 1024)
}

impl Sandbox for ProcessSandbox {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn freeze(&self) -> Result<(), SandboxError> {
        Ok(())
    }

    fn thaw(&self) -> Result<(), SandboxError> {
        Ok(())
    }

    fn max_memory_bytes(&self) -> u64 {
        use std::os::unix::fs::FileExt;
        // VmHWM of the bootstrap: the best a plain process offers. The buffer is the thread's,
        // zeroed once: a fresh zeroed array per call was 4 k of kiln's ~108 k instructions.
        thread_local! {
            static STATUS: std::cell::RefCell<[u8; 4096]> = const { std::cell::RefCell::new([0; 4096]) };
        }
        let Some(f) = self.status.as_ref() else { return 0 };
        STATUS.with_borrow_mut(|buf| match f.read_at(buf, 0) {
            Ok(n) => vm_hwm_bytes(&buf[..n]).unwrap_or(0),
            Err(_) => 0,
        })
    }

    fn exit_watch(&self) -> watch::Receiver<Option<ExitInfo>> {
        self.exit.clone()
    }

    fn destroy(&self) {
        if let Ok(mut k) = self.kill.lock() {
            if let Some(k) = k.take() {
                let _ = k.send(());
            }
        }
    }
}

impl Drop for ProcessSandbox {
    fn drop(&mut self) {
        self.destroy();
    }
}

fn kill_group(pid: u32) {
    if pid > 0 {
        // SAFETY: kill(2) takes plain integers; a negative pid names the process group we created.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
        }
    }
}

pub(crate) fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{host_paths, vm_hwm_bytes};
    use std::path::Path;

    #[test]
    fn vm_hwm_is_read_off_its_line() {
        let status = b"Name:\tbootstrap\nVmPeak:\t  10240 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(vm_hwm_bytes(status), Some(2048 * 1024));
        assert_eq!(vm_hwm_bytes(b"Name:\tbootstrap\nVmRSS:\t 1024 kB\n"), None);
        assert_eq!(vm_hwm_bytes(b"VmHWM:\t   12 MB\n"), None);
        // A read cut short inside the line: no number rather than a wrong one.
        assert_eq!(vm_hwm_bytes(b"VmHWM:\t    20"), None);
    }

    #[test]
    fn opt_search_paths_point_at_the_host_layers() {
        let opt = Some(Path::new("/data/code/opt/abc"));
        assert_eq!(host_paths("PATH", "/usr/bin:/opt/bin:/optional", opt), "/usr/bin:/data/code/opt/abc/bin:/optional");
        assert_eq!(host_paths("LD_LIBRARY_PATH", "/opt/lib:/lib64", None), "/lib64");
        assert_eq!(host_paths("HOME", "/opt/bin", opt), "/opt/bin");
    }
}
