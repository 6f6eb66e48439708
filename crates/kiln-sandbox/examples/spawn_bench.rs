//! Cold-start cost of a Linux sandbox, pooled and built on the spot, against a bare fork+exec of
//! the same bootstrap.
//!
//! Run as root: `cargo run --release -p kiln-sandbox --example spawn_bench [-- N [POOL]]`
//! (N = 200 samples per row, POOL = 4 blanks by default).
//!
//! Every row starts the same bash bootstrap, which connects to `$AWS_LAMBDA_RUNTIME_API` and
//! exits; the time measured is from the start of `spawn` (or `Command::spawn`) until the
//! connection is accepted, i.e. until the bootstrap is running and can talk to the Runtime API.
//! Tearing down is not measured but done between iterations.
//!
//! Rows:
//! - bare fork+exec;
//! - on the spot: pool disabled, every spawn builds its environment;
//! - pool warm: before each spawn the bench waits until the pool is full again;
//! - burst: 20 spawns back to back after the pool filled (the first POOL are served by blanks,
//!   the rest by whatever the filler managed meanwhile, else on the spot);
//! - 200 simultaneous: 200 spawns at once from 200 threads; the time until every bootstrap has
//!   connected.

use kiln_sandbox::linux::{LinuxBackend, LinuxOptions};
use kiln_sandbox::{Backend, SandboxSpec, Spawned};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BOOTSTRAP: &str = "#!/bin/bash\n\
exec 3<>/dev/tcp/${AWS_LAMBDA_RUNTIME_API%:*}/${AWS_LAMBDA_RUNTIME_API#*:}\n\
echo -n x >&3\n";
const BURST: usize = 20;
const PARALLEL: usize = 200;

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(200);
    let pool: usize = std::env::args().nth(2).map(|a| a.parse()).transpose()?.unwrap_or(4);
    let code = tempfile::tempdir()?;
    std::fs::set_permissions(code.path(), std::fs::Permissions::from_mode(0o755))?;
    let bootstrap = code.path().join("bootstrap");
    std::fs::write(&bootstrap, BOOTSTRAP)?;
    std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o755))?;
    let state = tempfile::tempdir()?;
    let instance = format!("bench{:x}", std::process::id());
    let backend = Arc::new(LinuxBackend::with_options(
        &instance,
        state.path(),
        LinuxOptions { pool_size: 0, ..Default::default() },
    )?);
    println!(
        "kiln-sandbox spawn bench: n={n}, pool {pool}, cgroups {}, bootstrap: bash connecting to the Runtime API",
        backend.cgroup_layout()
    );
    let spec = |i: usize| SandboxSpec {
        id: format!("bench-{i}"),
        code_dir: code.path().into(),
        bootstrap: "bootstrap".into(),
        opt_dir: None,
        bootstrap_in_opt: false,
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        memory_mb: 1769,
        tmp_mb: 64,
    };
    // A multi-threaded tokio runtime in the process, as in kiln serve.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let in_rt = |f: &mut dyn FnMut() -> anyhow::Result<()>| rt.block_on(async { tokio::task::block_in_place(f) });

    let mut bare = Vec::with_capacity(n);
    for i in 0..(n + 10) {
        let (total, _) = run_bare(&bootstrap)?;
        if i >= 10 {
            bare.push(total);
        }
    }

    // On the spot (pool disabled).
    let (mut fresh, mut fresh_spawn, mut destroy) = (Vec::new(), Vec::new(), Vec::new());
    let mut id = 0;
    in_rt(&mut || {
        for i in 0..(n + 10) {
            id += 1;
            let (total, spawn, d) = run_sandbox(&backend, &spec(id))?;
            if i >= 10 {
                fresh.push(total);
                fresh_spawn.push(spawn);
                destroy.push(d);
            }
        }
        Ok(())
    })?;
    let fresh_stats = backend.pool_stats();

    // Pool warm: wait for the refill before each spawn.
    backend.set_pool_size(pool);
    let (mut warm, mut warm_spawn) = (Vec::new(), Vec::new());
    in_rt(&mut || {
        for i in 0..(n + 10) {
            anyhow::ensure!(backend.wait_pool_full(Duration::from_secs(10)), "pool did not fill");
            id += 1;
            let (total, spawn, _) = run_sandbox(&backend, &spec(id))?;
            if i >= 10 {
                warm.push(total);
                warm_spawn.push(spawn);
            }
        }
        Ok(())
    })?;
    let warm_stats = backend.pool_stats();

    // Bursts of 20 back to back, after a refill each.
    let mut burst = Vec::new();
    in_rt(&mut || {
        for _ in 0..n.div_ceil(BURST) {
            anyhow::ensure!(backend.wait_pool_full(Duration::from_secs(10)), "pool did not fill");
            for _ in 0..BURST {
                id += 1;
                burst.push(run_sandbox(&backend, &spec(id))?.0);
            }
        }
        Ok(())
    })?;
    let burst_stats = backend.pool_stats();

    // 200 simultaneous cold starts, with and without the pool.
    let mut parallel = Vec::new();
    for (label, size) in [("pool", pool), ("no pool", 0)] {
        backend.set_pool_size(size);
        backend.wait_pool_full(Duration::from_secs(10));
        for _ in 0..3 {
            let (wall, worst) = run_parallel(&backend, &spec, &mut id)?;
            parallel.push((label, wall, worst));
            backend.wait_pool_full(Duration::from_secs(10));
        }
    }

    println!();
    println!("{:<44} {:>9} {:>9} {:>9}", "", "p50 ms", "p99 ms", "mean ms");
    let row = |name: &str, v: &mut Vec<Duration>| -> (f64, f64) {
        v.sort();
        let (p50, p99) = (pct(v, 50), pct(v, 99));
        let mean = v.iter().sum::<Duration>() / v.len().max(1) as u32;
        println!("{name:<44} {:>9.3} {:>9.3} {:>9.3}", ms(p50), ms(p99), ms(mean));
        (ms(p50), ms(p99))
    };
    let (b50, _) = row("bare fork+exec: spawn → accept", &mut bare);
    let (f50, _) = row("on the spot: spawn → accept", &mut fresh);
    row("  of which LinuxBackend::spawn", &mut fresh_spawn);
    let (w50, _) = row("pool warm: spawn → accept", &mut warm);
    row("  of which LinuxBackend::spawn", &mut warm_spawn);
    let (u50, _) = row(&format!("burst of {BURST} back to back: spawn → accept"), &mut burst);
    row("destroy", &mut destroy);
    println!();
    println!(
        "served: on the spot {}/{} fresh; warm {} pooled, {} fresh; bursts {} pooled, {} fresh",
        fresh_stats.fresh_spawns,
        fresh_stats.pooled_spawns + fresh_stats.fresh_spawns,
        warm_stats.pooled_spawns - fresh_stats.pooled_spawns,
        warm_stats.fresh_spawns - fresh_stats.fresh_spawns,
        burst_stats.pooled_spawns - warm_stats.pooled_spawns,
        burst_stats.fresh_spawns - warm_stats.fresh_spawns,
    );
    for (label, wall, worst) in &parallel {
        println!(
            "{PARALLEL} simultaneous ({label}): all connected after {:.1} ms (slowest spawn call {:.1} ms)",
            ms(*wall),
            ms(*worst)
        );
    }
    let target = b50 + 2.0;
    for (name, p50) in [("on the spot", f50), ("pool warm", w50), ("burst", u50)] {
        println!(
            "target bare p50 + 2 ms = {target:.3} ms: {name} p50 {p50:.3} ms -> {}",
            if p50 <= target { "met" } else { "missed" }
        );
    }
    Ok(())
}

fn run_bare(bootstrap: &Path) -> anyhow::Result<(Duration, Duration)> {
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

/// Starts `PARALLEL` environments at once; returns the time until all bootstraps connected
/// and the slowest `spawn` call. Destroys them afterwards.
fn run_parallel(
    backend: &Arc<LinuxBackend>,
    spec: &dyn Fn(usize) -> SandboxSpec,
    id: &mut usize,
) -> anyhow::Result<(Duration, Duration)> {
    let specs: Vec<SandboxSpec> = (0..PARALLEL).map(|i| spec(*id + i)).collect();
    *id += PARALLEL;
    let start = Arc::new(std::sync::Barrier::new(PARALLEL + 1));
    let mut threads = Vec::new();
    for s in specs {
        let (backend, start) = (backend.clone(), start.clone());
        threads.push(std::thread::spawn(move || -> anyhow::Result<(Spawned, Duration)> {
            start.wait();
            let t = Instant::now();
            let spawned = backend.spawn(&s)?;
            let call = t.elapsed();
            spawned.runtime_listener.set_nonblocking(false)?;
            let _ = spawned.runtime_listener.accept()?;
            Ok((spawned, call))
        }));
    }
    let began = Instant::now();
    start.wait();
    let mut done = Vec::new();
    let mut worst = Duration::ZERO;
    for t in threads {
        let (s, call) = t.join().map_err(|_| anyhow::anyhow!("spawn thread panicked"))??;
        worst = worst.max(call);
        done.push(s);
    }
    let wall = began.elapsed();
    for s in &done {
        s.sandbox.destroy();
    }
    Ok((wall, worst))
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
