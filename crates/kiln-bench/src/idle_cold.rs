//! The cold starts of the density goal: cold p50 of another function while the density run's
//! environments sit idle, against the same with none alive (`--idle-cold` of each).
//!
//! Each timed call starts from the same state on both sides, so that the ratio measures the idle
//! environments and nothing the bench's own loop leaves behind:
//!
//! 1. `PUT …/configuration` with a new `Description` retires the function's environment; the
//!    bench waits for `LastUpdateStatus: Successful`.
//! 2. It waits until the retired environment's processes are gone: a look at the `/proc` entry
//!    of its top process, the sandbox's init, which the server names after the previous call
//!    (`Pid` of `/kiln/v1/functions/NAME/environments`). Not a walk of every process on the
//!    host, whose cost grows with the idle environments: 1,000 of them made it ~15 ms of CPU per
//!    call, and the caches it evicts were the next timed call's (docs/benchmarks.md). A server
//!    that does not name the pid gets the walk, once per call.
//! 3. It waits until the server's blank pool holds its target again (`SandboxPool` of
//!    `/kiln/v1/functions/NAME/environments`): the previous cold start's refill is a build
//!    (cgroups, namespaces, `pivot_root`) that otherwise overlaps the next timed call or not, by
//!    chance.
//! 4. It times the call at once. (A pause here — 100 ms, for the kernel's own teardown of the
//!    retired environment in its workers — was tried and dropped: after it both sides' cold
//!    starts ran 4–5 times slower than the cold scenario's, 17–23 ms against 4.4 ms, which hides
//!    what the idle environments add: 0.98–1.05× with the pause, 1.35× without, on the same
//!    machine within minutes.)
//!
//! Before the side with the idle environments, the bench also waits until the pool's target is
//! back to what it was before the fill (the fill's demand raises it for 30 s, and the blanks
//! discarded when it falls are teardowns too). Each side records the host's page scans
//! (`pgscan_*` of `/proc/vmstat`) and free memory, since memory reclaim walks every memory
//! cgroup and slows cold starts with many environments.
use crate::{invoke, new_client, process_cpu_stat, server_descendants, Api, Server, ECHO};
use http::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The longest any one wait of the loop lasts; a wait that ends this way is counted.
const WAIT_LIMIT: Duration = Duration::from_secs(5);
/// How long the bench waits for the pool's target to fall back after the fill.
const TARGET_LIMIT: Duration = Duration::from_secs(45);

/// One side's cold starts and what the host did meanwhile.
#[derive(Debug, Default, Clone)]
pub(crate) struct Phase {
    /// The timed calls, in the order they were made.
    pub samples: Vec<Duration>,
    /// Pages the host scanned for reclaim during the phase: (kswapd, direct).
    pub pgscan: (u64, u64),
    /// The host's free memory (MemFree) at the start and the end of the phase, in MiB.
    pub free_mib: (u64, u64),
    /// The pool's (target, ready) at the start of the phase.
    pub pool: (u64, u64),
    /// Waits that hit their limit instead of seeing the state they waited for.
    pub waits_cut: usize,
    /// `kiln serve`'s CPU time (utime + stime) over the phase, per cold start: the update, the
    /// waits' status calls and the call itself, the same work on both sides, plus what the
    /// server does for its idle environments meanwhile.
    pub server_cpu: Duration,
    /// p50 of the engine's REPORT split of the same calls: (Init Duration, Duration, the rest).
    pub split: Option<(Duration, Duration, Duration)>,
}

impl Phase {
    pub(crate) fn json(&self) -> Value {
        json!({
            "samples_ms": self.samples.iter().map(|d| crate::ms(*d)).collect::<Vec<_>>(),
            "pgscan_kswapd": self.pgscan.0,
            "pgscan_direct": self.pgscan.1,
            "free_mib_start": self.free_mib.0,
            "free_mib_end": self.free_mib.1,
            "pool_target": self.pool.0,
            "pool_ready": self.pool.1,
            "waits_cut": self.waits_cut,
            "server_cpu_per_cold_start_ms": crate::ms(self.server_cpu),
            "init_p50_ms": self.split.map(|s| crate::ms(s.0)),
            "invoke_p50_ms": self.split.map(|s| crate::ms(s.1)),
            "rest_p50_ms": self.split.map(|s| crate::ms(s.2)),
        })
    }

    /// One line of conditions and the sorted samples, for the text report.
    pub(crate) fn render(&self, label: &str) -> String {
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let at = |p: f64| crate::ms(crate::nearest_rank(&sorted, p));
        let mut s = format!(
            "  {label}: p25 {:.3}  p50 {:.3}  p75 {:.3} ms; kiln serve CPU {:.2} ms per cycle; pgscan kswapd {} direct {}; free {} → {} MiB; pool {}/{}{}\n    sorted:",
            at(0.25),
            at(0.5),
            at(0.75),
            crate::ms(self.server_cpu),
            self.pgscan.0,
            self.pgscan.1,
            self.free_mib.0,
            self.free_mib.1,
            self.pool.1,
            self.pool.0,
            if self.waits_cut > 0 { format!("; {} waits cut at their limit", self.waits_cut) } else { String::new() },
        );
        if let Some((init, invoke, rest)) = self.split {
            s = s.replacen(
                "\n    sorted:",
                &format!(
                    "\n    p50 of init {:.3}, invoke {:.3}, the rest {:.3} ms\n    sorted:",
                    crate::ms(init),
                    crate::ms(invoke),
                    crate::ms(rest)
                ),
                1,
            );
        }
        for d in &sorted {
            s += &format!(" {:.2}", crate::ms(*d));
        }
        s.push('\n');
        s
    }
}

/// `n` cold starts of `function`, each from the settled state of the module docs.
pub(crate) async fn run(server: &Server, api: &Api, function: &str, n: usize, label: &str) -> anyhow::Result<Phase> {
    let client = new_client(server.addr);
    let path = format!("/2015-03-31/functions/{function}/configuration");
    // The bootstraps alive before the first call: other functions'.
    let others = server_descendants(server.pid).1;
    let mut phase =
        Phase { samples: Vec::with_capacity(n), pool: pool_state(api, function).await?, ..Phase::default() };
    let (vm_before, free_before) = (pgscan(), free_mib());
    let cpu_before = process_cpu_stat(server.pid);
    // For profilers started and stopped around a phase (`perf record -a`).
    eprintln!("bench: idle-cold {label}: start");
    let mut retired: Vec<u32> = Vec::new();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        api.call(Method::PUT, &path, Some(json!({ "Description": format!("cold {i}") }))).await?;
        api.wait_ready(function).await?;
        if !wait(WAIT_LIMIT, || async { retired.iter().all(|p| !proc_exists(*p)) }).await {
            phase.waits_cut += 1;
        }
        if !wait_pool_full(api, function).await {
            phase.waits_cut += 1;
        }
        let t = Instant::now();
        let id = invoke(&client, function, ECHO).await?;
        phase.samples.push(t.elapsed());
        ids.push(id);
        retired = environment_pids(api, function).await?;
        if retired.is_empty() {
            // A server that does not name them: this environment's processes are its bootstrap
            // (the one not alive before) and its parent, the sandbox's init.
            retired = server_descendants(server.pid).1.into_iter().filter(|p| !others.contains(p)).collect();
            let parents: Vec<u32> = retired.iter().filter_map(|p| parent(*p)).filter(|p| *p != server.pid).collect();
            retired.extend(parents);
        }
    }
    eprintln!("bench: idle-cold {label}: end");
    let calls = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    phase.server_cpu = process_cpu_stat(server.pid).saturating_sub(cpu_before) / calls;
    let (vm_after, free_after) = (pgscan(), free_mib());
    phase.pgscan = (vm_after.0.saturating_sub(vm_before.0), vm_after.1.saturating_sub(vm_before.1));
    phase.free_mib = (free_before, free_after);
    phase.split = crate::cold_split(&server.data_dir, function, &phase.samples, &ids)
        .map(|c| (c.init.p50, c.invoke.p50, c.rest.p50));
    Ok(phase)
}

/// A 95 % interval of the ratio of the two sides' p50s, from 2,000 bootstrap resamples of each
/// (the same nearest-rank p50 as the report): how far the ratio could move with other draws of
/// the same conditions. `None` when a side has no samples.
pub(crate) fn ratio_interval(idle: &[Duration], none: &[Duration]) -> Option<(f64, f64)> {
    if idle.is_empty() || none.is_empty() {
        return None;
    }
    // xorshift64*, seeded with a constant: the same samples give the same interval.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |n: usize| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    };
    let mut p50 = |xs: &[Duration]| {
        let mut r: Vec<Duration> = (0..xs.len()).map(|_| xs[next(xs.len())]).collect();
        r.sort_unstable();
        crate::nearest_rank(&r, 0.5).as_secs_f64()
    };
    let mut ratios: Vec<f64> = (0..2000).map(|_| p50(idle) / p50(none).max(1e-12)).collect();
    ratios.sort_by(f64::total_cmp);
    Some((ratios[49], ratios[1949]))
}

/// Waits until the pool's target is at most `target` again (the fill's demand has been
/// forgotten and the extra blanks discarded) and the pool is full; false if it is not within the
/// limit.
pub(crate) async fn wait_pool_target(api: &Api, function: &str, target: u64) -> bool {
    wait(TARGET_LIMIT, || async { matches!(pool_state(api, function).await, Ok((t, r)) if t <= target && r >= t) })
        .await
}

/// Polls `done` every millisecond until it holds (true) or `limit` passed (false).
async fn wait<F, Fut>(limit: Duration, mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if done().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The server's status call for `function` (`/kiln/v1/functions/NAME/environments`).
async fn environments(api: &Api, function: &str) -> anyhow::Result<Value> {
    api.call(Method::GET, &format!("/kiln/v1/functions/{function}/environments"), None).await
}

/// The server's blank pool for `function`'s status call: (target, ready); (0, 0) without a pool.
async fn pool_state(api: &Api, function: &str) -> anyhow::Result<(u64, u64)> {
    let v = environments(api, function).await?;
    let p = &v["SandboxPool"];
    Ok((p["Target"].as_u64().unwrap_or(0), p["Ready"].as_u64().unwrap_or(0)))
}

/// The top processes of `function`'s environments as the server names them (`Pid` of its status
/// call: the sandbox's init, which outlives every other process of its environment); empty from
/// a server that does not.
async fn environment_pids(api: &Api, function: &str) -> anyhow::Result<Vec<u32>> {
    let v = environments(api, function).await?;
    let envs = v["Functions"][0]["Environments"].as_array().map_or(&[][..], Vec::as_slice);
    Ok(envs.iter().filter_map(|e| e["Pid"].as_u64()).filter_map(|p| u32::try_from(p).ok()).collect())
}

/// Waits until `function`'s blank pool holds its target (at once without a pool); false if it does
/// not within the limit.
pub(crate) async fn wait_pool_full(api: &Api, function: &str) -> bool {
    wait(WAIT_LIMIT, || async { pool_full(api, function).await }).await
}

async fn pool_full(api: &Api, function: &str) -> bool {
    matches!(pool_state(api, function).await, Ok((target, ready)) if ready >= target)
}

fn proc_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn parent(pid: u32) -> Option<u32> {
    crate::stat_ppid(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Pages scanned for reclaim since boot: (by kswapd, direct), from `/proc/vmstat`.
fn pgscan() -> (u64, u64) {
    parse_pgscan(&std::fs::read_to_string("/proc/vmstat").unwrap_or_default())
}

fn parse_pgscan(vmstat: &str) -> (u64, u64) {
    let mut out = (0, 0);
    for line in vmstat.lines() {
        let Some((key, value)) = line.split_once(' ') else { continue };
        let Ok(v) = value.trim().parse::<u64>() else { continue };
        match key {
            "pgscan_kswapd" => out.0 += v,
            "pgscan_direct" => out.1 += v,
            _ => {}
        }
    }
    out
}

/// MemFree of `/proc/meminfo` in MiB (what `free -m` prints as free).
fn free_mib() -> u64 {
    parse_free_mib(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default())
}

fn parse_free_mib(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemFree:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_scans_and_free_memory_are_read_from_the_kernels_files() {
        let vmstat = "pgsteal_kswapd 10\npgscan_kswapd 1234\npgscan_direct 56\npgscan_khugepaged 7\n";
        assert_eq!(parse_pgscan(vmstat), (1234, 56));
        let meminfo = "MemTotal:       24683520 kB\nMemFree:          204800 kB\nMemAvailable: 1 kB\n";
        assert_eq!(parse_free_mib(meminfo), 200);
        assert_eq!(parse_free_mib(""), 0);
    }

    #[test]
    fn the_ratio_interval_holds_the_ratio_and_narrows_with_agreeing_samples() {
        let ms = |n: u64| Duration::from_millis(n);
        let none: Vec<Duration> = (0..50).map(|i| ms(100 + i % 5)).collect();
        let idle: Vec<Duration> = (0..50).map(|i| ms(200 + i % 5)).collect();
        let (lo, hi) = ratio_interval(&idle, &none).unwrap();
        assert!(lo <= 2.0 && 2.0 <= hi && hi - lo < 0.1, "{lo} {hi}");
        let spread: Vec<Duration> = (0..50).map(|i| ms(100 + (i * 37) % 200)).collect();
        let (lo2, hi2) = ratio_interval(&spread, &none).unwrap();
        assert!(hi2 - lo2 > hi - lo, "{lo2} {hi2}");
        assert_eq!(ratio_interval(&[], &none), None);
    }

    #[test]
    fn a_phase_prints_its_samples_sorted_with_its_quartiles() {
        let ms = |n: u64| Duration::from_millis(n);
        let p = Phase {
            samples: vec![ms(4), ms(1), ms(3), ms(2)],
            pgscan: (5, 0),
            free_mib: (100, 90),
            pool: (1, 1),
            waits_cut: 1,
            server_cpu: ms(2),
            split: Some((ms(1), ms(1), ms(1))),
        };
        let text = p.render("with none");
        assert!(text.contains("p25 1.000  p50 2.000  p75 3.000 ms"), "{text}");
        assert!(text.contains("sorted: 1.00 2.00 3.00 4.00"), "{text}");
        assert!(text.contains("1 waits cut"), "{text}");
        assert!(text.contains("kiln serve CPU 2.00 ms per cycle"), "{text}");
        assert!(text.contains("p50 of init 1.000, invoke 1.000, the rest 1.000 ms\n    sorted: 1.00"), "{text}");
        assert_eq!(p.json()["samples_ms"].as_array().map(Vec::len), Some(4));
    }
}
