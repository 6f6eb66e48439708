//! Which cgroup layout the host has, and where kiln's own cgroups go in it.

use super::v1::V1Paths;
use super::*;
use std::fs;
use std::path::PathBuf;

/// One line of `/proc/self/mountinfo` that mounts a cgroup filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CgroupMount {
    /// The directory of the mount's root inside the hierarchy (`/` unless in a container).
    pub(super) root: String,
    pub(super) mount_point: PathBuf,
    /// `None` for cgroup2; the v1 controllers (and `name=`) otherwise.
    pub(super) controllers: Option<Vec<String>>,
}

pub(super) fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let _source = r.next()?;
            let opts = r.next().unwrap_or("");
            let root = unescape(fields.get(3)?);
            let mount_point = PathBuf::from(unescape(fields.get(4)?));
            match fstype {
                "cgroup2" => Some(CgroupMount { root, mount_point, controllers: None }),
                "cgroup" => Some(CgroupMount {
                    root,
                    mount_point,
                    controllers: Some(opts.split(',').map(str::to_owned).collect()),
                }),
                _ => None,
            }
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
pub(super) fn unescape(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// `/proc/self/cgroup`: hierarchy controllers (empty for v2) → kiln's cgroup path.
pub(super) fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            let ctrls = if ctrls.is_empty() { Vec::new() } else { ctrls.split(',').map(str::to_owned).collect() };
            Some((ctrls, path.to_owned()))
        })
        .collect()
}

/// The directory of kiln's own cgroup in `mount`, joined with `leaf`.
pub(super) fn own_dir(mount: &CgroupMount, own: &str, leaf: &str) -> PathBuf {
    let rel = own.strip_prefix(mount.root.as_str()).unwrap_or(own);
    let rel = rel.trim_start_matches('/');
    let mut p = mount.mount_point.clone();
    if !rel.is_empty() {
        p.push(rel);
    }
    p.push(leaf);
    p
}

/// Finds the cgroup layout of this host from mountinfo and kiln's own cgroups, and returns the
/// matching implementation for instance directory `leaf` (`kiln-<instance>`).
pub(crate) fn detect(mountinfo: &str, proc_cgroup: &str, leaf: &str) -> Result<Box<dyn Cgroups>, String> {
    let mounts = parse_mountinfo(mountinfo);
    let own = parse_proc_cgroup(proc_cgroup);
    let own_v2 = own.iter().find(|(c, _)| c.is_empty()).map(|(_, p)| p.clone());
    let own_v1 = |ctrl: &str| own.iter().find(|(c, _)| c.iter().any(|x| x == ctrl)).map(|(_, p)| p.clone());
    let v1_mount =
        |ctrl: &str| mounts.iter().find(|m| m.controllers.as_ref().is_some_and(|c| c.iter().any(|x| x == ctrl)));
    let v2_mount = mounts.iter().find(|m| m.controllers.is_none());

    if v1_mount("memory").is_some() {
        let dir = |ctrl: &str| -> Result<PathBuf, String> {
            let m = v1_mount(ctrl).ok_or_else(|| format!("the cgroup v1 {ctrl} controller is not mounted"))?;
            Ok(own_dir(m, &own_v1(ctrl).unwrap_or_else(|| "/".into()), leaf))
        };
        let unified = match (v2_mount, &own_v2) {
            (Some(m), Some(p)) => Some(own_dir(m, p, leaf)),
            (Some(m), None) => Some(own_dir(m, "/", leaf)),
            _ => None,
        };
        let freezer = v1_mount("freezer").map(|m| own_dir(m, &own_v1("freezer").unwrap_or_else(|| "/".into()), leaf));
        let paths = V1Paths { memory: dir("memory")?, cpu: dir("cpu")?, pids: dir("pids")?, freezer, unified };
        let mut cg = CgroupV1::new(paths).map_err(|e| e.to_string())?;
        // The cgroup2 tree is only usable if kiln's own directory in it exists (it has no
        // controllers here, only core files; `cgroup.freeze` appears in the directories below).
        if let Some(u) = cg.paths.unified.clone() {
            if !u.parent().is_some_and(|p| p.join("cgroup.procs").exists()) {
                cg.paths.unified = None;
            }
        }
        cg.unified_kill = kernel_has_cgroup_kill();
        if cg.paths.unified.is_none() && cg.paths.freezer.is_none() {
            return Err("neither a cgroup v1 freezer nor a cgroup2 tree is mounted".into());
        }
        return Ok(Box::new(cg));
    }
    if let Some(m) = v2_mount {
        let own = own_v2.unwrap_or_else(|| "/".into());
        let mut cg = CgroupV2::new(own_dir(m, &own, leaf));
        cg.has_kill = kernel_has_cgroup_kill();
        return Ok(Box::new(cg));
    }
    Err("no cgroup filesystem is mounted".into())
}

/// `cgroup.kill` exists in every non-root cgroup2 directory since Linux 5.14; the root has
/// none, so look at the kernel version.
pub(super) fn kernel_has_cgroup_kill() -> bool {
    let Ok(release) = fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut it = release.trim().split(['.', '-']).map(|x| x.parse::<u32>().unwrap_or(0));
    let major = it.next().unwrap_or(0);
    let minor = it.next().unwrap_or(0);
    (major, minor) >= (5, 14)
}
