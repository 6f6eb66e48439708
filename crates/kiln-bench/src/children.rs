//! What the bench leaves behind if it is interrupted: the processes it started (kiln servers,
//! the peer's emulator and functions) and its temporary data dirs. On SIGINT, SIGTERM or SIGHUP
//! the bench stops them (SIGTERM, so a kiln server tears its sandboxes down; SIGKILL after
//! 10 s), removes the dirs and exits with 130. A bench killed with SIGKILL cannot do this: its
//! servers then run on until stopped by hand.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Default)]
struct Live {
    pids: Vec<u32>,
    dirs: Vec<PathBuf>,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

static LIVE: Mutex<Live> = Mutex::new(Live { pids: Vec::new(), dirs: Vec::new() });

fn live() -> std::sync::MutexGuard<'static, Live> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A process the bench started and will stop itself.
pub(crate) fn track_pid(pid: u32) {
    live().pids.push(pid);
}

/// The process is stopped (or about to be, by its owner).
pub(crate) fn untrack_pid(pid: u32) {
    live().pids.retain(|p| *p != pid);
}

pub(crate) fn track_dir(dir: &Path) {
    live().dirs.push(dir.to_path_buf());
}

pub(crate) fn untrack_dir(dir: &Path) {
    live().dirs.retain(|d| d != dir);
}

/// Watches for SIGINT, SIGTERM and SIGHUP on a thread of its own (the scenarios' runtimes
/// may be gone by then) and cleans up on the first.
pub(crate) fn clean_up_on_signal() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let mut signals = {
        let _guard = rt.enter();
        [signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?, signal(SignalKind::hangup())?]
    };
    std::thread::Builder::new().name("bench-signals".into()).spawn(move || {
        rt.block_on(async {
            let [int, term, hup] = &mut signals;
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
        });
        INTERRUPTED.store(true, Ordering::SeqCst);
        eprintln!("kiln bench: interrupted; stopping the servers it started");
        let (pids, dirs) = {
            let mut live = live();
            (std::mem::take(&mut live.pids), std::mem::take(&mut live.dirs))
        };
        stop_all(&pids, &dirs);
        std::process::exit(130);
    })?;
    Ok(())
}

/// Whether a signal started the clean-up (a scenario failing after it is no error of its own).
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Blocks until the clean-up exits the process (at most its 10 s grace, then it gives up).
pub(crate) fn wait_for_clean_up() {
    std::thread::sleep(Duration::from_secs(15));
}

fn kill(sig: &str, pid: u32) {
    let _ = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether `pid` still runs (a zombie, waiting for us to reap it, does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with(|c| c != 'Z' && c != 'X')))
        .unwrap_or(false)
}

fn stop_all(pids: &[u32], dirs: &[PathBuf]) {
    for pid in pids {
        kill("-TERM", *pid);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| running(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in pids.iter().filter(|p| running(**p)) {
        kill("-KILL", *pid);
    }
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_child_is_not_running_and_tracking_is_undone() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        track_pid(pid);
        assert!(running(pid));
        stop_all(&[pid], &[]);
        // A zombie until reaped: not running.
        assert!(!running(pid));
        child.wait().unwrap();
        untrack_pid(pid);
        assert!(!live().pids.contains(&pid));
    }
}
