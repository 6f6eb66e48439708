//! The content-addressed code store.
//!
//! Layout under its root: `zips/<hex sha256>.zip` (the upload, kept for GetFunction and for
//! unpacking again after a crash) and `trees/<hex sha256>/` (the unpacked, read-only tree that
//! environments bind at `/var/task`). A tree is written under a temporary name and renamed into
//! place, so a tree that exists is always complete.

use crate::unzip::{self, UnzipError};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The SHA-256 of a zip, in the two spellings kiln needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CodeHash {
    /// Lowercase hex: file names.
    pub hex: String,
    /// Base64: Lambda's `CodeSha256`.
    pub base64: String,
}

impl CodeHash {
    pub fn of(bytes: &[u8]) -> Self {
        let digest = Sha256::digest(bytes);
        Self {
            hex: digest.iter().map(|b| format!("{b:02x}")).collect(),
            base64: base64::engine::general_purpose::STANDARD.encode(digest),
        }
    }

    /// Parses a `CodeSha256` back into a hash.
    pub fn from_base64(b64: &str) -> Option<Self> {
        let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        (raw.len() == 32)
            .then(|| Self { hex: raw.iter().map(|b| format!("{b:02x}")).collect(), base64: b64.to_string() })
    }
}

/// Why the code store failed.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error("code store i/o on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Unzip(#[from] UnzipError),
}

/// Zips and their unpacked trees.
#[derive(Debug, Clone)]
pub struct CodeStore {
    pub(crate) root: PathBuf,
}

impl CodeStore {
    pub fn open(root: &Path) -> Result<Self, CodeError> {
        for d in ["zips", "trees", "tmp", "opt"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(|source| CodeError::Io { path: p.clone(), source })?;
        }
        // Leftovers of an unpack that a crash interrupted.
        if let Ok(entries) = fs::read_dir(root.join("tmp")) {
            for e in entries.flatten() {
                let _ = remove_tree(&e.path());
            }
        }
        Ok(Self { root: root.to_path_buf() })
    }

    fn zip_path(&self, hash: &CodeHash) -> PathBuf {
        self.root.join("zips").join(format!("{}.zip", hash.hex))
    }

    /// The unpacked tree of `hash` (which may not exist yet).
    pub fn tree_path(&self, hash: &CodeHash) -> PathBuf {
        self.root.join("trees").join(&hash.hex)
    }

    /// Stores a zip (once per hash) and returns its hash.
    ///
    /// Every writer writes its own temporary file (a name no other writer uses, opened with
    /// `create_new`) and renames it into place: identical uploads at the same moment each
    /// rename a complete copy over the other, so the stored zip is always whole.
    pub fn put_zip(&self, zip: &[u8]) -> Result<CodeHash, CodeError> {
        let hash = CodeHash::of(zip);
        let path = self.zip_path(&hash);
        if path.exists() {
            return Ok(hash);
        }
        let tmp = self.root.join("tmp").join(format!("{}.{}.zip", hash.hex, uuid_like()));
        let io = |source| CodeError::Io { path: path.clone(), source };
        let written = (|| {
            let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(zip)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io(e));
        }
        Ok(hash)
    }

    pub fn read_zip(&self, hash: &CodeHash) -> Result<Vec<u8>, CodeError> {
        let path = self.zip_path(hash);
        fs::read(&path).map_err(|source| CodeError::Io { path, source })
    }

    /// Unpacks the zip of `hash` unless its tree already exists; returns the tree.
    pub fn unpack(&self, hash: &CodeHash) -> Result<PathBuf, CodeError> {
        let tree = self.tree_path(hash);
        if tree.is_dir() {
            return Ok(tree);
        }
        let zip = self.read_zip(hash)?;
        let tmp = self.root.join("tmp").join(format!("{}.{}", hash.hex, uuid_like()));
        match unzip::extract(&zip, &tmp) {
            Ok(_) => {}
            Err(e) => {
                let _ = remove_tree(&tmp);
                return Err(e.into());
            }
        }
        if let Err(source) = fs::rename(&tmp, &tree) {
            let _ = remove_tree(&tmp);
            if !tree.is_dir() {
                return Err(CodeError::Io { path: tree, source });
            }
        }
        Ok(tree)
    }

    /// Removes the zip and tree of `hash`.
    pub fn remove(&self, hash: &CodeHash) {
        let _ = fs::remove_file(self.zip_path(hash));
        let _ = remove_tree(&self.tree_path(hash));
    }
}

/// Removes a tree whose directories were made read-only.
pub(crate) fn remove_tree(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(m) = fs::symlink_metadata(&d) {
            if m.is_dir() {
                let _ = fs::set_permissions(&d, fs::Permissions::from_mode(0o755));
                if let Ok(rd) = fs::read_dir(&d) {
                    stack.extend(rd.flatten().map(|e| e.path()));
                }
            }
        }
    }
    fs::remove_dir_all(path)
}

/// A name no other writer of this process (or of another kiln on the same store) uses.
pub(crate) fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_sha256_is_base64_of_the_digest() {
        let h = CodeHash::of(b"abc");
        assert_eq!(h.base64, "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=");
        assert_eq!(CodeHash::from_base64(&h.base64), Some(h));
    }

    #[test]
    fn identical_zips_stored_at_once_all_succeed_and_stay_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = CodeStore::open(dir.path()).unwrap();
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file("bootstrap", zip::write::SimpleFileOptions::default()).unwrap();
        w.write_all(&vec![7u8; 4 << 20]).unwrap();
        let zip = w.finish().unwrap().into_inner();
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|_| s.spawn(|| store.put_zip(&zip))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in &results {
            assert!(r.is_ok(), "{r:?}");
        }
        let h = results[0].as_ref().unwrap();
        assert_eq!(store.read_zip(h).unwrap(), zip);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "no temporary file left");
    }

    #[test]
    fn unpacks_once_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = CodeStore::open(dir.path()).unwrap();
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file("bootstrap", zip::write::SimpleFileOptions::default()).unwrap();
        w.write_all(b"hi").unwrap();
        let zip = w.finish().unwrap().into_inner();
        let h = store.put_zip(&zip).unwrap();
        let t1 = store.unpack(&h).unwrap();
        let t2 = CodeStore::open(dir.path()).unwrap().unpack(&h).unwrap();
        assert_eq!(t1, t2);
        assert_eq!(fs::read(t1.join("bootstrap")).unwrap(), b"hi");
        store.remove(&h);
        assert!(!t1.exists());
    }
}
