//! Safe extraction of uploaded zips.
//!
//! A zip is outside input: its names may be absolute or climb with `..`, its symlinks may point
//! anywhere, and its headers may lie about sizes. [`inspect`] checks the central directory
//! quickly so that CreateFunction can refuse a bad zip at once; [`extract`] checks everything
//! again while writing, counting the bytes it really writes, because the headers are not to be
//! trusted.

use kiln_model::limits::UNZIPPED_MAX_BYTES;
use std::collections::HashSet;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{Cursor, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// At most this many entries, counting the directories that names imply; a zip of millions of
/// empty files (or of deep names that each imply new directories) would exhaust inodes.
pub const MAX_ENTRIES: usize = 100_000;
/// At most this many directories deep, and this many bytes long, is an entry's path: what a
/// package needs, well within `PATH_MAX` once under the code store, and a bound on the work per
/// entry (every check here is linear in the length of a name).
pub const MAX_DEPTH: usize = 256;
pub const MAX_PATH_BYTES: usize = 3072;

/// Why a zip was refused.
#[derive(Debug, thiserror::Error)]
pub enum UnzipError {
    #[error("Could not unzip uploaded file. Please check your file, then try to upload again.")]
    NotZip(#[source] zip::result::ZipError),
    #[error("Could not unzip uploaded file. Please check your file, then try to upload again. Entry '{0}' is not a relative path inside the package.")]
    Escape(String),
    #[error("Could not unzip uploaded file. Please check your file, then try to upload again. Entry '{0}' is a link that points outside the package.")]
    LinkEscape(String),
    #[error(
        "Could not unzip uploaded file. Please check your file, then try to upload again. Entry '{0}' appears twice."
    )]
    Duplicate(String),
    #[error("Could not unzip uploaded file. Please check your file, then try to upload again. The package has more than {MAX_ENTRIES} entries.")]
    TooManyEntries,
    #[error("Could not unzip uploaded file. Please check your file, then try to upload again. Entry '{0}' cannot be unpacked (it sits under a file, or a part of its name is over 255 bytes).")]
    Unwritable(String),
    #[error("Could not unzip uploaded file. Please check your file, then try to upload again. Entry '{0}' is nested deeper than {MAX_DEPTH} directories or its path is longer than {MAX_PATH_BYTES} bytes.")]
    TooDeep(String),
    #[error("Unzipped size must be smaller than {UNZIPPED_MAX_BYTES} bytes")]
    TooLarge,
    #[error("could not write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl UnzipError {
    /// Whether the zip itself is at fault (as opposed to the disk).
    pub fn is_client_fault(&self) -> bool {
        !matches!(self, Self::Io { .. })
    }
}

/// What [`inspect`] learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub entries: usize,
    /// Sum of the sizes the headers declare.
    pub declared_bytes: u64,
}

/// Checks names, link targets and declared sizes without writing anything.
pub fn inspect(zip: &[u8]) -> Result<Summary, UnzipError> {
    let mut archive = zip::ZipArchive::new(Cursor::new(zip)).map_err(UnzipError::NotZip)?;
    if archive.len() > MAX_ENTRIES {
        return Err(UnzipError::TooManyEntries);
    }
    let links = links_of(&mut archive)?;
    let mut declared: u64 = 0;
    let mut seen = HashSet::new();
    // Files and links, which nothing may sit under, by the key of their path.
    let mut leaves: std::collections::HashMap<u64, PathBuf> = std::collections::HashMap::new();
    // Directories the names imply, which count as entries.
    let mut dirs: HashSet<u64> = HashSet::new();
    let count = archive.len();
    let mut names = Vec::with_capacity(count);
    for i in 0..count {
        let mut entry = archive.by_index(i).map_err(UnzipError::NotZip)?;
        let name = entry.name().map_err(UnzipError::NotZip)?.into_owned();
        let rel = relative_path(&name)?;
        check_shape(&rel, &name)?;
        if !seen.insert(rel.clone()) {
            return Err(UnzipError::Duplicate(name));
        }
        let keys = prefix_keys(&rel);
        if let Some((own, parents)) = keys.split_last() {
            dirs.extend(parents.iter().copied());
            if entry.is_dir() {
                dirs.insert(*own);
            } else {
                leaves.insert(*own, rel.clone());
            }
        }
        if count + dirs.len() > MAX_ENTRIES {
            return Err(UnzipError::TooManyEntries);
        }
        declared = declared.saturating_add(entry.size());
        if declared > UNZIPPED_MAX_BYTES {
            return Err(UnzipError::TooLarge);
        }
        if entry.is_symlink() {
            let target = read_link_target(&mut entry, &name)?;
            check_link(&rel, &target, &name, &links)?;
        }
        names.push((rel, name, keys));
    }
    // Nothing may sit under a file or a link: one look-up per ancestor, by key; a key that
    // matches is confirmed on the paths themselves.
    for (rel, name, keys) in &names {
        let parents = keys.split_last().map_or(&[][..], |(_, p)| p);
        for k in parents {
            if leaves.get(k).is_some_and(|leaf| rel.starts_with(leaf) && rel != leaf) {
                return Err(UnzipError::Unwritable(name.clone()));
            }
        }
    }
    Ok(Summary { entries: archive.len(), declared_bytes: declared })
}

/// Extracts `zip` into `dest` (which must not exist yet). Returns the bytes written.
///
/// Files become read-only (0444, or 0555 when the zip marks them executable) and directories
/// 0555 once everything is written, so that every user can read the code and nobody can change it.
pub fn extract(zip: &[u8], dest: &Path) -> Result<u64, UnzipError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| UnzipError::Io { path, source }
    };
    let mut archive = zip::ZipArchive::new(Cursor::new(zip)).map_err(UnzipError::NotZip)?;
    if archive.len() > MAX_ENTRIES {
        return Err(UnzipError::TooManyEntries);
    }
    let links = links_of(&mut archive)?;
    fs::create_dir(dest).map_err(io(dest))?;
    let mut written: u64 = 0;
    let mut dirs = vec![dest.to_path_buf()];
    // Keys of the directories made so far (see `prefix_keys`).
    let mut made: HashSet<u64> = HashSet::new();
    let mut buf = vec![0u8; 64 * 1024];
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(UnzipError::NotZip)?;
        let name = entry.name().map_err(UnzipError::NotZip)?.into_owned();
        let rel = relative_path(&name)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        check_shape(&rel, &name)?;
        let path = dest.join(&rel);
        let depth = if entry.is_dir() { usize::MAX } else { rel.components().count() - 1 };
        create_dirs(dest, &rel, depth, &mut made, &mut dirs).map_err(io(&path))?;
        if entry.is_dir() {
            continue;
        }
        if entry.is_symlink() {
            let target = read_link_target(&mut entry, &name)?;
            check_link(&rel, &target, &name, &links)?;
            std::os::unix::fs::symlink(&target, &path).map_err(io(&path))?;
            continue;
        }
        let executable = entry.unix_mode().is_some_and(|m| m & 0o111 != 0);
        // create_new refuses an existing path, symlink or not, so an earlier entry can never
        // redirect a later write.
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc_o_nofollow())
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => UnzipError::Duplicate(name.clone()),
                _ => UnzipError::Io { path: path.clone(), source: e },
            })?;
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(UnzipError::NotZip(zip::result::ZipError::Io(e))),
            };
            written += n as u64;
            if written > UNZIPPED_MAX_BYTES {
                return Err(UnzipError::TooLarge);
            }
            out.write_all(&buf[..n]).map_err(io(&path))?;
        }
        let mode = if executable { 0o555 } else { 0o444 };
        out.set_permissions(fs::Permissions::from_mode(mode)).map_err(io(&path))?;
    }
    // Deepest first, so a parent is locked only after its children were written.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in &dirs {
        fs::set_permissions(d, fs::Permissions::from_mode(0o555)).map_err(io(d))?;
    }
    Ok(written)
}

/// `O_NOFOLLOW`, so the final component of a path is never a symlink we follow.
fn libc_o_nofollow() -> i32 {
    0o400000
}

/// Makes the first `depth` directories of `rel` under `root` (all of them for `usize::MAX`),
/// skipping those already made: the work is linear in the length of `rel`, not in its square.
fn create_dirs(
    root: &Path,
    rel: &Path,
    depth: usize,
    made: &mut HashSet<u64>,
    dirs: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let parts: Vec<_> = rel.iter().take(depth).collect();
    let keys = prefix_keys(&parts.iter().collect::<PathBuf>());
    // The deepest directory already made; everything above it exists.
    let start = keys.iter().rposition(|k| made.contains(k)).map_or(0, |i| i + 1);
    let mut cur = root.to_path_buf();
    cur.extend(&parts[..start]);
    for (part, key) in parts[start..].iter().zip(&keys[start..]) {
        cur.push(part);
        match fs::create_dir(&cur) {
            Ok(()) => dirs.push(cur.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if !fs::symlink_metadata(&cur)?.is_dir() {
                    return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "not a directory"));
                }
            }
            Err(e) => return Err(e),
        }
        made.insert(*key);
    }
    Ok(())
}

/// The key of every prefix of `rel`, from its first component to itself ([`path_key`]).
fn prefix_keys(rel: &Path) -> Vec<u64> {
    let mut key = 0;
    rel.iter()
        .map(|c| {
            key = path_key(key, c.as_encoded_bytes());
            key
        })
        .collect()
}

/// Bounds on one entry's path: component length, depth, total length.
fn check_shape(rel: &Path, name: &str) -> Result<(), UnzipError> {
    if rel.iter().any(|c| c.len() > 255) {
        return Err(UnzipError::Unwritable(short(name)));
    }
    if rel.as_os_str().len() > MAX_PATH_BYTES || rel.iter().count() > MAX_DEPTH {
        return Err(UnzipError::TooDeep(short(name)));
    }
    Ok(())
}

/// A name short enough for an error message.
fn short(name: &str) -> String {
    match name.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &name[..i]),
        None => name.to_string(),
    }
}

/// The entry name as a path that stays inside the package: no root, no `..`, no NUL, no
/// backslashes (which other systems read as separators).
fn relative_path(name: &str) -> Result<PathBuf, UnzipError> {
    if name.starts_with('/') || name.contains('\0') || name.contains('\\') {
        return Err(UnzipError::Escape(name.to_string()));
    }
    let mut out = PathBuf::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(UnzipError::Escape(name.to_string())),
            p => out.push(p),
        }
    }
    Ok(out)
}

fn read_link_target<R: Read>(entry: &mut R, name: &str) -> Result<String, UnzipError> {
    let mut target = Vec::new();
    entry.take(4096).read_to_end(&mut target).map_err(|e| UnzipError::NotZip(zip::result::ZipError::Io(e)))?;
    String::from_utf8(target).map_err(|_| UnzipError::LinkEscape(name.to_string()))
}

/// The paths of the package's links, each as [`path_key`] of its components.
struct Links(HashSet<u64>);

/// Collects where the package has links, before any of them is checked or made: a link may pass
/// through a link that comes later in the archive.
fn links_of(archive: &mut zip::ZipArchive<Cursor<&[u8]>>) -> Result<Links, UnzipError> {
    let mut links = HashSet::new();
    for i in 0..archive.len() {
        let entry = archive.by_index(i).map_err(UnzipError::NotZip)?;
        if entry.is_symlink() {
            let name = entry.name().map_err(UnzipError::NotZip)?;
            let rel = relative_path(&name)?;
            let key = rel.iter().fold(0, |k, c| path_key(k, c.as_encoded_bytes()));
            links.insert(key);
        }
    }
    Ok(Links(links))
}

/// A path inside the package, one component at a time: the key of `parent/part`. Walking a
/// target this way costs no more than its length; a collision can only refuse a good link.
fn path_key(parent: u64, part: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parent.hash(&mut h);
    part.hash(&mut h);
    h.finish()
}

/// A link at `rel` pointing to `target` must resolve inside the package.
///
/// The target is walked from the link's directory. A `..` may not climb above the package, nor
/// climb back out of a component that is itself a link of the package: the kernel would climb
/// from where that link points, not from where it sits (`a/b -> ..` with `t -> a/b/..` is
/// the package's parent).
fn check_link(rel: &Path, target: &str, name: &str, links: &Links) -> Result<(), UnzipError> {
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return Err(UnzipError::LinkEscape(name.to_string()));
    }
    // The directory holding the link, then the target walked from there: (key, is a link).
    let mut walk: Vec<(u64, bool)> = Vec::new();
    let mut key = 0;
    for c in rel.parent().unwrap_or(Path::new("")) {
        key = path_key(key, c.as_encoded_bytes());
        walk.push((key, links.0.contains(&key)));
    }
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => match walk.pop() {
                Some((_, false)) => {}
                _ => return Err(UnzipError::LinkEscape(name.to_string())),
            },
            p => {
                let key = path_key(walk.last().map_or(0, |w| w.0), p.as_bytes());
                walk.push((key, links.0.contains(&key)));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    fn build(entries: &[(&str, &[u8])], links: &[(&str, &str)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in entries {
            w.start_file(*name, SimpleFileOptions::default().unix_permissions(0o755)).unwrap();
            w.write_all(data).unwrap();
        }
        for (name, target) in links {
            w.add_symlink(*name, *target, SimpleFileOptions::default()).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn extracts_files_dirs_and_inner_links_read_only() {
        let zip = build(&[("bootstrap", b"#!/bin/sh\n"), ("lib/a.so.1", b"x")], &[("lib/a.so", "a.so.1")]);
        assert_eq!(inspect(&zip).unwrap().entries, 3);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("t");
        assert_eq!(extract(&zip, &dest).unwrap(), 11);
        let mode = fs::metadata(dest.join("bootstrap")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o555);
        assert_eq!(fs::read(dest.join("lib/a.so")).unwrap(), b"x");
        assert_eq!(fs::metadata(dest.join("lib")).unwrap().permissions().mode() & 0o777, 0o555);
    }

    #[test]
    fn refuses_names_that_climb_or_are_absolute() {
        for bad in ["../evil", "a/../../evil", "/etc/passwd", "a\\..\\b"] {
            let zip = build(&[(bad, b"x")], &[]);
            assert!(matches!(inspect(&zip), Err(UnzipError::Escape(_))), "{bad}");
            let dir = tempfile::tempdir().unwrap();
            assert!(extract(&zip, &dir.path().join("t")).is_err(), "{bad}");
            assert!(!dir.path().join("evil").exists());
        }
    }

    #[test]
    fn refuses_links_that_escape() {
        for target in ["/etc/passwd", "../x", "a/../../x", ""] {
            let zip = build(&[], &[("l", target)]);
            assert!(matches!(inspect(&zip), Err(UnzipError::LinkEscape(_))), "{target}");
        }
        let zip = build(&[], &[("d/l", "../x")]);
        assert!(inspect(&zip).is_ok());
    }

    #[test]
    fn refuses_links_that_escape_through_other_links() {
        // `a/b` is the package itself, so `t -> a/b/..` is its parent (found by fuzz/unzip_entries).
        for (link, target) in [("t", "a/b/.."), ("t", "a/b/c/../.."), ("a/t", "b/../..")] {
            let zip = build(&[], &[("a/b", ".."), (link, target)]);
            assert!(matches!(inspect(&zip), Err(UnzipError::LinkEscape(_))), "{link} -> {target}");
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("t");
            assert!(matches!(extract(&zip, &dest), Err(UnzipError::LinkEscape(_))), "{link} -> {target}");
        }
        // The link coming first in the archive changes nothing.
        let zip = build(&[], &[("t", "a/b/.."), ("a/b", "..")]);
        assert!(matches!(inspect(&zip), Err(UnzipError::LinkEscape(_))));
        // Going down through a link, or `..` below it, stays inside.
        let zip = build(&[("v2/bin/run", b"x")], &[("cur", "v2"), ("run", "cur/bin/../bin/run")]);
        assert!(inspect(&zip).is_ok());
        let dir = tempfile::tempdir().unwrap();
        extract(&zip, &dir.path().join("t")).unwrap();
        assert_eq!(fs::read(dir.path().join("t/run")).unwrap(), b"x");
    }

    #[test]
    fn refuses_entries_that_cannot_be_written() {
        let zip = build(&[("a", b"1"), ("a/b", b"2")], &[]);
        assert!(matches!(inspect(&zip), Err(UnzipError::Unwritable(_))));
        let long = "x".repeat(256);
        let zip = build(&[(long.as_str(), b"1")], &[]);
        assert!(matches!(inspect(&zip), Err(UnzipError::Unwritable(_))));
        let zip = build(&[("d/", b""), ("d/f", b"1")], &[]);
        assert!(inspect(&zip).is_ok());
    }

    #[test]
    fn deep_names_are_bounded_and_implied_directories_count_as_entries() {
        // A name 20,000 directories deep (the quadratic check spent seconds per entry on these).
        let deep = "a/".repeat(20_000) + "f";
        let zip = build(&[(deep.as_str(), b"x")], &[]);
        match inspect(&zip) {
            Err(UnzipError::TooDeep(n)) => assert!(n.len() < 300, "the message carries a short name"),
            other => panic!("{other:?}"),
        }
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(extract(&zip, &dir.path().join("t")), Err(UnzipError::TooDeep(_))));
        let long = format!("{}/f", "b".repeat(200)).repeat(20);
        assert!(matches!(inspect(&build(&[(long.as_str(), b"x")], &[])), Err(UnzipError::TooDeep(_))));
        // Within the bounds, each entry may imply new directories, and they count.
        let names: Vec<String> = (0..500).map(|i| format!("d{i}/{}f", "a/".repeat(250))).collect();
        let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
        assert!(matches!(inspect(&build(&entries, &[])), Err(UnzipError::TooManyEntries)));
        // A deep package that fits is unpacked whole.
        let names: Vec<String> = (0..20).map(|i| format!("{}f{i}", "a/".repeat(200))).collect();
        let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
        let zip = build(&entries, &[]);
        assert_eq!(inspect(&zip).unwrap().entries, 20);
        let dest = dir.path().join("ok");
        assert_eq!(extract(&zip, &dest).unwrap(), 20);
        assert_eq!(fs::read(dest.join(&names[19])).unwrap(), b"x");
        // A file under a file is still refused with the keyed check.
        let zip = build(&[("p/q", b"1"), ("p/q/r/s", b"2")], &[]);
        assert!(matches!(inspect(&zip), Err(UnzipError::Unwritable(_))));
    }

    #[test]
    fn refuses_what_is_not_a_zip() {
        assert!(matches!(inspect(b"hello"), Err(UnzipError::NotZip(_))));
        assert!(matches!(inspect(b""), Err(UnzipError::NotZip(_))));
    }

    #[test]
    fn refuses_more_than_250_mb_unpacked() {
        // 300 MB of zeros compresses to a few hundred KB.
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        w.start_file("big", opts).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..300 {
            w.write_all(&chunk).unwrap();
        }
        let zip = w.finish().unwrap().into_inner();
        assert!(matches!(inspect(&zip), Err(UnzipError::TooLarge)));
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(extract(&zip, &dir.path().join("t")), Err(UnzipError::TooLarge)));
    }

    #[test]
    fn duplicate_entries_cannot_overwrite_through_a_link() {
        let zip = build(&[("x", b"1")], &[("l", "x")]);
        let dir = tempfile::tempdir().unwrap();
        extract(&zip, &dir.path().join("t")).unwrap();
        assert_eq!(fs::read(dir.path().join("t/l")).unwrap(), b"1");
    }

    proptest::proptest! {
        #[test]
        fn inspect_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = inspect(&data);
        }
    }
}
