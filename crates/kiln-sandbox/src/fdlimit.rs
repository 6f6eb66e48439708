//! kiln's own descriptor limit: raised to the hard limit at start, and how many are open.
//!
//! A tiny safe wrapper over `getrlimit`/`setrlimit`, here because only this crate may contain
//! `unsafe`. The engine uses [`open_descriptors`] and the limit to keep a reserve of descriptors
//! for clean-up and the REST API (see `kiln-engine`'s `fds` module).

/// kiln's `RLIMIT_NOFILE` after [`raise_nofile`]: (soft, hard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoFile {
    pub soft: u64,
    pub hard: u64,
}

/// Reads kiln's `RLIMIT_NOFILE`.
pub fn nofile() -> std::io::Result<NoFile> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(NoFile { soft: lim.rlim_cur, hard: lim.rlim_max })
}

/// Raises kiln's soft `RLIMIT_NOFILE` to its hard limit (children get theirs set by the sandbox)
/// and returns the limits now in force.
pub fn raise_nofile() -> std::io::Result<NoFile> {
    let now = nofile()?;
    if now.soft < now.hard {
        let lim = libc::rlimit { rlim_cur: now.hard, rlim_max: now.hard };
        // SAFETY: `lim` is a valid rlimit read by the call; setrlimit changes no memory of ours.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    nofile()
}

/// How many descriptors this process has open now (the entries of `/proc/self/fd`, less the
/// one the listing itself uses). Costs one directory read; `None` if `/proc` is not there.
pub fn open_descriptors() -> Option<usize> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(dir.count().saturating_sub(1))
}

/// The size of this process's descriptor table (`FDSize` of `/proc/self/status`): more than
/// the highest open descriptor, so at least [`open_descriptors`]. Costs one small read whatever
/// the number of descriptors, where counting them lists every one; `None` if `/proc` is not
/// there.
pub fn descriptor_table_size() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("FDSize:")).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn raising_keeps_the_hard_limit_and_counting_sees_new_descriptors() {
        let l = super::raise_nofile().unwrap();
        assert_eq!(l.soft, l.hard);
        let before = super::open_descriptors().unwrap();
        let files: Vec<_> = (0..10).map(|_| std::fs::File::open("/proc/self/stat").unwrap()).collect();
        let after = super::open_descriptors().unwrap();
        assert!(after >= before + 10, "{before} -> {after}");
        let table = super::descriptor_table_size().unwrap();
        assert!(table >= after, "table of {table} for {after} open");
        drop(files);
    }
}
