//! The **scrape** scenario: what a Prometheus scraper costs the invocation path.
//!
//! On the same server and functions as the warm and throughput scenarios, it measures warm
//! sequential latency and 8-caller throughput with no scraper ("off") and with a scraper that
//! fetches `/metrics` every `--scrape-interval-ms` on its own keep-alive connection ("on"). The
//! two modes alternate for two rounds each (off, on, off, on) so that drift of the machine
//! falls on both alike; each mode's samples are merged.

use super::{invoke, new_client, throughput, Api, BenchArgs, Server, Stats, ECHO};
use anyhow::bail;
use bytes::Bytes;
use http::{Method, StatusCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROUNDS: usize = 2;

pub(super) struct Scrape {
    pub warm_off: Stats,
    pub warm_on: Stats,
    pub tput8_off: f64,
    pub tput8_on: f64,
    /// Scrapes made while "on", and how long each took.
    pub scrapes: Stats,
    pub exposition_bytes: usize,
    pub interval: Duration,
}

/// A scraper on its own connection until `stop`: each scrape's duration and the last size.
async fn scraper(
    addr: std::net::SocketAddr,
    interval: Duration,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let client = new_client(addr);
    let mut tick = tokio::time::interval(interval);
    let mut out = Vec::new();
    let mut size = 0;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let t = Instant::now();
        let (status, _, body) = client.request(Method::GET, "/metrics", Bytes::new()).await?;
        if status != StatusCode::OK {
            bail!("GET /metrics answered {status}");
        }
        out.push(t.elapsed());
        size = body.len();
    }
    Ok((out, size))
}

async fn warm(addr: std::net::SocketAddr, n: usize) -> anyhow::Result<Vec<Duration>> {
    let client = new_client(addr);
    invoke(&client, "bench-warm", ECHO).await?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        invoke(&client, "bench-warm", ECHO).await?;
        out.push(t.elapsed());
    }
    Ok(out)
}

/// Runs the scenario; `bench-warm` and `bench-tput` must exist (they are created when absent).
pub(super) async fn run(server: &Server, zip_b64: &str, args: &BenchArgs) -> anyhow::Result<Scrape> {
    let api = Api::new(server.addr);
    for name in ["bench-warm", "bench-tput"] {
        if api.call(Method::GET, &format!("/2015-03-31/functions/{name}"), None).await.is_err() {
            api.create_function(name, zip_b64, 10, args.memory).await?;
        }
    }
    let addr = server.addr;
    let interval = Duration::from_millis(args.scrape_interval_ms.max(1));
    let n = (args.warm / ROUNDS).max(1);
    let (mut warm_off, mut warm_on, mut tput_off, mut tput_on) = (Vec::new(), Vec::new(), 0.0, 0.0);
    let mut scrapes = Vec::new();
    let mut exposition_bytes = 0;
    for _ in 0..ROUNDS {
        for on in [false, true] {
            let stop = Arc::new(AtomicBool::new(false));
            let task = on.then(|| tokio::spawn(scraper(addr, interval, stop.clone())));
            let w = warm(addr, n).await?;
            let rate =
                throughput(
                    addr,
                    args.seconds,
                    8,
                    move |c| async move { invoke(&c, "bench-tput", ECHO).await.map(drop) },
                )
                .await?;
            stop.store(true, Ordering::Relaxed);
            if let Some(task) = task {
                let (s, size) = task.await??;
                scrapes.extend(s);
                exposition_bytes = size;
            }
            if on {
                warm_on.extend(w);
                tput_on += rate / ROUNDS as f64;
            } else {
                warm_off.extend(w);
                tput_off += rate / ROUNDS as f64;
            }
        }
    }
    Ok(Scrape {
        warm_off: Stats::of(&warm_off),
        warm_on: Stats::of(&warm_on),
        tput8_off: tput_off,
        tput8_on: tput_on,
        scrapes: Stats::of(&scrapes),
        exposition_bytes,
        interval,
    })
}

impl Scrape {
    pub fn render(&self) -> String {
        let ms = super::ms;
        let mut s = format!(
            "\nmetrics scrape (GET /metrics every {} ms on its own connection; off/on alternated, {ROUNDS} rounds each)\n",
            self.interval.as_millis()
        );
        s += &format!("  {:<28} {:>12} {:>12} {:>9}\n", "", "scraper off", "scraper on", "change");
        let pct = |off: f64, on: f64| if off > 0.0 { (on - off) / off * 100.0 } else { 0.0 };
        let (a, b) = (ms(self.warm_off.p50), ms(self.warm_on.p50));
        s += &format!("  {:<28} {:>9.3} ms {:>9.3} ms {:>+8.1}%\n", "warm p50", a, b, pct(a, b));
        let (a, b) = (ms(self.warm_off.p99), ms(self.warm_on.p99));
        s += &format!("  {:<28} {:>9.3} ms {:>9.3} ms {:>+8.1}%\n", "warm p99", a, b, pct(a, b));
        s += &format!(
            "  {:<28} {:>10.0}/s {:>10.0}/s {:>+8.1}%\n",
            "throughput, 8 callers",
            self.tput8_off,
            self.tput8_on,
            pct(self.tput8_off, self.tput8_on)
        );
        s += &format!(
            "  scrapes: {}, p50 {:.2} ms, max {:.2} ms, {} bytes each\n",
            self.scrapes.n,
            ms(self.scrapes.p50),
            ms(self.scrapes.max),
            self.exposition_bytes
        );
        s
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "interval_ms": self.interval.as_millis() as u64,
            "warm_off": self.warm_off.json(),
            "warm_on": self.warm_on.json(),
            "throughput8_off_per_second": self.tput8_off,
            "throughput8_on_per_second": self.tput8_on,
            "scrapes": self.scrapes.json(),
            "exposition_bytes": self.exposition_bytes,
        })
    }
}
