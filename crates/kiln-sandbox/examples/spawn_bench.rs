//! Cold-start cost of a Linux sandbox against a bare fork+exec of the same bootstrap.
//!
//! Run as root: `cargo run --release -p kiln-sandbox --example spawn_bench [-- N]`.
//!
//! Both sides start the same bash bootstrap, which connects to `$AWS_LAMBDA_RUNTIME_API` and
//! exits; the time measured is from the start of `spawn` (or `Command::spawn`) until the
//! connection is accepted, i.e. until the bootstrap is running and can talk to the Runtime API.
//! Tearing down is not measured but done between iterations, so no run sees another's leftovers.

use kiln_sandbox::linux::LinuxBackend;
use kiln_sandbox::{Backend, SandboxSpec};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BOOTSTRAP: &str = "#!/bin/bash\n\
exec 3<>/dev/tcp/${AWS_LAMBDA_RUNTIME_API%:*}/${AWS_LAMBDA_RUNTIME_API#*:}\n\
echo -n x >&3\n";

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(200);
    let code = tempfile::tempdir()?;
    std::fs::set_permissions(code.path(), std::fs::Permissions::from_mode(0o755))?;
    let bootstrap = code.path().join("bootstrap");
    std::fs::write(&bootstrap, BOOTSTRAP)?;
    std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o755))?;
    let state = tempfile::tempdir()?;
    let instance = format!("bench{:x}", std::process::id());
    let backend = LinuxBackend::new(&instance, state.path())?;
    println!(
        "kiln-sandbox spawn bench: n={n}, cgroups {}, bootstrap: bash connecting to the Runtime API",
        backend.cgroup_layout()
    );

    // A multi-threaded tokio runtime in the process, as in kiln serve.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;

    let mut bare = Vec::with_capacity(n);
    let mut bare_spawn = Vec::with_capacity(n);
    let mut sandbox = Vec::with_capacity(n);
    let mut sandbox_spawn = Vec::with_capacity(n);
    let mut destroy = Vec::with_capacity(n);
    // Warm up both paths (page cache, first netns) without counting.
    for i in 0..(n + 10) {
        let (total, spawn) = run_bare(&bootstrap)?;
        let spec = SandboxSpec {
            id: format!("bench-{i}"),
            code_dir: code.path().into(),
            bootstrap: "bootstrap".into(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            memory_mb: 1769,
            tmp_mb: 64,
        };
        let (stotal, sspawn, sdestroy) = rt.block_on(async {
            let backend = &backend;
            tokio::task::block_in_place(|| run_sandbox(backend, &spec))
        })?;
        if i >= 10 {
            bare.push(total);
            bare_spawn.push(spawn);
            sandbox.push(stotal);
            sandbox_spawn.push(sspawn);
            destroy.push(sdestroy);
        }
    }

    let rows = [
        ("bare fork+exec: spawn → accept", &mut bare),
        ("  of which Command::spawn", &mut bare_spawn),
        ("linux sandbox: spawn → accept", &mut sandbox),
        ("  of which LinuxBackend::spawn", &mut sandbox_spawn),
        ("linux sandbox: destroy", &mut destroy),
    ];
    println!("{:<36} {:>9} {:>9} {:>9}", "", "p50 ms", "p99 ms", "mean ms");
    let mut p50s = Vec::new();
    for (name, v) in rows {
        v.sort();
        let p50 = pct(v, 50);
        let p99 = pct(v, 99);
        let mean = v.iter().sum::<Duration>() / v.len().max(1) as u32;
        println!("{name:<36} {:>9.3} {:>9.3} {:>9.3}", ms(p50), ms(p99), ms(mean));
        p50s.push((p50, p99));
    }
    let (b50, b99) = p50s[0];
    let (s50, s99) = p50s[2];
    println!(
        "sandbox / bare: p50 {:.2}x (+{:.3} ms), p99 {:.2}x (+{:.3} ms)",
        ms(s50) / ms(b50),
        ms(s50) - ms(b50),
        ms(s99) / ms(b99),
        ms(s99) - ms(b99)
    );
    println!(
        "target (1.5 x bare + 3 ms): p50 {:.3} ms -> {}",
        ms(b50) * 1.5 + 3.0,
        if ms(s50) <= ms(b50) * 1.5 + 3.0 { "met" } else { "missed" }
    );
    Ok(())
}

fn run_bare(bootstrap: &std::path::Path) -> anyhow::Result<(Duration, Duration)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let t0 = Instant::now();
    let mut child = Command::new(bootstrap)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .stdin(Stdio::null())
        .spawn()?;
    let spawned = t0.elapsed();
    let (conn, _) = listener.accept()?;
    let total = t0.elapsed();
    drop(conn);
    child.wait()?;
    Ok((total, spawned))
}

fn run_sandbox(backend: &LinuxBackend, spec: &SandboxSpec) -> anyhow::Result<(Duration, Duration, Duration)> {
    let t0 = Instant::now();
    let spawned = backend.spawn(spec)?;
    let spawn = t0.elapsed();
    spawned.runtime_listener.set_nonblocking(false)?;
    let (conn, _) = spawned.runtime_listener.accept()?;
    let total = t0.elapsed();
    drop(conn);
    let t1 = Instant::now();
    spawned.sandbox.destroy();
    let destroy = t1.elapsed();
    Ok((total, spawn, destroy))
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) * p / 100).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
