//! Zips for the REST API: a folder with its file modes, one executable as `bootstrap`, or
//! any files given in memory.

use std::io::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is neither a .zip nor a folder", .0.display())]
    NotZipOrFolder(PathBuf),
    #[error("cannot build the zip")]
    Zip(#[source] zip::result::ZipError),
    #[error("cannot build the zip")]
    Write(#[source] std::io::Error),
}

/// A zip built in memory, entry by entry (deflated).
pub struct ZipBuilder {
    w: zip::ZipWriter<std::io::Cursor<Vec<u8>>>,
}

impl Default for ZipBuilder {
    fn default() -> Self {
        ZipBuilder::new()
    }
}

impl ZipBuilder {
    pub fn new() -> ZipBuilder {
        ZipBuilder { w: zip::ZipWriter::new(std::io::Cursor::new(Vec::new())) }
    }

    /// Adds `name` with `data`; `mode` sets its Unix permissions (the zip's default when None).
    pub fn file(&mut self, name: &str, data: &[u8], mode: Option<u32>) -> Result<&mut ZipBuilder, PackageError> {
        let mut opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        if let Some(m) = mode {
            opts = opts.unix_permissions(m);
        }
        self.w.start_file(name, opts).map_err(PackageError::Zip)?;
        self.w.write_all(data).map_err(PackageError::Write)?;
        Ok(self)
    }

    pub fn finish(self) -> Result<Vec<u8>, PackageError> {
        Ok(self.w.finish().map_err(PackageError::Zip)?.into_inner())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, PackageError> {
    std::fs::read(path).map_err(|source| PackageError::Read { path: path.to_path_buf(), source })
}

/// A .zip as it is, or a folder zipped with its file modes (entries sorted by path).
pub fn package(path: &Path) -> Result<Vec<u8>, PackageError> {
    if path.is_file() {
        return read(path);
    }
    if !path.is_dir() {
        return Err(PackageError::NotZipOrFolder(path.to_path_buf()));
    }
    use std::os::unix::fs::PermissionsExt;
    let cannot_read = |p: &Path| {
        let path = p.to_path_buf();
        move |source| PackageError::Read { path, source }
    };
    let mut stack = vec![path.to_path_buf()];
    let mut files = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(cannot_read(&dir))? {
            let p = entry.map_err(cannot_read(&dir))?.path();
            let meta = std::fs::metadata(&p).map_err(cannot_read(&p))?;
            if meta.is_dir() {
                stack.push(p);
            } else {
                files.push((p, meta.permissions().mode()));
            }
        }
    }
    files.sort();
    let mut zip = ZipBuilder::new();
    for (p, mode) in files {
        let rel = p.strip_prefix(path).unwrap_or(&p).to_string_lossy().into_owned();
        zip.file(&rel, &read(&p)?, Some(mode & 0o777))?;
    }
    zip.finish()
}

/// The executable at `bin` as the only entry, `bootstrap`, mode 0755: a `provided*` function.
pub fn bootstrap(bin: &Path) -> Result<Vec<u8>, PackageError> {
    let mut zip = ZipBuilder::new();
    zip.file("bootstrap", &read(bin)?, Some(0o755))?;
    zip.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn entries(zip: &[u8]) -> Vec<(String, Option<u32>, Vec<u8>)> {
        let mut a = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
        (0..a.len())
            .map(|i| {
                let mut f = a.by_index(i).unwrap();
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut f, &mut data).unwrap();
                (f.name().unwrap().to_string(), f.unix_mode().map(|m| m & 0o777), data)
            })
            .collect()
    }

    #[test]
    fn a_folder_is_zipped_sorted_with_its_modes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("lib")).unwrap();
        std::fs::write(dir.path().join("bootstrap"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(dir.path().join("bootstrap"), std::fs::Permissions::from_mode(0o750)).unwrap();
        std::fs::write(dir.path().join("lib/a.txt"), b"a").unwrap();
        std::fs::set_permissions(dir.path().join("lib/a.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
        let got = entries(&package(dir.path()).unwrap());
        assert_eq!(
            got,
            [
                ("bootstrap".to_string(), Some(0o750), b"#!/bin/sh\n".to_vec()),
                ("lib/a.txt".to_string(), Some(0o640), b"a".to_vec())
            ]
        );
    }

    #[test]
    fn a_zip_goes_as_it_is_and_anything_else_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let zip = dir.path().join("f.zip");
        std::fs::write(&zip, b"PK not really").unwrap();
        assert_eq!(package(&zip).unwrap(), b"PK not really");
        let missing = dir.path().join("missing");
        assert_eq!(
            package(&missing).unwrap_err().to_string(),
            format!("{} is neither a .zip nor a folder", missing.display())
        );
    }

    #[test]
    fn a_binary_becomes_an_executable_bootstrap() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("hello");
        std::fs::write(&bin, b"\x7fELF").unwrap();
        assert_eq!(entries(&bootstrap(&bin).unwrap()), [("bootstrap".to_string(), Some(0o755), b"\x7fELF".to_vec())]);
        let mut z = ZipBuilder::new();
        z.file("app.py", b"x", None).unwrap();
        assert_eq!(entries(&z.finish().unwrap())[0].0, "app.py");
    }
}
