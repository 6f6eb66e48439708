//! Helpers shared by the fuzz targets.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A scratch directory for this fuzzing process, made once and reused for every input.
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::Builder::new().prefix("kiln-fuzz-unzip.").tempdir().expect("tempdir")).path()
}

/// Runs `inspect` on `data` and, if it accepts, `extract` into `<tmp>/root/x`; then checks that
/// nothing was made outside the destination and that no link made inside resolves outside.
pub fn check_unzip(data: &[u8]) {
    let summary = match kiln_store::unzip::inspect(data) {
        Ok(s) => s,
        Err(e) => {
            // Display must not panic either.
            let _ = e.to_string();
            let _ = e.is_client_fault();
            return;
        }
    };
    assert!(summary.entries <= kiln_store::unzip::MAX_ENTRIES);

    let tmp = scratch();
    let root = tmp.join("root");
    wipe_children(tmp);
    fs::create_dir(&root).expect("mkdir root");
    let dest = root.join("x");

    let result = kiln_store::unzip::extract(data, &dest);
    if let Err(e) = &result {
        let _ = e.to_string();
    }

    // Nothing besides `root` in <tmp>, nothing besides `x` in <tmp>/root.
    assert_eq!(names(tmp), vec!["root".to_string()], "something was written beside root");
    let in_root = names(&root);
    assert!(
        in_root.is_empty() || in_root == vec!["x".to_string()],
        "something was written beside the destination: {in_root:?}"
    );

    if result.is_ok() {
        let dest_real = fs::canonicalize(&dest).expect("canonicalize dest");
        let mut stack = vec![dest.clone()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).expect("read_dir") {
                let entry = entry.expect("dir entry");
                let path = entry.path();
                let meta = fs::symlink_metadata(&path).expect("lstat");
                if meta.file_type().is_symlink() {
                    let target = fs::read_link(&path).expect("readlink");
                    let resolved = resolve_lenient(&dir.join(&target));
                    assert!(
                        resolved.starts_with(&dest_real),
                        "link {} -> {} resolves to {} outside {}",
                        path.display(),
                        target.display(),
                        resolved.display(),
                        dest_real.display()
                    );
                } else if meta.is_dir() {
                    stack.push(path);
                }
            }
        }
    }
    wipe_children(tmp);
}

/// Where the kernel takes `path`: the canonical form of its longest prefix that resolves
/// (so a dangling link is judged by how far it gets).
fn resolve_lenient(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    loop {
        if let Ok(real) = fs::canonicalize(&p) {
            return real;
        }
        if !p.pop() {
            return PathBuf::from("/");
        }
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Removes everything in `dir` (extracted trees are read-only, so make them writable first;
/// links are never followed).
fn wipe_children(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for entry in rd.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        if meta.is_dir() {
            let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o700));
            wipe_children(&path);
            fs::remove_dir(&path).expect("rmdir");
        } else {
            fs::remove_file(&path).expect("unlink");
        }
    }
}
