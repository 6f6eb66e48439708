//! Cgroups of dead kiln instances, removed by whichever instance starts next.
//!
//! A backend removes its own predecessor's leftovers at start (same instance id, so same
//! cgroup names). A kiln killed with SIGKILL whose data dir is never served again would leave its
//! `kiln-<instance>` cgroups (empty: the environments die with kiln) for ever. So every live
//! backend registers here: `<dir>/kiln-<instance>.lock`, `flock`ed for as long as the backend
//! lives and listing the instance's cgroup directories, one per line. A starting backend takes
//! the lock of every other registration it finds; a lock it gets belongs to an instance that is
//! gone (the kernel drops an `flock` when its holder dies, however it dies), whose cgroups are
//! then killed and removed, and the registration deleted.
//!
//! A lock file is deleted only by the holder of its lock. Because a process may have opened the
//! file just before it was deleted, and then lock an inode no longer reachable by name, whoever
//! gets a lock checks that the path still names the inode it locked, and starts over if not.

use super::cgroups;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where backends register by default.
pub(crate) const REGISTRY_DIR: &str = "/run/kiln/sandbox";
/// How long a starting backend waits for its own registration's lock: another backend may be
/// sweeping a dead predecessor's registration of the same name, which takes as long as killing
/// its leftovers.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(15);
const LOCK_SUFFIX: &str = ".lock";

/// A live backend's registration; dropping it releases the lock and leaves the file for a sweep.
#[derive(Debug)]
pub(crate) struct Registration {
    file: File,
    path: PathBuf,
}

impl Registration {
    /// Registers the instance whose cgroup directories are named `leaf`, in `dir`.
    pub(crate) fn acquire(dir: &Path, leaf: &str) -> io::Result<Registration> {
        Self::acquire_within(dir, leaf, ACQUIRE_TIMEOUT)
    }

    fn acquire_within(dir: &Path, leaf: &str, timeout: Duration) -> io::Result<Registration> {
        fs::create_dir_all(dir)?;
        let path = dir.join(format!("{leaf}{LOCK_SUFFIX}"));
        let deadline = Instant::now() + timeout;
        loop {
            let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
            match file.try_lock() {
                // Deleted (swept) between our open and our lock: open the new one.
                Ok(()) if !names(&path, &file)? => {}
                Ok(()) => return Ok(Registration { file, path }),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(io::Error::new(
                        ErrorKind::WouldBlock,
                        format!("{} is held by a live kiln with the same instance id", path.display()),
                    ));
                }
                Err(TryLockError::Error(e)) => return Err(e),
            }
        }
    }

    /// The cgroup directories the registration lists now: a dead predecessor's (same instance
    /// id) until [`Registration::record`] replaces them. Only absolute paths named like the
    /// registration are returned, whatever the file says.
    pub(crate) fn recorded(&mut self) -> Vec<PathBuf> {
        let mut text = String::new();
        if self.file.seek(SeekFrom::Start(0)).is_err() || self.file.read_to_string(&mut text).is_err() {
            return Vec::new();
        }
        let leaf = self.path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(LOCK_SUFFIX));
        named_dirs(&text, leaf.unwrap_or_default())
    }

    /// Records the instance's cgroup directories, for a sweep after its death.
    pub(crate) fn record(&mut self, dirs: &[PathBuf]) -> io::Result<()> {
        let mut text = String::new();
        for d in dirs {
            text.push_str(&d.to_string_lossy());
            text.push('\n');
        }
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(text.as_bytes())
    }

    /// Deletes the registration: its instance's cgroups are gone.
    pub(crate) fn remove(self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether `path` still names the file `file` is open on.
fn names(path: &Path, file: &File) -> io::Result<bool> {
    let open = file.metadata()?;
    match fs::metadata(path) {
        Ok(named) => Ok(open.dev() == named.dev() && open.ino() == named.ino()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes the cgroups of every dead instance registered in `dir` (all but `own_leaf`'s) and
/// their registrations. Returns the names of the instances swept. Best effort: what cannot be
/// removed now stays registered for the next sweep.
pub(crate) fn sweep(dir: &Path, own_leaf: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut swept = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(leaf) = name.to_str().and_then(|n| n.strip_suffix(LOCK_SUFFIX)) else {
            continue;
        };
        if leaf == own_leaf || !leaf.starts_with("kiln-") {
            continue;
        }
        let path = entry.path();
        let Ok(mut file) = OpenOptions::new().read(true).write(true).open(&path) else {
            continue;
        };
        // Held: its instance lives (or another backend is sweeping it right now).
        if file.try_lock().is_err() || !names(&path, &file).unwrap_or(false) {
            continue;
        }
        let mut text = String::new();
        if file.read_to_string(&mut text).is_err() {
            continue;
        }
        let mut clean = true;
        for d in named_dirs(&text, leaf) {
            if let Err(e) = cgroups::remove_tree(&d) {
                tracing::warn!(cgroup = %d.display(), error = %e, "cannot remove a dead kiln's cgroup");
                clean = false;
            }
        }
        if clean {
            tracing::info!(instance = leaf, "removed the cgroups of a kiln that died without cleaning up");
            let _ = fs::remove_file(&path);
            swept.push(leaf.to_owned());
        }
    }
    swept
}

/// The absolute paths of `text` (one per line) whose last component is `leaf`: a registration
/// only ever names its own instance's directories, whatever the file says.
fn named_dirs(text: &str, leaf: &str) -> Vec<PathBuf> {
    text.lines()
        .map(Path::new)
        .filter(|d| d.is_absolute() && d.file_name() == Some(leaf.as_ref()))
        .map(Path::to_path_buf)
        .collect()
}

/// Removes the `kiln-*` cgroup directories beside `own_dirs` that no registration in `dir`
/// names and in which no process lives: an instance that died without a registration, or one
/// whose registration was lost (e.g. deleted with `/run`). A live instance registers before it
/// creates its cgroups (see `LinuxBackend::with_options`), so an unregistered directory is not
/// a live instance's. One with processes is left alone whatever its state. Returns the
/// directories removed.
pub(crate) fn sweep_orphans(dir: &Path, own_dirs: &[PathBuf]) -> Vec<PathBuf> {
    // An instance's directories, one per hierarchy, by name.
    let mut instances: std::collections::BTreeMap<String, Vec<PathBuf>> = std::collections::BTreeMap::new();
    for other in own_dirs.iter().flat_map(|own| cgroups::sibling_instances(own)) {
        if let Some(leaf) = other.file_name().and_then(|n| n.to_str()) {
            instances.entry(leaf.to_owned()).or_default().push(other);
        }
    }
    let mut removed = Vec::new();
    for (leaf, dirs) in instances {
        // Registered: a live instance, or a dead one that `sweep` handles. Processes in any
        // hierarchy: not ours to judge.
        if dir.join(format!("{leaf}{LOCK_SUFFIX}")).exists() || dirs.iter().any(|d| cgroups::populated(d)) {
            continue;
        }
        for d in dirs {
            match cgroups::remove_tree(&d) {
                Ok(()) => {
                    tracing::info!(cgroup = %d.display(), "removed the empty cgroups of a kiln that left no registration");
                    removed.push(d);
                }
                Err(e) => {
                    tracing::warn!(cgroup = %d.display(), error = %e, "cannot remove an unregistered kiln's cgroup");
                }
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_registration_is_left_alone_and_a_dead_one_is_swept() {
        let reg = tempfile::tempdir().unwrap();
        let cg = tempfile::tempdir().unwrap();
        let live_dir = cg.path().join("kiln-live");
        let dead_dir = cg.path().join("kiln-dead");
        fs::create_dir_all(live_dir.join("env-1")).unwrap();
        fs::create_dir_all(dead_dir.join("env-1")).unwrap();
        fs::create_dir_all(dead_dir.join("blank.3")).unwrap();

        let mut live = Registration::acquire(reg.path(), "kiln-live").unwrap();
        live.record(std::slice::from_ref(&live_dir)).unwrap();
        let mut dead = Registration::acquire(reg.path(), "kiln-dead").unwrap();
        dead.record(std::slice::from_ref(&dead_dir)).unwrap();
        // Dropping the file releases the lock, as the kernel does when the holder dies.
        drop(dead);

        let own = Registration::acquire(reg.path(), "kiln-own").unwrap();
        assert_eq!(sweep(reg.path(), "kiln-own"), vec!["kiln-dead".to_owned()]);
        assert!(!dead_dir.exists(), "the dead instance's cgroups are gone");
        assert!(!reg.path().join("kiln-dead.lock").exists());
        assert!(live_dir.join("env-1").is_dir(), "a live instance is untouched");
        assert!(reg.path().join("kiln-live.lock").exists());
        assert!(reg.path().join("kiln-own.lock").exists());
        drop((live, own));
    }

    #[test]
    fn only_directories_named_after_the_registration_are_removed() {
        let reg = tempfile::tempdir().unwrap();
        let cg = tempfile::tempdir().unwrap();
        let other = cg.path().join("precious");
        fs::create_dir_all(&other).unwrap();
        let mut dead = Registration::acquire(reg.path(), "kiln-dead").unwrap();
        dead.record(&[other.clone(), PathBuf::from("relative/kiln-dead")]).unwrap();
        drop(dead);
        assert_eq!(sweep(reg.path(), "kiln-own"), vec!["kiln-dead".to_owned()]);
        assert!(other.is_dir());
    }

    #[test]
    fn a_predecessors_record_is_read_before_it_is_replaced() {
        let reg = tempfile::tempdir().unwrap();
        let mut dead = Registration::acquire(reg.path(), "kiln-x").unwrap();
        dead.record(&[PathBuf::from("/cg/a/kiln-x"), PathBuf::from("/cg/b/kiln-y")]).unwrap();
        drop(dead);
        let mut again = Registration::acquire(reg.path(), "kiln-x").unwrap();
        assert_eq!(again.recorded(), vec![PathBuf::from("/cg/a/kiln-x")], "only its own name counts");
        again.record(&[PathBuf::from("/cg/c/kiln-x")]).unwrap();
        assert_eq!(again.recorded(), vec![PathBuf::from("/cg/c/kiln-x")]);
    }

    #[test]
    fn unregistered_empty_instances_are_swept_and_others_left() {
        let reg = tempfile::tempdir().unwrap();
        let cg = tempfile::tempdir().unwrap();
        let (a, b) = (cg.path().join("a"), cg.path().join("b"));
        for h in [&a, &b] {
            for d in ["kiln-own", "kiln-orphan/blank.1", "kiln-live/env-1", "kiln-busy/env-1", "other/env-1"] {
                fs::create_dir_all(h.join(d)).unwrap();
            }
        }
        // A process in one hierarchy keeps the instance whole.
        fs::write(b.join("kiln-busy/env-1/cgroup.procs"), "1\n").unwrap();
        let _live = Registration::acquire(reg.path(), "kiln-live").unwrap();
        let own = [a.join("kiln-own"), b.join("kiln-own")];
        let mut removed = sweep_orphans(reg.path(), &own);
        removed.sort();
        assert_eq!(removed, vec![a.join("kiln-orphan"), b.join("kiln-orphan")]);
        for h in [&a, &b] {
            for d in ["kiln-own", "kiln-live/env-1", "kiln-busy/env-1", "other/env-1"] {
                assert!(h.join(d).is_dir(), "{d} was removed");
            }
        }
    }

    #[test]
    fn a_second_live_registration_of_the_same_instance_is_refused() {
        let reg = tempfile::tempdir().unwrap();
        let _first = Registration::acquire(reg.path(), "kiln-x").unwrap();
        let err = Registration::acquire_within(reg.path(), "kiln-x", Duration::from_millis(100)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock);
    }

    #[test]
    fn a_registration_deleted_under_a_waiting_starter_is_recreated() {
        let reg = tempfile::tempdir().unwrap();
        let held = Registration::acquire(reg.path(), "kiln-x").unwrap();
        let dir = reg.path().to_owned();
        let starter = std::thread::spawn(move || Registration::acquire(&dir, "kiln-x"));
        std::thread::sleep(Duration::from_millis(100));
        // The holder deletes it (as a sweeper does) and lets go.
        held.remove();
        let got = starter.join().unwrap().unwrap();
        assert!(names(&got.path, &got.file).unwrap(), "the starter holds the file its path names");
    }
}
