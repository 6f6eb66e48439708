//! The exclusive lock a `kiln serve` holds on its data dir for as long as it runs.
//!
//! Everything a server leaves in the system (cgroups, the scratch directory) is named after its
//! data dir, and a starting server removes what a dead predecessor left behind. Without a lock,
//! a second server on the same data dir would take the running server's environments for
//! leftovers and destroy them. So the lock is the first thing `kiln serve` takes, before it
//! touches anything, and while it is held every leftover of the data dir's instance provably
//! belongs to a server that is gone.
//!
//! The lock is an `flock` on `<data dir>/kiln.lock`: the kernel drops it when the holder dies,
//! however it dies (`kill -9` included), so there is never a stale lock to remove by hand. The
//! file's content is only information for the refusal message (the holder's pid and address);
//! the file itself is never deleted, since deleting a lock file while another process waits to
//! open it lets two processes each lock a different inode.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the data dir.
pub const LOCK_FILE: &str = "kiln.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another kiln server ({holder}) is using the data dir {}; stop it first, or give this one \
         its own --data-dir",
        dir.display()
    )]
    Held { dir: PathBuf, holder: String },
    #[error("cannot lock the data dir {}", dir.display())]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
}

impl DataDirLock {
    /// Takes the lock on `dir` without waiting; [`LockError::Held`] names the holder when
    /// another process has it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        let io = |source| LockError::Io { dir: dir.to_owned(), source };
        // No truncation at open: the file may belong to a live holder whose details the refusal
        // reads.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held { dir: dir.to_owned(), holder: describe_holder(&text) });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let mut lock = DataDirLock { file };
        lock.record(None).map_err(io)?;
        Ok(lock)
    }

    /// Writes this process's pid, and the address once it is known, into the lock file.
    pub fn record(&mut self, addr: Option<&str>) -> std::io::Result<()> {
        let mut text = format!("pid {}\n", std::process::id());
        if let Some(a) = addr {
            text.push_str(&format!("addr {a}\n"));
        }
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(text.as_bytes())?;
        self.file.flush()
    }
}

/// "pid 1234, listening on http://127.0.0.1:9000" from the lock file's content; the holder may
/// not have written all of it yet.
fn describe_holder(text: &str) -> String {
    let field =
        |key: &str| text.lines().find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' '))).map(str::trim);
    match (field("pid"), field("addr")) {
        (Some(pid), Some(addr)) => format!("pid {pid}, listening on http://{addr}"),
        (Some(pid), None) => format!("pid {pid}, still starting"),
        _ => "its pid is not recorded yet".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_the_same_dir_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = DataDirLock::acquire(dir.path()).unwrap();
        first.record(Some("127.0.0.1:9000")).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LockError::Held { .. }), "{msg}");
        assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
        assert!(msg.contains("http://127.0.0.1:9000"), "{msg}");
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    }

    #[test]
    fn lock_is_free_again_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        drop(first);
        let _again = DataDirLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(text, format!("pid {}\n", std::process::id()));
    }

    #[test]
    fn holder_description_copes_with_a_partial_file() {
        assert_eq!(describe_holder(""), "its pid is not recorded yet");
        assert_eq!(describe_holder("pid 7\n"), "pid 7, still starting");
        assert_eq!(describe_holder("pid 7\naddr [::1]:80\n"), "pid 7, listening on http://[::1]:80");
    }
}
