//! What the engine counts for `/metrics` and the console, kept so that the invocation path pays
//! only a few relaxed atomic additions.
//!
//! Counters and histograms of one function version live in a [`VersionMetrics`] that the
//! function's state hands out (an `Arc` clone) under the function lock that `invoke` takes
//! anyway; a job then records into it without any further lock. Gauges (environments by state,
//! concurrent executions, provisioned utilisation, memory used) are not kept here: the scraper
//! computes them from the pools when it asks, taking each function lock for as long as
//! `kiln status` does.
//!
//! For the console each function also has a [`Ring`] of per-second samples (the last
//! [`RING_SECS`] seconds): invocations, errors, cold and warm starts, and a coarse log-scale
//! latency histogram per second for cold and warm calls, from which percentiles are read. Slots
//! are reused lazily: the first writer of a new second claims the slot and zeroes it. A writer
//! racing that reset can lose its own increment; the ring is for charts, the Prometheus
//! counters are the exact record.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Upper bounds of the duration histograms, in seconds: 0.5 ms up to 15 minutes (Lambda's
/// longest timeout).
pub const DURATION_BUCKETS_SECS: [f64; 20] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    600.0, 900.0,
];

/// A histogram of durations in fixed buckets, lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per-bucket (not cumulative) counts; the last one is `+Inf`.
    counts: [AtomicU64; DURATION_BUCKETS_SECS.len() + 1],
    sum_micros: AtomicU64,
}

/// A point-in-time copy of a [`Histogram`], with cumulative buckets as Prometheus wants them.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub sum_secs: f64,
    pub count: u64,
    /// `(upper bound in seconds, observations ≤ bound)`, without `+Inf` (that is `count`).
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    pub fn observe_ms(&self, ms: f64) {
        let secs = ms.max(0.0) / 1000.0;
        let i = DURATION_BUCKETS_SECS.iter().position(|b| secs <= *b).unwrap_or(DURATION_BUCKETS_SECS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((ms.max(0.0) * 1000.0) as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(DURATION_BUCKETS_SECS.len());
        for (bound, count) in DURATION_BUCKETS_SECS.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            buckets.push((*bound, cumulative));
        }
        let count = cumulative + self.counts[DURATION_BUCKETS_SECS.len()].load(Ordering::Relaxed);
        HistogramSnapshot { sum_secs: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6, count, buckets }
    }
}

/// How an invocation ended, as the `result` label of `kiln_invocations_total` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationResult {
    Success,
    /// The function answered with an error, crashed, or failed its Init.
    FunctionError,
    Throttle,
    Timeout,
    /// kiln could not run it (e.g. a sandbox could not be created).
    Internal,
}

impl InvocationResult {
    pub const ALL: [Self; 5] = [Self::Success, Self::FunctionError, Self::Throttle, Self::Timeout, Self::Internal];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::FunctionError => "function_error",
            Self::Throttle => "throttle",
            Self::Timeout => "timeout",
            Self::Internal => "internal_error",
        }
    }
}

/// How an invocation got its environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartKind {
    Cold,
    Warm,
    /// A warm call served by a provisioned environment.
    Provisioned,
}

impl StartKind {
    pub const ALL: [Self; 3] = [Self::Cold, Self::Warm, Self::Provisioned];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cold => "cold",
            Self::Warm => "warm",
            Self::Provisioned => "provisioned",
        }
    }
}

/// Counters and histograms of one function version.
#[derive(Debug, Default)]
pub struct VersionMetrics {
    results: [AtomicU64; InvocationResult::ALL.len()],
    starts: [AtomicU64; StartKind::ALL.len()],
    /// Invocations that ran on-demand while the version had provisioned concurrency configured
    /// (CloudWatch's `ProvisionedConcurrencySpilloverInvocations`).
    spillover: AtomicU64,
    /// Run time of invocations (the REPORT line's `Duration`).
    pub duration: Histogram,
    /// Init time of cold starts (the REPORT line's `Init Duration`).
    pub init: Histogram,
}

impl VersionMetrics {
    pub fn result(&self, r: InvocationResult) {
        self.results[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn start(&self, s: StartKind) {
        self.starts[s as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn spillover(&self) {
        self.spillover.fetch_add(1, Ordering::Relaxed);
    }

    pub fn results(&self, r: InvocationResult) -> u64 {
        self.results[r as usize].load(Ordering::Relaxed)
    }

    pub fn starts(&self, s: StartKind) -> u64 {
        self.starts[s as usize].load(Ordering::Relaxed)
    }

    pub fn spillovers(&self) -> u64 {
        self.spillover.load(Ordering::Relaxed)
    }
}

/// Engine-wide counters.
#[derive(Debug, Default)]
pub struct ServerMetrics {
    /// Throttles by reason: concurrency (reserved or account) and the memory budget.
    rejections: [AtomicU64; 2],
}

/// Why admission turned an invocation away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Concurrency,
    MemoryBudget,
}

impl Rejection {
    pub const ALL: [Self; 2] = [Self::Concurrency, Self::MemoryBudget];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Concurrency => "concurrency",
            Self::MemoryBudget => "memory_budget",
        }
    }
}

impl ServerMetrics {
    pub fn reject(&self, r: Rejection) {
        self.rejections[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejections(&self, r: Rejection) -> u64 {
        self.rejections[r as usize].load(Ordering::Relaxed)
    }
}

/// How long the console's ring remembers, in seconds.
pub const RING_SECS: usize = 300;
/// Latency buckets of a ring slot: bucket `i` holds calls of at most `LAT_BASE_MS · LAT_FACTOR^i`.
const LAT_BUCKETS: usize = 44;
const LAT_BASE_MS: f64 = 0.05;
const LAT_FACTOR: f64 = 1.5;

#[derive(Debug)]
struct Slot {
    /// The unix second this slot holds; another value means the slot is stale.
    sec: AtomicU64,
    invocations: AtomicU32,
    errors: AtomicU32,
    cold: AtomicU32,
    warm: AtomicU32,
    cold_ms: [AtomicU32; LAT_BUCKETS],
    warm_ms: [AtomicU32; LAT_BUCKETS],
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            sec: AtomicU64::new(0),
            invocations: AtomicU32::new(0),
            errors: AtomicU32::new(0),
            cold: AtomicU32::new(0),
            warm: AtomicU32::new(0),
            cold_ms: std::array::from_fn(|_| AtomicU32::new(0)),
            warm_ms: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

impl Slot {
    fn reset(&self) {
        for a in [&self.invocations, &self.errors, &self.cold, &self.warm]
            .into_iter()
            .chain(&self.cold_ms)
            .chain(&self.warm_ms)
        {
            a.store(0, Ordering::Relaxed);
        }
    }
}

/// Per-second samples of one function for the console; allocated on its first invocation.
#[derive(Debug, Default)]
pub struct Ring {
    slots: OnceLock<Box<[Slot]>>,
}

/// One second of a function's activity.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Unix second.
    pub sec: u64,
    pub invocations: u32,
    pub errors: u32,
    pub cold: u32,
    pub warm: u32,
    /// Latency percentiles (p50, p99) in ms of that second's cold and warm calls, when any.
    pub cold_ms: Option<(f64, f64)>,
    pub warm_ms: Option<(f64, f64)>,
}

fn lat_bucket(ms: f64) -> usize {
    if ms <= LAT_BASE_MS {
        return 0;
    }
    let i = ((ms / LAT_BASE_MS).ln() / LAT_FACTOR.ln()).ceil() as usize;
    i.min(LAT_BUCKETS - 1)
}

fn lat_bound(i: usize) -> f64 {
    LAT_BASE_MS * LAT_FACTOR.powi(i as i32)
}

/// The `q` quantile of bucket counts, as the upper bound of the bucket it falls in.
fn quantile(counts: &[u32], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().map(|c| u64::from(*c)).sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += u64::from(*c);
        if seen >= rank {
            return Some(lat_bound(i));
        }
    }
    Some(lat_bound(counts.len() - 1))
}

impl Ring {
    fn slot(&self, sec: u64) -> &Slot {
        let slots = self.slots.get_or_init(|| (0..RING_SECS).map(|_| Slot::default()).collect());
        let slot = &slots[(sec % RING_SECS as u64) as usize];
        let old = slot.sec.load(Ordering::Acquire);
        if old != sec && slot.sec.compare_exchange(old, sec, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            slot.reset();
        }
        slot
    }

    /// Records one invocation that ended at unix second `sec`.
    pub fn record(&self, sec: u64, start: Option<StartKind>, duration_ms: f64, error: bool) {
        let slot = self.slot(sec);
        slot.invocations.fetch_add(1, Ordering::Relaxed);
        if error {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
        let b = lat_bucket(duration_ms);
        match start {
            Some(StartKind::Cold) => {
                slot.cold.fetch_add(1, Ordering::Relaxed);
                slot.cold_ms[b].fetch_add(1, Ordering::Relaxed);
            }
            Some(StartKind::Warm | StartKind::Provisioned) => {
                slot.warm.fetch_add(1, Ordering::Relaxed);
                slot.warm_ms[b].fetch_add(1, Ordering::Relaxed);
            }
            None => {}
        }
    }

    /// The samples of the `secs` seconds up to and including `now` (oldest first); seconds
    /// without activity are zero.
    pub fn samples(&self, now: u64, secs: usize) -> Vec<Sample> {
        let secs = secs.clamp(1, RING_SECS) as u64;
        let first = now.saturating_sub(secs - 1);
        (first..=now)
            .map(|sec| {
                let mut s = Sample { sec, invocations: 0, errors: 0, cold: 0, warm: 0, cold_ms: None, warm_ms: None };
                let Some(slots) = self.slots.get() else { return s };
                let slot = &slots[(sec % RING_SECS as u64) as usize];
                if slot.sec.load(Ordering::Acquire) != sec {
                    return s;
                }
                let load = |a: &[AtomicU32]| a.iter().map(|c| c.load(Ordering::Relaxed)).collect::<Vec<_>>();
                let (cold, warm) = (load(&slot.cold_ms), load(&slot.warm_ms));
                let pcts = |c: &[u32]| quantile(c, 0.5).zip(quantile(c, 0.99));
                s.invocations = slot.invocations.load(Ordering::Relaxed);
                s.errors = slot.errors.load(Ordering::Relaxed);
                s.cold = slot.cold.load(Ordering::Relaxed);
                s.warm = slot.warm.load(Ordering::Relaxed);
                s.cold_ms = pcts(&cold);
                s.warm_ms = pcts(&warm);
                s
            })
            .collect()
    }
}

/// The metrics a function keeps: one [`VersionMetrics`] per version that ran, and its ring.
#[derive(Debug, Default)]
pub(crate) struct FnMetrics {
    pub versions: std::collections::BTreeMap<String, Arc<VersionMetrics>>,
    pub ring: Arc<Ring>,
}

impl FnMetrics {
    /// The handle of `version`, created on its first use.
    pub fn version(&mut self, version: &str) -> Arc<VersionMetrics> {
        if let Some(m) = self.versions.get(version) {
            return m.clone();
        }
        let m = Arc::new(VersionMetrics::default());
        self.versions.insert(version.to_string(), m.clone());
        m
    }
}

/// Environments of one version by state, counted at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvironmentCounts {
    pub initialising: u32,
    /// Idle on-demand environments whose runtime is still thawed (within the freeze grace).
    pub idle: u32,
    /// Idle on-demand environments that are frozen.
    pub frozen: u32,
    pub busy: u32,
    /// Idle provisioned environments.
    pub provisioned: u32,
}

/// What `/metrics` shows of one function version.
#[derive(Debug, Clone)]
pub struct VersionSnapshot {
    pub version: String,
    /// `None` until the version has been invoked.
    pub metrics: Option<Arc<VersionMetrics>>,
    pub environments: EnvironmentCounts,
    /// Provisioned environments that finished Init, and how many of them are busy.
    pub provisioned_allocated: u32,
    pub provisioned_busy: u32,
}

/// What `/metrics` shows of one function.
#[derive(Debug, Clone)]
pub struct FunctionSnapshot {
    pub name: String,
    pub versions: Vec<VersionSnapshot>,
}

/// Everything `/metrics` shows, read in one pass.
#[derive(Debug, Clone)]
pub struct MetricsSnapshot {
    pub functions: Vec<FunctionSnapshot>,
    pub sandbox_pool: Option<kiln_sandbox::PoolStats>,
    pub memory_used_mb: u64,
    pub memory_budget_mb: u64,
    pub rejections: Vec<(Rejection, u64)>,
}

impl crate::Engine {
    /// Reads every counter and computes the gauges from the pools, one function lock at a time.
    pub fn metrics(&self) -> MetricsSnapshot {
        let fns: Vec<(String, Arc<crate::function::Function>)> =
            self.read_functions().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut functions = Vec::with_capacity(fns.len());
        for (name, f) in fns {
            let st = f.lock();
            let mut versions: std::collections::BTreeMap<String, VersionSnapshot> = std::collections::BTreeMap::new();
            for (v, m) in &st.metrics.versions {
                versions.insert(v.clone(), VersionSnapshot::new(v, Some(m.clone())));
            }
            for (v, pool) in &st.pools {
                let v = v.to_string();
                let s = versions.entry(v.clone()).or_insert_with(|| VersionSnapshot::new(&v, None));
                let e = &mut s.environments;
                let c = pool.counts();
                e.initialising = c.starting_on_demand + c.starting_provisioned;
                e.frozen += c.idle_frozen;
                e.idle += c.idle_thawed;
                e.provisioned = c.provisioned_idle;
                e.busy = c.busy;
                s.provisioned_busy = c.provisioned_busy;
                s.provisioned_allocated = pool.pc_allocated();
            }
            functions.push(FunctionSnapshot { name, versions: versions.into_values().collect() });
        }
        let server = &self.inner.metrics;
        MetricsSnapshot {
            functions,
            sandbox_pool: self.sandbox_pool(),
            memory_used_mb: self.inner.memory.used_mb(),
            memory_budget_mb: self.inner.memory.budget_mb(),
            rejections: Rejection::ALL.iter().map(|r| (*r, server.rejections(*r))).collect(),
        }
    }

    /// The console's per-second samples of a function: the last `secs` seconds.
    pub fn samples(&self, name: &kiln_model::FunctionName, secs: usize) -> Result<Vec<Sample>, crate::EngineError> {
        let ring = self.function(name)?.lock().metrics.ring.clone();
        let now = (crate::now_ms() / 1000).max(0) as u64;
        Ok(ring.samples(now, secs))
    }
}

impl VersionSnapshot {
    fn new(version: &str, metrics: Option<Arc<VersionMetrics>>) -> Self {
        Self {
            version: version.to_string(),
            metrics,
            environments: EnvironmentCounts::default(),
            provisioned_allocated: 0,
            provisioned_busy: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_span_half_a_millisecond_to_fifteen_minutes() {
        assert_eq!(DURATION_BUCKETS_SECS[0], 0.0005);
        assert_eq!(*DURATION_BUCKETS_SECS.last().unwrap(), 900.0);
        assert!(DURATION_BUCKETS_SECS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn histogram_counts_are_cumulative_and_bounds_inclusive() {
        let h = Histogram::default();
        h.observe_ms(0.2); // ≤ 0.5 ms
        h.observe_ms(0.5); // exactly the first bound
        h.observe_ms(3.0); // ≤ 5 ms
        h.observe_ms(1_000_000.0); // beyond 15 min: +Inf only
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets[0], (0.0005, 2));
        assert_eq!(s.buckets[2], (0.0025, 2));
        assert_eq!(s.buckets[3], (0.005, 3));
        assert_eq!(s.buckets.last().unwrap(), &(900.0, 3));
        assert!((s.sum_secs - (0.0002 + 0.0005 + 0.003 + 1000.0)).abs() < 1e-6);
    }

    #[test]
    fn version_metrics_count_by_label() {
        let m = VersionMetrics::default();
        m.result(InvocationResult::Success);
        m.result(InvocationResult::Success);
        m.result(InvocationResult::Timeout);
        m.start(StartKind::Cold);
        m.spillover();
        assert_eq!(m.results(InvocationResult::Success), 2);
        assert_eq!(m.results(InvocationResult::Timeout), 1);
        assert_eq!(m.results(InvocationResult::Throttle), 0);
        assert_eq!(m.starts(StartKind::Cold), 1);
        assert_eq!(m.starts(StartKind::Warm), 0);
        assert_eq!(m.spillovers(), 1);
    }

    #[test]
    fn ring_keeps_per_second_samples_and_forgets_old_ones() {
        let r = Ring::default();
        assert!(r.samples(1000, 5).iter().all(|s| s.invocations == 0));
        r.record(1000, Some(StartKind::Cold), 120.0, false);
        r.record(1000, Some(StartKind::Warm), 1.0, false);
        r.record(1000, Some(StartKind::Warm), 2.0, true);
        r.record(1002, None, 0.0, true);
        let s = r.samples(1002, 3);
        assert_eq!(s.iter().map(|s| s.sec).collect::<Vec<_>>(), vec![1000, 1001, 1002]);
        assert_eq!((s[0].invocations, s[0].errors, s[0].cold, s[0].warm), (3, 1, 1, 2));
        let (p50, p99) = s[0].warm_ms.unwrap();
        assert!((1.0..=1.5).contains(&p50), "{p50}");
        assert!((2.0..=3.0).contains(&p99), "{p99}");
        let (c50, _) = s[0].cold_ms.unwrap();
        assert!((120.0..=180.0).contains(&c50), "{c50}");
        assert_eq!(s[1].invocations, 0);
        assert_eq!((s[2].invocations, s[2].errors, s[2].cold_ms), (1, 1, None));
        // The same slot one lap later belongs to the new second only.
        r.record(1000 + RING_SECS as u64, Some(StartKind::Warm), 1.0, false);
        let lap = r.samples(1000 + RING_SECS as u64, RING_SECS);
        assert_eq!(lap.last().unwrap().invocations, 1);
        assert_eq!(lap.iter().map(|s| s.invocations).sum::<u32>(), 2, "second 1002 is still in the window");
        // Asking for more than the ring holds is capped.
        assert_eq!(r.samples(5000, 10_000).len(), RING_SECS);
    }

    #[test]
    fn latency_buckets_cover_fifteen_minutes() {
        assert_eq!(lat_bucket(0.01), 0);
        assert!(lat_bound(LAT_BUCKETS - 2) > 900_000.0 / LAT_FACTOR);
        assert_eq!(lat_bucket(f64::MAX), LAT_BUCKETS - 1);
        for ms in [0.07, 1.0, 9.9, 250.0, 60_000.0] {
            let b = lat_bucket(ms);
            assert!(lat_bound(b) >= ms && (b == 0 || lat_bound(b - 1) < ms), "{ms} in bucket {b}");
        }
    }
}
