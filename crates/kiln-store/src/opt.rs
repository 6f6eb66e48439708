//! Merged layer trees: what environments see at `/opt`.
//!
//! A function's layers are extracted in the order the function lists them, a later layer
//! replacing what an earlier one put at the same path (as Lambda does). The merged tree is
//! content-addressed by the ordered list of the layers' hashes (`opt/<hex sha256 of the list>/`),
//! built once under `tmp/` and renamed into place, and shared by every environment of every
//! function that uses the same layers in the same order.
//!
//! Each layer is first unpacked into its own tree by [`CodeStore::unpack`], which applies the
//! checks of [`crate::unzip`] (no `..`, no absolute names, no links out of the layer). The merge
//! then hard-links (or copies) files from those trees and never writes through a link: a path
//! that must become a directory, a file or a link is first removed if something else is there.

use crate::code::{remove_tree, uuid_like, CodeError, CodeHash, CodeStore};
use sha2::{Digest, Sha256};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

impl CodeStore {
    /// The key of a merged tree: SHA-256 over the ordered layer hashes.
    pub fn opt_key(layers: &[CodeHash]) -> String {
        let mut h = Sha256::new();
        for l in layers {
            h.update(l.hex.as_bytes());
            h.update(b"\n");
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Where the merged tree of `layers` lives (it may not exist yet).
    pub fn opt_path(&self, layers: &[CodeHash]) -> PathBuf {
        self.root.join("opt").join(Self::opt_key(layers))
    }

    /// Builds the merged tree of `layers` unless it exists; returns it. `None` for no layers.
    pub fn opt_tree(&self, layers: &[CodeHash]) -> Result<Option<PathBuf>, CodeError> {
        if layers.is_empty() {
            return Ok(None);
        }
        let dest = self.opt_path(layers);
        if dest.is_dir() {
            return Ok(Some(dest));
        }
        let mut trees = Vec::with_capacity(layers.len());
        for l in layers {
            trees.push(self.unpack(l)?);
        }
        let tmp = self.root.join("tmp").join(format!("opt-{}.{}", Self::opt_key(layers), uuid_like()));
        let built = (|| {
            fs::create_dir(&tmp).map_err(io(&tmp))?;
            let mut dirs = vec![tmp.clone()];
            for t in &trees {
                merge_into(t, &tmp, &mut dirs)?;
            }
            // Deepest first, so a parent is locked only after its children were written.
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for d in &dirs {
                fs::set_permissions(d, fs::Permissions::from_mode(0o555)).map_err(io(d))?;
            }
            Ok(())
        })();
        if let Err(e) = built {
            let _ = remove_tree(&tmp);
            return Err(e);
        }
        if let Err(source) = fs::rename(&tmp, &dest) {
            let _ = remove_tree(&tmp);
            if !dest.is_dir() {
                return Err(CodeError::Io { path: dest, source });
            }
        }
        Ok(Some(dest))
    }

    /// Removes merged trees whose key is not in `keep` and that are older than `min_age`: a
    /// younger tree may belong to a configuration change that is still being applied.
    pub fn remove_opt_trees_except(&self, keep: &std::collections::HashSet<String>, min_age: std::time::Duration) {
        let Ok(entries) = fs::read_dir(self.root.join("opt")) else { return };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let young = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|age| age < min_age);
            if !keep.contains(&name) && !young {
                let _ = remove_tree(&e.path());
            }
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CodeError {
    let path = path.to_path_buf();
    move |source| CodeError::Io { path, source }
}

/// Copies the tree `src` over `dest`, entries of `src` replacing those of `dest`.
fn merge_into(src: &Path, dest: &Path, dirs: &mut Vec<PathBuf>) -> Result<(), CodeError> {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let from_dir = src.join(&rel);
        let entries = fs::read_dir(&from_dir).map_err(io(&from_dir))?;
        for e in entries {
            let e = e.map_err(io(&from_dir))?;
            let rel = rel.join(e.file_name());
            let from = src.join(&rel);
            let to = dest.join(&rel);
            let meta = fs::symlink_metadata(&from).map_err(io(&from))?;
            let existing = fs::symlink_metadata(&to).ok();
            if meta.is_dir() {
                match existing {
                    Some(m) if m.is_dir() => {}
                    Some(_) => {
                        fs::remove_file(&to).map_err(io(&to))?;
                        fs::create_dir(&to).map_err(io(&to))?;
                        dirs.push(to.clone());
                    }
                    None => {
                        fs::create_dir(&to).map_err(io(&to))?;
                        dirs.push(to.clone());
                    }
                }
                stack.push(rel);
                continue;
            }
            match existing {
                Some(m) if m.is_dir() => remove_tree(&to).map_err(io(&to))?,
                Some(_) => fs::remove_file(&to).map_err(io(&to))?,
                None => {}
            }
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&from).map_err(io(&from))?;
                std::os::unix::fs::symlink(&target, &to).map_err(io(&to))?;
            } else if fs::hard_link(&from, &to).is_err() {
                fs::copy(&from, &to).map_err(io(&to))?;
                fs::set_permissions(&to, meta.permissions()).map_err(io(&to))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use zip::write::SimpleFileOptions;

    fn zip_of(files: &[(&str, &str)], links: &[(&str, &str)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, data) in files {
            w.start_file(*name, SimpleFileOptions::default().unix_permissions(0o644)).unwrap();
            w.write_all(data.as_bytes()).unwrap();
        }
        for (name, target) in links {
            w.add_symlink(*name, *target, SimpleFileOptions::default()).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn later_layers_win_and_the_merge_is_built_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = CodeStore::open(dir.path()).unwrap();
        let a = store
            .put_zip(&zip_of(&[("same", "a"), ("only-a", "a"), ("d/x", "a"), ("f", "a-file")], &[("l", "only-a")]))
            .unwrap();
        // `d` becomes a file, `f` a directory, `l` a plain file, and `same` is replaced.
        let b = store.put_zip(&zip_of(&[("same", "b"), ("d", "b-file"), ("f/y", "b"), ("l", "b")], &[])).unwrap();
        let t = store.opt_tree(&[a.clone(), b.clone()]).unwrap().unwrap();
        let read = |p: &str| fs::read_to_string(t.join(p)).unwrap();
        assert_eq!(read("same"), "b");
        assert_eq!(read("only-a"), "a");
        assert_eq!(read("d"), "b-file");
        assert_eq!(read("f/y"), "b");
        assert_eq!(read("l"), "b");
        assert!(!fs::symlink_metadata(t.join("l")).unwrap().file_type().is_symlink());
        assert_eq!(fs::metadata(&t).unwrap().permissions().mode() & 0o777, 0o555);
        // The other order is another tree, where `a` wins.
        let t2 = store.opt_tree(&[b, a.clone()]).unwrap().unwrap();
        assert_ne!(t, t2);
        assert_eq!(fs::read_to_string(t2.join("same")).unwrap(), "a");
        assert_eq!(fs::read_to_string(t2.join("d/x")).unwrap(), "a");
        // Built once: asking again returns the same tree without rebuilding.
        let before = fs::metadata(&t).unwrap().modified().unwrap();
        assert_eq!(
            store
                .opt_tree(&[
                    a.clone(),
                    store.put_zip(&zip_of(&[("same", "b"), ("d", "b-file"), ("f/y", "b"), ("l", "b")], &[])).unwrap()
                ])
                .unwrap()
                .unwrap(),
            t
        );
        assert_eq!(fs::metadata(&t).unwrap().modified().unwrap(), before);
        assert_eq!(store.opt_tree(&[]).unwrap(), None);
        // Garbage collection keeps what is asked for.
        let keep = [CodeStore::opt_key(std::slice::from_ref(&a))].into_iter().collect();
        store.remove_opt_trees_except(&keep, std::time::Duration::from_secs(3600));
        assert!(t.exists() && t2.exists(), "young trees are kept");
        store.remove_opt_trees_except(&keep, std::time::Duration::ZERO);
        assert!(!t.exists() && !t2.exists());
    }

    #[test]
    fn a_link_in_a_later_layer_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let store = CodeStore::open(dir.path()).unwrap();
        let a = store.put_zip(&zip_of(&[("real/keep", "a")], &[("d", "real")])).unwrap();
        let b = store.put_zip(&zip_of(&[("d/new", "b")], &[])).unwrap();
        let t = store.opt_tree(&[a, b]).unwrap().unwrap();
        assert!(fs::symlink_metadata(t.join("d")).unwrap().is_dir());
        assert_eq!(fs::read_to_string(t.join("d/new")).unwrap(), "b");
        assert!(!t.join("real/new").exists());
    }
}
