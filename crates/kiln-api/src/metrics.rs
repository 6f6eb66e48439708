//! `GET /metrics`: the Prometheus text exposition of what the engine counts, and the count of
//! REST API requests by operation and status.
//!
//! Nothing here is touched per invocation except [`ApiRequests::count`] (one relaxed atomic
//! addition per REST request). The engine's counters are read at scrape time through
//! [`Engine::metrics`], which also computes the gauges from the pools; the text is written by
//! `prometheus-client`'s encoder through a [`Collector`] that turns that snapshot into
//! constant metrics. Labels are bounded: function name and version only, plus small fixed sets
//! (result, start, state, operation, status, reason).
//!
//! A scrape renders once per request, one at a time ([`Metrics::render`] is single-flight), so
//! a scraper that opens thousands of connections costs at most one core's worth of rendering
//! and each function lock is held only while its pools are counted.

use kiln_engine::metrics::{HistogramSnapshot, InvocationResult, MetricsSnapshot, StartKind, VersionSnapshot};
use kiln_engine::Engine;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The content type of what prometheus-client writes: the OpenMetrics text format, which
/// Prometheus asks for and parses (counter families named without `_total`, `# EOF` last).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The REST operations kiln counts, as the `operation` label says. A request that matches none
/// is `Unknown`, so a client cannot grow the label set.
pub const OPERATIONS: &[&str] = &[
    "CreateFunction",
    "ListFunctions",
    "GetFunction",
    "DeleteFunction",
    "GetFunctionConfiguration",
    "UpdateFunctionConfiguration",
    "UpdateFunctionCode",
    "Invoke",
    "InvokeWithResponseStream",
    "PublishVersion",
    "ListVersionsByFunction",
    "CreateAlias",
    "ListAliases",
    "GetAlias",
    "UpdateAlias",
    "DeleteAlias",
    "PutFunctionConcurrency",
    "GetFunctionConcurrency",
    "DeleteFunctionConcurrency",
    "PutProvisionedConcurrencyConfig",
    "GetProvisionedConcurrencyConfig",
    "DeleteProvisionedConcurrencyConfig",
    "GetAccountSettings",
    "CloudWatchLogs",
    "KilnStatus",
    "KilnGetCode",
    "KilnGetLogs",
    "KilnListEnvironments",
    "KilnGetSamples",
    "Metrics",
    "Console",
    "CreateFunctionUrlConfig",
    "GetFunctionUrlConfig",
    "UpdateFunctionUrlConfig",
    "DeleteFunctionUrlConfig",
    "ListFunctionUrlConfigs",
    "InvokeFunctionUrl",
    "Unknown",
];

/// Status codes are counted exactly from 100 to 599; anything else is counted as 0.
const STATUSES: usize = 600;

/// The operation a request is, from its method and decoded path segments.
pub fn operation(method: &http::Method, seg: &[&str]) -> &'static str {
    use http::Method as M;
    let op = match (method, seg) {
        (&M::POST, ["2015-03-31", "functions"]) => "CreateFunction",
        (&M::GET, ["2015-03-31", "functions"]) => "ListFunctions",
        (&M::GET, ["2015-03-31", "functions", _]) => "GetFunction",
        (&M::DELETE, ["2015-03-31", "functions", _]) => "DeleteFunction",
        (&M::GET, ["2015-03-31", "functions", _, "configuration"]) => "GetFunctionConfiguration",
        (&M::PUT, ["2015-03-31", "functions", _, "configuration"]) => "UpdateFunctionConfiguration",
        (&M::PUT, ["2015-03-31", "functions", _, "code"]) => "UpdateFunctionCode",
        (&M::POST, ["2015-03-31", "functions", _, "invocations"]) => "Invoke",
        (&M::POST, ["2021-11-15", "functions", _, "response-streaming-invocations"]) => "InvokeWithResponseStream",
        (&M::POST, ["2015-03-31", "functions", _, "versions"]) => "PublishVersion",
        (&M::GET, ["2015-03-31", "functions", _, "versions"]) => "ListVersionsByFunction",
        (&M::POST, ["2015-03-31", "functions", _, "aliases"]) => "CreateAlias",
        (&M::GET, ["2015-03-31", "functions", _, "aliases"]) => "ListAliases",
        (&M::GET, ["2015-03-31", "functions", _, "aliases", _]) => "GetAlias",
        (&M::PUT, ["2015-03-31", "functions", _, "aliases", _]) => "UpdateAlias",
        (&M::DELETE, ["2015-03-31", "functions", _, "aliases", _]) => "DeleteAlias",
        (&M::PUT, ["2017-10-31", "functions", _, "concurrency"]) => "PutFunctionConcurrency",
        (&M::GET, ["2019-09-30", "functions", _, "concurrency"]) => "GetFunctionConcurrency",
        (&M::DELETE, ["2017-10-31", "functions", _, "concurrency"]) => "DeleteFunctionConcurrency",
        (&M::PUT, ["2019-09-30", "functions", _, "provisioned-concurrency"]) => "PutProvisionedConcurrencyConfig",
        (&M::GET, ["2019-09-30", "functions", _, "provisioned-concurrency"]) => "GetProvisionedConcurrencyConfig",
        (&M::DELETE, ["2019-09-30", "functions", _, "provisioned-concurrency"]) => "DeleteProvisionedConcurrencyConfig",
        (&M::GET, ["2016-08-19", "account-settings"]) => "GetAccountSettings",
        (&M::POST, []) => "CloudWatchLogs",
        (&M::GET, ["kiln", "v1", "status"]) => "KilnStatus",
        (&M::GET, ["kiln", "v1", "functions", _, "code"]) => "KilnGetCode",
        (&M::GET, ["kiln", "v1", "functions", _, "logs"]) => "KilnGetLogs",
        (&M::GET, ["kiln", "v1", "functions", _, "environments"]) => "KilnListEnvironments",
        (&M::GET, ["kiln", "v1", "functions", _, "samples"]) => "KilnGetSamples",
        (&M::POST, ["2021-10-31", "functions", _, "url"]) => "CreateFunctionUrlConfig",
        (&M::GET, ["2021-10-31", "functions", _, "url"]) => "GetFunctionUrlConfig",
        (&M::PUT, ["2021-10-31", "functions", _, "url"]) => "UpdateFunctionUrlConfig",
        (&M::DELETE, ["2021-10-31", "functions", _, "url"]) => "DeleteFunctionUrlConfig",
        (&M::GET, ["2021-10-31", "functions", _, "urls"]) => "ListFunctionUrlConfigs",
        (&M::GET, ["metrics"]) => "Metrics",
        (&M::GET, [] | ["console", ..] | ["kiln", "v1", "console"]) => "Console",
        _ => "Unknown",
    };
    debug_assert!(OPERATIONS.contains(&op));
    op
}

/// REST requests by operation and status code: a fixed table of atomics.
pub struct ApiRequests {
    counts: Box<[AtomicU64]>,
}

impl Default for ApiRequests {
    fn default() -> Self {
        Self { counts: (0..OPERATIONS.len() * STATUSES).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl ApiRequests {
    pub fn count(&self, operation: &str, status: u16) {
        let op = OPERATIONS.iter().position(|o| *o == operation).unwrap_or(OPERATIONS.len() - 1);
        let status = if (100..600).contains(&status) { usize::from(status) } else { 0 };
        self.counts[op * STATUSES + status].fetch_add(1, Ordering::Relaxed);
    }

    /// `(operation, status, count)` of every pair seen at least once.
    pub fn seen(&self) -> Vec<(&'static str, u16, u64)> {
        let mut out = Vec::new();
        for (i, c) in self.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n > 0 {
                out.push((OPERATIONS[i / STATUSES], (i % STATUSES) as u16, n));
            }
        }
        out
    }
}

/// What the `/metrics` endpoint needs: the engine and the request counters.
pub struct Metrics {
    engine: Engine,
    pub requests: Arc<ApiRequests>,
    /// One scrape renders at a time.
    render: tokio::sync::Semaphore,
}

impl Metrics {
    pub fn new(engine: Engine) -> Self {
        Self { engine, requests: Arc::new(ApiRequests::default()), render: tokio::sync::Semaphore::new(1) }
    }

    /// The text exposition of everything, rendered one scrape at a time.
    pub async fn render(&self) -> String {
        let _turn = self.render.acquire().await;
        // The durable queue's counts are one grouped query on its own database, off every
        // invocation's path; a failing query leaves the family out rather than the scrape.
        let events = match self.engine.event_counts().await {
            Ok(counts) => counts,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the event queue's counts for /metrics");
                Vec::new()
            }
        };
        let snapshot = Snapshot { metrics: self.engine.metrics(), requests: self.requests.seen(), events };
        encode(snapshot)
    }
}

/// Encodes a snapshot in the text format.
fn encode(snapshot: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut out = String::with_capacity(16 * 1024);
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::warn!(error = %e, "cannot encode metrics");
    }
    out
}

#[derive(Debug)]
struct Snapshot {
    metrics: MetricsSnapshot,
    requests: Vec<(&'static str, u16, u64)>,
    /// Asynchronous events per function: queued, in flight, failed.
    events: Vec<(String, kiln_engine::EventCounts)>,
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// Writes one metric family: a descriptor, then one sample per label set.
fn family<'a, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Labels<'a>, M)>,
) -> Result<(), std::fmt::Error> {
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, m) in samples {
        m.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A histogram from a snapshot of the engine's.
#[derive(Debug)]
struct ConstHistogram<'a>(&'a HistogramSnapshot);

impl EncodeMetric for ConstHistogram<'_> {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error> {
        // The encoder sums the buckets itself: hand it per-bucket counts, `+Inf` last.
        let mut below = 0;
        let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(self.0.buckets.len() + 1);
        for (bound, cumulative) in &self.0.buckets {
            buckets.push((*bound, cumulative - below));
            below = *cumulative;
        }
        buckets.push((f64::MAX, self.0.count - below));
        encoder.encode_histogram::<NoLabelSet>(self.0.sum_secs, self.0.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn gauge(v: i64) -> ConstGauge<i64> {
    ConstGauge::new(v)
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let versions: Vec<(&str, &VersionSnapshot)> =
            self.metrics.functions.iter().flat_map(|f| f.versions.iter().map(move |v| (f.name.as_str(), v))).collect();
        let invoked: Vec<(&str, &VersionSnapshot, &kiln_engine::metrics::VersionMetrics)> =
            versions.iter().filter_map(|(f, v)| v.metrics.as_deref().map(|m| (*f, *v, m))).collect();

        family(
            &mut enc,
            "kiln_invocations",
            "Invocations by how they ended (success, function_error, throttle, timeout, internal_error).",
            MetricType::Counter,
            invoked.iter().flat_map(|(f, v, m)| {
                InvocationResult::ALL.iter().map(move |r| {
                    (
                        vec![("function", *f), ("version", v.version.as_str()), ("result", r.as_str())],
                        counter(m.results(*r)),
                    )
                })
            }),
        )?;
        family(
            &mut enc,
            "kiln_starts",
            "Invocations by how they got their environment: cold (a new environment), warm (an idle one), provisioned (an idle provisioned one).",
            MetricType::Counter,
            invoked.iter().flat_map(|(f, v, m)| {
                StartKind::ALL.iter().map(move |s| {
                    (vec![("function", *f), ("version", v.version.as_str()), ("start", s.as_str())], counter(m.starts(*s)))
                })
            }),
        )?;
        family(
            &mut enc,
            "kiln_provisioned_spillover_invocations",
            "Invocations that ran on-demand while the version had provisioned concurrency configured.",
            MetricType::Counter,
            invoked
                .iter()
                .map(|(f, v, m)| (vec![("function", *f), ("version", v.version.as_str())], counter(m.spillovers()))),
        )?;
        let durations: Vec<(&str, &VersionSnapshot, HistogramSnapshot, HistogramSnapshot)> =
            invoked.iter().map(|(f, v, m)| (*f, *v, m.duration.snapshot(), m.init.snapshot())).collect();
        family(
            &mut enc,
            "kiln_invocation_duration_seconds",
            "Run time of invocations (the REPORT line's Duration).",
            MetricType::Histogram,
            durations
                .iter()
                .map(|(f, v, d, _)| (vec![("function", *f), ("version", v.version.as_str())], ConstHistogram(d))),
        )?;
        family(
            &mut enc,
            "kiln_init_duration_seconds",
            "Init time of cold starts (the REPORT line's Init Duration).",
            MetricType::Histogram,
            durations
                .iter()
                .map(|(f, v, _, i)| (vec![("function", *f), ("version", v.version.as_str())], ConstHistogram(i))),
        )?;
        family(
            &mut enc,
            "kiln_concurrent_executions",
            "Invocations running now.",
            MetricType::Gauge,
            versions.iter().map(|(f, v)| {
                (vec![("function", *f), ("version", v.version.as_str())], gauge(v.environments.busy.into()))
            }),
        )?;
        family(
            &mut enc,
            "kiln_environments",
            "Execution environments by state: initialising, idle (thawed), frozen (idle and frozen), busy, provisioned (idle provisioned).",
            MetricType::Gauge,
            versions.iter().flat_map(|(f, v)| {
                let e = &v.environments;
                [
                    ("initialising", e.initialising),
                    ("idle", e.idle),
                    ("frozen", e.frozen),
                    ("busy", e.busy),
                    ("provisioned", e.provisioned),
                ]
                .into_iter()
                .map(move |(state, n)| {
                    (vec![("function", *f), ("version", v.version.as_str()), ("state", state)], gauge(n.into()))
                })
            }),
        )?;
        let provisioned: Vec<&(&str, &VersionSnapshot)> =
            versions.iter().filter(|(_, v)| v.provisioned_allocated > 0).collect();
        family(
            &mut enc,
            "kiln_provisioned_concurrent_executions",
            "Invocations running now on provisioned environments.",
            MetricType::Gauge,
            provisioned.iter().map(|(f, v)| {
                (vec![("function", *f), ("version", v.version.as_str())], gauge(v.provisioned_busy.into()))
            }),
        )?;
        family(
            &mut enc,
            "kiln_provisioned_concurrency_utilization",
            "Busy provisioned environments over allocated ones (0 to 1).",
            MetricType::Gauge,
            provisioned.iter().map(|(f, v)| {
                let ratio = f64::from(v.provisioned_busy) / f64::from(v.provisioned_allocated);
                (vec![("function", *f), ("version", v.version.as_str())], ConstGauge::new(ratio))
            }),
        )?;
        family(
            &mut enc,
            "kiln_async_events",
            "Asynchronous (Event) invocations kept in the durable queue, by state: queued (waiting or between retries), in_flight, failed (in the failed-event store).",
            MetricType::Gauge,
            self.events.iter().flat_map(|(f, c)| {
                [("queued", c.queued), ("in_flight", c.in_flight), ("failed", c.failed)].into_iter().map(
                    move |(state, n)| {
                        (vec![("function", f.as_str()), ("state", state)], gauge(i64::try_from(n).unwrap_or(i64::MAX)))
                    },
                )
            }),
        )?;

        let m = &self.metrics;
        if let Some(p) = &m.sandbox_pool {
            family(
                &mut enc,
                "kiln_sandbox_pool_ready",
                "Blank sandboxes ready to be claimed by a cold start.",
                MetricType::Gauge,
                [(Vec::new(), gauge(p.ready as i64))],
            )?;
            family(
                &mut enc,
                "kiln_sandbox_pool_target",
                "Blank sandboxes the pool tries to keep ready.",
                MetricType::Gauge,
                [(Vec::new(), gauge(p.target as i64))],
            )?;
            family(
                &mut enc,
                "kiln_sandbox_spawns",
                "Sandboxes given to cold starts, by where they came from: pool (a blank) or built (made on the spot).",
                MetricType::Counter,
                [
                    (vec![("source", "pool")], counter(p.pooled_spawns)),
                    (vec![("source", "built")], counter(p.fresh_spawns)),
                ],
            )?;
            family(
                &mut enc,
                "kiln_sandbox_pool_failed_builds",
                "Blank sandbox builds that failed.",
                MetricType::Counter,
                [(Vec::new(), counter(p.failed_builds))],
            )?;
        }
        family(
            &mut enc,
            "kiln_memory_budget_used_bytes",
            "Memory claimed by live environments (the sum of their MemorySize).",
            MetricType::Gauge,
            [(Vec::new(), gauge((m.memory_used_mb * 1024 * 1024) as i64))],
        )?;
        family(
            &mut enc,
            "kiln_memory_budget_bytes",
            "The memory budget of all live environments.",
            MetricType::Gauge,
            [(Vec::new(), gauge((m.memory_budget_mb * 1024 * 1024) as i64))],
        )?;
        family(
            &mut enc,
            "kiln_admission_rejections",
            "Invocations throttled before they ran, by reason: concurrency (reserved or account limit) or memory_budget.",
            MetricType::Counter,
            m.rejections.iter().map(|(r, n)| (vec![("reason", r.as_str())], counter(*n))),
        )?;
        let statuses: Vec<String> = self.requests.iter().map(|(_, s, _)| s.to_string()).collect();
        family(
            &mut enc,
            "kiln_api_requests",
            "REST API requests by operation and HTTP status.",
            MetricType::Counter,
            self.requests
                .iter()
                .zip(&statuses)
                .map(|((op, _, n), s)| (vec![("operation", *op), ("status", s.as_str())], counter(*n))),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_in_the_label_set() {
        use http::Method as M;
        let cases: &[(M, &[&str], &str)] = &[
            (M::POST, &["2015-03-31", "functions", "f", "invocations"], "Invoke"),
            (M::GET, &["2015-03-31", "functions"], "ListFunctions"),
            (M::GET, &["metrics"], "Metrics"),
            (M::GET, &[], "Console"),
            (M::GET, &["console", "app.js"], "Console"),
            (M::PATCH, &["2015-03-31", "functions"], "Unknown"),
            (M::GET, &["x", "y", "z", "w", "v", "u"], "Unknown"),
        ];
        for (m, seg, want) in cases {
            assert_eq!(operation(m, seg), *want);
        }
    }

    #[test]
    fn exposition_has_cumulative_buckets_totals_and_bounded_labels() {
        use kiln_engine::metrics::{EnvironmentCounts, FunctionSnapshot, Rejection, VersionMetrics};
        let m = Arc::new(VersionMetrics::default());
        m.result(InvocationResult::Success);
        m.result(InvocationResult::Success);
        m.result(InvocationResult::Timeout);
        m.start(StartKind::Cold);
        m.duration.observe_ms(0.3);
        m.duration.observe_ms(3.0);
        m.duration.observe_ms(2_000_000.0);
        let snapshot = Snapshot {
            metrics: MetricsSnapshot {
                functions: vec![FunctionSnapshot {
                    name: "f".into(),
                    versions: vec![VersionSnapshot {
                        version: "$LATEST".into(),
                        metrics: Some(m),
                        environments: EnvironmentCounts { busy: 1, frozen: 2, ..EnvironmentCounts::default() },
                        provisioned_allocated: 0,
                        provisioned_busy: 0,
                    }],
                }],
                sandbox_pool: None,
                memory_used_mb: 256,
                memory_budget_mb: 1024,
                rejections: vec![(Rejection::Concurrency, 4), (Rejection::MemoryBudget, 0)],
            },
            requests: vec![("Invoke", 200, 3)],
            events: vec![("f".into(), kiln_engine::EventCounts { queued: 7, in_flight: 1, failed: 2 })],
        };
        let text = encode(snapshot);
        assert!(text.lines().any(|l| l == r#"kiln_async_events{function="f",state="queued"} 7"#), "{text}");
        assert!(text.lines().any(|l| l == r#"kiln_async_events{function="f",state="failed"} 2"#), "{text}");
        let has = |line: &str| text.lines().any(|l| l == line);
        assert!(has(r#"kiln_invocations_total{function="f",version="$LATEST",result="success"} 2"#), "{text}");
        assert!(has(r#"kiln_invocations_total{function="f",version="$LATEST",result="timeout"} 1"#));
        assert!(has(r#"kiln_starts_total{function="f",version="$LATEST",start="cold"} 1"#));
        let bucket = |le: &str, n: u64| {
            format!(r#"kiln_invocation_duration_seconds_bucket{{le="{le}",function="f",version="$LATEST"}} {n}"#)
        };
        assert!(has(&bucket("0.0005", 1)), "{text}");
        assert!(has(&bucket("0.005", 2)));
        assert!(has(&bucket("900.0", 2)));
        assert!(has(&bucket("+Inf", 3)));
        assert!(has(r#"kiln_invocation_duration_seconds_count{function="f",version="$LATEST"} 3"#));
        assert!(has(r#"kiln_environments{function="f",version="$LATEST",state="frozen"} 2"#));
        assert!(has(r#"kiln_concurrent_executions{function="f",version="$LATEST"} 1"#));
        assert!(
            has(r#"kiln_memory_budget_used_bytes 268435456"#) || has(r#"kiln_memory_budget_used_bytes{} 268435456"#)
        );
        assert!(has(r#"kiln_admission_rejections_total{reason="concurrency"} 4"#));
        assert!(has(r#"kiln_api_requests_total{operation="Invoke",status="200"} 3"#));
        // A version never invoked has no counters, and provisioned gauges appear only with
        // provisioned environments.
        assert!(!text.contains("kiln_provisioned_concurrency_utilization{"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn requests_are_counted_by_operation_and_status() {
        let r = ApiRequests::default();
        r.count("Invoke", 200);
        r.count("Invoke", 200);
        r.count("Invoke", 429);
        r.count("not an operation", 999);
        let mut seen = r.seen();
        seen.sort_unstable();
        assert_eq!(seen, vec![("Invoke", 200, 2), ("Invoke", 429, 1), ("Unknown", 0, 1)]);
    }
}
