use super::detect::*;
use super::v1::*;
use super::v2::*;
use super::*;

fn fake_v2() -> (tempfile::TempDir, CgroupV2) {
    let root = tempfile::tempdir().unwrap();
    fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
    let cg = CgroupV2::new(root.path().join("kiln-abcd1234"));
    (root, cg)
}

fn text(p: PathBuf) -> String {
    fs::read_to_string(p).unwrap()
}

#[test]
fn limits_give_one_cpu_per_1769_mb_with_a_floor() {
    let one = Limits::for_memory_mb(1769);
    assert_eq!(one.cpu_quota_us, CPU_PERIOD_US);
    assert_eq!(one.cpu_shares, 1024);
    assert_eq!(one.cpu_weight, 100);
    let two = Limits::for_memory_mb(3538);
    assert_eq!(two.cpu_quota_us, 2 * CPU_PERIOD_US);
    let small = Limits::for_memory_mb(128);
    assert_eq!(small.cpu_quota_us, CPU_PERIOD_US / 10);
    assert_eq!(small.memory_bytes, 128 * 1024 * 1024);
    assert_eq!(small.pids_max, 1024);
    assert_eq!(Limits::for_memory_mb(10240).cpu_quota_us, CPU_PERIOD_US * 10240 / MB_PER_CPU);
}

#[test]
fn init_gets_two_cpus_or_more_and_keeps_everything_else() {
    let small = Limits::for_memory_mb(128);
    let boosted = small.for_init();
    assert_eq!(boosted.cpu_quota_us, 2 * CPU_PERIOD_US);
    assert_eq!(Limits { cpu_quota_us: small.cpu_quota_us, ..boosted }, small);
    let big = Limits::for_memory_mb(10240);
    assert_eq!(big.for_init(), big, "a function with more than two CPUs keeps its own");
}

#[test]
fn init_keeps_the_functions_burst_so_its_end_writes_the_quota_alone() {
    let small = Limits::for_memory_mb(128);
    assert_eq!(small.cpu_burst_us, small.cpu_quota_us);
    let init = small.for_init();
    assert_eq!(init.cpu_burst_us, small.cpu_burst_us);
    assert!(init.cpu_burst_us <= init.cpu_quota_us);
    for cg in [fake_v1().1.boxed(), fake_v2().1.boxed()] {
        let w = cg.limit_writes("e", &init, &small);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].path.ends_with("cpu.cfs_quota_us") || w[0].path.ends_with("cpu.max"), "{w:?}");
    }
}

#[test]
fn cpu_writes_never_put_the_burst_above_the_quota() {
    let lim = |quota, burst| Limits { cpu_quota_us: quota, cpu_burst_us: burst, ..Limits::for_memory_mb(128) };
    let cases = [
        (lim(200, 10), lim(10, 10)),
        (lim(10, 10), lim(200, 10)),
        (lim(100, 100), lim(10, 10)),
        (lim(10, 10), lim(100, 100)),
        (lim(100, 50), lim(60, 60)),
        (lim(60, 60), lim(100, 50)),
        (lim(100, 0), lim(100, 100)),
        (lim(100, 100), lim(100, 100)),
    ];
    for (old, new) in cases {
        let writes = cpu_writes(
            &old,
            &new,
            |q| LimitWrite::new(PathBuf::from("quota"), q.to_string()),
            |b| LimitWrite::new(PathBuf::from("burst"), b.to_string()),
        );
        let (mut quota, mut burst) = (old.cpu_quota_us, old.cpu_burst_us);
        for w in &writes {
            let v: u64 = w.value.parse().unwrap();
            if w.path == Path::new("quota") {
                assert_ne!(v, quota, "a quota that does not change is not written");
                quota = v;
            } else {
                assert_ne!(v, burst, "a burst that does not change is not written");
                burst = v;
            }
            assert!(burst <= quota, "{old:?} → {new:?}: {writes:?}");
        }
        assert_eq!((quota, burst), (new.cpu_quota_us, new.cpu_burst_us), "{writes:?}");
    }
}

/// A v1 layout in a temp dir (its hierarchies' directories are not made).
fn fake_v1() -> (tempfile::TempDir, CgroupV1) {
    let root = tempfile::tempdir().unwrap();
    let dir = |n: &str| root.path().join(n).join("kiln-abcd1234");
    let cg = CgroupV1::new(V1Paths {
        memory: dir("memory"),
        cpu: dir("cpu"),
        pids: dir("pids"),
        freezer: Some(dir("freezer")),
        unified: None,
    })
    .unwrap();
    (root, cg)
}

trait Boxed {
    fn boxed(self) -> Box<dyn Cgroups>;
}

impl Boxed for CgroupV2 {
    fn boxed(self) -> Box<dyn Cgroups> {
        Box::new(self)
    }
}

impl Boxed for CgroupV1 {
    fn boxed(self) -> Box<dyn Cgroups> {
        Box::new(self)
    }
}

#[test]
fn v1_charges_tcp_buffers_to_half_the_memory_and_v2_needs_no_extra_file() {
    let (root, cg) = fake_v1();
    let dir = |n: &str| root.path().join(n).join("kiln-abcd1234");
    for d in ["memory", "cpu", "pids", "freezer"] {
        fs::create_dir_all(root.path().join(d)).unwrap();
    }
    cg.init().unwrap();
    let small = Limits::for_memory_mb(128);
    cg.create("e", &small).unwrap();
    let tcp = dir("memory").join("e/memory.kmem.tcp.limit_in_bytes");
    assert_eq!(text(tcp.clone()), (64u64 << 20).to_string());
    cg.set_limits("e", &small, &Limits::for_memory_mb(1024)).unwrap();
    assert_eq!(text(tcp.clone()), (512u64 << 20).to_string());
    // v2: socket buffers count in memory.max; nothing else is written.
    let (root2, cg2) = fake_v2();
    cg2.init().unwrap();
    cg2.create("e", &small).unwrap();
    let d = root2.path().join("kiln-abcd1234/e");
    assert_eq!(text(d.join("memory.max")), (128u64 << 20).to_string());
    let names: Vec<String> = fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(!names.iter().any(|n| n.contains("tcp") || n.contains("kmem")), "{names:?}");
}

#[test]
fn v2_init_delegates_controllers_to_the_instance_dir() {
    let (root, cg) = fake_v2();
    cg.init().unwrap();
    assert_eq!(text(root.path().join("cgroup.subtree_control")), "+memory +cpu +pids");
    assert_eq!(text(root.path().join("kiln-abcd1234/cgroup.subtree_control")), "+memory +cpu +pids");
}

#[test]
fn v2_create_writes_limits_of_the_environment() {
    let (root, cg) = fake_v2();
    cg.init().unwrap();
    let procs = cg.create("env-1", &Limits::for_memory_mb(512)).unwrap();
    let d = root.path().join("kiln-abcd1234/env-1");
    // Init is born in the child that freezes, and leaves it once the bootstrap runs.
    assert_eq!(procs, vec![d.join("function/cgroup.procs")]);
    assert_eq!(cg.init_after_start("env-1"), Some(d.join("cgroup.procs")));
    assert_eq!(cg.thaw_control("env-1"), Some((d.join("function/cgroup.freeze"), &b"0"[..])));
    assert_eq!(text(d.join("memory.max")), (512u64 << 20).to_string());
    assert_eq!(text(d.join("memory.swap.max")), "0");
    assert_eq!(text(d.join("cpu.max")), format!("{} {CPU_PERIOD_US}", CPU_PERIOD_US * 512 / MB_PER_CPU));
    assert_eq!(text(d.join("cpu.weight")), "28");
    assert_eq!(text(d.join("pids.max")), "1024");
    assert_eq!(cg.list(), vec!["env-1".to_string()]);
}

#[test]
fn set_limits_writes_only_what_changes() {
    let (root, cg) = fake_v2();
    cg.init().unwrap();
    let small = Limits::for_memory_mb(128);
    cg.create("e", &small).unwrap();
    let d = root.path().join("kiln-abcd1234/e");
    fs::write(d.join("pids.max"), "untouched").unwrap();
    let big = Limits::for_memory_mb(3538);
    cg.set_limits("e", &small, &big).unwrap();
    assert_eq!(text(d.join("memory.max")), (3538u64 << 20).to_string());
    assert_eq!(text(d.join("cpu.max")), format!("{} {CPU_PERIOD_US}", 2 * CPU_PERIOD_US));
    assert_eq!(text(d.join("cpu.weight")), "200");
    assert_eq!(text(d.join("pids.max")), "untouched");
    fs::write(d.join("memory.max"), "untouched").unwrap();
    cg.set_limits("e", &big, &big).unwrap();
    assert_eq!(text(d.join("memory.max")), "untouched");
}

#[test]
fn prepared_limits_open_ahead_and_write_later() {
    let (root, cg) = fake_v2();
    cg.init().unwrap();
    let small = Limits::for_memory_mb(128);
    cg.create("e", &small.for_init()).unwrap();
    let d = root.path().join("kiln-abcd1234/e");
    // Opened now (the claim), written at the end of Init: the CPU quota and nothing else.
    let end_init = cg.prepare_limits("e", &small.for_init(), &small);
    fs::write(d.join("memory.max"), "untouched").unwrap();
    assert_ne!(text(d.join("cpu.max")), format!("{} {CPU_PERIOD_US}", CPU_PERIOD_US / 10));
    // A cgroup file takes each write as its whole value; this regular file is emptied to act so.
    fs::write(d.join("cpu.max"), "").unwrap();
    end_init.apply().unwrap();
    assert_eq!(text(d.join("cpu.max")), format!("{} {CPU_PERIOD_US}", CPU_PERIOD_US / 10));
    assert_eq!(text(d.join("memory.max")), "untouched");
    // A file that could not be opened ahead is written by its path, which reports the error.
    let missing = cg.prepare_limits("gone", &small.for_init(), &small);
    assert!(missing.apply().is_err());
}

#[test]
fn v2_freeze_thaw_kill_and_accounting_use_core_files() {
    let (root, cg) = fake_v2();
    cg.init().unwrap();
    cg.create("e", &Limits::for_memory_mb(128)).unwrap();
    let d = root.path().join("kiln-abcd1234/e");
    let f = d.join("function");
    fs::write(f.join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
    cg.freeze("e").unwrap();
    assert_eq!(text(f.join("cgroup.freeze")), "1");
    assert!(!d.join("cgroup.freeze").exists(), "init's cgroup never freezes");
    cg.thaw("e").unwrap();
    assert_eq!(text(f.join("cgroup.freeze")), "0");

    fs::write(d.join("cgroup.kill"), "").unwrap();
    cg.kill_all("e").unwrap();
    assert_eq!(text(d.join("cgroup.kill")), "1");

    fs::write(d.join("memory.peak"), "123456\n").unwrap();
    assert_eq!(cg.peak_memory_bytes("e"), Some(123_456));
    fs::write(d.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n").unwrap();
    assert!(!cg.oom_killed("e"));
    fs::write(d.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
    assert!(cg.oom_killed("e"));
}

#[test]
fn v2_freeze_times_out_when_the_kernel_never_confirms() {
    let (root, cg) = fake_v2();
    cg.init().unwrap();
    cg.create("e", &Limits::for_memory_mb(128)).unwrap();
    let d = root.path().join("kiln-abcd1234/e/function");
    fs::write(d.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
    assert!(matches!(cg.freeze("e"), Err(CgroupError::FreezeTimeout { .. })));
}

#[test]
fn v2_remove_is_idempotent() {
    let (root, cg) = fake_v2();
    cg.init().unwrap();
    let d = root.path().join("kiln-abcd1234/e");
    fs::create_dir_all(d.join("function")).unwrap();
    cg.remove("e").unwrap();
    assert!(!d.exists());
    cg.remove("e").unwrap();
}

#[test]
fn killing_a_cgroup_that_is_gone_is_not_an_error() {
    let root = tempfile::tempdir().unwrap();
    let gone = root.path().join("removed-meanwhile");
    v2_kill(&gone, true).unwrap();
    v2_kill(&gone, false).unwrap();
    // Any other failure still counts.
    let file = root.path().join("a-file");
    fs::write(&file, "").unwrap();
    assert!(v2_kill(&file, true).is_err());
}

#[test]
fn v1_create_writes_each_controller() {
    let root = tempfile::tempdir().unwrap();
    let p = |c: &str| root.path().join(c).join("kiln-abcd1234");
    let paths = V1Paths {
        memory: p("memory"),
        cpu: p("cpu"),
        pids: p("pids"),
        freezer: Some(p("freezer")),
        unified: Some(p("unified")),
    };
    for c in ["memory", "cpu", "pids", "freezer", "unified"] {
        fs::create_dir(root.path().join(c)).unwrap();
    }
    let cg = CgroupV1::new(paths).unwrap();
    cg.init().unwrap();
    let procs = cg.create("e", &Limits::for_memory_mb(1769)).unwrap();
    assert_eq!(procs.len(), 4);
    let bytes = (1769u64 << 20).to_string();
    assert_eq!(text(p("memory").join("e/memory.limit_in_bytes")), bytes);
    assert_eq!(text(p("cpu").join("e/cpu.cfs_quota_us")), CPU_PERIOD_US.to_string());
    // The kernel's default period and the instance's swappiness (which a new memory cgroup
    // inherits) are not written per environment.
    assert_eq!(CPU_PERIOD_US, KERNEL_CPU_PERIOD_US);
    assert!(!p("cpu").join("e/cpu.cfs_period_us").exists());
    assert!(!p("memory").join("e/memory.swappiness").exists());
    assert_eq!(text(p("memory").join("memory.swappiness")), "0");
    assert_eq!(text(p("cpu").join("e/cpu.shares")), "1024");
    assert_eq!(text(p("pids").join("e/pids.max")), "1024");
    // The unified tree does the freezing, so the v1 freezer is not used.
    assert!(!p("freezer").join("e").exists());
    fs::write(p("memory").join("e/memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n").unwrap();
    assert!(cg.oom_killed("e"));
    fs::write(p("memory").join("e/memory.max_usage_in_bytes"), "4096\n").unwrap();
    assert_eq!(cg.peak_memory_bytes("e"), Some(4096));
    assert_eq!(cg.list(), vec!["e".to_string()]);

    cg.set_limits("e", &Limits::for_memory_mb(1769), &Limits::for_memory_mb(128)).unwrap();
    assert_eq!(text(p("memory").join("e/memory.limit_in_bytes")), (128u64 << 20).to_string());
    assert_eq!(text(p("cpu").join("e/cpu.cfs_quota_us")), (CPU_PERIOD_US / 10).to_string());
    assert_eq!(text(p("cpu").join("e/cpu.cfs_burst_us")), (CPU_PERIOD_US / 10).to_string());
    assert_eq!(text(p("cpu").join("e/cpu.shares")), "74");
}

const MOUNTINFO_HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup rw,relatime shared:9 - tmpfs tmpfs rw,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,relatime shared:10 - cgroup2 cgroup2 rw
33 31 0:28 / /sys/fs/cgroup/memory rw,relatime shared:11 - cgroup cgroup rw,memory
34 31 0:29 / /sys/fs/cgroup/cpu rw,relatime shared:12 - cgroup cgroup rw,cpu
35 31 0:30 / /sys/fs/cgroup/pids rw,relatime shared:13 - cgroup cgroup rw,pids
36 31 0:31 / /sys/fs/cgroup/freezer rw,relatime shared:14 - cgroup cgroup rw,freezer
";

#[test]
fn detect_finds_v1_with_unified_below_kilns_own_cgroups() {
    let own = "4:memory:/svc/a\n3:cpu:/\n2:pids:/\n1:freezer:/\n0::/\n";
    let cg = detect(MOUNTINFO_HYBRID, own, "kiln-1").unwrap();
    assert!(cg.layout().starts_with("v1"));
    let dbg = format!("{cg:?}");
    assert!(dbg.contains("/sys/fs/cgroup/memory/svc/a/kiln-1"), "{dbg}");
    assert!(dbg.contains("/sys/fs/cgroup/cpu/kiln-1"), "{dbg}");
}

#[test]
fn detect_finds_pure_v2() {
    let mi = "31 25 0:26 / /sys/fs/cgroup rw,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
    let cg = detect(mi, "0::/system.slice/kiln.service\n", "kiln-1").unwrap();
    assert_eq!(cg.layout(), "v2");
    let dbg = format!("{cg:?}");
    assert!(dbg.contains("/sys/fs/cgroup/system.slice/kiln.service/kiln-1"), "{dbg}");
}

#[test]
fn detect_fails_without_cgroups() {
    assert!(detect("", "", "kiln-1").is_err());
}
