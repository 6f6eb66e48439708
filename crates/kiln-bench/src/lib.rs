//! `kiln bench`: measures kiln against the baselines of the same machine, in one run.
//!
//! # Method
//!
//! The bench starts its own `kiln serve` (this executable, on a free loopback port, with a fresh
//! data dir under the system's temp dir and `--isolation` passed through), waits until
//! `GET /2015-03-31/functions/` answers, deploys the `lambda_runtime` example (`hello-rust`
//! next to this binary, zipped as `bootstrap` with mode 0755) through the REST API like any
//! client would, and drives it with a Rust client: hyper's HTTP/1.1 client connection with
//! keep-alive and `TCP_NODELAY`, one connection per caller. The same client code drives
//! the baselines, so the ratios compare servers, not clients.
//!
//! Scenarios, in this order:
//!
//! - **cold**: before each timed call, `PUT …/configuration` with a new `Description`, which
//!   retires the function's environments; the bench waits for `LastUpdateStatus: Successful`
//!   and for the retired environment's processes to be gone, so nothing but the cold start is
//!   timed. The engine's own `Init Duration` and `Duration` (from the REPORT lines in the data
//!   dir's logs, matched by request id) split each cold start into *init* (sandbox + runtime
//!   start until its first `GET next`), *invoke* (event out, response in) and the rest (REST
//!   API, admission, scheduling).
//! - **warm**: sequential invokes on one warm environment, with the CPU time per call of kiln's
//!   processes and of the function (`/proc/PID/task/*/schedstat` of the server's process tree,
//!   bootstraps apart). The same for the minimal runtime (`minimal-runtime`, a std-only loop)
//!   when it is built, plus its throughput with 8 callers: what is left there is kiln. Then
//!   the minimal runtime again, pausing 1 ms per event: `kiln serve`'s CPU per call with idle
//!   CPUs between the exchanges, printed as information beside the back-to-back figure.
//! - **throughput**: warm invokes per second with 1, 8 and 32 concurrent callers for a fixed
//!   time each, after a warm-up that gives every caller its environment.
//! - **burst**: one fresh function, one pre-connected client per caller; all callers are
//!   released at once and the wall time until the last answer is the result. Each event sleeps
//!   `--burst-hold-ms` (subtracted from the result) so that no environment frees up and serves
//!   a second caller of the burst; the bench reads the function's cold-start count back to show
//!   that every call really got its own environment.
//! - **density** (on a second, fresh `kiln serve`): the server's idle RSS before anything ran;
//!   then N environments of the example, made by N callers (started at a fixed rate) whose event
//!   sleeps long enough that all N overlap. When every call has answered and the environments
//!   sit idle, kiln's own memory per environment is the server's RSS growth plus the PSS of
//!   every kiln-owned process in the server's process tree that is not a bootstrap (the sandbox
//!   init; none with `--isolation none`), divided by the number of environments the server
//!   reports. The bootstraps' own memory is shown beside it but not charged to kiln.
//!
//! Baselines, in the same run:
//!
//! - **bare spawn**: the same `bootstrap` started with `std::process::Command` (no sandbox)
//!   against a minimal Runtime API served by the bench; timed from spawn to the first response
//!   posted. Taken during the cold scenario, alternating with its cold starts in blocks of ten
//!   (`BLOCK`), each block once the server's blank pool is full: the host's speed drifts by
//!   tens of percent over seconds, and the goal compares the two sides' p50s.
//! - **bare warm**: the same `bootstrap`, started once that way, answering events in sequence:
//!   event handed to its waiting `next` → response posted, and its CPU time per event. This is
//!   the function's own cost; a warm invoke through kiln cannot beat one loopback request plus
//!   this, and no server can serve more than `cpus / its CPU per call` invokes per second.
//! - **loopback floor**: the same client against a trivial hyper echo server of the bench: one
//!   request, and two sequential requests (a warm invoke makes two hops: client → kiln →
//!   runtime), plus the floor's throughput with the same numbers of callers.
//!
//! - **scrape** (`scrape.rs`): warm latency and 8-caller throughput with and without a
//!   Prometheus scraper on `/metrics`, alternated on the same server; `--scrape-only` runs only
//!   this scenario.
//! - **runtimes** (`runtimes.rs`): a trivial Python and Node.js handler on kiln's runtime
//!   clients, cold and warm, each beside the same launcher started bare against the bench's own
//!   Runtime API; `--only runtimes` runs only this scenario.
//! - **peer** (`peer.rs`, `--peer cargo-lambda`): the same function and client against another
//!   local emulator, with kiln/peer ratios.
//!
//! Targets are reported as met or not met; the bench never fails on them. A second list,
//! *goals*, holds the next step's goals, each a ratio to this run's own baselines: cold p50 −
//! bare spawn p50, kiln serve's CPU per warm call (utime + stime of /proc/PID/stat over the warm
//! scenario, divided by the calls), warm p50 against one loopback request plus bare warm, the
//! minimal runtime's 8-caller share of the loopback floor, the burst of 200, kiln's memory per
//! idle environment, and cold starts of another function while the density run's environments
//! sit idle against the same with none (`--idle-cold` of each). The report's header also says
//! the machine's state at the start (uptime, load, cpuidle driver and halt polling), which moves
//! these figures between runs of the same build.
//!
//! This crate is the body of the `kiln bench` verb (the `kiln` binary parses [`BenchArgs`] and
//! calls [`run`]); like the binary, it reports failures with `anyhow`. Its REST client,
//! connections and zips are kiln-client's, shared with the CLI verbs.
#![forbid(unsafe_code)]

mod children;
mod events;
mod idle_cold;

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kiln_client::Conn;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod peer;
mod runtimes;
mod scrape;
mod stream;
mod url;

/// Options of `kiln bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    /// Isolation of the server under test, passed to `kiln serve --isolation`.
    #[arg(long, default_value = "sandbox", value_parser = ["sandbox", "none"])]
    isolation: String,
    /// The function's `bootstrap` [default: `hello-rust` next to this executable].
    #[arg(long)]
    function_bin: Option<PathBuf>,
    /// MemorySize of the benchmarked functions, in MB. Lambda gives a function CPU in proportion
    /// (1,769 MB = one vCPU), and so does kiln's sandbox: at the default 128 MB a function may use
    /// 10 % of a CPU (kiln's floor; 7 % by the ratio), which bounds its throughput and the tail of
    /// back-to-back calls.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(128..=10240))]
    memory: u32,
    /// A second, minimal runtime measured beside the example (warm calls and throughput), to
    /// tell kiln's cost from the official client's [default: `minimal-runtime` next to this
    /// executable, skipped if absent].
    #[arg(long)]
    lean_bin: Option<PathBuf>,
    /// Number of cold starts.
    #[arg(long, default_value_t = 200)]
    cold: usize,
    /// Number of sequential warm invokes.
    #[arg(long, default_value_t = 5000)]
    warm: usize,
    /// Seconds of each throughput run.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Simultaneous calls of the burst (the goal is for 200: a smaller burst is reported as
    /// not comparable with it).
    #[arg(long, default_value_t = 200)]
    burst: usize,
    /// How long each burst call holds its environment (subtracted from the result), so that no
    /// environment frees up for another caller of the same burst.
    #[arg(long, default_value_t = 2000)]
    burst_hold_ms: u64,
    /// Idle environments of the density run (0 skips it).
    #[arg(long, default_value_t = 1000)]
    density: usize,
    /// Callers started per second in the density run.
    #[arg(long, default_value_t = 200)]
    density_rate: u32,
    /// Cold starts of another function on the density run's server, before its environments
    /// exist and again while they sit idle (0 skips them). Each starts once the previous one's
    /// environment is gone and the blank pool is full.
    #[arg(long, default_value_t = 50)]
    idle_cold: usize,
    /// Keep the server's stderr in this file (set RUST_LOG for detail) [default: discarded].
    #[arg(long)]
    server_log: Option<PathBuf>,
    /// Also write the cold and warm latency distributions (CDFs, with their baselines) as an SVG.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Run only this scenario: `events` (durable Event invokes with 32 callers), `runtimes`
    /// (Python and Node.js functions on kiln's runtime clients beside the same clients run bare),
    /// `url` (one function through its function URL and through Invoke); `stream` (time to
    /// first byte of a streamed response against a buffered response's full latency, same
    /// payload, same run; --warm calls of each); `burst` (the burst of --burst calls on a fresh
    /// server, and kiln serve's CPU time during it); `density` (the density run with its idle-cold
    /// starts, nothing else).
    #[arg(long, value_parser = ["events", "runtimes", "url", "stream", "burst", "density"])]
    only: Option<String>,
    /// MemorySize of the Python and Node.js functions of the runtimes scenario, in MB [default:
    /// 1769, one vCPU, as the bare client has].
    #[arg(long, default_value_t = 1769, value_parser = clap::value_parser!(u32).range(128..=10240))]
    runtime_memory: u32,
    /// Run only the scrape scenario: warm latency and 8-caller throughput with and without a
    /// scraper on /metrics (--warm calls and --seconds of throughput per mode).
    #[arg(long)]
    scrape_only: bool,
    /// Run only the comparison with another local emulator, same function binary, same client:
    /// `cargo-lambda` (its `cargo lambda watch --only-lambda-apis`): warm p50/p99, throughput
    /// with 1 and 8 callers, server CPU per call, with kiln/peer ratios.
    #[arg(long, value_parser = ["cargo-lambda"])]
    peer: Option<String>,
    /// The peer's program [default: `cargo-lambda` on PATH].
    #[arg(long)]
    peer_bin: Option<PathBuf>,
    /// How often the scrape scenario's scraper fetches /metrics, in ms.
    #[arg(long, default_value_t = 1000)]
    scrape_interval_ms: u64,
}

/// Caller counts of the throughput runs.
const CALLERS: [usize; 3] = [1, 8, 32];
/// The event of every invoke, and the echo server's request body.
const ECHO: &str = r#"{"action":"echo"}"#;
/// The minimal runtime waits 1 ms before it answers this event (see [`PAUSE_CALLS`]).
const PAUSE_1MS: &str = r#"{"action":"sleep","ms":1}"#;
/// Sequential calls of the minimal runtime with a 1 ms pause per event, at most: an information
/// row (how much of kiln's CPU per call is the cost of waking idle CPUs), not a goal.
const PAUSE_CALLS: usize = 1000;
const MB: f64 = 1024.0 * 1024.0;

pub fn run(args: BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    let result = run_scenarios(args);
    if result.is_err() && children::interrupted() {
        // The scenario failed because its server was stopped: the signal's clean-up exits.
        children::wait_for_clean_up();
    }
    result
}

fn run_scenarios(args: BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start tokio")?;
    // The baselines' servers get their own runtime, like kiln has its own process.
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-server")
        .enable_all()
        .build()
        .context("cannot start tokio")?;
    children::clean_up_on_signal().context("cannot watch for signals")?;
    if args.only.as_deref() == Some("events") {
        let result = rt.block_on(events_only(&args))?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&json!({ "events": result.json() }))?);
        } else {
            print!("{}", result.render());
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if args.peer.is_some() {
        let result = rt.block_on(async {
            let exe = std::env::current_exe().context("cannot find the kiln executable")?;
            let function_bin = match &args.function_bin {
                Some(p) => p.clone(),
                None => exe.parent().map(|d| d.join("hello-rust")).context("the kiln executable has no folder")?,
            };
            let work = TempDir::new()?;
            peer::run(&exe, &work, &function_bin, &args).await
        })?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&json!({ "peer": result.json() }))?);
        } else {
            print!("{}", result.render());
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if args.only.as_deref() == Some("url") {
        let result = rt.block_on(url_only(&args))?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&json!({ "url": result.json() }))?);
        } else {
            print!("{}", result.render());
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if args.only.as_deref() == Some("runtimes") {
        let result = rt.block_on(runtimes_only(&args, servers.handle()))?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&json!({ "runtimes": result.json() }))?);
        } else {
            print!("{}", result.render());
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if let Some(only @ ("burst" | "density")) = args.only.as_deref() {
        print!("{}", rt.block_on(scale_only(only, &args))?);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if args.only.as_deref() == Some("stream") {
        let result = rt.block_on(async {
            let exe = std::env::current_exe().context("cannot find the kiln executable")?;
            let work = TempDir::new()?;
            stream::run(&exe, &work, &args).await
        })?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&json!({ "stream": result.json() }))?);
        } else {
            print!("{}", result.render());
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let report = rt.block_on(bench(&args, servers.handle()))?;
    if let Some(path) = &args.svg {
        std::fs::write(path, report.svg()).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        let mut v = report.to_json(&args);
        if let Some(e) = &report.events {
            v["events"] = e.json();
        }
        if let Some(r) = &report.runtimes {
            v["runtimes"] = r.json();
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", report.render(&args));
        if let Some(e) = &report.events {
            print!("{}", e.render());
        }
        if let Some(r) = &report.runtimes {
            print!("{}", r.render());
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn bench(args: &BenchArgs, servers: &tokio::runtime::Handle) -> anyhow::Result<Report> {
    let exe = std::env::current_exe().context("cannot find the kiln executable")?;
    let function_bin = match &args.function_bin {
        Some(p) => p.clone(),
        None => exe.parent().map(|d| d.join("hello-rust")).context("the kiln executable has no folder")?,
    };
    if !function_bin.is_file() {
        bail!(
            "no function binary at {}; build it with `cargo build --release -p hello-rust` or pass --function-bin",
            function_bin.display()
        );
    }
    let zip_b64 = base64::engine::general_purpose::STANDARD.encode(zip_bootstrap(&function_bin)?);
    let work = TempDir::new()?;
    let mut report = Report { machine: machine(), isolation: args.isolation.clone(), ..Report::default() };
    if args.scrape_only {
        let server = Server::start(&exe, &work.path.join("a"), args, 16, args.server_log.as_deref()).await?;
        let result = scrape::run(&server, &zip_b64, args).await;
        server.stop();
        report.scrape = Some(result?);
        return Ok(report);
    }

    // The baselines first, while nothing else runs (but the bare spawn, which alternates with the
    // cold starts: `BLOCK`).
    let echo = start_echo_server(servers).await?;
    report.floor1 = Stats::of(&floor_latency(echo, args.warm, 1).await?);
    report.floor2 = Stats::of(&floor_latency(echo, args.warm, 2).await?);
    for callers in CALLERS {
        let rate = throughput(echo, args.seconds, callers, echo_request).await?;
        report.floor_throughput.push((callers, rate));
    }
    let (warm, cpu) = bare_warm(servers, &function_bin, args.warm).await?;
    report.bare_warm = Stats::of(&warm);
    report.bare_warm_cpu = cpu;
    let lean_bin = args.lean_bin.clone().or_else(|| exe.parent().map(|d| d.join("minimal-runtime")));
    let lean_zip = match lean_bin.filter(|p| p.is_file()) {
        Some(bin) => {
            let (bare, _) = bare_warm(servers, &bin, args.warm).await?;
            report.lean = Some(Lean { bare_warm: Stats::of(&bare), ..Lean::default() });
            Some(base64::engine::general_purpose::STANDARD.encode(zip_bootstrap(&bin)?))
        }
        None => {
            eprintln!("bench: no minimal-runtime next to kiln (cargo build --release -p minimal-runtime); skipping it");
            None
        }
    };
    eprintln!("bench: baselines done");

    // Latency scenarios on one server.
    // burst, throughput callers, the minimal runtime's 8 callers, and some slack.
    let envs_needed = args.burst + CALLERS.iter().sum::<usize>() + 8 + 16;
    let server = Server::start(&exe, &work.path.join("a"), args, envs_needed, args.server_log.as_deref()).await?;
    let bare = Bare { servers, bin: &function_bin, vars: Vec::new(), cwd: Path::new("/") };
    let result = latency_scenarios(&server, &zip_b64, lean_zip.as_deref(), &bare, args, &mut report).await;
    server.stop();
    result?;

    // Event invokes on a fresh server, beside the synchronous figures.
    report.events = Some(events::run(&exe, &work, &zip_b64, args).await?);
    eprintln!("bench: events done");

    // Python and Node.js on kiln's runtime clients, each on a fresh server.
    report.runtimes = Some(runtimes::run(&exe, &work, servers, args).await?);

    // Density on a fresh server, so its idle RSS is really before anything ran.
    if args.density > 0 {
        let log = args.server_log.as_ref().map(|p| p.with_extension("density.log"));
        let server = Server::start(&exe, &work.path.join("b"), args, args.density + 8, log.as_deref()).await?;
        let result = density(&server, &zip_b64, args).await;
        server.stop();
        report.density = Some(result?);
    }
    Ok(report)
}

/// What every `--only` scenario starts from: the kiln executable, the function's zip (base64) and
/// a work dir.
fn only_setup(args: &BenchArgs) -> anyhow::Result<(PathBuf, String, TempDir)> {
    let exe = std::env::current_exe().context("cannot find the kiln executable")?;
    let function_bin = match &args.function_bin {
        Some(p) => p.clone(),
        None => exe.parent().map(|d| d.join("hello-rust")).context("the kiln executable has no folder")?,
    };
    let zip_b64 = base64::engine::general_purpose::STANDARD.encode(zip_bootstrap(&function_bin)?);
    Ok((exe, zip_b64, TempDir::new()?))
}

/// `--only events`: the function and a server, nothing else.
async fn events_only(args: &BenchArgs) -> anyhow::Result<events::EventsResult> {
    let (exe, zip_b64, work) = only_setup(args)?;
    events::run(&exe, &work, &zip_b64, args).await
}

/// `--only url`: the function URL next to Invoke, nothing else.
async fn url_only(args: &BenchArgs) -> anyhow::Result<url::UrlResult> {
    let (exe, zip_b64, work) = only_setup(args)?;
    url::run(&exe, &work, &zip_b64, args).await
}

/// `--only burst` and `--only density`: that scenario alone on a fresh server, as text.
async fn scale_only(only: &str, args: &BenchArgs) -> anyhow::Result<String> {
    let (exe, zip_b64, work) = only_setup(args)?;
    let log = args.server_log.as_deref();
    // Another build's `kiln serve` under the same client, for before/after comparisons.
    let exe = std::env::var_os("KILN_BENCH_SERVER").map_or(exe, PathBuf::from);
    if only == "burst" {
        let server = Server::start(&exe, &work.path.join("a"), args, args.burst + 16, log).await?;
        let result = async {
            let api = Api::new(server.addr);
            api.create_function("bench-burst", &zip_b64, 60, args.memory).await?;
            let hold = Duration::from_millis(args.burst_hold_ms);
            let cpu_before = process_cpu_stat(server.pid);
            let (total, _) = burst(server.addr, args.burst, hold).await?;
            let cpu = process_cpu_stat(server.pid).saturating_sub(cpu_before);
            let cold = api.cold_starts("bench-burst").await?;
            anyhow::Ok(format!(
                "burst: {} simultaneous calls done in {:.1} ms ({cold} cold starts; kiln serve CPU {:.0} ms)\n",
                args.burst,
                total.saturating_sub(hold).as_secs_f64() * 1000.0,
                cpu.as_secs_f64() * 1000.0
            ))
        }
        .await;
        server.stop();
        return result;
    }
    let server = Server::start(&exe, &work.path.join("b"), args, args.density + 8, log).await?;
    let result = density(&server, &zip_b64, args).await;
    server.stop();
    let d = result?;
    let mut out = format!("density: {} environments idle ({} failed)\n", d.environments, d.failed);
    if let Some((none, idle)) = &d.cold_with_idle {
        let ms = |s: &Stats| s.p50.as_secs_f64() * 1000.0;
        out += &format!(
            "cold p50 of another function {:.3} ms with these idle, {:.3} ms with none (n = {}): {:.2}x\n",
            ms(idle),
            ms(none),
            idle.n,
            ms(idle) / ms(none).max(1e-9)
        );
    }
    if let Some((none, idle)) = &d.idle_phases {
        if let Some((lo, hi)) = idle_cold::ratio_interval(&idle.samples, &none.samples) {
            out += &format!("  95% interval of the ratio (bootstrap): {lo:.2}x to {hi:.2}x\n");
        }
        out += &none.render("with none");
        out += &idle.render("with these idle");
    }
    Ok(out)
}

/// `--only runtimes`: the Python and Node.js rows, nothing else.
async fn runtimes_only(args: &BenchArgs, servers: &tokio::runtime::Handle) -> anyhow::Result<runtimes::RuntimesResult> {
    let exe = std::env::current_exe().context("cannot find the kiln executable")?;
    let work = TempDir::new()?;
    runtimes::run(&exe, &work, servers, args).await
}

async fn latency_scenarios(
    server: &Server,
    zip_b64: &str,
    lean_zip_b64: Option<&str>,
    bare: &Bare<'_>,
    args: &BenchArgs,
    report: &mut Report,
) -> anyhow::Result<()> {
    let api = Api::new(server.addr);
    for (name, timeout) in [("bench-cold", 10), ("bench-warm", 10), ("bench-tput", 10), ("bench-burst", 60)] {
        api.create_function(name, zip_b64, timeout, args.memory).await?;
    }

    // Cold.
    let pool_before = api.sandbox_pool().await?;
    let (cold, request_ids, bare) = cold_starts(server, &api, "bench-cold", args.cold, bare).await?;
    report.cold = Stats::of(&cold);
    report.bare = Stats::of(&bare);
    report.cold_split = cold_split(&server.data_dir, "bench-cold", &cold, &request_ids);
    if let (Some(before), Some(after)) = (pool_before, api.sandbox_pool().await?) {
        report.cold_pooled = Some((after.0.saturating_sub(before.0), after.1.saturating_sub(before.1)));
    }
    eprintln!("bench: cold done");

    // Warm.
    let (warm, cpu_kiln, cpu_function, cpu_server) = warm_calls(server, "bench-warm", args.warm).await?;
    report.warm = Stats::of(&warm);
    report.warm_cpu_kiln = cpu_kiln;
    report.warm_cpu_function = cpu_function;
    report.warm_cpu_server = cpu_server;
    if let (Some(zip), Some(lean)) = (lean_zip_b64, report.lean.as_mut()) {
        api.create_function("bench-lean", zip, 10, args.memory).await?;
        let (warm, cpu_kiln, cpu_function, cpu_server) = warm_calls(server, "bench-lean", args.warm).await?;
        lean.warm = Stats::of(&warm);
        lean.cpu_kiln = cpu_kiln;
        lean.cpu_function = cpu_function;
        lean.cpu_server = cpu_server;
        let pause_calls = args.warm.min(PAUSE_CALLS);
        let (paused, _, _, cpu_server) = warm_calls_with(server, "bench-lean", pause_calls, PAUSE_1MS).await?;
        lean.paused = Stats::of(&paused);
        lean.paused_cpu_server = cpu_server;
        let addr = server.addr;
        lean.throughput8 =
            throughput(addr, args.seconds, 8, move |c| async move { invoke(&c, "bench-lean", ECHO).await.map(drop) })
                .await?;
    }
    eprintln!("bench: warm done");

    // Throughput.
    let addr = server.addr;
    for callers in CALLERS {
        let rate =
            throughput(
                addr,
                args.seconds,
                callers,
                move |c| async move { invoke(&c, "bench-tput", ECHO).await.map(drop) },
            )
            .await?;
        report.throughput.push((callers, rate));
    }
    eprintln!("bench: throughput done");
    report.scrape = Some(scrape::run(server, zip_b64, args).await?);
    eprintln!("bench: scrape done");

    // Burst.
    let hold = Duration::from_millis(args.burst_hold_ms);
    let (total, latencies) = burst(server.addr, args.burst, hold).await?;
    report.burst_wall = total;
    report.burst_total = total.saturating_sub(hold);
    report.burst = Stats::of(&latencies.iter().map(|l| l.saturating_sub(hold)).collect::<Vec<_>>());
    report.burst_cold_starts = api.cold_starts("bench-burst").await?;
    eprintln!("bench: burst done");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// `n` cold starts of `function`: before each, a configuration update retires its environment
/// and the bench waits until the retired bootstrap is gone (other functions' environments
/// stay). The latencies, the request ids, and `n` bare spawns alternated with them in blocks.
async fn cold_starts(
    server: &Server,
    api: &Api,
    function: &str,
    n: usize,
    bare: &Bare<'_>,
) -> anyhow::Result<(Vec<Duration>, Vec<String>, Vec<Duration>)> {
    let mut bares = Vec::with_capacity(n);
    let mut cold = Vec::with_capacity(n);
    let mut request_ids = Vec::with_capacity(n);
    let client = new_client(server.addr);
    let path = format!("/2015-03-31/functions/{function}/configuration");
    // The bootstraps of other functions, alive throughout.
    let others = server_descendants(server.pid).1.len();
    for i in 0..n {
        bare.block_before(api, function, i, n, &mut bares).await?;
        api.call(Method::PUT, &path, Some(json!({ "Description": format!("cold {i}") }))).await?;
        api.wait_ready(function).await?;
        server.wait_bootstraps_at_most(others, Duration::from_secs(5));
        let t = Instant::now();
        let id = invoke(&client, function, ECHO).await?;
        cold.push(t.elapsed());
        request_ids.push(id);
    }
    Ok((cold, request_ids, bares))
}

/// `n` sequential calls on one warm environment: their latencies; the CPU time per call of
/// kiln's processes (threads alive at the end, `schedstat`) and of the function; and the CPU
/// time per call of the `kiln serve` process itself from its utime + stime, which also counts
/// threads that exited during the run.
async fn warm_calls(
    server: &Server,
    function: &str,
    n: usize,
) -> anyhow::Result<(Vec<Duration>, Duration, Duration, Duration)> {
    warm_calls_with(server, function, n, ECHO).await
}

/// [`warm_calls`] with the given event.
async fn warm_calls_with(
    server: &Server,
    function: &str,
    n: usize,
    event: &str,
) -> anyhow::Result<(Vec<Duration>, Duration, Duration, Duration)> {
    let client = new_client(server.addr);
    invoke(&client, function, event).await?;
    let mut out = Vec::with_capacity(n);
    let before = tree_cpu(server.pid);
    let stat_before = process_cpu_stat(server.pid);
    for _ in 0..n {
        let t = Instant::now();
        invoke(&client, function, event).await?;
        out.push(t.elapsed());
    }
    let after = tree_cpu(server.pid);
    let stat = process_cpu_stat(server.pid).saturating_sub(stat_before);
    let calls = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    Ok((out, after.0.saturating_sub(before.0) / calls, after.1.saturating_sub(before.1) / calls, stat / calls))
}

/// Runs `callers` loops of `op` for a warm-up and then `seconds`; answers per second.
async fn throughput<F, Fut>(addr: SocketAddr, seconds: f64, callers: usize, op: F) -> anyhow::Result<f64>
where
    F: Fn(Conn) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let warmup = Duration::from_millis(500);
    let measure = Duration::from_secs_f64(seconds);
    let start = Instant::now() + warmup;
    let end = start + measure;
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let client = new_client(addr);
            let mut done = 0u64;
            loop {
                op(client.clone()).await?;
                let now = Instant::now();
                if now >= end {
                    return anyhow::Ok(done);
                }
                if now >= start {
                    done += 1;
                }
            }
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.context("a caller panicked")??;
    }
    Ok(total as f64 / measure.as_secs_f64())
}

/// `callers` simultaneous invokes of a function without environments: wall time and latencies.
async fn burst(addr: SocketAddr, callers: usize, hold: Duration) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let event: Arc<str> = json!({ "action": "sleep", "ms": hold.as_millis() as u64 }).to_string().into();
    let ready = Arc::new(tokio::sync::Barrier::new(callers + 1));
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let ready = ready.clone();
        let event = event.clone();
        tasks.push(tokio::spawn(async move {
            let client = new_client(addr);
            // Connect first, so the burst times invokes, not TCP handshakes.
            let path = "/2015-03-31/functions/bench-burst/configuration";
            let connected = client.request(Method::GET, path, Bytes::new()).await;
            ready.wait().await;
            connected?;
            let t = Instant::now();
            invoke(&client, "bench-burst", &event).await?;
            anyhow::Ok((t, Instant::now()))
        }));
    }
    ready.wait().await;
    let mut spans = Vec::new();
    for t in tasks {
        spans.push(t.await.context("a caller panicked")??);
    }
    let first = spans.iter().map(|s| s.0).min().context("no callers")?;
    let last = spans.iter().map(|s| s.1).max().context("no callers")?;
    Ok((last - first, spans.iter().map(|(a, b)| *b - *a).collect()))
}

async fn density(server: &Server, zip_b64: &str, args: &BenchArgs) -> anyhow::Result<Density> {
    let idle = proc_memory(server.pid);
    let api = Api::new(server.addr);
    api.create_function("bench-density", zip_b64, 300, args.memory).await?;
    let before = proc_memory(server.pid);
    // Cold starts with no environment alive, for the comparison with the same after the fill.
    let idle_cold = args.idle_cold > 0;
    let mut cold_none = idle_cold::Phase::default();
    if idle_cold {
        api.create_function("bench-idle-cold", zip_b64, 10, args.memory).await?;
        cold_none = idle_cold::run(server, &api, "bench-idle-cold", args.idle_cold, "with none").await?;
    }

    // Callers start at a fixed rate; each event sleeps until well after the last one started,
    // so every call holds its own environment and they all overlap.
    let n = args.density;
    let spread = Duration::from_secs_f64(n as f64 / f64::from(args.density_rate.max(1)));
    let sleep_ms = (spread.as_millis() as u64) * 2 + 2000;
    let event = json!({ "action": "sleep", "ms": sleep_ms }).to_string();
    let addr = server.addr;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let event = event.clone();
        let at = started + spread.mul_f64(i as f64 / n as f64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            invoke(&new_client(addr), "bench-density", &event).await
        }));
    }
    let mut failed = 0;
    let mut first_error = None;
    for t in tasks {
        if let Err(e) = t.await.context("a caller panicked")? {
            failed += 1;
            first_error.get_or_insert(e.to_string());
        }
    }
    let fill = started.elapsed();
    // Let the last runtimes reach `GET next` and freeze.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let environments = api.environments("bench-density").await?;
    let after = proc_memory(server.pid);
    let (kiln_pids, boot_pids) = server_descendants(server.pid);
    let total = |pids: &[u32]| {
        let mut m = Mem::default();
        pids.iter().for_each(|&p| m.add(proc_memory(p)));
        m
    };
    let (kiln, boot) = (total(&kiln_pids), total(&boot_pids));
    let (kiln_procs, boot_procs) = (kiln_pids.len(), boot_pids.len());
    // The memory is measured; now the same cold starts with the environments idle around them.
    let idle_phases = match idle_cold {
        true => {
            // The same pool as the side with none: the fill's demand forgotten, its extra blanks
            // discarded (those are teardowns too).
            if !idle_cold::wait_pool_target(&api, "bench-idle-cold", cold_none.pool.0).await {
                eprintln!("bench: the blank pool did not fall back to its size before the fill");
            }
            Some((cold_none, idle_cold::run(server, &api, "bench-idle-cold", args.idle_cold, "with idle").await?))
        }
        false => None,
    };
    let cold_with_idle = idle_phases.as_ref().map(|(none, idle)| (Stats::of(&none.samples), Stats::of(&idle.samples)));
    Ok(Density {
        cold_with_idle,
        idle_phases,
        requested: n,
        environments,
        failed,
        first_error,
        sleep_ms,
        fill,
        idle,
        before,
        after,
        kiln,
        kiln_procs,
        boot,
        boot_procs,
    })
}

/// Cold starts and the bare spawn baseline they are compared with alternate in blocks of this
/// many (`BLOCK` bare spawns, then `BLOCK` cold starts, and so on), so that both sides see the
/// same stretches of the host's speed. On these virtual machines the same start ran 30 % slower
/// for seconds at a time, and two blocks of 200 measured minutes apart compared those stretches
/// more than kiln (docs/benchmarks.md, session 19). Within a block each side keeps its own loop:
/// a cold start follows the previous one's update and teardown, a bare spawn the previous spawn.
const BLOCK: usize = 10;

/// The bare spawn baseline: a bootstrap started as a plain child process against a Runtime API
/// of the bench's own, timed from spawn to its first response posted.
struct Bare<'a> {
    servers: &'a tokio::runtime::Handle,
    bin: &'a Path,
    /// More environment variables (a managed runtime's bare client).
    vars: Vec<(String, String)>,
    cwd: &'a Path,
}

impl Bare<'_> {
    /// One start: spawn → first response posted.
    async fn once(&self, i: usize) -> anyhow::Result<Duration> {
        // A Runtime API of its own per process (not timed): nothing of the killed one reaches it.
        let mut api = MiniRuntime::start(self.servers).await?;
        let request_id = format!("bare-{i}");
        let t = Instant::now();
        let mut child = api.spawn_with(self.bin, &self.vars, self.cwd)?;
        let posted = api.call(&request_id).await;
        let elapsed = t.elapsed();
        let _ = child.kill();
        let _ = child.wait();
        posted?;
        Ok(elapsed)
    }

    /// The block of bare spawns that comes before cold start `i` of `n` (none inside a block).
    /// It waits first until `function`'s blank pool is full again, so that no refill the cold
    /// starts caused runs beside the baseline.
    async fn block_before(
        &self,
        api: &Api,
        function: &str,
        i: usize,
        n: usize,
        out: &mut Vec<Duration>,
    ) -> anyhow::Result<()> {
        let block = bare_block(i, n);
        if block.is_empty() {
            return Ok(());
        }
        idle_cold::wait_pool_full(api, function).await;
        for j in block {
            out.push(self.once(j).await?);
        }
        Ok(())
    }
}

/// The bare spawns taken before cold start `i` of `n`: a block at every `BLOCK`-th, as many as
/// the cold starts that follow it, so both sides end with `n` samples.
fn bare_block(i: usize, n: usize) -> std::ops::Range<usize> {
    match i % BLOCK {
        0 => i..n.min(i + BLOCK),
        _ => i..i,
    }
}

/// The same bootstrap, started once as a plain child process, answering `n` events in sequence
/// from the bench's own Runtime API: event handed to the waiting `next` → response posted. This
/// is what the function itself costs per warm call, with nothing of kiln in the way. Also answers
/// the function's CPU time per call.
async fn bare_warm(
    servers: &tokio::runtime::Handle,
    bin: &Path,
    n: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    bare_warm_with(servers, bin, &[], Path::new("/"), n).await
}

/// [`bare_warm`] of `bin` with more environment variables and a working directory.
async fn bare_warm_with(
    servers: &tokio::runtime::Handle,
    bin: &Path,
    vars: &[(String, String)],
    cwd: &Path,
    n: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let mut api = MiniRuntime::start(servers).await?;
    let mut child = api.spawn_with(bin, vars, cwd)?;
    let result = async {
        api.call("bare-warmup").await?;
        let cpu_before = process_cpu(child.id());
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let request_id = format!("bare-{i}");
            let t = Instant::now();
            api.call(&request_id).await?;
            out.push(t.elapsed());
        }
        let cpu = process_cpu(child.id()).saturating_sub(cpu_before);
        Ok((out, cpu / u32::try_from(n.max(1)).unwrap_or(u32::MAX)))
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Latency of `hops` sequential echo requests on one connection.
async fn floor_latency(addr: SocketAddr, n: usize, hops: usize) -> anyhow::Result<Vec<Duration>> {
    let client = new_client(addr);
    echo_request(client.clone()).await?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        for _ in 0..hops {
            echo_request(client.clone()).await?;
        }
        out.push(t.elapsed());
    }
    Ok(out)
}

/// Splits each cold start with the engine's REPORT line of the same request.
fn cold_split(data_dir: &Path, function: &str, total: &[Duration], ids: &[String]) -> Option<ColdSplit> {
    // The log writer is a background thread; give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    let mut reports: HashMap<String, (f64, f64)> = HashMap::new();
    let dir = data_dir.join("logs").join(function);
    for entry in walk(&dir) {
        let Ok(text) = std::fs::read_to_string(&entry) else { continue };
        for line in text.lines() {
            let Some(rest) = line.split("REPORT RequestId: ").nth(1) else { continue };
            let id = rest.split('\t').next().unwrap_or("").trim().to_string();
            let field = |name: &str| {
                rest.split('\t')
                    .find_map(|f| f.trim().strip_prefix(name))
                    .and_then(|v| v.trim_end_matches(" ms").trim().parse::<f64>().ok())
            };
            if let (Some(init), Some(duration)) = (field("Init Duration: "), field("Duration: ")) {
                reports.insert(id, (init, duration));
            }
        }
    }
    let (mut init, mut invoke, mut rest) = (Vec::new(), Vec::new(), Vec::new());
    for (t, id) in total.iter().zip(ids) {
        if let Some((i, d)) = reports.get(id) {
            let i = Duration::from_secs_f64(i / 1000.0);
            let d = Duration::from_secs_f64(d / 1000.0);
            init.push(i);
            invoke.push(d);
            rest.push(t.saturating_sub(i + d));
        }
    }
    (!init.is_empty()).then(|| ColdSplit { init: Stats::of(&init), invoke: Stats::of(&invoke), rest: Stats::of(&rest) })
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The server under test

struct Server {
    child: Mutex<Child>,
    pid: u32,
    addr: SocketAddr,
    data_dir: PathBuf,
}

impl Server {
    async fn start(
        exe: &Path,
        data_dir: &Path,
        args: &BenchArgs,
        environments: usize,
        log: Option<&Path>,
    ) -> anyhow::Result<Server> {
        std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
        let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .context("cannot find a free port")?
            .port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let stderr = match log {
            Some(p) => Stdio::from(std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?),
            None => Stdio::null(),
        };
        // The default memory budget (3/4 of RAM, counted in MemorySize) would hold only ~144
        // environments of 128 MB on a 24 GiB machine; the bench needs more.
        let budget_mb = environments as u64 * u64::from(args.memory) + 1024;
        let limit = environments.max(1000) + 100;
        let child = std::process::Command::new(exe)
            .arg("serve")
            .args(["--addr", &addr.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--isolation", &args.isolation])
            .args(["--memory-budget", &budget_mb.max(kiln_client::host::default_memory_budget_mb()).to_string()])
            .args(["--concurrency-limit", &limit.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("cannot start kiln serve")?;
        children::track_pid(child.id());
        let server = Server { pid: child.id(), child: Mutex::new(child), addr, data_dir: data_dir.to_path_buf() };
        let client = new_client(addr);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok((StatusCode::OK, _, _)) =
                client.request(Method::GET, "/2015-03-31/functions/", Bytes::new()).await
            {
                return Ok(server);
            }
            let exited = server.child.lock().map_err(|_| anyhow!("lock poisoned"))?.try_wait()?;
            if let Some(status) = exited {
                bail!("kiln serve --isolation {} exited at start-up ({status}); see --server-log", args.isolation);
            }
            if Instant::now() > deadline {
                server.stop();
                bail!("kiln serve did not answer within 15 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until at most `n` bootstraps run under the server (a retired environment is gone).
    /// The blank sandboxes the server keeps ready stay: they are not environments.
    fn wait_bootstraps_at_most(&self, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while server_descendants(self.pid).1.len() > n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// SIGTERM (through kill(1): the binary has no unsafe code), then SIGKILL after 10 s.
    fn stop(&self) {
        let Ok(mut child) = self.child.lock() else { return };
        children::untrack_pid(self.pid);
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A data dir that goes away with the bench.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let path = std::env::temp_dir().join(format!("kiln-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        children::track_dir(&path);
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        children::untrack_dir(&self.path);
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

// The clients are kiln-client's: one kept-alive connection per caller (`Conn`, no pool, no
// Nagle), the same code `kiln`'s CLI verbs use.

/// One caller's connection to `addr`.
fn new_client(addr: SocketAddr) -> Conn {
    Conn::new(addr.to_string())
}

/// Invokes `function`; the request id of a successful answer.
async fn invoke(client: &Conn, function: &str, event: &str) -> anyhow::Result<String> {
    let path = format!("/2015-03-31/functions/{function}/invocations");
    let (status, headers, body) = client.request(Method::POST, &path, Bytes::from(event.to_owned())).await?;
    if status != StatusCode::OK || headers.contains_key("x-amz-function-error") {
        bail!("invoke {function}: {status} {}", String::from_utf8_lossy(&body));
    }
    let id = headers.get("x-amzn-requestid").and_then(|v| v.to_str().ok()).unwrap_or("");
    Ok(id.to_string())
}

async fn echo_request(client: Conn) -> anyhow::Result<()> {
    let (status, _, body) = client.request(Method::POST, "/echo", Bytes::from_static(ECHO.as_bytes())).await?;
    if status != StatusCode::OK || body.len() != ECHO.len() {
        bail!("the echo server answered {status}");
    }
    Ok(())
}

/// The REST API for set-up calls (not timed): kiln-client's, with the bench's own helpers.
struct Api {
    rest: kiln_client::Api,
}

impl Api {
    fn new(addr: SocketAddr) -> Api {
        Api { rest: kiln_client::Api::at(addr) }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let what = format!("{method} {path}");
        self.rest.call(method, path, body).await.context(what)
    }

    async fn create_function(
        &self,
        name: &str,
        zip_b64: &str,
        timeout_secs: u32,
        memory_mb: u32,
    ) -> anyhow::Result<()> {
        let body = json!({
            "MemorySize": memory_mb,
            "FunctionName": name,
            "Runtime": "provided.al2023",
            "Role": "arn:aws:iam::123456789012:role/x",
            "Handler": "bootstrap",
            "Timeout": timeout_secs,
            "Code": { "ZipFile": zip_b64 },
        });
        self.call(Method::POST, "/2015-03-31/functions", Some(body)).await?;
        self.wait_ready(name).await
    }

    /// Waits until `State` is Active and the last update Successful.
    async fn wait_ready(&self, name: &str) -> anyhow::Result<()> {
        self.rest.wait_ready(name, Duration::from_secs(60)).await.with_context(|| name.to_string())?;
        Ok(())
    }

    /// The server's sandbox pool counters (spawns from the pool, built on the spot), if it has one.
    async fn sandbox_pool(&self) -> anyhow::Result<Option<(u64, u64)>> {
        let v = self.call(Method::GET, "/kiln/v1/status", None).await?;
        let p = &v["SandboxPool"];
        Ok(p["PooledSpawns"].as_u64().zip(p["FreshSpawns"].as_u64()))
    }

    async fn status(&self, name: &str) -> anyhow::Result<Value> {
        let v = self.call(Method::GET, &format!("/kiln/v1/functions/{name}/environments"), None).await?;
        Ok(v["Functions"][0].clone())
    }

    async fn cold_starts(&self, name: &str) -> anyhow::Result<u64> {
        Ok(self.status(name).await?["ColdStarts"].as_u64().unwrap_or(0))
    }

    async fn environments(&self, name: &str) -> anyhow::Result<usize> {
        Ok(self.status(name).await?["Environments"].as_array().map_or(0, Vec::len))
    }
}

/// Serves `handler` on a free loopback port of the `servers` runtime; the accept loop runs until
/// the returned handle aborts it.
async fn serve<H, Fut>(
    servers: &tokio::runtime::Handle,
    handler: H,
) -> anyhow::Result<(SocketAddr, tokio::task::AbortHandle)>
where
    H: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = servers
        .spawn(tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .await
        .context("bind task failed")?
        .context("cannot listen on loopback")?;
    let addr = listener.local_addr().context("cannot read the listening address")?;
    let accept = servers.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let handler = handler.clone();
                    async move { Ok::<_, std::convert::Infallible>(handler(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, accept.abort_handle()))
}

async fn start_echo_server(servers: &tokio::runtime::Handle) -> anyhow::Result<SocketAddr> {
    let (addr, _runs_with_the_bench) = serve(servers, |req: Request<Incoming>| async move {
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        Response::new(Full::new(body))
    })
    .await?;
    Ok(addr)
}

/// The Runtime API of the bare baselines, for one runtime process: `next` waits for the bench to
/// hand out an event; posted responses go back to the bench. Each process gets its own (its own
/// port), so a killed runtime's late request can never take its successor's event, however many
/// connections a runtime's client opens.
struct MiniRuntime {
    addr: SocketAddr,
    accept: tokio::task::AbortHandle,
    events: tokio::sync::mpsc::UnboundedSender<String>,
    posted: tokio::sync::mpsc::UnboundedReceiver<Result<String, String>>,
}

struct MiniRuntimeHandler {
    /// Request ids of the events still to hand out.
    events: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<String>>,
    /// Where posted responses (Ok(request id)) and errors (Err(what)) go.
    posted: tokio::sync::mpsc::UnboundedSender<Result<String, String>>,
}

impl Drop for MiniRuntime {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl MiniRuntime {
    async fn start(servers: &tokio::runtime::Handle) -> anyhow::Result<MiniRuntime> {
        let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let (posted_tx, posted_rx) = tokio::sync::mpsc::unbounded_channel();
        let handler = Arc::new(MiniRuntimeHandler { events: tokio::sync::Mutex::new(events_rx), posted: posted_tx });
        let (addr, accept) = serve(servers, move |req| {
            let handler = handler.clone();
            async move { handler.handle(req).await }
        })
        .await?;
        Ok(MiniRuntime { addr, accept, events: events_tx, posted: posted_rx })
    }

    /// Starts `bin` against this Runtime API, with Lambda's variables, `vars` and `cwd`.
    fn spawn_with(&self, bin: &Path, vars: &[(String, String)], cwd: &Path) -> anyhow::Result<Child> {
        std::process::Command::new(bin)
            .env_clear()
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .current_dir(cwd)
            .env("AWS_LAMBDA_RUNTIME_API", self.addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", "bare")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bare")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bare")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))
    }

    /// Hands out one event and waits for the runtime to post its response.
    async fn call(&mut self, request_id: &str) -> anyhow::Result<()> {
        self.events.send(request_id.to_string()).map_err(|_| anyhow!("bare runtime api stopped"))?;
        match tokio::time::timeout(Duration::from_secs(10), self.posted.recv()).await {
            Ok(Some(Ok(id))) if id == request_id => Ok(()),
            Ok(Some(Ok(id))) => bail!("bare runtime: response for {id}, expected {request_id}"),
            Ok(Some(Err(what))) => bail!("bare runtime: the runtime posted {what}"),
            Ok(None) => bail!("bare runtime: the runtime api stopped"),
            Err(_) => bail!("bare runtime: no response within 10 s"),
        }
    }
}

impl MiniRuntimeHandler {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let _ = req.into_body().collect().await;
        let reply = |status: StatusCode, body: &'static str| {
            let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
            *r.status_mut() = status;
            r
        };
        let Some(rest) = path.strip_prefix("/2018-06-01/runtime/") else {
            return reply(StatusCode::NOT_FOUND, "{}");
        };
        match (method, rest) {
            (Method::GET, "invocation/next") => {
                let next =
                    tokio::time::timeout(Duration::from_secs(60), async { self.events.lock().await.recv().await })
                        .await;
                let Ok(Some(id)) = next else {
                    return reply(StatusCode::GONE, "{}");
                };
                let deadline_ms =
                    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64) + 3000;
                Response::builder()
                    .header("Lambda-Runtime-Aws-Request-Id", id)
                    .header("Lambda-Runtime-Deadline-Ms", deadline_ms.to_string())
                    .header(
                        "Lambda-Runtime-Invoked-Function-Arn",
                        "arn:aws:lambda:us-east-1:123456789012:function:bare",
                    )
                    .header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000;Sampled=0")
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(ECHO.as_bytes())))
                    .unwrap_or_else(|_| reply(StatusCode::INTERNAL_SERVER_ERROR, "{}"))
            }
            (Method::POST, r) if r.starts_with("invocation/") && r.ends_with("/response") => {
                let id = r.trim_start_matches("invocation/").trim_end_matches("/response");
                let _ = self.posted.send(Ok(id.to_string()));
                reply(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
            }
            (Method::POST, r) if r.ends_with("/error") => {
                let _ = self.posted.send(Err(r.to_string()));
                reply(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
            }
            _ => reply(StatusCode::NOT_FOUND, "{}"),
        }
    }
}

fn zip_bootstrap(bin: &Path) -> anyhow::Result<Vec<u8>> {
    Ok(kiln_client::package::bootstrap(bin)?)
}

// ---------------------------------------------------------------------------------------------
// /proc

#[derive(Debug, Default, Clone, Copy)]
struct Mem {
    rss: u64,
    pss: u64,
}

impl Mem {
    fn add(&mut self, o: Mem) {
        self.rss += o.rss;
        self.pss += o.pss;
    }
}

/// RSS and PSS of a process, in bytes (zero if it is gone).
fn proc_memory(pid: u32) -> Mem {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    Mem { rss: field("Rss:"), pss: field("Pss:") }
}

/// Clock ticks per second of /proc's CPU times (Linux's USER_HZ, 100 on every architecture).
const USER_HZ: u64 = 100;

/// CPU time of a process so far, exited threads included: utime + stime of /proc/PID/stat
/// (10 ms ticks; over thousands of calls that is a few µs per call).
fn process_cpu_stat(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields resume after the command name's last ')'; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest.split_whitespace().skip(11).take(2).filter_map(|f| f.parse::<u64>().ok()).sum();
    Duration::from_millis(ticks * 1000 / USER_HZ)
}

/// CPU time of every thread of a process so far (`/proc/PID/task/*/schedstat`, in ns).
fn process_cpu(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .sum();
    Duration::from_nanos(ns)
}

fn proc_comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim().to_string())
}

/// Every descendant of `root` (not `root` itself).
/// CPU time so far of a server and its process tree: (kiln's own, the bootstraps').
fn tree_cpu(server: u32) -> (Duration, Duration) {
    let (kiln, bootstraps) = server_descendants(server);
    let sum = |pids: &[u32]| pids.iter().map(|&p| process_cpu(p)).sum::<Duration>();
    (process_cpu(server) + sum(&kiln), sum(&bootstraps))
}

/// A server's descendant processes: (kiln's own, such as sandbox inits; the bootstraps).
fn server_descendants(server: u32) -> (Vec<u32>, Vec<u32>) {
    process_tree(server).into_iter().partition(|&pid| proc_comm(pid).as_deref() != Some("bootstrap"))
}

fn process_tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            if let Some(ppid) = stat_ppid(&stat) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            out.push(c);
            stack.push(c);
        }
    }
    out
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    // What else moved the figures between runs of the same build (docs/benchmarks.md): how long
    // the machine has been up, its load, and whether an idle CPU halts at once (a virtual
    // machine's `haltpoll` with `guest_halt_poll_ns` 0) or polls first.
    let first_number =
        |path: &str| std::fs::read_to_string(path).ok().and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok());
    let text = |path: &str| std::fs::read_to_string(path).ok().map(|s| s.trim().to_string());
    json!({
        "nproc": nproc,
        "cpu": cpu,
        "kernel": kernel,
        "uptime_s": first_number("/proc/uptime"),
        "loadavg_1m": first_number("/proc/loadavg"),
        "cpuidle_driver": text("/sys/devices/system/cpu/cpuidle/current_driver"),
        "guest_halt_poll_ns": first_number("/sys/module/haltpoll/parameters/guest_halt_poll_ns"),
    })
}

/// The report's second header line: the machine's state when the run started.
fn machine_state(m: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(up) = m["uptime_s"].as_f64() {
        parts.push(format!("up {:.1} h", up / 3600.0));
    }
    if let Some(load) = m["loadavg_1m"].as_f64() {
        parts.push(format!("load {load:.2}"));
    }
    if let Some(driver) = m["cpuidle_driver"].as_str() {
        match m["guest_halt_poll_ns"].as_f64() {
            Some(ns) => parts.push(format!("cpuidle {driver} (guest_halt_poll_ns {ns:.0})")),
            None => parts.push(format!("cpuidle {driver}")),
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("machine: {}\n", parts.join(", "))
    }
}

// ---------------------------------------------------------------------------------------------
// Results

#[derive(Debug, Default, Clone)]
struct Stats {
    n: usize,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
    /// The samples, sorted (for the SVG plot).
    sorted: Vec<Duration>,
}

impl Stats {
    fn of(samples: &[Duration]) -> Stats {
        let mut s = samples.to_vec();
        s.sort_unstable();
        let at = |p: f64| nearest_rank(&s, p);
        Stats {
            n: s.len(),
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: s.last().copied().unwrap_or_default(),
            sorted: s,
        }
    }

    fn json(&self) -> Value {
        json!({ "n": self.n, "p50_ms": ms(self.p50), "p90_ms": ms(self.p90), "p99_ms": ms(self.p99), "max_ms": ms(self.max) })
    }
}

struct ColdSplit {
    init: Stats,
    invoke: Stats,
    rest: Stats,
}

struct Density {
    requested: usize,
    environments: usize,
    failed: usize,
    first_error: Option<String>,
    sleep_ms: u64,
    fill: Duration,
    idle: Mem,
    before: Mem,
    after: Mem,
    kiln: Mem,
    kiln_procs: usize,
    boot: Mem,
    boot_procs: usize,
    /// Cold starts of another function: with no environment alive, and with these idle.
    cold_with_idle: Option<(Stats, Stats)>,
    /// The same, with their samples and the host's conditions (`idle_cold.rs`).
    idle_phases: Option<(idle_cold::Phase, idle_cold::Phase)>,
}

impl Density {
    fn growth(&self) -> u64 {
        self.after.rss.saturating_sub(self.before.rss)
    }

    /// kiln's own bytes per environment: server RSS growth + PSS of kiln-owned processes.
    fn per_env(&self) -> f64 {
        (self.growth() + self.kiln.pss) as f64 / self.environments.max(1) as f64
    }
}

/// The minimal runtime's figures, beside the example's.
#[derive(Default)]
struct Lean {
    warm: Stats,
    bare_warm: Stats,
    cpu_kiln: Duration,
    cpu_function: Duration,
    /// `kiln serve`'s utime + stime per sequential warm call.
    cpu_server: Duration,
    /// Sequential calls whose event makes the runtime wait 1 ms ([`PAUSE_1MS`]), and `kiln
    /// serve`'s utime + stime per such call.
    paused: Stats,
    paused_cpu_server: Duration,
    throughput8: f64,
}

#[derive(Default)]
struct Report {
    lean: Option<Lean>,
    machine: Value,
    isolation: String,
    cold: Stats,
    cold_split: Option<ColdSplit>,
    /// Sandboxes of the cold phase: (from the pool, built on the spot).
    cold_pooled: Option<(u64, u64)>,
    bare: Stats,
    bare_warm: Stats,
    /// CPU time of the function per bare warm call.
    bare_warm_cpu: Duration,
    warm: Stats,
    /// CPU time per sequential warm invoke: kiln's processes, and the function's.
    warm_cpu_kiln: Duration,
    warm_cpu_function: Duration,
    /// CPU time of the `kiln serve` process per sequential warm invoke (utime + stime).
    warm_cpu_server: Duration,
    floor1: Stats,
    floor2: Stats,
    throughput: Vec<(usize, f64)>,
    floor_throughput: Vec<(usize, f64)>,
    burst: Stats,
    burst_total: Duration,
    burst_wall: Duration,
    burst_cold_starts: u64,
    density: Option<Density>,
    events: Option<events::EventsResult>,
    runtimes: Option<runtimes::RuntimesResult>,
    scrape: Option<scrape::Scrape>,
}

fn render_targets(targets: &[Target]) -> String {
    let mut s = String::new();
    for t in targets {
        s += &format!(
            "  {:<44} {:>20}  (goal {:>9})  {}\n",
            t.what,
            t.value,
            t.goal,
            match t.met {
                Some(true) => "met",
                Some(false) => "NOT MET",
                None => "not comparable",
            }
        );
    }
    s
}

/// The nearest-rank `p` quantile of `sorted` (ascending); zero when it is empty.
fn nearest_rank(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or_default()
}

/// The parent pid in a `/proc/PID/stat` line (the command name may hold spaces and
/// parentheses; fields resume after the last ')').
fn stat_ppid(stat: &str) -> Option<u32> {
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Target {
    what: String,
    value: String,
    goal: String,
    /// None when the run cannot be compared with the goal (e.g. a burst smaller than the goal's).
    met: Option<bool>,
}

impl Report {
    fn rate(list: &[(usize, f64)], callers: usize) -> f64 {
        list.iter().find(|(c, _)| *c == callers).map_or(0.0, |(_, r)| *r)
    }

    fn targets(&self, args: &BenchArgs) -> Vec<Target> {
        let cold = ms(self.cold.p50);
        let bare = ms(self.bare.p50);
        let warm_ratio = ms(self.warm.p50) / ms(self.floor2.p50).max(1e-9);
        let tput_ratio = Self::rate(&self.throughput, 8) / Self::rate(&self.floor_throughput, 8).max(1e-9);
        let mut t = vec![
            Target {
                what: "cold p50 ≤ 5 ms".into(),
                value: format!("{cold:.2} ms"),
                goal: "5 ms".into(),
                met: Some(cold <= 5.0),
            },
            Target {
                what: "cold p50 ≤ bare spawn p50 + 2 ms".into(),
                value: format!("{cold:.2} ms"),
                goal: format!("{:.2} ms", bare + 2.0),
                met: Some(cold <= bare + 2.0),
            },
            Target {
                what: "warm p50 ≤ 1.5 × two-request floor".into(),
                value: format!("{warm_ratio:.2}×"),
                goal: "1.5×".into(),
                met: Some(warm_ratio <= 1.5),
            },
            Target {
                what: "throughput (8 callers) ≥ 40% of floor".into(),
                value: format!("{:.0}%", tput_ratio * 100.0),
                goal: "40%".into(),
                met: Some(tput_ratio >= 0.4),
            },
            Target {
                what: "burst of 200 ≤ 1 s".into(),
                value: format!("{:.0} ms ({} calls)", ms(self.burst_total), args.burst),
                goal: "1000 ms".into(),
                // A smaller burst says nothing about the goal, whatever its time.
                met: (args.burst >= 200)
                    .then(|| ms(self.burst_total) <= 1000.0 && self.burst_cold_starts >= args.burst as u64),
            },
        ];
        if let Some(d) = &self.density {
            t.push(Target {
                what: "kiln memory per idle environment ≤ 1 MiB".into(),
                value: format!("{:.0} KiB", d.per_env() / 1024.0),
                goal: "1024 KiB".into(),
                met: Some(d.per_env() <= MB),
            });
            t.push(Target {
                what: "kiln serve idle RSS ≤ 30 MB (28.6 MiB)".into(),
                value: format!("{:.1} MiB", d.idle.rss as f64 / MB),
                goal: "28.6 MiB".into(),
                met: Some(d.idle.rss as f64 <= 30e6),
            });
        }
        t
    }

    /// The next step's goals, each a ratio to this run's own baselines (or a budget): cold start
    /// close to a bare spawn, unchanged with many idle environments, little kiln CPU and
    /// latency per warm call, fast bursts, little memory per idle environment.
    fn goals(&self, args: &BenchArgs) -> Vec<Target> {
        let cold_gap = ms(self.cold.p50) - ms(self.bare.p50);
        let warm_bound = ms(self.floor1.p50) + ms(self.bare_warm.p50);
        let warm_ratio = ms(self.warm.p50) / warm_bound.max(1e-9);
        let cpu_us = self.warm_cpu_server.as_secs_f64() * 1e6;
        let mut g = vec![
            Target {
                what: "cold p50 − bare spawn p50 ≤ +1.0 ms".into(),
                value: format!("{cold_gap:+.2} ms"),
                goal: "+1.00 ms".into(),
                met: Some(cold_gap <= 1.0),
            },
            Target {
                what: "kiln CPU per warm call ≤ 60 µs".into(),
                value: format!("{cpu_us:.0} µs"),
                goal: "60 µs".into(),
                met: Some(cpu_us <= 60.0),
            },
            Target {
                what: "warm p50 / (loopback + bare warm) ≤ 1.1×".into(),
                value: format!("{warm_ratio:.2}×"),
                goal: "1.1×".into(),
                met: Some(warm_ratio <= 1.1),
            },
        ];
        if let Some(l) = &self.lean {
            let share = l.throughput8 / Self::rate(&self.floor_throughput, 8).max(1e-9);
            g.push(Target {
                what: "minimal runtime, 8 callers ≥ 30% of floor-8".into(),
                value: format!("{:.0}%", share * 100.0),
                goal: "30%".into(),
                met: Some(share >= 0.3),
            });
        }
        g.push(Target {
            what: "burst of 200 ≤ 0.6 s".into(),
            value: format!("{:.0} ms ({} calls)", ms(self.burst_total), args.burst),
            goal: "600 ms".into(),
            met: (args.burst >= 200)
                .then(|| ms(self.burst_total) <= 600.0 && self.burst_cold_starts >= args.burst as u64),
        });
        if let Some(d) = &self.density {
            if let Some((none, idle)) = &d.cold_with_idle {
                let ratio = ms(idle.p50) / ms(none.p50).max(1e-9);
                g.push(Target {
                    what: format!("cold p50, {} idle envs / none ≤ 1.1×", d.environments),
                    value: format!("{ratio:.2}×"),
                    goal: "1.1×".into(),
                    // The goal is for 500 idle environments: fewer say nothing about it.
                    met: (d.environments >= 500).then_some(ratio <= 1.1),
                });
            }
            g.push(Target {
                what: "kiln memory per idle environment ≤ 256 KiB".into(),
                value: format!("{:.0} KiB", d.per_env() / 1024.0),
                goal: "256 KiB".into(),
                met: Some(d.per_env() <= 256.0 * 1024.0),
            });
        }
        g
    }

    fn render(&self, args: &BenchArgs) -> String {
        if args.scrape_only {
            return self.scrape.as_ref().map(scrape::Scrape::render).unwrap_or_default();
        }
        let mut s = String::new();
        let m = &self.machine;
        s += &format!(
            "kiln bench: isolation {}, functions of {} MB, {} cpus ({}), kernel {}\n",
            self.isolation,
            args.memory,
            m["nproc"],
            m["cpu"].as_str().unwrap_or("?"),
            m["kernel"].as_str().unwrap_or("?")
        );
        s += &machine_state(m);
        s += "\n";
        s += &format!("{:<36} {:>6} {:>9} {:>9} {:>9} {:>9}\n", "latency (ms)", "n", "p50", "p90", "p99", "max");
        let mut row = |name: &str, st: &Stats| {
            s += &format!(
                "{:<36} {:>6} {:>9.3} {:>9.3} {:>9.3} {:>9.3}\n",
                name,
                st.n,
                ms(st.p50),
                ms(st.p90),
                ms(st.p99),
                ms(st.max)
            );
        };
        row("cold invoke", &self.cold);
        if let Some(c) = &self.cold_split {
            row("  of which init (spawn → next)", &c.init);
            row("  of which invoke (REPORT Duration)", &c.invoke);
            row("  of which the rest (API, engine)", &c.rest);
        }
        row("baseline: bare spawn → response", &self.bare);
        row("warm invoke", &self.warm);
        row("baseline: bare warm (function alone)", &self.bare_warm);
        if let Some(l) = &self.lean {
            row("warm invoke, minimal runtime", &l.warm);
            row("baseline: bare warm, minimal runtime", &l.bare_warm);
        }
        row("baseline: loopback, 1 request", &self.floor1);
        row("baseline: loopback, 2 requests", &self.floor2);
        row("burst: each call (minus hold)", &self.burst);
        s += &format!(
            "\nCPU per warm call: kiln {:.0} µs, the function {:.0} µs (the function alone, bare warm: {:.0} µs)\n",
            self.warm_cpu_kiln.as_secs_f64() * 1e6,
            self.warm_cpu_function.as_secs_f64() * 1e6,
            self.bare_warm_cpu.as_secs_f64() * 1e6
        );
        s += &format!(
            "kiln serve CPU per warm call (utime + stime, exited threads too): {:.0} µs over {} calls\n",
            self.warm_cpu_server.as_secs_f64() * 1e6,
            self.warm.n
        );
        if let Some((pooled, fresh)) = self.cold_pooled {
            s += &format!("cold starts: {pooled} took a ready sandbox from the pool, {fresh} built one on the spot");
            s += if fresh > 0 { " (the pool had none ready at that moment)\n" } else { "\n" };
        }
        let floor8 = Self::rate(&self.floor_throughput, 8);
        if let Some(l) = &self.lean {
            s += &format!(
                "minimal runtime: CPU per warm call kiln {:.0} µs, function {:.0} µs; 8 callers {:.0}/s ({:.0}% of floor)\n",
                l.cpu_kiln.as_secs_f64() * 1e6,
                l.cpu_function.as_secs_f64() * 1e6,
                l.throughput8,
                l.throughput8 / floor8.max(1e-9) * 100.0
            );
            if l.paused.n > 0 {
                s += &format!(
                    "minimal runtime, kiln serve CPU per warm call (utime + stime): {:.0} µs back to back, \
                     {:.0} µs when the function pauses 1 ms per event ({} calls, p50 {:.3} ms; information: \
                     the cost of waking idle CPUs, not a goal)\n",
                    l.cpu_server.as_secs_f64() * 1e6,
                    l.paused_cpu_server.as_secs_f64() * 1e6,
                    l.paused.n,
                    ms(l.paused.p50)
                );
            }
        }
        let cpus = self.machine["nproc"].as_u64().unwrap_or(1) as f64;
        s += &format!(
            "bounds set by the function: warm ≥ loopback 1 request + bare warm = {:.3} ms; \
             throughput ≤ cpus / its CPU per call = {:.0}/s ({:.0}% of floor-8)\n",
            ms(self.floor1.p50) + ms(self.bare_warm.p50),
            cpus / self.bare_warm_cpu.as_secs_f64().max(1e-9),
            cpus / self.bare_warm_cpu.as_secs_f64().max(1e-9) / floor8.max(1e-9) * 100.0
        );
        s += &format!(
            "\nburst: {} simultaneous calls done in {:.1} ms ({:.1} ms wall, each call held its environment {} ms); {} cold starts\n",
            args.burst,
            ms(self.burst_total),
            ms(self.burst_wall),
            args.burst_hold_ms,
            self.burst_cold_starts
        );
        s += &format!("\n{:<36} {:>12} {:>12} {:>8}\n", "throughput (invokes/s)", "kiln", "floor", "ratio");
        for (c, r) in &self.throughput {
            let f = Self::rate(&self.floor_throughput, *c);
            s += &format!("{:<36} {:>12.0} {:>12.0} {:>7.0}%\n", format!("{c} callers"), r, f, r / f.max(1e-9) * 100.0);
        }
        if let Some(d) = &self.density {
            s += &format!(
                "\ndensity: {} environments idle ({} requested, {} calls failed; events slept {} ms; filled in {:.1} s)\n",
                d.environments,
                d.requested,
                d.failed,
                d.sleep_ms,
                d.fill.as_secs_f64()
            );
            if let Some(e) = &d.first_error {
                s += &format!("  first failure: {e}\n");
            }
            let mib = |b: u64| b as f64 / MB;
            s += &format!("  kiln serve idle RSS                {:>9.1} MiB\n", mib(d.idle.rss));
            s += &format!(
                "  kiln serve RSS growth              {:>9.1} MiB (RSS {:.1} → {:.1} MiB)\n",
                mib(d.growth()),
                mib(d.before.rss),
                mib(d.after.rss)
            );
            // The sandboxes' init processes are clones of kiln and share its pages, so kiln's
            // share of them (its PSS) can fall while its RSS grows.
            s += &format!(
                "  kiln serve PSS                     {:>9.1} MiB (before the environments {:.1} MiB; pages it shares with them count in part to them)\n",
                mib(d.after.pss),
                mib(d.before.pss)
            );
            s += &format!(
                "  kiln-owned env processes           {:>9.1} MiB PSS ({} processes, RSS {:.1} MiB)\n",
                mib(d.kiln.pss),
                d.kiln_procs,
                mib(d.kiln.rss)
            );
            s += &format!("  kiln's own memory per environment  {:>9.0} KiB\n", d.per_env() / 1024.0);
            if let Some((none, idle)) = &d.cold_with_idle {
                s += &format!(
                    "  cold p50 of another function      {:>9.3} ms with these idle, {:.3} ms with none (n = {})\n",
                    ms(idle.p50),
                    ms(none.p50),
                    idle.n
                );
            }
            if let Some((none, idle)) = &d.idle_phases {
                if let Some((lo, hi)) = idle_cold::ratio_interval(&idle.samples, &none.samples) {
                    s += &format!("  95% interval of the idle/none ratio (bootstrap): {lo:.2}× to {hi:.2}×\n");
                }
                s += &none.render("with none");
                s += &idle.render("with these idle");
            }
            s += &format!(
                "  (not kiln's) bootstraps            {:>9.1} MiB PSS ({} processes, {:.0} KiB PSS each)\n",
                mib(d.boot.pss),
                d.boot_procs,
                d.boot.pss as f64 / 1024.0 / d.boot_procs.max(1) as f64
            );
        }
        s += &format!(
            "\nratios: cold/bare spawn {:.2}×, warm/two-request floor {:.2}×, warm/bare warm {:.2}×, throughput-8/floor-8 {:.0}%\n",
            ms(self.cold.p50) / ms(self.bare.p50).max(1e-9),
            ms(self.warm.p50) / ms(self.floor2.p50).max(1e-9),
            ms(self.warm.p50) / ms(self.bare_warm.p50).max(1e-9),
            Self::rate(&self.throughput, 8) / Self::rate(&self.floor_throughput, 8).max(1e-9) * 100.0
        );
        if let Some(l) = &self.lean {
            s += &format!(
                "minimal runtime: warm/two-request floor {:.2}×, warm/bare warm {:.2}×, throughput-8/floor-8 {:.0}%\n",
                ms(l.warm.p50) / ms(self.floor2.p50).max(1e-9),
                ms(l.warm.p50) / ms(l.bare_warm.p50).max(1e-9),
                l.throughput8 / Self::rate(&self.floor_throughput, 8).max(1e-9) * 100.0
            );
        }
        s += "\nterms: floor = the same client against the bench's own trivial HTTP echo server on \
              loopback, what any HTTP call costs on this machine; two-request floor = two such requests \
              one after the other (a warm invoke makes two: client → kiln, kiln → runtime); floor-8 = the \
              floor's throughput with 8 callers; RSS = resident memory; PSS = RSS with each shared page \
              split evenly among the processes that share it\n";
        s += "\ntargets\n";
        s += &render_targets(&self.targets(args));
        s += "\ngoals (ratios to this run's baselines)\n";
        s += &render_targets(&self.goals(args));
        if let Some(scrape) = &self.scrape {
            s += &scrape.render();
        }
        s
    }

    /// Two panels of cumulative distributions: cold starts beside the bare spawn, warm calls
    /// beside the function alone and the loopback floor. The x axis ends at twice the largest
    /// p90, so a tail of rare stalls (the CPU quota's) does not squash the rest.
    fn svg(&self) -> String {
        const W: f64 = 520.0;
        const H: f64 = 320.0;
        const PAD: f64 = 50.0;
        const COLORS: [&str; 4] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];
        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
            2.0 * W,
            H
        );
        let mut warm: Vec<(&str, &Stats)> =
            vec![("kiln warm", &self.warm), ("bare warm (function alone)", &self.bare_warm)];
        if let Some(l) = &self.lean {
            warm.push(("kiln warm, minimal runtime", &l.warm));
        }
        warm.push(("loopback, 2 requests", &self.floor2));
        let panels: [(&str, Vec<(&str, &Stats)>); 2] =
            [("cold invoke", vec![("kiln cold", &self.cold), ("bare spawn", &self.bare)]), ("warm invoke", warm)];
        for (i, (title, series)) in panels.iter().enumerate() {
            let x0 = i as f64 * W + PAD;
            let (pw, ph) = (W - 1.5 * PAD, H - 2.0 * PAD);
            let xmax = series.iter().map(|(_, s)| ms(s.p90)).fold(0.0_f64, f64::max).max(1e-3) * 2.0;
            out +=
                &format!("<text x=\"{x0}\" y=\"20\" font-weight=\"bold\">{title} (cumulative share of calls)</text>\n");
            out += &format!(
                "<rect x=\"{x0}\" y=\"{PAD}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#999\"/>\n"
            );
            for t in 0..=4 {
                let v = xmax * f64::from(t) / 4.0;
                let x = x0 + pw * f64::from(t) / 4.0;
                out += &format!("<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{v:.2}</text>\n", PAD + ph + 15.0);
            }
            out += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">ms</text>\n", x0 + pw / 2.0, H - 8.0);
            for (frac, label) in [(0.0, "0"), (0.5, "0.5"), (1.0, "1")] {
                let y = PAD + ph * (1.0 - frac);
                out += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{label}</text>\n", x0 - 5.0, y + 4.0);
            }
            for (j, (name, st)) in series.iter().enumerate() {
                let color = COLORS[j % COLORS.len()];
                let n = st.sorted.len();
                let step = (n / 400).max(1);
                let points: Vec<String> = (0..n)
                    .step_by(step)
                    .chain(n.checked_sub(1))
                    .map(|k| {
                        let x = x0 + pw * (ms(st.sorted[k]) / xmax).min(1.0);
                        let y = PAD + ph * (1.0 - (k + 1) as f64 / n as f64);
                        format!("{x:.1},{y:.1}")
                    })
                    .collect();
                out += &format!(
                    "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
                    points.join(" ")
                );
                out += &format!(
                    "<text x=\"{}\" y=\"{}\" fill=\"{color}\">{name}: p50 {:.3} ms</text>\n",
                    x0 + pw * 0.36,
                    PAD + ph * 0.62 + 15.0 * j as f64,
                    ms(st.p50)
                );
            }
        }
        out + "</svg>\n"
    }

    fn to_json(&self, args: &BenchArgs) -> Value {
        let tput =
            |l: &[(usize, f64)]| -> Value { l.iter().map(|(c, r)| json!({ "callers": c, "per_second": r })).collect() };
        let density = self.density.as_ref().map(|d| {
            json!({
                "requested": d.requested,
                "environments": d.environments,
                "failed": d.failed,
                "sleep_ms": d.sleep_ms,
                "fill_s": d.fill.as_secs_f64(),
                "server_idle_rss_bytes": d.idle.rss,
                "server_rss_before_bytes": d.before.rss,
                "server_rss_after_bytes": d.after.rss,
                "server_pss_before_bytes": d.before.pss,
                "server_pss_after_bytes": d.after.pss,
                "kiln_env_processes": d.kiln_procs,
                "kiln_env_processes_pss_bytes": d.kiln.pss,
                "kiln_env_processes_rss_bytes": d.kiln.rss,
                "kiln_bytes_per_environment": d.per_env(),
                "bootstrap_processes": d.boot_procs,
                "bootstrap_pss_bytes": d.boot.pss,
                "cold_no_environments": d.cold_with_idle.as_ref().map(|c| c.0.json()),
                "cold_with_idle_environments": d.cold_with_idle.as_ref().map(|c| c.1.json()),
                "cold_no_environments_detail": d.idle_phases.as_ref().map(|c| c.0.json()),
                "cold_with_idle_environments_detail": d.idle_phases.as_ref().map(|c| c.1.json()),
            })
        });
        json!({
            "machine": self.machine,
            "isolation": self.isolation,
            "memory_mb": args.memory,
            "cold": self.cold.json(),
            "cold_split": self.cold_split.as_ref().map(|c| json!({
                "init": c.init.json(), "invoke": c.invoke.json(), "rest": c.rest.json(),
            })),
            "cold_sandboxes": self.cold_pooled.map(|(pooled, fresh)| json!({ "from_pool": pooled, "built_on_the_spot": fresh })),
            "bare_spawn": self.bare.json(),
            "bare_warm": self.bare_warm.json(),
            "bare_warm_cpu_us_per_call": self.bare_warm_cpu.as_secs_f64() * 1e6,
            "minimal_runtime": self.lean.as_ref().map(|l| json!({
                "warm": l.warm.json(),
                "bare_warm": l.bare_warm.json(),
                "warm_cpu_us_per_call": {
                    "kiln": l.cpu_kiln.as_secs_f64() * 1e6,
                    "kiln_serve_utime_stime": l.cpu_server.as_secs_f64() * 1e6,
                    "function": l.cpu_function.as_secs_f64() * 1e6,
                },
                "pause_1ms": {
                    "warm": l.paused.json(),
                    "kiln_serve_utime_stime_us_per_call": l.paused_cpu_server.as_secs_f64() * 1e6,
                },
                "throughput_8_callers_per_second": l.throughput8,
            })),
            "warm_cpu_us_per_call": {
                "kiln": self.warm_cpu_kiln.as_secs_f64() * 1e6,
                "kiln_serve_utime_stime": self.warm_cpu_server.as_secs_f64() * 1e6,
                "function": self.warm_cpu_function.as_secs_f64() * 1e6,
            },
            "warm": self.warm.json(),
            "loopback_1": self.floor1.json(),
            "loopback_2": self.floor2.json(),
            "throughput": tput(&self.throughput),
            "loopback_throughput": tput(&self.floor_throughput),
            "burst": { "calls": args.burst, "total_ms": ms(self.burst_total), "wall_ms": ms(self.burst_wall), "hold_ms": args.burst_hold_ms, "cold_starts": self.burst_cold_starts, "each": self.burst.json() },
            "density": density,
            "metrics_scrape": self.scrape.as_ref().map(scrape::Scrape::json),
            "targets": self.targets(args).iter().map(|t| json!({
                "target": t.what, "value": t.value, "goal": t.goal, "met": t.met,
            })).collect::<Vec<_>>(),
            "goals": self.goals(args).iter().map(|t| json!({
                "goal_of": t.what, "value": t.value, "goal": t.goal, "met": t.met,
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_spawns_come_in_blocks_as_many_as_the_cold_starts() {
        let blocks: Vec<_> = (0..25).map(|i| bare_block(i, 25)).filter(|b| !b.is_empty()).collect();
        assert_eq!(blocks, vec![0..10, 10..20, 20..25]);
        assert_eq!((0..7).map(|i| bare_block(i, 7).len()).sum::<usize>(), 7);
        assert!(bare_block(0, 0).is_empty());
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = Stats::of(&samples);
        assert_eq!((s.n, s.p50, s.p90, s.p99, s.max), (100, ms_(50), ms_(90), ms_(99), ms_(100)));
        let one = Stats::of(&[ms_(7)]);
        assert_eq!((one.p50, one.p99, one.max), (ms_(7), ms_(7), ms_(7)));
        assert_eq!(Stats::of(&[]).n, 0);
    }

    fn ms_(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_machine_line_says_what_it_knows() {
        let m =
            json!({ "uptime_s": 5400.0, "loadavg_1m": 0.5, "cpuidle_driver": "haltpoll", "guest_halt_poll_ns": 0.0 });
        assert_eq!(machine_state(&m), "machine: up 1.5 h, load 0.50, cpuidle haltpoll (guest_halt_poll_ns 0)\n");
        let m =
            json!({ "uptime_s": 60.0, "loadavg_1m": null, "cpuidle_driver": "intel_idle", "guest_halt_poll_ns": null });
        assert_eq!(machine_state(&m), "machine: up 0.0 h, cpuidle intel_idle\n");
        assert_eq!(machine_state(&Value::Null), "");
        // What this machine answers reads back into the line.
        assert!(machine_state(&machine()).starts_with("machine: up "));
    }

    #[test]
    fn svg_has_one_curve_per_series_inside_its_panel() {
        let samples: Vec<Duration> = (1..=1000).map(Duration::from_micros).collect();
        let report = Report {
            cold: Stats::of(&samples),
            bare: Stats::of(&samples[..10]),
            warm: Stats::of(&samples),
            bare_warm: Stats::of(&samples),
            floor2: Stats::of(&[]),
            ..Report::default()
        };
        let svg = report.svg();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        // cold: kiln + bare spawn; warm: kiln, bare warm, floor (no minimal runtime).
        assert_eq!(svg.matches("<polyline").count(), 5);
        assert!(svg.contains("kiln cold: p50 0.500 ms"), "{svg}");
        for pair in svg.split("points=\"").skip(1).filter_map(|p| p.split('"').next()).flat_map(|p| p.split(' ')) {
            if pair.is_empty() {
                continue;
            }
            let (x, y) = pair.split_once(',').unwrap();
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            assert!((0.0..=1040.0).contains(&x) && (0.0..=320.0).contains(&y), "{pair}");
        }
    }

    fn args(extra: &[&str]) -> BenchArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let argv = std::iter::once("bench").chain(extra.iter().copied());
        <Cli as clap::Parser>::parse_from(argv).bench
    }

    #[test]
    fn a_burst_under_the_goals_size_is_not_comparable_however_fast() {
        let report = Report { burst_total: ms_(10), burst_cold_starts: 50, ..Report::default() };
        let small = args(&["--burst", "50"]);
        let burst = report.targets(&small).into_iter().find(|t| t.what.starts_with("burst")).unwrap();
        assert_eq!(burst.met, None);
        assert!(report.render(&small).contains("not comparable"));
        let full = Report { burst_cold_starts: 200, ..report };
        let burst = full.targets(&args(&["--burst", "200"])).into_iter().find(|t| t.what.starts_with("burst")).unwrap();
        assert_eq!(burst.met, Some(true));
    }

    #[test]
    fn render_defines_its_terms_and_never_says_the_pool_was_empty_when_it_was_not() {
        let report = Report { cold_pooled: Some((20, 0)), ..Report::default() };
        let text = report.render(&args(&[]));
        for term in ["floor = ", "two-request floor = ", "floor-8 = ", "PSS = "] {
            assert!(text.contains(term), "{term} is not defined in:\n{text}");
        }
        assert!(text.contains("20 took a ready sandbox from the pool, 0 built one on the spot\n"), "{text}");
        assert!(!text.contains("pool had none ready"), "{text}");
        let some_fresh = Report { cold_pooled: Some((18, 2)), ..Report::default() };
        assert!(some_fresh.render(&args(&[])).contains("2 built one on the spot (the pool had none ready"));
    }

    #[test]
    fn goals_compare_with_this_runs_baselines() {
        let report = Report {
            cold: Stats::of(&[ms_(3)]),
            bare: Stats::of(&[ms_(2)]),
            warm: Stats::of(&[Duration::from_micros(500)]),
            floor1: Stats::of(&[Duration::from_micros(100)]),
            bare_warm: Stats::of(&[Duration::from_micros(300)]),
            warm_cpu_server: Duration::from_micros(59),
            burst_total: ms_(500),
            burst_cold_starts: 200,
            ..Report::default()
        };
        let goals = report.goals(&args(&[]));
        let met = |what: &str| goals.iter().find(|g| g.what.starts_with(what)).map(|g| g.met);
        assert_eq!(met("cold p50 − bare spawn"), Some(Some(true)));
        assert_eq!(met("kiln CPU per warm call"), Some(Some(true)));
        // 0.5 ms against (0.1 + 0.3) × 1.1 = 0.44 ms.
        assert_eq!(met("warm p50 / (loopback"), Some(Some(false)));
        assert_eq!(met("burst of 200 ≤ 0.6 s"), Some(Some(true)));
        // No density run, no minimal runtime: no such rows.
        assert_eq!(met("kiln memory"), None);
        assert_eq!(met("minimal runtime"), None);
    }

    #[test]
    fn the_pause_row_is_information_printed_beside_the_minimal_runtime() {
        let lean = Lean {
            cpu_server: Duration::from_micros(40),
            paused: Stats::of(&[Duration::from_micros(1_200)]),
            paused_cpu_server: Duration::from_micros(130),
            ..Lean::default()
        };
        let report = Report { lean: Some(lean), ..Report::default() };
        let text = report.render(&args(&[]));
        assert!(
            text.contains("40 µs back to back, 130 µs when the function pauses 1 ms per event (1 calls, p50 1.200 ms"),
            "{text}"
        );
        // Not a goal: no row of the goals table speaks of the pause.
        assert!(report.goals(&args(&[])).iter().all(|g| !g.what.contains("pause")));
        let json = report.to_json(&args(&[]));
        assert_eq!(json["minimal_runtime"]["pause_1ms"]["kiln_serve_utime_stime_us_per_call"], 130.0);
        // Without the pause run (no minimal runtime calls), no such line.
        let none = Report { lean: Some(Lean::default()), ..Report::default() };
        assert!(!none.render(&args(&[])).contains("pauses 1 ms"));
    }

    #[test]
    fn cpu_times_come_from_proc_stat_of_this_process() {
        // Spinning shows up in whole ticks of 10 ms (the bound is only there to end a broken run).
        let before = process_cpu_stat(std::process::id());
        let t = Instant::now();
        while process_cpu_stat(std::process::id()) < before + ms_(20) && t.elapsed() < Duration::from_secs(60) {
            std::hint::black_box((0..10_000u64).sum::<u64>());
        }
        assert!(process_cpu_stat(std::process::id()) >= before + ms_(20));
    }

    #[test]
    fn process_tree_finds_children() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let tree = process_tree(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(tree.contains(&child.id()));
    }
}
